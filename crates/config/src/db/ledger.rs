//! The usage ledger's daily partitions: created ahead of the days they hold,
//! and dropped whole once older than the retention.
//!
//! The partitions are `usage_ledger_YYYYMMDD`, one a UTC day, created by the
//! SQL function `obleth_usage_partition` (migration 20261128000002), which
//! attaches each new table under a lock that lets inserts and reads go on.

use std::collections::BTreeSet;

use chrono::{Days, NaiveDate};
use sqlx::PgPool;

/// The prefix of every partition's name; the rest is the day, `YYYYMMDD`.
const PREFIX: &str = "usage_ledger_";

/// Creates the partitions of `days` that do not exist yet, in one
/// transaction; answers how many it created.
pub async fn ensure_days(
    pool: &PgPool,
    days: impl IntoIterator<Item = NaiveDate>,
) -> Result<u64, sqlx::Error> {
    let days: Vec<NaiveDate> = days
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if days.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    // Attaching waits for the parent's SHARE UPDATE EXCLUSIVE lock; never
    // queue behind a long holder for longer than this.
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    let created: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE made) FROM \
         (SELECT obleth_usage_partition(d) AS made FROM unnest($1::date[]) AS d) AS r",
    )
    .bind(&days)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(created as u64)
}

/// Creates the partitions from yesterday to `ahead` days after `today`.
pub async fn ensure_ahead(pool: &PgPool, today: NaiveDate, ahead: u32) -> Result<u64, sqlx::Error> {
    let first = today - Days::new(1);
    let days = (0..=u64::from(ahead) + 1).filter_map(|i| first.checked_add_days(Days::new(i)));
    ensure_days(pool, days).await
}

/// The ledger's partitions, by day, oldest first.
pub async fn partitions(pool: &PgPool) -> Result<Vec<NaiveDate>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'usage_ledger'::regclass",
    )
    .fetch_all(pool)
    .await?;
    let mut days: Vec<NaiveDate> = names.iter().filter_map(|n| day_of(n)).collect();
    days.sort_unstable();
    Ok(days)
}

fn day_of(partition: &str) -> Option<NaiveDate> {
    let digits = partition.strip_prefix(PREFIX)?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(digits, "%Y%m%d").ok()
}

fn name_of(day: NaiveDate) -> String {
    format!("{PREFIX}{}", day.format("%Y%m%d"))
}

/// Drops every partition whose whole day is older than `retention_days`
/// before `today` (a partition of day D goes once `D + retention_days <
/// today`); answers the days dropped. 0 keeps everything.
///
/// Each partition is first detached with `DETACH PARTITION ... CONCURRENTLY`
/// (it waits for the queries that use it, and never blocks inserts into the
/// other days), then dropped. A detach interrupted part-way is finished on
/// the next call. The statements run outside a transaction, so `pool` must
/// not be a transaction pooler: pass the direct pool.
pub async fn drop_expired(
    pool: &PgPool,
    today: NaiveDate,
    retention_days: u32,
) -> Result<Vec<NaiveDate>, sqlx::Error> {
    if retention_days == 0 {
        return Ok(Vec::new());
    }
    let Some(cutoff) = today.checked_sub_days(Days::new(u64::from(retention_days))) else {
        return Ok(Vec::new());
    };
    finish_pending_detaches(pool).await?;
    let mut dropped = Vec::new();
    for day in partitions(pool).await? {
        if day >= cutoff {
            break;
        }
        let name = name_of(day);
        sqlx::query(&format!(
            "ALTER TABLE usage_ledger DETACH PARTITION \"{name}\" CONCURRENTLY"
        ))
        .execute(pool)
        .await?;
        sqlx::query(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .execute(pool)
            .await?;
        dropped.push(day);
    }
    Ok(dropped)
}

/// Completes detaches left pending by an interrupted `drop_expired`, and
/// drops those partitions.
async fn finish_pending_detaches(pool: &PgPool) -> Result<(), sqlx::Error> {
    let pending: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'usage_ledger'::regclass AND i.inhdetachpending",
    )
    .fetch_all(pool)
    .await?;
    for name in pending.iter().filter(|n| day_of(n).is_some()) {
        sqlx::query(&format!(
            "ALTER TABLE usage_ledger DETACH PARTITION \"{name}\" FINALIZE"
        ))
        .execute(pool)
        .await?;
        sqlx::query(&format!("DROP TABLE IF EXISTS \"{name}\""))
            .execute(pool)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_others_are_ignored() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        assert_eq!(name_of(day), "usage_ledger_20261128");
        assert_eq!(day_of(&name_of(day)), Some(day));
        assert_eq!(day_of("usage_ledger_copy"), None);
        assert_eq!(day_of("usage_ledger_2026112"), None);
        assert_eq!(day_of("usage_hourly"), None);
    }
}
