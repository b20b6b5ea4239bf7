//! The node record: a service in the `nodes` table with its version, whether
//! it is ready and the schema it sees, refreshed by one heartbeat loop that
//! the gateway and the admin share.

use std::sync::Arc;
use std::time::Duration;

use obleth_config::db::nodes::{self, Beat, UsageDropped};
use obleth_config::model::NodeInfo;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::health::Health;

/// Answers whether the node is ready right now (the service's whole
/// readiness, which may need more than the shared [`Health`] facts).
pub type ReadyFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// One node's heartbeat.
pub struct Heartbeat {
    /// `gateway` or `admin`, as the `nodes` table spells it.
    pub service: &'static str,
    pub node_id: String,
    pub pool: PgPool,
    pub health: Health,
    pub ready: ReadyFn,
    pub every: Duration,
    /// Beats at once when notified (the admin's start-up, once ready).
    pub wake: Option<Arc<Notify>>,
    /// Whether a beat's outcome says if the database answers. The admin's
    /// health follows its heartbeat; the gateway's follows its change feed,
    /// which knows whether the key cache is current, so it passes false.
    pub tracks_database: bool,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("service", &self.service)
            .field("node_id", &self.node_id)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Heartbeat {
    fn info(&self) -> NodeInfo {
        NodeInfo {
            node_id: self.node_id.clone(),
            service: self.service.to_owned(),
            version: obleth_config::version::VERSION.to_owned(),
            git_commit: Some(obleth_config::version::COMMIT.to_owned()),
            hostname: obleth_config::process::hostname(),
            schema_version: self.health.schema_applied(),
        }
    }

    /// Registers and beats until `stop`, every `every` or at once when `wake`
    /// is notified. Each beat records readiness and reads the newest applied
    /// migration, which it stores in [`Health::set_schema_applied`] so that
    /// `/api/version` and the fleet view follow `obleth-migrator up` within one
    /// beat. Failures are logged and retried; they never block serving. Before
    /// the first migration there is no `nodes` table, so registering fails
    /// quietly until the schema is ready.
    pub async fn run(self, stop: CancellationToken) {
        let mut registered = false;
        loop {
            if !registered {
                match nodes::register_node(&self.pool, &self.info()).await {
                    Ok(()) => registered = true,
                    Err(e) if !self.health.schema_ok() => {
                        debug!(error = %e, "Not registered yet: the schema is not ready.");
                    }
                    Err(e) => {
                        self.database_answered(false);
                        warn!(error = %e, "Could not register the node; will retry.");
                    }
                }
            }
            if registered {
                match nodes::heartbeat(&self.pool, &self.node_id, (self.ready)()).await {
                    Ok(Beat::Recorded { schema_version }) => {
                        self.database_answered(true);
                        if schema_version.is_some() {
                            self.health.set_schema_applied(schema_version);
                        }
                    }
                    Ok(Beat::NotRegistered) => registered = false,
                    Err(e) => {
                        self.database_answered(false);
                        warn!(error = %e, "Node heartbeat failed; will retry.");
                    }
                }
            }
            let wake = async {
                match &self.wake {
                    Some(notify) => notify.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
                _ = wake => {}
            }
        }
    }

    fn database_answered(&self, ok: bool) {
        if self.tracks_database {
            self.health.set_database_ok(ok);
        }
    }
}

/// Marks the node stopped on a clean shutdown, with the usage a gateway
/// dropped over its life; a failure is logged.
pub async fn mark_stopped(pool: &PgPool, node_id: &str, usage_dropped: Option<&UsageDropped>) {
    if let Err(e) = nodes::mark_stopped(pool, node_id, usage_dropped).await {
        warn!(error = %e, "Could not mark the node stopped.");
    }
}
