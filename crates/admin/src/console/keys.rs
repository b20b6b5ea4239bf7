//! The keys page: list and filter, create (the secret shown once, with a
//! copy button), rotate with an overlap (the new secret shown once), revoke;
//! each key with its use and spend in its current budget period. Every
//! action calls the function the JSON API's handler calls
//! (`crate::api::keys`), so checks and messages are the API's.
//!
//! A secret is only ever in the answer to the POST that made it, which is
//! marked `no-store` like every console page; no later page can show it,
//! since only its hash is stored.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::form::CsrfForm;
use super::layout::{csrf_field, notice, page, ConsoleError, Nav};
use super::session::Session;
use super::signin::SignedIn;
use crate::api::budget::Period;
use crate::api::key_types::{CreateKey, KeyListParams, KeyPage, KeyStatus, RotateKey};
use crate::api::keys as api;
use crate::error::AdminError;
use crate::state::AppState;

/// Keys a page lists.
const PAGE_SIZE: i64 = 50;
/// The overlap the rotate form proposes, in seconds.
const DEFAULT_OVERLAP_SECS: u64 = 3600;

/// The list's filters, from the query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    /// Part of the name.
    #[serde(default)]
    pub name: Option<String>,
    /// The owner, exactly.
    #[serde(default)]
    pub owner: Option<String>,
    /// A team's id.
    #[serde(default)]
    pub team: Option<String>,
    /// `active` (the default), `revoked` or `all`.
    #[serde(default)]
    pub status: Option<String>,
    /// The last id of the previous page.
    #[serde(default)]
    pub after: Option<String>,
}

impl Filter {
    fn params(&self) -> Result<KeyListParams, AdminError> {
        let revoked = match self.status.as_deref().unwrap_or("active") {
            "active" => Some(false),
            "revoked" => Some(true),
            "all" => None,
            _ => {
                return Err(AdminError::validation(
                    "status",
                    "must be active, revoked or all",
                ))
            }
        };
        let after = match self.after.as_deref().filter(|s| !s.is_empty()) {
            Some(id) => Some(crate::api::validate::uuid("after", id)?),
            None => None,
        };
        let team_id = match self
            .team
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(id) => Some(crate::api::validate::uuid("team", id)?),
            None => None,
        };
        Ok(KeyListParams {
            name_contains: self.name.clone().filter(|n| !n.trim().is_empty()),
            owner: self.owner.clone().filter(|o| !o.trim().is_empty()),
            team_id,
            revoked,
            after,
            limit: Some(PAGE_SIZE),
        })
    }
}

/// The create form as posted: text fields, empty meaning "not set".
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner: String,
    /// Comma-separated model names or globs.
    #[serde(default)]
    allowed_models: String,
    #[serde(default)]
    rpm_limit: String,
    #[serde(default)]
    tpm_limit: String,
    #[serde(default)]
    token_budget: String,
    #[serde(default)]
    budget_usd: String,
    #[serde(default)]
    budget_period: String,
    #[serde(default)]
    team_id: String,
}

impl CreateForm {
    /// The API's create body; numbers that do not parse are refused naming
    /// the field, everything else is checked by the API's own code.
    fn body(&self) -> Result<CreateKey, AdminError> {
        let period = match self.budget_period.trim() {
            "" => None,
            p => Some(
                serde_json::from_value::<Period>(serde_json::Value::String(p.to_owned())).map_err(
                    |_| {
                        AdminError::validation("budget_period", "must be day, week, month or total")
                    },
                )?,
            ),
        };
        let team_id = match self.team_id.trim() {
            "" => None,
            id => Some(crate::api::validate::uuid("team_id", id)?),
        };
        Ok(CreateKey {
            name: self.name.trim().to_owned(),
            owner: non_empty(&self.owner),
            allowed_models: self
                .allowed_models
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            rpm_limit: number("rpm_limit", &self.rpm_limit)?,
            tpm_limit: number("tpm_limit", &self.tpm_limit)?,
            token_budget: number("token_budget", &self.token_budget)?,
            expires_at: None,
            team_id,
            budget_usd: number("budget_usd", &self.budget_usd)?,
            budget_period: period,
        })
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn number<T: std::str::FromStr>(field: &str, s: &str) -> Result<Option<T>, AdminError> {
    match s.trim() {
        "" => Ok(None),
        s => s
            .parse()
            .map(Some)
            .map_err(|_| AdminError::validation(field, "must be a number")),
    }
}

/// The rotate form: how long the current secret keeps working.
#[derive(Debug, Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    overlap_secs: String,
}

/// `GET /console/keys`.
pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Query(filter): Query<Filter>,
) -> Result<Markup, ConsoleError> {
    let keys = api::list(&state, filter.params()?).await?;
    Ok(render(
        &session,
        &filter,
        &keys,
        None,
        &CreateForm::default(),
    ))
}

