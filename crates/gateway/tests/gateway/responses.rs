//! `POST /v1/responses`, OpenAI's Responses API: passed through to an
//! `openai` provider (the mock's endpoint, over loopback), whole and
//! streamed, with usage recorded as the provider reported it; a 400 naming
//! the provider for kinds that do not speak it.

use http::Method;
use obleth_testkit::MockConfig;
use serde_json::{json, Value};

use crate::anthropic::{setup, usage_rows, Setup};
use crate::support::*;

async fn responses(s: &Setup, body: Value) -> Answer {
    request(
        Method::POST,
        &s.gw.url("/v1/responses"),
        &[
            ("authorization", &format!("Bearer {}", s.secret)),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn responses_pass_through_to_openai_providers_with_their_usage() {
    let s = setup(
        obleth_testkit::mock::ANTHROPIC_API_KEY,
        MockConfig {
            completion_tokens: 6,
            ..MockConfig::default()
        },
    )
    .await;
    let answer = responses(&s, json!({"model": "gpt", "input": "hello there gateway"})).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(body["usage"]["output_tokens"], 6);
    let input = body["usage"]["input_tokens"].as_i64().unwrap();
    assert_eq!(s.upstream.last_request().unwrap().path, "/v1/responses");

    // Streamed: the events pass whole; the usage of response.completed is
    // recorded, and no stream_options are added.
    let answer = responses(
        &s,
        json!({"model": "gpt", "stream": true, "input": "hello there gateway"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    assert!(text.contains("event: response.completed"), "{text}");
    let deltas: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(deltas.split_whitespace().count(), 6, "{deltas}");
    let sent = s.upstream.last_request().unwrap().body.unwrap();
    assert!(sent.get("stream_options").is_none(), "{sent}");

    let rows = usage_rows(&s, 2).await;
    assert_eq!(
        rows,
        vec![
            (false, Some(input as i32), Some(6), 200),
            (true, Some(input as i32), Some(6), 200),
        ]
    );

    // Kinds that do not speak it: a 400 naming the provider, nothing sent.
    let before = s.upstream.requests();
    for (model, kind) in [("claude", "anthropic"), ("m", "mock")] {
        let answer = responses(&s, json!({"model": model, "input": "hi"})).await;
        assert_eq!(answer.status, 400, "{model}: {}", answer.text());
        assert!(answer.text().contains(kind), "{model}: {}", answer.text());
    }
    assert_eq!(s.upstream.requests(), before);
    s.gw.stop().await.unwrap();
}
