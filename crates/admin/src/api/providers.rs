//! `/api/v1/providers`: upstream providers by name, validated (URL scheme,
//! credential reference, timeout, unique name) before they reach the catalog.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use obleth_config::db::catalog::{self, CatalogError, NewProvider, ProviderUpdate};
use obleth_config::egress::{url_host, CredentialRef};
use obleth_config::model::{is_aws_region, Provider, ProviderKind, ProviderOptions, OPTIONS_SINCE};
use obleth_config::EgressSettings;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;
use uuid::Uuid;

use super::validate;
use crate::error::{AdminError, ErrorBody};
use crate::extract::JsonBody;
use crate::state::AppState;

/// The default upstream timeout, the schema's.
pub const DEFAULT_TIMEOUT_MS: i32 = 60_000;
/// The longest upstream timeout: 10 minutes.
pub const MAX_TIMEOUT_MS: i32 = obleth_config::model::MAX_PROVIDER_TIMEOUT_MS;

/// The protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Kind {
    /// An OpenAI-compatible HTTP API.
    #[serde(rename = "openai")]
    OpenAi,
    /// The gateway's built-in mock; no network.
    #[serde(rename = "mock")]
    Mock,
    /// Anthropic's Messages API (`base_url` such as
    /// `https://api.anthropic.com/v1`, the credential sent as `x-api-key`);
    /// the gateway translates chat completions to and from it.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Azure OpenAI (`base_url` such as
    /// `https://my-resource.openai.azure.com`): a route target's model is
    /// the deployment name; `options.api_version` and `options.auth`
    /// (`api-key` or `entra`) say how it is called.
    #[serde(rename = "azure")]
    Azure,
    /// Google AI Studio's Gemini API (`base_url` such as
    /// `https://generativelanguage.googleapis.com/v1beta`, the credential
    /// sent as `x-goog-api-key`); the gateway translates chat completions
    /// to and from `generateContent`.
    #[serde(rename = "gemini")]
    Gemini,
    /// Vertex AI's Gemini models (`base_url` such as
    /// `https://us-central1-aiplatform.googleapis.com/v1`, an OAuth access
    /// token sent as `Authorization: Bearer`: the credential itself, or
    /// minted from a service-account key or by workload identity, as
    /// `options.auth` says); `options.project` and `options.location` are
    /// required.
    #[serde(rename = "vertex")]
    Vertex,
    /// Amazon Bedrock's runtime (`base_url` by default
    /// `https://bedrock-runtime.{region}.amazonaws.com`), requests signed
    /// with SigV4 for `options.region` (required); the gateway translates
    /// chat completions to and from Converse, and sends Anthropic models'
    /// `/v1/messages` natively (InvokeModel).
    #[serde(rename = "bedrock")]
    Bedrock,
}

impl From<Kind> for ProviderKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::OpenAi => ProviderKind::OpenAi,
            Kind::Mock => ProviderKind::Mock,
            Kind::Anthropic => ProviderKind::Anthropic,
            Kind::Azure => ProviderKind::Azure,
            Kind::Gemini => ProviderKind::Gemini,
            Kind::Vertex => ProviderKind::Vertex,
            Kind::Bedrock => ProviderKind::Bedrock,
        }
    }
}

impl From<ProviderKind> for Kind {
    fn from(k: ProviderKind) -> Self {
        match k {
            ProviderKind::OpenAi => Kind::OpenAi,
            ProviderKind::Mock => Kind::Mock,
            ProviderKind::Anthropic => Kind::Anthropic,
            ProviderKind::Azure => Kind::Azure,
            ProviderKind::Gemini => Kind::Gemini,
            ProviderKind::Vertex => Kind::Vertex,
            ProviderKind::Bedrock => Kind::Bedrock,
        }
    }
}

/// A provider as stored. The credential itself is never stored, only where
/// the gateway reads it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderView {
    pub id: Uuid,
    pub name: String,
    pub kind: Kind,
    pub base_url: String,
    /// `env:VARIABLE` or `file:/path`, read by the gateway.
    pub credential_ref: Option<String>,
    pub timeout_ms: i32,
    /// The options set; see `CreateProvider.options`.
    #[schema(value_type = Object)]
    pub options: ProviderOptions,
}

impl From<&Provider> for ProviderView {
    fn from(p: &Provider) -> Self {
        ProviderView {
            id: p.id,
            name: p.name.clone(),
            kind: p.kind.into(),
            base_url: p.base_url.clone(),
            credential_ref: p.credential_ref.clone(),
            timeout_ms: p.timeout_ms,
            options: p.options.clone(),
        }
    }
}

/// Every provider, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    pub items: Vec<ProviderView>,
}

