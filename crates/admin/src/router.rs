//! The route table and the router built from it. Every route of the admin is
//! one [`RouteSpec`] here, and the router is built from this table alone, so
//! tests can hold the table against the OpenAPI document (no undocumented
//! route) and against the token check (no unprotected route).

use std::fmt;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Extension, Router};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, Span};

use crate::api::{fleet, keys, maintenance, prices, providers, routes as route_api, teams, usage};
use crate::error::AdminError;
use crate::extract::BodyLimit;
use crate::ops::{self, paths};
use crate::state::AppState;
use crate::{auth, metrics, openapi};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Probes, version, metrics and the OpenAPI document.
    Public,
    /// Needs an admin bearer token.
    Token,
}

/// One route: method, path template, access, and its handler.
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<AppState>,
}

impl fmt::Debug for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.path, self.access)
    }
}

fn spec<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> RouteSpec
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = match method {
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::PATCH => MethodFilter::PATCH,
        Method::DELETE => MethodFilter::DELETE,
        // Only the methods above and GET appear in the table below.
        _ => MethodFilter::GET,
    };
    RouteSpec {
        method,
        path,
        access,
        handler: on(filter, handler),
    }
}

/// Every route the admin serves.
pub fn routes() -> Vec<RouteSpec> {
    use Access::{Public, Token};
    let (get, post, put, patch, delete) = (
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    );
    vec![
        spec(get.clone(), paths::HEALTHZ, Public, ops::healthz),
        spec(get.clone(), paths::READYZ, Public, ops::readyz),
        spec(get.clone(), paths::HEALTH, Public, ops::health),
        spec(get.clone(), paths::VERSION, Public, ops::version),
        spec(get.clone(), paths::METRICS, Public, ops::metrics),
        spec(
            get.clone(),
            "/api/v1/openapi.json",
            Public,
            openapi::openapi_json,
        ),
        spec(post.clone(), "/api/v1/keys", Token, keys::create_key),
        spec(get.clone(), "/api/v1/keys", Token, keys::list_keys),
        spec(get.clone(), "/api/v1/keys/{id}", Token, keys::get_key),
        spec(patch.clone(), "/api/v1/keys/{id}", Token, keys::update_key),
        spec(delete.clone(), "/api/v1/keys/{id}", Token, keys::delete_key),
        spec(
            post.clone(),
            "/api/v1/keys/{id}/revoke",
            Token,
            keys::revoke_key,
        ),
        spec(
            post.clone(),
            "/api/v1/keys/{id}/rotate",
            Token,
            keys::rotate_key,
        ),
        spec(post.clone(), "/api/v1/teams", Token, teams::create_team),
        spec(get.clone(), "/api/v1/teams", Token, teams::list_teams),
        spec(get.clone(), "/api/v1/teams/{id}", Token, teams::get_team),
        spec(
            patch.clone(),
            "/api/v1/teams/{id}",
            Token,
            teams::update_team,
        ),
        spec(
            delete.clone(),
            "/api/v1/teams/{id}",
            Token,
            teams::delete_team,
        ),
        spec(post.clone(), "/api/v1/prices", Token, prices::create_price),
        spec(get.clone(), "/api/v1/prices", Token, prices::list_prices),
        spec(
            get.clone(),
            "/api/v1/prices/unpriced",
            Token,
            prices::unpriced,
        ),
        spec(get.clone(), "/api/v1/prices/{id}", Token, prices::get_price),
        spec(
            patch.clone(),
            "/api/v1/prices/{id}",
            Token,
            prices::update_price,
        ),
        spec(
            delete.clone(),
            "/api/v1/prices/{id}",
            Token,
            prices::delete_price,
        ),
        spec(
            post.clone(),
            "/api/v1/providers",
            Token,
            providers::create_provider,
        ),
        spec(
            get.clone(),
            "/api/v1/providers",
            Token,
            providers::list_providers,
        ),
        spec(
            get.clone(),
            "/api/v1/providers/{name}",
            Token,
            providers::get_provider,
        ),
        spec(
            patch.clone(),
            "/api/v1/providers/{name}",
            Token,
            providers::update_provider,
        ),
        spec(
            delete.clone(),
            "/api/v1/providers/{name}",
            Token,
            providers::delete_provider,
        ),
        spec(
            post.clone(),
            "/api/v1/routes",
            Token,
            route_api::create_route,
        ),
        spec(get.clone(), "/api/v1/routes", Token, route_api::list_routes),
        spec(
            get.clone(),
            "/api/v1/routes/{id}",
            Token,
            route_api::get_route,
        ),
        spec(
            put.clone(),
            "/api/v1/routes/{id}/targets",
            Token,
            route_api::replace_targets,
        ),
        spec(
            delete,
            "/api/v1/routes/{id}",
            Token,
            route_api::delete_route,
        ),
        spec(get.clone(), "/api/v1/usage/totals", Token, usage::totals),
        spec(get.clone(), "/api/v1/usage/records", Token, usage::records),
        spec(get.clone(), "/api/v1/fleet", Token, fleet::fleet),
        spec(
            get,
            "/api/v1/maintenance",
            Token,
            maintenance::get_maintenance,
        ),
        spec(
            put,
            "/api/v1/maintenance",
            Token,
            maintenance::set_maintenance,
        ),
    ]
}

/// The whole admin: the table's routes with their layers.
///
/// Layers, from the outside in: the trace span and the metrics see every
/// request, refused ones included, under its route template; the body limit
/// bounds what any extractor reads; then, on token routes only, the token check
/// runs before the schema gate, so a caller without a token learns nothing,
/// not even whether the admin is ready.
pub fn router(state: AppState) -> Router {
    let limit = state.settings.server.max_body_bytes;
    let mut public = Router::new();
    let mut protected = Router::new();
    for route in routes() {
        match route.access {
            Access::Public => public = public.route(route.path, route.handler),
            Access::Token => protected = protected.route(route.path, route.handler),
        }
    }
    // route_layer: only matched routes, so an unknown path is a plain 404.
    // The layer added last runs first.
    let protected = protected
        .route_layer(from_fn_with_state(state.clone(), auth::require_schema))
        .route_layer(from_fn_with_state(state.clone(), auth::require_token));
    // The console checks its own session cookie; the bearer check and the
    // schema gate stay on the API (a console page without the schema answers
    // its database error as a page).
    let console = if state.settings.console.enabled {
        crate::console::router()
    } else {
        Router::new()
    };
    public
        .merge(protected)
        .merge(console)
        .fallback(|| async { AdminError::NoSuchPath })
        .method_not_allowed_fallback(|| async { AdminError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .layer(
            // A 503 from /readyz is an answer, not a failure; real failures
            // are logged where they happen, whole.
            TraceLayer::new_for_http()
                .make_span_with(span)
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// The request span, named by route template rather than raw path.
fn span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!("request", method = %request.method(), route)
}
