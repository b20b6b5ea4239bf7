//! The ops routes' shared answers: `/healthz`, `/readyz`, `/api/version` and
//! `/metrics` have one shape on every service, built here; `/api/v1/health`
//! shares its status rule. The paths are `obleth_config::ops::paths`. The
//! types carry `utoipa` schemas for the admin's OpenAPI document.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Alive: the process answers. Never touches the database.
pub async fn healthz() -> &'static str {
    "ok"
}

/// The readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// `/readyz`: 200 when `reasons` is empty, else 503 with the reasons.
pub fn readiness(reasons: Vec<String>) -> Response {
    let ready = reasons.is_empty();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(Readiness { ready, reasons })).into_response()
}

/// The status word of `/api/v1/health` and its HTTP status: `unavailable`
/// (503) when not ready, `degraded` when ready but the database is away,
/// else `ok`.
pub fn health_status(ready: bool, degraded: bool) -> (&'static str, StatusCode) {
    if !ready {
        ("unavailable", StatusCode::SERVICE_UNAVAILABLE)
    } else if degraded {
        ("degraded", StatusCode::OK)
    } else {
        ("ok", StatusCode::OK)
    }
}

/// The schema facts of `/api/version`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaInfo {
    /// The newest migration applied in the database, as last seen (at start,
    /// then by every heartbeat).
    pub applied: Option<i64>,
    /// The newest migration this build embeds.
    pub expected: Option<i64>,
    /// The newest expand migration this build needs.
    pub oldest_compatible: Option<i64>,
}

/// Build and schema facts.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionInfo {
    pub service: String,
    pub version: String,
    pub commit: String,
    pub major: u64,
    pub schema: SchemaInfo,
}

/// `/api/version` of `service`, with `applied` as last seen.
pub fn version_info(service: &str, applied: Option<i64>) -> VersionInfo {
    let info = obleth_config::version::build_info();
    let obleth_config::ops::EmbeddedSchema {
        expected,
        oldest_compatible,
    } = obleth_config::ops::embedded_schema();
    VersionInfo {
        service: service.to_owned(),
        version: info.version.to_owned(),
        commit: info.commit.to_owned(),
        major: info.major,
        schema: SchemaInfo {
            applied,
            expected,
            oldest_compatible,
        },
    }
}

/// `/metrics`: `text` (the Prometheus text format) with its content type.
pub fn metrics_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_status_orders_unavailable_before_degraded() {
        assert_eq!(health_status(false, true).0, "unavailable");
        assert_eq!(health_status(true, true), ("degraded", StatusCode::OK));
        assert_eq!(health_status(true, false), ("ok", StatusCode::OK));
    }

    #[test]
    fn version_info_names_the_service_and_the_schema() {
        let v = version_info("gateway", Some(7));
        assert_eq!((v.service.as_str(), v.schema.applied), ("gateway", Some(7)));
        assert!(v.schema.expected.is_some());
    }
}
