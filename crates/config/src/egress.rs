//! What the gateway may reach and read on a provider's behalf: the `[egress]`
//! settings, credential references and the address policy for provider URLs.
//!
//! A provider row is written by whoever holds an admin token, but the gateway
//! acts on it with its own environment, files and network position. Without a
//! policy, `credential_ref: "env:OBLETH_DATABASE__URL"` would send the database
//! URL upstream as a bearer token and `base_url: "http://169.254.169.254"`
//! would reach the cloud metadata service. Both the admin (when it accepts a
//! row) and the gateway (when it acts on one) apply the same rules from here.

mod address;
mod credential;

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::settings::InvalidSetting;

pub use address::{url_host, EgressRefusal, METADATA_NAMES};
pub use credential::{CredentialError, CredentialRef, MAX_CREDENTIAL_BYTES};

/// The `[egress]` section, read by both the gateway and the admin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressSettings {
    /// An `env:NAME` credential reference must name a variable that starts
    /// with this prefix. Never empty.
    pub credential_env_prefix: String,
    /// A `file:/path` credential reference must name a file under one of these
    /// directories (after symbolic links are resolved).
    pub credential_dirs: Vec<PathBuf>,
    /// Whether provider URLs may reach loopback, RFC 1918, CGNAT
    /// (100.64.0.0/10) and unique-local IPv6 addresses. In-cluster model
    /// servers are common, so this defaults to true.
    pub allow_private_networks: bool,
    /// Whether provider URLs may reach link-local addresses (169.254.0.0/16,
    /// fe80::/10) and the cloud metadata addresses and names. Default false.
    pub allow_link_local: bool,
}

/// The default `egress.credential_env_prefix`.
pub const DEFAULT_CREDENTIAL_ENV_PREFIX: &str = "OBLETH_CREDENTIAL_";
/// The default `egress.credential_dirs`.
pub const DEFAULT_CREDENTIAL_DIRS: [&str; 2] = ["/run/secrets", "/etc/obleth/credentials"];

impl Default for EgressSettings {
    fn default() -> Self {
        EgressSettings {
            credential_env_prefix: DEFAULT_CREDENTIAL_ENV_PREFIX.to_owned(),
            credential_dirs: DEFAULT_CREDENTIAL_DIRS.iter().map(PathBuf::from).collect(),
            allow_private_networks: true,
            allow_link_local: false,
        }
    }
}

impl EgressSettings {
    /// Checks what serde cannot; the error names the field as `egress.field`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let prefix = &self.credential_env_prefix;
        if prefix.is_empty() {
            return Err(InvalidSetting::new(
                "egress.credential_env_prefix",
                "must not be empty",
            ));
        }
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(InvalidSetting::new(
                "egress.credential_env_prefix",
                "must be letters, digits and `_`",
            ));
        }
        for (i, dir) in self.credential_dirs.iter().enumerate() {
            let plain = dir
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
            if !dir.is_absolute() || !plain || dir.to_string_lossy().contains("/./") {
                return Err(InvalidSetting::new(
                    format!("egress.credential_dirs[{i}]"),
                    format!(
                        "`{}` must be an absolute path without `.` or `..`",
                        dir.display()
                    ),
                ));
            }
            if dir == Path::new("/") {
                return Err(InvalidSetting::new(
                    format!("egress.credential_dirs[{i}]"),
                    "`/` would allow every file; name a directory that holds only credentials",
                ));
            }
        }
        Ok(())
    }

    /// The configured directories, for messages.
    fn dirs_for_message(&self) -> String {
        if self.credential_dirs.is_empty() {
            return "none configured".to_owned();
        }
        self.credential_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_field() {
        EgressSettings::default().validate().unwrap();
        type Edit = fn(&mut EgressSettings);
        let cases: &[(Edit, &str)] = &[
            (
                |s| s.credential_env_prefix.clear(),
                "egress.credential_env_prefix",
            ),
            (
                |s| s.credential_env_prefix = "A B".into(),
                "egress.credential_env_prefix",
            ),
            (
                |s| s.credential_dirs = vec!["relative".into()],
                "egress.credential_dirs[0]",
            ),
            (
                |s| s.credential_dirs = vec!["/run/secrets".into(), "/run/../etc".into()],
                "egress.credential_dirs[1]",
            ),
            (
                |s| s.credential_dirs = vec!["/".into()],
                "egress.credential_dirs[0]",
            ),
        ];
        for (change, field) in cases {
            let mut s = EgressSettings::default();
            change(&mut s);
            let e = s.validate().unwrap_err();
            assert_eq!(e.field, *field, "{e}");
            assert!(e.to_string().starts_with(&format!("{field}: ")), "{e}");
        }
    }

    #[test]
    // figment's Jail returns its own (large) error type.
    #[allow(clippy::result_large_err)]
    fn the_section_loads_from_a_file_and_from_variables() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Sample {
            egress: EgressSettings,
        }
        figment::Jail::expect_with(|jail| {
            jail.create_file("obleth.toml", "[egress]\nallow_link_local = true\n")?;
            jail.set_env("OBLETH_EGRESS__CREDENTIAL_DIRS", "[/srv/keys,/run/secrets]");
            jail.set_env("OBLETH_EGRESS__CREDENTIAL_ENV_PREFIX", "LLM_KEY_");
            // A credential variable has no `__`, so it is never read as a setting.
            jail.set_env("OBLETH_CREDENTIAL_OPENAI", "sk-not-a-setting");
            let s: Sample =
                crate::load(Some(Path::new("obleth.toml"))).map_err(|e| e.to_string())?;
            assert!(s.egress.allow_link_local);
            assert!(s.egress.allow_private_networks);
            assert_eq!(s.egress.credential_env_prefix, "LLM_KEY_");
            assert_eq!(
                s.egress.credential_dirs,
                [PathBuf::from("/srv/keys"), PathBuf::from("/run/secrets")]
            );
            Ok(())
        });
    }
}
