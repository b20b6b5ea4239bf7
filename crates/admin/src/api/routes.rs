//! `/api/v1/routes`: a public model name and the providers that serve it, in
//! order. Routes go by id, since model names may contain `/`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use obleth_config::db::catalog::{self, CatalogError};
use obleth_config::model::{Route, RouteTarget, MAX_TARGET_WEIGHT, OPTIONS_SINCE};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;
use uuid::Uuid;

use super::validate;
use crate::error::{AdminError, ErrorBody};
use crate::extract::JsonBody;
use crate::state::AppState;

/// Most providers a route may fall back through.
pub const MAX_TARGETS: usize = 16;

/// One provider serving a route.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A provider's name; it must exist.
    pub provider: String,
    /// The model name sent upstream; absent keeps the client's.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// The target's share of the requests of its priority, 0 to 1000000
    /// (default 1); 0 is a standby, used only when every other target of
    /// its priority failed.
    #[serde(default = "one")]
    #[schema(minimum = 0, maximum = 1_000_000, default = 1)]
    pub weight: i32,
    /// 0 to 1000000; lower priorities are tried first, and targets of the
    /// same priority share requests by weight. Absent: the target's position
    /// in the list (tried in order, as without weights).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub priority: Option<i32>,
}

fn one() -> i32 {
    1
}

impl From<&RouteTarget> for Target {
    fn from(t: &RouteTarget) -> Self {
        Target {
            provider: t.provider.clone(),
            upstream_model: t.upstream_model.clone(),
            weight: t.weight,
            priority: t.priority,
        }
    }
}

/// A route as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RouteView {
    pub id: Uuid,
    pub model: String,
    /// Tried by priority, then by weight (in order when neither is set); the
    /// gateway falls back before the first byte reaches the client.
    pub targets: Vec<Target>,
}

impl From<&Route> for RouteView {
    fn from(r: &Route) -> Self {
        RouteView {
            id: r.id,
            model: r.model.clone(),
            targets: r.targets.iter().map(Target::from).collect(),
        }
    }
}

/// Every route, by model.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteList {
    pub items: Vec<RouteView>,
}

/// A route to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoute {
    /// The model name clients ask for; unique.
    #[schema(min_length = 1, max_length = 200)]
    pub model: String,
    /// 1 to 16 providers.
    #[schema(min_items = 1, max_items = 16)]
    pub targets: Vec<Target>,
}

/// New targets for a route, replacing the old ones.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceTargets {
    /// 1 to 16 providers.
    #[schema(min_items = 1, max_items = 16)]
    pub targets: Vec<Target>,
}

fn check_targets(targets: &[Target]) -> Result<Vec<RouteTarget>, AdminError> {
    if targets.is_empty() || targets.len() > MAX_TARGETS {
        return Err(AdminError::validation(
            "targets",
            format!("must list 1 to {MAX_TARGETS} providers"),
        ));
    }
    for (i, t) in targets.iter().enumerate() {
        validate::slug(&format!("targets[{i}].provider"), &t.provider)?;
        if targets[..i]
            .iter()
            .any(|earlier| earlier.provider == t.provider)
        {
            return Err(AdminError::validation(
                format!("targets[{i}].provider"),
                format!("provider `{}` is listed twice", t.provider),
            ));
        }
        if let Some(m) = &t.upstream_model {
            validate::model_name(&format!("targets[{i}].upstream_model"), m)?;
        }
        if !(0..=MAX_TARGET_WEIGHT).contains(&t.weight) {
            return Err(AdminError::validation(
                format!("targets[{i}].weight"),
                format!("must be between 0 and {MAX_TARGET_WEIGHT}"),
            ));
        }
        if let Some(p) = t.priority {
            if !(0..=MAX_TARGET_WEIGHT).contains(&p) {
                return Err(AdminError::validation(
                    format!("targets[{i}].priority"),
                    format!("must be between 0 and {MAX_TARGET_WEIGHT}"),
                ));
            }
        }
    }
    Ok(targets
        .iter()
        .map(|t| RouteTarget {
            provider: t.provider.clone(),
            upstream_model: t.upstream_model.clone(),
            weight: t.weight,
            priority: t.priority,
        })
        .collect())
}

/// Refuses weights and priorities while a live gateway older than
/// [`OPTIONS_SINCE`] could read them: it would ignore them and try the
/// targets in order.
async fn fleet_reads_weights(state: &AppState, targets: &[RouteTarget]) -> Result<(), AdminError> {
    match targets.iter().position(|t| !t.is_plain()) {
        Some(i) => {
            super::providers::fleet_reads(
                state,
                OPTIONS_SINCE,
                &format!("targets[{i}]"),
                "target weights and priorities",
            )
            .await
        }
        None => Ok(()),
    }
}

