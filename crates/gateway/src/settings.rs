//! The gateway's settings: listeners, drain, cache, usage, and for the embedded
//! (database-less) mode the keys, providers, routes and prices themselves.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use obleth_config::egress::{url_host, CredentialRef};
use obleth_config::model::{
    ProviderKind, ProviderOptions, MAX_PROVIDER_TIMEOUT_MS, MAX_TARGET_WEIGHT,
};
use obleth_config::{DatabaseSettings, InvalidSetting, LogSettings, SettingsError};
use serde::Deserialize;

/// Everything `obleth-gateway` reads from its file and `OBLETH_` environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub cache: CacheSettings,
    pub usage: UsageSettings,
    /// Rate limits and budgets shared by the fleet.
    pub limits: LimitsSettings,
    /// Retries, back-off and the ejection of failing targets.
    pub routing: RoutingSettings,
    pub log: LogSettings,
    /// Not used by the gateway; accepted so that `OBLETH_MIGRATIONS__*`
    /// variables set for a whole stack do not stop it.
    pub migrations: obleth_config::MigrationSettings,
    /// What providers may reference and reach: credential variables and
    /// files, and the addresses their URLs may name.
    pub egress: obleth_config::EgressSettings,
    /// How providers are reached: the egress HTTP proxy.
    pub upstream: UpstreamSettings,
    /// Traces over OTLP.
    pub telemetry: TelemetrySettings,
    /// Embedded mode only: upstream providers.
    pub providers: Vec<ProviderConfig>,
    /// Embedded mode only: model routes.
    pub routes: Vec<RouteConfig>,
    /// Embedded mode only: API keys, as hashes.
    pub keys: Vec<KeyConfig>,
    /// Embedded mode only: model prices.
    pub prices: Vec<PriceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// The proxy listener.
    pub listen: SocketAddr,
    /// The ops listener: health, readiness, version, metrics.
    pub ops_listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest time a client may take to send its request body, in seconds.
    pub body_timeout_secs: u64,
    /// After SIGTERM: how long to keep serving while load balancers notice the
    /// node is not ready (equal to the pod's preStop sleep), in seconds.
    pub drain_delay_secs: u64,
    /// After the drain delay: how long in-flight requests and streams may take to
    /// finish before they are ended, in seconds. The gateway exits as soon as
    /// the last one ends. Default: the longest request the gateway allows
    /// ([`ServerSettings::longest_request`]), so a rollout cuts none.
    pub drain_timeout_secs: Option<u64>,
    /// Longest a streamed answer may run, from the upstream's first byte, in
    /// seconds; then it is ended (recorded, with its usage, as 504).
    pub max_stream_secs: u64,
    /// A stable node id for the fleet view; default: hostname plus a random suffix.
    pub node_id: Option<String>,
    /// How often the node record is refreshed, in seconds.
    pub heartbeat_secs: u64,
    /// Both listeners: longest time a client may take to send a request's
    /// headers (from the accept for a connection's first request, from its
    /// first byte for later ones), in seconds; then the connection is closed.
    pub header_timeout_secs: u64,
    /// Both listeners: how long a keep-alive connection may wait for its next
    /// request, with none in flight, in seconds; then it is closed.
    pub idle_timeout_secs: u64,
    /// Most client connections open at once on the proxy listener; more are
    /// refused (503, closed at once) and counted.
    pub max_connections: usize,
    /// Most connections open at once on the ops listener.
    pub ops_max_connections: usize,
    /// Largest non-streamed upstream answer the gateway reads, in bytes; past
    /// it the client gets 502 `upstream_response_too_large`.
    pub max_response_bytes: usize,
    /// Threads that serve the proxy listener, each with an event loop of its
    /// own that runs its connections' requests from start to end (thread per
    /// core). Default: the CPUs the process may use (its cgroup's CPU limit
    /// included). 0 serves the proxy on the shared runtime with the ops
    /// listener and the background tasks instead. At most 64.
    pub workers: Option<usize>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            ops_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            max_body_bytes: 4 * 1024 * 1024,
            body_timeout_secs: 30,
            drain_delay_secs: 5,
            drain_timeout_secs: None,
            max_stream_secs: 600,
            node_id: None,
            heartbeat_secs: 10,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 10_000,
            ops_max_connections: 1_000,
            max_response_bytes: 32 * 1024 * 1024,
            workers: None,
        }
    }
}

