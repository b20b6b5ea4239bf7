//! Readiness and health state shared by the proxy, the feed and the ops routes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// What `/readyz` and `/api/v1/health` report.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    schema_ok: AtomicBool,
    warmed: AtomicBool,
    draining: AtomicBool,
    database_ok: AtomicBool,
    schema_message: RwLock<String>,
    feed_confirmed: RwLock<Option<Instant>>,
}

impl Health {
    /// Ready: schema compatible, cache warmed, not draining.
    pub fn ready(&self) -> bool {
        self.0.schema_ok.load(Ordering::Acquire)
            && self.0.warmed.load(Ordering::Acquire)
            && !self.draining()
    }

    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Release);
    }

    pub fn set_schema(&self, ok: bool, message: impl Into<String>) {
        *self
            .0
            .schema_message
            .write()
            .unwrap_or_else(|e| e.into_inner()) = message.into();
        self.0.schema_ok.store(ok, Ordering::Release);
    }

    pub fn schema(&self) -> (bool, String) {
        (
            self.0.schema_ok.load(Ordering::Acquire),
            self.0
                .schema_message
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    pub fn set_warmed(&self) {
        self.0.warmed.store(true, Ordering::Release);
    }

    pub fn warmed(&self) -> bool {
        self.0.warmed.load(Ordering::Acquire)
    }

    pub fn set_database_ok(&self, ok: bool) {
        self.0.database_ok.store(ok, Ordering::Release);
    }

    pub fn database_ok(&self) -> bool {
        self.0.database_ok.load(Ordering::Acquire)
    }

    /// The feed just confirmed the cache is current.
    pub fn feed_confirmed(&self) {
        *self
            .0
            .feed_confirmed
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Seconds since the feed last confirmed the cache, if it ever did.
    pub fn feed_staleness_secs(&self) -> Option<f64> {
        self.0
            .feed_confirmed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .map(|at| at.elapsed().as_secs_f64())
    }
}
