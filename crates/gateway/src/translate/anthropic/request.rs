//! An OpenAI chat completions request as an Anthropic Messages request.

use serde_json::{json, Map, Value};

use super::text_of;
use crate::translate::TranslateError;

mod tools;

use tools::{tool_choice, tools};

/// Fields with no Anthropic equivalent, refused when set to anything but
/// their neutral value, so a client never silently loses what it asked for.
const REFUSED: [(&str, &str); 7] = [
    ("audio", "audio output is not available"),
    ("logit_bias", "token biases are not available"),
    ("prediction", "predicted outputs are not available"),
    ("functions", "use `tools` instead of the legacy `functions`"),
    (
        "function_call",
        "use `tool_choice` instead of the legacy `function_call`",
    ),
    ("top_logprobs", "log probabilities are not available"),
    ("web_search_options", "web search is not available"),
];

/// Translates an OpenAI chat completions request `body` into an Anthropic
/// Messages request for `model`. `default_max_tokens` is used when the body
/// sets neither `max_completion_tokens` nor `max_tokens`, since Anthropic
/// requires a limit. The answer is the whole request body; the caller adds
/// the `x-api-key` and `anthropic-version` headers.
pub fn chat_request_to_messages(
    body: &Value,
    model: &str,
    default_max_tokens: u32,
) -> Result<Value, TranslateError> {
    let Some(body) = body.as_object() else {
        return Err(TranslateError::invalid("body", "expected a JSON object"));
    };
    refuse_unsupported(body)?;

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let (system, messages) = messages(body.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), system_value(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    out.insert(
        "max_tokens".into(),
        json!(max_tokens(body, default_max_tokens)?),
    );

    for field in ["temperature", "top_p"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(value @ Value::Number(_)) => {
                out.insert(field.into(), value.clone());
            }
            Some(_) => return Err(TranslateError::invalid(field, "expected a number")),
        }
    }
    if let Some(stop) = stop_sequences(body.get("stop"))? {
        out.insert("stop_sequences".into(), stop);
    }
    match body.get("stream") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(stream)) => {
            out.insert("stream".into(), json!(stream));
        }
        Some(_) => return Err(TranslateError::invalid("stream", "expected a boolean")),
    }
    if let Some(user) = user(body)? {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    let tools = tools(body.get("tools"))?;
    if !tools.is_empty() {
        if let Some(choice) = tool_choice(body)? {
            out.insert("tool_choice".into(), choice);
        }
        out.insert("tools".into(), Value::Array(tools));
    }
    Ok(Value::Object(out))
}

fn refuse_unsupported(body: &Map<String, Value>) -> Result<(), TranslateError> {
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(TranslateError::unsupported(
                "n",
                "only one choice can be generated",
            ))
        }
    }
    for (field, reason) in REFUSED {
        if body.get(field).is_some_and(is_set) {
            return Err(TranslateError::unsupported(field, reason));
        }
    }
    if body.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(TranslateError::unsupported(
            "logprobs",
            "log probabilities are not available",
        ));
    }
    for field in ["presence_penalty", "frequency_penalty"] {
        if body
            .get(field)
            .is_some_and(|v| !v.is_null() && v.as_f64() != Some(0.0))
        {
            return Err(TranslateError::unsupported(
                field,
                "sampling penalties are not available",
            ));
        }
    }
    if let Some(modalities) = body.get("modalities").and_then(Value::as_array) {
        if modalities.iter().any(|m| m.as_str() != Some("text")) {
            return Err(TranslateError::unsupported(
                "modalities",
                "only text output is available",
            ));
        }
    }
    if let Some(format) = body.get("response_format").filter(|v| !v.is_null()) {
        if format.get("type").and_then(Value::as_str) != Some("text") {
            return Err(TranslateError::unsupported(
                "response_format",
                "structured output formats are not available",
            ));
        }
    }
    Ok(())
}

/// Whether a refused field carries a request: present, not null, not false,
/// not 0 and not an empty object or array.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => true,
    }
}

/// A single system text as a string, several as text blocks.
fn system_value(mut system: Vec<String>) -> Value {
    if system.len() == 1 {
        return Value::String(system.remove(0));
    }
    Value::Array(
        system
            .into_iter()
            .map(|text| json!({"type": "text", "text": text}))
            .collect(),
    )
}

