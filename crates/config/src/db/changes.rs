//! The change log: appending a change with its NOTIFY inside a writer's transaction, and reading it back.
//!
//! Gateways apply notifications as they arrive and, after a lost listener or
//! at start, catch up with [`changes_since`] from the last seq they applied.
//! That only works if no change can commit with a seq below one a gateway has
//! already seen; [`record_change`] guarantees it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};

use crate::model::{Change, Entity, Op};

/// The LISTEN/NOTIFY channel for change notices.
pub const CHANNEL: &str = "obleth_changes";

/// The transaction-level advisory lock every change writer takes ("obleth" and
/// a 2; the migration runner uses the 1).
pub const CHANGES_LOCK_KEY: i64 = 0x6f62_6c65_7468_0002;

/// The NOTIFY payload: `{"seq":..,"entity":..,"id":..,"op":..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNotice {
    pub seq: i64,
    pub entity: Entity,
    #[serde(rename = "id")]
    pub entity_id: String,
    pub op: Op,
}

/// Appends a change to the log and queues its notification; returns its seq.
///
/// Call it inside the transaction that makes the change, as its last statement
/// before commit: the notification is sent when, and only if, that transaction
/// commits.
///
/// It first takes a transaction-level advisory lock, held until commit or
/// rollback, so change writers commit one at a time and in seq order. Without
/// it, writer A could take seq 7, writer B seq 8, and B commit first; a gateway
/// catching up with "seq > last" would see 8, remember 8, and never look for 7
/// once A commits. The lock costs a serialization of admin writes, which are
/// rare; being the last statement keeps the time it is held short and means a
/// writer holding it never waits for another writer's row locks. Seqs are not
/// dense (a rolled-back transaction burns one), only increasing.
pub async fn record_change(
    conn: &mut PgConnection,
    entity: Entity,
    entity_id: &str,
    op: Op,
) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHANGES_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO changes (entity, entity_id, op) VALUES ($1, $2, $3) RETURNING seq",
    )
    .bind(entity.as_str())
    .bind(entity_id)
    .bind(op.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let notice = ChangeNotice {
        seq,
        entity,
        entity_id: entity_id.to_owned(),
        op,
    };
    let payload = serde_json::to_string(&notice).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    Ok(seq)
}

/// Up to `limit` changes with a seq above `after_seq`, oldest first.
pub async fn changes_since<'e>(
    executor: impl PgExecutor<'e>,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<Change>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, entity, entity_id, op, changed_at FROM changes \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after_seq)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// The highest seq in the log, 0 when it is empty.
///
/// A gateway reads it before loading its cache: replaying changes after it is
/// harmless, while reading it after loading could skip a change made between.
pub async fn latest_seq<'e>(executor: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(seq), 0)::bigint FROM changes")
        .fetch_one(executor)
        .await
}

/// What a gateway's change feed checks before it trusts a catch-up: which
/// server answers, and the range of the log that remains.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LogBounds {
    /// `pg_postmaster_start_time()`: a restart, a promoted standby or a
    /// restored server answers another one.
    pub server_started: DateTime<Utc>,
    /// The lowest seq left after pruning; none when the log is empty.
    pub oldest: Option<i64>,
    /// The highest seq; none when the log is empty.
    pub newest: Option<i64>,
    /// When the newest change was made.
    pub newest_at: Option<DateTime<Utc>>,
    /// When the change with the seq asked about was made; none when no such
    /// row exists (pruned, or never there).
    pub at_seq: Option<DateTime<Utc>>,
}

/// The log's [`LogBounds`], with the time of change `seq`, in one statement
/// (every part from one snapshot). `pg_postmaster_start_time()` is readable
/// by any role, and the bounds are two ends of the primary key.
pub async fn log_bounds<'e>(
    executor: impl PgExecutor<'e>,
    seq: i64,
) -> Result<LogBounds, sqlx::Error> {
    sqlx::query_as(
        "SELECT pg_postmaster_start_time() AS server_started, \
                (SELECT min(seq) FROM changes) AS oldest, \
                newest.seq AS newest, newest.changed_at AS newest_at, \
                (SELECT changed_at FROM changes WHERE seq = $1) AS at_seq \
         FROM (SELECT 1) AS one \
         LEFT JOIN LATERAL (SELECT seq, changed_at FROM changes ORDER BY seq DESC LIMIT 1) AS newest \
           ON true",
    )
    .bind(seq)
    .fetch_one(executor)
    .await
}

