//! Strict Gemini endpoints: Google AI Studio's `POST
//! /v1beta/models/{model}:generateContent` (and
//! `:streamGenerateContent?alt=sse`), keyed by `x-goog-api-key`, and Vertex
//! AI's `POST /v1/projects/{project}/locations/{location}/publishers/google/
//! models/{model}:generateContent` (and the streaming method), keyed by an
//! OAuth access token (`Authorization: Bearer`): the config's, or one the
//! mock's token endpoints issued (`oauth.rs`).
//!
//! Refused as Google refuses, with its error body (`{"error":{"code",
//! "message","status"}}`): no `x-goog-api-key` is 403 `PERMISSION_DENIED`,
//! a wrong one 400 `INVALID_ARGUMENT` (`API key not valid`); for Vertex no
//! or a wrong bearer token is 401 `UNAUTHENTICATED` and another project or
//! location 403 `PERMISSION_DENIED`. A model not in [`GeminiMock::models`]
//! or a method other than the two is 404 `NOT_FOUND`; streaming without
//! `alt=sse` is 400. The body must be a JSON object of known fields only
//! (`contents`, `systemInstruction`, `generationConfig`, `tools`,
//! `toolConfig`, `safetySettings`): `contents` present and not empty, each
//! with role `user` or `model` and non-empty `parts` of exactly one kind
//! (`text`, `inlineData`, `functionCall`, `functionResponse`), a
//! `functionResponse` naming a function called before, a
//! `systemInstruction` without a role, a `generationConfig` of known fields
//! with a positive `maxOutputTokens` (all 400 `INVALID_ARGUMENT`).
//!
//! Embeddings (`batchEmbedContents`, `predict`) are served by
//! `gemini_embed.rs`.
//!
//! The answer is `tok1 tok2 ...` as the config's token count (cut by
//! `maxOutputTokens`, then `finishReason: MAX_TOKENS`), or, when the body
//! declares functions and the last user turn's text contains "use a tool"
//! ([`super::TOOL_TRIGGER`]), a `functionCall` of the first function with
//! args `{"text": "tok1 tok2 ..."}`. `promptTokenCount` counts the words of
//! the system instruction and of every text part, as the OpenAI endpoints
//! count a prompt. A stream sends one `data:` event a token (after the
//! token delay), the last with the finish reason; every event carries the
//! usage so far, as Gemini's do. Latency, injected failures and the
//! `x-mock-*` headers apply as to the OpenAI endpoints (failures in
//! Google's shape).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use super::anthropic::TOOL_TRIGGER;
use super::config::Plan;
use super::state::Shared;
use super::wire;

/// The `x-goog-api-key` a default [`GeminiMock`] accepts.
pub const GEMINI_API_KEY: &str = "gemini-mock-key";
/// The Vertex AI access token a default [`GeminiMock`] accepts.
pub const VERTEX_ACCESS_TOKEN: &str = "ya29.vertex-mock-token";

/// How the Gemini and Vertex AI endpoints behave.
#[derive(Clone, PartialEq, Eq)]
pub struct GeminiMock {
    /// The AI Studio key every `/v1beta` request must carry.
    pub api_key: String,
    /// The access token every Vertex AI request must carry.
    pub access_token: String,
    /// The Vertex AI project served.
    pub project: String,
    /// The Vertex AI location served.
    pub location: String,
    /// The models that exist (on both).
    pub models: Vec<String>,
    /// The embedding models that exist (on both): `batchEmbedContents`
    /// and `predict` serve these only.
    pub embedding_models: Vec<String>,
    /// Reported as `cachedContentTokenCount` when set.
    pub cached_tokens: Option<u32>,
    /// The `expires_in` of the tokens the OAuth endpoints issue, in
    /// seconds (a client renews a token a minute before it expires).
    pub token_expires_in: u64,
}

impl Default for GeminiMock {
    fn default() -> Self {
        GeminiMock {
            api_key: GEMINI_API_KEY.to_owned(),
            access_token: VERTEX_ACCESS_TOKEN.to_owned(),
            project: "mock-project".to_owned(),
            location: "us-central1".to_owned(),
            models: ["gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-pro"]
                .map(str::to_owned)
                .to_vec(),
            embedding_models: ["gemini-embedding-001", "text-embedding-005"]
                .map(str::to_owned)
                .to_vec(),
            cached_tokens: None,
            token_expires_in: 3600,
        }
    }
}

