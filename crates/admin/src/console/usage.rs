//! The usage page: requests (with errors), tokens and cost over a time
//! range in hour or day buckets, and the range's totals by model, provider,
//! key or team. Every figure is what `GET /api/v1/usage/totals` answers for
//! the same range (`api::usage::read_totals`, one call a bucket, each
//! bucket hour- or day-aligned, so each reads the rollups only).

use axum::extract::{Query, State};
use chrono::{DateTime, Duration, DurationRound, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::chart::{self, Bar};
use super::layout::{page, ConsoleError, Nav};
use super::signin::SignedIn;
use crate::api::usage::{read_totals, GroupBy, TotalView, TotalsParams};
use crate::error::AdminError;
use crate::state::AppState;

/// The ranges the picker offers: name, bucket, bucket count.
const RANGES: [(&str, Bucket, i64); 4] = [
    ("24h", Bucket::Hour, 24),
    ("48h", Bucket::Hour, 48),
    ("7d", Bucket::Day, 7),
    ("30d", Bucket::Day, 30),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    fn length(self) -> Duration {
        match self {
            Bucket::Hour => Duration::hours(1),
            Bucket::Day => Duration::days(1),
        }
    }

    fn label(self, at: DateTime<Utc>) -> String {
        match self {
            Bucket::Hour => at.format("%H:00").to_string(),
            Bucket::Day => at.format("%m-%d").to_string(),
        }
    }
}

/// The page's query: `range` (24h, 48h, 7d, 30d) and `group_by` (model,
/// provider, key, team).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UsageQuery {
    #[serde(default)]
    range: Option<String>,
    #[serde(default)]
    group_by: Option<String>,
}

fn group_of(name: &str) -> Result<GroupBy, AdminError> {
    match name {
        "model" => Ok(GroupBy::Model),
        "provider" => Ok(GroupBy::Provider),
        "key" => Ok(GroupBy::Key),
        "team" => Ok(GroupBy::Team),
        _ => Err(AdminError::validation(
            "group_by",
            "must be model, provider, key or team",
        )),
    }
}

/// One bucket's sums over every group.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    requests: i64,
    errors: i64,
    tokens: i64,
    cost_usd: f64,
}

fn sum(items: &[TotalView]) -> Sums {
    items.iter().fold(Sums::default(), |s, t| Sums {
        requests: s.requests + t.requests,
        errors: s.errors + t.errors,
        tokens: s.tokens + t.total_tokens,
        cost_usd: s.cost_usd + t.cost_usd,
    })
}

/// `GET /console/usage`.
pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Query(q): Query<UsageQuery>,
) -> Result<Markup, ConsoleError> {
    let range = q.range.as_deref().unwrap_or("24h");
    let (_, bucket, count) = *RANGES
        .iter()
        .find(|(name, _, _)| *name == range)
        .ok_or_else(|| AdminError::validation("range", "must be 24h, 48h, 7d or 30d"))?;
    let group_name = q.group_by.as_deref().unwrap_or("model");
    let group = group_of(group_name)?;
    // Buckets end at the start of the next hour or day, so the last one is
    // the current, partial one.
    let now = Utc::now();
    let step = bucket.length();
    let end = now.duration_trunc(step).map_err(|_| AdminError::Internal)? + step;
    let start = end - step * count as i32;
    let mut series = Vec::with_capacity(count as usize);
    for i in 0..count {
        let from = start + step * i as i32;
        let totals = read_totals(
            &state,
            TotalsParams {
                group_by: Some(GroupBy::Model),
                from: Some(from),
                to: Some(from + step),
                ..TotalsParams::default()
            },
        )
        .await?;
        series.push((bucket.label(from), sum(&totals.items)));
    }
    let by_group = read_totals(
        &state,
        TotalsParams {
            group_by: Some(group),
            from: Some(start),
            to: Some(end),
            ..TotalsParams::default()
        },
    )
    .await?;
    let all = sum(&by_group.items);
    let bars = |f: fn(&Sums) -> (f64, Option<f64>)| -> Vec<Bar> {
        series
            .iter()
            .map(|(label, s)| {
                let (value, part) = f(s);
                Bar {
                    label: label.clone(),
                    value,
                    part,
                }
            })
            .collect()
    };
    Ok(page(
        "Usage",
        Nav::Usage,
        Some(&session),
        html! {
            h1 { "Usage and spend" }
            form.filters #range-picker method="get" action="/console/usage" {
                label { "Range "
                    select name="range" {
                        @for (name, _, _) in RANGES { option value=(name) selected[name == range] { (name) } }
                    }
                }
                label { "Group by "
                    select name="group_by" {
                        @for g in ["model", "provider", "key", "team"] { option value=(g) selected[g == group_name] { (g) } }
                    }
                }
                button.quiet type="submit" { "Show" }
            }
            p.muted {
                (start.format("%Y-%m-%d %H:%M")) " to " (end.format("%Y-%m-%d %H:%M")) " UTC, by "
                (if bucket == Bucket::Hour { "hour" } else { "day" }) ": "
                (all.requests) " requests, " (all.errors) " errors, " (all.tokens) " tokens, $" (format!("{:.4}", all.cost_usd))
            }
            (chart::bars("chart-requests", "Requests (errors in red)", &bars(|s| (s.requests as f64, Some(s.errors as f64))), |v| format!("{v:.0}")))
            (chart::bars("chart-tokens", "Tokens", &bars(|s| (s.tokens as f64, None)), |v| format!("{v:.0}")))
            (chart::bars("chart-cost", "Cost (USD)", &bars(|s| (s.cost_usd, None)), |v| format!("{v:.4}")))
            h2 { "By " (group_name) }
            table #by-group {
                thead { tr { th { (group_name) } th { "Requests" } th { "Errors" } th { "Prompt tokens" } th { "Completion tokens" } th { "Cost (USD)" } } }
                tbody {
                    @for t in &by_group.items {
                        tr {
                            td.mono { (t.group.as_deref().unwrap_or("(none)")) }
                            td { (t.requests) } td { (t.errors) } td { (t.prompt_tokens) } td { (t.completion_tokens) }
                            td { (format!("{:.4}", t.cost_usd)) }
                        }
                    }
                    @if by_group.items.is_empty() { tr { td colspan="6" .muted { "No usage in this range." } } }
                }
            }
        },
    ))
}
