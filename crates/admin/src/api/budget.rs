//! What keys, teams and prices share: dollar amounts on the wire (stored as
//! integer micro-dollars), budget periods, and the current period's spend.

use chrono::{DateTime, Utc};
use obleth_config::db::usage::PeriodTotals;
use obleth_config::model::BudgetPeriod;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::AdminError;

/// Micro-dollars in a dollar.
pub const MICROS_PER_USD: i64 = 1_000_000;
/// The largest dollar amount accepted: a billion, which keeps every amount
/// with six decimal places within 15 significant digits, so the JSON number
/// sent is read exactly.
pub const MAX_USD: f64 = 1_000_000_000.0;

/// A dollar amount from a request as micro-dollars. Refused with a 422
/// naming `field`: a value that is not finite, negative, above [`MAX_USD`],
/// or with more than 6 decimal places.
///
/// The decimal places are those of the shortest text that reads back as the
/// same `f64` (Rust's `Display`), which is the text the client sent for every
/// amount within the limits, so `0.29` is 290000 micro-dollars, not 289999.
pub fn usd_micros(field: &str, usd: f64) -> Result<i64, AdminError> {
    if !usd.is_finite() {
        return Err(AdminError::validation(field, "must be a finite number"));
    }
    if usd < 0.0 {
        return Err(AdminError::validation(field, "must not be negative"));
    }
    if usd > MAX_USD {
        return Err(AdminError::validation(
            field,
            format!("must be at most {MAX_USD} (US dollars)"),
        ));
    }
    let text = format!("{}", usd.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    if fraction.len() > 6 {
        return Err(AdminError::validation(
            field,
            "must have at most 6 decimal places (a micro-dollar)",
        ));
    }
    let digits = format!("{whole}{fraction:0<6}");
    digits
        .parse::<i64>()
        .map_err(|_| AdminError::validation(field, "must be a number of US dollars"))
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

/// Micro-dollars as dollars, for answers. Exact for every amount below 2^53
/// micro-dollars (about 9 billion dollars): the division rounds once, to the
/// double nearest the decimal.
pub fn usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD as f64
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

    fn micros(v: f64) -> Result<i64, String> {
        usd_micros("budget_usd", v).map_err(|e| {
            assert_eq!(e.field(), Some("budget_usd"));
            e.to_string()
        })
    }

    #[test]
    fn dollar_amounts_become_exact_micro_dollars_or_are_refused() {
        assert_eq!(micros(0.0), Ok(0));
        assert_eq!(micros(-0.0), Ok(0));
        assert_eq!(micros(12.5), Ok(12_500_000));
        assert_eq!(micros(0.29), Ok(290_000));
        assert_eq!(micros(0.000001), Ok(1));
        assert_eq!(micros(2.5), Ok(2_500_000));
        assert_eq!(micros(123.456789), Ok(123_456_789));
        assert_eq!(micros(999_999_999.999999), Ok(999_999_999_999_999));
        assert_eq!(micros(MAX_USD), Ok(1_000_000_000_000_000));
        for bad in [
            -0.01,
            0.0000001,
            1.1234567,
            f64::NAN,
            f64::INFINITY,
            MAX_USD + 1.0,
        ] {
            assert!(micros(bad).is_err(), "{bad}");
        }
        assert!(micros(f64::NAN).unwrap_err().contains("finite"));
        assert!(micros(-1.0).unwrap_err().contains("negative"));
        assert!(micros(0.1234567).unwrap_err().contains("6 decimal places"));
    }

    #[test]
    fn micro_dollars_answer_as_the_decimal_dollars() {
        assert_eq!(usd(12_500_000).to_string(), "12.5");
        assert_eq!(usd(290_000).to_string(), "0.29");
        assert_eq!(usd(1).to_string(), "0.000001");
        assert_eq!(usd(123_456_789).to_string(), "123.456789");
    }
}
