//! The admin's Prometheus metrics and the layer that counts every request by
//! its matched route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use obleth_service::metrics::{must, register_all, ConnectionMetrics};
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::state::AppState;

/// Every metric the admin exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Every metric name registered, for `wiring` (a scrape omits a
    /// labelled metric until it has a series).
    names: Vec<String>,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub auth_failures: IntCounter,
    pub auth_throttled: IntCounter,
    pub ready: IntGauge,
    pub migrations_applied: IntCounter,
    /// Change rows this process deleted past `changes.retention_days`.
    pub changes_pruned: IntCounter,
    /// The listener's connection metrics (`listener="admin"`).
    pub connections: ConnectionMetrics,
    /// What gateways that signed off within [`DROPPED_AT_STOP_WITHIN`]
    /// recorded as dropped usage, by reason; read from `nodes` at each scrape.
    pub fleet_usage_dropped_at_stop: IntGaugeVec,
    /// Live gateways and admins by service and version, read from `nodes`
    /// like `fleet_usage_dropped_at_stop`; versions no node runs any more
    /// are removed, so the label set is the fleet's versions.
    pub fleet_nodes: IntGaugeVec,
    /// 1 while every live node runs one version and has seen one schema
    /// (`GET /api/v1/fleet`'s `summary.uniform`), else 0.
    pub fleet_uniform: IntGauge,
}

/// How far back `obleth_fleet_usage_dropped_at_stop` looks: long enough for
/// an alert on it to fire and be seen after a rollout.
pub const DROPPED_AT_STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        // Names and labels are constants of this file; `must` panics on a
        // programming error, which the unit test below catches.
        let registry = Registry::new();
        let mut m = Metrics {
            connections: ConnectionMetrics::register(&registry),
            requests: must(IntCounterVec::new(
                Opts::new(
                    "obleth_admin_requests_total",
                    "Admin requests by matched route, method and status.",
                ),
                &["route", "method", "status"],
            )),
            request_seconds: must(HistogramVec::new(
                HistogramOpts::new(
                    "obleth_admin_request_duration_seconds",
                    "Time to answer an admin request, by matched route.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]),
                &["route"],
            )),
            auth_failures: must(IntCounter::new(
                "obleth_admin_auth_failures_total",
                "Requests refused for a missing or wrong admin token.",
            )),
            auth_throttled: must(IntCounter::new(
                "obleth_admin_auth_throttled_total",
                "Requests answered 429 because their client sent too many wrong admin tokens.",
            )),
            ready: must(IntGauge::new(
                "obleth_admin_ready",
                "1 while the admin is ready, 0 otherwise.",
            )),
            migrations_applied: must(IntCounter::new(
                "obleth_admin_migrations_applied_total",
                "Migrations this process applied at start.",
            )),
            changes_pruned: must(IntCounter::new(
                "obleth_admin_changes_pruned_total",
                "Change log rows this process deleted for being older than changes.retention_days.",
            )),
            fleet_usage_dropped_at_stop: must(IntGaugeVec::new(
                Opts::new(
                    "obleth_fleet_usage_dropped_at_stop",
                    "Usage records that gateways which stopped in the last 24 hours counted as dropped over their life, by reason, as each recorded when it signed off (a record lost at shutdown is counted after the pod left its endpoints, where no scrape of the gateway sees it).",
                ),
                &["reason"],
            )),
            fleet_nodes: must(IntGaugeVec::new(
                Opts::new(
                    "obleth_fleet_nodes",
                    "Live gateways and admins (heartbeat within 30 s), by service and version, read from nodes every heartbeat interval.",
                ),
                &["service", "version"],
            )),
            fleet_uniform: must(IntGauge::new(
                "obleth_fleet_uniform",
                "1 while every live gateway and admin runs the same version and has seen the same schema, else 0 (GET /api/v1/fleet summary.uniform).",
            )),
            registry,
            names: Vec::new(),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.request_seconds.clone()),
            Box::new(m.auth_failures.clone()),
            Box::new(m.auth_throttled.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.migrations_applied.clone()),
            Box::new(m.changes_pruned.clone()),
            Box::new(m.fleet_usage_dropped_at_stop.clone()),
            Box::new(m.fleet_nodes.clone()),
            Box::new(m.fleet_uniform.clone()),
        ];
        m.names = m.connections.names();
        m.names.extend(register_all(&m.registry, collectors));
        m
    }

    /// Every metric this service exports, by name (a histogram's base
    /// name), whether or not it has a series yet.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Sets `obleth_fleet_usage_dropped_at_stop` from what `nodes` holds:
    /// every reason a gateway counts, 0 where none was recorded.
    pub fn set_usage_dropped_at_stop(&self, sums: &std::collections::BTreeMap<String, i64>) {
        self.fleet_usage_dropped_at_stop.reset();
        for reason in obleth_config::db::nodes::USAGE_DROP_REASONS {
            self.fleet_usage_dropped_at_stop
                .with_label_values(&[reason])
                .set(0);
        }
        for (reason, count) in sums {
            self.fleet_usage_dropped_at_stop
                .with_label_values(&[reason.as_str()])
                .set(*count);
        }
    }

    /// Sets `obleth_fleet_nodes` and `obleth_fleet_uniform` from the live
    /// nodes: only the versions they run have series.
    pub fn set_fleet(&self, nodes: &[crate::api::fleet::NodeView]) {
        let mut counts = std::collections::BTreeMap::<(&str, &str), i64>::new();
        for n in nodes {
            *counts
                .entry((n.service.as_str(), n.version.as_str()))
                .or_default() += 1;
        }
        self.fleet_nodes.reset();
        for ((service, version), count) in counts {
            self.fleet_nodes
                .with_label_values(&[service, version])
                .set(count);
        }
        let uniform = crate::api::fleet::summarize(nodes).uniform;
        self.fleet_uniform.set(i64::from(uniform));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        obleth_service::metrics::render(&self.registry)
    }
}

/// Counts and times each request under its route template (`/api/v1/keys/{id}`),
/// never the raw path, so ids do not explode the label set.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .request_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_register_and_render() {
        let m = super::Metrics::new();
        m.requests.with_label_values(&["/x", "GET", "200"]).inc();
        let text = m.render();
        assert!(text.contains("obleth_admin_requests_total"));
        assert!(text.contains("obleth_admin_ready"));
    }
}
