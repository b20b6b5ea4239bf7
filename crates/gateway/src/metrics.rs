//! The gateway's Prometheus metrics, registered in one registry served on the
//! ops listener. Label values come from fixed sets or from the operator's
//! configuration, never from what a client sends: a model the catalog does not
//! route is counted as `other`, a status outside the standard ones by its class.

use std::borrow::Cow;

use obleth_service::metrics::{must, register_all, ConnectionMetrics};
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

use crate::catalog::Catalog;

/// Every metric the gateway exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Every metric name registered, for `wiring` (a scrape omits a
    /// labelled metric until it has a series).
    names: Vec<String>,
    pub requests: IntCounterVec,
    /// Requests by model, the provider that answered (`none` when none
    /// did) and status class (`2xx`, `4xx`, `5xx`).
    pub model_requests: IntCounterVec,
    /// Tokens charged, by model, provider and kind (`prompt`, `completion`).
    pub tokens: IntCounterVec,
    /// From a request's arrival to the first byte of a successful answer's
    /// body handed to the client, by model and provider.
    pub time_to_first_token: HistogramVec,
    pub upstream_seconds: HistogramVec,
    pub upstream_attempts: IntCounterVec,
    /// Attempts after a request's first, by provider and why the one
    /// before failed.
    pub upstream_retries: IntCounterVec,
    /// Targets ejected, and back after their half-open trial, by provider.
    pub upstream_ejections: IntCounterVec,
    pub upstream_recoveries: IntCounterVec,
    /// Credentials of a key pool benched after a 429, 401 or 403, by
    /// provider and credential slot (0 is `credential_ref`, `i + 1` is
    /// `credential_pool[i]`).
    pub credentials_benched: IntCounterVec,
    pub overhead_seconds: Histogram,
    pub in_flight: IntGauge,
    pub cache_entries: IntGauge,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub key_db_lookups: IntCounterVec,
    pub key_lookups_throttled: IntCounter,
    pub warmup_seconds: Gauge,
    pub warmup_keys: IntGauge,
    pub feed_staleness_seconds: Gauge,
    pub feed_changes_applied: IntCounter,
    /// Full reloads by the feed instead of a catch-up, by reason (`pruned`,
    /// `rewound`, `server_changed`).
    pub feed_full_reloads: IntCounterVec,
    pub usage_queue_depth: IntGauge,
    pub usage_buffered: IntGauge,
    pub usage_written: IntCounter,
    pub usage_dropped: IntCounterVec,
    /// The ledger's daily partitions this gateway created or dropped, and
    /// upkeep rounds that failed, by action.
    pub ledger_partitions: IntCounterVec,
    pub streams_cut: IntCounter,
    /// Streams ended at `server.max_stream_secs`.
    pub streams_too_long: IntCounter,
    /// Streams ended because their upstream was silent longer than its
    /// idle timeout, by provider.
    pub streams_idle: IntCounterVec,
    pub rejected: IntCounterVec,
    /// Quota lease calls by outcome (`ok`, `error`).
    pub quota_lease_calls: IntCounterVec,
    /// 1 while limits fall back to this gateway's share.
    pub quota_fallback: IntGauge,
    /// Both listeners' connection metrics (`listener` is `proxy` or `ops`).
    pub connections: ConnectionMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[allow(clippy::too_many_lines)]
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ];
        // Metric names and labels are constants of this file; `must` panics on
        // a programming error, which the unit test below catches.
        let mut m = Metrics {
            connections: ConnectionMetrics::register(&registry),
            requests: must(IntCounterVec::new(
                Opts::new(
                    "obleth_requests_total",
                    "Proxied requests by route, status and model.",
                ),
                &["route", "status", "model"],
            )),
            model_requests: must(IntCounterVec::new(
                Opts::new(
                    "obleth_model_requests_total",
                    "Proxied requests by model (routed by the catalog, else other), the provider that answered (none when none did) and status class.",
                ),
                &["model", "provider", "class"],
            )),
            tokens: must(IntCounterVec::new(
                Opts::new(
                    "obleth_tokens_total",
                    "Tokens charged to requests (reported by the upstream, else estimated), by model, provider and kind (prompt, completion).",
                ),
                &["model", "provider", "kind"],
            )),
            time_to_first_token: must(HistogramVec::new(
                HistogramOpts::new(
                    "obleth_time_to_first_token_seconds",
                    "Time from a request's arrival to the first byte of a successful answer's body handed to the client (a stream's first event; an answer that is not streamed is read whole first), by model and provider.",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0,
                    60.0, 120.0,
                ]),
                &["model", "provider"],
            )),
            upstream_seconds: must(HistogramVec::new(
                HistogramOpts::new(
                    "obleth_upstream_duration_seconds",
                    "Time until the upstream's response headers, by provider.",
                )
                .buckets(buckets.clone()),
                &["provider"],
            )),
            upstream_attempts: must(IntCounterVec::new(
                Opts::new(
                    "obleth_upstream_attempts_total",
                    "Upstream attempts by provider and outcome (ok, error, timeout, first_byte_timeout, idle_timeout, status_5xx, status_429, status_401, status_403, refused, too_large).",
                ),
                &["provider", "outcome"],
            )),
            upstream_retries: must(IntCounterVec::new(
                Opts::new(
                    "obleth_upstream_retries_total",
                    "Upstream attempts after a request's first, by the provider tried and why the attempt before failed (status_5xx, status_429, status_401, status_403, error, timeout, first_byte_timeout, idle_timeout, too_large).",
                ),
                &["provider", "after"],
            )),
            upstream_ejections: must(IntCounterVec::new(
                Opts::new(
                    "obleth_upstream_ejections_total",
                    "Providers ejected after routing.eject_after_failures consecutive failures, by provider.",
                ),
                &["provider"],
            )),
            upstream_recoveries: must(IntCounterVec::new(
                Opts::new(
                    "obleth_upstream_recoveries_total",
                    "Ejected providers that answered their half-open trial, by provider.",
                ),
                &["provider"],
            )),
            credentials_benched: must(IntCounterVec::new(
                Opts::new(
                    "obleth_upstream_credentials_benched_total",
                    "Credentials of a provider's key pool benched for routing.eject_ms after a 429, 401 or 403, by provider and credential (0 is credential_ref, i + 1 is credential_pool[i]).",
                ),
                &["provider", "credential"],
            )),
            overhead_seconds: must(Histogram::with_opts(
                HistogramOpts::new(
                    "obleth_gateway_overhead_seconds",
                    "Time a request spent in the gateway, not waiting on the upstream.",
                )
                .buckets(vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
                ]),
            )),
            in_flight: must(IntGauge::new(
                "obleth_in_flight_requests",
                "Requests and streams being served.",
            )),
            cache_entries: must(IntGauge::new(
                "obleth_key_cache_entries",
                "Keys in the cache.",
            )),
            cache_hits: must(IntCounter::new(
                "obleth_key_cache_hits_total",
                "Key lookups answered by the cache.",
            )),
            cache_misses: must(IntCounter::new(
                "obleth_key_cache_misses_total",
                "Key lookups the cache could not answer.",
            )),
            key_db_lookups: must(IntCounterVec::new(
                Opts::new(
                    "obleth_key_db_lookups_total",
                    "Key lookups that went to the database, by result (found, unknown, error).",
                ),
                &["result"],
            )),
            key_lookups_throttled: must(IntCounter::new(
                "obleth_key_lookups_throttled_total",
                "Unknown keys answered 503 without a database lookup because the lookup rate (cache.miss_lookups_per_sec) or concurrency bound was reached.",
            )),
            warmup_seconds: must(Gauge::new(
                "obleth_key_cache_warmup_seconds",
                "How long the last warm-up of the key cache took.",
            )),
            warmup_keys: must(IntGauge::new(
                "obleth_key_cache_warmup_keys",
                "Keys loaded by the last warm-up.",
            )),
            feed_staleness_seconds: must(Gauge::new(
                "obleth_feed_staleness_seconds",
                "Seconds since the change feed last confirmed the cache is current.",
            )),
            feed_changes_applied: must(IntCounter::new(
                "obleth_feed_changes_applied_total",
                "Change-log entries applied to the caches.",
            )),
            feed_full_reloads: must(IntCounterVec::new(
                Opts::new(
                    "obleth_feed_full_reloads_total",
                    "Times the change feed reloaded every key and the catalog instead of catching up, by reason (pruned, rewound, server_changed).",
                ),
                &["reason"],
            )),
            usage_queue_depth: must(IntGauge::new(
                "obleth_usage_queue_depth",
                "Usage records waiting in the channel to the writer.",
            )),
            usage_buffered: must(IntGauge::new(
                "obleth_usage_buffered",
                "Usage records held by the writer for retry.",
            )),
            usage_written: must(IntCounter::new(
                "obleth_usage_written_total",
                "Usage records written to the database.",
            )),
            usage_dropped: must(IntCounterVec::new(
                Opts::new(
                    "obleth_usage_dropped_total",
                    "Usage records dropped, by reason (queue_full, buffer_full, shutdown, no_database: embedded mode keeps no usage).",
                ),
                &["reason"],
            )),
            ledger_partitions: must(IntCounterVec::new(
                Opts::new(
                    "obleth_ledger_partitions_total",
                    "Usage ledger partitions this gateway created ahead or dropped past usage.retention_days, and failed upkeep rounds, by action (created, dropped, failed).",
                ),
                &["action"],
            )),
            streams_cut: must(IntCounter::new(
                "obleth_drain_cut_streams_total",
                "Streams ended because the drain timeout passed.",
            )),
            streams_too_long: must(IntCounter::new(
                "obleth_streams_too_long_total",
                "Streams ended because they ran longer than server.max_stream_secs.",
            )),
            streams_idle: must(IntCounterVec::new(
                Opts::new(
                    "obleth_streams_idle_timeout_total",
                    "Streams ended because the upstream sent nothing for longer than its idle timeout (options.idle_timeout_ms, else 300 s), by provider.",
                ),
                &["provider"],
            )),
            rejected: must(IntCounterVec::new(
                Opts::new(
                    "obleth_rejected_requests_total",
                    "Requests answered with an error by the gateway (refusals and upstream failures), by error code.",
                ),
                &["code"],
            )),
            quota_lease_calls: must(IntCounterVec::new(
                Opts::new(
                    "obleth_quota_lease_calls_total",
                    "Batched calls to the shared quota counters, by outcome (ok, error).",
                ),
                &["outcome"],
            )),
            quota_fallback: must(IntGauge::new(
                "obleth_quota_fallback",
                "1 while the quota database is unreachable and each limit falls back to this gateway's share.",
            )),
            registry,
            names: Vec::new(),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.model_requests.clone()),
            Box::new(m.tokens.clone()),
            Box::new(m.time_to_first_token.clone()),
            Box::new(m.upstream_seconds.clone()),
            Box::new(m.upstream_attempts.clone()),
            Box::new(m.upstream_retries.clone()),
            Box::new(m.upstream_ejections.clone()),
            Box::new(m.upstream_recoveries.clone()),
            Box::new(m.credentials_benched.clone()),
            Box::new(m.overhead_seconds.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.cache_entries.clone()),
            Box::new(m.cache_hits.clone()),
            Box::new(m.cache_misses.clone()),
            Box::new(m.key_db_lookups.clone()),
            Box::new(m.key_lookups_throttled.clone()),
            Box::new(m.warmup_seconds.clone()),
            Box::new(m.warmup_keys.clone()),
            Box::new(m.feed_staleness_seconds.clone()),
            Box::new(m.feed_changes_applied.clone()),
            Box::new(m.feed_full_reloads.clone()),
            Box::new(m.usage_queue_depth.clone()),
            Box::new(m.usage_buffered.clone()),
            Box::new(m.usage_written.clone()),
            Box::new(m.usage_dropped.clone()),
            Box::new(m.ledger_partitions.clone()),
            Box::new(m.streams_cut.clone()),
            Box::new(m.streams_too_long.clone()),
            Box::new(m.streams_idle.clone()),
            Box::new(m.rejected.clone()),
            Box::new(m.quota_lease_calls.clone()),
            Box::new(m.quota_fallback.clone()),
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

    /// Counts one proxied request in `obleth_requests_total` and
    /// `obleth_model_requests_total` alike, so the two always agree. The
    /// labels are the caller's, from fixed sets and the catalog.
    pub fn count_request(&self, route: &str, status: u16, model: &str, provider: &str) {
        self.requests
            .with_label_values(&[route, status_label(status).as_ref(), model])
            .inc();
        self.model_requests
            .with_label_values(&[model, provider, status_class(status)])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        obleth_service::metrics::render(&self.registry)
    }
}

