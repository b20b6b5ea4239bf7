//! The compact key record: only what auth, policy, limits and usage read on
//! the request path, in fixed-size fields. It owns no heap memory of its own;
//! an allowed-models list is shared by every key with the same list.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use obleth_config::apikey::PUBLIC_ID_LEN;
use obleth_config::db::key_store::KeyColumns;
use obleth_config::glob::glob_match;
use obleth_config::model::BudgetPeriod;
use uuid::Uuid;

/// An absent `i32` limit. The database refuses limits below 1, so no real
/// limit is this value.
const NO_I32: i32 = i32::MIN;
/// An absent `i64` budget (the database refuses negative budgets).
const NO_I64: i64 = i64::MIN;
/// An expiry that never comes.
const NEVER: i64 = i64::MAX;

/// A key's allowed models: names or globs (`gpt-4o*`). Identical lists are
/// one allocation (see `interner`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ModelList(Box<[Box<str>]>);

impl ModelList {
    pub fn new(models: &[String]) -> Self {
        ModelList(models.iter().map(|m| Box::from(m.as_str())).collect())
    }

    /// Whether one of the entries matches `model` (`*` and `?` are wildcards).
    pub fn allows(&self, model: &str) -> bool {
        self.0.iter().any(|p| glob_match(p, model))
    }

    /// Whether the list is exactly `models`.
    pub fn is(&self, models: &[String]) -> bool {
        self.0.len() == models.len() && self.0.iter().zip(models).all(|(a, b)| **a == **b)
    }
}

/// What the store keeps of a key, and what a request carries of it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: Uuid,
    /// Nil: no team (teams' ids are random, never nil).
    team: Uuid,
    /// The public id's bytes; all zero for a stored id of another length,
    /// which no presented key (`[a-z0-9]{12}`) can match.
    public_id: [u8; PUBLIC_ID_LEN],
    rpm_limit: i32,
    tpm_limit: i32,
    token_budget: i64,
    budget_usd_micros: i64,
    /// Microseconds since the Unix epoch (the database's precision).
    expires_at: i64,
    /// None: every routed model.
    models: Option<Arc<ModelList>>,
    pub budget_period: BudgetPeriod,
    revoked: bool,
}

fn opt32(v: Option<i32>) -> i32 {
    v.unwrap_or(NO_I32)
}

fn opt64(v: Option<i64>) -> i64 {
    v.unwrap_or(NO_I64)
}

fn some32(v: i32) -> Option<i32> {
    (v != NO_I32).then_some(v)
}

fn some64(v: i64) -> Option<i64> {
    (v != NO_I64).then_some(v)
}

/// `at` in microseconds since the Unix epoch.
pub fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

impl KeyRecord {
    /// The record of `c`, holding `models` (already interned).
    pub fn new(c: &KeyColumns<'_>, models: Option<Arc<ModelList>>) -> Self {
        let public_id = <[u8; PUBLIC_ID_LEN]>::try_from(c.public_id.as_bytes()).unwrap_or_default();
        KeyRecord {
            id: c.id,
            team: c.team_id.unwrap_or_default(),
            public_id,
            rpm_limit: opt32(c.rpm_limit),
            tpm_limit: opt32(c.tpm_limit),
            token_budget: opt64(c.token_budget),
            budget_usd_micros: opt64(c.budget_usd_micros),
            expires_at: c.expires_at.map_or(NEVER, micros),
            models,
            budget_period: c.budget_period,
            revoked: c.revoked,
        }
    }

    /// The key's public id (not a secret: it names the key in the admin
    /// API and in logs); `None` for a stored id of another length.
    pub fn public_id(&self) -> Option<&str> {
        if self.public_id == [0; PUBLIC_ID_LEN] {
            return None;
        }
        std::str::from_utf8(&self.public_id).ok()
    }

    /// Whether `presented` is this key's public id.
    pub fn public_id_is(&self, presented: &str) -> bool {
        self.public_id != [0; PUBLIC_ID_LEN] && self.public_id == presented.as_bytes()
    }

    pub fn team_id(&self) -> Option<Uuid> {
        (!self.team.is_nil()).then_some(self.team)
    }

    pub fn rpm_limit(&self) -> Option<i32> {
        some32(self.rpm_limit)
    }

    pub fn tpm_limit(&self) -> Option<i32> {
        some32(self.tpm_limit)
    }

    pub fn token_budget(&self) -> Option<i64> {
        some64(self.token_budget)
    }

    pub fn budget_usd_micros(&self) -> Option<i64> {
        some64(self.budget_usd_micros)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked
    }

    /// Expired at `now`: a key expires at its `expires_at`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= micros(now)
    }

    /// Whether the key may use `model`: no list allows every model.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.allows(model))
    }

    pub(super) fn set_models(&mut self, models: Option<Arc<ModelList>>) {
        self.models = models;
    }

    /// The shared allowed-models list, if the key has one.
    pub fn models(&self) -> Option<&Arc<ModelList>> {
        self.models.as_ref()
    }
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("public_id", &String::from_utf8_lossy(&self.public_id))
            .field("team_id", &self.team_id())
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The columns of a plain key: no limits, no list, no team.
    pub(crate) fn columns(id: Uuid, public_id: &str, hash: &[u8]) -> KeyColumns<'static> {
        let public_id: &'static str = Box::leak(public_id.to_owned().into_boxed_str());
        let hash: &'static [u8] = Box::leak(hash.to_vec().into_boxed_slice());
        KeyColumns {
            id,
            public_id,
            secret_hash: hash,
            allowed_models: Vec::new(),
            rpm_limit: None,
            tpm_limit: None,
            token_budget: None,
            expires_at: None,
            revoked: false,
            previous_secret_hash: None,
            previous_expires_at: None,
            team_id: None,
            budget_usd_micros: None,
            budget_period: BudgetPeriod::Total,
        }
    }

    #[test]
    fn a_record_stays_small() {
        // Three 16-byte ids and limits in 88 bytes; the store adds the
        // 32-byte hash and two 4-byte index entries.
        assert!(std::mem::size_of::<KeyRecord>() <= 96);
    }

    #[test]
    fn absent_and_present_values_round_trip() {
        let team = Uuid::new_v4();
        let expires = Utc::now();
        let mut c = columns(Uuid::new_v4(), "abc123def456", &[1; 32]);
        c.rpm_limit = Some(5);
        c.token_budget = Some(0);
        c.team_id = Some(team);
        c.expires_at = Some(expires);
        let k = KeyRecord::new(&c, None);
        assert_eq!(
            (k.rpm_limit(), k.tpm_limit(), k.token_budget()),
            (Some(5), None, Some(0))
        );
        assert_eq!((k.budget_usd_micros(), k.team_id()), (None, Some(team)));
        assert!(k.public_id_is("abc123def456") && !k.public_id_is("abc123def457"));
        assert!(!k.is_expired(expires - chrono::Duration::microseconds(1)));
        assert!(k.is_expired(expires));
        assert!(k.allows_model("anything"));
        let plain = KeyRecord::new(&columns(Uuid::new_v4(), "x", &[1; 32]), None);
        assert!(!plain.is_expired(Utc::now()) && plain.team_id().is_none());
        assert!(
            !plain.public_id_is("x"),
            "a public id of another length never matches"
        );
    }
}
