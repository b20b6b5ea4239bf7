//! The rollout page: every live gateway and admin, the fleet's versions as a
//! bar, the migrations applied and pending, whether `obleth-migrator finish`
//! is safe now (and which nodes hold it back), and maintenance mode. It reads
//! what `GET /api/v1/fleet` and `finish` read, through the same functions,
//! and htmx refreshes it every few seconds. Its form turns maintenance mode
//! on or off through the function behind `PUT /api/v1/maintenance`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use obleth_config::db::settings::{get_maintenance, Maintenance};
use obleth_config::migrate::runner::{finish_blockers, live_nodes, NodeBlocker};
use obleth_config::migrate::{read_applied, AppliedMigration, Mode, Phase, Runner, RunnerOptions};
use obleth_config::migrate::{MigrationDef, MigrationSet};
use serde::Deserialize;

use super::form::CsrfForm;
use super::layout::{csrf_field, notice, page, ConsoleError, Nav};
use super::session::Session;
use super::signin::SignedIn;
use crate::api::fleet::{self, Fleet};
use crate::api::maintenance::{self, SetMaintenance};
use crate::error::AdminError;
use crate::state::AppState;

/// How often the page refreshes its content, in seconds.
pub const REFRESH_SECS: u64 = 5;

/// What the page shows, read in one go.
struct Rollout {
    fleet: Fleet,
    applied: Vec<AppliedMigration>,
    pending_expand: Vec<MigrationDef>,
    pending_contract: Vec<MigrationDef>,
    blockers: Vec<NodeBlocker>,
    maintenance: Maintenance,
}

async fn read(state: &AppState) -> Result<Rollout, ConsoleError> {
    let fleet = fleet::read(state).await?;
    let set = MigrationSet::embedded().map_err(|e| {
        tracing::error!(error = %e, "Embedded migrations do not load.");
        AdminError::Internal
    })?;
    let runner = Runner::new(set, RunnerOptions::from(&state.settings.migrations));
    let mut conn = state.pool.acquire().await?;
    let applied = read_applied(&mut conn).await?.unwrap_or_default();
    let horizon = Duration::from_secs(state.settings.migrations.node_horizon_secs);
    let live = live_nodes(&mut conn, horizon).await?;
    drop(conn);
    let pending = runner.plan(&applied, Mode::Finish { force: false });
    let blockers = finish_blockers(&pending, &live);
    let (contract, expand): (Vec<&MigrationDef>, Vec<&MigrationDef>) = pending
        .into_iter()
        .partition(|d| d.phase == Phase::Contract);
    let maintenance = get_maintenance(&state.pool).await?;
    Ok(Rollout {
        fleet,
        applied,
        pending_expand: expand.into_iter().cloned().collect(),
        pending_contract: contract.into_iter().cloned().collect(),
        blockers,
        maintenance,
    })
}

/// `GET /console/rollout`.
pub async fn show(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
) -> Result<Markup, ConsoleError> {
    let rollout = read(&state).await?;
    Ok(render(&session, &rollout, None))
}

fn render(session: &Session, rollout: &Rollout, flash: Option<Markup>) -> Markup {
    let m = &rollout.maintenance;
    page(
        "Rollout",
        Nav::Rollout,
        Some(session),
        html! {
            h1 { "Rollout" }
            @if let Some(flash) = flash { (flash) }
            (live(rollout))
            h2 { "Maintenance mode" }
            // Outside the refreshed part, so a refresh never clears what
            // the operator is typing.
            form.filters #maintenance-form method="post" action="/console/maintenance" {
                (csrf_field(session))
                input type="hidden" name="enabled" value=(if m.enabled { "false" } else { "true" });
                input name="message" size="48" value=(m.message) aria-label="message";
                input name="retry_after" size="6" value=(m.retry_after_secs) aria-label="Retry-After in seconds";
                @if m.enabled {
                    button type="submit" { "Turn maintenance off" }
                } @else {
                    button.danger type="submit" { "Turn maintenance on" }
                }
            }
        },
    )
}