impl ServerSettings {
    /// `workers`, or by default the CPUs this process may use.
    pub fn proxy_workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(obleth_service::server::MAX_WORKERS)
        })
    }

    /// The proxy listener's limits. Its body timeout is applied in the
    /// handler (`body_timeout_secs`), so refusals keep OpenAI's error shape.
    pub fn proxy_limits(&self) -> obleth_service::ConnectionLimits {
        obleth_service::ConnectionLimits {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections: self.max_connections,
            body_timeout: None,
        }
    }

    /// The ops listener's limits: its routes read no body.
    pub fn ops_limits(&self) -> obleth_service::ConnectionLimits {
        obleth_service::ConnectionLimits {
            max_connections: self.ops_max_connections,
            body_timeout: Some(Duration::from_secs(self.body_timeout_secs)),
            ..self.proxy_limits()
        }
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs(self.drain_delay_secs)
    }

    /// `drain_timeout_secs`, or by default the longest request.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout_secs
            .map_or_else(|| self.longest_request(), Duration::from_secs)
    }

    /// The longest a request may take: its body upload, the upstream's
    /// headers (at most [`MAX_PROVIDER_TIMEOUT_MS`]), then its non-streamed
    /// answer (as long again) or its stream (`max_stream_secs`).
    pub fn longest_request(&self) -> Duration {
        let provider = Duration::from_millis(MAX_PROVIDER_TIMEOUT_MS as u64);
        Duration::from_secs(self.body_timeout_secs)
            + provider
            + provider.max(Duration::from_secs(self.max_stream_secs))
    }

    pub fn max_stream(&self) -> Duration {
        Duration::from_secs(self.max_stream_secs)
    }
}

/// `[routing]`: how a request moves over its route's targets before its
/// first byte reaches the client (see docs/gateway.md, "Routing and
/// fallback").
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingSettings {
    /// Upstream attempts one request may make, over all its targets: 1
    /// tries each target at most once, in order, with no retry.
    pub max_attempts: u32,
    /// No attempt starts later than this after the first, in milliseconds.
    /// Every attempt's wait for the upstream's headers also ends at most 600
    /// s after the first began, so retries never make a request longer than
    /// the drain allows.
    pub retry_budget_ms: u64,
    /// The first back-off before a target is tried again, doubled each time
    /// (with full jitter) up to `backoff_max_ms`; a `retry-after` the target
    /// sent replaces it.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Consecutive failures (5xx, 429, no connection, timeout) after which a
    /// target is ejected; 0 never ejects.
    pub eject_after_failures: u32,
    /// How long an ejected target gets no traffic before one request tries
    /// it again (half-open), in milliseconds.
    pub eject_ms: u64,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            max_attempts: 3,
            retry_budget_ms: 30_000,
            backoff_base_ms: 200,
            backoff_max_ms: 5_000,
            eject_after_failures: 5,
            eject_ms: 30_000,
        }
    }
}

/// `[upstream]`: how the gateway reaches providers (see
/// docs/configuration.md, "`[upstream]`").
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// An HTTP proxy every provider connection goes through, as an HTTP
    /// CONNECT tunnel (`http://[user:password@]host:port`); unset: the
    /// `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` variables, when
    /// `proxy_from_env`. `Debug` never shows its credentials.
    pub proxy: Option<ProxyUrl>,
    /// Hosts reached directly, never through the proxy: names (each also
    /// covers its subdomains; a leading `.` is the same), IP addresses,
    /// CIDR ranges, or `*` for all. Added to `NO_PROXY` when the proxy
    /// comes from the environment.
    pub no_proxy: Vec<String>,
    /// Whether the proxy variables are read when `proxy` is unset.
    pub proxy_from_env: bool,
    /// The metadata server a `vertex` provider with `options.auth =
    /// "workload-identity"` and no credential asks for tokens
    /// (`host[:port]`); unset: `GCE_METADATA_HOST`, else
    /// `metadata.google.internal`.
    pub metadata_host: Option<String>,
}

/// The `[telemetry]` section: one span a proxied request, exported over
/// OTLP/HTTP (protobuf) when `otlp_endpoint` is set.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`);
    /// `/v1/traces` is appended unless the path already ends with it.
    /// Unset: no span is exported.
    pub otlp_endpoint: Option<String>,
    /// Headers sent with every export (a collector's API key). `Debug`
    /// shows their names only.
    pub otlp_headers: std::collections::BTreeMap<String, String>,
    /// How long one export may take, in milliseconds.
    pub otlp_timeout_ms: u64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// The share of new traces recorded, 0.0 to 1.0. A request that
    /// continues a client's trace follows the client's sampled flag.
    pub sample_ratio: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            otlp_headers: std::collections::BTreeMap::new(),
            otlp_timeout_ms: 10_000,
            service_name: "obleth-gateway".to_owned(),
            sample_ratio: 1.0,
        }
    }
}

