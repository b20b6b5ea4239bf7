//! `/api/v1/prices`: the price of a million input and output tokens per
//! model (an exact name or a glob), in US dollars on the wire and integer
//! micro-dollars in the database, and the models seen in usage that no price
//! covers. Every write is recorded as the change-log setting `prices`, so
//! every gateway re-reads the table.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use obleth_config::db::prices::{self, NewPrice, PriceError, PriceUpdate};
use obleth_config::db::usage::{self, UnpricedModel};
use obleth_config::model::Price;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::budget;
use super::validate;
use crate::error::{AdminError, ErrorBody};
use crate::extract::{JsonBody, Params};
use crate::state::AppState;

/// A model's price.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PriceView {
    pub id: Uuid,
    /// An exact model name, or a glob with `*` and `?`. An exact name wins,
    /// then the glob with the most literal characters.
    pub model: String,
    /// US dollars per million input (prompt) tokens.
    pub input_per_mtok_usd: f64,
    /// US dollars per million output (completion) tokens.
    pub output_per_mtok_usd: f64,
    /// The same prices in micro-dollars, as stored.
    pub input_micros_per_mtok: i64,
    pub output_micros_per_mtok: i64,
}

impl From<&Price> for PriceView {
    fn from(p: &Price) -> Self {
        PriceView {
            id: p.id,
            model: p.model.clone(),
            input_per_mtok_usd: budget::usd(p.input_micros_per_mtok),
            output_per_mtok_usd: budget::usd(p.output_micros_per_mtok),
            input_micros_per_mtok: p.input_micros_per_mtok,
            output_micros_per_mtok: p.output_micros_per_mtok,
        }
    }
}

/// Every price, by model.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceList {
    pub items: Vec<PriceView>,
}

/// A price to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrice {
    /// A model name or glob, 1 to 200 characters without spaces; unique.
    pub model: String,
    /// US dollars per million input tokens: not negative, at most 6 decimal places.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub input_per_mtok_usd: f64,
    /// US dollars per million output tokens: not negative, at most 6 decimal places.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub output_per_mtok_usd: f64,
}

/// A partial update. A field left out is unchanged.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePrice {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub input_per_mtok_usd: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub output_per_mtok_usd: Option<f64>,
}

impl From<PriceError> for AdminError {
    fn from(e: PriceError) -> Self {
        match e {
            PriceError::ModelTaken(model) => AdminError::Conflict {
                code: "already_exists",
                field: Some("model".to_owned()),
                message: format!("a price for `{model}` already exists"),
            },
            PriceError::Database(e) => e.into(),
        }
    }
}

/// Set the price of a model or of every model a glob matches.
#[utoipa::path(
    post, path = "/api/v1/prices", tag = "prices",
    request_body = CreatePrice,
    responses(
        (status = 201, body = PriceView),
        (status = 409, description = "The model has a price already (`already_exists`)", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn create_price(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreatePrice>,
) -> Result<Response, AdminError> {
    validate::model_name("model", &body.model)?;
    let new = NewPrice {
        input_micros_per_mtok: budget::usd_micros("input_per_mtok_usd", body.input_per_mtok_usd)?,
        output_micros_per_mtok: budget::usd_micros(
            "output_per_mtok_usd",
            body.output_per_mtok_usd,
        )?,
        model: body.model,
    };
    let price = prices::create_price(&state.pool, &new).await?;
    info!(price_id = %price.id, model = %price.model, "Price created.");
    Ok((StatusCode::CREATED, Json(PriceView::from(&price))).into_response())
}

/// Every price, by model.
#[utoipa::path(
    get, path = "/api/v1/prices", tag = "prices",
    responses((status = 200, body = PriceList)),
    security(("admin_token" = []))
)]
pub async fn list_prices(State(state): State<AppState>) -> Result<Json<PriceList>, AdminError> {
    let rows = prices::list_prices(&state.pool).await?;
    Ok(Json(PriceList {
        items: rows.iter().map(PriceView::from).collect(),
    }))
}

