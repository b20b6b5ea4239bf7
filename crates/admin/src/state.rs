//! The shared state every handler and background task holds: handles, not data.

use std::ops::Deref;
use std::sync::Arc;

use obleth_service::Health;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::settings::AdminSettings;
use crate::throttle::AuthThrottle;
use crate::tokens::AdminTokens;
use obleth_service::ratelog::RateLimitedLog;

/// Cheap to clone; everything inside is shared.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub settings: AdminSettings,
    pub pool: PgPool,
    pub tokens: AdminTokens,
    /// Wrong-token failures per client (`[auth] max_failures`).
    pub auth_throttle: AuthThrottle,
    /// One "wrong token" warning an interval.
    pub failure_log: RateLimitedLog,
    /// One "client throttled" warning an interval.
    pub throttled_log: RateLimitedLog,
    pub health: Health,
    pub metrics: Metrics,
    pub node_id: String,
    /// Wakes the heartbeat early, so the node record follows readiness at once.
    pub beat: Arc<Notify>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
