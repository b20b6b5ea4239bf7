//! A strict Anthropic Messages endpoint, `POST /v1/messages`: the checks the
//! real API makes, answers whole or streamed as Anthropic's events.
//!
//! Refused with Anthropic's error body (`{"type":"error","error":{"type",
//! "message"}}`) and the real status: a missing or wrong `x-api-key`
//! ([`AnthropicMock::api_key`], 401), a missing `anthropic-version` (400), a
//! body that is not a JSON object, no `model`, no positive `max_tokens`, no
//! or empty `messages`, a role other than `user` or `assistant` (`system`
//! belongs at the top level), a first message not from `user`, two
//! consecutive messages of one role, and a `tool_result` whose `tool_use_id`
//! is not a `tool_use` of the message before it (all 400). A model named
//! `fail-...` answers 500 `api_error`.
//!
//! The answer is `tok1 tok2 ...` as the config's token count (cut by
//! `max_tokens`, then `stop_reason: "max_tokens"`), or, when the request has
//! `tools` and the text of its last message (a user turn) contains
//! "use a tool" in any case, a `tool_use` block calling the first tool with
//! input `{"text": "tok1 tok2 ..."}` (`stop_reason: "tool_use"`). Input tokens
//! are counted as the OpenAI endpoints count prompt tokens (words of the
//! system prompt and of every text), output tokens are the completion's.
//! A stream sends `message_start`, `content_block_start`, `ping`, a
//! `content_block_delta` a token (each after the token delay),
//! `content_block_stop`, `message_delta` with the usage and `message_stop`.
//! Latency, injected failures and the `x-mock-*` headers apply as to the
//! OpenAI endpoints (failures in Anthropic's shape); [`MockConfig::usage`]
//! does not, since Anthropic always reports usage.
//!
//! [`MockConfig::usage`]: super::MockConfig::usage

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt as _;
use serde_json::{json, Map, Value};

use super::config::Plan;
use super::state::Shared;
use super::wire;

/// The `x-api-key` a default [`AnthropicMock`] accepts.
pub const ANTHROPIC_API_KEY: &str = "sk-ant-mock";

/// The phrase in the last user text that makes a request with tools answer
/// with a `tool_use` block.
pub const TOOL_TRIGGER: &str = "use a tool";

/// How the `/v1/messages` endpoint behaves.
#[derive(Clone, PartialEq, Eq)]
pub struct AnthropicMock {
    /// The `x-api-key` every request must carry.
    pub api_key: String,
    /// Reported as `cache_read_input_tokens`; `None` reports 0.
    pub cache_read_tokens: Option<u32>,
}

impl Default for AnthropicMock {
    fn default() -> Self {
        AnthropicMock {
            api_key: ANTHROPIC_API_KEY.to_owned(),
            cache_read_tokens: None,
        }
    }
}

/// The key stays out of test output, as a real credential would.
impl fmt::Debug for AnthropicMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicMock")
            .field("api_key", &"***")
            .field("cache_read_tokens", &self.cache_read_tokens)
            .finish()
    }
}

/// A refusal in Anthropic's shape.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

/// Anthropic's error body for `status`, with its `request_id`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    let id = request_id();
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": id,
    });
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", value);
    }
    response
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

fn request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

pub(crate) async fn messages(
    State(shared): State<Arc<Shared>>,
    Extension(plan): Extension<Plan>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let config = shared.config().anthropic;
    match headers.get("x-api-key") {
        None => {
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                message: "x-api-key header is required".to_owned(),
            })
        }
        Some(key) if key.as_bytes() != config.api_key.as_bytes() => {
            return Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                message: "invalid x-api-key".to_owned(),
            })
        }
        Some(_) => {}
    }
    if !headers.contains_key("anthropic-version") {
        return Err(Refusal::invalid("anthropic-version: header is required"));
    }
    let request = Request::parse(&body)?;
    if request.model.starts_with("fail-") {
        return Ok(injected(500));
    }

    let (tokens, stop_reason) = match request.max_tokens {
        limit if limit < u64::from(plan.completion_tokens) => (limit as u32, "max_tokens"),
        _ => (plan.completion_tokens, "end_turn"),
    };
    let tool = request.tool_to_call();
    let stop_reason = if tool.is_some() {
        "tool_use"
    } else {
        stop_reason
    };
    let answer = Answer {
        id: format!("msg_mock{}", uuid::Uuid::new_v4().simple()),
        model: request.model.clone(),
        tool,
        tokens,
        stop_reason,
        input_tokens: request.input_tokens(),
        cache_read: config.cache_read_tokens.unwrap_or(0),
    };
    if request.stream {
        return Ok(answer.stream(plan.token_delay));
    }
    let mut response = Json(answer.message()).into_response();
    if let Ok(value) = HeaderValue::from_str(&request_id()) {
        response.headers_mut().insert("request-id", value);
    }
    Ok(response)
}