/// Get one price.
#[utoipa::path(
    get, path = "/api/v1/prices/{id}", tag = "prices",
    params(("id" = uuid::Uuid, Path, description = "The price's id")),
    responses((status = 200, body = PriceView), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn get_price(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PriceView>, AdminError> {
    let id = validate::uuid("id", &id)?;
    let price = prices::price_by_id(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::not_found("price", id))?;
    Ok(Json(PriceView::from(&price)))
}

/// Change a price's model pattern or prices.
#[utoipa::path(
    patch, path = "/api/v1/prices/{id}", tag = "prices",
    params(("id" = uuid::Uuid, Path, description = "The price's id")),
    request_body = UpdatePrice,
    responses(
        (status = 200, body = PriceView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The model has a price already (`already_exists`)", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn update_price(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdatePrice>,
) -> Result<Json<PriceView>, AdminError> {
    let id = validate::uuid("id", &id)?;
    if let Some(model) = &body.model {
        validate::model_name("model", model)?;
    }
    let update = PriceUpdate {
        model: body.model,
        input_micros_per_mtok: body
            .input_per_mtok_usd
            .map(|v| budget::usd_micros("input_per_mtok_usd", v))
            .transpose()?,
        output_micros_per_mtok: body
            .output_per_mtok_usd
            .map(|v| budget::usd_micros("output_per_mtok_usd", v))
            .transpose()?,
    };
    let price = prices::update_price(&state.pool, id, &update)
        .await?
        .ok_or_else(|| AdminError::not_found("price", id))?;
    info!(price_id = %price.id, model = %price.model, "Price updated.");
    Ok(Json(PriceView::from(&price)))
}

/// Delete a price; its model is unpriced from then on (unless a glob covers it).
#[utoipa::path(
    delete, path = "/api/v1/prices/{id}", tag = "prices",
    params(("id" = uuid::Uuid, Path, description = "The price's id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn delete_price(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let id = validate::uuid("id", &id)?;
    if !prices::delete_price(&state.pool, id).await? {
        return Err(AdminError::not_found("price", id));
    }
    info!(price_id = %id, "Price deleted.");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The time range of the unpriced-models report.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UnpricedParams {
    /// Start of the range (RFC 3339, inclusive); default 24 hours before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339, exclusive); default now.
    pub to: Option<DateTime<Utc>>,
}

/// A model seen in usage that no price covers: its tokens count towards
/// token limits and budgets but cost nothing.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnpricedView {
    pub model: String,
    pub requests: i64,
    pub total_tokens: i64,
    /// The newest usage record of the model in the range.
    pub last_seen: DateTime<Utc>,
}

impl From<UnpricedModel> for UnpricedView {
    fn from(m: UnpricedModel) -> Self {
        UnpricedView {
            model: m.model,
            requests: m.requests,
            total_tokens: m.total_tokens,
            last_seen: m.last_seen,
        }
    }
}

/// The models without a price over a time range.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnpricedList {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub items: Vec<UnpricedView>,
}

/// Models seen in usage over a time range that the current prices do not cover.
#[utoipa::path(
    get, path = "/api/v1/prices/unpriced", tag = "prices",
    params(UnpricedParams),
    responses((status = 200, body = UnpricedList), (status = 422, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn unpriced(
    State(state): State<AppState>,
    Params(p): Params<UnpricedParams>,
) -> Result<Json<UnpricedList>, AdminError> {
    let to = p.to.unwrap_or_else(Utc::now);
    let from = p.from.unwrap_or(to - Duration::hours(24));
    if from >= to {
        return Err(AdminError::validation("from", "must be before `to`"));
    }
    let rows = usage::unpriced_models(&state.pool, from, to).await?;
    Ok(Json(UnpricedList {
        from,
        to,
        items: rows.into_iter().map(UnpricedView::from).collect(),
    }))
}
