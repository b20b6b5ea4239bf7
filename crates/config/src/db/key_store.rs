//! The gateway key store's reads: how many keys a warm-up will load, and the
//! columns its compact record keeps, read in ranges of the table's blocks so
//! that a warm-up can run several scans at once.

use std::fmt;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::apikey::HashPrefix;
use crate::model::{ApiKey, BudgetPeriod};

/// The columns [`KeyColumns::from_row`] reads, in its order.
macro_rules! store_columns {
    () => {
        "id, public_id, secret_hash, allowed_models, rpm_limit, tpm_limit, token_budget, \
         expires_at, previous_secret_hash, previous_expires_at, team_id, budget_usd_micros, \
         budget_period"
    };
}

/// How many keys are not revoked (expired ones included): what a warm-up loads.
pub async fn count_active_keys(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        .fetch_one(pool)
        .await
}

/// The size of the keys table in blocks (pages), as it stands now.
pub async fn key_table_blocks(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pg_relation_size('api_keys') / current_setting('block_size')::bigint",
    )
    .fetch_one(pool)
    .await
}

/// A half-open range of the keys table's blocks, `start` included; no `end`:
/// to the last block, including blocks added since the size was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    pub start: i64,
    pub end: Option<i64>,
}

impl BlockRange {
    /// `n` ranges (at least one) that split a table of `blocks` blocks into
    /// about equal parts and together cover all of it and anything beyond.
    /// Each is a TID range scan (PostgreSQL 14 and later): several read the
    /// table at once without reading any page twice, whatever the key ids.
    pub fn split(n: u32, blocks: i64) -> Vec<BlockRange> {
        let n = i64::from(n.max(1));
        let step = (blocks.max(0) + n - 1) / n;
        if step == 0 {
            return vec![BlockRange {
                start: 0,
                end: None,
            }];
        }
        (0..n)
            .map(|i| BlockRange {
                start: i * step,
                end: (i + 1 < n).then_some((i + 1) * step),
            })
            .collect()
    }
}

/// Streams the rows of the keys in `range` that are not revoked, in no
/// particular order; decode each with [`KeyColumns::from_row`]. The stream
/// holds one pooled connection until it ends.
///
/// Each range is read in its own snapshot, so a key updated while the ranges
/// are read may be missed or read twice: a warm-up replays the change log
/// from a mark read before, which applies every such update again.
pub fn active_key_rows(
    pool: &PgPool,
    range: BlockRange,
) -> impl Stream<Item = Result<PgRow, sqlx::Error>> + Send + '_ {
    let query = match range.end {
        Some(end) => sqlx::query(concat!(
            "SELECT ",
            store_columns!(),
            " FROM api_keys WHERE revoked_at IS NULL \
              AND ctid >= format('(%s,0)', $1::bigint)::tid \
              AND ctid < format('(%s,0)', $2::bigint)::tid"
        ))
        .bind(range.start)
        .bind(end),
        None => sqlx::query(concat!(
            "SELECT ",
            store_columns!(),
            " FROM api_keys WHERE revoked_at IS NULL \
              AND ctid >= format('(%s,0)', $1::bigint)::tid"
        ))
        .bind(range.start),
    };
    query.fetch(pool)
}

/// The columns of one key that the gateway's key store keeps, borrowed from
/// its row where they can be.
pub struct KeyColumns<'r> {
    pub id: Uuid,
    pub public_id: &'r str,
    pub secret_hash: &'r [u8],
    pub allowed_models: Vec<String>,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i32>,
    pub token_budget: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub previous_secret_hash: Option<&'r [u8]>,
    pub previous_expires_at: Option<DateTime<Utc>>,
    pub team_id: Option<Uuid>,
    pub budget_usd_micros: Option<i64>,
    pub budget_period: BudgetPeriod,
}

impl<'r> KeyColumns<'r> {
    /// Decodes a row of [`active_key_rows`] (a key that is not revoked).
    pub fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let period: &str = row.try_get(12)?;
        Ok(KeyColumns {
            id: row.try_get(0)?,
            public_id: row.try_get(1)?,
            secret_hash: row.try_get(2)?,
            allowed_models: row.try_get(3)?,
            rpm_limit: row.try_get(4)?,
            tpm_limit: row.try_get(5)?,
            token_budget: row.try_get(6)?,
            expires_at: row.try_get(7)?,
            revoked: false,
            previous_secret_hash: row.try_get(8)?,
            previous_expires_at: row.try_get(9)?,
            team_id: row.try_get(10)?,
            budget_usd_micros: row.try_get(11)?,
            budget_period: period.parse().map_err(|e| sqlx::Error::ColumnDecode {
                index: "budget_period".to_owned(),
                source: Box::new(e),
            })?,
        })
    }

    /// The same columns of a whole key record.
    pub fn of_key(key: &'r ApiKey) -> Self {
        KeyColumns {
            id: key.id,
            public_id: &key.public_id,
            secret_hash: &key.secret_hash,
            allowed_models: key.allowed_models.clone(),
            rpm_limit: key.rpm_limit,
            tpm_limit: key.tpm_limit,
            token_budget: key.token_budget,
            expires_at: key.expires_at,
            revoked: key.revoked_at.is_some(),
            previous_secret_hash: key.previous_secret_hash.as_deref(),
            previous_expires_at: key.previous_expires_at,
            team_id: key.team_id,
            budget_usd_micros: key.budget_usd_micros,
            budget_period: key.budget_period,
        }
    }
}

impl fmt::Debug for KeyColumns<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyColumns")
            .field("id", &self.id)
            .field("public_id", &self.public_id)
            .field("secret_hash", &HashPrefix(self.secret_hash))
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges_cover_the_table_and_beyond_without_gaps() {
        for (n, blocks) in [(0, 10), (1, 10), (4, 0), (4, 3), (4, 25_000), (7, 100)] {
            let ranges = BlockRange::split(n, blocks);
            assert!(!ranges.is_empty() && ranges.len() <= n.max(1) as usize);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().map(|r| r.end), Some(None));
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, Some(pair[1].start));
                assert!(pair[0].start < pair[1].start);
            }
        }
    }
}