/// A request body that passed the checks.
#[derive(Debug)]
struct Request {
    model: String,
    max_tokens: u64,
    stream: bool,
    body: Map<String, Value>,
}

impl Request {
    fn parse(bytes: &Bytes) -> Result<Request, Refusal> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
            return Err(Refusal::invalid("the request body must be a JSON object"));
        };
        let Some(model) = body.get("model").and_then(Value::as_str) else {
            return Err(Refusal::invalid("model: Field required"));
        };
        let max_tokens = match body.get("max_tokens").map(Value::as_u64) {
            None => return Err(Refusal::invalid("max_tokens: Field required")),
            Some(Some(n)) if n > 0 => n,
            Some(_) => {
                return Err(Refusal::invalid(
                    "max_tokens: Input should be a positive integer",
                ))
            }
        };
        let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
        let Some(messages) = body.get("messages").and_then(Value::as_array) else {
            return Err(Refusal::invalid("messages: Field required"));
        };
        check_turns(messages)?;
        Ok(Request {
            model: model.to_owned(),
            max_tokens,
            stream,
            body,
        })
    }

    fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The first tool's name when the last user text asks for a tool.
    fn tool_to_call(&self) -> Option<String> {
        let tool = self
            .body
            .get("tools")
            .and_then(Value::as_array)
            .and_then(|tools| tools.first())
            .and_then(|tool| tool.get("name"))
            .and_then(Value::as_str)?;
        let last = self.messages().last()?;
        let asks = texts(last.get("content"))
            .iter()
            .any(|text| text.to_lowercase().contains(TOOL_TRIGGER));
        asks.then(|| tool.to_owned())
    }

    /// The words of the system prompt and of every message's text, as
    /// the OpenAI endpoints count a prompt.
    fn input_tokens(&self) -> u32 {
        let mut all =
            vec![json!({"content": self.body.get("system").cloned().unwrap_or(Value::Null)})];
        all.extend(self.messages().iter().cloned());
        wire::count_message_words(&all)
    }
}

/// The role and tool checks Anthropic makes on `messages`.
fn check_turns(messages: &[Value]) -> Result<(), Refusal> {
    if messages.is_empty() {
        return Err(Refusal::invalid(
            "messages: at least one message is required",
        ));
    }
    let mut previous: Option<&str> = None;
    let mut tool_uses: HashSet<&str> = HashSet::new();
    for (i, message) in messages.iter().enumerate() {
        let role = match message.get("role").and_then(Value::as_str) {
            Some(role @ ("user" | "assistant")) => role,
            Some("system") => {
                return Err(Refusal::invalid(format!(
                    "messages.{i}.role: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role."
                )))
            }
            _ => {
                return Err(Refusal::invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )))
            }
        };
        if i == 0 && role != "user" {
            return Err(Refusal::invalid(
                "messages: first message must use the \"user\" role",
            ));
        }
        if previous == Some(role) {
            return Err(Refusal::invalid(format!(
                "messages.{i}: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            )));
        }
        let blocks = match message.get("content") {
            Some(Value::String(_)) => &[][..],
            Some(Value::Array(blocks)) => blocks.as_slice(),
            _ => {
                return Err(Refusal::invalid(format!(
                    "messages.{i}.content: Input should be a valid string or list"
                )))
            }
        };
        let mut uses = HashSet::new();
        for (j, block) in blocks.iter().enumerate() {
            match block.get("type").and_then(Value::as_str) {
                Some("tool_use") if role == "assistant" => {
                    if let Some(id) = block.get("id").and_then(Value::as_str) {
                        uses.insert(id);
                    }
                }
                Some("tool_result") if role == "user" => {
                    let id = block.get("tool_use_id").and_then(Value::as_str);
                    if !id.is_some_and(|id| tool_uses.contains(id)) {
                        return Err(Refusal::invalid(format!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        )));
                    }
                }
                Some(_) => {}
                None => {
                    return Err(Refusal::invalid(format!(
                        "messages.{i}.content.{j}.type: Field required"
                    )))
                }
            }
        }
        tool_uses = uses;
        previous = Some(role);
    }
    Ok(())
}

