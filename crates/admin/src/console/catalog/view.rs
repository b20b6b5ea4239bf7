//! The providers and routes page as markup: the two tables with a form per
//! row, the forms that create a provider and a route, and a notice next to
//! the form it is about. Deleting asks first, without script: the delete
//! button is inside a closed `<details>`.

use maud::{html, Markup};
use uuid::Uuid;

use super::draft::{options_text, ProviderDraft, RouteDraft, TargetRow};
use crate::api::providers::{Kind, ProviderList, DEFAULT_TIMEOUT_MS};
use crate::api::routes::RouteList;
use crate::console::layout::{csrf_field, page, Nav};
use crate::console::session::Session;

/// Where a notice goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Above everything (a deleted row has no place of its own).
    Page,
    NewProvider,
    Provider(String),
    NewRoute,
    Route(Uuid),
}

impl Place {
    /// A route's row by the id in a path; an id no route has goes on top.
    pub fn route(id: &str) -> Place {
        Uuid::parse_str(id).map_or(Place::Page, Place::Route)
    }
}

/// What a refused form held, to show it again.
#[derive(Debug)]
pub enum Draft {
    None,
    Provider(ProviderDraft),
    Route(RouteDraft),
}

/// The result of a write: a notice, where it goes, and on a refusal the
/// form as it was sent.
#[derive(Debug)]
pub struct Outcome {
    pub place: Place,
    pub notice: Markup,
    pub draft: Draft,
}

/// Every kind the API takes, in the order the form offers them.
const KINDS: [Kind; 7] = [
    Kind::OpenAi,
    Kind::Anthropic,
    Kind::Azure,
    Kind::Gemini,
    Kind::Vertex,
    Kind::Bedrock,
    Kind::Mock,
];

/// Empty target rows the new-route form offers.
const NEW_ROUTE_ROWS: usize = 3;

pub fn render(
    session: &Session,
    providers: &ProviderList,
    routes: &RouteList,
    outcome: Option<&Outcome>,
) -> Markup {
    let at = |place: &Place| outcome.filter(|o| o.place == *place);
    let notice_at = |place: &Place| at(place).map(|o| o.notice.clone());
    // A notice whose row is gone (deleted meanwhile) goes on top.
    let on_top = outcome.filter(|o| match &o.place {
        Place::Page => true,
        Place::Provider(name) => !providers.items.iter().any(|p| &p.name == name),
        Place::Route(id) => !routes.items.iter().any(|r| r.id == *id),
        Place::NewProvider | Place::NewRoute => false,
    });
    let provider_draft = |place: &Place| match at(place).map(|o| &o.draft) {
        Some(Draft::Provider(d)) => Some(d.clone()),
        _ => None,
    };
    let route_draft = |place: &Place| match at(place).map(|o| &o.draft) {
        Some(Draft::Route(d)) => Some(d.clone()),
        _ => None,
    };
    let new_provider = provider_draft(&Place::NewProvider).unwrap_or_else(|| ProviderDraft {
        kind: "openai".to_owned(),
        ..ProviderDraft::default()
    });
    let new_route = route_draft(&Place::NewRoute).unwrap_or_default();
    page(
        "Providers and routes",
        Nav::Catalog,
        Some(session),
        html! {
            h1 { "Providers and routes" }
            @if let Some(o) = on_top { (o.notice) }
            datalist #provider-names {
                @for p in &providers.items { option value=(p.name) {} }
            }
            h2 { "Providers" }
            table #providers {
                thead { tr { th { "Name" } th { "Kind" } th { "Settings" } th {} } }
                tbody {
                    @for p in &providers.items {
                        @let place = Place::Provider(p.name.clone());
                        @let draft = provider_draft(&place).unwrap_or_else(|| ProviderDraft::of(p));
                        @if let Some(n) = notice_at(&place) {
                            tr.notice-row data-notice-for=(p.name) { td colspan="4" { (n) } }
                        }
                        tr data-provider=(p.name) {
                            td.mono { (p.name) }
                            td { (kind_name(p.kind)) }
                            td {
                                form.provider method="post" action={"/console/catalog/providers/" (p.name)} {
                                    (csrf_field(session))
                                    (provider_fields(&draft))
                                    button.quiet type="submit" { "Save" }
                                }
                            }
                            td {
                                (confirm_delete(session, &format!("/console/catalog/providers/{}/delete", p.name), &format!("Delete provider “{}”", p.name)))
                            }
                        }
                    }
                    @if providers.items.is_empty() { tr { td colspan="4" .muted { "No provider." } } }
                }
            }
            h3 { "New provider" }
            @if let Some(n) = notice_at(&Place::NewProvider) { (n) }
            form.grid #new-provider method="post" action="/console/catalog/providers" {
                (csrf_field(session))
                label { "Name" input name="name" required value=(new_provider.name) placeholder="openai-main"; }
                label {
                    "Kind"
                    select name="kind" {
                        @for k in KINDS {
                            @let name = kind_name(k);
                            option value=(name) selected[new_provider.kind == name] { (name) }
                        }
                    }
                }
                (provider_fields(&new_provider))
                div { button type="submit" { "Create provider" } }
            }
            p.muted { "Base URL may be left empty for " code { "mock" } " and " code { "bedrock" } " (its region's endpoint). Options are a JSON object, as " code { "options" } " in " code { "POST /api/v1/providers" } "." }

            h2 { "Routes" }
            table #routes {
                thead { tr { th { "Model" } th { "Targets" } th {} } }
                tbody {
                    @for r in &routes.items {
                        @let place = Place::Route(r.id);
                        @let draft = route_draft(&place).unwrap_or_else(|| RouteDraft::of(r));
                        @if let Some(n) = notice_at(&place) {
                            tr.notice-row data-notice-for=(r.model) { td colspan="3" { (n) } }
                        }
                        tr data-route=(r.model) {
                            td.mono { (r.model) }
                            td {
                                form.targets method="post" action={"/console/catalog/routes/" (r.id) "/targets"} {
                                    (csrf_field(session))
                                    (target_rows(&draft.rows, 1))
                                    button.quiet type="submit" { "Save targets" }
                                }
                            }
                            td {
                                (confirm_delete(session, &format!("/console/catalog/routes/{}/delete", r.id), &format!("Delete route “{}”", r.model)))
                            }
                        }
                    }
                    @if routes.items.is_empty() { tr { td colspan="3" .muted { "No route." } } }
                }
            }
            h3 { "New route" }
            @if let Some(n) = notice_at(&Place::NewRoute) { (n) }
            form.route #new-route method="post" action="/console/catalog/routes" {
                (csrf_field(session))
                label { "Model " input name="model" required size="30" value=(new_route.model) placeholder="gpt-4o"; }
                (target_rows(&new_route.rows, NEW_ROUTE_ROWS.saturating_sub(new_route.rows.len()).max(1)))
                button type="submit" { "Create route" }
            }
            p.muted {
                "Targets are tried by priority (lower first; empty: the row's position), and share the requests of a priority by weight (empty: 1; 0: a standby). "
                "An empty upstream model sends the client's. Clear a target's provider to remove it; fill the empty row to add one."
            }
        },
    )
}

