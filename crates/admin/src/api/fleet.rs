//! `GET /api/v1/fleet`: the live gateways and admins with their versions and
//! the schema each sees, and whether the rollout is uniform. The one call an
//! operator makes after an upgrade.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use obleth_config::db::nodes::{list_nodes, NodeRow};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::AdminError;
use crate::state::AppState;

/// A node is listed when seen within this window. `obleth-migrator finish`
/// and `obleth-admin rollout-status` count longer (until a recorded stop or
/// their horizon): a node silent past this window may be cut off from the
/// database and still serving.
pub const LIVE_WITHIN: Duration = Duration::from_secs(30);

/// One running gateway or admin.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub node_id: String,
    /// `gateway` or `admin`.
    pub service: String,
    pub version: String,
    pub git_commit: Option<String>,
    pub hostname: Option<String>,
    /// The newest applied migration the node has seen.
    pub schema_version: Option<i64>,
    pub ready: bool,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
}

impl From<NodeRow> for NodeView {
    fn from(n: NodeRow) -> Self {
        NodeView {
            node_id: n.node_id,
            service: n.service,
            version: n.version,
            git_commit: n.git_commit,
            hostname: n.hostname,
            schema_version: n.schema_version,
            ready: n.ready,
            started_at: n.started_at,
            last_heartbeat: n.last_seen,
        }
    }
}

/// What the fleet looks like as a whole.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetSummary {
    pub nodes: usize,
    pub gateways: usize,
    pub admins: usize,
    pub ready: usize,
    /// The distinct versions running, in order.
    pub versions: Vec<String>,
    /// The distinct schema versions the nodes have seen, in order.
    pub schema_versions: Vec<i64>,
    /// True when every live node runs the same version and sees the same schema.
    pub uniform: bool,
}

/// The live fleet.
#[derive(Debug, Serialize, ToSchema)]
pub struct Fleet {
    /// Ordered by service, then node id.
    pub nodes: Vec<NodeView>,
    pub summary: FleetSummary,
}

/// Summarises `nodes`.
pub fn summarize(nodes: &[NodeView]) -> FleetSummary {
    let versions: BTreeSet<&str> = nodes.iter().map(|n| n.version.as_str()).collect();
    let schemas: BTreeSet<i64> = nodes.iter().filter_map(|n| n.schema_version).collect();
    FleetSummary {
        nodes: nodes.len(),
        gateways: nodes.iter().filter(|n| n.service == "gateway").count(),
        admins: nodes.iter().filter(|n| n.service == "admin").count(),
        ready: nodes.iter().filter(|n| n.ready).count(),
        uniform: versions.len() <= 1 && schemas.len() <= 1,
        versions: versions.into_iter().map(str::to_owned).collect(),
        schema_versions: schemas.into_iter().collect(),
    }
}

/// The gateways and admins seen within [`LIVE_WITHIN`], by service then id:
/// what `GET /api/v1/fleet` lists and the fleet gauges count.
pub async fn live_nodes(pool: &sqlx::PgPool) -> Result<Vec<NodeView>, sqlx::Error> {
    Ok(list_nodes(pool, LIVE_WITHIN)
        .await?
        .into_iter()
        .filter(|n| n.service == "gateway" || n.service == "admin")
        .map(NodeView::from)
        .collect())
}

/// The live gateways and admins, their versions and a summary.
#[utoipa::path(
    get, path = "/api/v1/fleet", tag = "fleet",
    responses((status = 200, body = Fleet)),
    security(("admin_token" = []))
)]
pub async fn fleet(State(state): State<AppState>) -> Result<Json<Fleet>, AdminError> {
    Ok(Json(read(&state).await?))
}

/// The live fleet and its summary: what `GET /api/v1/fleet` answers and the
/// console's rollout page shows.
pub async fn read(state: &AppState) -> Result<Fleet, AdminError> {
    let nodes = live_nodes(&state.pool).await?;
    let summary = summarize(&nodes);
    Ok(Fleet { nodes, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(service: &str, version: &str, schema: Option<i64>) -> NodeView {
        NodeView {
            node_id: format!("{service}-{version}"),
            service: service.to_owned(),
            version: version.to_owned(),
            git_commit: None,
            hostname: None,
            schema_version: schema,
            ready: true,
            started_at: Utc::now(),
            last_heartbeat: Utc::now(),
        }
    }

    #[test]
    fn uniform_means_one_version_and_one_schema() {
        let cases: &[(Vec<NodeView>, bool, usize)] = &[
            (vec![], true, 0),
            (
                vec![
                    node("gateway", "0.1.0", Some(1)),
                    node("admin", "0.1.0", Some(1)),
                ],
                true,
                1,
            ),
            (
                vec![
                    node("gateway", "0.1.0", Some(1)),
                    node("gateway", "0.2.0", Some(1)),
                ],
                false,
                2,
            ),
            (
                vec![
                    node("gateway", "0.2.0", Some(1)),
                    node("admin", "0.2.0", Some(2)),
                ],
                false,
                1,
            ),
            (
                vec![
                    node("gateway", "0.2.0", None),
                    node("admin", "0.2.0", Some(2)),
                ],
                true,
                1,
            ),
        ];
        for (nodes, uniform, versions) in cases {
            let s = summarize(nodes);
            assert_eq!(
                (s.uniform, s.versions.len()),
                (*uniform, *versions),
                "{nodes:?}"
            );
        }
    }
}
