//! Who is calling: the `AuthorizedKey` extractor every proxy route takes. It
//! refuses late requests past the drain timeout, then requests in maintenance
//! mode, then resolves the key from `Authorization: Bearer` or `x-api-key`
//! against the key store. While the store is complete (warmed and the change
//! feed live) a key it does not hold is unknown and costs no query; otherwise
//! a miss is looked up in the database, coalesced and rate-limited.

use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use obleth_config::apikey;
use sqlx::PgPool;

use crate::error::ApiError;
use crate::keycache::{Hash, KeyRecord, Lookup};
use crate::misses::Outcome;
use crate::policy;
use crate::proxy::reject;
use crate::state::{AppState, InFlightGuard};

/// Longest a database lookup of one key may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A request past the drain and maintenance checks with a valid, active key.
/// It holds the request's in-flight guard from the moment it arrived.
#[derive(Debug)]
pub struct AuthorizedKey {
    pub key: KeyRecord,
    pub started: Instant,
    pub guard: InFlightGuard,
}

/// The fixed `route` label of a proxy path.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat_completions",
        "/v1/completions" => "completions",
        "/v1/embeddings" => "embeddings",
        "/v1/models" => "models",
        "/v1/messages" => "messages",
        "/v1/responses" => "responses",
        _ => "other",
    }
}

impl FromRequestParts<AppState> for AuthorizedKey {
    /// The refusal, already counted and in OpenAI's error shape.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let started = Instant::now();
        let guard = InFlightGuard::enter(state);
        let route = route_label(
            parts
                .extensions
                .get::<MatchedPath>()
                .map_or(parts.uri.path(), MatchedPath::as_str),
        );
        // While draining the gateway keeps serving: load balancers may still
        // send requests until they see /readyz fail. Only past the drain
        // timeout, when open streams are being ended, is a late request
        // refused (retryable).
        if state.cut_streams.is_cancelled() {
            return Err(reject(state, route, ApiError::Draining));
        }
        if let Some(m) = state.maintenance() {
            return Err(reject(
                state,
                route,
                ApiError::Maintenance {
                    message: m.message,
                    retry_after_secs: m.retry_after_secs,
                },
            ));
        }
        match authenticate(state, &parts.headers).await {
            Ok(key) => Ok(AuthorizedKey {
                key,
                started,
                guard,
            }),
            Err(e) => Err(reject(state, route, e)),
        }
    }
}

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
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<KeyRecord, ApiError> {
    let presented = presented_key(headers)?;
    let parsed = apikey::parse(presented).map_err(|_| ApiError::InvalidKey)?;
    let hash: Hash = apikey::hash_secret(parsed.secret);
    let now = Utc::now();
    // A hit is the key this hash authenticates at `now` (the store matched
    // the whole hash, and a previous secret only within its overlap).
    let key = match state.keys.get_at(&hash, now) {
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
            resolve_miss(state, hash).await?
        }
    };
    if !key.public_id_is(parsed.public_id) {
        return Err(ApiError::InvalidKey);
    }
    policy::check_key(&key, now)?;
    Ok(key)
}

/// A key the store does not hold. In embedded mode, or while the store is
/// complete, it is unknown: no query. Otherwise one database lookup per hash
/// at a time, within the global rate; past the rate the answer is 503
/// `key_store_unavailable` (retryable), not 401, since the key may be valid.
async fn resolve_miss(state: &AppState, hash: Hash) -> Result<KeyRecord, ApiError> {
    let Some(pool) = &state.pool else {
        return Err(ApiError::InvalidKey);
    };
    if state.keys.is_complete() {
        return Err(ApiError::InvalidKey);
    }
    let outcome = state
        .keys
        .misses()
        .lookup(hash, || lookup(state, pool, hash))
        .await;
    match outcome {
        Ok(Outcome::Found(key)) => Ok(key),
        Ok(Outcome::Unknown) => Err(ApiError::InvalidKey),
        Ok(Outcome::Failed) => Err(ApiError::KeyStoreUnavailable),
        Err(_) => {
            state.metrics.key_lookups_throttled.inc();
            Err(ApiError::KeyStoreUnavailable)
        }
    }
}

/// One database lookup; a found key is stored, an unknown hash remembered.
/// A key found by a previous secret whose overlap has ended is stored but
/// does not authenticate.
async fn lookup(state: &AppState, pool: &PgPool, hash: Hash) -> Outcome {
    // What the store held when the read started: a change the feed applies
    // meanwhile is newer than what the read answers.
    let since = state.keys.generation();
    let query = obleth_config::db::keys::key_by_hash(pool, &hash);
    let found = match tokio::time::timeout(LOOKUP_TIMEOUT, query).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("timed out after {} s", LOOKUP_TIMEOUT.as_secs())),
    };
    let (result, outcome) = match found {
        Ok(Some(key)) => {
            let now = Utc::now();
            let authenticates = apikey::hashes_equal(&key.secret_hash, &hash)
                || key.previous_secret_valid(&hash, now);
            match state.keys.store_looked_up(key, since) {
                Some(record) if authenticates => ("found", Outcome::Found(record)),
                _ => ("found", Outcome::Unknown),
            }
        }
        Ok(None) => {
            state.keys.remember_unknown(hash, since);
            ("unknown", Outcome::Unknown)
        }
        Err(e) => {
            tracing::warn!(error = %e, "Key lookup failed; database unreachable?");
            ("error", Outcome::Failed)
        }
    };
    state
        .metrics
        .key_db_lookups
        .with_label_values(&[result])
        .inc();
    outcome
}
