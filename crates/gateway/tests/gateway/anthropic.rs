//! Anthropic's protocol both ways against the strict mock (real HTTP over
//! loopback): OpenAI chat completions to a provider of kind `anthropic`, and
//! `/v1/messages` clients to `anthropic`, `openai` and `mock` providers;
//! whole and streamed, with tools, errors in the client's shape, and usage
//! recorded as the mock reported it.

use std::time::Duration;

use http::Method;
use obleth_config::db::catalog::NewProvider;
use obleth_config::model::ProviderKind;
use obleth_testkit::mock::{AnthropicMock, ANTHROPIC_API_KEY};
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::support::*;

/// A gateway on a fresh database with route `claude` on an `anthropic`
/// provider at the mock (its credential in a file), route `gpt` on an
/// `openai` provider at the same mock and route `m` on the built-in mock.
pub(crate) struct Setup {
    pub gw: TestGateway,
    pub pool: PgPool,
    pub upstream: MockUpstream,
    pub secret: String,
    pub key_id: uuid::Uuid,
    _db: obleth_testkit::TestDb,
    _dir: tempfile::TempDir,
}

pub(crate) async fn setup(credential: &str, mock: MockConfig) -> Setup {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(mock).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("anthropic"), credential).unwrap();
    let provider = NewProvider {
        credential_ref: Some(format!("file:{}/anthropic", dir.path().display())),
        ..db::provider("claude", ProviderKind::Anthropic, &upstream.base_url())
    };
    db::provider_and_route(&pool, &provider, "claude")
        .await
        .unwrap();
    let openai = db::provider("gpt", ProviderKind::OpenAi, &upstream.base_url());
    db::provider_and_route(&pool, &openai, "gpt").await.unwrap();
    let mock = db::provider("mock", ProviderKind::Mock, "mock://");
    db::provider_and_route(&pool, &mock, "m").await.unwrap();
    let (key, secret) = db_key(&pool, |_| {}).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    Setup {
        gw,
        pool,
        upstream,
        secret,
        key_id: key.id,
        _db: db,
        _dir: dir,
    }
}

async fn post(s: &Setup, body: Value) -> Answer {
    request(
        Method::POST,
        &s.gw.url("/v1/chat/completions"),
        &[
            ("authorization", &format!("Bearer {}", s.secret)),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// The usage rows of the setup's key, oldest first: (streamed, prompt,
/// completion, status).
pub(crate) async fn usage_rows(
    s: &Setup,
    count: usize,
) -> Vec<(bool, Option<i32>, Option<i32>, i16)> {
    let pool = s.pool.clone();
    let key = s.key_id;
    wait_until(Duration::from_secs(10), "the usage rows", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_ledger WHERE key_id = $1")
                .bind(key)
                .fetch_one(&pool)
                .await
                .unwrap();
            n as usize >= count
        }
    })
    .await;
    sqlx::query_as(
        "SELECT streamed, prompt_tokens, completion_tokens, status FROM usage_ledger \
         WHERE key_id = $1 ORDER BY created_at",
    )
    .bind(key)
    .fetch_all(&s.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn chat_completions_reach_an_anthropic_provider_translated_with_their_usage() {
    let s = setup(
        ANTHROPIC_API_KEY,
        MockConfig {
            completion_tokens: 5,
            anthropic: AnthropicMock {
                cache_read_tokens: Some(3),
                ..AnthropicMock::default()
            },
            ..MockConfig::default()
        },
    )
    .await;

    // Whole: the system prompt goes top-level, max_tokens gets a default.
    let answer = post(
        &s,
        json!({"model": "claude", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there"}
        ]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "tok1 tok2 tok3 tok4 tok5"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 3);
    let prompt = usage["prompt_tokens"].as_i64().unwrap();
    assert!(prompt > 3, "{usage}");
    let sent = s.upstream.last_request().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_API_KEY));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));

    // Streamed, the client not asking for usage: chunks and [DONE], no
    // usage chunk, but the usage recorded.
    let answer = post(
        &s,
        json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "tok1 tok2 tok3 tok4 tok5");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{text}"
    );
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "no usage chunk unless asked: {text}"
    );

    // Streamed with include_usage: the last chunk carries it.
    let answer = post(
        &s,
        json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await;
    let text = answer.text();
    let last_usage = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|c| c.get("usage").filter(|u| !u.is_null()).cloned())
        .next_back()
        .expect("a usage chunk");
    assert_eq!(last_usage["completion_tokens"], 5);
    // The same prompt without the system prompt's two words.
    let stream_prompt = last_usage["prompt_tokens"].as_i64().unwrap();
    assert_eq!(stream_prompt + 2, prompt, "{last_usage}");

    // Every request recorded with what the mock reported.
    let rows = usage_rows(&s, 3).await;
    assert_eq!(
        rows,
        vec![
            (false, Some(prompt as i32), Some(5), 200),
            (true, Some(stream_prompt as i32), Some(5), 200),
            (true, Some(stream_prompt as i32), Some(5), 200),
        ]
    );
    s.gw.stop().await.unwrap();
}

