//! The admin's settings: its listener and drain, the database, startup
//! migrations, the admin tokens, the change log's pruning and logging.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use obleth_config::{
    DatabaseSettings, InvalidSetting, LogSettings, MigrationSettings, SettingsError,
};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

/// Everything `obleth-admin` reads from its file and `OBLETH_` environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub migrations: MigrationSettings,
    pub auth: AuthSettings,
    /// How long the change log keeps its rows.
    pub changes: ChangesSettings,
    /// The operator console at `/console`: sessions and their cookie.
    pub console: ConsoleSettings,
    pub log: LogSettings,
    /// What providers may reference: credential variables and files, and the
    /// addresses their URLs may name (shared with the gateway).
    pub egress: obleth_config::EgressSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// The one listener: the API under `/api/v1` and the ops routes.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// After SIGTERM: how long to keep serving while load balancers notice the
    /// node is not ready (equal to the pod's preStop sleep), in seconds.
    pub drain_delay_secs: u64,
    /// After the drain delay: how long in-flight requests may take, in seconds.
    pub drain_timeout_secs: u64,
    /// A stable node id for the fleet view; default: hostname plus a random suffix.
    pub node_id: Option<String>,
    /// How often the node record is refreshed, in seconds.
    pub heartbeat_secs: u64,
    /// Longest time a client may take to send a request's headers (from the
    /// accept for a connection's first request, from its first byte for later
    /// ones), in seconds; then the connection is closed.
    pub header_timeout_secs: u64,
    /// How long a keep-alive connection may wait for its next request, with
    /// none in flight, in seconds; then it is closed.
    pub idle_timeout_secs: u64,
    /// Longest time a client may take to send a whole request body, in
    /// seconds; then the request fails (400) and the connection is closed.
    pub body_timeout_secs: u64,
    /// Most client connections open at once; more are refused (503, closed
    /// at once) and counted.
    pub max_connections: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            max_body_bytes: 1024 * 1024,
            drain_delay_secs: 5,
            drain_timeout_secs: 30,
            node_id: None,
            heartbeat_secs: 10,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 30,
            max_connections: 1_000,
        }
    }
}

impl ServerSettings {
    /// The listener's limits.
    pub fn limits(&self) -> obleth_service::ConnectionLimits {
        obleth_service::ConnectionLimits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
            body_timeout: Some(Duration::from_secs(self.body_timeout_secs)),
        }
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_secs)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

/// The change log's pruning: rows older than `retention_days` are deleted
/// every `prune_interval_secs` (see `crate::prune`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChangesSettings {
    /// Days a change row is kept; 0 keeps every row (no pruning). A gateway
    /// offline for longer reloads everything when it comes back.
    pub retention_days: u32,
    /// How often the admin prunes, in seconds.
    pub prune_interval_secs: u64,
}

/// The longest retention accepted, in days (ten years): more is a typo, and
/// the cutoff must stay a date PostgreSQL holds.
pub const MAX_RETENTION_DAYS: u32 = 3650;

impl Default for ChangesSettings {
    fn default() -> Self {
        ChangesSettings {
            retention_days: 7,
            prune_interval_secs: 3600,
        }
    }
}

impl ChangesSettings {
    /// How long a row is kept; none when pruning is off.
    pub fn retention(&self) -> Option<chrono::Duration> {
        (self.retention_days > 0).then(|| chrono::Duration::days(i64::from(self.retention_days)))
    }

    pub fn prune_interval(&self) -> Duration {
        Duration::from_secs(self.prune_interval_secs)
    }

    fn validate(&self) -> Result<(), InvalidSetting> {
        if self.retention_days > MAX_RETENTION_DAYS {
            return Err(InvalidSetting::new(
                "changes.retention_days",
                format!("must be at most {MAX_RETENTION_DAYS} (0 keeps every change)"),
            ));
        }
        if self.prune_interval_secs == 0 {
            return Err(InvalidSetting::new(
                "changes.prune_interval_secs",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// The operator console (`/console`). Sessions are signed cookies (see
/// `crate::console::session`), so nothing here is shared between replicas
/// but the admin tokens themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// Serve the console; off, `/console` is a plain 404.
    pub enabled: bool,
    /// How long a session lasts after sign-in, in seconds (60 to 604800).
    pub session_ttl_secs: u64,
    /// When the session cookie carries `Secure`: `auto` (when the request
    /// came over TLS, as a TLS-terminating proxy says with
    /// `X-Forwarded-Proto: https`), `always` or `never`.
    pub secure_cookie: SecureCookie,
}

/// When the console's cookie is marked `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecureCookie {
    #[default]
    Auto,
    Always,
    Never,
}

/// Shortest and longest console session, in seconds: a minute and a week.
pub const SESSION_TTL_RANGE: (u64, u64) = (60, 7 * 24 * 3600);

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: true,
            session_ttl_secs: 8 * 3600,
            secure_cookie: SecureCookie::Auto,
        }
    }
}

