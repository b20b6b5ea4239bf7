//! Anthropic's Messages API (`POST /v1/messages`) and OpenAI's chat
//! completions, translated both ways.
//!
//! Gateway to an Anthropic target (an OpenAI client, an Anthropic provider):
//!
//! - [`chat_request_to_messages`]: `system` and `developer` messages become
//!   the top-level `system` (in order, wherever they stood); user and
//!   assistant turns become `messages`, with consecutive turns of one role
//!   merged, since Anthropic requires alternation. Text parts stay text,
//!   `image_url` parts become `image` blocks (`data:` URLs a base64 source,
//!   http(s) URLs a url source), assistant `tool_calls` become `tool_use`
//!   blocks (the arguments string parsed into `input`), and `tool` messages
//!   become `tool_result` blocks of a user turn. `tools`, `tool_choice`
//!   (`auto`, `none`, `required` as `any`, a named function as `tool`),
//!   `parallel_tool_calls: false` (as `disable_parallel_tool_use`), `stop`,
//!   `max_completion_tokens` or `max_tokens` (else the caller's default, as
//!   Anthropic requires one), `temperature`, `top_p`, `stream` and `user` or
//!   `metadata.user` (as `metadata.user_id`) carry over; the model is the
//!   caller's. Refused, naming the field: `n` above 1, audio and file parts,
//!   `audio`, `modalities` other than text, `logprobs`, `top_logprobs`,
//!   `logit_bias`, non-zero penalties, a `response_format` other than text,
//!   `prediction`, the legacy `functions`/`function_call` and `function`
//!   role, and tools that are not functions. `seed`, `store`, `service_tier`
//!   and `stream_options` are dropped (the caller reads `include_usage`).
//! - [`message_to_chat_completion`]: text blocks joined into `content`,
//!   `tool_use` blocks into `tool_calls`, `stop_reason` into `finish_reason`
//!   ([`finish_reason`]) and the usage into OpenAI's, cache tokens counted
//!   as prompt tokens ([`Usage`]). Thinking blocks are dropped.
//! - [`ChunkTranslator`]: Anthropic's stream events into
//!   `chat.completion.chunk` payloads, one event at a time.
//!
//! An Anthropic client to an OpenAI-protocol target:
//!
//! - [`messages_request_to_chat`]: `system` (a string or text blocks) as a
//!   system message; text and image blocks as content parts; `tool_use` as
//!   `tool_calls`; `tool_result` as `tool` messages (before the rest of their
//!   user turn, since they must follow the assistant's calls); `tools`,
//!   `tool_choice`, `stop_sequences`, `max_tokens`, `temperature`, `top_p`,
//!   `metadata.user_id` (as `user`) and `stream` (with
//!   `stream_options.include_usage`, so the stream reports its tokens).
//!   Refused: `top_k`, enabled `thinking`, documents, images inside a
//!   `tool_result`, and server tools. `cache_control` marks are dropped.
//! - [`chat_completion_to_message`] and [`EventTranslator`]: an OpenAI answer
//!   or chunk stream as an Anthropic message or event stream.
//!
//! Errors: [`anthropic_error`], [`openai_error_to_anthropic`] and
//! [`anthropic_error_to_openai`] move error bodies between the two shapes by
//! HTTP status.

mod client_request;
mod client_response;
mod client_stream;
mod error;
mod request;
mod response;
mod stream;

pub use client_request::messages_request_to_chat;
pub use client_response::{chat_completion_to_message, stop_reason, usage_from_openai};
pub use client_stream::{Event, EventTranslator};
pub use error::{
    anthropic_error, anthropic_error_to_openai, anthropic_error_type, openai_error_to_anthropic,
};
pub use request::chat_request_to_messages;
pub use response::{finish_reason, message_to_chat_completion};
pub use stream::{ChunkTranslator, StreamError};

use serde_json::Value;

use super::{count, Usage};

/// The `anthropic-version` header value the translated requests are written
/// for; the caller sends it with them.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Reads Anthropic's `usage` object: `input_tokens`, `output_tokens`,
/// `cache_read_input_tokens` and `cache_creation_input_tokens`, each 0 when
/// absent or not a count.
pub fn usage_from_anthropic(usage: &Value) -> Usage {
    Usage {
        input: count(usage.get("input_tokens")),
        output: count(usage.get("output_tokens")),
        cache_read: count(usage.get("cache_read_input_tokens")),
        cache_write: count(usage.get("cache_creation_input_tokens")),
    }
}

/// The texts of a string or of an array of text blocks or parts (the shape
/// both protocols share for `system` and simple contents). Anything else is
/// an error naming `field`, or the index of the item that is not text.
fn text_of(value: &Value, field: &str) -> Result<Vec<String>, super::TranslateError> {
    match value {
        Value::String(text) => Ok(vec![text.clone()]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item.get("type").and_then(Value::as_str) {
                Some("text") => item
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        super::TranslateError::invalid(
                            format!("{field}[{i}].text"),
                            "expected a string",
                        )
                    }),
                _ => Err(super::TranslateError::invalid(
                    format!("{field}[{i}].type"),
                    "expected a text part",
                )),
            })
            .collect(),
        _ => Err(super::TranslateError::invalid(
            field,
            "expected a string or an array of text parts",
        )),
    }
}

#[cfg(test)]
mod tests;
