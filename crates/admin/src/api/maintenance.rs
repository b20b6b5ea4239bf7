//! `/api/v1/maintenance`: while enabled, every gateway answers new proxy
//! requests with 503 and `Retry-After` and lets in-flight ones finish. The
//! setting travels to the gateways through the change feed.

use axum::extract::State;
use axum::Json;
use obleth_config::db::settings::{self, Maintenance};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::validate;
use crate::error::{AdminError, ErrorBody};
use crate::extract::JsonBody;
use crate::state::AppState;

/// The message gateways send when none is given.
pub const DEFAULT_MESSAGE: &str = "the service is under maintenance; retry later";
/// The `Retry-After` when none is given, in seconds.
pub const DEFAULT_RETRY_AFTER: u64 = 60;
/// The longest `Retry-After`: a day.
pub const MAX_RETRY_AFTER: u64 = 86_400;

/// Maintenance mode as gateways apply it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MaintenanceView {
    pub enabled: bool,
    /// The message in the gateways' 503 answers.
    pub message: String,
    /// The gateways' `Retry-After`, in seconds.
    pub retry_after: u64,
}

impl From<Maintenance> for MaintenanceView {
    fn from(m: Maintenance) -> Self {
        MaintenanceView {
            enabled: m.enabled,
            message: m.message,
            retry_after: m.retry_after_secs,
        }
    }
}

/// Turns maintenance mode on or off.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMaintenance {
    pub enabled: bool,
    /// Default: "the service is under maintenance; retry later". At most 500 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 500)]
    pub message: Option<String>,
    /// Seconds, 1 to 86400; default 60.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400)]
    pub retry_after: Option<u64>,
}

/// The current maintenance setting.
#[utoipa::path(
    get, path = "/api/v1/maintenance", tag = "maintenance",
    responses((status = 200, body = MaintenanceView)),
    security(("admin_token" = []))
)]
pub async fn get_maintenance(
    State(state): State<AppState>,
) -> Result<Json<MaintenanceView>, AdminError> {
    let m = settings::get_maintenance(&state.pool).await?;
    Ok(Json(m.into()))
}

/// Turn maintenance mode on or off on every gateway.
#[utoipa::path(
    put, path = "/api/v1/maintenance", tag = "maintenance",
    request_body = SetMaintenance,
    responses((status = 200, body = MaintenanceView), (status = 422, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn set_maintenance(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SetMaintenance>,
) -> Result<Json<MaintenanceView>, AdminError> {
    Ok(Json(set(&state, body).await?))
}

/// Checks and stores maintenance mode: what `PUT /api/v1/maintenance` and
/// the console do.
pub async fn set(state: &AppState, body: SetMaintenance) -> Result<MaintenanceView, AdminError> {
    let message = body.message.unwrap_or_else(|| DEFAULT_MESSAGE.to_owned());
    validate::text("message", &message, 500)?;
    let retry_after = body.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
    if !(1..=MAX_RETRY_AFTER).contains(&retry_after) {
        return Err(AdminError::validation(
            "retry_after",
            format!("must be between 1 and {MAX_RETRY_AFTER} seconds"),
        ));
    }
    let m = Maintenance {
        enabled: body.enabled,
        message,
        retry_after_secs: retry_after,
    };
    let stored = settings::set_maintenance(&state.pool, &m).await?;
    info!(
        enabled = stored.enabled,
        retry_after, "Maintenance mode set."
    );
    Ok(stored.into())
}