impl ConsoleSettings {
    fn validate(&self) -> Result<(), InvalidSetting> {
        let (min, max) = SESSION_TTL_RANGE;
        if !(min..=max).contains(&self.session_ttl_secs) {
            return Err(InvalidSetting::new(
                "console.session_ttl_secs",
                format!("must be between {min} and {max}"),
            ));
        }
        Ok(())
    }
}

/// Admin bearer tokens: listed here, read from `token_file` (one a line), or
/// both; and the throttle on wrong tokens.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// One token or a list. `OBLETH_AUTH__TOKENS=...` sets a single one.
    #[serde(deserialize_with = "one_or_many")]
    pub tokens: Vec<SecretString>,
    /// A file with one token a line; blank lines and `#` comments are skipped.
    pub token_file: Option<PathBuf>,
    /// Missing or wrong tokens a client (an IP address; an IPv6 /64) may send
    /// within `failure_window_secs`; past this it gets 429 until the window ends.
    pub max_failures: u32,
    /// The window the failures are counted in, in seconds; it starts at a
    /// client's first failure.
    pub failure_window_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            tokens: Vec::new(),
            token_file: None,
            max_failures: 20,
            failure_window_secs: 60,
        }
    }
}

impl AuthSettings {
    pub fn failure_window(&self) -> Duration {
        Duration::from_secs(self.failure_window_secs)
    }
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("token_file", &self.token_file)
            .field("max_failures", &self.max_failures)
            .field("failure_window_secs", &self.failure_window_secs)
            .finish()
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(SecretString),
        Many(Vec<SecretString>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(token) => vec![token],
        OneOrMany::Many(tokens) => tokens,
    })
}

impl AdminSettings {
    /// Loads and validates the settings; errors name the field.
    pub fn load(file: Option<&Path>) -> Result<AdminSettings, SettingsError> {
        let settings = AdminSettings::load_unchecked(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads without the checks `validate` makes, for `obleth-admin wiring`,
    /// which needs ports and timings but no database.
    pub fn load_unchecked(file: Option<&Path>) -> Result<AdminSettings, SettingsError> {
        obleth_config::load(file)
    }

    /// Checks what serde cannot. Tokens are checked when they are read
    /// ([`crate::tokens::AdminTokens::load`]), since the file may change.
    /// The error names the first setting at fault; docs/configuration.md
    /// lists the messages.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.database.url.is_none() {
            return Err(InvalidSetting::new(
                "database.url",
                "required; set it in the settings file or OBLETH_DATABASE__URL",
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(InvalidSetting::new(
                "server.max_body_bytes",
                "must be greater than 0",
            ));
        }
        let positive = [
            ("server.heartbeat_secs", self.server.heartbeat_secs),
            (
                "server.header_timeout_secs",
                self.server.header_timeout_secs,
            ),
            ("server.idle_timeout_secs", self.server.idle_timeout_secs),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            ("server.max_connections", self.server.max_connections as u64),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(InvalidSetting::new(field, "must be greater than 0"));
            }
        }
        if let Some(id) = &self.server.node_id {
            if id.trim().is_empty() {
                return Err(InvalidSetting::new(
                    "server.node_id",
                    "must not be empty when set",
                ));
            }
        }
        if self.auth.tokens.is_empty() && self.auth.token_file.is_none() {
            return Err(InvalidSetting::new(
                "auth.tokens, auth.token_file",
                "no admin token configured; set one of them",
            ));
        }
        if self.auth.max_failures == 0 {
            return Err(InvalidSetting::new(
                "auth.max_failures",
                "must be greater than 0",
            ));
        }
        if self.auth.failure_window_secs == 0 {
            return Err(InvalidSetting::new(
                "auth.failure_window_secs",
                "must be greater than 0",
            ));
        }
        self.changes.validate()?;
        self.console.validate()?;
        self.egress.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_token_or_the_database_password() {
        let mut s = AdminSettings::default();
        s.auth.tokens = vec![SecretString::from("tok-hunter2-hunter2-hunter2")];
        s.database.url = Some(obleth_config::DatabaseUrl::new(
            "postgres://u:pg-hunter2@h/db",
        ));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[1 redacted]"), "{shown}");
    }

    #[test]
    fn validate_names_the_missing_field() {
        let mut s = AdminSettings::default();
        assert_eq!(s.validate().unwrap_err().field, "database.url");
        s.database.url = Some(obleth_config::DatabaseUrl::new("postgres://h/db"));
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "auth.tokens, auth.token_file: no admin token configured; set one of them"
        );
        s.auth.token_file = Some(PathBuf::from("/run/secrets/admin"));
        s.validate().unwrap();
        s.auth.max_failures = 0;
        assert_eq!(s.validate().unwrap_err().field, "auth.max_failures");
        s.auth.max_failures = 20;
        s.egress.credential_env_prefix.clear();
        assert_eq!(
            s.validate().unwrap_err().field,
            "egress.credential_env_prefix"
        );
        s.egress = obleth_config::EgressSettings::default();
        s.server.max_body_bytes = 0;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "server.max_body_bytes: must be greater than 0"
        );
    }

