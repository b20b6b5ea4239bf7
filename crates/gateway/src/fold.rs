//! Folding the usage rollup queue into the hourly rollups and running totals
//! (`db::fold`), every [`EVERY`] and once at shutdown after the usage
//! writer's last flush.
//!
//! Every gateway folds, on the query pool, one at a time: a fold that finds
//! another under way (a transaction advisory lock) folds nothing that round.
//! Reads add the queue to the rollups, so a fold that fails or lags makes
//! no report or budget wrong, only the queue longer.

use std::time::Duration;

use obleth_config::db::fold;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often the queue is folded.
pub const EVERY: Duration = Duration::from_secs(1);

/// Every how many folds the queue is vacuumed (`db::fold::vacuum_queue`).
pub const VACUUM_EVERY: u64 = 10;

/// The longest the fold at shutdown may take before the gateway leaves the
/// rest to the other gateways (or its next start).
pub const FINAL_FOLD: Duration = Duration::from_secs(5);

/// Folds the whole queue every [`EVERY`], and vacuums it every
/// [`VACUUM_EVERY`] rounds, until `stop`.
pub async fn run(pool: PgPool, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = fold::fold_all(&pool).await {
            warn!(error = %e, "Folding usage rollups failed; retrying at the next round.");
        }
        round += 1;
        if round.is_multiple_of(VACUUM_EVERY) {
            if let Err(e) = fold::vacuum_queue(&pool).await {
                warn!(error = %e, "Vacuuming the usage rollup queue failed.");
            }
        }
    }
}

/// Folds what the queue holds, for at most [`FINAL_FOLD`].
pub async fn final_fold(pool: &PgPool) {
    match tokio::time::timeout(FINAL_FOLD, fold::fold_all(pool)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e, "Folding usage rollups at shutdown failed."),
        Err(_) => warn!("Folding usage rollups at shutdown took too long; left to the next fold."),
    }
}