#[tokio::test]
async fn tools_round_trip_through_an_anthropic_provider() {
    let s = setup(ANTHROPIC_API_KEY, MockConfig::default()).await;
    let tools = json!([{"type": "function", "function": {"name": "lookup", "description": "Looks up",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]);
    let answer = post(
        &s,
        json!({"model": "claude", "tools": tools, "tool_choice": "auto",
               "messages": [{"role": "user", "content": "please use a tool"}]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["text"].is_string(), "{arguments}");

    // The result goes back as the next turn; the strict mock checks that
    // the tool_result answers the tool_use before it.
    let answer = post(
        &s,
        json!({"model": "claude", "tools": tools, "messages": [
            {"role": "user", "content": "please use a tool"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "found it"},
        ]}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["finish_reason"], "stop");

    // Streamed, the call arrives as tool_call deltas.
    let answer = post(
        &s,
        json!({"model": "claude", "stream": true, "tools": tools,
               "messages": [{"role": "user", "content": "please use a tool"}]}),
    )
    .await;
    let text = answer.text();
    let mut name = String::new();
    let mut arguments = String::new();
    let mut finish = String::new();
    for chunk in text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let choice = &chunk["choices"][0];
        if let Some(call) = choice["delta"]["tool_calls"].get(0) {
            name.push_str(call["function"]["name"].as_str().unwrap_or(""));
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_owned();
        }
    }
    assert_eq!(name, "lookup", "{text}");
    assert!(
        serde_json::from_str::<Value>(&arguments).unwrap()["text"].is_string(),
        "{arguments}"
    );
    assert_eq!(finish, "tool_calls");
    s.gw.stop().await.unwrap();
}

#[tokio::test]
async fn anthropic_refusals_reach_the_client_in_openai_shape() {
    // A wrong credential: the mock's 401 as OpenAI's error body.
    let s = setup("sk-ant-wrong", MockConfig::default()).await;
    let answer = post(
        &s,
        json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    let body = answer.json();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(
        !answer.text().contains("sk-ant-wrong"),
        "the credential is never echoed"
    );

    // What Anthropic cannot take is refused before anything is sent.
    let before = s.upstream.requests();
    let answer = post(
        &s,
        json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("`n`"), "{}", answer.text());
    let answer = request(
        Method::POST,
        &s.gw.url("/v1/embeddings"),
        &[
            ("authorization", &format!("Bearer {}", s.secret)),
            ("content-type", "application/json"),
        ],
        json!({"model": "claude", "input": "hi"}).to_string(),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer.text().contains("chat completions only"),
        "{}",
        answer.text()
    );
    assert_eq!(s.upstream.requests(), before, "nothing was sent");
    s.gw.stop().await.unwrap();
}

/// `POST /v1/messages` with the setup's key as Anthropic clients send it.
async fn messages(s: &Setup, body: Value) -> Answer {
    request(
        Method::POST,
        &s.gw.url("/v1/messages"),
        &[
            ("x-api-key", s.secret.as_str()),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// The `(event, data)` pairs of an SSE answer.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((std::mem::take(&mut name), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn messages_clients_reach_every_provider_kind_with_their_usage() {
    let s = setup(
        ANTHROPIC_API_KEY,
        MockConfig {
            completion_tokens: 4,
            ..MockConfig::default()
        },
    )
    .await;
    let mut expected_rows = Vec::new();
    for model in ["claude", "gpt", "m"] {
        // Whole.
        let answer = messages(
            &s,
            json!({"model": model, "max_tokens": 100, "system": "Be brief.",
                   "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .await;
        assert_eq!(answer.status, 200, "{model}: {}", answer.text());
        let body = answer.json();
        assert_eq!(body["type"], "message", "{model}: {body}");
        assert_eq!(body["role"], "assistant");
        assert_eq!(body["content"][0]["type"], "text", "{model}: {body}");
        assert!(
            !body["content"][0]["text"].as_str().unwrap().is_empty(),
            "{model}: {body}"
        );
        assert_eq!(body["stop_reason"], "end_turn", "{model}: {body}");
        let input = body["usage"]["input_tokens"].as_i64().unwrap();
        let output = body["usage"]["output_tokens"].as_i64().unwrap();
        assert!(input > 0 && output > 0, "{model}: {body}");
        expected_rows.push((false, Some(input as i32), Some(output as i32), 200));

        // Streamed: Anthropic's events, whatever the provider speaks.
        let answer = messages(
            &s,
            json!({"model": model, "max_tokens": 100, "stream": true,
                   "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .await;
        assert_eq!(answer.status, 200, "{model}: {}", answer.text());
        let events = sse_events(&answer.text());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{model}: {names:?}");
        assert_eq!(names.last(), Some(&"message_stop"), "{model}: {names:?}");
        assert!(names.contains(&"content_block_delta"), "{model}: {names:?}");
        let text: String = events
            .iter()
            .filter(|(n, _)| n == "content_block_delta")
            .filter_map(|(_, d)| d["delta"]["text"].as_str())
            .collect();
        assert!(!text.is_empty(), "{model}");
        let delta = events
            .iter()
            .find(|(n, _)| n == "message_delta")
            .map(|(_, d)| d.clone())
            .unwrap();
        let output = delta["usage"]["output_tokens"].as_i64().unwrap();
        let start_input = events[0].1["message"]["usage"]["input_tokens"].as_i64();
        let input = delta["usage"]["input_tokens"]
            .as_i64()
            .filter(|n| *n > 0)
            .or(start_input)
            .unwrap();
        expected_rows.push((true, Some(input as i32), Some(output as i32), 200));
    }
    // The usage rows hold what each stream and answer reported.
    let rows = usage_rows(&s, expected_rows.len()).await;
    assert_eq!(rows, expected_rows);
    s.gw.stop().await.unwrap();
}

#[tokio::test]
async fn messages_errors_come_back_in_anthropic_shape() {
    let s = setup(ANTHROPIC_API_KEY, MockConfig::default()).await;
    let anthropic_error = |answer: &Answer| {
        let body = answer.json();
        assert_eq!(body["type"], "error", "{body}");
        (
            body["error"]["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    // A wrong key, refused by the gateway itself.
    let answer = request(
        Method::POST,
        &s.gw.url("/v1/messages"),
        &[
            ("x-api-key", "obk_nope_nope"),
            ("content-type", "application/json"),
        ],
        json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert_eq!(anthropic_error(&answer).0, "authentication_error");
    // An unknown model.
    let answer = messages(
        &s,
        json!({"model": "nope", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(anthropic_error(&answer).0, "not_found_error");
    // What the upstream refuses (roles must alternate), its message kept.
    let answer = messages(
        &s,
        json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "assistant", "content": "hi"}]}),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    let (kind, message) = anthropic_error(&answer);
    assert_eq!(kind, "invalid_request_error");
    assert!(!message.is_empty());
    // What the translation for an OpenAI provider refuses, naming the field.
    let answer = messages(
        &s,
        json!({"model": "gpt", "max_tokens": 10, "top_k": 5, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        anthropic_error(&answer).1.contains("top_k"),
        "{}",
        answer.text()
    );
    s.gw.stop().await.unwrap();
}
