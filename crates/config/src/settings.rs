//! Layered settings (defaults < TOML file < `OBLETH_` environment) and the sections the binaries share.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The environment variable that names the settings file when `--config` is not given.
pub const CONFIG_ENV: &str = "OBLETH_CONFIG";

/// An invalid or unreadable setting. The message names the field (as `section.field`)
/// and where its value came from.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings file {} does not exist", path.display())]
    MissingFile { path: PathBuf },
    /// The file or environment could not be read into the settings type
    /// (each problem as `field: problem (from source)`, joined by `; `).
    #[error("invalid settings: {0}")]
    Invalid(String),
    /// A check serde cannot make refused one setting. Its text is part of this
    /// message, so it is not also this error's `source()` (a report would
    /// print it twice).
    #[error("invalid settings: {0}")]
    Check(InvalidSetting),
}

impl From<InvalidSetting> for SettingsError {
    fn from(e: InvalidSetting) -> Self {
        SettingsError::Check(e)
    }
}

/// One setting refused by a check serde cannot make (a range, a cross
/// reference, a policy). Displays as `field: message`. `field` names the
/// setting as `section.field` (or `providers[i].name` and the like; a few
/// checks name several fields, `auth.tokens, auth.token_file`). Neither part
/// ever holds the value of a credential, a token or a URL's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSetting {
    pub field: String,
    pub message: String,
}

impl InvalidSetting {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidSetting {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Loads settings of type `T`: serde defaults, then the TOML file (if any), then
/// `OBLETH_SECTION__FIELD` environment variables.
///
/// The file is `file` if given, else the one named by `OBLETH_CONFIG`, else none.
pub fn load<T: DeserializeOwned>(file: Option<&Path>) -> Result<T, SettingsError> {
    let env_file = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
    let file = file.map(Path::to_path_buf).or(env_file);
    let mut figment = Figment::new();
    if let Some(path) = &file {
        if !path.is_file() {
            return Err(SettingsError::MissingFile { path: path.clone() });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    // Only `OBLETH_SECTION__FIELD` variables are settings; others that share the
    // prefix (`OBLETH_CONFIG`, build and test variables) are not ours to judge.
    figment = figment.merge(
        Env::prefixed("OBLETH_")
            .filter(|key| key.as_str().contains("__"))
            .split("__"),
    );
    figment.extract().map_err(|err| {
        let all: Vec<String> = err.into_iter().map(|e| describe(&e)).collect();
        SettingsError::Invalid(all.join("; "))
    })
}

/// One figment error as `field: problem (source)`, the field first so operators find it.
fn describe(err: &figment::Error) -> String {
    let field = if err.path.is_empty() {
        "settings".to_owned()
    } else {
        err.path.join(".")
    };
    let mut out = format!("{field}: {}", err.kind);
    if let Some(meta) = &err.metadata {
        match &meta.source {
            Some(source) => out.push_str(&format!(" (from {} {source})", meta.name)),
            None => out.push_str(&format!(" (from {})", meta.name)),
        }
    }
    out
}

/// A PostgreSQL connection URL. It holds a password, so `Debug` and `Display`
/// print the URL with the password replaced by `***`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(SecretString::from(url.into()))
    }

    /// The URL with its password, for the database driver only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL with its password masked, safe for logs and errors.
    pub fn redacted(&self) -> String {
        redact_url(self.0.expose_secret())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Masks the password of a `scheme://user:password@host/...` URL and any
/// `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                out.replace_range(start..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{base}{}", masked.join("&"));
    }
    out
}

/// The `[database]` section shared by the gateway and the admin.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:5432/db`. Unset: the gateway runs database-less.
    /// The query pool connects here; it may be a pooler such as PgBouncer in
    /// transaction mode.
    pub url: Option<DatabaseUrl>,
    /// PostgreSQL itself, for what needs a session of its own: the gateway's
    /// LISTEN connection and the migration runner's advisory lock. Unset: `url`.
    pub direct_url: Option<DatabaseUrl>,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long to wait for a pooled connection, in milliseconds.
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            direct_url: None,
            max_connections: 10,
            acquire_timeout_ms: 3_000,
        }
    }
}

impl DatabaseSettings {
    /// The URL for connections that need a session of their own (LISTEN,
    /// session advisory locks): `direct_url`, else `url`.
    pub fn session_url(&self) -> Option<&DatabaseUrl> {
        self.direct_url.as_ref().or(self.url.as_ref())
    }

    /// The name of the setting [`Self::session_url`] came from, for errors.
    pub fn session_field(&self) -> &'static str {
        if self.direct_url.is_some() {
            "database.direct_url"
        } else {
            "database.url"
        }
    }
}

/// The `[migrations]` section: how the shared runner waits and retries.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationSettings {
    /// Apply pending expand migrations at start (admin only).
    pub migrate_on_startup: bool,
    /// How long to wait for the migration lock before giving up, in seconds.
    pub lock_wait_secs: u64,
    /// `lock_timeout` for each migration statement, in milliseconds.
    pub lock_timeout_ms: u64,
    /// `statement_timeout` for each migration statement, in seconds.
    pub statement_timeout_secs: u64,
    /// How many times a migration that hit `lock_timeout` is retried.
    pub max_retries: u32,
    /// First back-off after a lock timeout, in milliseconds; it doubles each time.
    pub retry_backoff_ms: u64,
    /// How long `finish` counts a node as alive after its last heartbeat when
    /// it never recorded its stop, in seconds. A gateway cut off from the
    /// database keeps serving from its key store without heartbeating, so a
    /// silent node is taken to be still serving until this horizon passes.
    pub node_horizon_secs: u64,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        MigrationSettings {
            migrate_on_startup: true,
            lock_wait_secs: 60,
            lock_timeout_ms: 5_000,
            statement_timeout_secs: 600,
            max_retries: 10,
            retry_backoff_ms: 500,
            node_horizon_secs: 86_400,
        }
    }
}