/// Turns a catalog refusal into an answer naming the field.
fn catalog_error(e: CatalogError, targets: &[RouteTarget]) -> AdminError {
    match e {
        CatalogError::UnknownProvider(name) => {
            let i = targets.iter().position(|t| t.provider == name).unwrap_or(0);
            AdminError::validation(
                format!("targets[{i}].provider"),
                format!("unknown provider `{name}`"),
            )
        }
        CatalogError::NoTargets(_) => {
            AdminError::validation("targets", "must list at least one provider")
        }
        CatalogError::Database(e) if validate::is_unique_violation(&e, "routes_model_key") => {
            AdminError::Conflict {
                code: "already_exists",
                field: Some("model".to_owned()),
                message: "a route for this model already exists".to_owned(),
            }
        }
        CatalogError::Database(e) => e.into(),
        CatalogError::Invalid { field, message } => AdminError::Validation { field, message },
        e @ CatalogError::ProviderInUse { .. } => {
            tracing::error!(error = %e, "Unexpected catalog error for a route write.");
            AdminError::Internal
        }
    }
}

/// Create a route.
#[utoipa::path(
    post, path = "/api/v1/routes", tag = "routes",
    request_body = CreateRoute,
    responses(
        (status = 201, body = RouteView),
        (status = 409, description = "The model already has a route, or a live gateway runs a release older than weights", body = ErrorBody),
        (status = 422, description = "Invalid, or names an unknown provider", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn create_route(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateRoute>,
) -> Result<Response, AdminError> {
    let route = create(&state, body).await?;
    Ok((StatusCode::CREATED, Json(route)).into_response())
}

/// Checks and stores a new route: what `POST /api/v1/routes` and the
/// console do.
pub async fn create(state: &AppState, body: CreateRoute) -> Result<RouteView, AdminError> {
    validate::model_name("model", &body.model)?;
    let targets = check_targets(&body.targets)?;
    fleet_reads_weights(state, &targets).await?;
    let route = catalog::create_route(&state.pool, &body.model, &targets)
        .await
        .map_err(|e| catalog_error(e, &targets))?;
    info!(route_id = %route.id, model = %route.model, "Route created.");
    Ok(RouteView::from(&route))
}

/// List every route.
#[utoipa::path(
    get, path = "/api/v1/routes", tag = "routes",
    responses((status = 200, body = RouteList)),
    security(("admin_token" = []))
)]
pub async fn list_routes(State(state): State<AppState>) -> Result<Json<RouteList>, AdminError> {
    Ok(Json(list(&state).await?))
}

/// Every route with its targets: what `GET /api/v1/routes` answers and the
/// console lists.
pub async fn list(state: &AppState) -> Result<RouteList, AdminError> {
    let catalog = catalog::load_catalog(&state.pool).await?;
    Ok(RouteList {
        items: catalog.routes.iter().map(RouteView::from).collect(),
    })
}

/// Get one route.
#[utoipa::path(
    get, path = "/api/v1/routes/{id}", tag = "routes",
    params(("id" = uuid::Uuid, Path, description = "The route's id")),
    responses((status = 200, body = RouteView), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn get_route(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RouteView>, AdminError> {
    let id = validate::uuid("id", &id)?;
    let route = catalog::get_route(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::not_found("route", id))?;
    Ok(Json(RouteView::from(&route)))
}

/// Replace a route's targets.
#[utoipa::path(
    put, path = "/api/v1/routes/{id}/targets", tag = "routes",
    params(("id" = uuid::Uuid, Path, description = "The route's id")),
    request_body = ReplaceTargets,
    responses(
        (status = 200, body = RouteView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A live gateway runs a release older than weights", body = ErrorBody),
        (status = 422, description = "Invalid, or names an unknown provider", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn replace_targets(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReplaceTargets>,
) -> Result<Json<RouteView>, AdminError> {
    Ok(Json(replace(&state, &id, body).await?))
}

/// Checks and stores new targets for the route `id`: what
/// `PUT /api/v1/routes/{id}/targets` and the console do.
pub async fn replace(
    state: &AppState,
    id: &str,
    body: ReplaceTargets,
) -> Result<RouteView, AdminError> {
    let id = validate::uuid("id", id)?;
    let targets = check_targets(&body.targets)?;
    fleet_reads_weights(state, &targets).await?;
    let route = catalog::replace_route_targets(&state.pool, id, &targets)
        .await
        .map_err(|e| catalog_error(e, &targets))?
        .ok_or_else(|| AdminError::not_found("route", id))?;
    info!(route_id = %route.id, model = %route.model, "Route targets replaced.");
    Ok(RouteView::from(&route))
}

/// Delete a route.
#[utoipa::path(
    delete, path = "/api/v1/routes/{id}", tag = "routes",
    params(("id" = uuid::Uuid, Path, description = "The route's id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn delete_route(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    delete(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes the route `id`: what `DELETE /api/v1/routes/{id}` and the
/// console do.
pub async fn delete(state: &AppState, id: &str) -> Result<(), AdminError> {
    let id = validate::uuid("id", id)?;
    if !catalog::delete_route(&state.pool, id).await? {
        return Err(AdminError::not_found("route", id));
    }
    info!(route_id = %id, "Route deleted.");
    Ok(())
}