/// The system texts and the alternating user/assistant turns.
fn messages(messages: Option<&Value>) -> Result<(Vec<String>, Vec<Value>), TranslateError> {
    let Some(messages) = messages.and_then(Value::as_array) else {
        return Err(TranslateError::invalid("messages", "expected an array"));
    };
    if messages.is_empty() {
        return Err(TranslateError::invalid("messages", "must not be empty"));
    }
    let mut system = Vec::new();
    // (role, blocks) of the turns so far, consecutive roles merged.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let field = format!("messages[{i}]");
        let role = message.get("role").and_then(Value::as_str);
        let (role, blocks) = match role {
            Some("system" | "developer") => {
                let content = message.get("content").unwrap_or(&Value::Null);
                system.extend(
                    text_of(content, &format!("{field}.content"))?
                        .into_iter()
                        .filter(|t| !t.is_empty()),
                );
                continue;
            }
            Some("user") => ("user", user_blocks(message, &field)?),
            Some("assistant") => ("assistant", assistant_blocks(message, &field)?),
            Some("tool") => ("user", vec![tool_result(message, &field)?]),
            Some("function") => {
                return Err(TranslateError::unsupported(
                    format!("{field}.role"),
                    "use `tool` messages instead of the legacy `function` role",
                ))
            }
            _ => {
                return Err(TranslateError::invalid(
                    format!("{field}.role"),
                    "expected system, developer, user, assistant or tool",
                ))
            }
        };
        if blocks.is_empty() {
            return Err(TranslateError::invalid(
                format!("{field}.content"),
                "must not be empty",
            ));
        }
        match turns.last_mut() {
            Some((last, previous)) if *last == role => previous.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "needs a user or assistant message besides the system messages",
        ));
    }
    let turns = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, turns))
}

fn user_blocks(message: &Value, field: &str) -> Result<Vec<Value>, TranslateError> {
    match message.get("content") {
        Some(Value::String(text)) => Ok(text_block(text).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let field = format!("{field}.content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => blocks.extend(text_block(part_text(part, &field)?)),
                    Some("image_url") => blocks.push(image_block(part, &field)?),
                    Some("input_audio") => {
                        return Err(TranslateError::unsupported(
                            field,
                            "audio input is not available",
                        ))
                    }
                    Some("file") => {
                        return Err(TranslateError::unsupported(
                            field,
                            "file input is not available",
                        ))
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            format!("{field}.type"),
                            "expected text or image_url",
                        ))
                    }
                }
            }
            Ok(blocks)
        }
        _ => Err(TranslateError::invalid(
            format!("{field}.content"),
            "expected a string or an array of parts",
        )),
    }
}

fn part_text<'a>(part: &'a Value, field: &str) -> Result<&'a str, TranslateError> {
    part.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.text"), "expected a string"))
}

/// A text block, or none for empty text, which Anthropic refuses.
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// An `image_url` part as an image block: a `data:<type>;base64,<data>` URL
/// as a base64 source, an http(s) URL as a url source.
fn image_block(part: &Value, field: &str) -> Result<Value, TranslateError> {
    let url_field = format!("{field}.image_url.url");
    let Some(url) = part
        .get("image_url")
        .and_then(|image| image.get("url"))
        .and_then(Value::as_str)
    else {
        return Err(TranslateError::invalid(url_field, "expected a string"));
    };
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((media_type, data)) = rest
            .split_once(',')
            .and_then(|(meta, data)| Some((meta.strip_suffix(";base64")?, data)))
        else {
            return Err(TranslateError::invalid(
                url_field,
                "a data URL must be `data:<media type>;base64,<data>`",
            ));
        };
        if media_type.is_empty() || data.is_empty() {
            return Err(TranslateError::invalid(
                url_field,
                "a data URL needs a media type and data",
            ));
        }
        return Ok(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }));
    }
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if scheme.is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https")) {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(TranslateError::invalid(
        url_field,
        "expected a data: or http(s) URL",
    ))
}

