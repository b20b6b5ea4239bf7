//! Upkeep of the usage ledger's daily partitions: created ahead, and dropped
//! once older than `usage.retention_days`.
//!
//! It runs on the session pool (`database.direct_url`): `DETACH PARTITION
//! ... CONCURRENTLY` runs outside a transaction, which a transaction pooler
//! may not keep on one server connection.
//!
//! Every gateway runs it, at start and then every [`EVERY`]: creating a
//! partition that exists is a no-op, and two gateways dropping the same day
//! cost one of them an error that the next round forgets. The usage writer
//! also creates a missing day on its own (`db::usage::insert_usage`), so a
//! round that fails loses nothing.

use std::time::Duration;

use chrono::Utc;
use obleth_config::db::ledger;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::settings::UsageSettings;

/// How often upkeep runs.
pub const EVERY: Duration = Duration::from_secs(600);

/// Runs [`round`] now and every [`EVERY`] until `stop`.
pub async fn upkeep(
    pool: PgPool,
    settings: UsageSettings,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = round(&pool, &settings, &metrics).await {
            metrics
                .ledger_partitions
                .with_label_values(&["failed"])
                .inc();
            warn!(error = %e, "Usage ledger upkeep failed; retrying at the next round.");
        }
    }
}

/// Creates the partitions from yesterday to `partitions_ahead_days` ahead,
/// then drops the days past `retention_days`.
pub async fn round(
    pool: &PgPool,
    settings: &UsageSettings,
    metrics: &Metrics,
) -> Result<(), sqlx::Error> {
    let today = Utc::now().date_naive();
    let created = ledger::ensure_ahead(pool, today, settings.partitions_ahead_days).await?;
    if created > 0 {
        metrics
            .ledger_partitions
            .with_label_values(&["created"])
            .inc_by(created);
        info!(created, "Created usage ledger partitions ahead.");
    }
    let dropped = ledger::drop_expired(pool, today, settings.retention_days).await?;
    if !dropped.is_empty() {
        metrics
            .ledger_partitions
            .with_label_values(&["dropped"])
            .inc_by(dropped.len() as u64);
        info!(
            dropped = dropped.len(),
            oldest = %dropped[0],
            retention_days = settings.retention_days,
            "Dropped usage ledger partitions past the retention."
        );
    }
    Ok(())
}
