//! The ops listener: liveness, readiness, health detail, version and metrics.
//! None of these touch the database; they report what the gateway last saw.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

pub use obleth_config::ops::paths;

/// The facts deploy manifests must agree with: listener ports, probe paths and
/// drain timings of `settings`, and the metric names.
pub fn wiring(settings: &crate::settings::GatewaySettings) -> serde_json::Value {
    json!({
        "service": "gateway",
        "proxy_port": settings.server.listen.port(),
        "ops_port": settings.server.ops_listen.port(),
        "paths": obleth_config::ops::paths_json(),
        "drain_delay_secs": settings.server.drain_delay_secs,
        "drain_timeout_secs": settings.server.drain_timeout().as_secs(),
        // The longest request the gateway allows; the default drain covers it.
        "longest_request_secs": settings.server.longest_request().as_secs(),
        "max_stream_secs": settings.server.max_stream_secs,
        "stream_cut_secs": crate::app::STREAM_CUT_GRACE.as_secs(),
        "usage_flush_secs": crate::app::USAGE_FINAL_FLUSH.as_secs(),
        // What the start-up memory check wants for `cache.max_keys` keys:
        // a memory limit below it makes the gateway warn (and refuse to
        // start once that many keys exist).
        "max_keys": settings.cache.max_keys,
        "max_keys_memory_bytes": crate::memcheck::needed(settings.cache.max_keys),
        // Every metric `/metrics` exports, for the dashboard and alert
        // checks (scripts/deploy/dashboard_metrics.py).
        "metrics": crate::metrics::Metrics::new().names(),
    })
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(paths::HEALTHZ, get(obleth_service::ops::healthz))
        .route(paths::READYZ, get(readyz))
        .route(paths::HEALTH, get(health))
        .route(paths::VERSION, get(version))
        .route(paths::METRICS, get(metrics))
        .with_state(state)
}

/// Ready: schema compatible, key cache warmed, not draining.
async fn readyz(State(state): State<AppState>) -> Response {
    obleth_service::ops::readiness(state.health.not_ready_reasons())
}

/// Detail per check. `ok` when all is well, `degraded` when serving from the
/// cache without the database, `unavailable` when not ready.
async fn health(State(state): State<AppState>) -> Response {
    let reasons = state.health.not_ready_reasons();
    let (schema_ok, schema_message) = state.health.schema();
    let database = match &state.pool {
        None => {
            json!({"status": "disabled", "detail": "embedded mode: keys, providers and routes come from the settings file"})
        }
        Some(_) if state.health.database_ok() => json!({"status": "ok"}),
        Some(_) => {
            json!({"status": "down", "detail": "database unreachable; serving from the key cache"})
        }
    };
    let staleness = state.health.feed_staleness_secs();
    let limits_fallback = state.quota.fallback_reason();
    let limits = if !state.quota.enabled() {
        json!({"status": "disabled", "detail": "limits.enabled is false: no rate limit or budget is enforced"})
    } else if state.pool.is_none() {
        json!({"status": "local", "detail": "embedded mode: limits count this gateway's requests only"})
    } else if let Some(reason) = &limits_fallback {
        json!({"status": "fallback", "detail": reason, "live_gateways": state.quota.live_gateways()})
    } else {
        json!({"status": "shared", "live_gateways": state.quota.live_gateways()})
    };
    let degraded =
        state.pool.is_some() && (!state.health.database_ok() || limits_fallback.is_some());
    let (status, code) = obleth_service::ops::health_status(reasons.is_empty(), degraded);
    let body = json!({
        "status": status,
        "service": "gateway",
        "node_id": state.node_id,
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "checks": {
            "database": database,
            "schema": {"status": if schema_ok { "ok" } else { "not_ready" }, "detail": schema_message},
            "key_cache": {"status": if state.health.warmed() { "ok" } else { "warming" }, "entries": state.keys.len()},
            "feed": {"status": if state.pool.is_some() && !state.health.database_ok() { "stale" } else { "ok" }, "staleness_seconds": staleness},
            "limits": limits,
            "in_flight": state.in_flight.count(),
            "draining": state.health.draining(),
            "maintenance": state.maintenance().map(|m| m.message),
        },
    });
    (code, Json(body)).into_response()
}

/// Version, commit, major, and the schema: applied (newest migration in the
/// database, refreshed by every heartbeat), expected (newest this build
/// embeds) and oldest compatible (the newest expand migration this build needs).
async fn version(State(state): State<AppState>) -> Json<obleth_service::ops::VersionInfo> {
    Json(obleth_service::ops::version_info(
        "gateway",
        state.health.schema_applied(),
    ))
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .cache_entries
        .set(i64::try_from(state.keys.len()).unwrap_or(i64::MAX));
    state
        .metrics
        .quota_fallback
        .set(i64::from(state.quota.in_fallback()));
    if let Some(s) = state.health.feed_staleness_secs() {
        state.metrics.feed_staleness_seconds.set(s);
    }
    obleth_service::ops::metrics_response(state.metrics.render())
}
