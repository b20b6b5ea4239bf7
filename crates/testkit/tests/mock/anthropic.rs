//! Tests of the mock's Anthropic endpoint, `POST /v1/messages`, over real HTTP:
//! its refusals, whole and streamed answers, tool calls and usage.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt as _;
use obleth_testkit::mock::{
    AnthropicMock, MockConfig, ANTHROPIC_API_KEY, FAIL_STATUS_HEADER, TOKENS_HEADER, TOOL_TRIGGER,
};
use serde_json::{json, Value};

use super::{start, Answer, Api};

const VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");
const KEY: (&str, &str) = ("x-api-key", ANTHROPIC_API_KEY);

fn message_body(text: &str) -> Value {
    json!({
        "model": "claude-mock",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": text}],
    })
}

fn weather_tool() -> Value {
    json!([{"name": "weather", "description": "a city's weather",
            "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}}}])
}

async fn post(api: &Api, headers: &[(&str, &str)], body: Value) -> Answer {
    api.post("/messages", headers, body).await
}

fn assert_anthropic_error(answer: &Answer, status: u16, kind: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    assert_eq!(answer.body["type"], "error", "{}", answer.body);
    assert_eq!(answer.body["error"]["type"], kind, "{}", answer.body);
    assert!(
        answer.body["error"]["message"].is_string(),
        "{}",
        answer.body
    );
    assert!(answer.body["request_id"].is_string(), "{}", answer.body);
    assert!(answer.headers.contains_key("request-id"));
}

/// One server-sent event: its name, its data and when it arrived.
struct Event {
    name: String,
    data: Value,
    at: Duration,
}

/// Sends a streaming request and reads Anthropic's named events as they arrive.
async fn stream(api: &Api, body: Value) -> (HeaderMap, Vec<Event>) {
    let started = Instant::now();
    let request = api.request(
        Method::POST,
        "/messages",
        &[KEY, VERSION],
        &body.to_string(),
    );
    let response = api.client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (parts, mut body) = response.into_parts();
    let mut pending = String::new();
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        pending.push_str(std::str::from_utf8(&data).unwrap());
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let (name, data) = event.trim_end().split_once('\n').expect("two lines");
            events.push(Event {
                name: name
                    .strip_prefix("event: ")
                    .expect("an event line")
                    .to_owned(),
                data: serde_json::from_str(data.strip_prefix("data: ").expect("a data line"))
                    .unwrap(),
                at: started.elapsed(),
            });
        }
    }
    assert!(
        pending.is_empty(),
        "a partial event at the end: {pending:?}"
    );
    (parts.headers, events)
}

#[tokio::test]
async fn a_message_is_anthropic_shaped_with_usage_counted_like_openai_prompts() {
    let (_mock, api) = start(MockConfig {
        completion_tokens: 3,
        ..MockConfig::default()
    })
    .await;

    let answer = post(&api, &[KEY, VERSION], message_body("say something nice")).await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.headers.contains_key("request-id"));
    let body = &answer.body;
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-mock");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "tok1 tok2 tok3"}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    // "be brief" and "say something nice": five words, as the OpenAI
    // endpoint counts the same conversation.
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 5, "output_tokens": 3,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
}

#[tokio::test]
async fn max_tokens_and_the_tokens_header_cut_the_answer() {
    let (_mock, api) = start(MockConfig::default()).await;
    let mut body = message_body("hi");
    body["max_tokens"] = json!(2);

    let cut = post(&api, &[KEY, VERSION], body).await;
    let short = post(
        &api,
        &[KEY, VERSION, (TOKENS_HEADER, "1")],
        message_body("hi"),
    )
    .await;

    assert_eq!(cut.body["content"][0]["text"], "tok1 tok2");
    assert_eq!(cut.body["stop_reason"], "max_tokens");
    assert_eq!(short.body["content"][0]["text"], "tok1");
    assert_eq!(short.body["stop_reason"], "end_turn");
    assert_eq!(short.body["usage"]["output_tokens"], 1);
}

