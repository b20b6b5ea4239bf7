//! Anthropic's stream events as OpenAI `chat.completion.chunk` payloads: a
//! state machine fed one server-sent event at a time.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{finish_reason, usage_from_anthropic};
use crate::translate::{count, Usage};

/// Why a stream cannot go on. The caller ends the client's stream with
/// [`StreamError::to_openai`] as its last data line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The upstream sent an `error` event, such as `overloaded_error`.
    #[error("the upstream stream failed with {kind}: {message}")]
    Upstream { kind: String, message: String },
    /// A known event whose data is not what Anthropic sends.
    #[error("the upstream stream's `{event}` event is malformed: {reason}")]
    Malformed {
        event: &'static str,
        reason: &'static str,
    },
}

impl StreamError {
    /// An OpenAI error body for the client: the upstream's error type and
    /// message for an `error` event, `upstream_failed` for a broken stream.
    pub fn to_openai(&self) -> Value {
        match self {
            StreamError::Upstream { kind, message } => json!({"error": {
                "message": message,
                "type": kind,
                "param": null,
                "code": kind,
            }}),
            StreamError::Malformed { .. } => json!({"error": {
                "message": "the upstream provider's stream was malformed",
                "type": "upstream_error",
                "param": null,
                "code": "upstream_failed",
            }}),
        }
    }
}

/// What an open content block of the Anthropic message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// A `tool_use` block: its OpenAI tool call index and whether any
    /// argument bytes were sent for it.
    Tool {
        index: u64,
        arguments: bool,
    },
    /// Thinking and server-side blocks, which OpenAI has no place for.
    Other,
}

/// Translates one Anthropic Messages stream into OpenAI chunk payloads.
///
/// Feed each event with [`feed`](Self::feed) in arrival order; write every
/// payload it answers as a `data:` line, and `data: [DONE]` once
/// [`is_done`](Self::is_done). Every chunk carries the same `id` (the
/// Anthropic message id from `message_start`), `created` and `model`. With
/// `include_usage`, other chunks carry `"usage": null` and `message_stop`
/// adds a last chunk with empty `choices` and the usage, as OpenAI does for
/// `stream_options.include_usage`. Unknown event names and delta types are
/// skipped (Anthropic may add them); events after `message_stop` or an error
/// are ignored.
#[derive(Debug)]
pub struct ChunkTranslator {
    id: Option<String>,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Usage,
    blocks: HashMap<u64, Block>,
    tool_calls: u64,
    started: bool,
    finished: bool,
    done: bool,
}

impl ChunkTranslator {
    /// A translator whose chunks report `model`, created at `created` (Unix
    /// seconds).
    pub fn new(model: &str, created: u64, include_usage: bool) -> ChunkTranslator {
        ChunkTranslator {
            id: None,
            model: model.to_owned(),
            created,
            include_usage,
            usage: Usage::default(),
            blocks: HashMap::new(),
            tool_calls: 0,
            started: false,
            finished: false,
            done: false,
        }
    }

