//! The keys resource's request and response bodies and their checks. No
//! response type has a field for the secret's hash; only the create and rotate
//! answers carry the secret itself, once.

use std::fmt;

use chrono::{DateTime, Utc};
use obleth_config::db::keys::{KeyUpdate, NewKey};
use obleth_config::model::ApiKey;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::budget::{self, Period, Spend};
use super::validate;
use crate::error::AdminError;

/// Longest rotation overlap: 30 days.
pub const MAX_OVERLAP_SECS: u64 = 30 * 24 * 3600;

/// Whether a key can be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

/// A key as listed: its public id and prefix name it; nothing in it authenticates.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    /// The public part of the key, `obk_<public_id>_...`.
    pub public_id: String,
    /// What every copy of this key starts with, to recognise it in a config file.
    pub prefix: String,
    pub name: String,
    pub owner: Option<String>,
    /// Model names or globs; empty allows every routed model.
    pub allowed_models: Vec<String>,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i32>,
    pub token_budget: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub status: KeyStatus,
    /// After a rotation: when the previous secret stops working.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// The team whose limits and budgets this key also answers to.
    pub team_id: Option<Uuid>,
    /// Spend budget per `budget_period`, in US dollars.
    pub budget_usd: Option<f64>,
    /// The same budget in micro-dollars, as stored.
    pub budget_usd_micros: Option<i64>,
    /// The period `token_budget` and `budget_usd` reset on.
    pub budget_period: Period,
    /// This key's use in its current period.
    #[serde(flatten)]
    pub spend: Spend,
}

impl KeyView {
    /// The view of `k`, which has used `spend` in its current period.
    pub fn new(k: &ApiKey, spend: Spend) -> KeyView {
        let now = Utc::now();
        let status = if k.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if k.is_active(now) {
            KeyStatus::Active
        } else {
            KeyStatus::Expired
        };
        KeyView {
            id: k.id,
            prefix: format!("{}{}_", obleth_config::apikey::PREFIX, k.public_id),
            public_id: k.public_id.clone(),
            name: k.name.clone(),
            owner: k.owner.clone(),
            allowed_models: k.allowed_models.clone(),
            rpm_limit: k.rpm_limit,
            tpm_limit: k.tpm_limit,
            token_budget: k.token_budget,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            created_at: k.created_at,
            updated_at: k.updated_at,
            status,
            previous_secret_expires_at: k
                .previous_secret_hash
                .as_ref()
                .and(k.previous_expires_at)
                .filter(|at| *at > now),
            team_id: k.team_id,
            budget_usd: k.budget_usd_micros.map(budget::usd),
            budget_usd_micros: k.budget_usd_micros,
            budget_period: k.budget_period.into(),
            spend,
        }
    }

    /// The view of `k` with nothing spent, as when it was just created.
    pub fn fresh(k: &ApiKey) -> KeyView {
        KeyView::new(k, Spend::none(k.budget_period, Utc::now()))
    }
}

/// A key to create; its secret is generated.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Requests per minute, at least 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub rpm_limit: Option<i32>,
    /// Tokens per minute, at least 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub tpm_limit: Option<i32>,
    /// Tokens per `budget_period` (all time with `total`), not negative.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub token_budget: Option<i64>,
    /// Must be in the future.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// A team the key joins; it must exist. The stricter of the key's and
    /// the team's limits and budgets applies.
    #[serde(default)]
    pub team_id: Option<Uuid>,
    /// Spend budget per `budget_period` in US dollars: not negative, at most
    /// 6 decimal places.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub budget_usd: Option<f64>,
    /// `day`, `week`, `month` or `total` (default: never resets).
    #[serde(default)]
    pub budget_period: Option<Period>,
}

impl CreateKey {
    pub fn into_new_key(self) -> Result<NewKey, AdminError> {
        validate::text("name", &self.name, 200)?;
        if let Some(owner) = &self.owner {
            validate::text("owner", owner, 200)?;
        }
        check_models(&self.allowed_models)?;
        validate::limits(self.rpm_limit, self.tpm_limit, self.token_budget)?;
        if let Some(at) = self.expires_at {
            if at <= Utc::now() {
                return Err(AdminError::validation(
                    "expires_at",
                    "must be in the future",
                ));
            }
        }
        Ok(NewKey {
            name: self.name,
            owner: self.owner,
            allowed_models: self.allowed_models,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            token_budget: self.token_budget,
            expires_at: self.expires_at,
            team_id: self.team_id,
            budget_usd_micros: budget::opt_usd_micros("budget_usd", self.budget_usd)?,
            budget_period: self.budget_period.unwrap_or_default().into(),
        })
    }
}

