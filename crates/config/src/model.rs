//! The domain types the gateway and the admin share: keys, providers, routes, changes, usage and nodes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::apikey::HashPrefix;

/// An API key as stored: the SHA-256 of its secret, never the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub public_id: String,
    /// SHA-256 of the secret part; hex in JSON and TOML.
    #[serde(with = "hex_bytes")]
    pub secret_hash: Vec<u8>,
    pub name: String,
    pub owner: Option<String>,
    /// Model names or globs (`gpt-4o*`); empty allows every routed model.
    pub allowed_models: Vec<String>,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i32>,
    pub token_budget: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// After a rotation: SHA-256 of the previous secret, valid until
    /// `previous_expires_at`.
    #[serde(
        default,
        with = "hex_bytes_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_secret_hash: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_expires_at: Option<DateTime<Utc>>,
    /// The team whose limits and budgets this key shares, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<Uuid>,
    /// Spend budget in micro-dollars (1 USD = 1 000 000) per `budget_period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd_micros: Option<i64>,
    /// The period both budgets (`token_budget`, `budget_usd_micros`) reset on.
    #[serde(default)]
    #[sqlx(try_from = "String")]
    pub budget_period: BudgetPeriod,
}

impl ApiKey {
    /// Whether `hash` is this key's previous secret and still within its overlap.
    pub fn previous_secret_valid(&self, hash: &[u8], now: DateTime<Utc>) -> bool {
        match (&self.previous_secret_hash, self.previous_expires_at) {
            (Some(previous), Some(until)) => {
                now < until && crate::apikey::hashes_equal(previous, hash)
            }
            _ => false,
        }
    }

    /// Usable at `now`: not revoked, and not expired (a key expires at `expires_at`).
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("public_id", &self.public_id)
            .field("secret_hash", &HashPrefix(&self.secret_hash))
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("allowed_models", &self.allowed_models)
            .field("rpm_limit", &self.rpm_limit)
            .field("tpm_limit", &self.tpm_limit)
            .field("token_budget", &self.token_budget)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field(
                "previous_secret_hash",
                &self.previous_secret_hash.as_deref().map(HashPrefix),
            )
            .field("previous_expires_at", &self.previous_expires_at)
            .field("team_id", &self.team_id)
            .field("budget_usd_micros", &self.budget_usd_micros)
            .field("budget_period", &self.budget_period)
            .finish()
    }
}

/// A database string that names no variant of the enum it was read into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownVariant {
    pub what: &'static str,
    pub value: String,
}

/// Declares a string-backed enum: its database/serde spelling, `FromStr`,
/// `TryFrom<String>` (for `#[sqlx(try_from = "String")]`) and `Display`.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// The spelling in the database and in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant { what: $what, value: s.to_owned() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownVariant;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// The protocol a provider speaks.
    ProviderKind, "provider kind", {
        OpenAi => "openai",
        Mock => "mock",
        Anthropic => "anthropic",
        Azure => "azure",
        Gemini => "gemini",
        Vertex => "vertex",
        Bedrock => "bedrock",
    }
);

impl ProviderKind {
    /// The first release whose gateways serve this kind. A gateway that
    /// reads a provider of a kind it does not know cannot load the catalog,
    /// nor apply any change after it (key revocations included), so the
    /// admin refuses a provider of this kind while a live gateway of an
    /// older release could read it.
    pub fn since(self) -> &'static str {
        match self {
            ProviderKind::OpenAi | ProviderKind::Mock => "0.1.0",
            ProviderKind::Anthropic
            | ProviderKind::Azure
            | ProviderKind::Gemini
            | ProviderKind::Vertex
            | ProviderKind::Bedrock => "0.3.0",
        }
    }

    /// Called over HTTP at its `base_url` (every kind but `mock`).
    pub fn is_http(self) -> bool {
        self != ProviderKind::Mock
    }
}

string_enum!(
    /// What a change-log row is about (the `changes_entity_known` constraint).
    Entity, "entity", {
        ApiKey => "api_key",
        Provider => "provider",
        Route => "route",
        Setting => "setting",
    }
);

string_enum!(
    /// The period a budget resets on, at UTC boundaries: the day, the ISO week
    /// (from Monday), the month, or never (`total`).
    BudgetPeriod, "budget period", {
        Day => "day",
        Week => "week",
        Month => "month",
        Total => "total",
    }
);

