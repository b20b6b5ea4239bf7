//! A provider of kind `anthropic`: OpenAI chat completions translated to
//! Anthropic's Messages API against the strict mock (real HTTP over
//! loopback), whole and streamed, with tools, errors in OpenAI's shape, and
//! usage recorded as the mock reported it.

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
/// provider at the mock, its credential in a file.
struct Setup {
    gw: TestGateway,
    pool: PgPool,
    upstream: MockUpstream,
    secret: String,
    key_id: uuid::Uuid,
    _db: obleth_testkit::TestDb,
    _dir: tempfile::TempDir,
}

async fn setup(credential: &str, mock: MockConfig) -> Setup {
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
async fn usage_rows(s: &Setup, count: usize) -> Vec<(bool, Option<i32>, Option<i32>, i16)> {
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
