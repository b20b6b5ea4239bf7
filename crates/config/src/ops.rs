//! The ops contract every obleth service serves: the probe and metrics paths,
//! and the schema facts `/api/version` reports.

use std::sync::OnceLock;

use serde_json::json;

use crate::migrate::MigrationSet;

/// Paths of the ops routes, the same on the gateway and the admin; deploy
/// manifests and their wiring tests read them through `wiring`.
pub mod paths {
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const HEALTH: &str = "/api/v1/health";
    pub const VERSION: &str = "/api/version";
    pub const METRICS: &str = "/metrics";
}

/// The paths as the `wiring` commands print them.
pub fn paths_json() -> serde_json::Value {
    json!({
        "healthz": paths::HEALTHZ,
        "readyz": paths::READYZ,
        "health": paths::HEALTH,
        "version": paths::VERSION,
        "metrics": paths::METRICS,
    })
}

/// What this build knows of the schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbeddedSchema {
    /// The newest migration this build embeds.
    pub expected: Option<i64>,
    /// The newest expand migration this build needs: the oldest schema it runs on.
    pub oldest_compatible: Option<i64>,
}

/// The embedded schema's facts, computed once per process.
pub fn embedded_schema() -> EmbeddedSchema {
    static SCHEMA: OnceLock<EmbeddedSchema> = OnceLock::new();
    *SCHEMA.get_or_init(|| match MigrationSet::embedded() {
        Ok(set) => EmbeddedSchema {
            expected: set.latest_version(),
            oldest_compatible: set.oldest_compatible(),
        },
        Err(_) => EmbeddedSchema::default(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_schema_names_the_newest_migrations() {
        let schema = super::embedded_schema();
        assert!(schema.expected.is_some());
        assert!(schema.oldest_compatible <= schema.expected);
    }
}
