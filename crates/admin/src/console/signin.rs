//! Signing in and out, and the extractor every other console page takes.
//!
//! Sign-in takes an admin token (the same ones the API's bearer check
//! accepts, behind the same per-client throttle on failures) and answers a
//! session cookie: `HttpOnly`, `SameSite=Strict`, `Path=/console`, a
//! `Max-Age` of `console.session_ttl_secs`, and `Secure` as
//! `console.secure_cookie` says. The token itself is never stored, logged or
//! echoed back into the form.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use maud::{html, Markup};
use serde::Deserialize;
use tracing::{info, warn};

use super::layout::{notice, page, Nav};
use super::session::{Session, SessionKeys, COOKIE as COOKIE_NAME};
use super::SIGN_IN;
use crate::settings::SecureCookie;
use crate::state::AppState;
use crate::throttle;

/// A request with a valid session. Without one, a page answers a redirect
/// to the sign-in page (an htmx request: 401 with `HX-Redirect`, so the
/// whole page goes there rather than a fragment).
#[derive(Debug, Clone)]
pub struct SignedIn(pub Session);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match session_of(&parts.headers, state) {
            Some(session) => Ok(SignedIn(session)),
            None if parts.headers.contains_key("hx-request") => Err((
                StatusCode::UNAUTHORIZED,
                [("hx-redirect", HeaderValue::from_static(SIGN_IN))],
            )
                .into_response()),
            None => Err(redirect(SIGN_IN)),
        }
    }
}

/// The valid session among the request's cookies, if any.
pub fn session_of(headers: &HeaderMap, state: &AppState) -> Option<Session> {
    let keys = SessionKeys::new(&state.tokens);
    let now = chrono::Utc::now().timestamp();
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE_NAME)
        .find_map(|(_, value)| keys.verify(value, now))
}

/// A `303 See Other` to `to`.
pub fn redirect(to: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(LOCATION, HeaderValue::from_static(to))],
    )
        .into_response()
}

/// `GET /console/sign-in`.
pub async fn sign_in_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if session_of(&headers, &state).is_some() {
        return redirect(super::HOME);
    }
    form(None).into_response()
}

fn form(problem: Option<&str>) -> Markup {
    page(
        "Sign in",
        Nav::None,
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(problem) = problem { (notice("error", problem)) }
            form.signin method="post" action=(SIGN_IN) {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    )
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
}

/// `POST /console/sign-in`: the token in, a session cookie out.
pub async fn sign_in(State(state): State<AppState>, caller: Caller, body: Bytes) -> Response {
    let Caller { headers, peer } = caller;
    let client = throttle::client_key(peer);
    if let Some(retry_after) = state.auth_throttle.blocked(client) {
        state.metrics.auth_throttled.inc();
        let message = format!(
            "too many failed sign-ins from this address; retry in {} s",
            retry_after.as_secs()
        );
        let mut response = (StatusCode::TOO_MANY_REQUESTS, form(Some(&message))).into_response();
        if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().to_string()) {
            response.headers_mut().insert("retry-after", v);
        }
        return response;
    }
    let token = serde_urlencoded::from_bytes::<SignInForm>(&body)
        .map(|f| f.token)
        .unwrap_or_default();
    let Some(position) = state.tokens.position(token.trim()) else {
        state.metrics.auth_failures.inc();
        state.auth_throttle.record_failure(client);
        if let Some(seen) = state.failure_log.hit() {
            warn!(
                client = ?peer,
                token_sent = !token.is_empty(),
                suppressed = seen - 1,
                "Console sign-in refused: wrong token."
            );
        }
        return (
            StatusCode::UNAUTHORIZED,
            form(Some("that is not an admin token")),
        )
            .into_response();
    };
    let ttl = state.settings.console.session_ttl_secs;
    let expires = chrono::Utc::now().timestamp() + ttl as i64;
    let keys = SessionKeys::new(&state.tokens);
    let Some((_, value)) = keys.open(position, expires) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            form(Some("internal error")),
        )
            .into_response();
    };
    info!(client = ?peer, "Console session opened.");
    let cookie = format!(
        "{COOKIE_NAME}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={ttl}{}",
        secure_attr(&state, &headers)
    );
    with_cookie(redirect(super::HOME), &cookie)
}

/// `POST /console/sign-out`: clears the cookie. Checked like every form,
/// so another site cannot sign an operator out.
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    super::form::CsrfForm(_, _): super::form::CsrfForm<serde::de::IgnoredAny>,
) -> Response {
    info!("Console session closed.");
    let cookie = format!(
        "{COOKIE_NAME}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure_attr(&state, &headers)
    );
    with_cookie(redirect(SIGN_IN), &cookie)
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

/// `; Secure` when the cookie must only travel over TLS.
fn secure_attr(state: &AppState, headers: &HeaderMap) -> &'static str {
    let secure = match state.settings.console.secure_cookie {
        SecureCookie::Always => true,
        SecureCookie::Never => false,
        SecureCookie::Auto => came_over_tls(headers),
    };
    if secure {
        "; Secure"
    } else {
        ""
    }
}

/// Whether a TLS-terminating proxy says the request came over TLS. Trusting
/// the header is safe here: all it can do is make the cookie stricter.
fn came_over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The headers and the peer address, without the body.
#[derive(Debug)]
pub struct Caller {
    headers: HeaderMap,
    peer: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            headers: parts.headers.clone(),
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_https_forwarded_proto_counts_as_tls() {
        let cases = [
            (Some("https"), true),
            (Some("HTTPS"), true),
            (Some("https, http"), true),
            (Some("http"), false),
            (Some("http, https"), false),
            (None, false),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert("x-forwarded-proto", HeaderValue::from_static(v));
            }
            assert_eq!(came_over_tls(&headers), expected, "{value:?}");
        }
    }
}