/// The maintenance form as posted.
#[derive(Debug, Deserialize)]
pub struct MaintenanceForm {
    #[serde(default)]
    enabled: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    retry_after: String,
}

/// `POST /console/maintenance`: on or off on every gateway, through the
/// function behind `PUT /api/v1/maintenance`.
pub async fn set_maintenance(
    State(state): State<AppState>,
    CsrfForm(session, form): CsrfForm<MaintenanceForm>,
) -> Result<Response, ConsoleError> {
    let retry_after = match form.retry_after.trim() {
        "" => Ok(None),
        r => r
            .parse::<u64>()
            .map(Some)
            .map_err(|_| AdminError::validation("retry_after", "must be a whole number")),
    };
    let result = match retry_after {
        Ok(retry_after) => {
            let message = form.message.trim();
            let body = SetMaintenance {
                enabled: form.enabled == "true",
                message: (!message.is_empty()).then(|| message.to_owned()),
                retry_after,
            };
            maintenance::set(&state, body).await
        }
        Err(e) => Err(e),
    };
    let (status, flash) = match result {
        Ok(m) => (
            StatusCode::OK,
            notice(
                "ok",
                if m.enabled {
                    "Maintenance mode turned on."
                } else {
                    "Maintenance mode turned off."
                },
            ),
        ),
        Err(e) if e.status().is_client_error() => (e.status(), notice("error", &e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let rollout = read(&state).await?;
    Ok((status, render(&session, &rollout, Some(flash))).into_response())
}

/// `GET /console/rollout/live`: the part htmx swaps in.
pub async fn fragment(
    State(state): State<AppState>,
    SignedIn(_): SignedIn,
) -> Result<Markup, ConsoleError> {
    Ok(live(&read(&state).await?))
}

fn live(r: &Rollout) -> Markup {
    let s = &r.fleet.summary;
    html! {
        div #live hx-get="/console/rollout/live" hx-trigger={"every " (REFRESH_SECS) "s"} hx-swap="outerHTML" {
            @if r.maintenance.enabled {
                (notice("warn", &format!("Maintenance mode is ON: gateways answer 503 \"{}\" (Retry-After {} s).", r.maintenance.message, r.maintenance.retry_after_secs)))
            } @else {
                p.notice #maintenance { "Maintenance mode is off." }
            }
            div.cards {
                div.card #fleet-summary {
                    h2 { "Fleet" }
                    p { (s.gateways) " gateways, " (s.admins) " admins, " (s.ready) " of " (s.nodes) " ready" }
                    p {
                        @if s.uniform { span.yes { "Uniform" } " — one version and one schema" }
                        @else { span.no { "Mixed" } " — versions " (s.versions.join(", ")) }
                    }
                }
                div.card #migrations {
                    h2 { "Migrations" }
                    p { (r.applied.len()) " applied"
                        @if let Some(last) = r.applied.last() { ", newest " code { (last.version) } } }
                    p { (r.pending_expand.len()) " pending expand, " (r.pending_contract.len()) " pending contract" }
                }
                div.card #finish {
                    h2 { "Finish" }
                    (finish(r))
                }
            }
            h2 { "Versions" }
            (versions_bar(&r.fleet))
            h2 { "Nodes" }
            table #nodes {
                thead { tr { th { "Service" } th { "Node" } th { "Version" } th { "Commit" } th { "Schema seen" } th { "Ready" } th { "Last heartbeat" } } }
                tbody {
                    @for n in &r.fleet.nodes {
                        tr {
                            td { (n.service) }
                            td.mono { (n.node_id) }
                            td.mono { (n.version) }
                            td.mono { (n.git_commit.as_deref().unwrap_or("-")) }
                            td.mono { (n.schema_version.map_or("-".to_owned(), |v| v.to_string())) }
                            td { @if n.ready { span.yes { "yes" } } @else { span.no { "no" } } }
                            td { (n.last_heartbeat.format("%Y-%m-%d %H:%M:%S UTC")) }
                        }
                    }
                    @if r.fleet.nodes.is_empty() { tr { td colspan="7" .muted { "No live node." } } }
                }
            }
            h2 { "Pending migrations" }
            @if r.pending_expand.is_empty() && r.pending_contract.is_empty() {
                p.muted { "None: the database has every migration this release embeds." }
            } @else {
                table #pending {
                    thead { tr { th { "Version" } th { "Phase" } th { "Description" } th { "Requires release" } } }
                    tbody {
                        @for d in r.pending_expand.iter().chain(&r.pending_contract) {
                            tr {
                                td.mono { (d.version) }
                                td { (d.phase.as_str()) }
                                td { (d.description) }
                                td.mono { (d.requires_release.as_ref().map_or("-".to_owned(), |v| v.to_string())) }
                            }
                        }
                    }
                }
            }
            h2 { "Applied migrations" }
            table #applied {
                thead { tr { th { "Version" } th { "Phase" } th { "Description" } th { "Installed" } } }
                tbody {
                    @for a in r.applied.iter().rev() {
                        tr {
                            td.mono { (a.version) }
                            td { (a.phase.as_str()) }
                            td { (a.description) }
                            td { (a.installed_on.format("%Y-%m-%d %H:%M UTC")) }
                        }
                    }
                }
            }
        }
    }
}