/// The texts of a string content or of its text blocks.
fn texts(content: Option<&Value>) -> Vec<&str> {
    match content {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

/// What the mock answers.
#[derive(Debug)]
struct Answer {
    id: String,
    model: String,
    /// The tool to call instead of answering text.
    tool: Option<String>,
    tokens: u32,
    stop_reason: &'static str,
    input_tokens: u32,
    cache_read: u32,
}

impl Answer {
    fn usage(&self, output_tokens: u32) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cache_read,
        })
    }

    fn tool_id(&self) -> String {
        format!("toolu_{}", self.id.trim_start_matches("msg_"))
    }

    fn message(&self) -> Value {
        let block = match &self.tool {
            Some(name) => json!({
                "type": "tool_use",
                "id": self.tool_id(),
                "name": name,
                "input": {"text": wire::completion_text(self.tokens)},
            }),
            None => json!({"type": "text", "text": wire::completion_text(self.tokens)}),
        };
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [block],
            "stop_reason": self.stop_reason,
            "stop_sequence": null,
            "usage": self.usage(self.tokens),
        })
    }

    /// The `text/event-stream` response: every event is its own body frame,
    /// the deltas `token_delay` apart.
    fn stream(self, token_delay: std::time::Duration) -> Response {
        let mut start = self.message();
        start["content"] = json!([]);
        start["stop_reason"] = Value::Null;
        start["usage"] = self.usage(1);
        let block = match &self.tool {
            Some(name) => {
                json!({"type": "tool_use", "id": self.tool_id(), "name": name, "input": {}})
            }
            None => json!({"type": "text", "text": ""}),
        };
        let head = [
            event(
                "message_start",
                json!({"type": "message_start", "message": start}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": block}),
            ),
            event("ping", json!({"type": "ping"})),
        ];
        let tail = [
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            event(
                "message_delta",
                json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                    "usage": {"output_tokens": self.tokens},
                }),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ];
        let tool = self.tool.is_some();
        let tokens = self.tokens;
        // A tool's input `{"text": "tok1 tok2"}` streams as its opening, a
        // piece a token and its closing, so the pieces join into the JSON.
        let deltas = (0..=tokens + 1).filter_map(move |i| {
            let delta = if tool {
                let piece = if i == 0 {
                    "{\"text\": \"".to_owned()
                } else if i > tokens {
                    "\"}".to_owned()
                } else {
                    wire::token(i)
                };
                json!({"type": "input_json_delta", "partial_json": piece})
            } else if (1..=tokens).contains(&i) {
                json!({"type": "text_delta", "text": wire::token(i)})
            } else {
                return None;
            };
            let token = (1..=tokens).contains(&i);
            let data = json!({"type": "content_block_delta", "index": 0, "delta": delta});
            Some((event("content_block_delta", data), token))
        });
        let events = futures_util::stream::iter(head.into_iter().map(|e| (e, false)))
            .chain(futures_util::stream::iter(deltas))
            .chain(futures_util::stream::iter(
                tail.into_iter().map(|e| (e, false)),
            ))
            .then(move |(event, token)| async move {
                if token && !token_delay.is_zero() {
                    tokio::time::sleep(token_delay).await;
                }
                Ok::<_, Infallible>(event)
            });
        let mut response = Response::new(Body::from_stream(events));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(value) = HeaderValue::from_str(&request_id()) {
            headers.insert("request-id", value);
        }
        response
    }
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(messages: Value) -> Result<(), String> {
        let messages = messages.as_array().cloned().unwrap_or_default();
        check_turns(&messages).map_err(|r| r.message)
    }

    #[test]
    fn alternating_turns_with_matching_tool_results_pass() {
        check(json!([
            {"role": "user", "content": "use a tool"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
        ]))
        .unwrap();
    }

    #[test]
    fn role_and_tool_mistakes_are_refused() {
        for (messages, expected) in [
            (json!([]), "at least one message"),
            (
                json!([{"role": "assistant", "content": "x"}]),
                "first message",
            ),
            (
                json!([{"role": "system", "content": "x"}]),
                "Unexpected role",
            ),
            (
                json!([{"role": "tool", "content": "x"}]),
                "'user' or 'assistant'",
            ),
            (
                json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
                "must alternate",
            ),
            (
                json!([{"role": "user", "content": 5}]),
                "valid string or list",
            ),
            (
                json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9"}]}]),
                "tool_use_id",
            ),
            (
                json!([
                    {"role": "user", "content": "go"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1"}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2"}]},
                ]),
                "tool_use_id",
            ),
        ] {
            let err = check(messages.clone()).unwrap_err();
            assert!(err.contains(expected), "{messages}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", AnthropicMock::default());
        assert!(!shown.contains(ANTHROPIC_API_KEY), "{shown}");
    }
}
