//! Tests of the mock upstream over real HTTP: response shapes, streaming pace, failure injection and recording.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anthropic;
mod azure;
mod bedrock;
mod gemini;
mod oauth;

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use obleth_testkit::mock::{
    MockConfig, MockUpstream, MockUsage, FAIL_STATUS_HEADER, TOKENS_HEADER,
};
use serde_json::{json, Value};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A plain HTTP/1 client for one mock.
struct Api {
    client: HttpClient,
    base_url: String,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Api {
    fn new(mock: &MockUpstream) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base_url: mock.base_url(),
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Answer {
        let response = self.client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: Value) -> Answer {
        self.send(self.request(Method::POST, path, headers, &body.to_string()))
            .await
    }

    async fn chat(&self, headers: &[(&str, &str)]) -> Answer {
        self.post("/chat/completions", headers, chat_body("m", false))
            .await
    }
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "say something nice"},
        ],
    })
}

async fn start(config: MockConfig) -> (MockUpstream, Api) {
    let mock = MockUpstream::start(config).await.unwrap();
    let api = Api::new(&mock);
    (mock, api)
}

fn assert_openai_error(answer: &Answer, status: u16) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    let error = &answer.body["error"];
    assert!(error["message"].is_string(), "{}", answer.body);
    assert!(error["type"].is_string(), "{}", answer.body);
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{}",
        answer.body
    );
}

/// One server-sent event of a stream and when the client had it whole.
struct Event {
    data: String,
    at: Duration,
}

/// Sends a streaming request and reads the events as they arrive.
async fn stream(api: &Api, path: &str, body: Value) -> (HeaderMap, Vec<Event>, Duration) {
    let started = Instant::now();
    let request = api.request(Method::POST, path, &[], &body.to_string());
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
            let data = event
                .trim_end()
                .strip_prefix("data: ")
                .expect("a data line");
            events.push(Event {
                data: data.to_owned(),
                at: started.elapsed(),
            });
        }
    }
    assert!(
        pending.is_empty(),
        "a partial event at the end: {pending:?}"
    );
    (parts.headers, events, started.elapsed())
}

#[tokio::test]
async fn chat_completion_is_openai_shaped_and_echoes_the_model() {
    let (_mock, api) = start(MockConfig {
        completion_tokens: 3,
        ..MockConfig::default()
    })
    .await;

    let answer = api
        .post("/chat/completions", &[], chat_body("gpt-4o-mini", false))
        .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/json");
    let body = &answer.body;
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["model"], "gpt-4o-mini");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "tok1 tok2 tok3");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
    );
}