impl std::fmt::Debug for TelemetrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetrySettings")
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field(
                "otlp_headers",
                &self.otlp_headers.keys().collect::<Vec<_>>(),
            )
            .field("otlp_timeout_ms", &self.otlp_timeout_ms)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .finish()
    }
}

impl TelemetrySettings {
    /// The URL spans are posted to, when export is on.
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.otlp_endpoint.as_deref()?.trim_end_matches('/');
        Some(if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        })
    }

    /// Checks the endpoint's shape, the headers and the ratio; a message
    /// never repeats a header's value.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if let Some(endpoint) = &self.otlp_endpoint {
            const SHAPE: &str =
                "must be an http:// or https:// URL with a host and no user or password (the collector's OTLP/HTTP endpoint)";
            let uri: http::Uri = endpoint
                .parse()
                .map_err(|_| InvalidSetting::new("telemetry.otlp_endpoint", SHAPE))?;
            let shaped = matches!(uri.scheme_str(), Some("http" | "https"))
                && uri
                    .authority()
                    .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
                && uri.query().is_none();
            if !shaped {
                return Err(InvalidSetting::new("telemetry.otlp_endpoint", SHAPE));
            }
        }
        for (name, value) in &self.otlp_headers {
            let field = || format!("telemetry.otlp_headers.{name}");
            if http::HeaderName::try_from(name.as_str()).is_err() {
                return Err(InvalidSetting::new(field(), "is not a valid header name"));
            }
            if http::HeaderValue::try_from(value.as_str()).is_err() {
                return Err(InvalidSetting::new(
                    field(),
                    "has a value that is not a valid header value",
                ));
            }
        }
        if self.otlp_timeout_ms == 0 {
            return Err(InvalidSetting::new(
                "telemetry.otlp_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(InvalidSetting::new(
                "telemetry.service_name",
                "must not be empty",
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(InvalidSetting::new(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        Ok(())
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            proxy: None,
            no_proxy: Vec::new(),
            proxy_from_env: true,
            metadata_host: None,
        }
    }
}

impl UpstreamSettings {
    /// Checks the proxy URL and the `no_proxy` entries; a message never
    /// repeats the URL, which may hold a password.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if let Some(proxy) = &self.proxy {
            proxy
                .check()
                .map_err(|m| InvalidSetting::new("upstream.proxy", m))?;
        }
        if let Some(host) = &self.metadata_host {
            if !is_host_port(host) {
                return Err(InvalidSetting::new(
                    "upstream.metadata_host",
                    "must be a host name or address, optionally with `:port`",
                ));
            }
        }
        for (i, entry) in self.no_proxy.iter().enumerate() {
            let field = || format!("upstream.no_proxy[{i}]");
            if entry.trim().is_empty() {
                return Err(InvalidSetting::new(field(), "must not be empty"));
            }
            if entry
                .chars()
                .any(|c| c == ',' || c.is_whitespace() || c.is_control())
            {
                return Err(InvalidSetting::new(
                    field(),
                    "one host, address or range per entry, without spaces or commas",
                ));
            }
        }
        Ok(())
    }
}

/// `host`, `host:port`, `[v6]:port`: what may go between `http://` and the
/// path of the metadata server's URL.
fn is_host_port(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

impl UpstreamSettings {
    /// The metadata server's host: the setting, else `GCE_METADATA_HOST`
    /// (Google's libraries read it too), else `metadata.google.internal`.
    pub fn metadata_host(&self) -> String {
        self.metadata_host
            .clone()
            .or_else(|| {
                std::env::var("GCE_METADATA_HOST")
                    .ok()
                    .filter(|h| is_host_port(h))
            })
            .unwrap_or_else(|| crate::google_auth::METADATA_HOST.to_owned())
    }
}

/// The egress proxy's URL, which may carry `user:password@`: `Debug` shows
/// it without them.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ProxyUrl(String);

impl ProxyUrl {
    pub fn new(url: impl Into<String>) -> Self {
        ProxyUrl(url.into())
    }

    /// The URL as set, credentials included: only for the proxy connector.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its user information.
    pub fn redacted(&self) -> String {
        crate::connection::redact_userinfo(&self.0)
    }

    /// `http://[user:password@]host[:port][/]`, or why not (without the URL).
    fn check(&self) -> Result<(), &'static str> {
        const SHAPE: &str =
            "must be http://[user:password@]host[:port] (an HTTP proxy that allows CONNECT)";
        let uri: http::Uri = self.0.parse().map_err(|_| SHAPE)?;
        if uri.scheme_str() != Some("http") {
            return Err(SHAPE);
        }
        let Some(authority) = uri.authority() else {
            return Err(SHAPE);
        };
        let host = authority.host();
        if host.is_empty() || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(SHAPE);
        }
        Ok(())
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ProxyUrl").field(&self.redacted()).finish()
    }
}

