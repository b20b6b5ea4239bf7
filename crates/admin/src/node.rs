//! The node record: this admin in the `nodes` table with its version, the
//! schema it sees and whether it is ready, refreshed by a heartbeat.

use std::time::Duration;

use obleth_config::model::NodeInfo;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::state::AppState;

fn info(state: &AppState) -> NodeInfo {
    NodeInfo {
        node_id: state.node_id.clone(),
        service: "admin".to_owned(),
        version: obleth_config::version::VERSION.to_owned(),
        git_commit: Some(obleth_config::version::COMMIT.to_owned()),
        hostname: obleth_config::process::hostname(),
        schema_version: state.health.schema_applied(),
    }
}

/// Registers and heartbeats until `stop`, every `every` or at once when
/// `state.beat` is notified. Failures are logged and retried; the node record
/// never blocks serving. The heartbeat also tells the health checks whether
/// the database answers. Registration fails until the schema exists, so
/// start-up wakes the heartbeat once the schema is ready.
pub async fn heartbeat(state: AppState, every: Duration, stop: CancellationToken) {
    let pool = state.pool.clone();
    let mut registered = false;
    loop {
        if !registered {
            match obleth_config::db::nodes::register_node(&pool, &info(&state)).await {
                Ok(()) => registered = true,
                // Before the first migration there is no nodes table yet;
                // start-up wakes us once the schema is ready.
                Err(e) if !state.health.schema_ok() => {
                    debug!(error = %e, "Not registered yet: the schema is not ready.");
                }
                Err(e) => {
                    state.health.set_database_ok(false);
                    warn!(error = %e, "Could not register the node.");
                }
            }
        }
        if registered {
            let ready = state.health.ready();
            state.metrics.ready.set(i64::from(ready));
            let beat = obleth_config::db::nodes::heartbeat(
                &pool,
                &state.node_id,
                ready,
                state.health.schema_applied(),
            )
            .await;
            match beat {
                Ok(true) => state.health.set_database_ok(true),
                Ok(false) => registered = false,
                Err(e) => {
                    state.health.set_database_ok(false);
                    warn!(error = %e, "Node heartbeat failed.");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = state.beat.notified() => {}
        }
    }
}

/// Marks the node stopped on a clean shutdown.
pub async fn mark_stopped(state: &AppState) {
    if let Err(e) = obleth_config::db::nodes::mark_stopped(&state.pool, &state.node_id).await {
        warn!(error = %e, "Could not mark the node stopped.");
    }
}
