//! n. Resilience routing under load: of two targets for one model, the
//! preferred one starts answering 429 with `retry-after`, then dies, then
//! comes back. Three gateways behind HAProxy serve throughout: no request
//! fails, every success has its usage row, the dead target is ejected by
//! the gateways and taken back after its half-open trial.

use std::time::Duration;

use obleth_config::db::catalog::{create_provider, create_route, NewProvider};
use obleth_config::model::{ProviderKind, RouteTarget};
use obleth_e2e::fleet::{FleetSpec, Prepared};
use obleth_e2e::load::{Load, LoadSpec};
use obleth_testkit::http::request;
use obleth_testkit::poll::wait_for;
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream};

use crate::ONE_AT_A_TIME;

/// The sum of a metric over the fleet's gateways.
async fn fleet_metric(
    fleet: &obleth_e2e::fleet::Fleet,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let mut total = 0.0;
    for g in &fleet.gateways {
        let url = format!("http://127.0.0.1:{}/metrics", g.ops);
        let text = request(http::Method::GET, &url, &[], "").await.text();
        total += obleth_testkit::metrics::sum(&text, name, labels);
    }
    total
}

#[tokio::test]
async fn a_target_that_rate_limits_then_dies_is_ejected_and_taken_back_with_no_failed_request() {
    let _one = ONE_AT_A_TIME.lock().await;
    let db = fresh_database().await.unwrap();
    let spec = FleetSpec {
        token_delay: Duration::from_millis(20),
        stream_tokens: 20,
        extra_settings: "[routing]\neject_after_failures = 3\neject_ms = 2000\nbackoff_base_ms = 50\nbackoff_max_ms = 500\n".to_owned(),
        ..FleetSpec::default()
    };
    let prepared = Prepared::new(&db.url, &spec).await.unwrap();
    // The preferred target, `flaky`, ahead of the fleet's own `mock`.
    let flaky = MockUpstream::start(MockConfig {
        token_delay: spec.token_delay,
        completion_tokens: spec.stream_tokens,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let flaky_addr = flaky.addr();
    create_provider(
        &prepared.pool,
        &NewProvider {
            timeout_ms: 10_000,
            options: Default::default(),
            ..db::provider("flaky", ProviderKind::OpenAi, &flaky.base_url())
        },
    )
    .await
    .unwrap();
    let targets = ["flaky", "mock"].map(|p| RouteTarget::new(p, None));
    create_route(&prepared.pool, "mm", &targets).await.unwrap();
    let fleet = prepared.launch(&spec).await.unwrap();
    let load = Load::start(LoadSpec {
        model: "mm".to_owned(),
        ..fleet.load_spec(30, 6)
    });

    // Healthy: `flaky` serves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let healthy = flaky.requests();
    assert!(healthy > 0, "the preferred target served");

    // Rate-limited, with retry-after: the gateways move on to `mock`.
    flaky.set_config(MockConfig {
        fail_status: Some(429),
        retry_after: Some(Duration::from_secs(1)),
        ..flaky.config()
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Dead: connections refused.
    flaky.shutdown().await;
    wait_for(
        Duration::from_secs(30),
        "every gateway to eject the dead target",
        || async {
            let ejected = fleet_metric(
                &fleet,
                "obleth_upstream_ejections_total",
                &[("provider", "flaky")],
            )
            .await;
            (ejected >= fleet.gateways.len() as f64).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Back, on the same address: each gateway's half-open trial takes it back.
    let listener = tokio::net::TcpListener::bind(flaky_addr).await.unwrap();
    let back = MockUpstream::start_on(
        listener,
        MockConfig {
            token_delay: spec.token_delay,
            completion_tokens: spec.stream_tokens,
            ..MockConfig::default()
        },
    )
    .await
    .unwrap();
    let recovered = wait_for(
        Duration::from_secs(60),
        "every gateway to take the target back",
        || async {
            let recovered = fleet_metric(
                &fleet,
                "obleth_upstream_recoveries_total",
                &[("provider", "flaky")],
            )
            .await;
            (recovered >= fleet.gateways.len() as f64 && back.requests() > 0).then_some(recovered)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let report = load.finish().await;
    let ejections = fleet_metric(
        &fleet,
        "obleth_upstream_ejections_total",
        &[("provider", "flaky")],
    )
    .await;
    let retries_429 = fleet_metric(
        &fleet,
        "obleth_upstream_retries_total",
        &[("provider", "mock"), ("after", "status_429")],
    )
    .await;
    let served_after = back.requests();
    let stopped = fleet.stop().await.unwrap();
    let rows = stopped.successful_usage_rows().await.unwrap();
    report.print("resilience");
    obleth_e2e::evidence(&format!(
        "[resilience] flaky served {healthy} before, {served_after} after coming back; \
         ejections {ejections}, recoveries {recovered}, retries after a 429 {retries_429}; \
         usage rows with status 200: {rows}"
    ));
    assert_eq!(report.failed_total(), 0, "{:?}", report.failed);
    assert_eq!(report.sent, report.succeeded, "every request accounted for");
    assert!(report.streams_succeeded > 0, "the load streamed");
    assert!(retries_429 > 0.0, "429s moved on to the other target");
    assert_eq!(rows, report.succeeded as i64, "one usage row per success");
}
