//! The per-model metrics: requests by model, provider and status class,
//! tokens by model and provider, and the time-to-first-token histogram, for
//! streamed and whole answers, with labels only from the catalog.

use obleth_testkit::{MockConfig, MockUpstream};
use serde_json::json;

use crate::support::*;

/// The mock's completion length; its prompt count is the words sent
/// ("hello there": 2).
const COMPLETION_TOKENS: u32 = 5;
const PROMPT_TOKENS: f64 = 2.0;

async fn send(gw: &TestGateway, key: &str, model: &str, stream: bool) -> Answer {
    let mut body =
        json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
    if stream {
        body["stream"] = json!(true);
    }
    post_chat(gw, key, body).await
}

#[tokio::test]
async fn model_requests_tokens_and_time_to_first_token_follow_the_requests() {
    let upstream = MockUpstream::start(MockConfig {
        completion_tokens: COMPLETION_TOKENS,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (gw, secret) = gateway_over(&upstream).await;

    // Two whole answers, three streamed ones, one made-up model.
    for stream in [false, false, true, true, true] {
        let answer = send(&gw, &secret, "m", stream).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(send(&gw, &secret, "made-up-model", false).await.status, 404);
    // Refused before its body was read: counted with the model unknown.
    let refused = request(
        http::Method::POST,
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "text/plain"),
        ],
        "hello",
    )
    .await;
    assert_eq!(refused.status, 415, "{}", refused.text());

    let ok = [("model", "m"), ("provider", "up"), ("class", "2xx")];
    assert_eq!(metric(&gw, "obleth_model_requests_total", &ok).await, 5.0);
    let tokens = |kind| [("model", "m"), ("provider", "up"), ("kind", kind)];
    assert_eq!(
        metric(&gw, "obleth_tokens_total", &tokens("prompt")).await,
        5.0 * PROMPT_TOKENS
    );
    assert_eq!(
        metric(&gw, "obleth_tokens_total", &tokens("completion")).await,
        5.0 * f64::from(COMPLETION_TOKENS)
    );
    let ttft = [("model", "m"), ("provider", "up")];
    assert_eq!(
        metric(&gw, "obleth_time_to_first_token_seconds_count", &ttft).await,
        5.0,
        "each answer, streamed or whole, is observed once"
    );
    assert_eq!(
        metric(
            &gw,
            "obleth_time_to_first_token_seconds_bucket",
            &[("le", "+Inf")]
        )
        .await,
        5.0
    );

    // The made-up name is `other` with no provider, never a label of its own.
    let text = request(http::Method::GET, &gw.ops_url("/metrics"), &[], "")
        .await
        .text();
    assert!(!text.contains("made-up-model"), "{text}");
    assert_eq!(
        metric(
            &gw,
            "obleth_model_requests_total",
            &[("model", "other"), ("provider", "none"), ("class", "4xx")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &gw,
            "obleth_model_requests_total",
            &[("model", "unknown"), ("provider", "none"), ("class", "4xx")]
        )
        .await,
        1.0
    );
    // Every request either counter counts, the other counts too.
    assert_eq!(
        obleth_testkit::metrics::sum(&text, "obleth_model_requests_total", &[]),
        7.0
    );
    assert_eq!(
        obleth_testkit::metrics::sum(&text, "obleth_requests_total", &[]),
        7.0
    );
    assert_eq!(
        obleth_testkit::metrics::series(&text, "obleth_time_to_first_token_seconds_count"),
        1,
        "a refused request observes no time to first token"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_upstream_counts_as_5xx_without_tokens_or_a_first_token() {
    let upstream = MockUpstream::start(MockConfig {
        fail_status: Some(500),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let (gw, secret) = gateway_over(&upstream).await;

    for stream in [false, true] {
        let answer = send(&gw, &secret, "m", stream).await;
        assert_eq!(answer.status / 100, 5, "{}", answer.text());
    }

    assert_eq!(
        metric(
            &gw,
            "obleth_model_requests_total",
            &[("model", "m"), ("class", "5xx")]
        )
        .await,
        2.0
    );
    assert_eq!(metric(&gw, "obleth_tokens_total", &[]).await, 0.0);
    assert_eq!(
        metric(&gw, "obleth_time_to_first_token_seconds_count", &[]).await,
        0.0
    );
    gw.stop().await.unwrap();
}
