//! The background half of the shared quota: one task per gateway that
//! trades with `quota_counters`. It wakes when a lease runs low (at once)
//! and otherwise every `limits.sync_interval_ms`, and sends every counter
//! that asked since (refills, debts, polls of spent counters, hand-backs of
//! idle budget leases) in one batched call. Every second it also counts the
//! live gateways, hands back budget leases idle for two seconds and forgets
//! ended windows; every minute it deletes old counter rows. When the call
//! fails, the charges are owed again and the gateway falls back to its
//! share until a call succeeds, which `/api/v1/health` reports.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use obleth_config::db::quota::{self as db, LeaseRequest};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{CounterId, Quota};
use crate::metrics::Metrics;

/// A database call that takes longer has failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an unused budget lease stays with this gateway.
const IDLE_HAND_BACK: Duration = Duration::from_secs(2);
/// Nodes seen within this window count as live (the fleet view's window).
const LIVE_WITHIN: Duration = Duration::from_secs(30);
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

/// Runs until `stop`; on the way out hands every budget lease back.
pub async fn run(
    quota: Quota,
    pool: PgPool,
    metrics: Metrics,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut last_housekeeping: Option<Instant> = None;
    let mut last_cleanup = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = quota.0.wake.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
        if last_housekeeping.is_none_or(|at| at.elapsed() >= HOUSEKEEPING_EVERY) {
            last_housekeeping = Some(Instant::now());
            housekeeping(&quota, &pool).await;
        }
        if last_cleanup.elapsed() >= CLEANUP_EVERY {
            last_cleanup = Instant::now();
            match tokio::time::timeout(CALL_TIMEOUT, db::delete_old_counters(&pool)).await {
                Ok(Ok(n)) if n > 0 => debug!(rows = n, "Deleted old quota counters."),
                Ok(Err(e)) => debug!(error = %e, "Could not delete old quota counters."),
                _ => {}
            }
        }
        sync_once(&quota, &pool, &metrics, false).await;
    }
    // Budget leases this gateway holds go back to the fleet.
    quota.queue_budget_leases(None);
    sync_once(&quota, &pool, &metrics, true).await;
}

/// Sends every queued counter; answers whether the database answered.
pub async fn sync_once(
    quota: &Quota,
    pool: &PgPool,
    metrics: &Metrics,
    hand_back_all: bool,
) -> bool {
    let ids: Vec<CounterId> = quota
        .0
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect();
    if ids.is_empty() {
        return true;
    }
    let live = quota.live_gateways();
    let now = Instant::now();
    let mut batch = Vec::with_capacity(ids.len());
    for id in ids {
        let Some((counter, period)) = quota.slot(&id) else {
            continue;
        };
        let mut c = counter.lock().unwrap_or_else(|e| e.into_inner());
        let hand_back = !id.dimension.per_minute()
            && (hand_back_all || now.duration_since(c.last_activity) >= IDLE_HAND_BACK);
        let Some((charge, want)) = c.begin_sync(hand_back, live) else {
            continue;
        };
        let limit = c.limit;
        drop(c);
        let Some(window_start) = chrono::DateTime::from_timestamp(id.window, 0) else {
            continue;
        };
        batch.push((
            id,
            Arc::clone(&counter),
            want,
            LeaseRequest {
                subject_id: id.subject,
                dimension: id.dimension,
                window_start,
                period,
                charge,
                want,
                limit,
            },
        ));
    }
    if batch.is_empty() {
        return true;
    }
    let requests: Vec<LeaseRequest> = batch.iter().map(|b| b.3.clone()).collect();
    let answer = tokio::time::timeout(CALL_TIMEOUT, db::lease(pool, &requests)).await;
    match answer {
        Ok(Ok(grants)) => {
            metrics.quota_lease_calls.with_label_values(&["ok"]).inc();
            for ((_, counter, want, _), grant) in batch.into_iter().zip(grants) {
                counter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .finish_sync(want, grant);
            }
            reachable(quota);
            quota.synced();
            true
        }
        failed => {
            metrics
                .quota_lease_calls
                .with_label_values(&["error"])
                .inc();
            let detail = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            for (id, counter, _, _) in batch {
                counter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .fail_sync();
                quota.queue(id);
            }
            unreachable(quota, &detail);
            quota.synced();
            false
        }
    }
}

fn reachable(quota: &Quota) {
    if quota.0.fallback.swap(false, Ordering::AcqRel) {
        warn!("Quota database reachable again; limits are shared by the fleet again.");
    }
}

fn unreachable(quota: &Quota, detail: &str) {
    if !quota.0.fallback.swap(true, Ordering::AcqRel) {
        warn!(error = %detail, live_gateways = quota.live_gateways(), "Quota database unreachable; each limit falls back to this gateway's share.");
    }
}

/// Embedded mode: only forgets ended windows, once a minute.
pub async fn housekeep_local(quota: Quota, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(CLEANUP_EVERY) => quota.forget_ended(Utc::now().timestamp()),
        }
    }
}

/// Once a second: the live gateways (a failure is an unreachable
/// database too), idle budget leases, ended windows.
async fn housekeeping(quota: &Quota, pool: &PgPool) {
    match tokio::time::timeout(CALL_TIMEOUT, db::live_gateways(pool, LIVE_WITHIN)).await {
        Ok(Ok(n)) => {
            quota.0.live.store(n.max(1), Ordering::Release);
            reachable(quota);
        }
        Ok(Err(e)) => unreachable(quota, &e.to_string()),
        Err(_) => unreachable(quota, "timed out"),
    }
    quota.queue_budget_leases(Some(IDLE_HAND_BACK));
    quota.forget_ended(Utc::now().timestamp());
}

impl Quota {
    fn slot(
        &self,
        id: &CounterId,
    ) -> Option<(
        Arc<std::sync::Mutex<super::Counter>>,
        Option<obleth_config::model::BudgetPeriod>,
    )> {
        self.0
            .counters
            .lock(id)
            .get(id)
            .map(|s| (Arc::clone(&s.counter), s.period))
    }

    /// Queues budget counters holding an unused lease, idle for at least
    /// `idle` (all of them with `None`), so the sync hands it back.
    fn queue_budget_leases(&self, idle: Option<Duration>) {
        let now = Instant::now();
        let mut ids: Vec<CounterId> = Vec::new();
        self.0.counters.each(|counters| {
            ids.extend(
                counters
                    .iter()
                    .filter(|(id, _)| !id.dimension.per_minute())
                    .filter(|(_, slot)| {
                        let c = slot.counter.lock().unwrap_or_else(|e| e.into_inner());
                        c.balance > 0
                            && idle.is_none_or(|idle| now.duration_since(c.last_activity) >= idle)
                    })
                    .map(|(id, _)| *id),
            )
        });
        for id in ids {
            self.queue(id);
        }
    }

    /// Forgets counters whose window has ended and who owe nothing: minute
    /// windows two minutes old (the sliding window reads one back), budget
    /// periods that are over.
    fn forget_ended(&self, now: i64) {
        self.0.counters.each(|counters| {
            counters.retain(|id, slot| {
                let c = slot.counter.lock().unwrap_or_else(|e| e.into_inner());
                if self.0.database && (c.balance < 0 || c.in_flight.is_some()) {
                    return true;
                }
                match slot.period {
                    None => id.window + 180 > now,
                    Some(period) => chrono::DateTime::from_timestamp(id.window, 0)
                        .and_then(|start| period.next_start(start))
                        .is_none_or(|end| end.timestamp() > now),
                }
            })
        });
    }
}
