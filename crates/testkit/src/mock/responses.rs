//! OpenAI's Responses API, `POST /v1/responses`: a `response` object whose
//! output is one assistant message of `output_text`, or, streamed, the
//! events of one (`response.created`, `response.output_item.added`,
//! `response.content_part.added`, a `response.output_text.delta` a token,
//! `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done`, `response.completed` with the usage), each
//! `event:` named and paced by the token delay. `input` (a string or a list
//! of messages) counts as the prompt's words, as the chat endpoint counts
//! them; `instructions` too. `max_output_tokens` cuts the answer
//! (`status: "incomplete"`). The usage is always reported, as OpenAI does.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Extension;
use futures_util::stream;
use serde_json::{json, Value};

use super::config::Plan;
use super::wire::{self, ApiRequest, Invalid};

pub(crate) async fn responses(
    Extension(plan): Extension<Plan>,
    body: Bytes,
) -> Result<Response, Invalid> {
    let request = ApiRequest::parse(&body)?;
    if let Some(response) = request.model_failure() {
        return Ok(response);
    }
    let mut prompt = request.body.get("input").map_or(0, wire::count_words);
    prompt += request
        .body
        .get("instructions")
        .map_or(0, wire::count_words);
    let limit = request
        .body
        .get("max_output_tokens")
        .and_then(Value::as_u64);
    let (tokens, complete) = match limit {
        Some(limit) if limit < u64::from(plan.completion_tokens) => (limit as u32, false),
        _ => (plan.completion_tokens, true),
    };
    let answer = Answer {
        id: wire::new_id("resp"),
        message_id: wire::new_id("msg"),
        model: request.model.clone(),
        created: wire::now(),
        prompt: prompt.max(1),
        tokens,
        complete,
    };
    if request.stream() {
        return Ok(stream_response(answer, plan.token_delay));
    }
    Ok(wire::ok(answer.response(&wire::completion_text(tokens))))
}

struct Answer {
    id: String,
    message_id: String,
    model: String,
    created: u64,
    prompt: u32,
    tokens: u32,
    complete: bool,
}

impl Answer {
    fn status(&self) -> &'static str {
        if self.complete {
            "completed"
        } else {
            "incomplete"
        }
    }

    fn message(&self, text: &str) -> Value {
        json!({
            "type": "message",
            "id": self.message_id,
            "status": self.status(),
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        })
    }

    /// The `response` object: `text` is the output so far (`None`: still
    /// in progress, no output yet).
    fn response_with(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "tool_choice": "auto",
            "tools": [],
            "incomplete_details": if self.complete { Value::Null } else { json!({"reason": "max_output_tokens"}) },
            "usage": usage,
        })
    }

    fn usage(&self) -> Value {
        json!({
            "input_tokens": self.prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.prompt + self.tokens,
        })
    }

    fn response(&self, text: &str) -> Value {
        self.response_with(self.status(), vec![self.message(text)], self.usage())
    }
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn stream_response(answer: Answer, token_delay: Duration) -> Response {
    let text = wire::completion_text(answer.tokens);
    let mut head = vec![
        event(
            "response.created",
            json!({"type": "response.created",
                   "response": answer.response_with("in_progress", vec![], Value::Null)}),
        ),
        event(
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 0,
                   "item": {"type": "message", "id": answer.message_id, "status": "in_progress",
                            "role": "assistant", "content": []}}),
        ),
        event(
            "response.content_part.added",
            json!({"type": "response.content_part.added", "item_id": answer.message_id,
                   "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
    ];
    let deltas: Vec<Bytes> = (1..=answer.tokens)
        .map(|i| {
            event(
                "response.output_text.delta",
                json!({"type": "response.output_text.delta", "item_id": answer.message_id,
                       "output_index": 0, "content_index": 0, "delta": wire::token(i)}),
            )
        })
        .collect();
    let tail = vec![
        event(
            "response.output_text.done",
            json!({"type": "response.output_text.done", "item_id": answer.message_id,
                   "output_index": 0, "content_index": 0, "text": text}),
        ),
        event(
            "response.content_part.done",
            json!({"type": "response.content_part.done", "item_id": answer.message_id,
                   "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": text, "annotations": []}}),
        ),
        event(
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": 0,
                   "item": answer.message(&text)}),
        ),
        event(
            if answer.complete {
                "response.completed"
            } else {
                "response.incomplete"
            },
            json!({"type": if answer.complete { "response.completed" } else { "response.incomplete" },
                   "response": answer.response(&text)}),
        ),
    ];
    let mut frames = Vec::with_capacity(head.len() + deltas.len() + tail.len());
    frames.append(&mut head);
    let first_delta = frames.len();
    frames.extend(deltas);
    frames.extend(tail);
    let paced = stream::unfold(
        (frames.into_iter(), 0usize),
        move |(mut frames, i)| async move {
            let frame = frames.next()?;
            if i >= first_delta && !token_delay.is_zero() {
                tokio::time::sleep(token_delay).await;
            }
            Some((Ok::<_, Infallible>(frame), (frames, i + 1)))
        },
    );
    let mut response = Response::new(Body::from_stream(paced));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}
