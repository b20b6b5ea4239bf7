//! The endpoints: chat completions, completions, embeddings, models and health.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use super::config::Plan;
use super::embed;
use super::sse::{self, Kind};
use super::tools::ToolCall;
use super::wire::{self, ApiRequest, Invalid};

/// The dimensions of an embedding when the request does not ask for others.
const DEFAULT_DIMENSIONS: usize = 8;
/// The most dimensions a request may ask for, to keep answers small.
const MAX_DIMENSIONS: u64 = 4096;

/// The models `GET /v1/models` lists. Every endpoint accepts any model name.
const MODELS: [&str; 4] = [
    "gpt-4o",
    "gpt-4o-mini",
    "text-embedding-3-small",
    "mock-model",
];

pub(crate) async fn chat_completions(
    Extension(plan): Extension<Plan>,
    body: Bytes,
) -> Result<Response, Invalid> {
    let request = ApiRequest::parse(&body)?;
    let messages = request
        .body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or(Invalid::new(
            "Missing required parameter: 'messages'.",
            "messages",
        ))?;
    if let Some(response) = request.model_failure() {
        return Ok(response);
    }
    let prompt_tokens = wire::count_message_words(messages);
    let (tokens, finish_reason) = request.completion_len(plan.completion_tokens);
    let tool = ToolCall::requested(&request.body, messages);
    // A call is the whole answer, as `tool_use` is on the Anthropic endpoint.
    let finish_reason = if tool.is_some() {
        "tool_calls"
    } else {
        finish_reason
    };
    let (usage, null_usage) =
        request.reported_usage(plan.usage, wire::usage(prompt_tokens, tokens));
    if request.stream() {
        return Ok(sse::response(sse::Completion {
            kind: Kind::Chat,
            model: request.model,
            tokens,
            finish_reason,
            usage,
            null_usage,
            token_delay: plan.token_delay,
            tool,
        }));
    }
    let message = match &tool {
        Some(call) => json!({
            "role": "assistant",
            "content": null,
            "refusal": null,
            "tool_calls": [call.whole(tokens)],
        }),
        None => json!({
            "role": "assistant",
            "content": wire::completion_text(tokens),
            "refusal": null,
        }),
    };
    Ok(wire::ok(with_usage(
        usage,
        json!({
            "id": wire::new_id("chatcmpl"),
            "object": "chat.completion",
            "created": wire::now(),
            "model": request.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        }),
    )))
}

pub(crate) async fn completions(
    Extension(plan): Extension<Plan>,
    body: Bytes,
) -> Result<Response, Invalid> {
    let request = ApiRequest::parse(&body)?;
    if let Some(response) = request.model_failure() {
        return Ok(response);
    }
    let prompt_tokens = request.body.get("prompt").map_or(1, wire::count_words);
    let (tokens, finish_reason) = request.completion_len(plan.completion_tokens);
    let (usage, null_usage) =
        request.reported_usage(plan.usage, wire::usage(prompt_tokens, tokens));
    if request.stream() {
        return Ok(sse::response(sse::Completion {
            kind: Kind::Text,
            model: request.model,
            tokens,
            finish_reason,
            usage,
            null_usage,
            token_delay: plan.token_delay,
            tool: None,
        }));
    }
    Ok(wire::ok(with_usage(
        usage,
        json!({
            "id": wire::new_id("cmpl"),
            "object": "text_completion",
            "created": wire::now(),
            "model": request.model,
            "choices": [{
                "index": 0,
                "text": wire::completion_text(tokens),
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        }),
    )))
}

/// Adds `usage` to a non-streamed answer, when there is one to report.
fn with_usage(usage: Option<Value>, mut answer: Value) -> Value {
    if let Some(usage) = usage {
        answer["usage"] = usage;
    }
    answer
}

pub(crate) async fn embeddings(body: Bytes) -> Result<Response, Invalid> {
    let request = ApiRequest::parse(&body)?;
    let inputs = match request.body.get("input") {
        Some(Value::String(text)) => vec![Value::String(text.clone())],
        // A flat array of numbers is one input given as tokens.
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_number) => {
            vec![Value::Array(items.clone())]
        }
        Some(Value::Array(items)) if !items.is_empty() => items.clone(),
        _ => {
            let message = "'input' must be a non-empty string or array.";
            return Err(Invalid::new(message, "input"));
        }
    };
    if let Some(response) = request.model_failure() {
        return Ok(response);
    }
    let dimensions = match request.body.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(value) => match value.as_u64() {
            Some(n @ 1..=MAX_DIMENSIONS) => n as usize,
            _ => {
                let message = "'dimensions' must be an integer from 1 to 4096.";
                return Err(Invalid::new(message, "dimensions"));
            }
        },
    };
    let base64 = match request.body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            let message = "'encoding_format' must be 'float' or 'base64'.";
            return Err(Invalid::new(message, "encoding_format"));
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embed::vector(input, dimensions);
            let embedding = if base64 {
                json!(embed::base64(&vector))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    let prompt_tokens: u32 = inputs.iter().map(wire::count_words).sum();
    Ok(wire::ok(json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })))
}

pub(crate) async fn models() -> Response {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 1_700_000_000, "owned_by": "obleth-mock" }))
        .collect();
    wire::ok(json!({ "object": "list", "data": data }))
}

pub(crate) async fn health() -> &'static str {
    "ok"
}

pub(crate) async fn not_found() -> Response {
    wire::error(
        StatusCode::NOT_FOUND,
        "Unknown endpoint on the mock upstream.",
        None,
    )
}