/// The fields a provider's row and the new-provider form share.
fn provider_fields(d: &ProviderDraft) -> Markup {
    let options = if d.options.is_empty() {
        options_text(&Default::default())
    } else {
        d.options.clone()
    };
    let lines = options.lines().count().clamp(1, 8);
    html! {
        label { "Base URL" input name="base_url" size="30" value=(d.base_url) placeholder="https://api.openai.com/v1"; }
        label { "Credential reference" input name="credential_ref" size="20" placeholder="env:NAME or file:/path" value=(d.shown_credential()); }
        label { "Timeout (ms)" input name="timeout_ms" size="7" value=(d.timeout_ms) placeholder=(DEFAULT_TIMEOUT_MS); }
        label.options { "Options (JSON)" textarea name="options" rows=(lines) cols="34" spellcheck="false" { (options) } }
    }
}

/// A table of target rows named `targets[N].*`, then `empty` empty rows.
fn target_rows(rows: &[TargetRow], empty: usize) -> Markup {
    let blank = TargetRow::default();
    let all = rows.iter().chain(std::iter::repeat_n(&blank, empty));
    html! {
        table.targets {
            thead { tr { th { "Provider" } th { "Upstream model" } th { "Weight" } th { "Priority" } } }
            tbody {
                @for (i, t) in all.enumerate() {
                    tr {
                        td { input name={"targets[" (i) "].provider"} list="provider-names" size="16" value=(t.provider) aria-label="provider"; }
                        td { input name={"targets[" (i) "].upstream_model"} size="18" value=(t.upstream_model) aria-label="upstream model"; }
                        td { input name={"targets[" (i) "].weight"} size="5" value=(t.weight) placeholder="1" aria-label="weight"; }
                        td { input name={"targets[" (i) "].priority"} size="5" value=(t.priority) aria-label="priority"; }
                    }
                }
            }
        }
    }
}

/// A delete button behind a second click: closed, only "Delete…" shows.
fn confirm_delete(session: &Session, action: &str, what: &str) -> Markup {
    html! {
        details.confirm {
            summary { "Delete…" }
            form.delete method="post" action=(action) {
                (csrf_field(session))
                button.danger type="submit" { (what) }
            }
        }
    }
}

/// A kind as the API spells it. The match makes a new kind in the API a
/// compile error here until [`KINDS`] offers it.
fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::OpenAi => "openai",
        Kind::Mock => "mock",
        Kind::Anthropic => "anthropic",
        Kind::Azure => "azure",
        Kind::Gemini => "gemini",
        Kind::Vertex => "vertex",
        Kind::Bedrock => "bedrock",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_spelled_as_the_api_spells_them() {
        for k in KINDS {
            assert_eq!(serde_json::to_value(k).unwrap(), kind_name(k));
        }
    }
}
