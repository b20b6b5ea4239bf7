//! The shared state every handler and background task holds: handles, not data.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::SharedCatalog;
use crate::health::Health;
use crate::keycache::KeyCache;
use crate::metrics::Metrics;
use crate::pricing::SharedPrices;
use crate::quota::Quota;
use crate::settings::GatewaySettings;
use crate::upstream::Upstream;
use crate::usage::UsageSink;

/// Maintenance mode as set through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub message: String,
    pub retry_after_secs: u64,
}

/// Cheap to clone; everything inside is shared.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub settings: GatewaySettings,
    pub keys: KeyCache,
    pub catalog: SharedCatalog,
    /// Model prices, for the cost of usage.
    pub prices: SharedPrices,
    pub upstream: Upstream,
    /// Rate limits and budgets, shared by the fleet.
    pub quota: Quota,
    pub usage: UsageSink,
    pub metrics: Metrics,
    pub health: Health,
    pub pool: Option<PgPool>,
    pub node_id: String,
    pub in_flight: InFlight,
    pub maintenance: RwLock<Option<Maintenance>>,
    /// Cancelled when the drain timeout passes: open streams end, recorded.
    pub cut_streams: CancellationToken,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    pub fn maintenance(&self) -> Option<Maintenance> {
        self.maintenance
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Counts requests and streams being served, so the drain knows when it is done.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until nothing is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Held while a request or its stream is being served.
#[derive(Debug)]
pub struct InFlightGuard {
    state: AppState,
}

impl InFlightGuard {
    pub fn enter(state: &AppState) -> Self {
        state.in_flight.count.fetch_add(1, Ordering::AcqRel);
        state.metrics.in_flight.inc();
        InFlightGuard {
            state: state.clone(),
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.state.metrics.in_flight.dec();
        if self.state.in_flight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state.in_flight.idle.notify_waiters();
        }
    }
}
