//! Readiness and health state shared by the proxy, the feed and the ops
//! routes: the facts every service has (`obleth_service::Health`: schema,
//! applied version, draining, database) plus the gateway's own, the key
//! cache's warm-up and when the feed last confirmed it.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// What `/readyz` and `/api/v1/health` report. Derefs to the shared facts.
#[derive(Debug, Clone, Default)]
pub struct Health {
    shared: obleth_service::Health,
    cache: Arc<CacheFacts>,
}

#[derive(Debug, Default)]
struct CacheFacts {
    warmed: AtomicBool,
    feed_confirmed: RwLock<Option<Instant>>,
}

impl Deref for Health {
    type Target = obleth_service::Health;

    fn deref(&self) -> &obleth_service::Health {
        &self.shared
    }
}

impl Health {
    /// The facts shared with every service, for the heartbeat and the drain.
    pub fn shared(&self) -> &obleth_service::Health {
        &self.shared
    }

    /// Ready: schema compatible, cache warmed, not draining.
    pub fn ready(&self) -> bool {
        self.shared.ready() && self.warmed()
    }

    /// Why the gateway is not ready; empty when it is.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = self.shared.not_ready_reasons();
        if !self.warmed() {
            reasons.push("key cache not warmed yet".to_owned());
        }
        reasons
    }

    pub fn set_warmed(&self) {
        self.cache.warmed.store(true, Ordering::Release);
    }

    pub fn warmed(&self) -> bool {
        self.cache.warmed.load(Ordering::Acquire)
    }

    /// The feed just confirmed the cache is current.
    pub fn feed_confirmed(&self) {
        *self
            .cache
            .feed_confirmed
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Seconds since the feed last confirmed the cache, if it ever did.
    pub fn feed_staleness_secs(&self) -> Option<f64> {
        self.cache
            .feed_confirmed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .map(|at| at.elapsed().as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn ready_also_needs_a_warm_cache() {
        let h = Health::default();
        h.set_schema(true, "compatible");
        assert!(!h.ready());
        assert_eq!(h.not_ready_reasons(), ["key cache not warmed yet"]);
        h.set_warmed();
        assert!(h.ready());
    }
}