    /// The usage reported so far: input and cache counts from
    /// `message_start` (or a later `message_delta`), output from the last
    /// `message_delta`.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether `message_stop` or an `error` event ended the stream.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translates one event: `event` is the SSE event name (when empty, the
    /// data's `type` is used) and `data` its data. Answers the chunk payloads
    /// to send, possibly none.
    pub fn feed(&mut self, event: &str, data: &[u8]) -> Result<Vec<Value>, StreamError> {
        if self.done {
            return Ok(Vec::new());
        }
        let parsed: Option<Value> = serde_json::from_slice(data).ok();
        let name = if event.is_empty() {
            parsed
                .as_ref()
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("")
        } else {
            event
        };
        let kind = match Kind::of(name) {
            Some(Kind::Ping) | None => return Ok(Vec::new()),
            Some(kind) => kind,
        };
        let Some(data) = parsed.filter(Value::is_object) else {
            self.done = kind == Kind::Error;
            return Err(kind.malformed("the data is not a JSON object"));
        };
        match kind {
            Kind::MessageStart => self.message_start(&data),
            Kind::BlockStart => self.block_start(&data),
            Kind::BlockDelta => self.block_delta(&data),
            Kind::BlockStop => Ok(self.block_stop(&data)),
            Kind::MessageDelta => Ok(self.message_delta(&data)),
            Kind::MessageStop => Ok(self.message_stop()),
            Kind::Error => {
                self.done = true;
                let error = data.get("error");
                let field = |name| {
                    error
                        .and_then(|e| e.get(name))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                Err(StreamError::Upstream {
                    kind: field("type").unwrap_or_else(|| "api_error".to_owned()),
                    message: field("message")
                        .unwrap_or_else(|| "the upstream stream failed".to_owned()),
                })
            }
            Kind::Ping => Ok(Vec::new()),
        }
    }

    fn message_start(&mut self, data: &Value) -> Result<Vec<Value>, StreamError> {
        let Some(message) = data.get("message").filter(|m| m.is_object()) else {
            return Err(Kind::MessageStart.malformed("`message` is not an object"));
        };
        if self.started {
            return Ok(Vec::new());
        }
        self.started = true;
        if self.id.is_none() {
            self.id = message.get("id").and_then(Value::as_str).map(str::to_owned);
        }
        if let Some(usage) = message.get("usage") {
            self.usage = usage_from_anthropic(usage);
        }
        Ok(vec![
            self.chunk(json!({"role": "assistant", "content": ""}), None)
        ])
    }

    fn block_start(&mut self, data: &Value) -> Result<Vec<Value>, StreamError> {
        let Some(index) = data.get("index").and_then(Value::as_u64) else {
            return Err(Kind::BlockStart.malformed("`index` is not a block index"));
        };
        let Some(block) = data.get("content_block").filter(|b| b.is_object()) else {
            return Err(Kind::BlockStart.malformed("`content_block` is not an object"));
        };
        let mut chunks = Vec::new();
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                self.blocks.insert(index, Block::Text);
                if let Some(text) = block.get("text").and_then(Value::as_str) {
                    if !text.is_empty() {
                        chunks.push(self.chunk(json!({"content": text}), None));
                    }
                }
            }
            Some("tool_use") => {
                let string = |name| block.get(name).and_then(Value::as_str);
                let (Some(id), Some(name)) = (string("id"), string("name")) else {
                    return Err(
                        Kind::BlockStart.malformed("a tool_use block needs an id and a name")
                    );
                };
                let tool = self.tool_calls;
                self.tool_calls += 1;
                // Anthropic starts with `input: {}` and streams the input as
                // deltas; an input given whole at the start is sent whole.
                let input = block
                    .get("input")
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()));
                let arguments = input.map_or_else(String::new, Value::to_string);
                self.blocks.insert(
                    index,
                    Block::Tool {
                        index: tool,
                        arguments: input.is_some(),
                    },
                );
                let call = json!({
                    "index": tool,
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                });
                chunks.push(self.chunk(json!({"tool_calls": [call]}), None));
            }
            _ => {
                self.blocks.insert(index, Block::Other);
            }
        }
        Ok(chunks)
    }

    fn block_delta(&mut self, data: &Value) -> Result<Vec<Value>, StreamError> {
        let Some(index) = data.get("index").and_then(Value::as_u64) else {
            return Err(Kind::BlockDelta.malformed("`index` is not a block index"));
        };
        let Some(block) = self.blocks.get_mut(&index) else {
            return Err(Kind::BlockDelta.malformed("the block was not started"));
        };
        let delta = data.get("delta");
        let string = |name| delta.and_then(|d| d.get(name)).and_then(Value::as_str);
        let chunk = match (
            delta.and_then(|d| d.get("type")).and_then(Value::as_str),
            *block,
        ) {
            (Some("text_delta"), Block::Text) => {
                let Some(text) = string("text") else {
                    return Err(Kind::BlockDelta.malformed("a text_delta needs text"));
                };
                json!({"content": text})
            }
            (Some("input_json_delta"), Block::Tool { index: tool, .. }) => {
                let Some(partial) = string("partial_json") else {
                    return Err(
                        Kind::BlockDelta.malformed("an input_json_delta needs partial_json")
                    );
                };
                if partial.is_empty() {
                    return Ok(Vec::new());
                }
                *block = Block::Tool {
                    index: tool,
                    arguments: true,
                };
                json!({"tool_calls": [{"index": tool, "function": {"arguments": partial}}]})
            }
            (Some("text_delta" | "input_json_delta"), _) => {
                return Err(Kind::BlockDelta.malformed("the delta does not fit its block"));
            }
            // Thinking, signature and citation deltas have no OpenAI place.
            _ => return Ok(Vec::new()),
        };
        Ok(vec![self.chunk(chunk, None)])
    }

    fn block_stop(&mut self, data: &Value) -> Vec<Value> {
        let block = data
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|index| self.blocks.remove(&index));
        match block {
            // A call without parameters streamed no input: OpenAI clients
            // parse the arguments, and `""` is not JSON.
            Some(Block::Tool {
                index,
                arguments: false,
            }) => {
                let call = json!({"index": index, "function": {"arguments": "{}"}});
                vec![self.chunk(json!({"tool_calls": [call]}), None)]
            }
            _ => Vec::new(),
        }
    }

    fn message_delta(&mut self, data: &Value) -> Vec<Value> {
        if let Some(usage) = data.get("usage").filter(|u| u.is_object()) {
            // Counts are cumulative; a later event restates them.
            let read = |name: &str, into: &mut u64| {
                if let Some(value) = usage.get(name).filter(|v| !v.is_null()) {
                    *into = count(Some(value));
                }
            };
            read("output_tokens", &mut self.usage.output);
            read("input_tokens", &mut self.usage.input);
            read("cache_read_input_tokens", &mut self.usage.cache_read);
            read("cache_creation_input_tokens", &mut self.usage.cache_write);
        }
        let stop = data
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str);
        match stop {
            Some(stop) if !self.finished => {
                self.finished = true;
                vec![self.chunk(json!({}), Some(finish_reason(stop)))]
            }
            _ => Vec::new(),
        }
    }

    fn message_stop(&mut self) -> Vec<Value> {
        self.done = true;
        let mut chunks = Vec::new();
        if !self.finished {
            self.finished = true;
            chunks.push(self.chunk(json!({}), Some("stop")));
        }
        if self.include_usage {
            let mut chunk = self.envelope(json!([]));
            chunk["usage"] = self.usage.to_openai();
            chunks.push(chunk);
        }
        chunks
    }

    fn chunk(&mut self, delta: Value, finish_reason: Option<&str>) -> Value {
        let choice = json!({
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        });
        let mut chunk = self.envelope(json!([choice]));
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn envelope(&mut self, choices: Value) -> Value {
        let id = self.id.get_or_insert_with(|| "msg_unknown".to_owned());
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

/// The events Anthropic documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    MessageStart,
    BlockStart,
    BlockDelta,
    BlockStop,
    MessageDelta,
    MessageStop,
    Ping,
    Error,
}

impl Kind {
    fn of(name: &str) -> Option<Kind> {
        Some(match name {
            "message_start" => Kind::MessageStart,
            "content_block_start" => Kind::BlockStart,
            "content_block_delta" => Kind::BlockDelta,
            "content_block_stop" => Kind::BlockStop,
            "message_delta" => Kind::MessageDelta,
            "message_stop" => Kind::MessageStop,
            "ping" => Kind::Ping,
            "error" => Kind::Error,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::MessageStart => "message_start",
            Kind::BlockStart => "content_block_start",
            Kind::BlockDelta => "content_block_delta",
            Kind::BlockStop => "content_block_stop",
            Kind::MessageDelta => "message_delta",
            Kind::MessageStop => "message_stop",
            Kind::Ping => "ping",
            Kind::Error => "error",
        }
    }

    fn malformed(self, reason: &'static str) -> StreamError {
        StreamError::Malformed {
            event: self.name(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests;
