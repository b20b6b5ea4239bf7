//! The OpenAPI 3 document, generated from the handlers' annotations and served
//! at `/api/v1/openapi.json`. A test compares it with the router's route table,
//! so a route without documentation fails the build.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::api::{fleet, keys, maintenance, prices, providers, routes, teams, usage};
use crate::ops;

/// The security scheme every protected operation names.
pub const SECURITY_SCHEME: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "obleth admin API",
        description = "Keys, teams, prices, providers, routes, usage, the fleet and maintenance mode of an obleth deployment. \
                       Every route under /api/v1 except health and this document needs `Authorization: Bearer <admin token>`. \
                       Errors answer {\"error\":{\"code\",\"message\",\"field\"}}."
    ),
    paths(
        ops::healthz,
        ops::readyz,
        ops::health,
        ops::version,
        ops::metrics,
        openapi_json,
        keys::create_key,
        keys::list_keys,
        keys::get_key,
        keys::update_key,
        keys::revoke_key,
        keys::rotate_key,
        keys::delete_key,
        teams::create_team,
        teams::list_teams,
        teams::get_team,
        teams::update_team,
        teams::delete_team,
        prices::create_price,
        prices::list_prices,
        prices::unpriced,
        prices::get_price,
        prices::update_price,
        prices::delete_price,
        providers::create_provider,
        providers::list_providers,
        providers::get_provider,
        providers::update_provider,
        providers::delete_provider,
        routes::create_route,
        routes::list_routes,
        routes::get_route,
        routes::replace_targets,
        routes::delete_route,
        usage::totals,
        usage::records,
        fleet::fleet,
        maintenance::get_maintenance,
        maintenance::set_maintenance,
    ),
    modifiers(&BearerToken, &CommonErrors),
    tags(
        (name = "keys", description = "API keys: the secret is shown once, at create and rotate"),
        (name = "teams", description = "Teams: limits and budgets their keys share"),
        (name = "prices", description = "Prices per model, in US dollars per million tokens"),
        (name = "providers", description = "Upstream providers"),
        (name = "routes", description = "Model routes and their providers"),
        (name = "usage", description = "Usage totals and records"),
        (name = "fleet", description = "Running gateways and admins"),
        (name = "maintenance", description = "Maintenance mode of every gateway"),
        (name = "ops", description = "Probes, version and metrics; no token needed"),
    )
)]
struct ApiDoc;

/// Adds the bearer-token scheme the protected operations refer to.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin token from auth.tokens or auth.token_file"))
                    .build(),
            ),
        );
    }
}

/// Adds the answers every operation of a kind can give, so the annotations
/// list only what is particular to each: 401 and 503 on token routes; 400,
/// 408, 413 and 415 where there is a body; 422 where there are parameters or a body.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut Document) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                add_common_errors(op);
            }
        }
    }
}

fn add_common_errors(op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = op.request_body.is_some();
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let mut add = |status: &str, description: &str| {
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(response));
    };
    if secured {
        add("401", "No valid admin token (`unauthorized`)");
        add("503", "The schema is not ready yet (`not_ready`)");
    }
    if has_body {
        add("400", "The body is not JSON (`invalid_json`)");
        add(
            "408",
            "The body did not arrive within `server.body_timeout_secs` (`body_timeout`)",
        );
        add(
            "413",
            "The body is over `server.max_body_bytes` (`payload_too_large`)",
        );
        add(
            "415",
            "The body is not `application/json` (`unsupported_media_type`)",
        );
    }
    if has_body || has_params {
        add(
            "422",
            "A value is not acceptable; `field` names it (`validation_failed`)",
        );
    }
}

/// The document, built once.
pub fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// This OpenAPI 3 document.
#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json"))
)]
pub async fn openapi_json() -> Json<&'static Document> {
    Json(document())
}