#[tokio::test]
async fn the_trigger_phrase_with_tools_answers_a_tool_use_and_the_result_gets_text() {
    let (_mock, api) = start(MockConfig {
        completion_tokens: 2,
        ..MockConfig::default()
    })
    .await;
    let mut body = message_body(&format!("Please {} now", TOOL_TRIGGER.to_uppercase()));
    body["tools"] = weather_tool();

    let call = post(&api, &[KEY, VERSION], body.clone()).await;

    assert_eq!(call.status, StatusCode::OK, "{}", call.body);
    assert_eq!(call.body["stop_reason"], "tool_use");
    let block = &call.body["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "weather");
    assert_eq!(block["input"], json!({"text": "tok1 tok2"}));
    let id = block["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_"));

    // The client runs the tool and sends its result back.
    body["messages"] = json!([
        {"role": "user", "content": "Please use a tool now"},
        {"role": "assistant", "content": [block]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "sunny"}]},
    ]);
    let answer = post(&api, &[KEY, VERSION], body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["content"][0]["type"], "text");
    assert_eq!(answer.body["stop_reason"], "end_turn");

    // Without tools the phrase is only text.
    let plain = post(&api, &[KEY, VERSION], message_body("use a tool")).await;
    assert_eq!(plain.body["content"][0]["type"], "text");
}

