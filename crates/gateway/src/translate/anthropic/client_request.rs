//! An Anthropic Messages request (from a client of `/v1/messages`) as an
//! OpenAI chat completions request.

use serde_json::{json, Map, Value};

use super::text_of;
use crate::translate::TranslateError;

/// Translates an Anthropic Messages request `body` into an OpenAI chat
/// completions request for `model`. A streamed request asks for
/// `stream_options.include_usage`, so the stream reports the tokens that
/// Anthropic's `message_delta` carries.
pub fn messages_request_to_chat(body: &Value, model: &str) -> Result<Value, TranslateError> {
    let Some(body) = body.as_object() else {
        return Err(TranslateError::invalid("body", "expected a JSON object"));
    };
    refuse_unsupported(body)?;
    let mut out = Map::new();
    out.insert("model".into(), json!(model));

    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            if !text.is_empty() {
                messages.push(json!({"role": "system", "content": text}));
            }
        }
        Some(system) => {
            let parts: Vec<Value> = text_of(system, "system")?
                .into_iter()
                .map(|text| json!({"type": "text", "text": text}))
                .collect();
            if !parts.is_empty() {
                messages.push(json!({"role": "system", "content": parts}));
            }
        }
    }
    let Some(turns) = body.get("messages").and_then(Value::as_array) else {
        return Err(TranslateError::invalid("messages", "expected an array"));
    };
    if turns.is_empty() {
        return Err(TranslateError::invalid("messages", "must not be empty"));
    }
    for (i, turn) in turns.iter().enumerate() {
        let field = format!("messages[{i}]");
        match turn.get("role").and_then(Value::as_str) {
            Some("user") => user_turn(turn, &field, &mut messages)?,
            Some("assistant") => messages.push(assistant_turn(turn, &field)?),
            _ => {
                return Err(TranslateError::invalid(
                    format!("{field}.role"),
                    "expected user or assistant",
                ))
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));

    match body.get("max_tokens").and_then(Value::as_u64) {
        Some(n) if n > 0 => {
            out.insert("max_tokens".into(), json!(n));
        }
        _ => {
            return Err(TranslateError::invalid(
                "max_tokens",
                "expected a positive integer",
            ))
        }
    }
    for field in ["temperature", "top_p"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(value @ Value::Number(_)) => {
                out.insert(field.into(), value.clone());
            }
            Some(_) => return Err(TranslateError::invalid(field, "expected a number")),
        }
    }
    match body.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            if !stops.is_empty() {
                out.insert("stop".into(), Value::Array(stops.clone()));
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "stop_sequences",
                "expected an array of strings",
            ))
        }
    }
    match body.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), json!(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err(TranslateError::invalid("stream", "expected a boolean")),
    }
    match body.get("metadata").and_then(|m| m.get("user_id")) {
        None | Some(Value::Null) => {}
        Some(Value::String(user)) => {
            out.insert("user".into(), json!(user));
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "metadata.user_id",
                "expected a string",
            ))
        }
    }
    let tools = tools(body.get("tools"))?;
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        tool_choice(body.get("tool_choice"), &mut out)?;
    }
    Ok(Value::Object(out))
}

fn refuse_unsupported(body: &Map<String, Value>) -> Result<(), TranslateError> {
    if body.get("top_k").is_some_and(|v| !v.is_null()) {
        return Err(TranslateError::unsupported(
            "top_k",
            "top-k sampling is not available",
        ));
    }
    if let Some(thinking) = body.get("thinking").filter(|v| !v.is_null()) {
        if thinking.get("type").and_then(Value::as_str) != Some("disabled") {
            return Err(TranslateError::unsupported(
                "thinking",
                "extended thinking is not available",
            ));
        }
    }
    Ok(())
}

/// A user turn: its `tool_result` blocks as `tool` messages first (they must
/// follow the assistant's calls), then the rest as one user message.
fn user_turn(turn: &Value, field: &str, messages: &mut Vec<Value>) -> Result<(), TranslateError> {
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => {
            messages.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(TranslateError::invalid(
                format!("{field}.content"),
                "expected a string or an array of blocks",
            ))
        }
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let field = format!("{field}.content[{j}]");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": text(block, &field)?})),
            Some("image") => parts.push(image_part(block, &field)?),
            Some("tool_result") => messages.push(tool_message(block, &field)?),
            Some("document") => {
                return Err(TranslateError::unsupported(
                    field,
                    "document blocks are not available",
                ))
            }
            _ => {
                return Err(TranslateError::invalid(
                    format!("{field}.type"),
                    "expected text, image or tool_result",
                ))
            }
        }
    }
    if !parts.is_empty() {
        messages.push(json!({"role": "user", "content": simplify(parts)}));
    }
    Ok(())
}

