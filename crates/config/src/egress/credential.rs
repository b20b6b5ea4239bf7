//! Credential references (`env:NAME`, `file:/path`): their syntax, the policy
//! an operator sets for them, and their resolution into a secret.
//!
//! Errors name the variable or file and the rule broken, never a value. A
//! reference that is not well-formed is not echoed at all: it may be a
//! credential pasted where its reference belongs.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use secrecy::SecretString;

use super::EgressSettings;

/// The largest credential file read: a credential is one line, and a bound
/// keeps a reference to a large file from filling memory.
pub const MAX_CREDENTIAL_BYTES: u64 = 64 * 1024;

/// Path components that mark a platform identity token (Kubernetes service
/// account, EKS and Azure workload identity). Such files are never credentials
/// of a provider, whatever `egress.credential_dirs` says: sending one upstream
/// hands the gateway's cloud identity to whoever runs the provider URL.
const IDENTITY_COMPONENTS: [&str; 3] = ["kubernetes.io", "eks.amazonaws.com", "serviceaccount"];

/// Where a provider's credential is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialRef {
    /// An environment variable of the gateway.
    Env(String),
    /// A file on the gateway's file system (absolute).
    File(PathBuf),
}

/// A refused or unreadable credential reference.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("must be `env:VARIABLE` or `file:/absolute/path`, never the credential itself")]
    Syntax,
    #[error("environment variable {name} is not allowed: a credential variable must start with {prefix} (egress.credential_env_prefix)")]
    EnvPrefix { name: String, prefix: String },
    #[error("environment variable {name} is not allowed: a name with `__` is a settings variable")]
    EnvSettings { name: String },
    #[error("credential file {} is not allowed: the path must not contain `.` or `..`", path.display())]
    FileDots { path: PathBuf },
    #[error("credential file {} is not allowed: it is not inside egress.credential_dirs ({dirs})", path.display())]
    FileOutside { path: PathBuf, dirs: String },
    #[error("credential file {} is not allowed: it resolves to {}, outside egress.credential_dirs ({dirs})", path.display(), resolved.display())]
    FileEscapes {
        path: PathBuf,
        resolved: PathBuf,
        dirs: String,
    },
    #[error("credential file {} is not allowed: it is a platform identity token", path.display())]
    IdentityToken { path: PathBuf },
    #[error("environment variable {name} is not set")]
    EnvUnset { name: String },
    #[error("credential file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("credential file {} is larger than {MAX_CREDENTIAL_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("cannot read credential file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CredentialError {
    /// Whether the operator's policy refused the reference, as opposed to a
    /// reference that is allowed but cannot be read (yet).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            CredentialError::EnvUnset { .. }
                | CredentialError::NotAFile { .. }
                | CredentialError::TooLarge { .. }
                | CredentialError::Read { .. }
        )
    }
}

impl CredentialRef {
    /// Parses `env:NAME` (letters, digits and `_`) or `file:/absolute/path`
    /// (no control characters). Syntax only; see [`CredentialRef::check`].
    pub fn parse(reference: &str) -> Result<CredentialRef, CredentialError> {
        if let Some(name) = reference.strip_prefix("env:") {
            let ok = !name.is_empty()
                && name.len() <= 256
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            return ok
                .then(|| CredentialRef::Env(name.to_owned()))
                .ok_or(CredentialError::Syntax);
        }
        if let Some(path) = reference.strip_prefix("file:") {
            let ok =
                path.starts_with('/') && path.len() <= 4096 && !path.chars().any(char::is_control);
            return ok
                .then(|| CredentialRef::File(PathBuf::from(path)))
                .ok_or(CredentialError::Syntax);
        }
        Err(CredentialError::Syntax)
    }

    /// Parses `reference` and checks it against `policy`.
    pub fn admit(
        reference: &str,
        policy: &EgressSettings,
    ) -> Result<CredentialRef, CredentialError> {
        let parsed = CredentialRef::parse(reference)?;
        parsed.check(policy)?;
        Ok(parsed)
    }

    /// Checks the reference against `policy` without reading a secret: the
    /// variable's prefix, or the file's place. A file that exists here is also
    /// judged by where its symbolic links lead; one that does not (the admin
    /// usually cannot see the gateway's files) is judged by its path alone, and
    /// [`CredentialRef::resolve`] judges it again where it is read.
    pub fn check(&self, policy: &EgressSettings) -> Result<(), CredentialError> {
        match self {
            CredentialRef::Env(name) => check_env(name, policy),
            CredentialRef::File(path) => {
                check_path(path, policy)?;
                if std::fs::symlink_metadata(path).is_ok() {
                    check_resolved(path, policy)?;
                }
                Ok(())
            }
        }
    }