/// The secrets stay out of test output, as real credentials would.
impl fmt::Debug for GeminiMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiMock")
            .field("api_key", &"***")
            .field("access_token", &"***")
            .field("project", &self.project)
            .field("location", &self.location)
            .field("models", &self.models)
            .field("embedding_models", &self.embedding_models)
            .field("cached_tokens", &self.cached_tokens)
            .field("token_expires_in", &self.token_expires_in)
            .finish()
    }
}

/// Google's error body.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": name}});
    (status, Json(body)).into_response()
}

/// The answer to a request the config or a header told to fail.
pub(crate) fn injected(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!(
        "mock upstream injected failure with status {}",
        status.as_u16()
    );
    let mut response = error(status, &message);
    response
        .headers_mut()
        .insert("x-mock-injected", HeaderValue::from_static("true"));
    response
}

fn invalid(message: impl AsRef<str>) -> Response {
    error(StatusCode::BAD_REQUEST, message.as_ref())
}

/// `POST /v1beta/models/{model}:{method}` (Google AI Studio).
pub(crate) async fn ai_studio(
    State(shared): State<Arc<Shared>>,
    Extension(plan): Extension<Plan>,
    Path(call): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = shared.config().gemini;
    match headers.get("x-goog-api-key") {
        None => {
            return error(
                StatusCode::FORBIDDEN,
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            )
        }
        Some(key) if key.as_bytes() != config.api_key.as_bytes() => {
            return invalid("API key not valid. Please pass a valid API key.")
        }
        Some(_) => {}
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return invalid("Both an API key and an access token were sent; send one.");
    }
    generate(&config, plan, &call, &query, &body, "v1beta")
}

/// `POST /v1/projects/{project}/locations/{location}/publishers/google/
/// models/{model}:{method}` (Vertex AI).
pub(crate) async fn vertex(
    State(shared): State<Arc<Shared>>,
    Extension(plan): Extension<Plan>,
    Path((project, location, call)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = shared.config().gemini;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let known = token.is_some_and(|t| t == config.access_token || shared.oauth.issued(t));
    if !known {
        return error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    if project != config.project || location != config.location {
        return error(
            StatusCode::FORBIDDEN,
            &format!("Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/projects/{project}/locations/{location}' (or it may not exist)."),
        );
    }
    generate(&config, plan, &call, &query, &body, "v1")
}

fn generate(
    config: &GeminiMock,
    plan: Plan,
    call: &str,
    query: &HashMap<String, String>,
    body: &Bytes,
    version: &str,
) -> Response {
    let (model, method) = call.split_once(':').unwrap_or((call, ""));
    let embedding = matches!(
        (method, version),
        ("batchEmbedContents", "v1beta") | ("predict", "v1")
    );
    if embedding {
        if !config.embedding_models.iter().any(|m| m == model) {
            return error(
                StatusCode::NOT_FOUND,
                &format!("models/{model} is not found for API version {version}, or is not supported for {method}."),
            );
        }
        return if version == "v1" {
            super::gemini_embed::predict(body)
        } else {
            super::gemini_embed::batch(model, body)
        };
    }
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return error(StatusCode::NOT_FOUND, "Method not found."),
    };
    if !config.models.iter().any(|m| m == model) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("models/{model} is not found for API version {version}, or is not supported for {method}."),
        );
    }
    if stream && query.get("alt").map(String::as_str) != Some("sse") {
        return invalid("the mock serves streamGenerateContent with alt=sse only");
    }
    let request = match Request::parse(body) {
        Ok(request) => request,
        Err(message) => return invalid(message),
    };
    let (tokens, finish) = match request.max_output_tokens {
        Some(limit) if limit < u64::from(plan.completion_tokens) => (limit as u32, "MAX_TOKENS"),
        _ => (plan.completion_tokens, "STOP"),
    };
    let answer = Answer {
        id: uuid::Uuid::new_v4().simple().to_string(),
        model: model.to_owned(),
        tool: request.tool_to_call(),
        tokens,
        finish,
        prompt_tokens: request.prompt_tokens,
        cached: config.cached_tokens,
    };
    if stream {
        answer.stream(plan.token_delay)
    } else {
        Json(answer.whole()).into_response()
    }
}

/// A body that passed the checks.
#[derive(Debug)]
struct Request {
    max_output_tokens: Option<u64>,
    prompt_tokens: u32,
    /// The first declared function.
    function: Option<String>,
    /// The text of the last `user` turn.
    last_user_text: String,
}

const FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "generationConfig",
    "tools",
    "toolConfig",
    "safetySettings",
];

