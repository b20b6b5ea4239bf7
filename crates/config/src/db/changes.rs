//! The change log: appending a change with its NOTIFY inside a writer's transaction, and reading it back.
//!
//! Gateways apply notifications as they arrive and, after a lost listener or
//! at start, catch up with [`changes_since`] from the last seq they applied.
//! That only works if no change can commit with a seq below one a gateway has
//! already seen; [`record_change`] guarantees it.

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
