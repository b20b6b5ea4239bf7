//! The readiness facts both services share: whether the schema suits this
//! build (and why not), the newest migration the database has, whether the
//! node drains, and whether the database answered. Written by start-up, the
//! heartbeat and the drain; read by the ops routes. A service with more facts
//! (the gateway's key cache) composes this and adds its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// Cheap to clone; every clone sees the same facts.
#[derive(Debug, Clone)]
pub struct Health(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    schema_ok: AtomicBool,
    draining: AtomicBool,
    database_ok: AtomicBool,
    schema_message: RwLock<String>,
    schema_applied: RwLock<Option<i64>>,
}

impl Default for Health {
    fn default() -> Self {
        Health(Arc::new(Inner {
            schema_ok: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            database_ok: AtomicBool::new(false),
            schema_message: RwLock::new("checking the schema".to_owned()),
            schema_applied: RwLock::new(None),
        }))
    }
}

impl Health {
    /// Ready as far as the shared facts go: the schema suits this build and
    /// the node is not draining.
    pub fn ready(&self) -> bool {
        self.schema_ok() && !self.draining()
    }

    /// Why the node is not ready as far as the shared facts go; empty when it is.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.draining() {
            reasons.push("draining".to_owned());
        }
        let (ok, message) = self.schema();
        if !ok {
            reasons.push(message);
        }
        reasons
    }

    pub fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire)
    }

    /// Not ready from now on; the drain's first step.
    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Release);
    }

    pub fn schema_ok(&self) -> bool {
        self.0.schema_ok.load(Ordering::Acquire)
    }

    pub fn set_schema(&self, ok: bool, message: impl Into<String>) {
        *self
            .0
            .schema_message
            .write()
            .unwrap_or_else(|e| e.into_inner()) = message.into();
        self.0.schema_ok.store(ok, Ordering::Release);
    }

    /// Whether the schema suits this build, and the verdict's message.
    pub fn schema(&self) -> (bool, String) {
        let message = self
            .0
            .schema_message
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.schema_ok(), message)
    }

    /// The newest migration applied in the database, as last read (by the
    /// schema check at start, then by every heartbeat).
    pub fn schema_applied(&self) -> Option<i64> {
        *self
            .0
            .schema_applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_schema_applied(&self, version: Option<i64>) {
        *self
            .0
            .schema_applied
            .write()
            .unwrap_or_else(|e| e.into_inner()) = version;
    }

    pub fn database_ok(&self) -> bool {
        self.0.database_ok.load(Ordering::Acquire)
    }

    pub fn set_database_ok(&self, ok: bool) {
        self.0.database_ok.store(ok, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::Health;

    #[test]
    fn ready_needs_the_schema_and_not_draining() {
        let h = Health::default();
        assert!(!h.ready());
        assert_eq!(h.not_ready_reasons(), ["checking the schema"]);
        h.set_schema(true, "compatible");
        assert!(h.ready() && h.not_ready_reasons().is_empty());
        h.start_draining();
        assert!(!h.ready());
        assert_eq!(h.not_ready_reasons(), ["draining"]);
    }
}
