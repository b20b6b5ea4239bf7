//! The built-in `mock` provider: answers in OpenAI's shape, streaming included,
//! with configurable latency and no network, so the quickstart needs no account.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};

use crate::settings::MockSettings;
use crate::upstream::{BoxError, UpBody};

/// Why the mock provider could not answer.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("mock: invalid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("mock: no such endpoint {0}")]
    NoSuchEndpoint(String),
    #[error("mock: cannot build the answer: {0}")]
    Answer(#[source] http::Error),
}

/// Answers a request for `path` as an OpenAI provider would.
pub async fn respond(
    settings: &MockSettings,
    path: &str,
    body: &[u8],
) -> Result<Response<UpBody>, MockError> {
    let request: Value = serde_json::from_slice(body).map_err(MockError::InvalidJson)?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_owned();
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if settings.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.latency_ms)).await;
    }
    let tokens = settings.tokens.max(1);
    let prompt_tokens = prompt_tokens(&request);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = format!("mock-{}", uuid::Uuid::new_v4().simple());
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens,
        "total_tokens": prompt_tokens + u64::from(tokens),
    });
    match path {
        "/embeddings" => {
            let inputs = match request.get("input") {
                Some(Value::Array(items)) => items.len(),
                _ => 1,
            };
            let data: Vec<Value> = (0..inputs)
                .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]}))
                .collect();
            json_response(json!({
                "object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }))
        }
        "/chat/completions" | "/completions" => {
            let chat = path == "/chat/completions";
            if !stream {
                let text = words(tokens);
                let choice = if chat {
                    json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
                } else {
                    json!({"index": 0, "text": text, "finish_reason": "stop"})
                };
                return json_response(json!({
                    "id": id, "object": if chat { "chat.completion" } else { "text_completion" },
                    "created": created, "model": model, "choices": [choice], "usage": usage,
                }));
            }
            let object = if chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            };
            let delay = Duration::from_millis(settings.token_delay_ms);
            let mut events: Vec<Value> = Vec::new();
            for i in 0..tokens {
                let piece = format!("tok{} ", i + 1);
                let choice = if chat {
                    json!({"index": 0, "delta": {"content": piece}, "finish_reason": null})
                } else {
                    json!({"index": 0, "text": piece, "finish_reason": null})
                };
                events.push(json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]}));
            }
            let last = if chat {
                json!({"index": 0, "delta": {}, "finish_reason": "stop"})
            } else {
                json!({"index": 0, "text": "", "finish_reason": "stop"})
            };
            events.push(json!({"id": id, "object": object, "created": created, "model": model, "choices": [last]}));
            events.push(json!({"id": id, "object": object, "created": created, "model": model, "choices": [], "usage": usage}));
            let frames = futures_util::stream::iter(events.into_iter().enumerate())
                .then(move |(i, event)| async move {
                    if i > 0 && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Bytes::from(format!("data: {event}\n\n"))
                })
                .chain(futures_util::stream::once(async {
                    Bytes::from_static(b"data: [DONE]\n\n")
                }))
                .map(|b| Ok::<_, BoxError>(Frame::data(b)));
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(StreamBody::new(frames).boxed_unsync())
                .map_err(MockError::Answer)
        }
        other => Err(MockError::NoSuchEndpoint(other.to_owned())),
    }
}

fn json_response(value: Value) -> Result<Response<UpBody>, MockError> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(Bytes::from(value.to_string()))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .map_err(MockError::Answer)
}

fn words(n: u32) -> String {
    (1..=n)
        .map(|i| format!("tok{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A rough prompt size: words in message contents, prompt or input.
fn prompt_tokens(request: &Value) -> u64 {
    let mut text = String::new();
    if let Some(messages) = request.get("messages").and_then(Value::as_array) {
        for m in messages {
            if let Some(c) = m.get("content").and_then(Value::as_str) {
                text.push_str(c);
                text.push(' ');
            }
        }
    }
    for field in ["prompt", "input"] {
        match request.get(field) {
            Some(Value::String(s)) => text.push_str(s),
            Some(Value::Array(items)) => {
                for i in items {
                    if let Some(s) = i.as_str() {
                        text.push_str(s);
                        text.push(' ');
                    }
                }
            }
            _ => {}
        }
    }
    (text.split_whitespace().count() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusals_are_typed_and_name_what_is_wrong() {
        let settings = MockSettings::default();
        let err = respond(&settings, "/chat/completions", b"not json")
            .await
            .unwrap_err();
        assert!(matches!(err, MockError::InvalidJson(_)), "{err:?}");
        assert!(err.to_string().starts_with("mock: invalid JSON"), "{err}");
        let err = respond(&settings, "/audio", br#"{"model":"m"}"#)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, MockError::NoSuchEndpoint(p) if p == "/audio"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "mock: no such endpoint /audio");
    }
}
