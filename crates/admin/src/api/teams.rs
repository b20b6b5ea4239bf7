//! `/api/v1/teams`: create, list, get, update and delete teams, whose limits
//! and budgets all their keys share. Writes go through
//! `obleth_config::db::teams`, which records each as the change-log setting
//! `team:<id>`, so every gateway follows. Answers carry the team's spend in
//! its current period, read from the running totals.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use obleth_config::db::teams::{self, TeamError, TeamFilter};
use obleth_config::db::usage;
use obleth_config::model::Team;
use tracing::info;

use super::budget::Spend;
use super::team_types::{CreateTeam, TeamListParams, TeamPage, TeamView, UpdateTeam};
use super::validate;
use crate::error::{AdminError, ErrorBody};
use crate::extract::{JsonBody, Params};
use crate::state::AppState;

impl From<TeamError> for AdminError {
    fn from(e: TeamError) -> Self {
        match e {
            TeamError::NameTaken(name) => AdminError::Conflict {
                code: "already_exists",
                field: Some("name".to_owned()),
                message: format!("a team named `{name}` already exists"),
            },
            TeamError::InUse { team, keys } => AdminError::Conflict {
                code: "team_in_use",
                field: None,
                message: format!(
                    "team `{team}` still has {keys} key(s); move them to another team \
                     (`team_id`) or delete them first"
                ),
            },
            TeamError::Database(e) => e.into(),
        }
    }
}

/// The view of `team` with its spend in the current period.
async fn view(state: &AppState, team: &Team) -> Result<TeamView, AdminError> {
    let now = Utc::now();
    let totals = usage::period_totals(&state.pool, team.id, team.budget_period, now).await?;
    Ok(TeamView::new(
        team,
        Spend::new(team.budget_period, &totals, now),
    ))
}

/// Create a team.
#[utoipa::path(
    post, path = "/api/v1/teams", tag = "teams",
    request_body = CreateTeam,
    responses(
        (status = 201, body = TeamView),
        (status = 409, description = "The name is taken (`already_exists`)", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn create_team(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateTeam>,
) -> Result<Response, AdminError> {
    let new = body.into_new_team()?;
    let team = teams::create_team(&state.pool, &new).await?;
    info!(team_id = %team.id, "Team created.");
    let view = TeamView::new(&team, Spend::none(team.budget_period, Utc::now()));
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// List teams, ordered by id, one page at a time.
#[utoipa::path(
    get, path = "/api/v1/teams", tag = "teams",
    params(TeamListParams),
    responses(
        (status = 200, body = TeamPage),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_teams(
    State(state): State<AppState>,
    Params(params): Params<TeamListParams>,
) -> Result<Json<TeamPage>, AdminError> {
    let limit = validate::page_limit(params.limit)?;
    let filter = TeamFilter {
        after: params.after,
        limit,
    };
    let rows = teams::page_teams(&state.pool, &filter).await?;
    let next_after = if rows.len() as i64 == limit {
        rows.last().map(|t| t.id)
    } else {
        None
    };
    let now = Utc::now();
    let subjects: Vec<_> = rows.iter().map(|t| (t.id, t.budget_period)).collect();
    let totals = usage::periods_totals(&state.pool, &subjects, now).await?;
    let items = rows
        .iter()
        .zip(&totals)
        .map(|(t, s)| TeamView::new(t, Spend::new(t.budget_period, s, now)))
        .collect();
    Ok(Json(TeamPage { items, next_after }))
}

/// Get one team with its current spend.
#[utoipa::path(
    get, path = "/api/v1/teams/{id}", tag = "teams",
    params(("id" = uuid::Uuid, Path, description = "The team's id")),
    responses(
        (status = 200, body = TeamView),
        (status = 404, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get_team(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TeamView>, AdminError> {
    let id = validate::uuid("id", &id)?;
    let team = teams::team_by_id(&state.pool, id)
        .await?
        .ok_or_else(|| AdminError::not_found("team", id))?;
    Ok(Json(view(&state, &team).await?))
}

/// Change a team's name, limits, budgets or period.
#[utoipa::path(
    patch, path = "/api/v1/teams/{id}", tag = "teams",
    params(("id" = uuid::Uuid, Path, description = "The team's id")),
    request_body = UpdateTeam,
    responses(
        (status = 200, body = TeamView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The name is taken (`already_exists`)", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn update_team(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateTeam>,
) -> Result<Json<TeamView>, AdminError> {
    let id = validate::uuid("id", &id)?;
    let update = body.into_update()?;
    let team = teams::update_team(&state.pool, id, &update)
        .await?
        .ok_or_else(|| AdminError::not_found("team", id))?;
    info!(team_id = %team.id, "Team updated.");
    Ok(Json(view(&state, &team).await?))
}

/// Delete a team. Refused while keys still belong to it.
#[utoipa::path(
    delete, path = "/api/v1/teams/{id}", tag = "teams",
    params(("id" = uuid::Uuid, Path, description = "The team's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Keys still belong to the team (`team_in_use`)", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn delete_team(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let id = validate::uuid("id", &id)?;
    if !teams::delete_team(&state.pool, id).await? {
        return Err(AdminError::not_found("team", id));
    }
    info!(team_id = %id, "Team deleted.");
    Ok(StatusCode::NO_CONTENT.into_response())
}