/// A provider to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    /// 1 to 64 of `[A-Za-z0-9._-]`; unique.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    pub kind: Kind,
    /// `http://` or `https://`; optional for `mock` (default `mock://`).
    /// Link-local and cloud metadata hosts are refused unless
    /// `egress.allow_link_local`; private ones when `egress.allow_private_networks`
    /// is false.
    #[serde(default)]
    pub base_url: Option<String>,
    /// `env:VARIABLE` (the variable must start with `egress.credential_env_prefix`,
    /// `OBLETH_CREDENTIAL_` by default) or `file:/path` (inside
    /// `egress.credential_dirs`); never the credential itself.
    #[serde(default)]
    pub credential_ref: Option<String>,
    /// 1 to 600000; default 60000.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 600_000)]
    pub timeout_ms: Option<i32>,
    /// Settings beyond the URL and credential, each optional:
    /// `credential_pool` (up to 16 more references, used in turn with
    /// `credential_ref`), `connect_timeout_ms`, `first_byte_timeout_ms`,
    /// `idle_timeout_ms` (1 to 600000), `ca_file` (a PEM CA bundle on the
    /// gateway's disk, for an https:// `base_url` with a private CA),
    /// `client_cert_file` and `client_key_ref` (a client certificate for
    /// mTLS; the key is a credential reference). An unknown option is refused.
    #[serde(default, deserialize_with = "ProviderOptions::strict")]
    #[schema(value_type = Object)]
    pub options: ProviderOptions,
}

/// A partial update. A field left out is unchanged; `credential_ref: null` clears it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<String>)]
    pub credential_ref: Option<Option<String>>,
    #[serde(default)]
    pub timeout_ms: Option<i32>,
    /// Options to change, by name: a value replaces the option, `null`
    /// clears it, an option left out is unchanged.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Checks a whole provider, as it would be stored, against the syntax rules