/// A single text part as a plain string, which every OpenAI-compatible
/// server reads; anything else as parts.
fn simplify(mut parts: Vec<Value>) -> Value {
    if parts.len() == 1 && parts[0]["type"] == "text" {
        return parts.remove(0)["text"].take();
    }
    Value::Array(parts)
}

fn text<'a>(block: &'a Value, field: &str) -> Result<&'a str, TranslateError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.text"), "expected a string"))
}

/// An image block as an `image_url` part: a base64 source as a `data:` URL.
fn image_part(block: &Value, field: &str) -> Result<Value, TranslateError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let string = |name: &str| {
        source.get(name).and_then(Value::as_str).ok_or_else(|| {
            TranslateError::invalid(format!("{field}.source.{name}"), "expected a string")
        })
    };
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!("data:{};base64,{}", string("media_type")?, string("data")?),
        Some("url") => string("url")?.to_owned(),
        _ => {
            return Err(TranslateError::unsupported(
                format!("{field}.source.type"),
                "only base64 and url image sources are available",
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A `tool_result` block as a `tool` message with text content.
fn tool_message(block: &Value, field: &str) -> Result<Value, TranslateError> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            TranslateError::invalid(format!("{field}.tool_use_id"), "expected a string")
        })?;
    let content = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(content) => text_of(content, &format!("{field}.content"))
            .map_err(|_| {
                TranslateError::unsupported(
                    format!("{field}.content"),
                    "a tool result can only hold text",
                )
            })?
            .join("\n"),
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

fn assistant_turn(turn: &Value, field: &str) -> Result<Value, TranslateError> {
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => return Ok(json!({"role": "assistant", "content": text})),
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(TranslateError::invalid(
                format!("{field}.content"),
                "expected a string or an array of blocks",
            ))
        }
    };
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let field = format!("{field}.content[{j}]");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => texts.push(text(block, &field)?),
            Some("tool_use") => {
                let string = |name: &str| {
                    block.get(name).and_then(Value::as_str).ok_or_else(|| {
                        TranslateError::invalid(format!("{field}.{name}"), "expected a string")
                    })
                };
                let input = match block.get("input") {
                    Some(input @ Value::Object(_)) => input.to_string(),
                    _ => {
                        return Err(TranslateError::invalid(
                            format!("{field}.input"),
                            "expected an object",
                        ))
                    }
                };
                calls.push(json!({
                    "id": string("id")?,
                    "type": "function",
                    "function": {"name": string("name")?, "arguments": input},
                }));
            }
            // The model's own reasoning; OpenAI targets take none back.
            Some("thinking" | "redacted_thinking") => {}
            _ => {
                return Err(TranslateError::invalid(
                    format!("{field}.type"),
                    "expected text, tool_use or thinking",
                ))
            }
        }
    }
    let content = if texts.is_empty() {
        Value::Null
    } else {
        json!(texts.concat())
    };
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

fn tools(tools: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(TranslateError::invalid("tools", "expected an array")),
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let field = format!("tools[{i}]");
            // Client tools have no type or `custom`; server tools (web
            // search, code execution...) run at Anthropic only.
            match tool.get("type").and_then(Value::as_str) {
                None | Some("custom") => {}
                Some(_) => {
                    return Err(TranslateError::unsupported(
                        format!("{field}.type"),
                        "server tools are not available",
                    ))
                }
            }
            let name = tool.get("name").and_then(Value::as_str).ok_or_else(|| {
                TranslateError::invalid(format!("{field}.name"), "expected a string")
            })?;
            let schema = match tool.get("input_schema") {
                Some(schema @ Value::Object(_)) => schema.clone(),
                _ => {
                    return Err(TranslateError::invalid(
                        format!("{field}.input_schema"),
                        "expected a JSON schema object",
                    ))
                }
            };
            let mut function = json!({"name": name, "parameters": schema});
            if let Some(description) = tool.get("description").and_then(Value::as_str) {
                function["description"] = json!(description);
            }
            Ok(json!({"type": "function", "function": function}))
        })
        .collect()
}

/// `tool_choice` as OpenAI's `tool_choice` and `parallel_tool_calls`.
fn tool_choice(choice: Option<&Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let mode = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.name", "expected a string"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(TranslateError::invalid(
                "tool_choice.type",
                "expected auto, any, tool or none",
            ))
        }
    };
    out.insert("tool_choice".into(), mode);
    if choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