#[tokio::test]
async fn max_tokens_below_the_configured_length_cuts_the_completion() {
    let (_mock, api) = start(MockConfig::default()).await;
    let mut body = chat_body("m", false);
    body["max_tokens"] = json!(2);

    let answer = api.post("/chat/completions", &[], body).await;

    assert_eq!(answer.body["choices"][0]["message"]["content"], "tok1 tok2");
    assert_eq!(answer.body["choices"][0]["finish_reason"], "length");
    assert_eq!(answer.body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn streamed_chat_arrives_chunk_by_chunk_and_ends_with_usage_then_done() {
    let (mock, api) = start(MockConfig {
        completion_tokens: 5,
        token_delay: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;

    let (headers, events, total) = stream(&api, "/chat/completions", chat_body("m", true)).await;

    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // Role, five tokens, finish, usage, [DONE].
    assert_eq!(
        events.len(),
        9,
        "{:?}",
        events.iter().map(|e| &e.data).collect::<Vec<_>>()
    );
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(
        events[0].at < total / 2,
        "the first chunk came at {:?} of {total:?}, so the stream was buffered",
        events[0].at
    );
    assert!(total >= Duration::from_millis(250), "{total:?}");

    let chunks: Vec<Value> = events[..8]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["model"], "m");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..6]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "tok1 tok2 tok3 tok4 tok5");
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[7]["choices"], json!([]));
    assert_eq!(
        chunks[7]["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    );
    assert_eq!(events[8].data, "[DONE]");
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn a_stream_is_in_flight_until_its_body_ends() {
    let (mock, api) = start(MockConfig {
        completion_tokens: 4,
        token_delay: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .await;
    let request = api.request(
        Method::POST,
        "/chat/completions",
        &[],
        &chat_body("m", true).to_string(),
    );

    let response = api.client.request(request).await.unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    let during = mock.in_flight();
    body.collect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while mock.in_flight() > 0 && Instant::now() < deadline {
        tokio::task::yield_now().await;
    }

    assert_eq!(during, 1);
    assert_eq!(mock.in_flight(), 0);
}

#[tokio::test]
async fn text_completions_answer_whole_and_streamed() {
    let (_mock, api) = start(MockConfig {
        completion_tokens: 2,
        ..MockConfig::default()
    })
    .await;

    let whole = api
        .post(
            "/completions",
            &[],
            json!({"model": "m", "prompt": "one two three"}),
        )
        .await;
    let (_, events, _) = stream(
        &api,
        "/completions",
        json!({"model": "m", "prompt": "one two three", "stream": true}),
    )
    .await;

    assert_eq!(whole.status, StatusCode::OK);
    assert!(whole.body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(whole.body["object"], "text_completion");
    assert_eq!(whole.body["choices"][0]["text"], "tok1 tok2");
    assert_eq!(whole.body["choices"][0]["finish_reason"], "stop");
    assert_eq!(whole.body["usage"]["prompt_tokens"], 3);
    // Two tokens, finish, usage, [DONE].
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data.len(), 5, "{data:?}");
    let chunks: Vec<Value> = data[..4]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(chunks[0]["choices"][0]["text"], "tok1");
    assert_eq!(chunks[1]["choices"][0]["text"], " tok2");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[3]["usage"]["total_tokens"], 5);
    assert_eq!(data[4], "[DONE]");
}

#[tokio::test]
async fn embeddings_are_deterministic_lists_of_eight_floats() {
    let (_mock, api) = start(MockConfig::default()).await;

    let one = api
        .post(
            "/embeddings",
            &[],
            json!({"model": "e", "input": "hello world"}),
        )
        .await;
    let many = api
        .post(
            "/embeddings",
            &[],
            json!({"model": "e", "input": ["hello world", "bye"]}),
        )
        .await;
    let encoded = api
        .post(
            "/embeddings",
            &[],
            json!({"model": "e", "input": "hello world", "encoding_format": "base64"}),
        )
        .await;

    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["object"], "list");
    assert_eq!(one.body["model"], "e");
    assert_eq!(
        one.body["usage"],
        json!({"prompt_tokens": 2, "total_tokens": 2})
    );
    let item = &one.body["data"][0];
    assert_eq!(item["object"], "embedding");
    assert_eq!(item["index"], 0);
    assert_eq!(item["embedding"].as_array().unwrap().len(), 8);
    assert!(item["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .all(Value::is_f64));
    let data = many.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(
        data[0]["embedding"], item["embedding"],
        "the same input embeds the same"
    );
    assert_ne!(data[1]["embedding"], item["embedding"]);
    // Eight little-endian f32s are 32 bytes, 44 base64 characters.
    assert_eq!(
        encoded.body["data"][0]["embedding"].as_str().unwrap().len(),
        44
    );
}

#[tokio::test]
async fn models_and_health_answer() {
    let (mock, api) = start(MockConfig::default()).await;

    let models = api.send(api.request(Method::GET, "/models", &[], "")).await;
    let health_url = format!("http://{}/health", mock.addr());
    let health = api
        .send(Request::get(health_url).body(Full::default()).unwrap())
        .await;

    assert_eq!(models.status, StatusCode::OK);
    assert_eq!(models.body["object"], "list");
    let data = models.body["data"].as_array().unwrap();
    assert!(data.len() >= 2);
    assert!(data
        .iter()
        .all(|m| m["object"] == "model" && m["id"].is_string()));
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, "ok");
    assert_eq!(mock.requests(), 1, "health checks are not counted");
}

#[tokio::test]
async fn malformed_requests_get_openai_400s() {
    let (_mock, api) = start(MockConfig::default()).await;
    let cases = [
        ("/chat/completions", "{\"model\": ", None),
        ("/chat/completions", "[1, 2]", None),
        ("/chat/completions", r#"{"messages": []}"#, Some("model")),
        ("/chat/completions", r#"{"model": "m"}"#, Some("messages")),
        ("/completions", "", None),
        ("/embeddings", r#"{"model": "e"}"#, Some("input")),
    ];

    for (path, body, param) in cases {
        let answer = api.send(api.request(Method::POST, path, &[], body)).await;

        assert_openai_error(&answer, 400);
        assert_eq!(answer.body["error"]["type"], "invalid_request_error");
        assert_eq!(answer.body["error"]["param"], json!(param), "{path} {body}");
    }
}

#[tokio::test]
async fn fail_status_answers_every_request_with_an_openai_error() {
    let (mock, api) = start(MockConfig {
        fail_status: Some(503),
        ..MockConfig::default()
    })
    .await;

    for _ in 0..3 {
        let answer = api.chat(&[]).await;
        assert_openai_error(&answer, 503);
        assert_eq!(answer.body["error"]["type"], "server_error");
    }
    assert_eq!(mock.requests(), 3);
}

#[tokio::test]
async fn fail_first_fails_that_many_requests_then_succeeds() {
    let (_mock, api) = start(MockConfig {
        fail_first: 2,
        fail_status: Some(429),
        ..MockConfig::default()
    })
    .await;

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(api.chat(&[]).await.status.as_u16());
    }

    assert_eq!(statuses, [429, 429, 200, 200]);
}

#[tokio::test]
async fn fail_rate_fails_its_share_of_requests() {
    let (_mock, api) = start(MockConfig {
        fail_rate: 0.25,
        ..MockConfig::default()
    })
    .await;

    let mut failed = 0;
    for _ in 0..8 {
        if api.chat(&[]).await.status == StatusCode::INTERNAL_SERVER_ERROR {
            failed += 1;
        }
    }

    assert_eq!(failed, 2);
}

#[tokio::test]
async fn headers_override_the_config_for_one_request() {
    let (_mock, api) = start(MockConfig::default()).await;

    let failed = api.chat(&[(FAIL_STATUS_HEADER, "502")]).await;
    let short = api.chat(&[(TOKENS_HEADER, "2")]).await;
    let normal = api.chat(&[]).await;
    let bad = api.chat(&[(TOKENS_HEADER, "lots")]).await;

    assert_openai_error(&failed, 502);
    assert_eq!(short.body["choices"][0]["message"]["content"], "tok1 tok2");
    assert_eq!(normal.body["usage"]["completion_tokens"], 16);
    assert_openai_error(&bad, 400);
    assert!(bad.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(TOKENS_HEADER));
}

#[tokio::test]
async fn latency_header_delays_the_response() {
    let (_mock, api) = start(MockConfig::default()).await;

    let started = Instant::now();
    let answer = api.chat(&[("x-mock-latency-ms", "100")]).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn a_fail_model_answers_500() {
    let (_mock, api) = start(MockConfig::default()).await;

    let answer = api
        .post("/chat/completions", &[], chat_body("fail-anything", false))
        .await;

    assert_openai_error(&answer, 500);
}

#[tokio::test]
async fn set_config_changes_later_requests() {
    let (mock, api) = start(MockConfig::default()).await;
    let before = api.chat(&[]).await;

    mock.set_config(MockConfig {
        fail_status: Some(500),
        ..MockConfig::default()
    });
    let failing = api.chat(&[]).await;
    mock.set_config(MockConfig {
        completion_tokens: 1,
        ..MockConfig::default()
    });
    let after = api.chat(&[]).await;

    assert_eq!(before.status, StatusCode::OK);
    assert_openai_error(&failing, 500);
    assert_eq!(after.body["choices"][0]["message"]["content"], "tok1");
    assert_eq!(mock.config().completion_tokens, 1);
}

#[tokio::test]
async fn requests_are_counted_and_the_last_one_recorded() {
    let (mock, api) = start(MockConfig::default()).await;
    assert_eq!(mock.requests(), 0);
    assert!(mock.last_request().is_none());

    api.chat(&[]).await;
    api.post(
        "/embeddings",
        &[("authorization", "Bearer sk-provider")],
        json!({"model": "e", "input": "x"}),
    )
    .await;

    assert_eq!(mock.requests(), 2);
    let last = mock.last_request().unwrap();
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/v1/embeddings");
    assert_eq!(last.header("Authorization"), Some("Bearer sk-provider"));
    assert_eq!(last.body, Some(json!({"model": "e", "input": "x"})));
    assert_eq!(mock.in_flight(), 0);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let (mock, api) = start(MockConfig::default()).await;
    let addr = mock.addr();
    assert_eq!(api.chat(&[]).await.status, StatusCode::OK);

    mock.shutdown().await;

    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn usage_is_reported_as_the_config_says() {
    let (_mock, api) = start(MockConfig {
        completion_tokens: 2,
        usage: MockUsage::WhenAsked,
        ..MockConfig::default()
    })
    .await;
    let mut asked = chat_body("m", true);
    asked["stream_options"] = json!({"include_usage": true});
    let (_, events, _) = stream(&api, "/chat/completions", asked).await;
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let (last, others) = chunks.split_last().unwrap();
    assert_eq!(last["usage"]["total_tokens"], 7, "{last}");
    assert!(others
        .iter()
        .all(|c| c["usage"].is_null() && c.get("usage").is_some()));
    let (_, events, _) = stream(&api, "/chat/completions", chat_body("m", true)).await;
    assert!(events.iter().all(|e| !e.data.contains("usage")));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(api.chat(&[]).await.body["usage"]["total_tokens"], 7);

    let (_mock, api) = start(MockConfig {
        usage: MockUsage::Never,
        ..MockConfig::default()
    })
    .await;
    let mut asked = chat_body("m", true);
    asked["stream_options"] = json!({"include_usage": true});
    let (_, events, _) = stream(&api, "/chat/completions", asked).await;
    assert!(events.iter().all(|e| !e.data.contains("usage")));
    let answer = api.chat(&[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.get("usage").is_none(), "{}", answer.body);
}

fn tool_body(stream: bool, last_user: &str) -> Value {
    json!({
        "model": "m",
        "stream": stream,
        "tools": [{"type": "function", "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        }}],
        "messages": [{"role": "user", "content": last_user}],
    })
}

#[tokio::test]
async fn chat_with_tools_and_the_trigger_answers_a_call_whole_and_streamed() {
    let (_mock, api) = start(MockConfig {
        completion_tokens: 3,
        ..MockConfig::default()
    })
    .await;

    let whole = api
        .post(
            "/chat/completions",
            &[],
            tool_body(false, "Please use a tool"),
        )
        .await;
    let (_, events, _) = stream(&api, "/chat/completions", tool_body(true, "USE A TOOL")).await;

    assert_eq!(whole.status, StatusCode::OK, "{}", whole.body);
    let choice = &whole.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"text": "tok1 tok2 tok3"}));
    assert_eq!(whole.body["usage"]["completion_tokens"], 3);

    // Opening, three pieces, finish, usage, [DONE]; the pieces join into the same JSON.
    assert_eq!(events.len(), 7);
    let chunks: Vec<Value> = events[..6]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["function"]["name"], "lookup");
    assert!(first["id"].as_str().unwrap().starts_with("call_"));
    let joined: String = chunks[..4]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&joined).unwrap(),
        json!({"text": "tok1 tok2 tok3"})
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(events[6].data, "[DONE]");
}

#[tokio::test]
async fn chat_with_tools_answers_text_without_the_trigger_or_after_a_tool_result() {
    let (_mock, api) = start(MockConfig {
        completion_tokens: 3,
        ..MockConfig::default()
    })
    .await;
    let mut after_result = tool_body(false, "use a tool");
    after_result["messages"] = json!([
        {"role": "user", "content": "use a tool"},
        {"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": "{\"text\": \"tok1\"}"},
        }]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found it"},
    ]);

    for body in [tool_body(false, "just talk"), after_result] {
        let answer = api.post("/chat/completions", &[], body.clone()).await;

        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let choice = &answer.body["choices"][0];
        assert_eq!(choice["finish_reason"], "stop", "{body}");
        assert_eq!(choice["message"]["content"], "tok1 tok2 tok3");
        assert!(choice["message"].get("tool_calls").is_none());
    }
}