impl Default for BudgetPeriod {
    /// `total`: what a token budget meant before periods existed.
    fn default() -> Self {
        BudgetPeriod::Total
    }
}

impl BudgetPeriod {
    /// The start of the period that contains `at` (UTC); the epoch for `total`.
    /// The same rule as the `obleth_period_start` SQL function.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        use chrono::{Datelike, TimeZone};
        let date = at.date_naive();
        let day = match self {
            BudgetPeriod::Total => return DateTime::<Utc>::UNIX_EPOCH,
            BudgetPeriod::Day => date,
            BudgetPeriod::Week => {
                date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday()))
            }
            BudgetPeriod::Month => date.with_day(1).unwrap_or(date),
        };
        Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
    }

    /// The start of the next period after the one containing `at`; `None`
    /// for `total`, which never resets.
    pub fn next_start(self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        use chrono::TimeZone;
        let start = self.start(at).date_naive();
        let next = match self {
            BudgetPeriod::Total => return None,
            BudgetPeriod::Day => start + chrono::Days::new(1),
            BudgetPeriod::Week => start + chrono::Days::new(7),
            BudgetPeriod::Month => start + chrono::Months::new(1),
        };
        Some(Utc.from_utc_datetime(&next.and_time(chrono::NaiveTime::MIN)))
    }
}

string_enum!(
    /// What happened to the entity (the `changes_op_known` constraint).
    Op, "op", {
        Insert => "insert",
        Update => "update",
        Delete => "delete",
    }
);

/// The longest a provider's `timeout_ms` may be: 10 minutes. It bounds the
/// longest request a gateway serves, which its default drain covers.
pub const MAX_PROVIDER_TIMEOUT_MS: i32 = 600_000;

/// An upstream provider. The credential itself is never stored: `credential_ref`
/// says where the gateway reads it (`env:OBLETH_CREDENTIAL_OPENAI`, `file:/run/secrets/openai`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Provider {
    pub id: Uuid,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub kind: ProviderKind,
    pub base_url: String,
    pub credential_ref: Option<String>,
    pub timeout_ms: i32,
    /// What the provider needs beyond its URL and credential (`options`).
    #[sqlx(json)]
    #[serde(default)]
    pub options: ProviderOptions,
}

/// The release that first reads [`ProviderOptions`] and target weights and
/// priorities: the admin refuses a non-default value while an older gateway
/// is live, as it would ignore it.
pub const OPTIONS_SINCE: &str = "0.3.0";

/// A provider's settings beyond its URL and credential, stored as one JSON
/// object (`providers.options`). Every member is optional, and a member this
/// release does not know is ignored when read (a newer release's), never an
/// error; the admin API and the embedded configuration refuse unknown
/// fields on input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderOptions {
    /// Further credentials (`env:` or `file:` references, like
    /// `credential_ref`), used in turn with it: a key pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_pool: Vec<String>,
    /// Time allowed to open a connection (TCP and TLS), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u32>,
    /// Time allowed from sending the request to the answer's first body
    /// byte, in milliseconds (`timeout_ms` still bounds the headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout_ms: Option<u32>,
    /// Longest silence allowed between two chunks of an answer's body, in
    /// milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u32>,
    /// A PEM bundle of CA certificates the provider's TLS certificate is
    /// checked against, instead of the public roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// A PEM client certificate chain presented to the provider (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    /// The client certificate's private key: a `file:` reference, judged
    /// like a credential's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_ref: Option<String>,
    /// Azure OpenAI's `api-version` query parameter (`2024-10-21`, or a
    /// `-preview` one); default [`AZURE_API_VERSION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// How an `azure` provider sends its credential: `api-key` (the
    /// default, the `api-key` header) or `entra` (a Microsoft Entra ID
    /// access token, as `Authorization: Bearer`). How a `vertex` provider
    /// gets its access tokens: `access-token` (the credential is one),
    /// `service-account` (minted from a service-account key) or
    /// `workload-identity` (a workload identity federation file, or the
    /// metadata server without a credential); unset, the credential's
    /// content decides ([`VertexAuth`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The Google Cloud project a `vertex` provider calls (required for
    /// that kind, refused for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The Vertex AI location (`us-central1`, `europe-west4`, `global`) a
    /// `vertex` provider calls (required for that kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The AWS region (`us-east-1`, `eu-central-1`) a `bedrock` provider
    /// calls and signs its requests for (required for that kind, refused
    /// for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`: 1 to 32
