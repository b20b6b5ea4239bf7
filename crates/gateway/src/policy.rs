//! Per-key policy that needs no counters: revocation, expiry and allowed models.

use chrono::{DateTime, Utc};
use obleth_config::glob::glob_match;
use obleth_config::model::ApiKey;

use crate::error::ApiError;

/// Refuses a key that is revoked or expired at `now`.
pub fn check_key(key: &ApiKey, now: DateTime<Utc>) -> Result<(), ApiError> {
    if key.revoked_at.is_some() {
        return Err(ApiError::KeyRevoked);
    }
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::KeyExpired);
    }
    Ok(())
}

/// Whether `key` may use `model`: an empty list allows every model, otherwise
/// one of the entries must match (`*` and `?` are wildcards).
pub fn model_allowed(key: &ApiKey, model: &str) -> bool {
    key.allowed_models.is_empty() || key.allowed_models.iter().any(|p| glob_match(p, model))
}