/// `[limits]`: how rate limits and budgets are shared by the gateways on one
/// database (see docs/gateway.md, "Limits and budgets across the fleet").
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSettings {
    /// `false` turns every rate limit and budget check off (benchmarks).
    pub enabled: bool,
    /// The longest a lease refill, debt or hand-back waits before it is sent
    /// to the database, in milliseconds; a refill below the low-water mark
    /// goes at once.
    pub sync_interval_ms: u64,
    /// The completion tokens a request is assumed to use when it names no
    /// `max_tokens` or `max_completion_tokens`, for its reservation.
    pub default_completion_tokens: u32,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        LimitsSettings {
            enabled: true,
            sync_interval_ms: 50,
            default_completion_tokens: 1024,
        }
    }
}

impl LimitsSettings {
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Most keys held in memory. Past it the store is incomplete: keys it
    /// does not hold are looked up in the database, rate-limited.
    pub max_keys: u64,
    /// How long an unknown key looked up in the database is remembered as
    /// unknown, in seconds.
    pub negative_ttl_secs: u64,
    /// Most unknown keys remembered.
    pub negative_max: u64,
    /// While the key store is incomplete (warming, change feed not live):
    /// most database lookups of unknown keys per second, for the whole
    /// gateway. Past it a miss is answered 503 `key_store_unavailable`.
    pub miss_lookups_per_sec: u32,
    /// The safety-net poll of the change log, in seconds.
    pub poll_interval_secs: u64,
    /// Ignored: budgets are kept by the shared quota counters (`[limits]`),
    /// not re-read. Accepted so that existing settings files still load.
    pub budget_refresh_secs: u64,
    /// How often providers' `file:` credentials are checked for a change
    /// (a rotated secret), in seconds.
    pub credential_poll_secs: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_keys: 2_000_000,
            negative_ttl_secs: 30,
            negative_max: 100_000,
            miss_lookups_per_sec: 50,
            poll_interval_secs: 30,
            budget_refresh_secs: 30,
            credential_poll_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UsageSettings {
    /// Capacity of the channel between requests and the writer.
    pub queue_capacity: usize,
    /// Most records in one INSERT.
    pub batch_size: usize,
    /// Longest a record waits before its batch is written, in milliseconds.
    pub flush_interval_ms: u64,
    /// Records kept for retry while the database is unreachable; past this,
    /// the oldest are dropped and counted.
    pub buffer_max: usize,
    /// Days of raw usage records kept in the ledger: older daily partitions
    /// are dropped whole. 0 keeps everything. The hourly rollups (and so
    /// the admin's totals and the budgets) are kept regardless.
    pub retention_days: u32,
    /// Days of ledger partitions created ahead of today.
    pub partitions_ahead_days: u32,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            queue_capacity: 50_000,
            batch_size: 500,
            flush_interval_ms: 250,
            buffer_max: 200_000,
            retention_days: 0,
            partitions_ahead_days: 7,
        }
    }
}

/// An upstream provider in the embedded configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// `https://api.openai.com/v1`; unused by the `mock` kind.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Where the credential lives: `env:VAR` (the variable must start with
    /// `egress.credential_env_prefix`) or `file:/path` (inside
    /// `egress.credential_dirs`). Never the credential itself.
    #[serde(default)]
    pub credential: Option<String>,
    /// Time allowed until the upstream's response headers, in milliseconds.
    #[serde(default = "default_provider_timeout_ms")]
    pub timeout_ms: u64,
    /// For the `mock` kind: how it answers.
    #[serde(default)]
    pub mock: MockSettings,
    /// Settings beyond the URL and credential (`docs/providers.md`): a
    /// credential pool, connect / first-byte / idle timeouts, TLS trust and
    /// client certificate.
    #[serde(default, deserialize_with = "ProviderOptions::strict")]
    pub options: ProviderOptions,
}

fn default_provider_timeout_ms() -> u64 {
    60_000
}

/// The built-in mock provider's behaviour.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MockSettings {
    pub latency_ms: u64,
    pub token_delay_ms: u64,
    pub tokens: u32,
}

