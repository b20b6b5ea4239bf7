//! The providers and routes page: what `GET /api/v1/providers` and
//! `GET /api/v1/routes` answer, through the same functions. A provider's
//! credential is shown only as its reference (`env:NAME` or `file:/path`),
//! as the API shows it; the credential itself is never read here.

use axum::extract::State;
use maud::{html, Markup};

use super::layout::{page, ConsoleError, Nav};
use super::signin::SignedIn;
use crate::api::{providers, routes};
use crate::state::AppState;

/// `GET /console/catalog`.
pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
) -> Result<Markup, ConsoleError> {
    let providers = providers::list(&state).await?;
    let routes = routes::list(&state).await?;
    Ok(page(
        "Providers and routes",
        Nav::Catalog,
        Some(&session),
        html! {
            h1 { "Providers and routes" }
            p.muted { "Changes go through the API (" code { "/api/v1/providers" } ", " code { "/api/v1/routes" } ") for now." }
            h2 { "Providers" }
            table #providers {
                thead { tr { th { "Name" } th { "Kind" } th { "Base URL" } th { "Credential" } th { "Timeout (ms)" } } }
                tbody {
                    @for p in &providers.items {
                        tr {
                            td.mono { (p.name) }
                            td { (kind_name(&p.kind)) }
                            td.mono { (p.base_url) }
                            td.mono { (p.credential_ref.as_deref().unwrap_or("-")) }
                            td { (p.timeout_ms) }
                        }
                    }
                    @if providers.items.is_empty() { tr { td colspan="5" .muted { "No provider." } } }
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
    ))
}

/// A kind as the API spells it.
fn kind_name(kind: &providers::Kind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