const CONFIG_FIELDS: &[&str] = &[
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "stopSequences",
    "candidateCount",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseMimeType",
    "responseSchema",
    "thinkingConfig",
];

impl Request {
    fn parse(bytes: &Bytes) -> Result<Request, String> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
            return Err("Invalid JSON payload received.".to_owned());
        };
        if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
            ));
        }
        let contents = match body.get("contents").and_then(Value::as_array) {
            Some(c) if !c.is_empty() => c,
            _ => return Err("* GenerateContentRequest.contents: contents is not specified".into()),
        };
        let mut words = 0;
        let mut called: HashSet<&str> = HashSet::new();
        let mut last_user_text = String::new();
        for (i, content) in contents.iter().enumerate() {
            let role = content.get("role").and_then(Value::as_str);
            if !matches!(role, Some("user" | "model")) {
                return Err(format!(
                    "* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model."
                ));
            }
            let parts = check_parts(content, &format!("contents[{i}]"))?;
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    words += t.split_whitespace().count() as u32;
                    text.push_str(t);
                }
                if let Some(call) = part.get("functionCall") {
                    if role != Some("model") {
                        return Err(format!(
                            "* GenerateContentRequest.contents[{i}].parts[{j}]: a functionCall must be in a model turn"
                        ));
                    }
                    if let Some(name) = call.get("name").and_then(Value::as_str) {
                        called.insert(name);
                    }
                }
                if let Some(response) = part.get("functionResponse") {
                    let name = response.get("name").and_then(Value::as_str).unwrap_or("");
                    if !called.contains(name)
                        || !response.get("response").is_some_and(Value::is_object)
                    {
                        return Err(format!(
                            "* GenerateContentRequest.contents[{i}].parts[{j}].function_response: names no function called before, or has no response object"
                        ));
                    }
                }
            }
            if role == Some("user") {
                last_user_text = text;
            }
        }
        if let Some(system) = body.get("systemInstruction") {
            if system.get("role").is_some() {
                return Err(
                    "* GenerateContentRequest.system_instruction: a system instruction takes no role"
                        .into(),
                );
            }
            for part in check_parts(system, "systemInstruction")? {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    words += t.split_whitespace().count() as u32;
                }
            }
        }
        let mut max_output_tokens = None;
        if let Some(config) = body.get("generationConfig") {
            let Some(config) = config.as_object() else {
                return Err(
                    "* GenerateContentRequest.generation_config: expected an object".into(),
                );
            };
            if let Some(unknown) = config.keys().find(|k| !CONFIG_FIELDS.contains(&k.as_str())) {
                return Err(format!(
                    "Invalid JSON payload received. Unknown name \"{unknown}\" at 'generation_config': Cannot find field."
                ));
            }
            if let Some(n) = config.get("maxOutputTokens") {
                match n.as_u64() {
                    Some(n) if n > 0 => max_output_tokens = Some(n),
                    _ => {
                        return Err(
                            "* GenerateContentRequest.generation_config.max_output_tokens: must be a positive integer"
                                .into(),
                        )
                    }
                }
            }
        }
        let function = body
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .and_then(|tool| tool.get("functionDeclarations"))
            .and_then(Value::as_array)
            .and_then(|f| f.first())
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Request {
            max_output_tokens,
            prompt_tokens: words.max(1),
            function,
            last_user_text,
        })
    }

    fn tool_to_call(&self) -> Option<String> {
        let asks = self.last_user_text.to_lowercase().contains(TOOL_TRIGGER);
        self.function.clone().filter(|_| asks)
    }
}

/// The `parts` of a content (or system instruction): not empty, each of
/// exactly one kind.
fn check_parts<'v>(content: &'v Value, at: &str) -> Result<&'v [Value], String> {
    let parts = match content.get("parts").and_then(Value::as_array) {
        Some(p) if !p.is_empty() => p,
        _ => {
            return Err(format!(
                "* GenerateContentRequest.{at}.parts: contents.parts must not be empty."
            ))
        }
    };
    for (j, part) in parts.iter().enumerate() {
        let kinds = [
            "text",
            "inlineData",
            "functionCall",
            "functionResponse",
            "fileData",
        ]
        .iter()
        .filter(|k| part.get(**k).is_some())
        .count();
        let others = part.as_object().map_or(1, |o| {
            o.keys()
                .filter(|k| {
                    !matches!(
                        k.as_str(),
                        "text"
                            | "inlineData"
                            | "functionCall"
                            | "functionResponse"
                            | "fileData"
                            | "thought"
                            | "thoughtSignature"
                    )
                })
                .count()
        });
        if kinds != 1 || others != 0 {
            return Err(format!(
                "* GenerateContentRequest.{at}.parts[{j}].data: required oneof field 'data' must have one initialized field"
            ));
        }
    }
    Ok(parts)
}

