//! Weighted targets, key pools and body timeouts against upstreams on
//! loopback: weights split a priority's traffic, a key pool takes turns and
//! benches a rate-limited key, a first byte too late moves on to the next
//! target, and an idle stream is cut and still charged.

use std::time::Duration;

use http_body_util::BodyExt;
use obleth_config::db::catalog::NewProvider;
use obleth_config::model::{ProviderKind, ProviderOptions};
use obleth_gateway::settings::{RouteConfig, TargetConfig};
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use crate::support::*;

/// A route to `(provider, weight, priority)` targets.
fn weighted_route(model: &str, targets: &[(&str, u32, u32)]) -> RouteConfig {
    RouteConfig {
        model: model.to_owned(),
        targets: targets
            .iter()
            .map(|&(provider, weight, priority)| TargetConfig {
                provider: provider.to_owned(),
                upstream_model: None,
                weight,
                priority: Some(priority),
            })
            .collect(),
    }
}

/// An upstream that sends every answer's head at once and then no body
/// byte for a minute: a model stuck before its first token.
async fn stalled_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    (format!("http://{addr}/v1"), task)
}

#[tokio::test]
async fn weights_split_a_priority_s_traffic_about_three_to_one_and_standbys_wait() {
    let heavy = MockUpstream::start(MockConfig::default()).await.unwrap();
    let light = MockUpstream::start(MockConfig::default()).await.unwrap();
    let standby = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    settings.providers = vec![
        openai_provider("heavy", &heavy.base_url()),
        openai_provider("light", &light.base_url()),
        openai_provider("standby", &standby.base_url()),
    ];
    settings.routes = vec![weighted_route(
        "m",
        &[("standby", 0, 0), ("heavy", 3, 0), ("light", 1, 0)],
    )];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    for _ in 0..200 {
        let answer = chat(&gw, &secret, "m").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // 150 expected; the bounds are about five standard deviations wide.
    let (h, l) = (heavy.requests(), light.requests());
    assert_eq!(h + l, 200, "every request went to a weighted target");
    assert!((120..=180).contains(&h), "heavy {h}, light {l}");
    assert_eq!(
        standby.requests(),
        0,
        "the standby waits while others serve"
    );

    // Both weighted targets fail: the standby answers.
    heavy.set_config(MockConfig {
        fail_status: Some(503),
        ..MockConfig::default()
    });
    light.set_config(MockConfig {
        fail_status: Some(503),
        ..MockConfig::default()
    });
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-obleth-provider"), Some("standby"));
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_key_pool_takes_turns_and_a_429_retries_at_once_with_the_next_key() {
    let upstream = MockUpstream::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key-a"), "sk-pool-a").unwrap();
    std::fs::write(dir.path().join("key-b"), "sk-pool-b").unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    let mut provider = openai_provider("pooled", &upstream.base_url());
    provider.credential = Some(format!("file:{}/key-a", dir.path().display()));
    provider.options = ProviderOptions {
        credential_pool: vec![format!("file:{}/key-b", dir.path().display())],
        ..ProviderOptions::default()
    };
    settings.providers = vec![provider];
    settings.routes = vec![route("m", &["pooled"])];
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    settings.routing.eject_ms = 60_000;
    // Too short for the 429's retry-after: only a retry with the next key
    // at once, not one of the same target after its wait, fits.
    settings.routing.retry_budget_ms = 1_000;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let seen = || {
        upstream
            .last_request()
            .and_then(|r| r.header("authorization").map(str::to_owned))
            .unwrap_or_default()
    };

    for expected in ["a", "b", "a", "b"] {
        let answer = chat(&gw, &secret, "m").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(seen(), format!("Bearer sk-pool-{expected}"));
    }

    // Key a's turn: it is rate limited, and the retry uses key b at once.
    upstream.set_config(MockConfig {
        fail_first: 1,
        fail_status: Some(429),
        retry_after: Some(Duration::from_secs(30)),
        ..MockConfig::default()
    });
    let before = upstream.requests();
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.requests() - before, 2, "the 429, then the retry");
    assert_eq!(seen(), "Bearer sk-pool-b");
    let benched = |credential: &'static str| {
        let gw = &gw;
        async move {
            metric(
                gw,
                "obleth_upstream_credentials_benched_total",
                &[("provider", "pooled"), ("credential", credential)],
            )
            .await
        }
    };
    assert_eq!(benched("0").await, 1.0, "key a, credential_ref, benched");
    assert_eq!(benched("1").await, 0.0);
    assert_eq!(
        metric(
            &gw,
            "obleth_upstream_retries_total",
            &[("provider", "pooled"), ("after", "status_429")]
        )
        .await,
        1.0
    );

    // Key a sits out its cool-down: key b serves every request; the
    // provider itself was not marked as failing.
    for _ in 0..3 {
        let answer = chat(&gw, &secret, "m").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(seen(), "Bearer sk-pool-b");
    }
    assert_eq!(
        metric(&gw, "obleth_upstream_ejections_total", &[]).await,
        0.0
    );

    // Key b refused while key a is still benched: no key is ready, so the
    // client gets the refusal; key b is benched too.
    upstream.set_config(MockConfig {
        fail_first: 1,
        fail_status: Some(401),
        ..MockConfig::default()
    });
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(benched("1").await, 1.0);
    // Every key benched: the pool is used anyway rather than failed unasked.
    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_key_refused_with_403_is_benched_and_the_request_answered_with_the_next() {
    let upstream = MockUpstream::start(MockConfig {
        fail_first: 1,
        fail_status: Some(403),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key-a"), "sk-pool-a").unwrap();
    std::fs::write(dir.path().join("key-b"), "sk-pool-b").unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    let mut provider = openai_provider("pooled", &upstream.base_url());
    provider.credential = Some(format!("file:{}/key-a", dir.path().display()));
    provider.options.credential_pool = vec![format!("file:{}/key-b", dir.path().display())];
    settings.providers = vec![provider];
    settings.routes = vec![route("m", &["pooled"])];
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    let answer = chat(&gw, &secret, "m").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.requests(), 2, "the 403, then key b");
    let last = upstream.last_request().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer sk-pool-b"));
    assert_eq!(
        metric(
            &gw,
            "obleth_upstream_credentials_benched_total",
            &[("provider", "pooled"), ("credential", "0")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            "obleth_upstream_attempts_total",
            &[("provider", "pooled"), ("outcome", "status_403")]
        )
        .await,
        1.0
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_first_byte_too_late_moves_on_to_the_next_target_and_the_client_gets_200() {
    let (stalled_url, stalled_task) = stalled_upstream().await;
    // Headers only after 30 s: slower than the first-byte timeout too.
    let slow = MockUpstream::start(MockConfig {
        latency: Duration::from_secs(30),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let healthy = MockUpstream::start(MockConfig::default()).await.unwrap();
    let (key, secret) = file_key(|_| {});
    let mut settings = embedded_settings(vec![key]);
    let first_byte = ProviderOptions {
        first_byte_timeout_ms: Some(300),
        ..ProviderOptions::default()
    };
    let mut stalled = openai_provider("stalled", &stalled_url);
    stalled.options = first_byte.clone();
    let mut slow_provider = openai_provider("slow", &slow.base_url());
    slow_provider.options = first_byte;
    settings.providers = vec![
        stalled,
        slow_provider,
        openai_provider("healthy", &healthy.base_url()),
    ];
    settings.routes = vec![
        route("stalled-first", &["stalled", "healthy"]),
        route("slow-first", &["slow", "healthy"]),
    ];
    settings.routing.eject_after_failures = 0;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    let answer = chat(&gw, &secret, "stalled-first").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-obleth-provider"), Some("healthy"));
    let answer = chat_stream(&gw, &secret, "stalled-first").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-obleth-provider"), Some("healthy"));
    assert!(answer.text().contains("data: [DONE]"), "{}", answer.text());
    let answer = chat(&gw, &secret, "slow-first").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-obleth-provider"), Some("healthy"));

    let attempts = |provider: &'static str| {
        let gw = &gw;
        async move {
            metric(
                gw,
                "obleth_upstream_attempts_total",
                &[("provider", provider), ("outcome", "first_byte_timeout")],
            )
            .await
        }
    };
    assert_eq!(attempts("stalled").await, 2.0, "head sent, no body byte");
    assert_eq!(attempts("slow").await, 1.0, "no head in time");
    assert_eq!(
        metric(
            &gw,
            "obleth_upstream_retries_total",
            &[("provider", "healthy"), ("after", "first_byte_timeout")]
        )
        .await,
        3.0
    );
    assert_eq!(healthy.requests(), 3);
    stalled_task.abort();
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_stream_is_cut_after_its_first_chunk_and_still_charged() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    // The role chunk at once, then a minute of silence before each token.
    let upstream = MockUpstream::start(MockConfig {
        completion_tokens: 5,
        token_delay: Duration::from_secs(60),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let settings = database_settings(&db.url, &pool).await;
    let provider = NewProvider {
        options: ProviderOptions {
            idle_timeout_ms: Some(300),
            ..ProviderOptions::default()
        },
        ..db::provider("sleepy", ProviderKind::OpenAi, &upstream.base_url())
    };
    db::provider_and_route(&pool, &provider, "sleepy")
        .await
        .unwrap();
    let (_, key) = db_key(&pool, |_| {}).await;
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;

    let response = send(
        http::Method::POST,
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        json!({"model": "sleepy", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let request_id: Uuid = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut body = response.into_body();
    let mut received = Vec::new();
    let mut broken = false;
    // Bounded, so a missing cut fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => received.extend_from_slice(&frame.into_data().unwrap_or_default()),
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
    })
    .await
    .expect("the idle stream was cut");
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains(r#""role":"assistant""#), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(broken, "the client sees the stream end in an error");

    let (status, estimated, prompt): (i16, bool, Option<i32>) =
        obleth_testkit::poll::wait_for(Duration::from_secs(10), "the usage row", || async {
            sqlx::query_as(
                "SELECT status, estimated, prompt_tokens FROM usage_ledger WHERE request_id = $1",
            )
            .bind(request_id)
            .fetch_optional(&pool)
            .await
            .unwrap()
        })
        .await;
    assert_eq!(status, 504, "recorded as cut by the gateway");
    assert!(estimated, "no usage came: what was sent is estimated");
    assert!(prompt.is_some_and(|p| p > 0), "{prompt:?}");
    assert_eq!(
        metric(
            &gw,
            "obleth_streams_idle_timeout_total",
            &[("provider", "sleepy")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&gw, "obleth_requests_total", &[("status", "504")]).await,
        1.0
    );
    gw.stop().await.unwrap();
}
