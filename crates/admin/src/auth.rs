//! The bearer-token check every API route passes, except the public ones the
//! router lists, behind the per-client throttle on wrong tokens.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;

use crate::error::AdminError;
use crate::state::AppState;
use crate::throttle;

/// Lets the request through when it carries a valid admin token; otherwise 401
/// with the same body whatever was wrong. A client that has sent too many
/// missing or wrong tokens lately gets 429 with `Retry-After` before its token
/// is looked at, so guessing cannot go on at full speed (see
/// [`crate::throttle`]). Warnings are limited to one an interval, each with
/// the count held back since the last.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let client = throttle::client_key(peer);
    if let Some(retry_after) = state.auth_throttle.blocked(client) {
        state.metrics.auth_throttled.inc();
        if let Some(seen) = state.throttled_log.hit() {
            warn!(
                client = ?peer,
                retry_after_secs = retry_after.as_secs(),
                suppressed = seen - 1,
                "Admin client throttled after repeated token failures."
            );
        }
        return AdminError::TooManyAuthFailures {
            retry_after_secs: retry_after.as_secs(),
        }
        .into_response();
    }
    match bearer(request.headers()) {
        Some(token) if state.tokens.verify(token) => next.run(request).await,
        presented => {
            state.metrics.auth_failures.inc();
            state.auth_throttle.record_failure(client);
            if let Some(seen) = state.failure_log.hit() {
                // Never the token itself: a near miss may be a real one mistyped.
                warn!(
                    client = ?peer,
                    path = request.uri().path(),
                    token_sent = presented.is_some(),
                    suppressed = seen - 1,
                    "Admin request refused: missing or wrong token."
                );
            }
            AdminError::Unauthorized.into_response()
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// matched case-insensitively, as RFC 9110 asks.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Refuses API requests with 503 until the schema suits this build, so no
/// handler runs against tables it does not know.
pub async fn require_schema(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (ok, message) = state.health.schema();
    if ok {
        next.run(request).await
    } else {
        AdminError::NotReady(message).into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn bearer_reads_only_well_formed_headers() {
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (Some("Bearer abc"), Some("abc")),
            (Some("bearer abc"), Some("abc")),
            (Some("BEARER  abc "), Some("abc")),
            (Some("Basic abc"), None),
            (Some("Bearer"), None),
            (Some("Bearer "), None),
            (Some("abc"), None),
            (None, None),
        ];
        for (header, expected) in cases {
            let mut headers = HeaderMap::new();
            if let Some(h) = header {
                headers.insert(AUTHORIZATION, HeaderValue::from_str(h).unwrap());
            }
            assert_eq!(bearer(&headers), *expected, "{header:?}");
        }
    }
}
