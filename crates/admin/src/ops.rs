//! The ops routes, on the API's port and without a token: liveness,
//! readiness, health detail, version and metrics. None touches the database;
//! they report what start-up and the heartbeat last saw.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::settings::AdminSettings;
use crate::state::AppState;

pub use obleth_config::ops::paths;
pub use obleth_service::ops::{Readiness, SchemaInfo, VersionInfo};

/// The facts deploy manifests must agree with: the port, probe paths and
/// drain timings of `settings` and the metric names (the shape of
/// `obleth-gateway wiring`).
pub fn wiring(settings: &AdminSettings) -> serde_json::Value {
    json!({
        "service": "admin",
        "port": settings.server.listen.port(),
        "paths": obleth_config::ops::paths_json(),
        "drain_delay_secs": settings.server.drain_delay_secs,
        "drain_timeout_secs": settings.server.drain_timeout_secs,
        // Every metric `/metrics` exports (scripts/deploy/dashboard_metrics.py).
        "metrics": crate::metrics::Metrics::new().names(),
    })
}

/// Alive: the process answers. Never touches the database.
#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain"))
)]
pub async fn healthz() -> &'static str {
    obleth_service::ops::healthz().await
}

/// Ready: the schema suits this build (migrated or checked) and not draining.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, body = Readiness),
        (status = 503, description = "Not ready; `reasons` says why", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    obleth_service::ops::readiness(state.health.not_ready_reasons())
}

/// One check of the health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// `ok`, or what is wrong (`down`, `not_ready`).
    pub status: String,
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    pub database: Check,
    pub schema: Check,
    pub draining: bool,
}

/// The health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `ok`, `degraded` (ready but the database did not answer the last
    /// heartbeat) or `unavailable` (not ready).
    pub status: String,
    pub service: String,
    pub node_id: String,
    pub ready: bool,
    pub reasons: Vec<String>,
    pub checks: Checks,
}

/// Detail per check.
#[utoipa::path(
    get, path = "/api/v1/health", tag = "ops",
    responses(
        (status = 200, description = "`ok` or `degraded`", body = HealthReport),
        (status = 503, description = "`unavailable`", body = HealthReport),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let reasons = state.health.not_ready_reasons();
    let (schema_ok, schema_message) = state.health.schema();
    let database_ok = state.health.database_ok();
    let (status, code) = obleth_service::ops::health_status(reasons.is_empty(), !database_ok);
    let report = HealthReport {
        status: status.to_owned(),
        service: "admin".to_owned(),
        node_id: state.node_id.clone(),
        ready: reasons.is_empty(),
        reasons,
        checks: Checks {
            database: Check {
                status: if database_ok { "ok" } else { "down" }.to_owned(),
                detail: (!database_ok)
                    .then(|| "the database did not answer the last heartbeat".to_owned()),
            },
            schema: Check {
                status: if schema_ok { "ok" } else { "not_ready" }.to_owned(),
                detail: Some(schema_message),
            },
            draining: state.health.draining(),
        },
    };
    (code, Json(report)).into_response()
}

/// Version, commit, major, and the schema: applied, expected, oldest compatible.
#[utoipa::path(
    get, path = "/api/version", tag = "ops",
    responses((status = 200, body = VersionInfo))
)]
pub async fn version(State(state): State<AppState>) -> Json<VersionInfo> {
    Json(obleth_service::ops::version_info(
        "admin",
        state.health.schema_applied(),
    ))
}

/// Prometheus metrics in the text format.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.ready.set(i64::from(state.health.ready()));
    obleth_service::ops::metrics_response(state.metrics.render())
}