/// Whether `obleth-migrator finish` would run now, and if not, why.
fn finish(r: &Rollout) -> Markup {
    html! {
        @if r.pending_contract.is_empty() {
            p { span.yes { "Nothing to finish" } " — no contract migration is pending." }
        } @else if r.blockers.is_empty() {
            p { span.yes { "Safe now" } " — every live node is new enough for the pending contract migrations." }
        } @else {
            p { span.no { "Not safe" } " — held back by:" }
            ul.plain #blockers {
                @for b in &r.blockers {
                    li { (b.service) " " code { (b.node_id) } " runs " code { (b.version) }
                        "; migration " (b.migration) " requires " (b.requires_release) }
                }
            }
        }
    }
}

/// Colours for the versions bar, in order; they repeat past the last.
const PALETTE: [&str; 6] = [
    "#0b5cad", "#1a7f37", "#9a6700", "#8250df", "#b42318", "#57606a",
];

/// The fleet's versions as one horizontal bar, a segment a version sized by
/// its node count: inline SVG, whose attributes the CSP allows.
fn versions_bar(fleet: &Fleet) -> Markup {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &fleet.nodes {
        *counts.entry(n.version.as_str()).or_default() += 1;
    }
    let total = fleet.nodes.len().max(1) as f64;
    let mut x = 0.0;
    let segments: Vec<(&str, usize, f64, f64, &str)> = counts
        .iter()
        .enumerate()
        .map(|(i, (version, count))| {
            let width = 1000.0 * *count as f64 / total;
            let segment = (*version, *count, x, width, PALETTE[i % PALETTE.len()]);
            x += width;
            segment
        })
        .collect();
    html! {
        div.bar #versions {
            svg width="100%" height="24" viewBox="0 0 1000 24" preserveAspectRatio="none" role="img" aria-label="nodes by version" {
                @for (version, count, x, width, colour) in &segments {
                    rect x=(format!("{x:.1}")) y="0" width=(format!("{width:.1}")) height="24" fill=(colour) {
                        title { (version) ": " (count) }
                    }
                }
            }
            div.legend {
                @for (version, count, _, _, colour) in &segments {
                    span data-version=(version) {
                        svg width="10" height="10" { rect width="10" height="10" fill=(colour) {} }
                        " " code { (version) } " × " (count)
                    }
                }
            }
        }
    }
}
