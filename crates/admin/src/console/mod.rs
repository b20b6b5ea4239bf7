//! The operator console at `/console`: server-rendered pages (maud) with
//! htmx for the parts that refresh, over the same functions as the JSON API.
//! See docs/console.md.
//!
//! Every page but sign-in needs a session ([`signin::SignedIn`]); every form
//! carries its session's CSRF token ([`form::CsrfForm`]); every answer
//! carries a strict Content-Security-Policy (no inline script or style, only
//! this origin), so the static files below are all the script a page runs.

pub mod catalog;
pub mod chart;
pub mod form;
pub mod keys;
pub mod layout;
pub mod rollout;
pub mod session;
pub mod signin;
pub mod usage;

use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

/// Where a request without a session is sent.
pub const SIGN_IN: &str = "/console/sign-in";
/// Where `/console` and a fresh sign-in go.
pub const HOME: &str = "/console/rollout";

/// The policy every console answer carries: this origin only, no inline
/// script or style, no framing, forms only to this origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// The console's routes; the caller merges them into the admin's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { signin::redirect(HOME) }))
        .route(SIGN_IN, get(signin::sign_in_page).post(signin::sign_in))
        .route("/console/sign-out", post(signin::sign_out))
        .route("/console/rollout", get(rollout::show))
        .route("/console/rollout/live", get(rollout::fragment))
        .route("/console/maintenance", post(rollout::set_maintenance))
        .route("/console/keys", get(keys::show).post(keys::create))
        .route("/console/keys/{id}/revoke", post(keys::revoke))
        .route("/console/keys/{id}/rotate", post(keys::rotate))
        .route("/console/catalog", get(catalog::show))
        .route("/console/catalog/providers", post(catalog::create_provider))
        .route(
            "/console/catalog/providers/{name}",
            post(catalog::update_provider),
        )
        .route(
            "/console/catalog/providers/{name}/delete",
            post(catalog::delete_provider),
        )
        .route("/console/catalog/routes", post(catalog::create_route))
        .route(
            "/console/catalog/routes/{id}/targets",
            post(catalog::replace_targets),
        )
        .route(
            "/console/catalog/routes/{id}/delete",
            post(catalog::delete_route),
        )
        .route("/console/usage", get(usage::show))
        .route("/console/static/{file}", get(asset))
        .layer(from_fn(same_origin_posts))
        .layer(from_fn(security_headers))
}

/// Adds the CSP and its companions to every console answer; pages are never
/// cached, since one may hold a secret shown once.
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/console/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let fixed = [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    if !is_asset {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Refuses a state-changing request another site made: browsers say so in
/// `Sec-Fetch-Site`. This also covers sign-in, which has no session to hold
/// a CSRF token yet; forms with a session are checked by their token too.
async fn same_origin_posts(request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    let site = request
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    if !safe && site.is_some_and(|s| s != "same-origin") {
        return form::refuse(
            StatusCode::FORBIDDEN,
            "this form did not come from the console",
        );
    }
    next.run(request).await
}

/// The console's static files, compiled into the binary.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &'static str) = match file.as_str() {
        "console.css" => (
            include_bytes!("static/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_bytes!("static/console.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx.min.js" => (
            include_bytes!("static/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx.LICENSE" => (
            include_bytes!("static/htmx.LICENSE"),
            "text/plain; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}