    /// Reads the credential, trimmed, after [`CredentialRef::check`]; a file
    /// must resolve (symbolic links followed) to a regular file inside a
    /// configured directory, itself resolved. The error never holds a value.
    pub fn resolve(&self, policy: &EgressSettings) -> Result<SecretString, CredentialError> {
        match self {
            CredentialRef::Env(name) => {
                check_env(name, policy)?;
                let value = std::env::var(name)
                    .map_err(|_| CredentialError::EnvUnset { name: name.clone() })?;
                Ok(SecretString::from(value.trim().to_owned()))
            }
            CredentialRef::File(path) => {
                check_path(path, policy)?;
                let resolved = check_resolved(path, policy)?;
                read_bounded(path, &resolved)
            }
        }
    }
}

fn check_env(name: &str, policy: &EgressSettings) -> Result<(), CredentialError> {
    if name.contains("__") {
        return Err(CredentialError::EnvSettings {
            name: name.to_owned(),
        });
    }
    let prefix = &policy.credential_env_prefix;
    // An empty prefix is refused by validation; refusing here too keeps a
    // hand-built policy from allowing every variable.
    if prefix.is_empty() || !name.starts_with(prefix.as_str()) || name.len() == prefix.len() {
        return Err(CredentialError::EnvPrefix {
            name: name.to_owned(),
            prefix: prefix.clone(),
        });
    }
    Ok(())
}

/// The path as written: plain components, inside a configured directory, not
/// an identity token.
fn check_path(path: &Path, policy: &EgressSettings) -> Result<(), CredentialError> {
    let text = path.to_string_lossy();
    let dotted = text.split('/').any(|part| part == "." || part == "..");
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if dotted || !plain || !path.is_absolute() {
        return Err(CredentialError::FileDots {
            path: path.to_owned(),
        });
    }
    if is_identity_token(path) {
        return Err(CredentialError::IdentityToken {
            path: path.to_owned(),
        });
    }
    let inside = policy
        .credential_dirs
        .iter()
        .any(|dir| path.starts_with(dir) && path != dir.as_path());
    if !inside {
        return Err(CredentialError::FileOutside {
            path: path.to_owned(),
            dirs: policy.dirs_for_message(),
        });
    }
    Ok(())
}

/// Where the file really is, which must be inside a configured directory as
/// that directory really is. Kubernetes mounts a Secret's keys as symbolic
/// links into a hidden directory of the same mount, which this accepts.
fn check_resolved(path: &Path, policy: &EgressSettings) -> Result<PathBuf, CredentialError> {
    let resolved = std::fs::canonicalize(path).map_err(|source| CredentialError::Read {
        path: path.to_owned(),
        source,
    })?;
    if is_identity_token(&resolved) {
        return Err(CredentialError::IdentityToken {
            path: path.to_owned(),
        });
    }
    let inside = policy
        .credential_dirs
        .iter()
        .filter_map(|dir| std::fs::canonicalize(dir).ok())
        .any(|dir| resolved.starts_with(&dir) && resolved != dir);
    if !inside {
        return Err(CredentialError::FileEscapes {
            path: path.to_owned(),
            resolved,
            dirs: policy.dirs_for_message(),
        });
    }
    Ok(resolved)
}

fn is_identity_token(path: &Path) -> bool {
    path.components().any(|c| match c {
        Component::Normal(part) => IDENTITY_COMPONENTS
            .iter()
            .any(|denied| part.eq_ignore_ascii_case(denied)),
        _ => false,
    })
}