/// The `model` label of a request whose model is not routed by the catalog
/// (including names a client made up).
pub const OTHER_MODEL: &str = "other";
/// The `model` label of a request refused before its body was read.
pub const NO_MODEL: &str = "unknown";

/// The `model` label for `model`: itself when the current catalog routes it,
/// else [`OTHER_MODEL`].
pub fn model_label<'a>(catalog: &Catalog, model: &'a str) -> &'a str {
    if catalog.route(model).is_some() {
        model
    } else {
        OTHER_MODEL
    }
}

/// The `provider` label of a request no provider answered.
pub const NO_PROVIDER: &str = "none";

/// The `class` label of `obleth_model_requests_total`: `2xx`, `4xx`, `5xx`
/// (499, the client went away, is `4xx`), anything else `other`.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// The `status` label: a standard status as its number, any other by its
/// class (`5xx`), so an upstream cannot create series with odd statuses. 499
/// (the client went away) is the gateway's own and kept.
pub fn status_label(status: u16) -> Cow<'static, str> {
    // The statuses a gateway answers most, without an allocation each.
    let common = match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        _ => "",
    };
    if !common.is_empty() {
        return Cow::Borrowed(common);
    }
    match http::StatusCode::from_u16(status) {
        Ok(code) if code.canonical_reason().is_some() || status == 499 => {
            Cow::Owned(status.to_string())
        }
        _ => match status / 100 {
            1 => Cow::Borrowed("1xx"),
            2 => Cow::Borrowed("2xx"),
            3 => Cow::Borrowed("3xx"),
            4 => Cow::Borrowed("4xx"),
            5 => Cow::Borrowed("5xx"),
            _ => Cow::Borrowed("other"),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_register_and_render() {
        let m = super::Metrics::new();
        m.requests.with_label_values(&["chat", "200", "m"]).inc();
        let text = m.render();
        assert!(text.contains("obleth_requests_total"));
        assert!(text.contains("obleth_in_flight_requests"));
    }

    #[test]
    fn names_hold_every_metric_rendered_and_those_without_series() {
        let m = super::Metrics::new();
        m.requests.with_label_values(&["chat", "200", "m"]).inc();
        m.time_to_first_token
            .with_label_values(&["m", "p"])
            .observe(0.1);
        m.connections.open.with_label_values(&["proxy"]).set(1);
        let text = m.render();
        let rendered: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert!(rendered.contains(&"obleth_time_to_first_token_seconds"));
        for name in &rendered {
            assert!(m.names().iter().any(|n| n == name), "{name}");
        }
        // No series yet, so not rendered, but exported.
        assert!(!rendered.contains(&"obleth_upstream_ejections_total"));
        assert!(m
            .names()
            .iter()
            .any(|n| n == "obleth_upstream_ejections_total"));
        assert!(m
            .names()
            .iter()
            .any(|n| n == "obleth_connections_timed_out_total"));
    }

    #[test]
    fn status_labels_come_from_a_fixed_set() {
        assert_eq!(super::status_label(200), "200");
        assert_eq!(super::status_label(499), "499");
        assert_eq!(super::status_label(498), "4xx");
        assert_eq!(super::status_label(599), "5xx");
        assert_eq!(super::status_label(999), "other");
        assert_eq!(super::status_label(0), "other");
        assert_eq!(super::status_class(200), "2xx");
        assert_eq!(super::status_class(499), "4xx");
        assert_eq!(super::status_class(503), "5xx");
        assert_eq!(super::status_class(0), "other");
    }
}
