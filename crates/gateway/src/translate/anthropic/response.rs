//! An Anthropic message as an OpenAI `chat.completion`.

use serde_json::{json, Value};

use super::usage_from_anthropic;
use crate::translate::{TranslateError, Usage};

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`: `end_turn`,
/// `stop_sequence` and `pause_turn` stop, `max_tokens` is `length`,
/// `tool_use` is `tool_calls` and `refusal` is `content_filter`. An unknown
/// reason reads as `stop`, since the message did end.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Translates an Anthropic message `body` into an OpenAI chat completion
/// reporting `model`, created at `created` (Unix seconds), with the message's
/// [`Usage`] for the caller's records. An error means the upstream's answer
/// is broken (a 502, not the client's fault); it names the field.
pub fn message_to_chat_completion(
    body: &Value,
    model: &str,
    created: u64,
) -> Result<(Value, Usage), TranslateError> {
    if !body.is_object() {
        return Err(TranslateError::invalid("body", "expected a JSON object"));
    }
    let Some(content) = body.get("content").and_then(Value::as_array) else {
        return Err(TranslateError::invalid("content", "expected an array"));
    };
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for (i, block) in content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let part = block.get("text").and_then(Value::as_str).ok_or_else(|| {
                    TranslateError::invalid(format!("content[{i}].text"), "expected a string")
                })?;
                text.push_str(part);
            }
            Some("tool_use") => tool_calls.push(tool_call(block, i)?),
            // Thinking and server-side blocks have no OpenAI equivalent.
            _ => {}
        }
    }
    let usage = usage_from_anthropic(body.get("usage").unwrap_or(&Value::Null));
    let finish = body
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or("stop", finish_reason);
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("msg_unknown");
    let completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage.to_openai(),
    });
    Ok((completion, usage))
}

/// A `tool_use` block as an OpenAI tool call, its input as the arguments
/// string.
fn tool_call(block: &Value, i: usize) -> Result<Value, TranslateError> {
    let field = |name: &str| format!("content[{i}].{name}");
    let id = block
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(field("id"), "expected a string"))?;
    let name = block
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(field("name"), "expected a string"))?;
    let arguments = match block.get("input") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(input) => input.to_string(),
    };
    Ok(json!({
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("something_new", "stop"),
        ] {
            assert_eq!(finish_reason(stop), finish, "{stop}");
        }
    }

    #[test]
    fn text_blocks_are_joined_and_usage_counts_the_cache() {
        let (out, usage) = message_to_chat_completion(
            &json!({
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Hello, "},
                    {"type": "text", "text": "world."},
                ],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 4,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 20,
                },
            }),
            "alias",
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "id": "msg_1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "alias",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello, world.", "refusal": null},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {
                    "prompt_tokens": 130,
                    "completion_tokens": 4,
                    "total_tokens": 134,
                    "prompt_tokens_details": {"cached_tokens": 100},
                },
            })
        );
        assert_eq!(
            usage,
            Usage {
                input: 10,
                output: 4,
                cache_read: 100,
                cache_write: 20
            }
        );
    }

    #[test]
    fn tool_use_blocks_become_tool_calls() {
        let (out, _) = message_to_chat_completion(
            &json!({
                "id": "msg_2",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}},
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 3, "output_tokens": 2},
            }),
            "m",
            0,
        )
        .unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ])
        );
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    }

    #[test]
    fn a_max_tokens_stop_is_length_and_missing_usage_is_zero() {
        let (out, usage) = message_to_chat_completion(
            &json!({"content": [{"type": "text", "text": "cut"}], "stop_reason": "max_tokens"}),
            "m",
            0,
        )
        .unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "length");
        assert_eq!(usage, Usage::default());
    }

    #[test]
    fn a_broken_answer_is_an_error_naming_the_field() {
        let cases = [
            (json!([]), "body"),
            (json!({"content": "text"}), "content"),
            (json!({"content": [{"type": "text"}]}), "content[0].text"),
            (
                json!({"content": [{"type": "tool_use", "name": "f", "input": {}}]}),
                "content[0].id",
            ),
            (
                json!({"content": [{"type": "tool_use", "id": "t", "input": {}}]}),
                "content[0].name",
            ),
        ];
        for (body, field) in cases {
            let err = message_to_chat_completion(&body, "m", 0).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }
}
