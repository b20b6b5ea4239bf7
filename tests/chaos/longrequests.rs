//! Long requests through a rolling replacement with the default drain: a
//! 2-minute stream and a 90-second non-streamed request in flight on every
//! gateway while each is replaced (the new one started first, on its own
//! port, as a Deployment with maxSurge 1 does; then the old one gets
//! SIGTERM), under load through HAProxy. Every long request completes whole,
//! every request is recorded, and each old gateway exits once its last
//! request ends.

use std::time::{Duration, Instant};

use obleth_config::db::catalog::NewProvider;
use obleth_config::model::ProviderKind;
use obleth_e2e::fleet::{FleetSpec, Prepared};
use obleth_e2e::haproxy::Haproxy;
use obleth_e2e::load::{Load, LoadSpec};
use obleth_e2e::procs::GatewayProc;
use obleth_e2e::{evidence, ONE_AT_A_TIME};
use obleth_testkit::proc::bin;
use obleth_testkit::{db, fresh_database, http, MockConfig, MockUpstream};

const STREAM_TOKENS: u32 = 40;
const TOKEN_DELAY: Duration = Duration::from_secs(3);
const SLOW_ANSWER: Duration = Duration::from_secs(90);

/// A long request's outcome: status, whether it came whole, and how long it took.
type Outcome = (u16, bool, Duration);

async fn long_request(port: u16, key: String, model: &'static str, stream: bool) -> Outcome {
    let started = Instant::now();
    let body = serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "a long one"}],
    });
    let answer = http::request(
        ::http::Method::POST,
        &format!("http://127.0.0.1:{port}/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await;
    let text = answer.text();
    let whole = if stream {
        let chunks = text
            .split("\n\n")
            .filter(|e| e.starts_with("data: {") && e.contains("\"content\""))
            .count();
        text.trim_end().ends_with("data: [DONE]") && chunks >= STREAM_TOKENS as usize
    } else {
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["choices"][0]["message"]["content"].as_str().map(str::len))
            .is_some_and(|len| len > 0)
    };
    (answer.status, whole, started.elapsed())
}

#[tokio::test]
async fn long_streams_and_slow_answers_survive_a_rolling_replacement_with_the_default_drain() {
    let _one = ONE_AT_A_TIME.lock().await;
    let db_handle = fresh_database().await.unwrap();
    let spec = FleetSpec::default();
    let prepared = Prepared::new(&db_handle.url, &spec).await.unwrap();
    let pool = prepared.pool.clone();

    // Two more upstreams: one streams 40 tokens 3 s apart (2 minutes), one
    // answers after 90 s. Their providers allow 120 s for the headers.
    let long = MockUpstream::start(MockConfig {
        token_delay: TOKEN_DELAY,
        completion_tokens: STREAM_TOKENS,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let slow = MockUpstream::start(MockConfig {
        latency: SLOW_ANSWER,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    for (name, upstream) in [("long", &long), ("slow", &slow)] {
        let provider = NewProvider {
            timeout_ms: 120_000,
            options: Default::default(),
            ..db::provider(name, ProviderKind::OpenAi, &upstream.base_url())
        };
        db::provider_and_route(&pool, &provider, name)
            .await
            .unwrap();
    }

    let dir = prepared.dir.path();
    let make = |name: &str| {
        GatewayProc::new(dir, name, bin("obleth-gateway"), &db_handle.url, 1)
            .and_then(GatewayProc::with_default_drain)
            .unwrap()
    };
    // Three old gateways and their three replacements, each on its own
    // ports; HAProxy knows all six, the new ones down until they start.
    let mut all: Vec<GatewayProc> = (1..=3)
        .map(|i| make(&format!("old{i}")))
        .chain((1..=3).map(|i| make(&format!("new{i}"))))
        .collect();
    for g in &mut all[..3] {
        g.start().unwrap();
    }
    for g in &all[..3] {
        g.wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    let haproxy = Haproxy::start(dir, &all).await.unwrap();
    let (old, new) = all.split_at_mut(3);
    let load = Load::start(LoadSpec {
        base_url: haproxy.url(""),
        key: prepared.key.clone(),
        model: "m".to_owned(),
        rate: 20,
        stream_every: 8,
    });

    // The long requests, straight to each old gateway.
    let mut long_requests = Vec::new();
    for g in old.iter() {
        long_requests.push(tokio::spawn(long_request(
            g.port,
            prepared.key.clone(),
            "long",
            true,
        )));
        long_requests.push(tokio::spawn(long_request(
            g.port,
            prepared.key.clone(),
            "slow",
            false,
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The rolling replacement: new one up, then the old one told to go.
    let rolled = Instant::now();
    for (o, n) in old.iter().zip(new.iter_mut()) {
        n.start().unwrap();
        n.wait_ready(Duration::from_secs(60)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        o.sigterm().unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let mut outcomes = Vec::new();
    for r in long_requests {
        outcomes.push(r.await.unwrap());
    }
    for g in old.iter_mut() {
        let code = g.wait_exit(Duration::from_secs(60)).await.unwrap();
        assert_eq!(code, Some(0), "{} exits cleanly: {}", g.name, g.log_tail());
    }
    let drained = rolled.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish().await;
    for g in new.iter_mut() {
        g.stop().await.unwrap();
    }
    haproxy.stop().await;

    let recorded: Vec<(String, i64)> = sqlx::query_as(
        "SELECT model, count(*) FROM usage_ledger WHERE status = 200 AND model IN ('long', 'slow') \
         GROUP BY model ORDER BY model",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_ledger WHERE status = 200")
        .fetch_one(&pool)
        .await
        .unwrap();
    report.print("long requests through a rolling replacement");
    let whole = outcomes.iter().filter(|(s, w, _)| *s == 200 && *w).count();
    let longest = outcomes
        .iter()
        .map(|(_, _, t)| *t)
        .max()
        .unwrap_or_default();
    evidence(&format!(
        "[long requests] {whole} of {} long requests (3 streams of {} s, 3 answers after {} s) \
         completed whole; longest {:.0} s; old gateways exited {:.0} s after the roll began; \
         usage rows with status 200: {rows} ({recorded:?})",
        outcomes.len(),
        STREAM_TOKENS as u64 * TOKEN_DELAY.as_secs(),
        SLOW_ANSWER.as_secs(),
        longest.as_secs_f64(),
        drained.as_secs_f64(),
    ));
    assert_eq!(whole, 6, "{outcomes:?}");
    assert!(
        longest >= Duration::from_secs(110),
        "the streams ran their whole two minutes: {outcomes:?}"
    );
    assert_eq!(
        recorded,
        vec![("long".to_owned(), 3), ("slow".to_owned(), 3)]
    );
    assert_eq!(report.failed_total(), 0, "{:?}", report.failed);
    assert_eq!(report.sent, report.succeeded);
    assert_eq!(rows, report.succeeded as i64 + 6, "one row per request");
}
