//! ConverseStream's events (taken out of their event-stream frames by
//! [`crate::aws::frames`]: an event type and its JSON payload) as OpenAI
//! chat completion chunks.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{finish_reason, usage_from_converse};
use crate::translate::{TranslateError, Usage};

/// Turns ConverseStream's events into OpenAI chat completion chunks: the
/// first carries the role, text deltas become content deltas, a tool use
/// block its tool call (id and name first, then its input in pieces as
/// arguments), `messageStop` the finish reason; `metadata` carries the
/// usage, which [`StreamTranslator::finish`] sends as the last chunk.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    created: u64,
    id: String,
    started: bool,
    /// Tool call index by content block index.
    calls: HashMap<u64, usize>,
    finished: bool,
    usage: Option<Usage>,
}

impl StreamTranslator {
    pub fn new(model: &str, created: u64, id: String) -> StreamTranslator {
        StreamTranslator {
            model: model.to_owned(),
            created,
            id,
            started: false,
            calls: HashMap::new(),
            finished: false,
            usage: None,
        }
    }

    /// Whether `messageStop` came.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The usage `metadata` reported.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// The chunks for one event: its `:event-type` and JSON payload. An
    /// unknown event type is skipped, as AWS may add some.
    pub fn feed(&mut self, event: &str, payload: &[u8]) -> Result<Vec<Value>, TranslateError> {
        let data: Value = serde_json::from_slice(payload)
            .map_err(|_| TranslateError::invalid(event, "expected a JSON object"))?;
        let mut out = Vec::new();
        if !self.started && event != "metadata" {
            self.started = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        let block = data.get("contentBlockIndex").and_then(Value::as_u64);
        match event {
            "contentBlockStart" => {
                let tool_use = data.get("start").and_then(|s| s.get("toolUse"));
                if let (Some(tool_use), Some(block)) = (tool_use, block) {
                    let index = self.calls.len();
                    self.calls.insert(block, index);
                    let id = tool_use.get("toolUseId").and_then(Value::as_str);
                    let name = tool_use.get("name").and_then(Value::as_str);
                    let (Some(id), Some(name)) = (id, name) else {
                        return Err(TranslateError::invalid(
                            "contentBlockStart.start.toolUse",
                            "expected toolUseId and name",
                        ));
                    };
                    out.push(self.chunk(
                        json!({"tool_calls": [{
                            "index": index, "id": id, "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }]}),
                        None,
                    ));
                }
            }
            "contentBlockDelta" => {
                let delta = data.get("delta");
                if let Some(text) = delta.and_then(|d| d.get("text")).and_then(Value::as_str) {
                    out.push(self.chunk(json!({"content": text}), None));
                } else if let Some(input) = delta
                    .and_then(|d| d.get("toolUse"))
                    .and_then(|t| t.get("input"))
                    .and_then(Value::as_str)
                {
                    let Some(index) = block.and_then(|b| self.calls.get(&b)) else {
                        return Err(TranslateError::invalid(
                            "contentBlockDelta.contentBlockIndex",
                            "names no tool use block",
                        ));
                    };
                    out.push(self.chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": input}}]}),
                        None,
                    ));
                }
            }
            "messageStop" if !self.finished => {
                self.finished = true;
                let reason = data
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                out.push(self.chunk(json!({}), Some(finish_reason(reason))));
            }
            "metadata" => {
                if let Some(usage) = data.get("usage") {
                    self.usage = Some(usage_from_converse(usage));
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// The usage chunk that ends the stream, when usage was reported.
    pub fn finish(&self) -> Option<Value> {
        let usage = self.usage?;
        Some(json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.to_openai(),
        }))
    }
}
