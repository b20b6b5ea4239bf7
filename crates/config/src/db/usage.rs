//! Usage events: the gateway's idempotent batch insert, the token totals behind budgets, and the admin's reports.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::model::UsageEvent;

/// Rows per INSERT statement: 15 binds a row keeps it far below PostgreSQL's
/// 65 535 bind parameters.
pub const CHUNK_ROWS: usize = 1000;

/// Inserts `events` and returns how many rows were new.
///
/// Events whose `request_id` is already stored are skipped, so a batch retried
/// after a lost reply (or a timeout that did commit) never counts twice; the
/// same holds for duplicates within one batch. The batch is one transaction,
/// one multi-row INSERT per [`CHUNK_ROWS`] events: it is stored whole or not at all.
pub async fn insert_usage(pool: &PgPool, events: &[UsageEvent]) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for chunk in events.chunks(CHUNK_ROWS) {
        let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "INSERT INTO usage_events (request_id, key_id, model, provider, prompt_tokens, \
             completion_tokens, total_tokens, status, latency_ms, streamed, node_id, created_at, \
             cost_micros, estimated, team_id) ",
        );
        query.push_values(chunk, |mut row, e| {
            row.push_bind(e.request_id)
                .push_bind(e.key_id)
                .push_bind(&e.model)
                .push_bind(&e.provider)
                .push_bind(e.prompt_tokens)
                .push_bind(e.completion_tokens)
                .push_bind(e.total_tokens)
                .push_bind(e.status)
                .push_bind(e.latency_ms)
                .push_bind(e.streamed)
                .push_bind(&e.node_id)
                .push_bind(e.created_at)
                .push_bind(e.cost_micros)
                .push_bind(e.estimated)
                .push_bind(e.team_id);
        });
        query.push(" ON CONFLICT (request_id) DO NOTHING");
        inserted += query.build().execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(inserted)
}

/// Tokens used so far by each key that has a token budget, all time. Keys with
/// a budget and no usage are absent (they have used 0).
pub async fn tokens_used_by_keys(pool: &PgPool) -> Result<HashMap<Uuid, i64>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT u.key_id, COALESCE(sum(u.total_tokens), 0)::bigint \
         FROM usage_events u JOIN api_keys k ON k.id = u.key_id \
         WHERE k.token_budget IS NOT NULL \
         GROUP BY u.key_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Tokens used so far by key `key_id`, all time; 0 when it has no usage.
pub async fn tokens_used_by_key(pool: &PgPool, key_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(total_tokens), 0)::bigint FROM usage_events WHERE key_id = $1",
    )
    .bind(key_id)
    .fetch_one(pool)
    .await
}

/// What usage totals are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    Key,
    Model,
    Provider,
}

impl UsageGroup {
    /// The grouping expression; a constant per variant, never user input.
    fn column(self) -> &'static str {
        match self {
            UsageGroup::Key => "key_id::text",
            UsageGroup::Model => "model",
            UsageGroup::Provider => "provider",
        }
    }
}

/// Which usage events a report covers: `from <= created_at < to`, narrowed
/// by the optional fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFilter {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub key_id: Option<Uuid>,
    pub model: Option<String>,
    pub provider: Option<String>,
}

impl UsageFilter {
    fn push_where<'a>(&'a self, query: &mut QueryBuilder<'a, Postgres>) {
        query
            .push(" WHERE created_at >= ")
            .push_bind(self.from)
            .push(" AND created_at < ")
            .push_bind(self.to);
        if let Some(key_id) = self.key_id {
            query.push(" AND key_id = ").push_bind(key_id);
        }
        if let Some(model) = &self.model {
            query.push(" AND model = ").push_bind(model);
        }
        if let Some(provider) = &self.provider {
            query.push(" AND provider = ").push_bind(provider);
        }
    }
}

/// The totals of one group. `group` is the key id, model or provider; `None`
/// for events without one (a request refused before its key or provider was known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageTotal {
    pub group: Option<String>,
    pub requests: i64,
    /// Requests answered with a status of 400 or more.
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
}

/// Totals per key, model or provider of the events `filter` selects, ordered
/// by group (`None` last).
pub async fn usage_totals(
    pool: &PgPool,
    group: UsageGroup,
    filter: &UsageFilter,
) -> Result<Vec<UsageTotal>, sqlx::Error> {
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new("SELECT ");
    query.push(group.column()).push(
        " AS \"group\", count(*)::bigint AS requests, \
         count(*) FILTER (WHERE status >= 400)::bigint AS errors, \
         COALESCE(sum(prompt_tokens), 0)::bigint AS prompt_tokens, \
         COALESCE(sum(completion_tokens), 0)::bigint AS completion_tokens, \
         COALESCE(sum(total_tokens), 0)::bigint AS total_tokens \
         FROM usage_events",
    );
    filter.push_where(&mut query);
    query.push(" GROUP BY 1 ORDER BY 1 NULLS LAST");
    query.build_query_as().fetch_all(pool).await
}

/// One stored usage event with its row id, the cursor of [`list_usage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageRecord {
    pub id: i64,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub event: UsageEvent,
}

/// Up to `limit` events that `filter` selects, oldest row first, after row
/// `after` (the last id of the previous page).
pub async fn list_usage(
    pool: &PgPool,
    filter: &UsageFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<UsageRecord>, sqlx::Error> {
    let mut query: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT id, request_id, key_id, model, provider, prompt_tokens, completion_tokens, \
         total_tokens, status, latency_ms, streamed, node_id, created_at FROM usage_events",
    );
    filter.push_where(&mut query);
    if let Some(after) = after {
        query.push(" AND id > ").push_bind(after);
    }
    query.push(" ORDER BY id LIMIT ").push_bind(limit.max(0));
    query.build_query_as().fetch_all(pool).await
}