impl Default for MockSettings {
    fn default() -> Self {
        MockSettings {
            latency_ms: 0,
            token_delay_ms: 0,
            tokens: 16,
        }
    }
}

/// A route in the embedded configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub model: String,
    pub targets: Vec<TargetConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: String,
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// The target's share of its priority's requests (default 1; 0 is a
    /// standby).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Lower priorities are tried first; absent is the target's position.
    #[serde(default)]
    pub priority: Option<u32>,
}

fn default_weight() -> u32 {
    1
}

/// An API key in the embedded configuration: its public id and the SHA-256 of
/// its secret, never the secret (`obleth-gateway key` prints both).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    #[serde(default)]
    pub name: String,
    pub public_id: String,
    /// Hex SHA-256 of the secret part of the key.
    pub secret_sha256: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub rpm_limit: Option<i32>,
    #[serde(default)]
    pub tpm_limit: Option<i32>,
    #[serde(default)]
    pub token_budget: Option<i64>,
    /// Spend budget in US dollars (at most 6 decimal places), priced with
    /// `[[prices]]`.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// The period both budgets reset on: `day`, `week`, `month` or `total`.
    #[serde(default)]
    pub budget_period: obleth_config::model::BudgetPeriod,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revoked: bool,
}

/// A model's price in the embedded configuration, in US dollars per million
/// tokens (at most 6 decimal places: a micro-dollar).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// An exact public model name or a glob (`*`, `?`).
    pub model: String,
    pub input_per_mtok_usd: f64,
    pub output_per_mtok_usd: f64,
}

