//! Who is calling: the key from `Authorization: Bearer` or `x-api-key`, checked
//! against the cache (and on a miss, once, against the database).

use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::Utc;
use obleth_config::apikey;
use obleth_config::model::ApiKey;

use crate::error::ApiError;
use crate::keycache::{Hash, Lookup};
use crate::policy;
use crate::state::AppState;

/// The presented key, as sent.
fn presented_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ApiError::InvalidKey)?;
        let (scheme, token) = value.split_once(' ').ok_or(ApiError::InvalidKey)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::InvalidKey);
        }
        return Ok(token.trim());
    }
    if let Some(value) = headers.get("x-api-key") {
        return value
            .to_str()
            .map(str::trim)
            .map_err(|_| ApiError::InvalidKey);
    }
    Err(ApiError::MissingKey)
}

/// Resolves and checks the caller's key: unknown keys are 401, revoked or
/// expired ones 403.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<ApiKey>, ApiError> {
    let presented = presented_key(headers)?;
    let parsed = apikey::parse(presented).map_err(|_| ApiError::InvalidKey)?;
    let hash: Hash = apikey::hash_secret(parsed.secret);
    let key = match state.keys.get(&hash) {
        Lookup::Hit(key) => {
            state.metrics.cache_hits.inc();
            key
        }
        Lookup::KnownUnknown => {
            state.metrics.cache_hits.inc();
            return Err(ApiError::InvalidKey);
        }
        Lookup::Miss => {
            state.metrics.cache_misses.inc();
            let Some(pool) = &state.pool else {
                state.keys.remember_unknown(hash);
                return Err(ApiError::InvalidKey);
            };
            let lookup = obleth_config::db::keys::key_by_hash(pool, &hash);
            let found = match tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await
            {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("timed out after 2 s".to_owned()),
            };
            match found {
                Ok(Some(key)) => {
                    state
                        .metrics
                        .key_db_lookups
                        .with_label_values(&["found"])
                        .inc();
                    state.keys.insert(key.clone());
                    Arc::new(key)
                }
                Ok(None) => {
                    state
                        .metrics
                        .key_db_lookups
                        .with_label_values(&["unknown"])
                        .inc();
                    state.keys.remember_unknown(hash);
                    return Err(ApiError::InvalidKey);
                }
                Err(e) => {
                    state
                        .metrics
                        .key_db_lookups
                        .with_label_values(&["error"])
                        .inc();
                    tracing::warn!(error = %e, "Key lookup failed; database unreachable?");
                    return Err(ApiError::KeyStoreUnavailable);
                }
            }
        }
    };
    let now = Utc::now();
    let secret_ok =
        apikey::hashes_equal(&key.secret_hash, &hash) || key.previous_secret_valid(&hash, now);
    if key.public_id != parsed.public_id || !secret_ok {
        return Err(ApiError::InvalidKey);
    }
    policy::check_key(&key, now)?;
    Ok(key)
}
