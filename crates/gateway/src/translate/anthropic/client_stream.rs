//! OpenAI chunk streams as Anthropic stream events, for a client of
//! `/v1/messages`: a state machine fed one `data:` payload at a time.

use serde_json::{json, Value};

use super::client_response::{anthropic_usage, stop_reason, usage_from_openai};
use super::error::anthropic_error_type;
use super::StreamError;
use crate::translate::Usage;

/// The content block being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text {
        index: u64,
    },
    /// A tool call: its block index and OpenAI's tool call index.
    Tool {
        index: u64,
        call: u64,
    },
}

/// An event to send: its SSE event name and its data.
pub type Event = (&'static str, Value);

/// Translates one OpenAI chat completion chunk stream into Anthropic's
/// events: `message_start`; for each run of text or each tool call a
/// `content_block_start`, `content_block_delta`s (`text_delta`,
/// `input_json_delta`) and a `content_block_stop`; then `message_delta` with
/// the stop reason and usage, and `message_stop`.
///
/// Feed each `data:` payload with [`feed`](Self::feed); `[DONE]` ends the
/// message. Call [`finish`](Self::finish) when the upstream stream ends, so a
/// stream cut before `[DONE]` still ends well-formed. OpenAI reports tokens
/// only at the end, so `message_start` counts none and `message_delta`
/// carries input and output. An upstream error chunk becomes an `error`
/// event and ends the stream.
#[derive(Debug)]
pub struct EventTranslator {
    model: String,
    id: Option<String>,
    open: Option<Open>,
    next_block: u64,
    stop_reason: Option<&'static str>,
    usage: Usage,
    started: bool,
    done: bool,
}

impl EventTranslator {
    /// A translator whose message reports `model`.
    pub fn new(model: &str) -> EventTranslator {
        EventTranslator {
            model: model.to_owned(),
            id: None,
            open: None,
            next_block: 0,
            stop_reason: None,
            usage: Usage::default(),
            started: false,
            done: false,
        }
    }

    /// The usage of the stream's usage chunk, once it came.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Whether `message_stop` or an `error` event was sent.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Translates one `data:` payload. Data that is not a JSON object (other
    /// than `[DONE]`) is an error; the caller ends the stream with
    /// [`finish`](Self::finish) or an error event.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Event>, StreamError> {
        if self.done {
            return Ok(Vec::new());
        }
        if data.trim_ascii() == b"[DONE]" {
            return Ok(self.finish());
        }
        let Some(chunk) = serde_json::from_slice::<Value>(data)
            .ok()
            .filter(Value::is_object)
        else {
            return Err(StreamError::Malformed {
                event: "chat.completion.chunk",
                reason: "the data is not a JSON object",
            });
        };
        let mut events = Vec::new();
        if let Some(error) = chunk.get("error").filter(|e| e.is_object()) {
            self.done = true;
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the upstream stream failed");
            let kind = anthropic_error_type(500);
            let body = json!({"type": "error", "error": {"type": kind, "message": message}});
            events.push(("error", body));
            return Ok(events);
        }
        if self.id.is_none() {
            self.id = chunk.get("id").and_then(Value::as_str).map(str::to_owned);
        }
        self.start(&mut events);
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = usage_from_openai(usage);
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| {
                choices
                    .iter()
                    .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        let Some(choice) = choice else {
            return Ok(events);
        };
        let delta = choice.get("delta");
        let string = |name| delta.and_then(|d| d.get(name)).and_then(Value::as_str);
        for text in [string("content"), string("refusal")].into_iter().flatten() {
            if !text.is_empty() {
                self.text(text, &mut events);
            }
        }
        if let Some(calls) = delta
            .and_then(|d| d.get("tool_calls"))
            .and_then(Value::as_array)
        {
            for (position, call) in calls.iter().enumerate() {
                self.tool_call(call, position as u64, &mut events);
            }
        }
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(stop_reason(finish));
        }
        Ok(events)
    }

    /// Ends the message, unless it has ended: closes the open block and sends
    /// `message_delta` and `message_stop`.
    pub fn finish(&mut self) -> Vec<Event> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut events = Vec::new();
        self.start(&mut events);
        self.close(&mut events);
        events.push((
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {
                    "stop_reason": self.stop_reason.unwrap_or("end_turn"),
                    "stop_sequence": null,
                },
                "usage": anthropic_usage(&self.usage),
            }),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        events
    }

    fn start(&mut self, events: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = format!("msg_{}", self.id.as_deref().unwrap_or("unknown"));
        events.push((
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": anthropic_usage(&Usage::default()),
            }}),
        ));
    }

    fn text(&mut self, text: &str, events: &mut Vec<Event>) {
        let index = match self.open {
            Some(Open::Text { index }) => index,
            _ => {
                self.close(events);
                let index = self.open_block(events, json!({"type": "text", "text": ""}));
                self.open = Some(Open::Text { index });
                index
            }
        };
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "text_delta", "text": text}}),
        ));
    }

    /// One tool call fragment: a new call index opens a `tool_use` block,
    /// arguments go to the open one. OpenAI streams one call whole before the
    /// next; fragments that interleave calls would open a block each time the
    /// call index changes.
    fn tool_call(&mut self, call: &Value, position: u64, events: &mut Vec<Event>) {
        let call_index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position);
        let function = call.get("function");
        let index = match self.open {
            Some(Open::Tool { index, call }) if call == call_index => index,
            _ => {
                self.close(events);
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("toolu_{call_index}"), str::to_owned);
                let name = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let index = self.open_block(events, block);
                self.open = Some(Open::Tool {
                    index,
                    call: call_index,
                });
                index
            }
        };
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !arguments.is_empty() {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                       "delta": {"type": "input_json_delta", "partial_json": arguments}}),
            ));
        }
    }

    fn open_block(&mut self, events: &mut Vec<Event>, block: Value) -> u64 {
        let index = self.next_block;
        self.next_block += 1;
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn close(&mut self, events: &mut Vec<Event>) {
        if let Some(Open::Text { index } | Open::Tool { index, .. }) = self.open.take() {
            events.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }
}

#[cfg(test)]
mod tests;
