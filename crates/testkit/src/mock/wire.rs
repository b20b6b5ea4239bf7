//! OpenAI's wire shapes shared by the endpoints: request parsing, errors, usage and ids.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::config::MockUsage;

/// An OpenAI error response: `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn error(status: StatusCode, message: &str, param: Option<&str>) -> Response {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        404 => ("invalid_request_error", Some("not_found")),
        429 => ("requests", Some("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    };
    let body = json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    (status, Json(body)).into_response()
}

pub(crate) fn invalid(message: &str, param: Option<&str>) -> Response {
    error(StatusCode::BAD_REQUEST, message, param)
}

/// A request the endpoints refuse with 400, naming the parameter at fault.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub message: &'static str,
    pub param: Option<&'static str>,
}

impl Invalid {
    pub fn new(message: &'static str, param: &'static str) -> Invalid {
        Invalid {
            message,
            param: Some(param),
        }
    }
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        invalid(self.message, self.param)
    }
}

/// The answer to a request the config or a header told to fail.
pub(crate) fn injected(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!(
        "mock upstream injected failure with status {}",
        status.as_u16()
    );
    let mut response = error(status, &message, None);
    response
        .headers_mut()
        .insert("x-mock-injected", HeaderValue::from_static("true"));
    response
}

/// A JSON response with an `x-request-id`, as OpenAI sends.
pub(crate) fn ok(body: Value) -> Response {
    let mut response = Json(body).into_response();
    with_request_id(&mut response);
    response
}

pub(crate) fn with_request_id(response: &mut Response) {
    let id = format!("req_{}", uuid::Uuid::new_v4().simple());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-cache"));
}

/// A parsed request body of one of the model endpoints.
#[derive(Debug)]
pub(crate) struct ApiRequest {
    pub model: String,
    pub body: Map<String, Value>,
}

impl ApiRequest {
    /// Parses the body, answering 400 in OpenAI's words when it is not a JSON
    /// object with a string `model`.
    pub fn parse(bytes: &Bytes) -> Result<ApiRequest, Invalid> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
            return Err(Invalid {
                message: "We could not parse the JSON body of your request. The body must be a JSON object.",
                param: None,
            });
        };
        match body.get("model") {
            Some(Value::String(model)) => Ok(ApiRequest {
                model: model.clone(),
                body,
            }),
            Some(_) => Err(Invalid::new(
                "Invalid type for 'model': expected a string.",
                "model",
            )),
            None => Err(Invalid::new("You must provide a model parameter.", "model")),
        }
    }

    /// A model named `fail-...` always answers 500; tests reach it through a
    /// gateway that does not forward the `x-mock-*` headers.
    pub fn model_failure(&self) -> Option<Response> {
        self.model.starts_with("fail-").then(|| injected(500))
    }

    pub fn stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// Whether the request sets `stream_options.include_usage: true`.
    pub fn include_usage(&self) -> bool {
        self.body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true)
    }

    /// The usage to report and whether other chunks carry `"usage": null`,
    /// as `mode` says: for a stream, `None` sends no usage chunk; for an
    /// answer, no `usage` field.
    pub fn reported_usage(&self, mode: MockUsage, usage: Value) -> (Option<Value>, bool) {
        match mode {
            MockUsage::Always => (Some(usage), false),
            MockUsage::WhenAsked if !self.stream() => (Some(usage), false),
            MockUsage::WhenAsked if self.include_usage() => (Some(usage), true),
            MockUsage::WhenAsked | MockUsage::Never => (None, false),
        }
    }

    /// How many tokens to generate and why generation stops: `max_tokens` (or
    /// `max_completion_tokens`) below `tokens` cuts the completion to `length`.
    pub fn completion_len(&self, tokens: u32) -> (u32, &'static str) {
        let limit = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|key| self.body.get(*key).and_then(Value::as_u64));
        match limit {
            Some(limit) if limit < u64::from(tokens) => (limit as u32, "length"),
            _ => (tokens, "stop"),
        }
    }
}

/// The `i`-th token (from 1) of a completion, with its leading space.
pub(crate) fn token(i: u32) -> String {
    if i == 1 {
        "tok1".to_owned()
    } else {
        format!(" tok{i}")
    }
}

/// The whole text of an `n`-token completion: `tok1 tok2 ... tokN`.
pub(crate) fn completion_text(n: u32) -> String {
    (1..=n).map(token).collect()
}

/// A rough token count of a prompt or embedding input: the words of each
/// string plus one for each number of a token array, at least 1.
pub(crate) fn count_words(value: &Value) -> u32 {
    fn walk(value: &Value) -> u32 {
        match value {
            Value::String(s) => s.split_whitespace().count() as u32,
            Value::Number(_) => 1,
            Value::Array(items) => items.iter().map(walk).sum(),
            _ => 0,
        }
    }
    walk(value).max(1)
}

/// The words in the `content` of chat messages, at least 1. Content is either a
/// string or an array of parts, of which `{"type": "text", "text": ...}` count.
pub(crate) fn count_message_words(messages: &[Value]) -> u32 {
    let words = |s: &str| s.split_whitespace().count() as u32;
    let total: u32 = messages
        .iter()
        .map(|message| match message.get("content") {
            Some(Value::String(text)) => words(text),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .map(words)
                .sum(),
            _ => 0,
        })
        .sum();
    total.max(1)
}

pub(crate) fn usage(prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Seconds since the Unix epoch, OpenAI's `created`.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_text_is_numbered_words() {
        assert_eq!(completion_text(3), "tok1 tok2 tok3");
        assert_eq!(completion_text(0), "");
    }

    #[test]
    fn message_words_count_string_and_part_contents() {
        let messages = [
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": [{"type": "text", "text": "hello there you"}]}),
        ];
        assert_eq!(count_message_words(&messages), 5);
        assert_eq!(count_message_words(&[]), 1);
    }

    #[test]
    fn prompt_words_count_strings_and_token_arrays() {
        assert_eq!(count_words(&json!("one two three")), 3);
        assert_eq!(count_words(&json!(["a b", "c"])), 3);
        assert_eq!(count_words(&json!([[1, 2], [3]])), 3);
        assert_eq!(count_words(&json!("")), 1);
    }
}
