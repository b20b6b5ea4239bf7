//! The node record: this gateway in the `nodes` table with its version, the
//! schema it sees and whether it is ready, refreshed by a heartbeat.

use std::time::Duration;

use obleth_config::model::NodeInfo;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::state::AppState;

fn info(state: &AppState) -> NodeInfo {
    NodeInfo {
        node_id: state.node_id.clone(),
        service: "gateway".to_owned(),
        version: obleth_config::version::VERSION.to_owned(),
        git_commit: Some(obleth_config::version::COMMIT.to_owned()),
        hostname: obleth_config::process::hostname(),
        schema_version: *state
            .schema_applied
            .read()
            .unwrap_or_else(|e| e.into_inner()),
    }
}

/// Registers and heartbeats until `stop`. Failures are logged and retried; the
/// node record never blocks serving.
pub async fn heartbeat(state: AppState, pool: PgPool, every: Duration, stop: CancellationToken) {
    let mut registered = false;
    loop {
        if !registered {
            match obleth_config::db::nodes::register_node(&pool, &info(&state)).await {
                Ok(()) => registered = true,
                Err(e) => warn!(error = %e, "Could not register the node."),
            }
        }
        if registered {
            let schema = *state
                .schema_applied
                .read()
                .unwrap_or_else(|e| e.into_inner());
            match obleth_config::db::nodes::heartbeat(
                &pool,
                &state.node_id,
                state.health.ready(),
                schema,
            )
            .await
            {
                Ok(true) => {}
                Ok(false) => registered = false,
                Err(e) => warn!(error = %e, "Node heartbeat failed."),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Marks the node stopped on a clean shutdown.
pub async fn mark_stopped(state: &AppState, pool: &PgPool) {
    if let Err(e) = obleth_config::db::nodes::mark_stopped(pool, &state.node_id).await {
        warn!(error = %e, "Could not mark the node stopped.");
    }
}