fn assistant_blocks(message: &Value, field: &str) -> Result<Vec<Value>, TranslateError> {
    let mut blocks = Vec::new();
    match message.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => blocks.extend(text_block(text)),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let field = format!("{field}.content[{j}]");
                let text = match part.get("type").and_then(Value::as_str) {
                    Some("text") => part_text(part, &field)?,
                    Some("refusal") => {
                        part.get("refusal").and_then(Value::as_str).ok_or_else(|| {
                            TranslateError::invalid(format!("{field}.refusal"), "expected a string")
                        })?
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            format!("{field}.type"),
                            "expected text or refusal",
                        ))
                    }
                };
                blocks.extend(text_block(text));
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{field}.content"),
                "expected a string, an array of parts or null",
            ))
        }
    }
    if message.get("audio").is_some_and(is_set) {
        return Err(TranslateError::unsupported(
            format!("{field}.audio"),
            "audio is not available",
        ));
    }
    if message.get("function_call").is_some_and(is_set) {
        return Err(TranslateError::unsupported(
            format!("{field}.function_call"),
            "use `tool_calls` instead of the legacy `function_call`",
        ));
    }
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (k, call) in calls.iter().enumerate() {
                blocks.push(tool_use(call, &format!("{field}.tool_calls[{k}]"))?);
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{field}.tool_calls"),
                "expected an array",
            ))
        }
    }
    Ok(blocks)
}

/// An assistant's tool call as a `tool_use` block, its arguments parsed.
fn tool_use(call: &Value, field: &str) -> Result<Value, TranslateError> {
    if call.get("type").is_some_and(|t| t != "function") {
        return Err(TranslateError::unsupported(
            format!("{field}.type"),
            "only function tool calls are available",
        ));
    }
    let id = string_field(call, "id", field)?;
    let function = call.get("function");
    let name = function
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            TranslateError::invalid(format!("{field}.function.name"), "expected a string")
        })?;
    let arguments_field = format!("{field}.function.arguments");
    let arguments = function
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(&arguments_field, "expected a string"))?;
    // Models answer `""` for a call without parameters; Anthropic wants `{}`.
    let input = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(arguments).map_err(|err| {
            TranslateError::invalid(&arguments_field, format!("not valid JSON: {err}"))
        })?
    };
    if !input.is_object() {
        return Err(TranslateError::invalid(
            arguments_field,
            "expected a JSON object",
        ));
    }
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// A `tool` message as a `tool_result` block.
fn tool_result(message: &Value, field: &str) -> Result<Value, TranslateError> {
    let id = string_field(message, "tool_call_id", field)?;
    let content = message.get("content").unwrap_or(&Value::Null);
    let content = match content {
        Value::String(text) => json!(text),
        _ => {
            let blocks: Vec<Value> = text_of(content, &format!("{field}.content"))?
                .iter()
                .filter_map(|text| text_block(text))
                .collect();
            Value::Array(blocks)
        }
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}

fn string_field<'a>(value: &'a Value, name: &str, field: &str) -> Result<&'a str, TranslateError> {
    value
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.{name}"), "expected a string"))
}

/// `max_completion_tokens`, else `max_tokens`, else the default.
fn max_tokens(body: &Map<String, Value>, default: u32) -> Result<u64, TranslateError> {
    for field in ["max_completion_tokens", "max_tokens"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(value) => {
                return match value.as_u64() {
                    Some(n) if n > 0 => Ok(n),
                    _ => Err(TranslateError::invalid(
                        field,
                        "expected a positive integer",
                    )),
                }
            }
        }
    }
    Ok(u64::from(default))
}

fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    match stop {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok((!items.is_empty()).then(|| Value::Array(items.clone())))
        }
        Some(_) => Err(TranslateError::invalid(
            "stop",
            "expected a string or an array of strings",
        )),
    }
}

/// `user`, else `metadata.user`.
fn user(body: &Map<String, Value>) -> Result<Option<String>, TranslateError> {
    let metadata_user = body.get("metadata").and_then(|m| m.get("user"));
    for (field, value) in [("user", body.get("user")), ("metadata.user", metadata_user)] {
        match value {
            None | Some(Value::Null) => {}
            Some(Value::String(user)) => return Ok(Some(user.clone())),
            Some(_) => return Err(TranslateError::invalid(field, "expected a string")),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