    #[test]
    fn zero_connection_limits_are_refused_naming_the_field() {
        let mut valid = AdminSettings::default();
        valid.database.url = Some(obleth_config::DatabaseUrl::new("postgres://h/db"));
        valid.auth.token_file = Some(PathBuf::from("/run/secrets/admin"));
        valid.validate().unwrap();
        type Zero = fn(&mut ServerSettings);
        let cases: [(&str, Zero); 4] = [
            ("server.header_timeout_secs", |s| s.header_timeout_secs = 0),
            ("server.idle_timeout_secs", |s| s.idle_timeout_secs = 0),
            ("server.body_timeout_secs", |s| s.body_timeout_secs = 0),
            ("server.max_connections", |s| s.max_connections = 0),
        ];
        for (field, zero) in cases {
            let mut s = valid.clone();
            zero(&mut s.server);
            let e = s.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert_eq!(e.to_string(), format!("{field}: must be greater than 0"));
        }
    }

    #[test]
    fn load_refuses_a_failed_check_as_a_typed_error_with_the_same_message() {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[database]\nurl = \"postgres://u:pg-hunter2@h/db\"").unwrap();
        let e = AdminSettings::load(Some(file.path())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid settings: auth.tokens, auth.token_file: no admin token configured; set one of them"
        );
        match &e {
            SettingsError::Check(check) => assert_eq!(check.field, "auth.tokens, auth.token_file"),
            other => panic!("{other:?}"),
        }
        assert!(std::error::Error::source(&e).is_none());
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    }

    #[test]
    fn change_retention_defaults_to_seven_days_zero_disables_and_bad_values_name_the_field() {
        let mut s = AdminSettings::default();
        s.database.url = Some(obleth_config::DatabaseUrl::new("postgres://h/db"));
        s.auth.token_file = Some(PathBuf::from("/run/secrets/admin"));
        assert_eq!(s.changes.retention(), Some(chrono::Duration::days(7)));
        s.changes.retention_days = 0;
        s.validate().unwrap();
        assert_eq!(s.changes.retention(), None, "0 disables pruning");
        s.changes.retention_days = MAX_RETENTION_DAYS + 1;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "changes.retention_days: must be at most 3650 (0 keeps every change)"
        );
        s.changes.retention_days = 7;
        s.changes.prune_interval_secs = 0;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "changes.prune_interval_secs: must be greater than 0"
        );
        let negative: Result<ChangesSettings, _> = serde_json::from_str(r#"{"retention_days":-1}"#);
        assert!(negative.is_err());
    }

    #[test]
    fn console_session_ttl_out_of_range_is_refused_naming_the_field() {
        let mut s = AdminSettings::default();
        s.database.url = Some(obleth_config::DatabaseUrl::new("postgres://h/db"));
        s.auth.token_file = Some(PathBuf::from("/run/secrets/admin"));
        for (ttl, ok) in [(59, false), (60, true), (604_800, true), (604_801, false)] {
            s.console.session_ttl_secs = ttl;
            match s.validate() {
                Ok(()) => assert!(ok, "{ttl}"),
                Err(e) => {
                    assert!(!ok, "{ttl}");
                    assert_eq!(
                        e.to_string(),
                        "console.session_ttl_secs: must be between 60 and 604800"
                    );
                }
            }
        }
        let parsed: ConsoleSettings =
            serde_json::from_str(r#"{"secure_cookie":"always"}"#).unwrap();
        assert_eq!(parsed.secure_cookie, SecureCookie::Always);
        assert!(serde_json::from_str::<ConsoleSettings>(r#"{"secure_cookie":"yes"}"#).is_err());
    }

    #[test]
    fn tokens_accept_one_string_or_a_list() {
        let one: AuthSettings = serde_json::from_str(r#"{"tokens":"a"}"#).unwrap();
        let many: AuthSettings = serde_json::from_str(r#"{"tokens":["a","b"]}"#).unwrap();
        assert_eq!((one.tokens.len(), many.tokens.len()), (1, 2));
    }
}
