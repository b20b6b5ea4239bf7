//! Folding the usage rollup queue into the hourly rollups and the running
//! totals, outside the usage writer's transaction.
//!
//! The ledger's statement trigger appends one pre-aggregated row per (hour,
//! key, team, model, provider) of every insert to `usage_rollup_queue`; the
//! SQL function `obleth_fold_usage` (migrations 20261128000002 and
//! 20261128000006) moves up to a given number of them into `usage_hourly`
//! (whose triggers add them to the daily rollups) and `usage_totals` and
//! deletes them in one transaction, one caller at a time (a second caller
//! folds nothing and answers 0), so each is counted exactly once. Readers
//! add the queue to the rollups, so nothing waits for a fold to be exact.

use sqlx::PgPool;

/// Queue rows one call folds at most: one statement, bounded memory. A
/// fold's cost grows with the distinct groups (hours, keys, models) it
/// touches far more than with its rows, so a large take lets a fold that
/// fell behind catch up in one go (5 s of 40,000 rows a second).
pub const FOLD_GROUPS: i32 = 200_000;

/// Folds up to `max_groups` queued rows; answers how many it folded (0 when
/// the queue is empty or every row is being folded by another caller).
pub async fn fold_usage(pool: &PgPool, max_groups: i32) -> Result<u64, sqlx::Error> {
    let folded: i64 = sqlx::query_scalar("SELECT obleth_fold_usage($1)")
        .bind(max_groups)
        .fetch_one(pool)
        .await?;
    Ok(folded.max(0) as u64)
}

/// Folds [`FOLD_GROUPS`] at a time until a call folds nothing; answers the
/// rows folded in all.
pub async fn fold_all(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        match fold_usage(pool, FOLD_GROUPS).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// Vacuums the rollup queue. Every fold deletes what it folded, so at tens
/// of thousands of rows a second the queue's heap fills with dead rows
/// faster than autovacuum (a round a minute) clears them, and the readers'
/// scans of the queue (which add it to the rollups) would read them all.
/// `SKIP_LOCKED`: a vacuum already under way is enough. Not in a
/// transaction (a transaction pooler runs it as one statement).
pub async fn vacuum_queue(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("VACUUM (SKIP_LOCKED) usage_rollup_queue")
        .execute(pool)
        .await?;
    Ok(())
}