#[tokio::test]
async fn a_stream_sends_the_real_event_sequence_paced_by_the_token_delay() {
    let delay = Duration::from_millis(30);
    let (_mock, api) = start(MockConfig {
        completion_tokens: 4,
        token_delay: delay,
        ..MockConfig::default()
    })
    .await;
    let mut body = message_body("say something nice");
    body["stream"] = json!(true);

    let (headers, events) = stream(&api, body).await;

    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for event in &events {
        assert_eq!(event.data["type"], event.name.as_str());
    }
    let start = &events[0].data["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 5);
    assert_eq!(
        events[1].data["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events
        .iter()
        .filter_map(|e| e.data["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "tok1 tok2 tok3 tok4");
    assert_eq!(
        events[8].data,
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 4}})
    );
    // Four deltas, each after the delay: the last cannot come before 4 x 30 ms.
    assert!(events[6].at >= delay * 4, "{:?}", events[6].at);
}

#[tokio::test]
async fn a_streamed_tool_use_sends_its_input_as_partial_json() {
    let (_mock, api) = start(MockConfig {
        completion_tokens: 3,
        ..MockConfig::default()
    })
    .await;
    let mut body = message_body("use a tool");
    body["tools"] = weather_tool();
    body["stream"] = json!(true);

    let (_, events) = stream(&api, body).await;

    let block = &events[1].data["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "weather");
    assert_eq!(block["input"], json!({}));
    let input: String = events
        .iter()
        .filter_map(|e| e.data["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"text": "tok1 tok2 tok3"})
    );
    let delta = events.iter().find(|e| e.name == "message_delta").unwrap();
    assert_eq!(delta.data["delta"]["stop_reason"], "tool_use");
    assert_eq!(events.last().unwrap().name, "message_stop");
}

#[tokio::test]
async fn a_configured_cache_read_count_is_reported() {
    let (_mock, api) = start(MockConfig {
        anthropic: AnthropicMock {
            api_key: "sk-ant-other".to_owned(),
            cache_read_tokens: Some(120),
        },
        ..MockConfig::default()
    })
    .await;

    let answer = post(
        &api,
        &[("x-api-key", "sk-ant-other"), VERSION],
        message_body("hi"),
    )
    .await;
    let mut body = message_body("hi");
    body["stream"] = json!(true);
    let request = api.request(
        Method::POST,
        "/messages",
        &[("x-api-key", "sk-ant-other"), VERSION],
        &body.to_string(),
    );
    let streamed = api.client.request(request).await.unwrap();
    let bytes = streamed.into_body().collect().await.unwrap().to_bytes();

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["usage"]["cache_read_input_tokens"], 120);
    assert!(String::from_utf8_lossy(&bytes).contains("\"cache_read_input_tokens\":120"));
    let default_key = post(&api, &[KEY, VERSION], message_body("hi")).await;
    assert_anthropic_error(&default_key, 401, "authentication_error");
}

#[tokio::test]
async fn strict_checks_refuse_with_anthropic_errors_and_real_statuses() {
    let (mock, api) = start(MockConfig::default()).await;
    let user = |text: &str| json!({"role": "user", "content": text});
    let assistant = |text: &str| json!({"role": "assistant", "content": text});
    let with = |field: &str, value: Value| {
        let mut body = message_body("hi");
        match value {
            Value::Null => {
                body.as_object_mut().unwrap().remove(field);
            }
            value => body[field] = value,
        }
        body
    };
    let both = [KEY, VERSION];
    // (case, headers, body, status, error type)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Value, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no key",
            vec![VERSION],
            message_body("hi"),
            401,
            "authentication_error",
        ),
        (
            "wrong key",
            vec![("x-api-key", "sk-ant-wrong"), VERSION],
            message_body("hi"),
            401,
            "authentication_error",
        ),
        (
            "a bearer token is not the key",
            vec![("authorization", "Bearer sk-ant-mock"), VERSION],
            message_body("hi"),
            401,
            "authentication_error",
        ),
        (
            "no version",
            vec![KEY],
            message_body("hi"),
            400,
            "invalid_request_error",
        ),
        (
            "no max_tokens",
            both.to_vec(),
            with("max_tokens", Value::Null),
            400,
            "invalid_request_error",
        ),
        (
            "zero max_tokens",
            both.to_vec(),
            with("max_tokens", json!(0)),
            400,
            "invalid_request_error",
        ),
        (
            "no model",
            both.to_vec(),
            with("model", Value::Null),
            400,
            "invalid_request_error",
        ),
        (
            "no messages",
            both.to_vec(),
            with("messages", Value::Null),
            400,
            "invalid_request_error",
        ),
        (
            "empty messages",
            both.to_vec(),
            with("messages", json!([])),
            400,
            "invalid_request_error",
        ),
        (
            "assistant first",
            both.to_vec(),
            with("messages", json!([assistant("x"), user("y")])),
            400,
            "invalid_request_error",
        ),
        (
            "two user turns",
            both.to_vec(),
            with("messages", json!([user("x"), user("y")])),
            400,
            "invalid_request_error",
        ),
        (
            "two assistant turns",
            both.to_vec(),
            with(
                "messages",
                json!([user("x"), assistant("y"), assistant("z")]),
            ),
            400,
            "invalid_request_error",
        ),
        (
            "system in messages",
            both.to_vec(),
            with(
                "messages",
                json!([{"role": "system", "content": "x"}, user("y")]),
            ),
            400,
            "invalid_request_error",
        ),
        (
            "an unmatched tool_result",
            both.to_vec(),
            with(
                "messages",
                json!([
                    user("use a tool"),
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "x"}]},
                ]),
            ),
            400,
            "invalid_request_error",
        ),
        (
            "a fail- model",
            both.to_vec(),
            with("model", json!("fail-now")),
            500,
            "api_error",
        ),
    ];
    let count = cases.len() as u64;

    for (case, headers, body, status, kind) in cases {
        let answer = post(&api, &headers, body).await;
        assert_eq!(answer.status.as_u16(), status, "{case}: {}", answer.body);
        assert_anthropic_error(&answer, status, kind);
    }
    let not_json = api
        .send(api.request(Method::POST, "/messages", &both, "{\"model\": "))
        .await;
    assert_anthropic_error(&not_json, 400, "invalid_request_error");
    assert_eq!(mock.requests(), count + 1);
}

#[tokio::test]
async fn injected_failures_on_messages_are_anthropic_shaped() {
    let (_mock, api) = start(MockConfig::default()).await;

    let overloaded = post(
        &api,
        &[KEY, VERSION, (FAIL_STATUS_HEADER, "529")],
        message_body("hi"),
    )
    .await;
    let limited = post(
        &api,
        &[KEY, VERSION, (FAIL_STATUS_HEADER, "429")],
        message_body("hi"),
    )
    .await;

    assert_anthropic_error(&overloaded, 529, "overloaded_error");
    assert_eq!(overloaded.headers["x-mock-injected"], "true");
    assert_anthropic_error(&limited, 429, "rate_limit_error");
}

#[tokio::test]
async fn a_bad_mock_header_on_messages_is_an_anthropic_400() {
    let (_mock, api) = start(MockConfig::default()).await;

    let answer = post(
        &api,
        &[KEY, VERSION, (TOKENS_HEADER, "many")],
        message_body("hi"),
    )
    .await;

    assert_anthropic_error(&answer, 400, "invalid_request_error");
    assert!(answer.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(TOKENS_HEADER));
}
