//! Tests of the mock's Gemini endpoints over real HTTP: Google AI Studio's
//! `/v1beta/models/{model}:generateContent` and Vertex AI's project path,
//! the refusals Google makes (key, token, project, model, method, body),
//! then whole and streamed answers, function calls and usage.

use axum::http::Method;
use http_body_util::BodyExt as _;
use obleth_testkit::mock::{
    GeminiMock, MockConfig, MockUpstream, FAIL_STATUS_HEADER, GEMINI_API_KEY, TOKENS_HEADER,
    VERTEX_ACCESS_TOKEN,
};
use serde_json::{json, Value};

use super::{start, Answer, Api};

const KEY: (&str, &str) = ("x-goog-api-key", GEMINI_API_KEY);
const GENERATE: &str = "/v1beta/models/gemini-2.0-flash:generateContent";
const STREAM: &str = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
const VERTEX: &str =
    "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent";

fn body(text: &str) -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
    })
}

fn assert_google_error(answer: &Answer, status: u16, name: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.body);
    let error = &answer.body["error"];
    assert_eq!(error["code"], status, "{}", answer.body);
    assert_eq!(error["status"], name, "{}", answer.body);
    assert!(error["message"].is_string(), "{}", answer.body);
}

async fn gemini(config: MockConfig) -> (MockUpstream, Api) {
    let (mock, mut api) = start(config).await;
    api.base_url = format!("http://{}", mock.addr());
    (mock, api)
}

/// The events of a streamed answer (`data:` payloads, CRLF-separated as
/// Gemini writes them) and its content type.
async fn stream(
    api: &Api,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (String, Vec<Value>) {
    let request = api.request(Method::POST, path, headers, &body.to_string());
    let response = api.client.request(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let events = text
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("a data line")).unwrap())
        .collect();
    (kind, events)
}

#[tokio::test]
async fn ai_studio_refuses_what_google_refuses() {
    let (mock, api) = gemini(MockConfig::default()).await;
    // The key first: none is 403, a wrong one 400.
    assert_google_error(
        &api.post(GENERATE, &[], body("hi")).await,
        403,
        "PERMISSION_DENIED",
    );
    let wrong = api
        .post(GENERATE, &[("x-goog-api-key", "nope")], body("hi"))
        .await;
    assert_google_error(&wrong, 400, "INVALID_ARGUMENT");
    let bearer = api
        .post(GENERATE, &[("authorization", "Bearer x")], body("hi"))
        .await;
    assert_google_error(&bearer, 403, "PERMISSION_DENIED");
    // Then the model and the method.
    let unknown = api
        .post("/v1beta/models/gpt-4o:generateContent", &[KEY], body("hi"))
        .await;
    assert_google_error(&unknown, 404, "NOT_FOUND");
    let method = api
        .post(
            "/v1beta/models/gemini-2.0-flash:predict",
            &[KEY],
            body("hi"),
        )
        .await;
    assert_google_error(&method, 404, "NOT_FOUND");
    let no_sse = api
        .post(
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
            &[KEY],
            body("hi"),
        )
        .await;
    assert_google_error(&no_sse, 400, "INVALID_ARGUMENT");
    // Then the body.
    let user = json!([{"role": "user", "parts": [{"text": "hi"}]}]);
    for bad in [
        json!({}),
        json!({"contents": []}),
        json!({"contents": user, "model": "gemini-2.0-flash"}),
        json!({"contents": user, "stream": true}),
        json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
        json!({"contents": [{"role": "user", "content": "x"}]}),
        json!({"contents": user, "systemInstruction": {"role": "system", "parts": [{"text": "x"}]}}),
        json!({"contents": user, "generationConfig": {"max_tokens": 5}}),
    ] {
        let answer = api.post(GENERATE, &[KEY], bad.clone()).await;
        assert_google_error(&answer, 400, "INVALID_ARGUMENT");
    }
    assert_eq!(mock.requests(), 14, "each refusal was a request");
}