/// lowercase letters, digits and `-`, starting with a letter; it goes into
/// a host name and the SigV4 credential scope as it is.
pub fn is_aws_region(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A Google Cloud project id or Vertex AI location: 1 to 63 lowercase
/// letters, digits and `-`, which go into a URL path as they are.
fn is_google_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The Azure OpenAI `api-version` sent when a provider names none: the
/// newest generally available data-plane version.
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// How an `azure` provider authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureAuth {
    /// The resource's key, in the `api-key` header.
    ApiKey,
    /// A Microsoft Entra ID access token, as `Authorization: Bearer`.
    Entra,
}

/// How a `vertex` provider gets the access token it sends as a bearer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VertexAuth {
    /// The credential is an OAuth access token, minted elsewhere and
    /// rotated in its file.
    AccessToken,
    /// The credential is a service-account key (JSON, `"type":
    /// "service_account"`); the gateway mints tokens with it.
    ServiceAccount,
    /// Workload identity: the credential is a federation file (JSON,
    /// `"type": "external_account"`), or, without a credential, the
    /// metadata server of the node (GKE, Compute Engine) gives the tokens.
    WorkloadIdentity,
}

impl VertexAuth {
    /// The option's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VertexAuth::AccessToken => "access-token",
            VertexAuth::ServiceAccount => "service-account",
            VertexAuth::WorkloadIdentity => "workload-identity",
        }
    }
}

impl ProviderOptions {
    /// True when every option has its default.
    pub fn is_default(&self) -> bool {
        *self == ProviderOptions::default()
    }

    /// The `api-version` an `azure` provider sends.
    pub fn azure_api_version(&self) -> &str {
        self.api_version.as_deref().unwrap_or(AZURE_API_VERSION)
    }

    /// How an `azure` provider sends its credential (checked values only;
    /// anything else is the default).
    pub fn azure_auth(&self) -> AzureAuth {
        match self.auth.as_deref() {
            Some("entra") => AzureAuth::Entra,
            _ => AzureAuth::ApiKey,
        }
    }

    /// How a `vertex` provider authenticates, when `options.auth` says so
    /// (checked values only); `None` leaves it to the credential's content.
    pub fn vertex_auth(&self) -> Option<VertexAuth> {
        match self.auth.as_deref() {
            Some("access-token") => Some(VertexAuth::AccessToken),
            Some("service-account") => Some(VertexAuth::ServiceAccount),
            Some("workload-identity") => Some(VertexAuth::WorkloadIdentity),
            _ => None,
        }
    }

