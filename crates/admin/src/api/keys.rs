//! `/api/v1/keys`: create (the secret shown once), list, get, update, revoke,
//! rotate with an overlap, delete. Every write goes through
//! `obleth_config::db::keys`, which records the change and NOTIFYs the gateways
//! in the same transaction. Answers carry the key's spend in its current
//! budget period, read from the running totals (one query per page).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use obleth_config::db::keys::{self, KeyError, KeyFilter, RotateOutcome};
use obleth_config::db::usage;
use obleth_config::model::ApiKey;
use secrecy::ExposeSecret;
use tracing::info;

use super::budget::Spend;
use super::key_types::{
    CreateKey, CreatedKey, KeyListParams, KeyPage, KeyView, RotateKey, RotatedKey, UpdateKey,
};
use super::{no_store, validate};
use crate::error::{AdminError, ErrorBody};
use crate::extract::{JsonBody, Params};
use crate::state::AppState;

/// Create a key. The answer carries the whole key once; only its hash is stored.
#[utoipa::path(
    post, path = "/api/v1/keys", tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; `secret` is shown only here", body = CreatedKey),
        (status = 422, description = "A field is invalid, or `team_id` names no team", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn create_key(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<Response, AdminError> {
    let answer = create(&state, body).await?;
    Ok(no_store((StatusCode::CREATED, Json(answer))))
}

/// Checks and creates a key: what `POST /api/v1/keys` and the console do.
pub async fn create(state: &AppState, body: CreateKey) -> Result<CreatedKey, AdminError> {
    let new = body.into_new_key()?;
    let (key, generated) = keys::create_key(&state.pool, &new).await?;
    info!(key_id = %key.id, public_id = %key.public_id, "Key created.");
    Ok(CreatedKey {
        key: KeyView::fresh(&key),
        secret: generated.secret.expose_secret().to_owned(),
    })
}

/// List keys, ordered by id, one page at a time. Never shows a secret.
#[utoipa::path(
    get, path = "/api/v1/keys", tag = "keys",
    params(KeyListParams),
    responses(
        (status = 200, body = KeyPage),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    Params(params): Params<KeyListParams>,
) -> Result<Json<KeyPage>, AdminError> {
    Ok(Json(list(&state, params).await?))
}

/// One page of keys with their spend: what `GET /api/v1/keys` and the
/// console list.
pub async fn list(state: &AppState, params: KeyListParams) -> Result<KeyPage, AdminError> {
    let limit = validate::page_limit(params.limit)?;
    let filter = KeyFilter {
        owner: params.owner,
        name_contains: params.name_contains,
        revoked: params.revoked,
        team_id: params.team_id,
        after: params.after,
        limit,
    };
    let rows = keys::list_keys(&state.pool, &filter).await?;
    let next_after = if rows.len() as i64 == limit {
        rows.last().map(|k| k.id)
    } else {
        None
    };
    let now = Utc::now();
    let subjects: Vec<_> = rows.iter().map(|k| (k.id, k.budget_period)).collect();
    let totals = usage::periods_totals(&state.pool, &subjects, now).await?;
    let items = rows
        .iter()
        .zip(&totals)
        .map(|(k, t)| KeyView::new(k, Spend::new(k.budget_period, t, now)))
        .collect();
    Ok(KeyPage { items, next_after })
}

/// Get one key. Never shows its secret.
#[utoipa::path(
    get, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, body = KeyView),
        (status = 404, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, AdminError> {
    let id = validate::uuid("id", &id)?;
    let key = keys::key_by_id(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::not_found("key", id))?;
    Ok(Json(view(&state, &key).await?))
}

/// Change a key's name, owner, models, limits, budgets, period, team or expiry.
#[utoipa::path(
    patch, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    request_body = UpdateKey,
    responses(
        (status = 200, body = KeyView),
        (status = 404, body = ErrorBody),
        (status = 422, description = "A field is invalid, or `team_id` names no team", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn update_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateKey>,
) -> Result<Json<KeyView>, AdminError> {
    let id = validate::uuid("id", &id)?;
    let update = body.into_update()?;
    let key = keys::update_key(&state.pool, id, &update)
        .await?
        .ok_or_else(|| AdminError::not_found("key", id))?;
    info!(key_id = %key.id, "Key updated.");
    Ok(Json(view(&state, &key).await?))
}

/// Revoke a key. Idempotent: a revoked key keeps its first `revoked_at`.
#[utoipa::path(
    post, path = "/api/v1/keys/{id}/revoke", tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, body = KeyView),
        (status = 404, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, AdminError> {
    Ok(Json(revoke(&state, &id).await?))
}

/// Revokes the key `id` (as given, checked here): what
/// `POST /api/v1/keys/{id}/revoke` and the console do.
pub async fn revoke(state: &AppState, id: &str) -> Result<KeyView, AdminError> {
    let id = validate::uuid("id", id)?;
    let key = keys::revoke_key(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::not_found("key", id))?;
    info!(key_id = %key.id, "Key revoked.");
    view(state, &key).await
}

/// Give a key a new secret. The current secret keeps working for
/// `overlap_secs`, then stops; the answer carries the new whole key once.
#[utoipa::path(
    post, path = "/api/v1/keys/{id}/rotate", tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    request_body = RotateKey,
    responses(
        (status = 200, description = "Rotated; `secret` is shown only here", body = RotatedKey),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The key is revoked", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RotateKey>,
) -> Result<Response, AdminError> {
    Ok(no_store(Json(rotate(&state, &id, body).await?)))
}

/// Rotates the key `id` (as given, checked here) with the body's overlap:
/// what `POST /api/v1/keys/{id}/rotate` and the console do.
pub async fn rotate(state: &AppState, id: &str, body: RotateKey) -> Result<RotatedKey, AdminError> {
    let id = validate::uuid("id", id)?;
    let overlap = body.overlap()?;
    match keys::rotate_key(&state.pool, id, overlap).await? {
        RotateOutcome::Rotated(key, generated) => {
            info!(key_id = %key.id, overlap_secs = overlap.as_secs(), "Key rotated.");
            Ok(RotatedKey {
                key: view(state, &key).await?,
                secret: generated.secret.expose_secret().to_owned(),
                previous_expires_at: key.previous_expires_at,
            })
        }
        RotateOutcome::NotFound => Err(AdminError::not_found("key", id)),
        RotateOutcome::Revoked => Err(AdminError::Conflict {
            code: "key_revoked",
            field: None,
            message: format!("key `{id}` is revoked and cannot be rotated"),
        }),
    }
}

/// Delete a key. Its usage records stay.
#[utoipa::path(
    delete, path = "/api/v1/keys/{id}", tag = "keys",
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn delete_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let id = validate::uuid("id", &id)?;
    if !keys::delete_key(&state.pool, id).await? {
        return Err(AdminError::not_found("key", id));
    }
    info!(key_id = %id, "Key deleted.");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The view of `key` with its spend in the current period.
async fn view(state: &AppState, key: &ApiKey) -> Result<KeyView, AdminError> {
    let now = Utc::now();
    let totals = usage::period_totals(&state.pool, key.id, key.budget_period, now).await?;
    Ok(KeyView::new(
        key,
        Spend::new(key.budget_period, &totals, now),
    ))
}

/// A team that does not exist is the caller's mistake: 422 on `team_id`.
impl From<KeyError> for AdminError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::UnknownTeam(id) => {
                AdminError::validation("team_id", format!("no team `{id}`"))
            }
            KeyError::Database(e) => e.into(),
        }
    }
}
