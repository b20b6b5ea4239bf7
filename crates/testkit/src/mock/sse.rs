//! Streamed completions: server-sent events produced one at a time, paced by the token delay.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use futures_util::stream;
use serde_json::{json, Value};

use super::tools::ToolCall;
use super::wire;

/// Which endpoint's chunks to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `chat.completion.chunk` objects with a `delta`.
    Chat,
    /// `text_completion` objects with a `text`.
    Text,
}

/// Everything a streamed completion needs to write its chunks.
#[derive(Debug)]
pub(crate) struct Completion {
    pub kind: Kind,
    pub model: String,
    pub tokens: u32,
    pub finish_reason: &'static str,
    /// The usage chunk's `usage`; `None` sends no usage chunk.
    pub usage: Option<Value>,
    /// Every chunk but the usage chunk carries `"usage": null`, as OpenAI's
    /// do when the request asks for usage.
    pub null_usage: bool,
    pub token_delay: Duration,
    /// A chat stream that calls this tool instead of answering text: the
    /// role step opens the call, each token step carries a piece of its
    /// arguments.
    pub tool: Option<ToolCall>,
}

/// Where a stream stands: each step writes one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The chat stream opens with the assistant's role and empty content.
    Role,
    /// Token `i`, from 1.
    Token(u32),
    Finish,
    /// Empty `choices` and the `usage`; OpenAI sends it when asked through
    /// `stream_options.include_usage`, the mock as its config says.
    Usage,
    Done,
}

/// The `text/event-stream` response. Each event is its own body frame, written
/// when produced, so a client sees the tokens arrive `token_delay` apart.
pub(crate) fn response(completion: Completion) -> Response {
    let id = wire::new_id(match completion.kind {
        Kind::Chat => "chatcmpl",
        Kind::Text => "cmpl",
    });
    let created = wire::now();
    let first = match completion.kind {
        Kind::Chat => Step::Role,
        Kind::Text => completion.after_token(0),
    };
    let events = stream::unfold(Some(first), move |step| {
        // The event is built before the future so that it borrows nothing.
        let event = step.map(|step| completion.event(step, &id, created));
        let delay = match step {
            Some(Step::Token(_)) => completion.token_delay,
            _ => Duration::ZERO,
        };
        let next = step.and_then(|step| completion.next(step));
        async move {
            let event = event?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, Infallible>(Bytes::from(event)), next))
        }
    });
    let mut response = Response::new(Body::from_stream(events));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    wire::with_request_id(&mut response);
    response
}

impl Completion {
    fn next(&self, step: Step) -> Option<Step> {
        match step {
            Step::Role => Some(self.after_token(0)),
            Step::Token(i) => Some(self.after_token(i)),
            Step::Finish if self.usage.is_some() => Some(Step::Usage),
            Step::Finish => Some(Step::Done),
            Step::Usage => Some(Step::Done),
            Step::Done => None,
        }
    }

    fn after_token(&self, i: u32) -> Step {
        if i < self.tokens {
            Step::Token(i + 1)
        } else {
            Step::Finish
        }
    }

    fn event(&self, step: Step, id: &str, created: u64) -> String {
        let choices = match (self.kind, step) {
            (_, Step::Done) => return "data: [DONE]\n\n".to_owned(),
            (_, Step::Usage) => json!([]),
            (Kind::Chat, Step::Role) => match &self.tool {
                Some(call) => json!([choice(call.first_delta(self.tokens), None)]),
                None => json!([choice(json!({"role": "assistant", "content": ""}), None)]),
            },
            (Kind::Chat, Step::Token(i)) => match &self.tool {
                Some(call) => json!([choice(call.delta(i, self.tokens), None)]),
                None => json!([choice(json!({"content": wire::token(i)}), None)]),
            },
            (Kind::Chat, Step::Finish) => json!([choice(json!({}), Some(self.finish_reason))]),
            (Kind::Text, Step::Token(i)) => json!([text_choice(&wire::token(i), None)]),
            (Kind::Text, Step::Finish) => json!([text_choice("", Some(self.finish_reason))]),
            // Text streams start at their first token and have no role step.
            (Kind::Text, Step::Role) => json!([]),
        };
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Text => "text_completion",
        };
        let mut chunk = json!({
            "id": id,
            "object": object,
            "created": created,
            "model": self.model,
            "choices": choices,
        });
        if step == Step::Usage {
            chunk["usage"] = self.usage.clone().unwrap_or(Value::Null);
        } else if self.null_usage {
            chunk["usage"] = Value::Null;
        }
        format!("data: {chunk}\n\n")
    }
}

fn choice(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason })
}

fn text_choice(text: &str, finish_reason: Option<&str>) -> Value {
    json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason })
}
