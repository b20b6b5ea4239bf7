//! Gemini (Google AI Studio) and Vertex AI providers against the strict
//! mock (real HTTP over loopback): the model in the path, the key as
//! `x-goog-api-key` or an access token as a bearer, chat completions
//! translated to `generateContent` whole and streamed
//! (`streamGenerateContent?alt=sse`), tools, Anthropic clients, embeddings
//! (`batchEmbedContents`, `predict`), usage rows, and the refusals.

use http::Method;
use obleth_config::db::catalog::{create_provider, create_route, NewProvider};
use obleth_config::model::{ProviderKind, ProviderOptions, RouteTarget};
use obleth_testkit::mock::{GEMINI_API_KEY, VERTEX_ACCESS_TOKEN};
use obleth_testkit::{db, fresh_database, MockConfig, MockUpstream};
use serde_json::{json, Value};

use crate::support::*;

async fn call(gw: &TestGateway, secret: &str, path: &str, body: Value) -> Answer {
    request(
        Method::POST,
        &gw.url(path),
        &[
            ("authorization", &format!("Bearer {secret}")),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn gemini_and_vertex_serve_chat_completions_whole_streamed_and_with_tools() {
    let db = fresh_database().await.unwrap();
    let pool = migrated_database(&db.url).await;
    let upstream = MockUpstream::start(MockConfig {
        completion_tokens: 5,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let root = format!("http://{}", upstream.addr());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gemini"), GEMINI_API_KEY).unwrap();
    std::fs::write(dir.path().join("vertex"), VERTEX_ACCESS_TOKEN).unwrap();
    let provider = |name: &str, kind, base: &str, file: &str, options| NewProvider {
        credential_ref: Some(format!("file:{}/{file}", dir.path().display())),
        options,
        ..db::provider(name, kind, base)
    };
    for p in [
        provider(
            "gem",
            ProviderKind::Gemini,
            &format!("{root}/v1beta"),
            "gemini",
            ProviderOptions::default(),
        ),
        provider(
            "vtx",
            ProviderKind::Vertex,
            &format!("{root}/v1"),
            "vertex",
            ProviderOptions {
                project: Some("mock-project".into()),
                location: Some("us-central1".into()),
                ..Default::default()
            },
        ),
        provider(
            "vtx-elsewhere",
            ProviderKind::Vertex,
            &format!("{root}/v1"),
            "vertex",
            ProviderOptions {
                project: Some("other-project".into()),
                location: Some("us-central1".into()),
                ..Default::default()
            },
        ),
    ] {
        create_provider(&pool, &p).await.unwrap();
    }
    for (model, provider, upstream_model) in [
        ("gemini-2.0-flash", "gem", None),
        ("flash", "vtx", Some("gemini-2.5-flash")),
        ("absent", "gem", Some("gemini-9")),
        ("odd", "gem", Some("gemini/2")),
        ("denied", "vtx-elsewhere", Some("gemini-2.0-flash")),
        ("embed", "gem", Some("gemini-embedding-001")),
        ("vembed", "vtx", Some("text-embedding-005")),
    ] {
        let target = RouteTarget::new(provider, upstream_model.map(str::to_owned));
        create_route(&pool, model, &[target]).await.unwrap();
    }
    let (key, secret) = db_key(&pool, |_| {}).await;
    let mut settings = database_settings(&db.url, &pool).await;
    settings.egress.credential_dirs = vec![dir.path().to_path_buf()];
    let gw = TestGateway::start(settings).await;
    gw.wait_ready().await;
    let hello = |model: &str| {
        json!({"model": model, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ]})
    };

    // Whole: the model in the path, the key as x-goog-api-key, the answer
    // a chat completion with the usage the mock counted.
    let answer = call(
        &gw,
        &secret,
        "/v1/chat/completions",
        hello("gemini-2.0-flash"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gemini-2.0-flash");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "tok1 tok2 tok3 tok4 tok5"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 9);
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_API_KEY));
    assert_eq!(sent.header("authorization"), None);
    let sent = sent.body.unwrap();
    assert_eq!(
        sent["systemInstruction"],
        json!({"parts": [{"text": "be brief"}]})
    );
    assert_eq!(sent["contents"][0]["role"], "user");

    // max_tokens cuts it: finish_reason length.
    let mut cut = hello("gemini-2.0-flash");
    cut["max_tokens"] = json!(2);
    let answer = call(&gw, &secret, "/v1/chat/completions", cut).await;
    assert_eq!(answer.json()["choices"][0]["finish_reason"], "length");
    assert_eq!(
        upstream.last_request().unwrap().body.unwrap()["generationConfig"]["maxOutputTokens"],
        2
    );

    // Streamed through Vertex: the project path, the token as a bearer,
    // chunks then the usage chunk and [DONE].
    let mut body = hello("flash");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let answer = call(&gw, &secret, "/v1/chat/completions", body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let (parsed, text) = done_chunks(&answer.text());
    assert_eq!(text, "tok1 tok2 tok3 tok4 tok5");
    assert!(parsed
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "flash"));
    assert!(parsed
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(parsed.last().unwrap()["usage"]["completion_tokens"], 5);
    let sent = upstream.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {VERTEX_ACCESS_TOKEN}").as_str())
    );
    assert!(sent.body.unwrap().get("stream").is_none());

    // A stream the client asked no usage of has no usage chunk.
    let mut body = hello("gemini-2.0-flash");
    body["stream"] = json!(true);
    let answer = call(&gw, &secret, "/v1/chat/completions", body).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer.text().ends_with("data: [DONE]\n\n"),
        "{}",
        answer.text()
    );
    assert!(!answer.text().contains("\"usage\""), "{}", answer.text());

    // Tools: a function call comes back as a tool call, its result goes
    // back as a functionResponse.
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]);
    let ask = json!({"model": "gemini-2.0-flash", "tools": tools,
        "messages": [{"role": "user", "content": "please use a tool"}]});
    let answer = call(&gw, &secret, "/v1/chat/completions", ask).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let tool_call = body["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(tool_call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(tool_call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["text"], "tok1 tok2 tok3 tok4 tok5");
    let follow = json!({"model": "gemini-2.0-flash", "tools": tools, "messages": [
        {"role": "user", "content": "please use a tool"},
        {"role": "assistant", "content": null, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": tool_call["id"], "content": "sunny"},
    ]});
    let answer = call(&gw, &secret, "/v1/chat/completions", follow).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["choices"][0]["finish_reason"], "stop");
    let sent = upstream.last_request().unwrap().body.unwrap();
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"content": "sunny"}})
    );

    // Google's refusals come back in OpenAI's shape with their status.
    let answer = call(&gw, &secret, "/v1/chat/completions", hello("absent")).await;
    assert_eq!(answer.status, 404, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "not_found");
    let answer = call(&gw, &secret, "/v1/chat/completions", hello("denied")).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "permission_denied");

    // What the gateway refuses itself never leaves it: a model that cannot
    // go into a path, other endpoints, a request Gemini cannot take.
    let before = upstream.requests();
    let answer = call(&gw, &secret, "/v1/chat/completions", hello("odd")).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer.text().contains("not a Gemini model name"),
        "{}",
        answer.text()
    );
    for (path, body) in [
        (
            "/v1/completions",
            json!({"model": "gemini-2.0-flash", "prompt": "hi"}),
        ),
        (
            "/v1/responses",
            json!({"model": "gemini-2.0-flash", "input": "hi"}),
        ),
    ] {
        let answer = call(&gw, &secret, path, body).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.text());
        assert!(
            answer.text().contains("kind gemini"),
            "{path}: {}",
            answer.text()
        );
    }
    let mut two = hello("gemini-2.0-flash");
    two["n"] = json!(2);
    let answer = call(&gw, &secret, "/v1/chat/completions", two).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(upstream.requests(), before);

    // Anthropic clients, translated through a chat completion, whole and
    // streamed.
    let url = gw.url("/v1/messages");
    let headers = [
        ("x-api-key", secret.as_str()),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ];
    let messages = |stream: bool| {
        let body = json!({"model": "gemini-2.0-flash", "max_tokens": 50, "stream": stream,
               "system": "be brief",
               "messages": [{"role": "user", "content": "hello there"}]});
        request(Method::POST, &url, &headers, body.to_string())
    };
    let answer = messages(false).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "tok1 tok2 tok3 tok4 tok5");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["output_tokens"], 5);
    let answer = messages(true).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let text = answer.text();
    for event in [
        "message_start",
        "content_block_delta",
        "message_delta",
        "message_stop",
    ] {
        assert!(text.contains(&format!("event: {event}")), "{text}");
    }
    assert!(text.contains("\"output_tokens\":5"), "{text}");
    assert_eq!(
        upstream.last_request().unwrap().path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    );

    // Embeddings through AI Studio: batchEmbedContents, one request an
    // input naming the model, the vectors in input order; Google counts no
    // tokens, so the usage is the estimate of the input (13 bytes: 4).
    let answer = call(
        &gw,
        &secret,
        "/v1/embeddings",
        json!({"model": "embed", "input": ["hello world", "hi"], "dimensions": 8}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "embed");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 8);
    assert_ne!(body["data"][0]["embedding"], body["data"][1]["embedding"]);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );
    let sent = upstream.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );
    assert_eq!(sent.header("x-goog-api-key"), Some(GEMINI_API_KEY));
    assert_eq!(
        sent.body.unwrap()["requests"][0],
        json!({"model": "models/gemini-embedding-001",
               "content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 8})
    );

    // Through Vertex AI: predict, with Google's token count; base64 as
    // OpenAI encodes it (768 little-endian f32: 4096 base64 characters).
    let answer = call(
        &gw,
        &secret,
        "/v1/embeddings",
        json!({"model": "vembed", "input": "one two three", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["data"][0]["embedding"].as_str().unwrap().len(), 4096);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    let sent = upstream.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/v1/projects/mock-project/locations/us-central1/publishers/google/models/text-embedding-005:predict"
    );
    assert_eq!(
        sent.body.unwrap(),
        json!({"instances": [{"content": "one two three"}]})
    );
    // Token arrays are refused before anything is sent.
    let before = upstream.requests();
    let answer = call(
        &gw,
        &secret,
        "/v1/embeddings",
        json!({"model": "vembed", "input": [[1, 2, 3]]}),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("input[0]"), "{}", answer.text());
    assert_eq!(upstream.requests(), before);

    // Usage rows for the ten served requests, the mock's counts.
    let rows = usage_tokens(&pool, key.id, 10).await;
    assert_eq!(rows.len(), 10, "{rows:?}");
    assert_eq!(rows[8], (Some(4), None), "AI Studio embeddings: {rows:?}");
    assert_eq!(rows[9], (Some(3), None), "Vertex embeddings: {rows:?}");
    let estimated: Vec<bool> = sqlx::query_scalar(
        "SELECT estimated FROM usage_ledger WHERE key_id = $1 AND status = 200 \
         ORDER BY created_at",
    )
    .bind(key.id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(&estimated[8..], [true, false], "{estimated:?}");
    assert_eq!(rows[0], (Some(4), Some(5)), "{rows:?}");
    assert_eq!(rows[1], (Some(4), Some(2)), "{rows:?}");
    assert_eq!(rows[2], (Some(4), Some(5)), "streamed: {rows:?}");
    assert_eq!(
        rows[3],
        (Some(4), Some(5)),
        "streamed without usage: {rows:?}"
    );
}
