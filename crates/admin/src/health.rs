//! Readiness and health state, written by start-up and the heartbeat, read by the ops routes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// What `/readyz` and `/api/v1/health` report.
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
    /// Ready: the schema suits this build and the node is not draining.
    pub fn ready(&self) -> bool {
        self.schema_ok() && !self.draining()
    }

    /// Why the node is not ready; empty when it is.
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

    pub fn schema(&self) -> (bool, String) {
        let message = self
            .0
            .schema_message
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.schema_ok(), message)
    }

    /// The newest migration applied in the database, as last read.
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
