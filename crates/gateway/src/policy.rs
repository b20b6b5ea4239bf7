//! Per-key policy that needs no counters: revocation, expiry and allowed models.

use chrono::{DateTime, Utc};

use crate::error::ApiError;
use crate::keycache::KeyRecord;

/// Refuses a key that is revoked or expired at `now`.
pub fn check_key(key: &KeyRecord, now: DateTime<Utc>) -> Result<(), ApiError> {
    if key.is_revoked() {
        return Err(ApiError::KeyRevoked);
    }
    if key.is_expired(now) {
        return Err(ApiError::KeyExpired);
    }
    Ok(())
}

/// Whether `key` may use `model`: a key without a list may use every model,
/// otherwise one of the entries must match (`*` and `?` are wildcards).
pub fn model_allowed(key: &KeyRecord, model: &str) -> bool {
    key.allows_model(model)
}