    /// Checks the options of a provider of `kind` at `base_url` (with or
    /// without a `credential_ref`) against the syntax rules and `egress`.
    /// The error names the option (`credential_pool[1]`, `ca_file`).
    pub fn check(
        &self,
        kind: ProviderKind,
        base_url: &str,
        has_credential: bool,
        egress: &crate::EgressSettings,
    ) -> Result<(), OptionError> {
        let refuse = |field: String, message: String| Err(OptionError { field, message });
        if self.credential_pool.len() > MAX_CREDENTIAL_POOL {
            return refuse(
                "credential_pool".into(),
                format!("must list at most {MAX_CREDENTIAL_POOL} references"),
            );
        }
        if !self.credential_pool.is_empty() && !has_credential {
            return refuse(
                "credential_pool".into(),
                "needs credential_ref, the pool's first credential".into(),
            );
        }
        for (i, c) in self.credential_pool.iter().enumerate() {
            let field = format!("credential_pool[{i}]");
            if let Err(e) = crate::egress::CredentialRef::admit(c, egress) {
                return refuse(field, e.to_string());
            }
            if self.credential_pool[..i].contains(c) {
                return refuse(field, "is listed twice".into());
            }
        }
        for (field, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_byte_timeout_ms", self.first_byte_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if let Some(ms) = value {
                if ms == 0 || i64::from(ms) > i64::from(MAX_PROVIDER_TIMEOUT_MS) {
                    return refuse(
                        field.into(),
                        format!("must be between 1 and {MAX_PROVIDER_TIMEOUT_MS}"),
                    );
                }
            }
        }
        for (field, value) in [
            ("ca_file", &self.ca_file),
            ("client_cert_file", &self.client_cert_file),
        ] {
            let Some(path) = value else { continue };
            if !kind.is_http() {
                return refuse(field.into(), format!("does not apply to kind {kind}"));
            }
            if !base_url.starts_with("https://") {
                return refuse(field.into(), "needs an https:// base_url".into());
            }
            if !path.starts_with('/') || path.len() > 4096 || path.chars().any(|c| c.is_control()) {
                return refuse(
                    field.into(),
                    "must be an absolute path of at most 4096 bytes".into(),
                );
            }
        }
        match (&self.client_cert_file, &self.client_key_ref) {
            (Some(_), None) => {
                return refuse(
                    "client_key_ref".into(),
                    "is needed with client_cert_file".into(),
                )
            }
            (None, Some(_)) => {
                return refuse(
                    "client_cert_file".into(),
                    "is needed with client_key_ref".into(),
                )
            }
            (Some(_), Some(key)) => {
                if let Err(e) = crate::egress::CredentialRef::admit(key, egress) {
                    return refuse("client_key_ref".into(), e.to_string());
                }
            }
            (None, None) => {}
        }
        if let Some(version) = &self.api_version {
            if kind != ProviderKind::Azure {
                return refuse(
                    "api_version".into(),
                    format!("does not apply to kind {kind}"),
                );
            }
            if !is_api_version(version) {
                return refuse(
                    "api_version".into(),
                    "must be a date such as `2024-10-21`, optionally with a suffix such as `-preview`"
                        .into(),
                );
            }
        }
        if let Some(auth) = &self.auth {
            match kind {
                ProviderKind::Azure => {
                    if !matches!(auth.as_str(), "api-key" | "entra") {
                        return refuse("auth".into(), "must be `api-key` or `entra`".into());
                    }
                }
                ProviderKind::Vertex => {
                    if !matches!(
                        auth.as_str(),
                        "access-token" | "service-account" | "workload-identity"
                    ) {
                        return refuse(
                            "auth".into(),
                            "must be `access-token`, `service-account` or `workload-identity`"
                                .into(),
                        );
                    }
                    if auth == "service-account" && !has_credential {
                        return refuse(
                            "auth".into(),
                            "`service-account` needs credential_ref, the key's file".into(),
                        );
                    }
                }
                _ => return refuse("auth".into(), format!("does not apply to kind {kind}")),
            }
        }
        for (field, value) in [("project", &self.project), ("location", &self.location)] {
            match value {
                Some(_) if kind != ProviderKind::Vertex => {
                    return refuse(field.into(), format!("does not apply to kind {kind}"));
                }
                None if kind == ProviderKind::Vertex => {
                    return refuse(field.into(), "is required for kind vertex".into());
                }
                Some(v) if !is_google_name(v) => {
                    return refuse(
                        field.into(),
                        "must be 1 to 63 lowercase letters, digits and `-`".into(),
                    );
                }
                _ => {}
            }
        }
        match &self.region {
            Some(_) if kind != ProviderKind::Bedrock => {
                return refuse("region".into(), format!("does not apply to kind {kind}"));
            }
            None if kind == ProviderKind::Bedrock => {
                return refuse("region".into(), "is required for kind bedrock".into());
            }
            Some(region) if !is_aws_region(region) => {
                return refuse(
                    "region".into(),
                    "must be an AWS region such as `us-east-1` (lowercase letters, digits and `-`)"
                        .into(),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// These options with `patch` applied, member by member (RFC 7396 at
    /// one level): a member set replaces its value, a `null` clears it, an
    /// absent one is kept. A patch is checked with [`Self::strict`] first;
    /// one that does not make valid options leaves them as they are.
    pub fn merged(&self, patch: &serde_json::Map<String, serde_json::Value>) -> ProviderOptions {
        let Ok(serde_json::Value::Object(mut members)) = serde_json::to_value(self) else {
            return self.clone();
        };
        for (name, value) in patch {
            if value.is_null() {
                members.remove(name);
            } else {
                members.insert(name.clone(), value.clone());
            }
        }
        serde_json::from_value(serde_json::Value::Object(members)).unwrap_or_else(|_| self.clone())
    }

    /// Reads options from input (the admin API, the embedded
    /// configuration), refusing a member this release does not know, where
    /// a stored row's is ignored: `#[serde(deserialize_with =
    /// "ProviderOptions::strict")]`.
    pub fn strict<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ProviderOptions, D::Error> {
        let mut unknown: Option<String> = None;
        let options = serde_ignored::deserialize(d, |path| {
            unknown.get_or_insert_with(|| path.to_string());
        })?;
        match unknown {
            Some(field) => Err(serde::de::Error::custom(format!(
                "unknown option `{field}`"
            ))),
            None => Ok(options),
        }
    }
}

/// `YYYY-MM-DD`, optionally followed by `-` and lowercase letters
/// (`2025-01-01-preview`): what goes into a query string unescaped.
fn is_api_version(v: &str) -> bool {
    let (date, suffix) = v.split_at(v.len().min(10));
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    let suffix_ok = suffix.is_empty()
        || (suffix.len() <= 20
            && suffix.starts_with('-')
            && suffix.len() > 1
            && suffix[1..].bytes().all(|b| b.is_ascii_lowercase()));
    date_ok && suffix_ok
}

/// The most credentials a provider's pool may list besides `credential_ref`.
pub const MAX_CREDENTIAL_POOL: usize = 16;

/// An option [`ProviderOptions::check`] refuses: its name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OptionError {
    pub field: String,
    pub message: String,
}

/// The largest weight a route target may have.
pub const MAX_TARGET_WEIGHT: i32 = 1_000_000;

/// One provider serving a route, by provider name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTarget {
    pub provider: String,
    /// The model name sent upstream; `None` keeps the client's.
    pub upstream_model: Option<String>,
    /// The target's share of its priority's requests, 0 to
    /// [`MAX_TARGET_WEIGHT`]; 0 takes requests only when every other target
    /// of its priority failed. Default 1.
    #[serde(default = "default_weight")]
    pub weight: i32,
    /// Targets of a lower priority are tried first; `None` is the target's
    /// position in the route (the order of the list, as before weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

fn default_weight() -> i32 {
    1
}

impl RouteTarget {
    /// A target with the default weight and priority.
    pub fn new(provider: impl Into<String>, upstream_model: Option<String>) -> Self {
        RouteTarget {
            provider: provider.into(),
            upstream_model,
            weight: 1,
            priority: None,
        }
    }

    /// True when the weight and priority have their defaults.
    pub fn is_plain(&self) -> bool {
        self.weight == 1 && self.priority.is_none()
    }
}

/// A public model name and the providers that serve it, tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub id: Uuid,
    pub model: String,
    pub targets: Vec<RouteTarget>,
}

/// A team: limits and budgets shared by every key that names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i32>,
    pub token_budget: Option<i64>,
    /// Spend budget in micro-dollars per `budget_period`.
    pub budget_usd_micros: Option<i64>,
    #[sqlx(try_from = "String")]
    pub budget_period: BudgetPeriod,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The price of a model (an exact name or a glob with `*` and `?`), in
/// micro-dollars per million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Price {
    pub id: Uuid,
    pub model: String,
    pub input_micros_per_mtok: i64,
    pub output_micros_per_mtok: i64,
}