/// `POST /console/keys`: create, then show the secret once.
pub async fn create(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<CreateForm>,
) -> Result<Response, ConsoleError> {
    let filter = Filter::default();
    let created = match form.body() {
        Ok(body) => api::create(&state, body).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(created) => {
            let keys = api::list(&state, filter.params()?).await?;
            let flash = secret_panel(
                &format!("Key “{}” created.", created.key.name),
                &created.secret,
                None,
            );
            Ok(render(
                &session,
                &filter,
                &keys,
                Some(flash),
                &CreateForm::default(),
            )
            .into_response())
        }
        Err(e) if is_callers(&e) => {
            let keys = api::list(&state, filter.params()?).await?;
            let flash = notice("error", &e.to_string());
            Ok((
                e.status(),
                render(&session, &filter, &keys, Some(flash), &form),
            )
                .into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /console/keys/{id}/rotate`: a new secret, shown once; the current
/// one keeps working for the overlap.
pub async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(session, form): CsrfForm<RotateForm>,
) -> Result<Response, ConsoleError> {
    let filter = Filter::default();
    let rotated = match number::<u64>("overlap_secs", &form.overlap_secs) {
        Ok(overlap) => {
            let body = RotateKey {
                overlap_secs: overlap.unwrap_or(0),
            };
            api::rotate(&state, &id, body).await
        }
        Err(e) => Err(e),
    };
    let (status, flash) = match rotated {
        Ok(r) => {
            let until = r.previous_expires_at.map(|at| {
                format!(
                    "The previous secret works until {}.",
                    at.format("%Y-%m-%d %H:%M:%S UTC")
                )
            });
            (
                StatusCode::OK,
                secret_panel(
                    &format!("Key “{}” rotated.", r.key.name),
                    &r.secret,
                    until.as_deref(),
                ),
            )
        }
        Err(e) if is_callers(&e) => (e.status(), notice("error", &e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let keys = api::list(&state, filter.params()?).await?;
    let body = render(
        &session,
        &filter,
        &keys,
        Some(flash),
        &CreateForm::default(),
    );
    Ok((status, body).into_response())
}

/// `POST /console/keys/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(session, _): CsrfForm<serde::de::IgnoredAny>,
) -> Result<Response, ConsoleError> {
    // Every key, so the one just revoked stays in sight with its status.
    let filter = Filter {
        status: Some("all".to_owned()),
        ..Filter::default()
    };
    let (status, flash) = match api::revoke(&state, &id).await {
        Ok(key) => (
            StatusCode::OK,
            notice("ok", &format!("Key “{}” revoked.", key.name)),
        ),
        Err(e) if is_callers(&e) => (e.status(), notice("error", &e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let keys = api::list(&state, filter.params()?).await?;
    let body = render(
        &session,
        &filter,
        &keys,
        Some(flash),
        &CreateForm::default(),
    );
    Ok((status, body).into_response())
}

/// Whether an error is the operator's to fix (shown on the page) rather
/// than the server's.
fn is_callers(e: &AdminError) -> bool {
    e.status().is_client_error()
}

fn secret_panel(title: &str, secret: &str, after: Option<&str>) -> Markup {
    html! {
        div.secret #secret-panel role="status" {
            p { strong { (title) } " Copy the key now: it is shown this once and never again." }
            code #new-secret { (secret) }
            " "
            button.quiet type="button" data-copy="new-secret" { "Copy" }
            @if let Some(after) = after { p { (after) } }
        }
    }
}

fn render(
    session: &Session,
    filter: &Filter,
    keys: &KeyPage,
    flash: Option<Markup>,
    form: &CreateForm,
) -> Markup {
    let status = filter.status.as_deref().unwrap_or("active");
    page(
        "Keys",
        Nav::Keys,
        Some(session),
        html! {
            h1 { "Keys" }
            @if let Some(flash) = flash { (flash) }
            h2 { "Create a key" }
            form.grid #create-key method="post" action="/console/keys" {
                (csrf_field(session))
                label { "Name" input name="name" required value=(form.name); }
                label { "Owner" input name="owner" value=(form.owner); }
                label { "Allowed models (comma-separated)" input name="allowed_models" value=(form.allowed_models); }
                label { "Team id" input name="team_id" value=(form.team_id); }
                label { "Requests per minute" input name="rpm_limit" inputmode="numeric" value=(form.rpm_limit); }
                label { "Tokens per minute" input name="tpm_limit" inputmode="numeric" value=(form.tpm_limit); }
                label { "Token budget" input name="token_budget" inputmode="numeric" value=(form.token_budget); }
                label { "Budget (USD)" input name="budget_usd" inputmode="decimal" value=(form.budget_usd); }
                label { "Budget period"
                    select name="budget_period" {
                        @for p in ["", "day", "week", "month", "total"] {
                            option value=(p) selected[form.budget_period == p] { (if p.is_empty() { "total (default)" } else { p }) }
                        }
                    }
                }
                button type="submit" { "Create key" }
            }
            h2 { "Keys" }
            form.filters method="get" action="/console/keys" {
                input name="name" placeholder="name contains" value=(filter.name.as_deref().unwrap_or(""));
                input name="owner" placeholder="owner" value=(filter.owner.as_deref().unwrap_or(""));
                input name="team" placeholder="team id" value=(filter.team.as_deref().unwrap_or(""));
                select name="status" {
                    @for s in ["active", "revoked", "all"] {
                        option value=(s) selected[status == s] { (s) }
                    }
                }
                button.quiet type="submit" { "Filter" }
            }
            table #keys {
                thead { tr {
                    th { "Name" } th { "Key" } th { "Owner" } th { "Status" }
                    th { "Requests" } th { "Tokens" } th { "Spend (USD)" } th { "Period" } th { "Actions" }
                } }
                tbody {
                    @for k in &keys.items {
                        tr data-key-id=(k.id) {
                            td { (k.name) }
                            td.mono { (k.prefix) "…" }
                            td { (k.owner.as_deref().unwrap_or("-")) }
                            td.status { (status_label(k.status)) }
                            td { (k.spend.spent_requests) }
                            td { (k.spend.spent_tokens) }
                            td { (format!("{:.4}", k.spend.spent_usd)) }
                            td { (period_label(k.budget_period)) }
                            td {
                                @if k.status != KeyStatus::Revoked {
                                    form.inline.rotate method="post" action={"/console/keys/" (k.id) "/rotate"} {
                                        (csrf_field(session))
                                        input name="overlap_secs" size="6" value=(DEFAULT_OVERLAP_SECS) aria-label="overlap in seconds";
                                        button.quiet type="submit" { "Rotate" }
                                    }
                                    " "
                                    form.inline.revoke method="post" action={"/console/keys/" (k.id) "/revoke"} {
                                        (csrf_field(session))
                                        button.danger type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                    @if keys.items.is_empty() { tr { td colspan="9" .muted { "No key matches." } } }
                }
            }
            @if let Some(next) = keys.next_after {
                p { a href=(next_page(status, filter, next)) { "Next page" } }
            }
        },
    )
}

/// The link to the page after `after`, with the filters URL-encoded.
fn next_page(status: &str, filter: &Filter, after: uuid::Uuid) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("status", status)
        .append_pair("name", filter.name.as_deref().unwrap_or(""))
        .append_pair("owner", filter.owner.as_deref().unwrap_or(""))
        .append_pair("team", filter.team.as_deref().unwrap_or(""))
        .append_pair("after", &after.to_string())
        .finish();
    format!("/console/keys?{query}")
}

fn status_label(s: KeyStatus) -> &'static str {
    match s {
        KeyStatus::Active => "active",
        KeyStatus::Expired => "expired",
        KeyStatus::Revoked => "revoked",
    }
}

fn period_label(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
        Period::Total => "total",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_link_encodes_the_filters() {
        let id = uuid::Uuid::nil();
        let filter = Filter {
            name: Some("a&b c".to_owned()),
            owner: Some("ops=1".to_owned()),
            ..Filter::default()
        };
        assert_eq!(
            next_page("all", &filter, id),
            format!("/console/keys?status=all&name=a%26b+c&owner=ops%3D1&team=&after={id}")
        );
    }

    #[test]
    fn form_numbers_and_periods_are_refused_naming_the_field() {
        let form = CreateForm {
            name: "k".to_owned(),
            rpm_limit: "ten".to_owned(),
            ..CreateForm::default()
        };
        assert_eq!(form.body().unwrap_err().field(), Some("rpm_limit"));
        let form = CreateForm {
            name: "k".to_owned(),
            budget_period: "year".to_owned(),
            ..CreateForm::default()
        };
        assert_eq!(form.body().unwrap_err().field(), Some("budget_period"));
        let form = CreateForm {
            name: " k ".to_owned(),
            allowed_models: "gpt-4o, mini*, ".to_owned(),
            budget_period: "month".to_owned(),
            ..CreateForm::default()
        };
        let body = form.body().unwrap();
        assert_eq!(body.name, "k");
        assert_eq!(body.allowed_models, ["gpt-4o", "mini*"]);
        assert_eq!(body.budget_period, Some(Period::Month));
    }
}
