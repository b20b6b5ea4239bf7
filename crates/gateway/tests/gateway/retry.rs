//! Resilience routing against mock upstreams over loopback: a 429 moves on
//! to the next target, every target rate-limited gives the client the 429
//! with its `retry-after`, a failing target is retried after its back-off,
//! and consecutive failures eject a target until one trial brings it back.

use std::time::Duration;

use obleth_gateway::settings::RoutingSettings;
use obleth_testkit::{MockConfig, MockUpstream};

use crate::support::*;

fn routing(edit: impl FnOnce(&mut RoutingSettings)) -> RoutingSettings {
    let mut r = RoutingSettings {
        backoff_base_ms: 10,
        backoff_max_ms: 20,
        ..RoutingSettings::default()
    };
    edit(&mut r);
    r
}

async fn gateway(
    providers: &[(&str, &MockUpstream)],
    routes: &[(&str, &[&str])],
    routing: RoutingSettings,
) -> (TestGateway, String) {
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.providers = providers
        .iter()
        .map(|(name, upstream)| openai_provider(name, &upstream.base_url()))
        .collect();
    settings.routes = routes.iter().map(|(m, p)| route(m, p)).collect();
    settings.routing = routing;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    (gw, secret)
}

#[tokio::test]
async fn a_429_moves_on_and_when_every_target_is_rate_limited_the_client_gets_the_429() {
    let limited = MockUpstream::start(MockConfig {
        fail_status: Some(429),
        retry_after: Some(Duration::from_secs(2)),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let healthy = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (gw, secret) = gateway(
        &[("limited", &limited), ("healthy", &healthy)],
        &[("m", &["limited", "healthy"]), ("only", &["limited"])],
        // A 2-second retry-after does not fit a 1-second budget.
        routing(|r| r.retry_budget_ms = 1_000),
    )
    .await;

    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-obleth-provider"), Some("healthy"));
    assert_eq!((limited.requests(), healthy.requests()), (1, 1));
    assert_eq!(
        metric(
            &gw,
            "obleth_upstream_retries_total",
            &[("provider", "healthy"), ("after", "status_429")]
        )
        .await,
        1.0
    );

    let answer = chat(&gw, &secret, "only").await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert_eq!(answer.header("retry-after"), Some("2"));
    assert!(
        answer.json()["error"]["message"].is_string(),
        "{}",
        answer.text()
    );
    assert_eq!(limited.requests(), 2, "no retry past the budget");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_target_is_retried_after_its_back_off_until_it_answers() {
    let flaky = MockUpstream::start(MockConfig {
        fail_first: 2,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (gw, secret) = gateway(
        &[("flaky", &flaky)],
        &[("m", &["flaky"])],
        routing(|r| r.eject_after_failures = 0),
    )
    .await;
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(flaky.requests(), 3, "two failures, then the answer");
    assert_eq!(
        metric(
            &gw,
            "obleth_upstream_retries_total",
            &[("provider", "flaky"), ("after", "status_5xx")]
        )
        .await,
        2.0
    );

    // With one attempt allowed, the 5xx is the client's answer.
    flaky.set_config(MockConfig {
        fail_first: 1,
        ..MockConfig::default()
    });
    gw.stop().await.unwrap();
    let (gw, secret) = gateway(
        &[("flaky", &flaky)],
        &[("m", &["flaky"])],
        routing(|r| r.max_attempts = 1),
    )
    .await;
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn consecutive_failures_eject_a_target_until_one_trial_brings_it_back() {
    let broken = MockUpstream::start(MockConfig {
        fail_status: Some(503),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let healthy = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (gw, secret) = gateway(
        &[("broken", &broken), ("healthy", &healthy)],
        &[("m", &["broken", "healthy"])],
        routing(|r| {
            r.eject_after_failures = 2;
            r.eject_ms = 300;
        }),
    )
    .await;
    for _ in 0..4 {
        let answer = chat(&gw, &secret, "m").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.header("x-obleth-provider"), Some("healthy"));
    }
    assert_eq!(broken.requests(), 2, "ejected after two failures");
    let ejections = |provider: &'static str| {
        let gw = &gw;
        async move {
            metric(
                gw,
                "obleth_upstream_ejections_total",
                &[("provider", provider)],
            )
            .await
        }
    };
    assert_eq!(ejections("broken").await, 1.0);

    // It recovers; after the cool-down one request tries it, and it is back.
    broken.set_config(MockConfig::default());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-obleth-provider"), Some("broken"));
    assert_eq!(
        metric(
            &gw,
            "obleth_upstream_recoveries_total",
            &[("provider", "broken")]
        )
        .await,
        1.0
    );
    gw.stop().await.unwrap();
}
