//! The fleet gauges read from `nodes` every heartbeat interval:
//! `obleth_fleet_nodes` and `obleth_fleet_uniform` (the live fleet's
//! versions, as `GET /api/v1/fleet` reports them), and
//! `obleth_fleet_usage_dropped_at_stop`: the usage that gateways recorded as
//! dropped when they signed off (`nodes.usage_dropped`). A record a gateway loses at shutdown is counted after
//! its pod has left the Service's endpoints, where no scrape of the gateway
//! sees it; the admin, scraped throughout a rollout, exports it instead.
//! Read in the background, never at scrape time: `/metrics` has no token
//! and must not cost the database anything.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::api::fleet::live_nodes;
use crate::state::AppState;

/// Longest one read may take; on failure a gauge keeps its last values.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Refreshes the gauges now and then every heartbeat interval until `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let every = Duration::from_secs(state.settings.server.heartbeat_secs.max(1));
    loop {
        refresh(&state).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn refresh(state: &AppState) {
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        obleth_config::db::nodes::usage_dropped_at_stop(
            &state.pool,
            crate::metrics::DROPPED_AT_STOP_WITHIN,
        ),
    )
    .await;
    match read {
        Ok(Ok(sums)) => state.metrics.set_usage_dropped_at_stop(&sums),
        Ok(Err(e)) => debug!(error = %e, "Could not read the fleet's dropped usage."),
        Err(_) => debug!("Reading the fleet's dropped usage timed out."),
    }
    let live = tokio::time::timeout(READ_TIMEOUT, live_nodes(&state.pool)).await;
    match live {
        Ok(Ok(nodes)) => state.metrics.set_fleet(&nodes),
        Ok(Err(e)) => debug!(error = %e, "Could not read the live fleet."),
        Err(_) => debug!("Reading the live fleet timed out."),
    }
}