impl Price {
    /// The cost in micro-dollars of `prompt` input and `completion` output
    /// tokens, rounded up to a whole micro-dollar, saturating.
    pub fn cost_micros(&self, prompt: i64, completion: i64) -> i64 {
        let raw = i128::from(prompt.max(0)) * i128::from(self.input_micros_per_mtok)
            + i128::from(completion.max(0)) * i128::from(self.output_micros_per_mtok);
        let micros = (raw + 999_999) / 1_000_000;
        i64::try_from(micros).unwrap_or(i64::MAX)
    }
}

/// One row of the change log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Change {
    pub seq: i64,
    #[sqlx(try_from = "String")]
    pub entity: Entity,
    pub entity_id: String,
    #[sqlx(try_from = "String")]
    pub op: Op,
    pub changed_at: DateTime<Utc>,
}

/// One proxied request, as the gateway records it. `request_id` makes a
/// retried insert idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageEvent {
    pub request_id: Uuid,
    pub key_id: Option<Uuid>,
    pub model: String,
    pub provider: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub total_tokens: Option<i32>,
    /// The HTTP status returned to the client.
    pub status: i16,
    pub latency_ms: i32,
    pub streamed: bool,
    pub node_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// What the request cost in micro-dollars; `None` when its model has no price.
    #[serde(default)]
    #[sqlx(default)]
    pub cost_micros: Option<i64>,
    /// The tokens were estimated because the upstream reported none.
    #[serde(default)]
    #[sqlx(default)]
    pub estimated: bool,
    /// The key's team when the request was served.
    #[serde(default)]
    #[sqlx(default)]
    pub team_id: Option<Uuid>,
}