impl MigrationSettings {
    pub fn lock_wait(&self) -> Duration {
        Duration::from_secs(self.lock_wait_secs)
    }
}

/// The `[log]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people, `json` for log pipelines.
    pub format: crate::telemetry::LogFormat,
    /// An `EnvFilter` directive such as `info` or `obleth_gateway=debug`; `RUST_LOG` wins.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: crate::telemetry::LogFormat::Pretty,
            filter: "info".to_owned(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_setting_reads_field_then_message_and_is_its_own_cause() {
        let check = InvalidSetting::new("server.max_body_bytes", "must be greater than 0");
        assert_eq!(
            check.to_string(),
            "server.max_body_bytes: must be greater than 0"
        );
        let e = SettingsError::from(check.clone());
        assert_eq!(
            e.to_string(),
            "invalid settings: server.max_body_bytes: must be greater than 0"
        );
        assert!(matches!(&e, SettingsError::Check(c) if *c == check));
        assert!(std::error::Error::source(&e).is_none());
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        database: DatabaseSettings,
        migrations: MigrationSettings,
    }

    #[test]
    fn redact_url_masks_passwords() {
        let cases = [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?password=secret&x=1",
                "postgres://h/db?password=***&x=1",
            ),
            ("postgres://u:p%40ss@h/db", "postgres://u:***@h/db"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "{input}");
        }
    }

    #[test]
    fn debug_never_prints_the_password() {
        let url = DatabaseUrl::new("postgres://obleth:hunter2@db/obleth");
        let settings = DatabaseSettings {
            url: Some(url),
            direct_url: Some(DatabaseUrl::new(
                "postgres://obleth:swordfish@pg:5432/obleth",
            )),
            ..Default::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("swordfish"), "{shown}");
        assert!(shown.contains("obleth:***@db"), "{shown}");
        assert!(shown.contains("obleth:***@pg:5432"), "{shown}");
    }

    #[test]
    fn the_session_url_is_direct_url_else_url() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OBLETH_DATABASE__URL", "postgres://u:p@bouncer:6432/db");
            let s: Sample = load(None).map_err(|e| e.to_string())?;
            let db = &s.database;
            assert_eq!(
                db.session_url().map(|u| u.expose()),
                Some("postgres://u:p@bouncer:6432/db")
            );
            assert_eq!(db.session_field(), "database.url");
            jail.set_env("OBLETH_DATABASE__DIRECT_URL", "postgres://u:p@pg:5432/db");
            let s: Sample = load(None).map_err(|e| e.to_string())?;
            let db = &s.database;
            assert_eq!(
                db.session_url().map(|u| u.expose()),
                Some("postgres://u:p@pg:5432/db")
            );
            assert_eq!(db.session_field(), "database.direct_url");
            assert_eq!(
                db.url.as_ref().map(|u| u.expose()),
                Some("postgres://u:p@bouncer:6432/db")
            );
            Ok(())
        });
    }

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "obleth.toml",
                "[migrations]\nlock_wait_secs = 5\nmax_retries = 2\n",
            )?;
            jail.set_env("OBLETH_MIGRATIONS__MAX_RETRIES", "7");
            let s: Sample = load(Some(Path::new("obleth.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.migrations.lock_wait_secs, 5);
            assert_eq!(s.migrations.max_retries, 7);
            assert_eq!(s.migrations.lock_timeout_ms, 5_000);
            Ok(())
        });
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let cases = [
            (
                "[migrations]\nlock_wait_secs = \"soon\"\n",
                "migrations.lock_wait_secs",
            ),
            ("[migrations]\nlock_wiat_secs = 1\n", "lock_wiat_secs"),
            ("[databse]\nurl = \"x\"\n", "databse"),
        ];
        for (file, field) in cases {
            figment::Jail::expect_with(|jail| {
                jail.create_file("obleth.toml", file)?;
                let err = load::<Sample>(Some(Path::new("obleth.toml"))).unwrap_err();
                let msg = err.to_string();
                assert!(msg.contains(field), "{msg} should name {field}");
                Ok(())
            });
        }
    }

    #[test]
    fn invalid_env_names_the_variable_field() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OBLETH_CONFIG_NOTE", "not a setting, ignored");
            jail.set_env("OBLETH_MIGRATIONS__LOCK_TIMEOUT_MS", "fast");
            let err = load::<Sample>(None).unwrap_err().to_string();
            assert!(err.contains("migrations.lock_timeout_ms"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn misspelt_env_section_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OBLETH_MIGRATONS__MAX_RETRIES", "3");
            let err = load::<Sample>(None).unwrap_err().to_string();
            assert!(err.contains("migratons"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_named() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/obleth.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/obleth.toml"));
    }
}