/// What the endpoint answers.
struct Answer {
    id: String,
    model: String,
    tool: Option<String>,
    tokens: u32,
    finish: &'static str,
    prompt_tokens: u32,
    cached: Option<u32>,
}

impl Answer {
    fn usage(&self, candidates: u32) -> Value {
        let mut usage = json!({
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": self.prompt_tokens + candidates,
        });
        if let Some(cached) = self.cached {
            usage["cachedContentTokenCount"] = json!(cached);
        }
        usage
    }

    fn response(&self, part: Value, finish: Option<&str>, candidates: u32) -> Value {
        let mut candidate = json!({"content": {"role": "model", "parts": [part]}, "index": 0});
        if let Some(finish) = finish {
            candidate["finishReason"] = json!(finish);
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": self.usage(candidates),
            "modelVersion": self.model,
            "responseId": self.id,
        })
    }

    fn tool_part(&self, name: &str) -> Value {
        json!({"functionCall": {"name": name, "args": {"text": wire::completion_text(self.tokens)}}})
    }

    fn whole(&self) -> Value {
        let part = match &self.tool {
            Some(name) => self.tool_part(name),
            None => json!({"text": wire::completion_text(self.tokens)}),
        };
        let finish = if self.tool.is_some() {
            "STOP"
        } else {
            self.finish
        };
        self.response(part, Some(finish), self.tokens)
    }

    /// The `text/event-stream` response: a `data:` event a token, each its
    /// own body frame, `token_delay` apart; a function call comes whole.
    fn stream(self, token_delay: std::time::Duration) -> Response {
        let events: Vec<Bytes> = match &self.tool {
            Some(name) => vec![event(&self.response(
                self.tool_part(name),
                Some("STOP"),
                self.tokens,
            ))],
            None => (1..=self.tokens.max(1))
                .map(|i| {
                    let text = if self.tokens == 0 {
                        String::new()
                    } else {
                        wire::token(i)
                    };
                    let finish = (i >= self.tokens).then_some(self.finish);
                    event(&self.response(json!({"text": text}), finish, i.min(self.tokens)))
                })
                .collect(),
        };
        let stream = futures_util::stream::iter(events).then(move |event| async move {
            if !token_delay.is_zero() {
                tokio::time::sleep(token_delay).await;
            }
            Ok::<_, Infallible>(event)
        });
        let mut response = Response::new(Body::from_stream(stream));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        response
    }
}

/// One event as Gemini writes them (CRLF line ends).
fn event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\r\n\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<Request, String> {
        Request::parse(&Bytes::from(body.to_string()))
    }

    #[test]
    fn well_formed_bodies_pass_and_are_counted() {
        let r = parse(json!({
            "contents": [
                {"role": "user", "parts": [{"text": "hello there"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}, {"text": "use a tool"}]},
            ],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {"maxOutputTokens": 3},
            "tools": [{"functionDeclarations": [{"name": "f"}]}],
        }))
        .unwrap();
        assert_eq!(r.prompt_tokens, 7);
        assert_eq!(r.max_output_tokens, Some(3));
        assert_eq!(r.tool_to_call().as_deref(), Some("f"));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let user = json!([{"role": "user", "parts": [{"text": "hi"}]}]);
        for body in [
            json!({"contents": []}),
            json!({"contents": user, "model": "x"}),
            json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}),
            json!({"contents": [{"parts": [{"text": "x"}]}]}),
            json!({"contents": [{"role": "user", "parts": []}]}),
            json!({"contents": [{"role": "user", "parts": [{"text": "x", "inlineData": {}}]}]}),
            json!({"contents": user, "systemInstruction": {"role": "system", "parts": [{"text": "x"}]}}),
            json!({"contents": user, "generationConfig": {"max_tokens": 1}}),
            json!({"contents": user, "generationConfig": {"maxOutputTokens": 0}}),
            json!({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}),
        ] {
            assert!(parse(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn debug_hides_the_secrets() {
        let shown = format!("{:?}", GeminiMock::default());
        assert!(!shown.contains(GEMINI_API_KEY) && !shown.contains(VERTEX_ACCESS_TOKEN));
    }
}
