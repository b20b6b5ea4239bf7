//! The change log's pruning: every `changes.prune_interval_secs` the admin
//! deletes the change rows older than `changes.retention_days`, in batches.

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::state::AppState;

/// Rows one DELETE removes: each batch is its own short transaction, so
/// pruning a long backlog never holds many row locks or one long statement.
pub const BATCH_ROWS: i64 = 5_000;

/// Prunes now and then every interval until `stop`; returns at once when
/// `changes.retention_days` is 0. Several admins may run it at once: a row
/// is deleted once, by whichever gets there first.
pub async fn run(state: AppState, stop: CancellationToken) {
    let Some(retention) = state.settings.changes.retention() else {
        info!("Change log pruning is off (changes.retention_days = 0).");
        return;
    };
    let every = state.settings.changes.prune_interval();
    loop {
        if stop.is_cancelled() {
            return;
        }
        prune_once(&state, retention).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Deletes the rows made more than `retention` ago (by this host's clock;
/// a skew of minutes does not matter against days), counting them.
async fn prune_once(state: &AppState, retention: chrono::Duration) {
    let before = Utc::now() - retention;
    match obleth_config::db::changes::prune_changes(&state.pool, before, BATCH_ROWS).await {
        Ok(0) => debug!("Change log pruning found nothing to delete."),
        Ok(rows) => {
            state.metrics.changes_pruned.inc_by(rows);
            info!(rows, %before, "Change log pruned.");
        }
        Err(e) => warn!(error = %e, "Change log pruning failed; trying again next interval."),
    }
}