/// Reads at most [`MAX_CREDENTIAL_BYTES`] of a regular file.
fn read_bounded(path: &Path, resolved: &Path) -> Result<SecretString, CredentialError> {
    let read_error = |source| CredentialError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(resolved).map_err(read_error)?;
    if !meta.is_file() {
        return Err(CredentialError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mut text = String::new();
    std::fs::File::open(resolved)
        .map_err(read_error)?
        .take(MAX_CREDENTIAL_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CREDENTIAL_BYTES {
        return Err(CredentialError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(SecretString::from(text.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn policy(dirs: &[&Path]) -> EgressSettings {
        EgressSettings {
            credential_dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
            ..EgressSettings::default()
        }
    }

    #[test]
    fn syntax_errors_never_echo_the_reference() {
        for bad in [
            "sk-live-abc",
            "env:",
            "env:sk-live abc",
            "file:relative/path",
            "file:/a\nb",
            "ENV:OBLETH_CREDENTIAL_X",
        ] {
            let e = CredentialRef::parse(bad).unwrap_err();
            assert!(matches!(e, CredentialError::Syntax), "{bad:?}");
            assert!(!e.to_string().contains("sk-live"), "{e}");
        }
    }

    #[test]
    fn env_references_need_the_prefix_and_no_settings_separator() {
        let p = EgressSettings::default();
        let cases = [
            ("env:OBLETH_CREDENTIAL_OPENAI", true),
            ("env:OBLETH_CREDENTIAL_", false),
            ("env:OBLETH_DATABASE__URL", false),
            ("env:OBLETH_CREDENTIAL__X", false),
            ("env:OPENAI_API_KEY", false),
            ("env:HOME", false),
            ("env:obleth_credential_x", false),
        ];
        for (reference, ok) in cases {
            let got = CredentialRef::admit(reference, &p);
            assert_eq!(got.is_ok(), ok, "{reference}: {got:?}");
            if let Err(e) = got {
                assert!(e.is_refusal());
                let name = reference.trim_start_matches("env:");
                assert!(e.to_string().contains(name), "{e}");
            }
        }
        let empty_prefix = EgressSettings {
            credential_env_prefix: String::new(),
            ..EgressSettings::default()
        };
        assert!(CredentialRef::admit("env:ANYTHING", &empty_prefix).is_err());
    }

    #[test]
    fn file_references_must_stay_inside_the_configured_directories() {
        let p = EgressSettings::default();
        let cases = [
            ("file:/run/secrets/openai", true),
            ("file:/etc/obleth/credentials/openai/key", true),
            ("file:/etc/passwd", false),
            ("file:/run/secrets", false),
            ("file:/run/secrets/../../etc/passwd", false),
            ("file:/run/secrets/./openai", false),
            ("file:/run/secretsx/openai", false),
            (
                "file:/var/run/secrets/kubernetes.io/serviceaccount/token",
                false,
            ),
            (
                "file:/run/secrets/kubernetes.io/serviceaccount/token",
                false,
            ),
            (
                "file:/run/secrets/eks.amazonaws.com/serviceaccount/token",
                false,
            ),
        ];
        for (reference, ok) in cases {
            let got = CredentialRef::admit(reference, &p);
            assert_eq!(got.is_ok(), ok, "{reference}: {got:?}");
        }
    }

    #[test]
    fn resolution_follows_links_and_refuses_those_that_leave_the_directory() {
        let allowed = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let p = policy(&[allowed.path()]);
        // A Kubernetes-style mount: the key is a link into a hidden directory.
        let data = allowed.path().join("..2026_11_22");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("openai"), "sk-inside\n").unwrap();
        std::os::unix::fs::symlink(&data, allowed.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/openai", allowed.path().join("openai")).unwrap();
        let inside = CredentialRef::File(allowed.path().join("openai"));
        inside.check(&p).unwrap();
        assert_eq!(inside.resolve(&p).unwrap().expose_secret(), "sk-inside");

        std::fs::write(outside.path().join("stolen"), "sk-outside").unwrap();
        std::os::unix::fs::symlink(outside.path().join("stolen"), allowed.path().join("evil"))
            .unwrap();
        let evil = CredentialRef::File(allowed.path().join("evil"));
        for e in [evil.check(&p).unwrap_err(), evil.resolve(&p).unwrap_err()] {
            assert!(matches!(e, CredentialError::FileEscapes { .. }), "{e}");
            assert!(!e.to_string().contains("sk-outside"), "{e}");
        }

        let missing = CredentialRef::File(allowed.path().join("missing"));
        missing.check(&p).unwrap();
        let e = missing.resolve(&p).unwrap_err();
        assert!(!e.is_refusal(), "{e}");

        std::fs::create_dir(allowed.path().join("dir")).unwrap();
        let dir = CredentialRef::File(allowed.path().join("dir"));
        assert!(matches!(
            dir.resolve(&p).unwrap_err(),
            CredentialError::NotAFile { .. }
        ));
        std::fs::write(
            allowed.path().join("big"),
            vec![b'a'; MAX_CREDENTIAL_BYTES as usize + 1],
        )
        .unwrap();
        let big = CredentialRef::File(allowed.path().join("big"));
        assert!(matches!(
            big.resolve(&p).unwrap_err(),
            CredentialError::TooLarge { .. }
        ));
    }
}
