//! Tool calls on the OpenAI chat endpoint, mirroring the Anthropic mock: a
//! request with a function in `tools` whose last message is a user turn
//! containing "use a tool" (any case) is answered with a call of the first
//! function, its arguments `{"text": "tok1 tok2 ..."}`.

use serde_json::{json, Map, Value};

use super::anthropic::TOOL_TRIGGER;
use super::wire;

/// The call the mock answers instead of text.
#[derive(Debug, Clone)]
pub(crate) struct ToolCall {
    pub id: String,
    pub name: String,
}

impl ToolCall {
    /// The call `body` asks for, if any.
    pub fn requested(body: &Map<String, Value>, messages: &[Value]) -> Option<ToolCall> {
        let name = body
            .get("tools")
            .and_then(Value::as_array)?
            .iter()
            .find(|tool| tool.get("type").and_then(Value::as_str) == Some("function"))
            .and_then(|tool| tool.pointer("/function/name"))
            .and_then(Value::as_str)?;
        let last = messages.last()?;
        if last.get("role").and_then(Value::as_str) != Some("user") {
            return None;
        }
        let asks = texts(last.get("content"))
            .iter()
            .any(|text| text.to_lowercase().contains(TOOL_TRIGGER));
        asks.then(|| ToolCall {
            id: format!("call_{}", uuid::Uuid::new_v4().simple()),
            name: name.to_owned(),
        })
    }

    /// The whole call, as a non-streamed message's `tool_calls` item.
    pub fn whole(&self, tokens: u32) -> Value {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments(tokens)},
        })
    }

    /// The arguments JSON, `{"text": "tok1 tok2 ..."}`.
    pub fn arguments(&self, tokens: u32) -> String {
        (0..=tokens)
            .map(|i| self.arguments_piece(i, tokens))
            .collect()
    }

    /// Piece `i` of the arguments `{"text": "tok1 ..."}` when streamed: the
    /// opening (0), then a token each, the last one closing the JSON, so the
    /// pieces join into valid JSON whatever the count.
    pub fn arguments_piece(&self, i: u32, tokens: u32) -> String {
        let mut piece = if i == 0 {
            "{\"text\": \"".to_owned()
        } else {
            wire::token(i)
        };
        if i == tokens {
            piece.push_str("\"}");
        }
        piece
    }

    /// The first streamed delta: the role, the call's id and name and the
    /// opening of its arguments, as OpenAI streams a call.
    pub fn first_delta(&self, tokens: u32) -> Value {
        json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "index": 0,
                "id": self.id,
                "type": "function",
                "function": {"name": self.name, "arguments": self.arguments_piece(0, tokens)},
            }],
        })
    }

    /// A later streamed delta, carrying argument piece `i`.
    pub fn delta(&self, i: u32, tokens: u32) -> Value {
        json!({"tool_calls": [{"index": 0, "function": {"arguments": self.arguments_piece(i, tokens)}}]})
    }
}

/// The texts of a string content or of its text parts.
fn texts(content: Option<&Value>) -> Vec<&str> {
    match content {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(tools: Value, messages: Value) -> (Map<String, Value>, Vec<Value>) {
        let body = json!({"tools": tools}).as_object().unwrap().clone();
        (body, messages.as_array().unwrap().clone())
    }

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "weather", "parameters": {}}}])
    }

    #[test]
    fn a_call_needs_a_function_and_the_phrase_in_the_last_user_turn() {
        for (tools, messages, expected) in [
            (
                weather(),
                json!([{"role": "user", "content": "Please USE A TOOL"}]),
                Some("weather"),
            ),
            (
                weather(),
                json!([{"role": "user", "content": [{"type": "text", "text": "use a tool now"}]}]),
                Some("weather"),
            ),
            (
                weather(),
                json!([{"role": "user", "content": "just talk"}]),
                None,
            ),
            (
                json!([]),
                json!([{"role": "user", "content": "use a tool"}]),
                None,
            ),
            (
                weather(),
                json!([
                    {"role": "user", "content": "use a tool"},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                ]),
                None,
            ),
        ] {
            let (body, messages) = body(tools, messages.clone());
            let call = ToolCall::requested(&body, &messages);
            assert_eq!(call.map(|c| c.name).as_deref(), expected, "{messages:?}");
        }
    }

    #[test]
    fn streamed_pieces_join_into_the_whole_arguments() {
        let call = ToolCall {
            id: "call_1".to_owned(),
            name: "f".to_owned(),
        };
        for tokens in [0, 1, 3] {
            let joined: String = (0..=tokens)
                .map(|i| call.arguments_piece(i, tokens))
                .collect();
            let whole = call.whole(tokens);
            assert_eq!(whole["function"]["arguments"], joined);
            let parsed: Value = serde_json::from_str(&joined).unwrap();
            assert_eq!(parsed, json!({"text": wire::completion_text(tokens)}));
        }
    }
}
