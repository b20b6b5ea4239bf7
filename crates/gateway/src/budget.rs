//! Total token budgets per key: tokens recorded in the database (re-read
//! periodically, so other replicas' usage counts) plus what this replica has
//! served since.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use moka::sync::Cache;
use obleth_config::model::ApiKey;
use uuid::Uuid;

use crate::error::ApiError;

/// Tokens used per key, as far as this replica knows.
#[derive(Debug, Clone)]
pub struct Budgets {
    used: Cache<Uuid, Arc<AtomicI64>>,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            used: Cache::builder().max_capacity(2_000_000).build(),
        }
    }
}

impl Budgets {
    /// Refuses a key whose budget is spent.
    pub fn check(&self, key: &ApiKey) -> Result<(), ApiError> {
        let Some(budget) = key.token_budget else {
            return Ok(());
        };
        let used = self.used(&key.id);
        if used >= budget {
            return Err(ApiError::BudgetExhausted { used, budget });
        }
        Ok(())
    }

    pub fn used(&self, id: &Uuid) -> i64 {
        self.used.get(id).map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Adds tokens this replica just served.
    pub fn add(&self, id: Uuid, tokens: i64) {
        if tokens > 0 {
            self.used
                .get_with(id, Default::default)
                .fetch_add(tokens, Ordering::Relaxed);
        }
    }

    /// Takes the database's totals. A total never moves backwards: tokens this
    /// replica served but has not written yet are not lost by a refresh.
    pub fn absorb(&self, totals: &HashMap<Uuid, i64>) {
        for (id, total) in totals {
            self.used
                .get_with(*id, Default::default)
                .fetch_max(*total, Ordering::Relaxed);
        }
    }
}
