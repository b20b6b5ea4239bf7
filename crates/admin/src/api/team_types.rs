//! The teams resource's request and response bodies and their checks.

use chrono::{DateTime, Utc};
use obleth_config::db::teams::{NewTeam, TeamUpdate};
use obleth_config::model::Team;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::budget::{self, Period, Spend};
use super::validate;
use crate::error::AdminError;

/// A team: limits and budgets every key of the team shares, and what the
/// team has used in its current period.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TeamView {
    pub id: Uuid,
    pub name: String,
    /// Requests per minute for all the team's keys together.
    pub rpm_limit: Option<i32>,
    /// Tokens per minute for all the team's keys together.
    pub tpm_limit: Option<i32>,
    /// Tokens per `budget_period`.
    pub token_budget: Option<i64>,
    /// Spend budget per `budget_period`, in US dollars.
    pub budget_usd: Option<f64>,
    /// The same budget in micro-dollars, as stored.
    pub budget_usd_micros: Option<i64>,
    pub budget_period: Period,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The team's use in its current period, all its keys together.
    #[serde(flatten)]
    pub spend: Spend,
}

impl TeamView {
    pub fn new(t: &Team, spend: Spend) -> TeamView {
        TeamView {
            id: t.id,
            name: t.name.clone(),
            rpm_limit: t.rpm_limit,
            tpm_limit: t.tpm_limit,
            token_budget: t.token_budget,
            budget_usd: t.budget_usd_micros.map(budget::usd),
            budget_usd_micros: t.budget_usd_micros,
            budget_period: t.budget_period.into(),
            created_at: t.created_at,
            updated_at: t.updated_at,
            spend,
        }
    }
}

/// A team to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    /// Unique; 1 to 200 visible characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Requests per minute, at least 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub rpm_limit: Option<i32>,
    /// Tokens per minute, at least 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub tpm_limit: Option<i32>,
    /// Tokens per `budget_period`, not negative.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub token_budget: Option<i64>,
    /// US dollars per `budget_period`: not negative, at most 6 decimal places.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub budget_usd: Option<f64>,
    /// `day`, `week`, `month` or `total` (default: never resets).
    #[serde(default)]
    pub budget_period: Option<Period>,
}

impl CreateTeam {
    pub fn into_new_team(self) -> Result<NewTeam, AdminError> {
        validate::text("name", &self.name, 200)?;
        validate::limits(self.rpm_limit, self.tpm_limit, self.token_budget)?;
        Ok(NewTeam {
            name: self.name,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            token_budget: self.token_budget,
            budget_usd_micros: budget::opt_usd_micros("budget_usd", self.budget_usd)?,
            budget_period: self.budget_period.unwrap_or_default().into(),
        })
    }
}

/// A partial update. A field left out is unchanged; `null` clears a limit or budget.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeam {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<i32>)]
    pub rpm_limit: Option<Option<i32>>,
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<i32>)]
    pub tpm_limit: Option<Option<i32>>,
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<i64>)]
    pub token_budget: Option<Option<i64>>,
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 1_000_000_000)]
    pub budget_usd: Option<Option<f64>>,
    #[serde(default)]
    pub budget_period: Option<Period>,
}

impl UpdateTeam {
    pub fn into_update(self) -> Result<TeamUpdate, AdminError> {
        if let Some(name) = &self.name {
            validate::text("name", name, 200)?;
        }
        validate::limits(
            self.rpm_limit.flatten(),
            self.tpm_limit.flatten(),
            self.token_budget.flatten(),
        )?;
        Ok(TeamUpdate {
            name: self.name,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            token_budget: self.token_budget,
            budget_usd_micros: budget::patch_usd_micros("budget_usd", self.budget_usd)?,
            budget_period: self.budget_period.map(Into::into),
        })
    }
}

/// A page of teams, ordered by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeamPage {
    pub items: Vec<TeamView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<Uuid>,
}

/// Paging of the team list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TeamListParams {
    /// The `next_after` of the previous page.
    pub after: Option<Uuid>,
    /// Page size, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}
