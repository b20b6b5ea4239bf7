//! Metric registration and rendering: one helper both services use to put
//! collectors in their registry, and the connection metrics every listener
//! reports.

use prometheus::core::Collector;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Registers `collector` in `registry` and answers it.
///
/// Metric names and labels are constants of the calling code, so an invalid
/// or duplicate definition is a programming error (each service's unit test
/// builds its metrics and catches it): this panics naming the metric.
pub fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    let name = collector
        .desc()
        .first()
        .map(|d| d.fq_name.clone())
        .unwrap_or_default();
    if let Err(e) = registry.register(Box::new(collector.clone())) {
        panic!("cannot register metric {name}: {e}");
    }
    collector
}

/// Registers every collector of `collectors` in `registry`; see [`register`].
/// Answers the names of the metrics registered, in order.
pub fn register_all(registry: &Registry, collectors: Vec<Box<dyn Collector>>) -> Vec<String> {
    let names = collectors
        .iter()
        .flat_map(|c| descriptor_names(&**c))
        .collect();
    for collector in collectors {
        let name = collector
            .desc()
            .first()
            .map(|d| d.fq_name.clone())
            .unwrap_or_default();
        if let Err(e) = registry.register(collector) {
            panic!("cannot register metric {name}: {e}");
        }
    }
    names
}

/// The metric names `collector` describes (a histogram's base name, without
/// `_bucket`, `_sum` and `_count`).
fn descriptor_names(collector: &dyn Collector) -> Vec<String> {
    collector.desc().iter().map(|d| d.fq_name.clone()).collect()
}

/// Unwraps a metric constructor's result; see [`register`] for why a failure
/// panics.
pub fn must<T>(result: prometheus::Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("invalid metric definition: {e}"),
    }
}

/// The text exposition format of everything in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "Could not encode metrics.");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// What every listener reports, labelled by listener name (`proxy`, `ops`,
/// `admin`).
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    /// `obleth_open_connections{listener}`.
    pub open: IntGaugeVec,
    /// `obleth_connections_refused_total{listener}`: accepted and closed at
    /// once because the listener was at `max_connections`.
    pub refused: IntCounterVec,
    /// `obleth_connections_timed_out_total{listener,reason}`: closed by the
    /// server for a header (`header`) or idle keep-alive (`idle`) timeout.
    pub timed_out: IntCounterVec,
}

impl ConnectionMetrics {
    /// The names of the connection metrics.
    pub fn names(&self) -> Vec<String> {
        [
            descriptor_names(&self.open),
            descriptor_names(&self.refused),
            descriptor_names(&self.timed_out),
        ]
        .concat()
    }

    /// Creates the connection metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> ConnectionMetrics {
        ConnectionMetrics {
            open: register(
                registry,
                must(IntGaugeVec::new(
                    Opts::new(
                        "obleth_open_connections",
                        "Client connections open, by listener.",
                    ),
                    &["listener"],
                )),
            ),
            refused: register(
                registry,
                must(IntCounterVec::new(
                    Opts::new(
                        "obleth_connections_refused_total",
                        "Connections closed at once because the listener was at its max_connections, by listener.",
                    ),
                    &["listener"],
                )),
            ),
            timed_out: register(
                registry,
                must(IntCounterVec::new(
                    Opts::new(
                        "obleth_connections_timed_out_total",
                        "Connections the server closed for a header or idle keep-alive timeout, by listener and reason (header, idle).",
                    ),
                    &["listener", "reason"],
                )),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_metrics_register_and_render() {
        let registry = Registry::new();
        let m = ConnectionMetrics::register(&registry);
        m.refused.with_label_values(&["proxy"]).inc();
        m.open.with_label_values(&["proxy"]).set(3);
        let text = render(&registry);
        assert!(text.contains("obleth_connections_refused_total{listener=\"proxy\"} 1"));
        assert!(text.contains("obleth_open_connections{listener=\"proxy\"} 3"));
    }

    #[test]
    #[should_panic(expected = "obleth_open_connections")]
    fn registering_twice_panics_naming_the_metric() {
        let registry = Registry::new();
        ConnectionMetrics::register(&registry);
        ConnectionMetrics::register(&registry);
    }
}
