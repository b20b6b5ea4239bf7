//! Usage events: the gateway's idempotent batch insert and the token totals behind budgets.

use std::collections::HashMap;

use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::model::UsageEvent;

/// Rows per INSERT statement: 12 binds a row keeps it far below PostgreSQL's
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
             completion_tokens, total_tokens, status, latency_ms, streamed, node_id, created_at) ",
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
                .push_bind(e.created_at);
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
