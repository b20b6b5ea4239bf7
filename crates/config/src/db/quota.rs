//! The shared quota counters the gateways lease from: one batched call that
//! charges what a gateway owes and grants it more, the count of live
//! gateways (a gateway's share while the database is away), and clean-up.
//!
//! The algorithm and its bound are in `docs/gateway.md` ("Limits and
//! budgets across the fleet"); the SQL side is the `obleth_quota_lease`
//! function of migration 20261128000001.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::model::BudgetPeriod;

/// What a counter counts (the `quota_counters_dimension_known` constraint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Tokens per budget period.
    BudgetTokens,
    /// Micro-dollars per budget period.
    BudgetMicros,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [
        Dimension::Requests,
        Dimension::Tokens,
        Dimension::BudgetTokens,
        Dimension::BudgetMicros,
    ];

    /// The spelling in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
            Dimension::BudgetTokens => "budget_tokens",
            Dimension::BudgetMicros => "budget_micros",
        }
    }

    /// Whether the window is a clock minute (rate limits) rather than a
    /// budget period.
    pub fn per_minute(self) -> bool {
        matches!(self, Dimension::Requests | Dimension::Tokens)
    }
}

/// One counter to charge and lease from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// A key's or a team's id.
    pub subject_id: Uuid,
    pub dimension: Dimension,
    /// The minute (rate limits) or the period's start (budgets).
    pub window_start: DateTime<Utc>,
    /// For budgets: the period, so a new counter starts from its usage totals.
    pub period: Option<BudgetPeriod>,
    /// Added to the counter first: a debt, or a negative hand-back.
    pub charge: i64,
    /// How much more the gateway would like.
    pub want: i64,
    /// The limit the counter may not pass by a grant.
    pub limit: i64,
}

/// The database's answer for one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The counter after the charge and the grant: the fleet's use so far.
    pub used: i64,
    /// What this gateway may now admit locally.
    pub granted: i64,
    /// The limit less the previous minute's weighted use (rate limits).
    pub ceiling: i64,
}

/// Charges and leases for every request, in one round trip and one
/// transaction; the answers are in the requests' order.
pub async fn lease(
    pool: &PgPool,
    requests: &[LeaseRequest],
) -> Result<Vec<LeaseGrant>, sqlx::Error> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let subjects: Vec<Uuid> = requests.iter().map(|r| r.subject_id).collect();
    let dimensions: Vec<&str> = requests.iter().map(|r| r.dimension.as_str()).collect();
    let windows: Vec<DateTime<Utc>> = requests.iter().map(|r| r.window_start).collect();
    let periods: Vec<Option<&str>> = requests
        .iter()
        .map(|r| r.period.map(BudgetPeriod::as_str))
        .collect();
    let charges: Vec<i64> = requests.iter().map(|r| r.charge).collect();
    let wants: Vec<i64> = requests.iter().map(|r| r.want.max(0)).collect();
    let limits: Vec<i64> = requests.iter().map(|r| r.limit).collect();
    let rows: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
        "SELECT idx, new_used, granted, ceiling \
         FROM obleth_quota_lease($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&subjects)
    .bind(&dimensions)
    .bind(&windows)
    .bind(&periods)
    .bind(&charges)
    .bind(&wants)
    .bind(&limits)
    .fetch_all(pool)
    .await?;
    let mut answers = vec![
        LeaseGrant {
            used: 0,
            granted: 0,
            ceiling: 0
        };
        requests.len()
    ];
    for (idx, used, granted, ceiling) in rows {
        let slot = usize::try_from(idx - 1)
            .ok()
            .and_then(|i| answers.get_mut(i))
            .ok_or_else(|| sqlx::Error::Protocol(format!("quota lease answered index {idx}")))?;
        *slot = LeaseGrant {
            used,
            granted,
            ceiling,
        };
    }
    Ok(answers)
}

/// How many gateways have beaten within `live_within` and not stopped.
pub async fn live_gateways(pool: &PgPool, live_within: Duration) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM nodes WHERE service = 'gateway' AND stopped_at IS NULL \
         AND last_seen > now() - make_interval(secs => $1)",
    )
    .bind(live_within.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// Deletes minute counters older than five minutes and budget counters not
/// touched for 40 days (a month's period has ended by then). Answers how
/// many rows went.
pub async fn delete_old_counters(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM quota_counters WHERE \
         (dimension IN ('requests', 'tokens') AND window_start < now() - interval '5 minutes') \
         OR (dimension IN ('budget_tokens', 'budget_micros') AND window_start > 'epoch' \
             AND updated_at < now() - interval '40 days')",
    )
    .execute(pool)
    .await?
    .rows_affected())
}
