//! What keys, teams and prices share: dollar amounts on the wire (stored as
//! integer micro-dollars), budget periods, and the current period's spend.

use chrono::{DateTime, Utc};
use obleth_config::db::usage::PeriodTotals;
use obleth_config::model::BudgetPeriod;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::AdminError;

/// A dollar amount from a request as micro-dollars
/// ([`obleth_config::money::usd_to_micros`]), refused with a 422 naming `field`.
pub fn usd_micros(field: &str, usd: f64) -> Result<i64, AdminError> {
    obleth_config::money::usd_to_micros(usd)
        .map_err(|e| AdminError::validation(field, e.to_string()))
}

/// An optional amount: `None` stays `None`.
pub fn opt_usd_micros(field: &str, usd: Option<f64>) -> Result<Option<i64>, AdminError> {
    usd.map(|v| usd_micros(field, v)).transpose()
}

/// A PATCH amount: left out stays left out, `null` clears.
pub fn patch_usd_micros(
    field: &str,
    usd: Option<Option<f64>>,
) -> Result<Option<Option<i64>>, AdminError> {
    usd.map(|v| opt_usd_micros(field, v)).transpose()
}

/// Micro-dollars as dollars, for answers.
pub fn usd(micros: i64) -> f64 {
    obleth_config::money::micros_to_usd(micros)
}

/// The period a budget resets on, at UTC boundaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Midnight UTC.
    Day,
    /// Monday, midnight UTC (ISO week).
    Week,
    /// The first of the month, midnight UTC.
    Month,
    /// Never: an all-time budget.
    #[default]
    Total,
}

impl From<Period> for BudgetPeriod {
    fn from(p: Period) -> Self {
        match p {
            Period::Day => BudgetPeriod::Day,
            Period::Week => BudgetPeriod::Week,
            Period::Month => BudgetPeriod::Month,
            Period::Total => BudgetPeriod::Total,
        }
    }
}

impl From<BudgetPeriod> for Period {
    fn from(p: BudgetPeriod) -> Self {
        match p {
            BudgetPeriod::Day => Period::Day,
            BudgetPeriod::Week => Period::Week,
            BudgetPeriod::Month => Period::Month,
            BudgetPeriod::Total => Period::Total,
        }
    }
}

/// A key's or team's use in its current budget period, from the running
/// totals the database keeps as usage is recorded (usage still in a
/// gateway's buffer is not in them yet).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Spend {
    /// Spent this period, in US dollars (priced requests only).
    pub spent_usd: f64,
    pub spent_usd_micros: i64,
    /// Tokens used this period.
    pub spent_tokens: i64,
    /// Requests recorded this period.
    pub spent_requests: i64,
    /// When the current period began (UTC; the epoch for `total`).
    pub period_start: DateTime<Utc>,
    /// When the period ends and the budgets start over; null for `total`.
    pub period_resets_at: Option<DateTime<Utc>>,
}

impl Spend {
    pub fn new(period: BudgetPeriod, totals: &PeriodTotals, at: DateTime<Utc>) -> Spend {
        Spend {
            spent_usd: usd(totals.cost_micros),
            spent_usd_micros: totals.cost_micros,
            spent_tokens: totals.tokens,
            spent_requests: totals.requests,
            period_start: totals.period_start,
            period_resets_at: period.next_start(at),
        }
    }

    /// Nothing spent yet, as for a key or team just created.
    pub fn none(period: BudgetPeriod, at: DateTime<Utc>) -> Spend {
        let totals = PeriodTotals {
            period_start: period.start(at),
            requests: 0,
            tokens: 0,
            cost_micros: 0,
        };
        Spend::new(period, &totals, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_amount_names_its_field() {
        assert_eq!(usd_micros("budget_usd", 0.29).unwrap(), 290_000);
        for (bad, says) in [
            (-1.0, "negative"),
            (f64::NAN, "finite"),
            (0.1234567, "6 decimal places"),
        ] {
            let e = usd_micros("budget_usd", bad).unwrap_err();
            assert_eq!(e.field(), Some("budget_usd"));
            assert!(e.to_string().contains(says), "{e}");
        }
        assert_eq!(usd(290_000).to_string(), "0.29");
    }
}