#[tokio::test]
async fn a_whole_answer_has_the_tokens_finish_reason_and_usage() {
    let config = MockConfig {
        completion_tokens: 4,
        gemini: GeminiMock {
            cached_tokens: Some(2),
            ..GeminiMock::default()
        },
        ..MockConfig::default()
    };
    let (mock, api) = gemini(config).await;
    let answer = api.post(GENERATE, &[KEY], body("say something nice")).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    let candidate = &answer.body["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(
        candidate["content"]["parts"][0]["text"],
        "tok1 tok2 tok3 tok4"
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(
        answer.body["usageMetadata"],
        json!({"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9, "cachedContentTokenCount": 2})
    );
    let recorded = mock.last_request().unwrap();
    assert_eq!(
        recorded.path,
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    // maxOutputTokens cuts the answer; so does the tokens header.
    let mut cut = body("hi");
    cut["generationConfig"] = json!({"maxOutputTokens": 2});
    let answer = api.post(GENERATE, &[KEY], cut).await;
    assert_eq!(
        answer.body["candidates"][0]["content"]["parts"][0]["text"],
        "tok1 tok2"
    );
    assert_eq!(answer.body["candidates"][0]["finishReason"], "MAX_TOKENS");
    let answer = api
        .post(GENERATE, &[KEY, (TOKENS_HEADER, "1")], body("hi"))
        .await;
    assert_eq!(
        answer.body["candidates"][0]["content"]["parts"][0]["text"],
        "tok1"
    );
}

#[tokio::test]
async fn the_trigger_phrase_with_functions_answers_a_function_call() {
    let (_mock, api) = gemini(MockConfig::default()).await;
    let mut request = body("please use a tool");
    request["tools"] = json!([{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}]);
    let answer = api.post(GENERATE, &[KEY], request.clone()).await;
    let part = &answer.body["candidates"][0]["content"]["parts"][0];
    assert_eq!(
        part["functionCall"]["name"], "get_weather",
        "{}",
        answer.body
    );
    assert!(part["functionCall"]["args"]["text"].is_string());
    // The result goes back as a functionResponse and gets text.
    request["contents"] = json!([
        {"role": "user", "parts": [{"text": "please use a tool"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}]},
    ]);
    let answer = api.post(GENERATE, &[KEY], request.clone()).await;
    assert!(
        answer.body["candidates"][0]["content"]["parts"][0]["text"].is_string(),
        "{}",
        answer.body
    );
    // A response to a function never called is refused.
    request["contents"] = json!([
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {}}}]},
    ]);
    assert_google_error(
        &api.post(GENERATE, &[KEY], request).await,
        400,
        "INVALID_ARGUMENT",
    );
}

#[tokio::test]
async fn a_stream_sends_an_event_a_token_with_usage_and_the_finish_reason_last() {
    let config = MockConfig {
        completion_tokens: 3,
        ..MockConfig::default()
    };
    let (_mock, api) = gemini(config).await;
    let (kind, events) = stream(&api, STREAM, &[KEY], body("hi")).await;
    assert!(kind.starts_with("text/event-stream"));
    assert_eq!(events.len(), 3);
    let text: String = events
        .iter()
        .map(|e| {
            e["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, "tok1 tok2 tok3");
    assert!(events[0]["candidates"][0].get("finishReason").is_none());
    assert_eq!(events[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(events[2]["usageMetadata"]["candidatesTokenCount"], 3);
    assert_eq!(events[2]["usageMetadata"]["promptTokenCount"], 3);
}

#[tokio::test]
async fn vertex_wants_its_token_project_and_location() {
    let (mock, api) = gemini(MockConfig::default()).await;
    let bearer = format!("Bearer {VERTEX_ACCESS_TOKEN}");
    let auth = ("authorization", bearer.as_str());
    assert_google_error(
        &api.post(VERTEX, &[], body("hi")).await,
        401,
        "UNAUTHENTICATED",
    );
    assert_google_error(
        &api.post(VERTEX, &[KEY], body("hi")).await,
        401,
        "UNAUTHENTICATED",
    );
    let wrong = api
        .post(VERTEX, &[("authorization", "Bearer other")], body("hi"))
        .await;
    assert_google_error(&wrong, 401, "UNAUTHENTICATED");
    let elsewhere = api
        .post(
            "/v1/projects/other/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent",
            &[auth],
            body("hi"),
        )
        .await;
    assert_google_error(&elsewhere, 403, "PERMISSION_DENIED");
    let answer = api.post(VERTEX, &[auth], body("hi")).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.body);
    assert!(answer.body["candidates"][0]["content"]["parts"][0]["text"].is_string());
    assert_eq!(mock.requests(), 5);
    // Injected failures take Google's shape too.
    let failed = api
        .post(VERTEX, &[auth, (FAIL_STATUS_HEADER, "503")], body("hi"))
        .await;
    assert_google_error(&failed, 503, "UNAVAILABLE");
    assert_eq!(failed.headers["x-mock-injected"], "true");
    let path = VERTEX.replace(":generateContent", ":streamGenerateContent?alt=sse");
    let (_, events) = stream(&api, &path, &[auth], body("hi")).await;
    assert!(!events.is_empty());
}