impl GatewaySettings {
    /// Loads and validates the settings; errors name the field.
    pub fn load(file: Option<&Path>) -> Result<GatewaySettings, SettingsError> {
        let settings: GatewaySettings = obleth_config::load(file)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Whether keys, providers and routes come from PostgreSQL.
    pub fn uses_database(&self) -> bool {
        self.database.url.is_some()
    }

    /// Checks what serde cannot: cross-references and ranges. The error names
    /// the first setting at fault; docs/configuration.md lists the messages.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.uses_database()
            && !(self.keys.is_empty()
                && self.providers.is_empty()
                && self.routes.is_empty()
                && self.prices.is_empty())
        {
            return Err(InvalidSetting::new(
                "keys, providers, routes, prices",
                "with database.url set these come from the database; remove them from the file",
            ));
        }
        if self
            .server
            .workers
            .is_some_and(|w| w > obleth_service::server::MAX_WORKERS)
        {
            return Err(InvalidSetting::new(
                "server.workers",
                format!("must be at most {}", obleth_service::server::MAX_WORKERS),
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(InvalidSetting::new(
                "server.max_body_bytes",
                "must be greater than 0",
            ));
        }
        let positive = [
            ("usage.batch_size", self.usage.batch_size as u64),
            ("usage.queue_capacity", self.usage.queue_capacity as u64),
            ("usage.flush_interval_ms", self.usage.flush_interval_ms),
            (
                "usage.partitions_ahead_days",
                u64::from(self.usage.partitions_ahead_days),
            ),
            ("server.heartbeat_secs", self.server.heartbeat_secs),
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            (
                "server.header_timeout_secs",
                self.server.header_timeout_secs,
            ),
            ("server.idle_timeout_secs", self.server.idle_timeout_secs),
            ("server.max_stream_secs", self.server.max_stream_secs),
            ("server.max_connections", self.server.max_connections as u64),
            (
                "server.ops_max_connections",
                self.server.ops_max_connections as u64,
            ),
            ("cache.poll_interval_secs", self.cache.poll_interval_secs),
            ("cache.budget_refresh_secs", self.cache.budget_refresh_secs),
            (
                "cache.credential_poll_secs",
                self.cache.credential_poll_secs,
            ),
            ("limits.sync_interval_ms", self.limits.sync_interval_ms),
            ("cache.max_keys", self.cache.max_keys),
            ("routing.max_attempts", u64::from(self.routing.max_attempts)),
            ("routing.backoff_base_ms", self.routing.backoff_base_ms),
            ("routing.eject_ms", self.routing.eject_ms),
        ];
        if self.uses_database() && self.database.max_connections < 2 {
            return Err(InvalidSetting::new(
                "database.max_connections",
                "must be at least 2 (the change feed holds one connection)",
            ));
        }
        if self.usage.buffer_max < self.usage.batch_size {
            return Err(InvalidSetting::new(
                "usage.buffer_max",
                "must be at least usage.batch_size",
            ));
        }
        // A zero interval would make a background loop spin against the database.
        for (field, value) in positive {
            if value == 0 {
                return Err(InvalidSetting::new(field, "must be greater than 0"));
            }
        }
        if self.routing.max_attempts > 10 {
            return Err(InvalidSetting::new(
                "routing.max_attempts",
                "must be at most 10",
            ));
        }
        if self.routing.backoff_max_ms < self.routing.backoff_base_ms {
            return Err(InvalidSetting::new(
                "routing.backoff_max_ms",
                "must be at least routing.backoff_base_ms",
            ));
        }
        if self.limits.sync_interval_ms > 1000 {
            return Err(InvalidSetting::new(
                "limits.sync_interval_ms",
                "must be at most 1000 (the fleet's counters would fall behind)",
            ));
        }
        self.egress.validate()?;
        self.upstream.validate()?;
        self.telemetry.validate()?;
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            visible(format!("providers[{i}].name"), &p.name)?;
            if !names.insert(p.name.as_str()) {
                return Err(InvalidSetting::new(
                    format!("providers[{i}].name"),
                    format!("`{}` is used twice", p.name),
                ));
            }
            if p.kind.is_http() {
                let field = || format!("providers[{i}].base_url");
                match &p.base_url {
                    Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                        let host = url_host(url).ok_or_else(|| {
                            InvalidSetting::new(field(), format!("`{url}` must name a host"))
                        })?;
                        self.egress
                            .check_host(host)
                            .map_err(|e| InvalidSetting::new(field(), e.to_string()))?;
                    }
                    Some(url) => {
                        return Err(InvalidSetting::new(
                            field(),
                            format!("`{url}` must start with http:// or https://"),
                        ))
                    }
                    None => {
                        return Err(InvalidSetting::new(
                            field(),
                            format!("required for kind {}", p.kind),
                        ))
                    }
                }
            }
            if !(1..=MAX_PROVIDER_TIMEOUT_MS as u64).contains(&p.timeout_ms) {
                return Err(InvalidSetting::new(
                    format!("providers[{i}].timeout_ms"),
                    format!("must be between 1 and {MAX_PROVIDER_TIMEOUT_MS}"),
                ));
            }
            if let Some(c) = &p.credential {
                CredentialRef::admit(c, &self.egress).map_err(|e| {
                    InvalidSetting::new(format!("providers[{i}].credential"), e.to_string())
                })?;
            }
            p.options
                .check(
                    p.kind,
                    p.base_url.as_deref().unwrap_or_default(),
                    p.credential.is_some(),
                    &self.egress,
                )
                .map_err(|e| {
                    InvalidSetting::new(format!("providers[{i}].options.{}", e.field), e.message)
                })?;
        }
        let mut models = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            visible(format!("routes[{i}].model"), &r.model)?;
            if !models.insert(r.model.as_str()) {
                return Err(InvalidSetting::new(
                    format!("routes[{i}].model"),
                    format!("`{}` is routed twice", r.model),
                ));
            }
            if r.targets.is_empty() {
                return Err(InvalidSetting::new(
                    format!("routes[{i}].targets"),
                    "needs at least one provider",
                ));
            }
            for (j, t) in r.targets.iter().enumerate() {
                if !names.contains(t.provider.as_str()) {
                    return Err(InvalidSetting::new(
                        format!("routes[{i}].targets[{j}].provider"),
                        format!("unknown provider `{}`", t.provider),
                    ));
                }
                if let Some(m) = &t.upstream_model {
                    visible(format!("routes[{i}].targets[{j}].upstream_model"), m)?;
                }
                for (name, value) in [("weight", Some(t.weight)), ("priority", t.priority)] {
                    if value.is_some_and(|v| i64::from(v) > i64::from(MAX_TARGET_WEIGHT)) {
                        return Err(InvalidSetting::new(
                            format!("routes[{i}].targets[{j}].{name}"),
                            format!("must be at most {MAX_TARGET_WEIGHT}"),
                        ));
                    }
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            visible(format!("keys[{i}].name"), &k.name)?;
            if let Some(usd) = k.budget_usd {
                crate::pricing::usd_to_micros(&format!("keys[{i}].budget_usd"), usd)?;
            }
            if let Some(owner) = &k.owner {
                visible(format!("keys[{i}].owner"), owner)?;
            }
            for (j, m) in k.allowed_models.iter().enumerate() {
                visible(format!("keys[{i}].allowed_models[{j}]"), m)?;
            }
            if !ids.insert(k.public_id.as_str()) {
                return Err(InvalidSetting::new(
                    format!("keys[{i}].public_id"),
                    format!("`{}` is used twice", k.public_id),
                ));
            }
            let ok = k.secret_sha256.len() == 64
                && k.secret_sha256.chars().all(|c| c.is_ascii_hexdigit());
            if !ok {
                return Err(InvalidSetting::new(
                    format!("keys[{i}].secret_sha256"),
                    "must be 64 hex digits (the SHA-256 of the key's secret; `obleth-gateway key` prints it)",
                ));
            }
        }
        if self.server.max_response_bytes == 0 {
            return Err(InvalidSetting::new(
                "server.max_response_bytes",
                "must be greater than 0",
            ));
        }
        crate::pricing::table_from_settings(&self.prices)?;
        Ok(())
    }
}

/// Refuses control and invisible characters in a name, naming the field; the
/// admin API applies the same check.
fn visible(field: String, value: &str) -> Result<(), InvalidSetting> {
    obleth_config::text::check_visible(value).map_err(|e| InvalidSetting::new(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn load_refuses_a_failed_check_as_a_typed_error_with_the_same_message() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[server]\nmax_body_bytes = 0").unwrap();
        let e = GatewaySettings::load(Some(file.path())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid settings: server.max_body_bytes: must be greater than 0"
        );
        match &e {
            SettingsError::Check(InvalidSetting { field, message }) => {
                assert_eq!(field, "server.max_body_bytes");
                assert_eq!(message, "must be greater than 0");
            }
            other => panic!("{other:?}"),
        }
        // The check's text is in the message, so a report prints it once.
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn telemetry_settings_name_the_field_at_fault_and_never_show_a_header_value() {
        let telemetry =
            |toml_text: &str| -> TelemetrySettings { toml::from_str(toml_text).unwrap() };
        let ok = telemetry(
            "otlp_endpoint = \"https://collector.example:4318/\"\notlp_headers = { x-api-key = \"sekrit\" }",
        );
        ok.validate().unwrap();
        assert_eq!(
            ok.traces_url().as_deref(),
            Some("https://collector.example:4318/v1/traces")
        );
        assert!(!format!("{ok:?}").contains("sekrit"), "{ok:?}");
        let full = telemetry("otlp_endpoint = \"http://c:4318/v1/traces\"");
        assert_eq!(
            full.traces_url().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(TelemetrySettings::default().traces_url(), None);
        for (toml_text, field) in [
            (
                "otlp_endpoint = \"collector:4318\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"ftp://c:4318\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"http://user:pw@c:4318\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_endpoint = \"http://c:4318/?a=b\"",
                "telemetry.otlp_endpoint",
            ),
            (
                "otlp_headers = { \"bad name\" = \"v\" }",
                "telemetry.otlp_headers.bad name",
            ),
            (
                "otlp_headers = { k = \"line\\nbreak-sekrit\" }",
                "telemetry.otlp_headers.k",
            ),
            ("otlp_timeout_ms = 0", "telemetry.otlp_timeout_ms"),
            ("service_name = \" \"", "telemetry.service_name"),
            ("sample_ratio = 1.5", "telemetry.sample_ratio"),
            ("sample_ratio = -0.1", "telemetry.sample_ratio"),
        ] {
            let e = telemetry(toml_text).validate().unwrap_err();
            assert_eq!(e.field, field, "{toml_text}");
            assert!(!e.to_string().contains("sekrit"), "{e}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }

    #[test]
    fn a_refused_credential_reference_is_named_by_field_and_never_echoed() {
        let mut s = GatewaySettings::default();
        let mut p: ProviderConfig = toml::from_str(
            "name = \"up\"\nkind = \"openai\"\nbase_url = \"https://api.example.com\"\n",
        )
        .unwrap();
        p.credential = Some("sk-live-pasted-by-mistake".into());
        s.providers = vec![p];
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "providers[0].credential");
        assert_eq!(
            e.message,
            "must be `env:VARIABLE` or `file:/absolute/path`, never the credential itself"
        );
        assert!(!format!("{e} {e:?}").contains("sk-live"), "{e:?}");
    }

    #[test]
    fn the_upstream_proxy_loads_and_refusals_name_the_field_without_the_password() {
        let load = |text: &str| {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            write!(file, "{text}").unwrap();
            GatewaySettings::load(Some(file.path()))
        };
        let s = load(
            "[upstream]\nproxy = \"http://user:pw-secret@proxy:3128\"\nno_proxy = [\"localhost\", \"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert_eq!(
            s.upstream.proxy.as_ref().map(ProxyUrl::expose),
            Some("http://user:pw-secret@proxy:3128")
        );
        assert!(s.upstream.proxy_from_env);
        assert!(!format!("{s:?}").contains("pw-secret"));
        for (text, field) in [
            (
                "proxy = \"socks5://user:pw-secret@proxy:1080\"",
                "upstream.proxy",
            ),
            ("proxy = \"https://user:pw-secret@proxy\"", "upstream.proxy"),
            (
                "proxy = \"http://user:pw-secret@proxy/path\"",
                "upstream.proxy",
            ),
            ("proxy = \"proxy:3128\"", "upstream.proxy"),
            ("no_proxy = [\"a, b\"]", "upstream.no_proxy[0]"),
            ("no_proxy = [\"ok\", \"\"]", "upstream.no_proxy[1]"),
        ] {
            let e = load(&format!("[upstream]\n{text}\n")).unwrap_err();
            let shown = e.to_string();
            assert!(shown.contains(&format!("{field}: ")), "{text}: {shown}");
            assert!(!shown.contains("pw-secret"), "{shown}");
        }
    }

    #[test]
    fn provider_options_and_target_weights_load_and_refusals_name_the_option() {
        let load = |text: &str| {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            write!(file, "{text}").unwrap();
            GatewaySettings::load(Some(file.path()))
        };
        let provider = "[[providers]]\nname = \"up\"\nkind = \"openai\"\n\
                        base_url = \"https://api.example.com\"\n\
                        credential = \"env:OBLETH_CREDENTIAL_A\"\n";
        let s = load(&format!(
            "{provider}[providers.options]\ncredential_pool = [\"env:OBLETH_CREDENTIAL_B\"]\n\
             connect_timeout_ms = 250\n\
             [[routes]]\nmodel = \"m\"\n\
             targets = [{{ provider = \"up\", weight = 3, priority = 1 }}]\n"
        ))
        .unwrap();
        assert_eq!(
            s.providers[0].options.credential_pool,
            ["env:OBLETH_CREDENTIAL_B"]
        );
        assert_eq!(s.providers[0].options.connect_timeout_ms, Some(250));
        assert_eq!(s.routes[0].targets[0].weight, 3);
        assert_eq!(s.routes[0].targets[0].priority, Some(1));

        let e = load(&format!("{provider}[providers.options]\nshade = 1\n")).unwrap_err();
        assert!(e.to_string().contains("unknown option `shade`"), "{e}");
        let e = load(&format!(
            "{provider}[providers.options]\ncredential_pool = [\"env:PATH\"]\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("providers[0].options.credential_pool[0]"),
            "{e}"
        );
        let e = load(&format!(
            "{provider}[[routes]]\nmodel = \"m\"\n\
             targets = [{{ provider = \"up\", weight = 2000000 }}]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("routes[0].targets[0].weight"), "{e}");
    }

    #[test]
    fn vertex_auth_modes_and_the_metadata_host_load_and_refusals_name_the_field() {
        let load = |text: &str| {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            write!(file, "{text}").unwrap();
            GatewaySettings::load(Some(file.path()))
        };
        let vertex = |credential: &str, auth: &str| {
            format!(
                "[[providers]]\nname = \"vx\"\nkind = \"vertex\"\n\
                 base_url = \"https://aiplatform.googleapis.com/v1\"\n{credential}\
                 [providers.options]\nproject = \"my-project\"\nlocation = \"global\"\n\
                 auth = \"{auth}\"\n"
            )
        };
        // As docs/providers.md shows them.
        let s = load(&format!(
            "{}[upstream]\nmetadata_host = \"127.0.0.1:8089\"\n",
            vertex("", "workload-identity")
        ))
        .unwrap();
        assert_eq!(
            s.providers[0].options.vertex_auth(),
            Some(obleth_config::model::VertexAuth::WorkloadIdentity)
        );
        assert_eq!(s.upstream.metadata_host(), "127.0.0.1:8089");
        load(&vertex(
            "credential = \"env:OBLETH_CREDENTIAL_VERTEX\"\n",
            "service-account",
        ))
        .unwrap();
        let e = load(&vertex("", "service-account")).unwrap_err();
        assert!(
            e.to_string()
                .contains("providers[0].options.auth: `service-account` needs credential_ref"),
            "{e}"
        );
        let e = load(&vertex("", "entra")).unwrap_err();
        assert!(e.to_string().contains("providers[0].options.auth"), "{e}");
        let e = load("[upstream]\nmetadata_host = \"evil/path?x\"\n").unwrap_err();
        assert!(e.to_string().contains("upstream.metadata_host"), "{e}");
    }
}