/// What a running gateway, admin or migrator says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    /// `gateway`, `admin` or `migrator` (the `nodes_service_known` constraint).
    pub service: String,
    pub version: String,
    pub git_commit: Option<String>,
    pub hostname: Option<String>,
    /// The newest applied migration this node has seen.
    pub schema_version: Option<i64>,
}

/// Hex (de)serialization of byte strings, for hashes.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

mod hex_bytes_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| hex::decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn key(expires_in: Option<i64>, revoked: bool) -> ApiKey {
        let now = Utc::now();
        ApiKey {
            id: Uuid::new_v4(),
            public_id: "abc123def456".to_owned(),
            secret_hash: crate::apikey::hash_secret("s").to_vec(),
            name: "test".to_owned(),
            owner: None,
            allowed_models: vec![],
            rpm_limit: None,
            tpm_limit: None,
            token_budget: None,
            expires_at: expires_in.map(|s| now + Duration::seconds(s)),
            revoked_at: revoked.then_some(now),
            created_at: now,
            updated_at: now,
            previous_secret_hash: None,
            previous_expires_at: None,
            team_id: None,
            budget_usd_micros: None,
            budget_period: BudgetPeriod::Total,
        }
    }

    #[test]
    fn budget_periods_start_at_utc_boundaries() {
        let at = "2026-11-28T17:45:12Z".parse::<DateTime<Utc>>().unwrap();
        let start = |p: BudgetPeriod| p.start(at).to_rfc3339();
        assert_eq!(start(BudgetPeriod::Day), "2026-11-28T00:00:00+00:00");
        // 2026-11-28 is a Saturday; its ISO week began on Monday the 23rd.
        assert_eq!(start(BudgetPeriod::Week), "2026-11-23T00:00:00+00:00");
        assert_eq!(start(BudgetPeriod::Month), "2026-11-01T00:00:00+00:00");
        assert_eq!(start(BudgetPeriod::Total), "1970-01-01T00:00:00+00:00");
        let next = |p: BudgetPeriod| p.next_start(at).map(|t| t.to_rfc3339());
        assert_eq!(
            next(BudgetPeriod::Day).unwrap(),
            "2026-11-29T00:00:00+00:00"
        );
        assert_eq!(
            next(BudgetPeriod::Week).unwrap(),
            "2026-11-30T00:00:00+00:00"
        );
        assert_eq!(
            next(BudgetPeriod::Month).unwrap(),
            "2026-12-01T00:00:00+00:00"
        );
        assert_eq!(next(BudgetPeriod::Total), None);
        let midnight = "2026-11-29T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(BudgetPeriod::Day.start(midnight), midnight);
    }

    #[test]
    fn cost_is_rounded_up_to_a_micro_dollar_and_saturates() {
        let price = Price {
            id: Uuid::nil(),
            model: "m".to_owned(),
            input_micros_per_mtok: 2_500_000,
            output_micros_per_mtok: 10_000_000,
        };
        assert_eq!(price.cost_micros(1_000_000, 0), 2_500_000);
        assert_eq!(price.cost_micros(100, 50), 750);
        assert_eq!(price.cost_micros(1, 0), 3);
        assert_eq!(price.cost_micros(0, 0), 0);
        assert_eq!(price.cost_micros(-5, -5), 0);
        let dear = Price {
            input_micros_per_mtok: i64::MAX,
            ..price
        };
        assert_eq!(dear.cost_micros(i64::MAX, 0), i64::MAX);
    }

    #[test]
    fn previous_secret_is_valid_only_during_its_overlap() {
        let now = Utc::now();
        let previous = crate::apikey::hash_secret("old").to_vec();
        let mut k = key(None, false);
        assert!(!k.previous_secret_valid(&previous, now));
        k.previous_secret_hash = Some(previous.clone());
        k.previous_expires_at = Some(now + Duration::seconds(10));
        assert!(k.previous_secret_valid(&previous, now));
        assert!(!k.previous_secret_valid(&crate::apikey::hash_secret("other"), now));
        assert!(!k.previous_secret_valid(&previous, now + Duration::seconds(11)));
    }

    #[test]
    fn is_active_judges_revocation_and_expiry() {
        let cases = [
            (None, false, true),
            (Some(60), false, true),
            (Some(-60), false, false),
            (None, true, false),
            (Some(60), true, false),
        ];
        for (expires_in, revoked, active) in cases {
            let k = key(expires_in, revoked);
            assert_eq!(k.is_active(Utc::now()), active, "{expires_in:?} {revoked}");
        }
        let k = key(Some(0), false);
        assert!(!k.is_active(k.expires_at.unwrap()), "expired at expires_at");
    }

    #[test]
    fn enums_round_trip_through_their_database_spelling() {
        for (kind, text) in [
            (ProviderKind::OpenAi, "openai"),
            (ProviderKind::Mock, "mock"),
            (ProviderKind::Anthropic, "anthropic"),
            (ProviderKind::Azure, "azure"),
            (ProviderKind::Gemini, "gemini"),
            (ProviderKind::Vertex, "vertex"),
            (ProviderKind::Bedrock, "bedrock"),
        ] {
            assert_eq!(kind.as_str(), text);
            assert_eq!(text.parse::<ProviderKind>(), Ok(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{text}\""));
        }
        let entities = [
            (Entity::ApiKey, "api_key"),
            (Entity::Provider, "provider"),
            (Entity::Route, "route"),
            (Entity::Setting, "setting"),
        ];
        for (entity, text) in entities {
            assert_eq!(entity.as_str(), text);
            assert_eq!(Entity::try_from(text.to_owned()), Ok(entity));
            assert_eq!(
                serde_json::to_string(&entity).unwrap(),
                format!("\"{text}\"")
            );
        }
        for (op, text) in [
            (Op::Insert, "insert"),
            (Op::Update, "update"),
            (Op::Delete, "delete"),
        ] {
            assert_eq!(op.as_str(), text);
            assert_eq!(text.parse::<Op>(), Ok(op));
        }
        let err = "OpenAI".parse::<ProviderKind>().unwrap_err();
        assert_eq!(err.to_string(), "unknown provider kind `OpenAI`");
    }

    #[test]
    fn api_key_debug_shows_only_a_hash_prefix_and_json_round_trips() {
        let k = key(None, false);
        let shown = format!("{k:?}");
        assert!(!shown.contains(&hex::encode(&k.secret_hash)), "{shown}");
        assert!(shown.contains(&hex::encode(&k.secret_hash[..4])), "{shown}");
        let json = serde_json::to_string(&k).unwrap();
        assert!(json.contains(&hex::encode(&k.secret_hash)), "{json}");
        assert_eq!(serde_json::from_str::<ApiKey>(&json).unwrap(), k);
    }

    #[test]
    fn a_bedrock_provider_needs_an_aws_region_that_no_other_kind_takes() {
        let egress = crate::EgressSettings::default();
        let url = "https://bedrock-runtime.us-east-1.amazonaws.com";
        let with = |region: Option<&str>| ProviderOptions {
            region: region.map(str::to_owned),
            ..ProviderOptions::default()
        };
        assert!(with(Some("us-east-1"))
            .check(ProviderKind::Bedrock, url, false, &egress)
            .is_ok());
        assert!(with(Some("us-gov-west-1"))
            .check(ProviderKind::Bedrock, url, true, &egress)
            .is_ok());
        for (kind, region, message) in [
            (ProviderKind::Bedrock, None, "is required for kind bedrock"),
            (ProviderKind::Bedrock, Some("US-EAST-1"), "AWS region"),
            (ProviderKind::Bedrock, Some("us-east-1/x"), "AWS region"),
            (ProviderKind::Bedrock, Some("1us"), "AWS region"),
            (ProviderKind::Bedrock, Some("us-east-"), "AWS region"),
            (ProviderKind::Bedrock, Some(""), "AWS region"),
            (
                ProviderKind::OpenAi,
                Some("us-east-1"),
                "does not apply to kind openai",
            ),
        ] {
            let e = with(region).check(kind, url, false, &egress).unwrap_err();
            assert_eq!(e.field, "region", "{region:?}");
            assert!(e.message.contains(message), "{region:?}: {}", e.message);
        }
    }
}
