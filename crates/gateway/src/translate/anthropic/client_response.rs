//! An OpenAI `chat.completion` as an Anthropic message, for a client of
//! `/v1/messages`.

use serde_json::{json, Value};

use crate::translate::{count, TranslateError, Usage};

/// Anthropic's `stop_reason` for OpenAI's `finish_reason`: `stop` is
/// `end_turn`, `length` is `max_tokens`, `tool_calls` (and the legacy
/// `function_call`) is `tool_use`, `content_filter` is `refusal`; an unknown
/// reason reads as `end_turn`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Reads OpenAI's `usage`: cached prompt tokens
/// (`prompt_tokens_details.cached_tokens`) as cache reads, the rest of
/// `prompt_tokens` as input.
pub fn usage_from_openai(usage: &Value) -> Usage {
    let prompt = count(usage.get("prompt_tokens"));
    let cached = count(
        usage
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens")),
    )
    .min(prompt);
    Usage {
        input: prompt - cached,
        output: count(usage.get("completion_tokens")),
        cache_read: cached,
        cache_write: 0,
    }
}

/// Anthropic's `usage` object for `usage`.
pub(crate) fn anthropic_usage(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.input,
        "output_tokens": usage.output,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation_input_tokens": usage.cache_write,
    })
}

/// Translates an OpenAI chat completion `body` into an Anthropic message
/// reporting `model`, with its [`Usage`]. The first choice is the message;
/// its text (or refusal) becomes a text block and its tool calls `tool_use`
/// blocks, their arguments parsed into `input`. An error means the
/// upstream's answer is broken (a 502); it names the field.
pub fn chat_completion_to_message(
    body: &Value,
    model: &str,
) -> Result<(Value, Usage), TranslateError> {
    if !body.is_object() {
        return Err(TranslateError::invalid("body", "expected a JSON object"));
    }
    let Some(choice) = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Err(TranslateError::invalid(
            "choices",
            "expected a non-empty array",
        ));
    };
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .or_else(|| message.get("refusal").and_then(Value::as_str));
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (k, call) in calls.iter().enumerate() {
            content.push(tool_use(
                call,
                &format!("choices[0].message.tool_calls[{k}]"),
            )?);
        }
    }
    let usage = usage_from_openai(body.get("usage").unwrap_or(&Value::Null));
    let stop = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map_or("end_turn", stop_reason);
    let id = body.get("id").and_then(Value::as_str).unwrap_or("unknown");
    let message = json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": anthropic_usage(&usage),
    });
    Ok((message, usage))
}

fn tool_use(call: &Value, field: &str) -> Result<Value, TranslateError> {
    let function = call.get("function");
    let id = string_at(call.get("id"), field, "id")?;
    let name = string_at(function.and_then(|f| f.get("name")), field, "function.name")?;
    let arguments = string_at(
        function.and_then(|f| f.get("arguments")),
        field,
        "function.arguments",
    )?;
    let input = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(arguments)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                TranslateError::invalid(format!("{field}.function.arguments"), "not a JSON object")
            })?
    };
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

fn string_at<'a>(
    value: Option<&'a Value>,
    field: &str,
    name: &str,
) -> Result<&'a str, TranslateError> {
    value
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.{name}"), "expected a string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "refusal"),
            ("other", "end_turn"),
        ] {
            assert_eq!(stop_reason(finish), stop, "{finish}");
        }
    }

    #[test]
    fn a_text_answer_becomes_a_message() {
        let (out, usage) = chat_completion_to_message(
            &json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there."}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                          "prompt_tokens_details": {"cached_tokens": 8}},
            }),
            "claude-alias",
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "id": "msg_chatcmpl-1",
                "type": "message",
                "role": "assistant",
                "model": "claude-alias",
                "content": [{"type": "text", "text": "Hi there."}],
                "stop_reason": "max_tokens",
                "stop_sequence": null,
                "usage": {"input_tokens": 4, "output_tokens": 3,
                          "cache_read_input_tokens": 8, "cache_creation_input_tokens": 0},
            })
        );
        assert_eq!(usage.prompt_tokens(), 12);
    }

    #[test]
    fn tool_calls_become_tool_use_blocks() {
        let (out, _) = chat_completion_to_message(
            &json!({
                "id": "c",
                "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
                ]}, "finish_reason": "tool_calls"}],
            }),
            "m",
        )
        .unwrap();
        assert_eq!(
            out["content"],
            json!([
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
            ])
        );
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(out["usage"]["input_tokens"], 0);
    }

    #[test]
    fn a_refusal_becomes_text() {
        let (out, _) = chat_completion_to_message(
            &json!({"choices": [{"message": {"content": null, "refusal": "I can't."}, "finish_reason": "content_filter"}]}),
            "m",
        )
        .unwrap();
        assert_eq!(
            out["content"],
            json!([{"type": "text", "text": "I can't."}])
        );
        assert_eq!(out["stop_reason"], "refusal");
    }

    #[test]
    fn a_broken_answer_is_an_error_naming_the_field() {
        let cases = [
            (json!("x"), "body"),
            (json!({"choices": []}), "choices"),
            (
                json!({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}}]}),
                "choices[0].message.tool_calls[0].function.arguments",
            ),
            (
                json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}}]}),
                "choices[0].message.tool_calls[0].id",
            ),
        ];
        for (body, field) in cases {
            let err = chat_completion_to_message(&body, "m").unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }
}
