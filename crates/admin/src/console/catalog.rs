//! The providers and routes page: what `GET /api/v1/providers` and
//! `GET /api/v1/routes` answer, through the same functions, and a form per
//! provider that changes its base URL, credential reference and timeout
//! through the function `PATCH /api/v1/providers/{name}` calls, so its
//! checks (syntax and the `[egress]` policy) and messages are the API's. A
//! provider's credential is shown only as its reference (`env:NAME` or
//! `file:/path`), as the API shows it; the credential itself is never read
//! here.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::form::CsrfForm;
use super::layout::{csrf_field, notice, page, ConsoleError, Nav};
use super::session::Session;
use super::signin::SignedIn;
use crate::api::providers::{ProviderList, UpdateProvider};
use crate::api::routes::RouteList;
use crate::api::{providers, routes};
use crate::error::AdminError;
use crate::state::AppState;

/// `GET /console/catalog`.
pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
) -> Result<Markup, ConsoleError> {
    let providers = providers::list(&state).await?;
    let routes = routes::list(&state).await?;
    Ok(render(&session, &providers, &routes, None))
}

/// The provider form as posted; an empty credential clears it. Its `Debug`
/// leaves the credential reference out: a malformed one may be a pasted
/// credential.
#[derive(Deserialize)]
pub struct ProviderForm {
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    credential_ref: String,
    #[serde(default)]
    timeout_ms: String,
}

impl std::fmt::Debug for ProviderForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderForm")
            .field("base_url", &self.base_url)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// `POST /console/catalog/providers/{name}`.
pub async fn update_provider(
    State(state): State<AppState>,
    Path(name): Path<String>,
    CsrfForm(session, form): CsrfForm<ProviderForm>,
) -> Result<Response, ConsoleError> {
    let timeout_ms = match form.timeout_ms.trim() {
        "" => Ok(None),
        t => t
            .parse::<i32>()
            .map(Some)
            .map_err(|_| AdminError::validation("timeout_ms", "must be a whole number")),
    };
    let updated = match timeout_ms {
        Ok(timeout_ms) => {
            let credential = form.credential_ref.trim();
            let body = UpdateProvider {
                base_url: Some(form.base_url.trim().to_owned()),
                credential_ref: Some((!credential.is_empty()).then(|| credential.to_owned())),
                timeout_ms,
                ..UpdateProvider::default()
            };
            providers::update(&state, &name, body).await
        }
        Err(e) => Err(e),
    };
    let (status, flash) = match updated {
        Ok(p) => (
            StatusCode::OK,
            notice("ok", &format!("Provider “{}” saved.", p.name)),
        ),
        Err(e) if e.status().is_client_error() => (e.status(), notice("error", &e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let providers = providers::list(&state).await?;
    let routes = routes::list(&state).await?;
    Ok((status, render(&session, &providers, &routes, Some(flash))).into_response())
}

fn render(
    session: &Session,
    providers: &ProviderList,
    routes: &RouteList,
    flash: Option<Markup>,
) -> Markup {
    page(
        "Providers and routes",
        Nav::Catalog,
        Some(session),
        html! {
            h1 { "Providers and routes" }
            @if let Some(flash) = flash { (flash) }
            p.muted { "Adding or removing providers and routes, and a route's targets, go through the API (" code { "/api/v1/providers" } ", " code { "/api/v1/routes" } ") for now." }
            h2 { "Providers" }
            table #providers {
                thead { tr { th { "Name" } th { "Kind" } th { "Base URL, credential reference, timeout (ms)" } } }
                tbody {
                    @for p in &providers.items {
                        tr data-provider=(p.name) {
                            td.mono { (p.name) }
                            td { (kind_name(&p.kind)) }
                            td {
                                form.inline.provider method="post" action={"/console/catalog/providers/" (p.name)} {
                                    (csrf_field(session))
                                    input name="base_url" size="36" value=(p.base_url) aria-label="base URL";
                                    " "
                                    input name="credential_ref" size="24" placeholder="env:NAME or file:/path" value=(p.credential_ref.as_deref().unwrap_or("")) aria-label="credential reference";
                                    " "
                                    input name="timeout_ms" size="7" value=(p.timeout_ms) aria-label="timeout in milliseconds";
                                    " "
                                    button.quiet type="submit" { "Save" }
                                }
                            }
                        }
                    }
                    @if providers.items.is_empty() { tr { td colspan="3" .muted { "No provider." } } }
                }
            }
            h2 { "Routes" }
            table #routes {
                thead { tr { th { "Model" } th { "Targets (provider → upstream model, weight, priority)" } } }
                tbody {
                    @for r in &routes.items {
                        tr {
                            td.mono { (r.model) }
                            td {
                                ul.plain {
                                    @for t in &r.targets {
                                        li {
                                            code { (t.provider) }
                                            @if let Some(m) = &t.upstream_model { " → " code { (m) } }
                                            ", weight " (t.weight)
                                            @if let Some(p) = t.priority { ", priority " (p) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if routes.items.is_empty() { tr { td colspan="2" .muted { "No route." } } }
                }
            }
        },
    )
}

/// A kind as the API spells it.
fn kind_name(kind: &providers::Kind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
