//! `/api/v1/usage`: token and cost totals per key, model, provider or team
//! over a time range, and the raw records one page at a time.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use obleth_config::db::usage::{self, UsageFilter, UsageGroup, UsageRecord, UsageTotal};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{budget, validate};
use crate::error::{AdminError, ErrorBody};
use crate::extract::Params;
use crate::state::AppState;

/// What totals are grouped by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Key,
    Model,
    Provider,
    /// The team recorded with each request; requests of keys in no team
    /// group as null.
    Team,
}

impl From<GroupBy> for UsageGroup {
    fn from(g: GroupBy) -> Self {
        match g {
            GroupBy::Key => UsageGroup::Key,
            GroupBy::Model => UsageGroup::Model,
            GroupBy::Provider => UsageGroup::Provider,
            GroupBy::Team => UsageGroup::Team,
        }
    }
}

/// The time range and filters both usage reports share.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TotalsParams {
    /// Default `key`.
    pub group_by: Option<GroupBy>,
    /// Start of the range (RFC 3339, inclusive); default 24 hours before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339, exclusive); default now.
    pub to: Option<DateTime<Utc>>,
    pub key_id: Option<Uuid>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Only requests recorded with this team.
    pub team_id: Option<Uuid>,
}

/// Filters and paging of the raw records.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordParams {
    /// Start of the range (RFC 3339, inclusive); default 24 hours before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339, exclusive); default now.
    pub to: Option<DateTime<Utc>>,
    pub key_id: Option<Uuid>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// Only requests recorded with this team.
    pub team_id: Option<Uuid>,
    /// The `next_after` of the previous page.
    pub after: Option<i64>,
    /// Page size, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

fn filter(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    key_id: Option<Uuid>,
    model: Option<String>,
    provider: Option<String>,
    team_id: Option<Uuid>,
) -> Result<UsageFilter, AdminError> {
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - Duration::hours(24));
    if from >= to {
        return Err(AdminError::validation("from", "must be before `to`"));
    }
    Ok(UsageFilter {
        from,
        to,
        key_id,
        model,
        provider,
        team_id,
    })
}

/// Totals of one group.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotalView {
    /// The key id, model, provider or team id; null for requests without one
    /// (refused before the key or provider was known, a key in no team).
    pub group: Option<String>,
    pub requests: i64,
    /// Requests answered with a status of 400 or more.
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// What the priced requests cost, in US dollars; unpriced models add nothing.
    pub cost_usd: f64,
    /// The same cost in micro-dollars.
    pub cost_micros: i64,
}

impl From<UsageTotal> for TotalView {
    fn from(t: UsageTotal) -> Self {
        TotalView {
            group: t.group,
            requests: t.requests,
            errors: t.errors,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            total_tokens: t.total_tokens,
            cost_usd: budget::usd(t.cost_micros),
            cost_micros: t.cost_micros,
        }
    }
}

/// Usage totals over a time range.
#[derive(Debug, Serialize, ToSchema)]
pub struct Totals {
    pub group_by: GroupBy,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub items: Vec<TotalView>,
}

/// One proxied request as the gateway recorded it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordView {
    /// The row id; pages continue after it.
    pub id: i64,
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
    /// What the request cost in US dollars; null when its model had no price.
    pub cost_usd: Option<f64>,
    /// The same cost in micro-dollars.
    pub cost_micros: Option<i64>,
    /// The tokens were estimated because the upstream reported none.
    pub estimated: bool,
    /// The key's team when the request was served.
    pub team_id: Option<Uuid>,
}

impl From<UsageRecord> for RecordView {
    fn from(r: UsageRecord) -> Self {
        let e = r.event;
        RecordView {
            id: r.id,
            request_id: e.request_id,
            key_id: e.key_id,
            model: e.model,
            provider: e.provider,
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            total_tokens: e.total_tokens,
            status: e.status,
            latency_ms: e.latency_ms,
            streamed: e.streamed,
            node_id: e.node_id,
            created_at: e.created_at,
            cost_usd: e.cost_micros.map(budget::usd),
            cost_micros: e.cost_micros,
            estimated: e.estimated,
            team_id: e.team_id,
        }
    }
}

/// A page of usage records, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordPage {
    pub items: Vec<RecordView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Token and cost totals per key, model, provider or team over a time range.
#[utoipa::path(
    get, path = "/api/v1/usage/totals", tag = "usage",
    params(TotalsParams),
    responses((status = 200, body = Totals), (status = 422, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn totals(
    State(state): State<AppState>,
    Params(p): Params<TotalsParams>,
) -> Result<Json<Totals>, AdminError> {
    Ok(Json(read_totals(&state, p).await?))
}

/// The totals `GET /api/v1/usage/totals` answers, which the console's usage
/// page reads too (a bucket at a time for its charts).
pub async fn read_totals(state: &AppState, p: TotalsParams) -> Result<Totals, AdminError> {
    let group_by = p.group_by.unwrap_or_default();
    let f = filter(p.from, p.to, p.key_id, p.model, p.provider, p.team_id)?;
    let rows = usage::usage_totals(&state.pool, group_by.into(), &f).await?;
    Ok(Totals {
        group_by,
        from: f.from,
        to: f.to,
        items: rows.into_iter().map(TotalView::from).collect(),
    })
}

/// Raw usage records over a time range, one page at a time.
#[utoipa::path(
    get, path = "/api/v1/usage/records", tag = "usage",
    params(RecordParams),
    responses((status = 200, body = RecordPage), (status = 422, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn records(
    State(state): State<AppState>,
    Params(p): Params<RecordParams>,
) -> Result<Json<RecordPage>, AdminError> {
    let limit = validate::page_limit(p.limit)?;
    let f = filter(p.from, p.to, p.key_id, p.model, p.provider, p.team_id)?;
    let rows = usage::list_usage(&state.pool, &f, p.after, limit).await?;
    let next_after = if rows.len() as i64 == limit {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(RecordPage {
        items: rows.into_iter().map(RecordView::from).collect(),
        next_after,
    }))
}