/// Deletes the changes made before `before`, at most `batch` rows a
/// statement, each statement its own transaction, until none is left;
/// answers how many rows it deleted.
///
/// Only a prefix of the log is deleted: the rows below the first one made at
/// or after `before`, and never the newest row. So the log stays without
/// holes, and its lowest seq tells a gateway exactly where history starts: a
/// gateway whose last seen seq is below that (less one) knows it missed
/// changes and reloads everything instead of catching up. Several admins may
/// prune at once: a row another one deletes first is skipped, and batches
/// delete from the low end, so the log remains a suffix at every commit.
pub async fn prune_changes(
    pool: &sqlx::PgPool,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    // The first seq to keep: the oldest change made at or after `before`,
    // else the newest row. Computed once, so rows made meanwhile are never
    // looked at.
    let keep_from: Option<i64> = sqlx::query_scalar(
        "SELECT COALESCE( \
             (SELECT min(seq) FROM changes WHERE changed_at >= $1), \
             (SELECT max(seq) FROM changes))",
    )
    .bind(before)
    .fetch_one(pool)
    .await?;
    let Some(keep_from) = keep_from else {
        return Ok(0);
    };
    let batch = batch.max(1);
    let mut deleted = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM changes WHERE seq IN ( \
                 SELECT seq FROM changes WHERE seq < $1 ORDER BY seq LIMIT $2)",
        )
        .bind(keep_from)
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        deleted += n;
        // A short batch: nothing is left below `keep_from` (or another
        // admin is deleting the rest).
        if n < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
    }
}

/// Reads a NOTIFY payload; `None` for anything that is not a change notice
/// (the listener then falls back to catching up from its last seq).
pub fn parse_notification(payload: &str) -> Option<ChangeNotice> {
    serde_json::from_str(payload).ok()
}

/// Runs `delete` (a `DELETE ... WHERE id = $1`) for `id` and, if it removed a
/// row, records the deletion of `entity`, in one transaction. Answers whether
/// a row was removed.
pub(crate) async fn delete_recorded(
    pool: &sqlx::PgPool,
    delete: &'static str,
    id: uuid::Uuid,
    entity: Entity,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query(delete)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    if deleted {
        record_change(&mut tx, entity, &id.to_string(), Op::Delete).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_parse_or_are_refused() {
        let good = r#"{"seq":42,"entity":"api_key","id":"7d1f","op":"update"}"#;
        assert_eq!(
            parse_notification(good),
            Some(ChangeNotice {
                seq: 42,
                entity: Entity::ApiKey,
                entity_id: "7d1f".to_owned(),
                op: Op::Update,
            })
        );
        let bad = [
            "",
            "not json",
            r#"{"seq":42}"#,
            r#"{"seq":"42","entity":"api_key","id":"7d1f","op":"update"}"#,
            r#"{"seq":42,"entity":"user","id":"7d1f","op":"update"}"#,
            r#"{"seq":42,"entity":"api_key","id":"7d1f","op":"upsert"}"#,
        ];
        for payload in bad {
            assert_eq!(parse_notification(payload), None, "{payload}");
        }
    }

    #[test]
    fn notice_serializes_to_the_documented_shape() {
        let notice = ChangeNotice {
            seq: 3,
            entity: Entity::Route,
            entity_id: "r".to_owned(),
            op: Op::Delete,
        };
        let json = serde_json::to_string(&notice).unwrap();
        assert_eq!(json, r#"{"seq":3,"entity":"route","id":"r","op":"delete"}"#);
        assert_eq!(parse_notification(&json), Some(notice));
    }
}