/// The answer to a create: the key and, this once, its full secret.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    pub key: KeyView,
    /// The whole key, `obk_<public_id>_<secret>`. Shown once; only its hash is stored.
    pub secret: String,
}

/// A partial update. A field left out is unchanged; `null` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<String>)]
    pub owner: Option<Option<String>>,
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
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
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// A team to join; `null` takes the key out of its team.
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<Uuid>)]
    pub team_id: Option<Option<Uuid>>,
    /// US dollars per period; `null` removes the spend budget.
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<f64>, minimum = 0, maximum = 1_000_000_000)]
    pub budget_usd: Option<Option<f64>>,
    #[serde(default)]
    pub budget_period: Option<Period>,
}

impl UpdateKey {
    pub fn into_update(self) -> Result<KeyUpdate, AdminError> {
        if let Some(name) = &self.name {
            validate::text("name", name, 200)?;
        }
        if let Some(Some(owner)) = &self.owner {
            validate::text("owner", owner, 200)?;
        }
        if let Some(models) = &self.allowed_models {
            check_models(models)?;
        }
        validate::limits(
            self.rpm_limit.flatten(),
            self.tpm_limit.flatten(),
            self.token_budget.flatten(),
        )?;
        Ok(KeyUpdate {
            name: self.name,
            owner: self.owner,
            allowed_models: self.allowed_models,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            token_budget: self.token_budget,
            expires_at: self.expires_at,
            team_id: self.team_id,
            budget_usd_micros: budget::patch_usd_micros("budget_usd", self.budget_usd)?,
            budget_period: self.budget_period.map(Into::into),
        })
    }
}

fn check_models(models: &[String]) -> Result<(), AdminError> {
    if models.len() > 256 {
        return Err(AdminError::validation(
            "allowed_models",
            "must list at most 256 models",
        ));
    }
    for (i, model) in models.iter().enumerate() {
        validate::model_name(&format!("allowed_models[{i}]"), model)?;
    }
    Ok(())
}

/// A rotation: a new secret now; the current one keeps working for the overlap.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the current secret stays valid, in seconds (0 to 2592000, 30 days).
    #[schema(maximum = 2_592_000)]
    pub overlap_secs: u64,
}

impl RotateKey {
    pub fn overlap(&self) -> Result<std::time::Duration, AdminError> {
        if self.overlap_secs > MAX_OVERLAP_SECS {
            return Err(AdminError::validation(
                "overlap_secs",
                format!("must be at most {MAX_OVERLAP_SECS} (30 days)"),
            ));
        }
        Ok(std::time::Duration::from_secs(self.overlap_secs))
    }
}

/// The answer to a rotation: the key and, this once, its new full secret.
#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    pub key: KeyView,
    /// The new whole key. Shown once; only its hash is stored.
    pub secret: String,
    /// When the previous secret stops working.
    pub previous_expires_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl fmt::Debug for RotatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatedKey")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .field("previous_expires_at", &self.previous_expires_at)
            .finish()
    }
}

/// A page of keys, ordered by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyPage {
    pub items: Vec<KeyView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<Uuid>,
}

/// Filters and paging of the key list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyListParams {
    /// Only keys of this owner.
    pub owner: Option<String>,
    /// Only keys whose name contains this, ignoring case.
    pub name_contains: Option<String>,
    /// `true`: only revoked keys; `false`: only keys not revoked.
    pub revoked: Option<bool>,
    /// Only the keys of this team.
    pub team_id: Option<Uuid>,
    /// The `next_after` of the previous page.
    pub after: Option<Uuid>,
    /// Page size, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_an_answer_never_shows_the_secret() {
        let key = ApiKey {
            id: Uuid::new_v4(),
            public_id: "abc123def456".to_owned(),
            secret_hash: vec![0; 32],
            name: "k".to_owned(),
            owner: None,
            allowed_models: vec![],
            rpm_limit: None,
            tpm_limit: None,
            token_budget: None,
            expires_at: None,
            revoked_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            previous_secret_hash: None,
            previous_expires_at: None,
            team_id: None,
            budget_usd_micros: None,
            budget_period: Default::default(),
        };
        let secret = "obk_abc123def456_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd".to_owned();
        let created = CreatedKey {
            key: KeyView::fresh(&key),
            secret: secret.clone(),
        };
        let rotated = RotatedKey {
            key: KeyView::fresh(&key),
            secret: secret.clone(),
            previous_expires_at: None,
        };
        for shown in [format!("{created:?}"), format!("{rotated:?}")] {
            assert!(
                !shown.contains("AbCdEf") && shown.contains("[redacted]"),
                "{shown}"
            );
        }
        let view = serde_json::to_string(&KeyView::fresh(&key)).unwrap();
        assert!(
            !view.contains("hash") && !view.contains("secret\""),
            "{view}"
        );
    }
}