/// and the operator's `[egress]` policy.
fn check(
    egress: &EgressSettings,
    name: &str,
    kind: Kind,
    base_url: &str,
    credential_ref: Option<&str>,
    timeout_ms: i32,
    options: &ProviderOptions,
) -> Result<(), AdminError> {
    validate::slug("name", name)?;
    check_base_url(egress, kind, base_url)?;
    if let Some(c) = credential_ref {
        // The admin rarely sees the gateway's files: a file that exists here
        // is judged by where its links lead, others by their path, and the
        // gateway judges every reference again before it reads one.
        CredentialRef::admit(c, egress)
            .map_err(|e| AdminError::validation("credential_ref", e.to_string()))?;
    }
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(AdminError::validation(
            "timeout_ms",
            format!("must be between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
    options
        .check(kind.into(), base_url, credential_ref.is_some(), egress)
        .map_err(|e| AdminError::validation(format!("options.{}", e.field), e.message))
}

/// Checks an options patch on its own: every member known and of its type
/// (`null` clears one).
fn check_patch(patch: &serde_json::Map<String, serde_json::Value>) -> Result<(), AdminError> {
    let set: serde_json::Map<String, serde_json::Value> = patch
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ProviderOptions::strict(serde_json::Value::Object(set))
        .map(|_| ())
        .map_err(|e| AdminError::validation("options", e.to_string()))
}

fn check_base_url(egress: &EgressSettings, kind: Kind, url: &str) -> Result<(), AdminError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", ""));
    let scheme_ok = match kind {
        Kind::OpenAi
        | Kind::Anthropic
        | Kind::Azure
        | Kind::Gemini
        | Kind::Vertex
        | Kind::Bedrock => {
            matches!(scheme, "http" | "https")
        }
        Kind::Mock => matches!(scheme, "http" | "https" | "mock"),
    };
    if !scheme_ok {
        let allowed = match kind {
            Kind::OpenAi
            | Kind::Anthropic
            | Kind::Azure
            | Kind::Gemini
            | Kind::Vertex
            | Kind::Bedrock => "http:// or https://",
            Kind::Mock => "http://, https:// or mock://",
        };
        return Err(AdminError::validation(
            "base_url",
            format!("must start with {allowed}"),
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if scheme != "mock" && host.is_empty() {
        return Err(AdminError::validation("base_url", "must name a host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.len() > 2048 {
        return Err(AdminError::validation(
            "base_url",
            "must be a URL of at most 2048 characters without spaces",
        ));
    }
    // IP literals and metadata names are judged here; other names by the
    // addresses they resolve to, at the gateway, when it connects.
    if scheme != "mock" {
        if let Some(host) = url_host(url) {
            egress
                .check_host(host)
                .map_err(|e| AdminError::validation("base_url", e.to_string()))?;
        }
    }
    Ok(())
}

/// Refuses a provider of `kind` while a live gateway (one that has not
/// recorded its stop, within `migrations.node_horizon_secs`) runs a release
/// older than the kind ([`ProviderKind::since`]): such a gateway could not
/// load the catalog with it, nor apply any change after it.
async fn fleet_reads_kind(state: &AppState, kind: ProviderKind) -> Result<(), AdminError> {
    fleet_reads(state, kind.since(), "kind", &format!("kind `{kind}`")).await
}

/// Refuses `what` (named by `field`) while a live gateway runs a release
/// older than `since`.
pub(super) async fn fleet_reads(
    state: &AppState,
    since: &str,
    field: &str,
    what: &str,
) -> Result<(), AdminError> {
    let Ok(since) = semver::Version::parse(since) else {
        return Err(AdminError::Internal);
    };
    if since <= semver::Version::new(0, 1, 0) {
        return Ok(());
    }
    let horizon = std::time::Duration::from_secs(state.settings.migrations.node_horizon_secs);
    let older: Vec<String> = obleth_config::db::nodes::list_nodes(&state.pool, horizon)
        .await?
        .into_iter()
        .filter(|n| n.service == "gateway")
        .filter(|n| semver::Version::parse(&n.version).map_or(true, |v| v < since))
        .map(|n| format!("gateway {} runs {}", n.node_id, n.version))
        .collect();
    if older.is_empty() {
        return Ok(());
    }
    Err(AdminError::Conflict {
        code: "fleet_not_ready",
        field: Some(field.to_owned()),
        message: format!(
            "{what} needs every live gateway at {since} or later ({}); finish the rollout first",
            older.join(", ")
        ),
    })
}

/// A name from the path that no provider could have is simply not found,
/// without asking the database (which refuses some such strings outright).
fn storable(name: &str) -> Result<(), AdminError> {
    validate::slug("name", name).map_err(|_| AdminError::not_found("provider", name))
}

/// A name taken by another provider.
fn name_taken(name: &str) -> AdminError {
    AdminError::Conflict {
        code: "already_exists",
        field: Some("name".to_owned()),
        message: format!("a provider named `{name}` already exists"),
    }
}

/// Create a provider.
#[utoipa::path(
    post, path = "/api/v1/providers", tag = "providers",
    request_body = CreateProvider,
    responses(
        (status = 201, body = ProviderView),
        (status = 409, description = "The name is taken, or a live gateway runs a release older than the kind", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn create_provider(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateProvider>,
) -> Result<Response, AdminError> {
    let provider = create(&state, body).await?;
    Ok((StatusCode::CREATED, Json(provider)).into_response())
}

/// Checks and stores a new provider: what `POST /api/v1/providers` and the
/// console do.
pub async fn create(state: &AppState, body: CreateProvider) -> Result<ProviderView, AdminError> {
    let base_url = match (body.kind, body.base_url) {
        (_, Some(url)) => url,
        (Kind::Mock, None) => "mock://".to_owned(),
        // Bedrock's runtime endpoint is the region's; without a valid
        // region the options' check below names `options.region`.
        (Kind::Bedrock, None) => match body.options.region.as_deref() {
            Some(region) if is_aws_region(region) => {
                format!("https://bedrock-runtime.{region}.amazonaws.com")
            }
            _ => "https://bedrock-runtime.amazonaws.com".to_owned(),
        },
        (
            kind @ (Kind::OpenAi | Kind::Anthropic | Kind::Azure | Kind::Gemini | Kind::Vertex),
            None,
        ) => {
            return Err(AdminError::validation(
                "base_url",
                format!("required for kind {}", ProviderKind::from(kind)),
            ))
        }
    };
    let timeout_ms = body.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    check(
        &state.settings.egress,
        &body.name,
        body.kind,
        &base_url,
        body.credential_ref.as_deref(),
        timeout_ms,
        &body.options,
    )?;
    fleet_reads_kind(state, body.kind.into()).await?;
    if !body.options.is_default() {
        fleet_reads(state, OPTIONS_SINCE, "options", "provider options").await?;
    }
    let new = NewProvider {
        name: body.name,
        kind: body.kind.into(),
        base_url,
        credential_ref: body.credential_ref,
        timeout_ms,
        options: body.options,
    };
    let provider = catalog::create_provider(&state.pool, &new)
        .await
        .map_err(|e| {
            if validate::is_unique_violation(&e, "providers_name_key") {
                name_taken(&new.name)
            } else {
                AdminError::from(e)
            }
        })?;
    info!(provider = %provider.name, "Provider created.");
    Ok(ProviderView::from(&provider))
}

/// List every provider.
#[utoipa::path(
    get, path = "/api/v1/providers", tag = "providers",
    responses((status = 200, body = ProviderList)),
    security(("admin_token" = []))
)]
pub async fn list_providers(
    State(state): State<AppState>,
) -> Result<Json<ProviderList>, AdminError> {
    Ok(Json(list(&state).await?))
}

/// Every provider: what `GET /api/v1/providers` answers and the console lists.
pub async fn list(state: &AppState) -> Result<ProviderList, AdminError> {
    let catalog = catalog::load_catalog(&state.pool).await?;
    Ok(ProviderList {
        items: catalog.providers.iter().map(ProviderView::from).collect(),
    })
}

/// Get one provider.
#[utoipa::path(
    get, path = "/api/v1/providers/{name}", tag = "providers",
    params(("name" = String, Path, description = "The provider's name")),
    responses((status = 200, body = ProviderView), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn get_provider(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ProviderView>, AdminError> {
    storable(&name)?;
    let provider = catalog::get_provider(&state.pool, &name)
        .await?
        .ok_or_else(|| AdminError::not_found("provider", &name))?;
    Ok(Json(ProviderView::from(&provider)))
}

/// Change a provider. Routes follow a renamed provider.
#[utoipa::path(
    patch, path = "/api/v1/providers/{name}", tag = "providers",
    params(("name" = String, Path, description = "The provider's name")),
    request_body = UpdateProvider,
    responses(
        (status = 200, body = ProviderView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The new name is taken, or a live gateway runs a release older than the kind", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn update_provider(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UpdateProvider>,
) -> Result<Json<ProviderView>, AdminError> {
    Ok(Json(update(&state, &name, body).await?))
}

/// Checks and applies a partial update of the provider `name`: what
/// `PATCH /api/v1/providers/{name}` and the console do.
pub async fn update(
    state: &AppState,
    name: &str,
    body: UpdateProvider,
) -> Result<ProviderView, AdminError> {
    let name = name.to_owned();
    storable(&name)?;
    if let Some(kind) = body.kind {
        fleet_reads_kind(state, kind.into()).await?;
    }
    if let Some(patch) = &body.options {
        check_patch(patch)?;
        if patch.values().any(|v| !v.is_null()) {
            fleet_reads(state, OPTIONS_SINCE, "options", "provider options").await?;
        }
    }
    let update = ProviderUpdate {
        name: body.name,
        kind: body.kind.map(Into::into),
        base_url: body.base_url,
        credential_ref: body.credential_ref,
        timeout_ms: body.timeout_ms,
        options: body.options,
    };
    // Judge the provider as it would be after the update, inside the
    // transaction that writes it, so a change of kind is checked against the
    // URL it keeps even when another update changed that URL meanwhile.
    let egress = &state.settings.egress;
    let judge = |merged: &Provider| {
        check(
            egress,
            &merged.name,
            merged.kind.into(),
            &merged.base_url,
            merged.credential_ref.as_deref(),
            merged.timeout_ms,
            &merged.options,
        )
        .map_err(|e| match e {
            AdminError::Validation { field, message } => CatalogError::Invalid { field, message },
            other => CatalogError::Invalid {
                field: String::new(),
                message: other.to_string(),
            },
        })
    };
    let provider = catalog::update_provider(&state.pool, &name, &update, judge)
        .await
        .map_err(|e| match e {
            CatalogError::Invalid { field, message } => AdminError::Validation { field, message },
            CatalogError::Database(e)
                if validate::is_unique_violation(&e, "providers_name_key") =>
            {
                name_taken(update.name.as_deref().unwrap_or(&name))
            }
            CatalogError::Database(e) => AdminError::from(e),
            other => AdminError::validation("name", other.to_string()),
        })?
        .ok_or_else(|| AdminError::not_found("provider", &name))?;
    info!(provider = %provider.name, "Provider updated.");
    Ok(ProviderView::from(&provider))
}

/// Delete a provider. Refused while a route still uses it.
#[utoipa::path(
    delete, path = "/api/v1/providers/{name}", tag = "providers",
    params(("name" = String, Path, description = "The provider's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Routes still use the provider", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn delete_provider(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    delete(&state, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes the provider `name` unless a route still uses it: what
/// `DELETE /api/v1/providers/{name}` and the console do.
pub async fn delete(state: &AppState, name: &str) -> Result<(), AdminError> {
    storable(name)?;
    match catalog::delete_provider(&state.pool, name).await {
        Ok(true) => {
            info!(provider = %name, "Provider deleted.");
            Ok(())
        }
        Ok(false) => Err(AdminError::not_found("provider", name)),
        Err(e @ CatalogError::ProviderInUse { .. }) => Err(AdminError::Conflict {
            code: "provider_in_use",
            field: Some("name".to_owned()),
            message: e.to_string(),
        }),
        Err(CatalogError::Database(e)) => Err(e.into()),
        Err(e) => Err(AdminError::validation("name", e.to_string())),
    }
}
