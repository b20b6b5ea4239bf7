//! OpenAI chat completions to and from Amazon Bedrock's Converse API: the
//! request (`/model/{id}/converse` and `/converse-stream` share it), the
//! whole answer, the streamed answer (ConverseStream's events, already
//! taken out of their event-stream frames: an event type and its JSON
//! payload) and error bodies (`{"message": ...}`).

use serde_json::{json, Map, Value};

use super::messages::{
    called_function, chat_messages, conversation, declared_function, tool_output, Blocks,
    Conversation, Speaker, ToolOutput,
};
use super::{count, TranslateError, Usage};

mod stream;

pub use stream::StreamTranslator;

/// An OpenAI chat completion request as a Converse body. `system` and
/// `developer` messages become `system`; user and tool messages are `user`
/// turns, assistant ones `assistant` turns (adjacent turns of one role are
/// merged, as Converse wants them alternating); tool calls and their
/// results become `toolUse` and `toolResult` blocks.
pub fn chat_request_to_converse(body: &Value) -> Result<Value, TranslateError> {
    let (body, messages) = chat_messages(body)?;
    let Conversation { system, turns } = conversation(messages, &mut ConverseBlocks)?;
    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "needs a user, assistant or tool message",
        ));
    }
    let mut out = Map::new();
    out.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(speaker, content)| {
                    let role = match speaker {
                        Speaker::User => "user",
                        Speaker::Assistant => "assistant",
                    };
                    json!({"role": role, "content": content})
                })
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    let config = inference_config(body)?;
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if let Some(tools) = tool_config(body)? {
        out.insert("toolConfig".into(), tools);
    }
    Ok(Value::Object(out))
}

/// `max_tokens` (or `max_completion_tokens`), `temperature`, `top_p` and
/// `stop` as Converse's `inferenceConfig`.
fn inference_config(body: &Map<String, Value>) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    let present = |name: &str| body.get(name).filter(|v| !v.is_null());
    if let Some(v) = present("max_completion_tokens").or_else(|| present("max_tokens")) {
        let Some(n) = v.as_u64().filter(|n| *n >= 1) else {
            return Err(TranslateError::invalid(
                "max_tokens",
                "expected a positive integer",
            ));
        };
        config.insert("maxTokens".into(), json!(n));
    }
    for (name, converse) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = present(name) {
            let Some(x) = v.as_f64() else {
                return Err(TranslateError::invalid(name, "expected a number"));
            };
            config.insert(converse.into(), json!(x));
        }
    }
    match present("stop") {
        None => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(items)) => {
            let mut stops = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Some(s) = item.as_str() else {
                    return Err(TranslateError::invalid(
                        format!("stop[{i}]"),
                        "expected a string",
                    ));
                };
                stops.push(json!(s));
            }
            config.insert("stopSequences".into(), Value::Array(stops));
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "stop",
                "expected a string or an array of strings",
            ))
        }
    }
    Ok(config)
}

/// `tools` and `tool_choice` as Converse's `toolConfig`; `None` without
/// tools.
fn tool_config(body: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(tools)) if tools.is_empty() => return Ok(None),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(TranslateError::invalid("tools", "expected an array")),
    };
    let mut specs = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let (function, name) = declared_function(tool, i)?;
        let schema = function
            .and_then(|f| f.get("parameters"))
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut spec = json!({"name": name, "inputSchema": {"json": schema}});
        if let Some(description) = function
            .and_then(|f| f.get("description"))
            .and_then(Value::as_str)
        {
            spec["description"] = json!(description);
        }
        specs.push(json!({"toolSpec": spec}));
    }
    let mut config = json!({"tools": specs});
    match body.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "auto" => config["toolChoice"] = json!({"auto": {}}),
        Some(Value::String(s)) if s == "required" => config["toolChoice"] = json!({"any": {}}),
        Some(Value::String(s)) if s == "none" => {
            return Err(TranslateError::unsupported(
                "tool_choice",
                "Bedrock's Converse has no `none`; send no tools instead",
            ))
        }
        Some(choice) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            match (choice.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => {
                    config["toolChoice"] = json!({"tool": {"name": name}});
                }
                _ => {
                    return Err(TranslateError::invalid(
                        "tool_choice",
                        "expected auto, required, none or a function",
                    ))
                }
            }
        }
    }
    Ok(Some(config))
}

/// Converse's spelling of a turn's blocks.
struct ConverseBlocks;

impl Blocks for ConverseBlocks {
    /// Converse takes png, jpeg, gif and webp images, as bytes.
    fn image(&mut self, mime: &str, data: &str, here: &str) -> Result<Value, TranslateError> {
        let format = match mime {
            "image/png" => "png",
            "image/jpeg" | "image/jpg" => "jpeg",
            "image/gif" => "gif",
            "image/webp" => "webp",
            _ => {
                return Err(TranslateError::unsupported(
                    format!("{here}.image_url.url"),
                    "only png, jpeg, gif and webp images",
                ))
            }
        };
        Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
    }

    /// Converse refuses an empty text block, so empty text is left out.
    fn assistant_text(&mut self, text: String) -> Option<Value> {
        (!text.is_empty()).then(|| json!({"text": text}))
    }

    fn tool_call(&mut self, call: &Value, field: &str) -> Result<Value, TranslateError> {
        let Some(id) = call.get("id").and_then(Value::as_str) else {
            return Err(TranslateError::invalid(
                format!("{field}.id"),
                "expected a string",
            ));
        };
        let (name, input) = called_function(call, field)?;
        Ok(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
    }

    fn tool_result(&mut self, message: &Value, at: &str) -> Result<Value, TranslateError> {
        let Some(id) = message.get("tool_call_id").and_then(Value::as_str) else {
            return Err(TranslateError::invalid(
                format!("{at}.tool_call_id"),
                "expected a string",
            ));
        };
        let content = match tool_output(message, at)? {
            ToolOutput::Object(value) => json!({"json": value}),
            ToolOutput::Text(text) => json!({"text": text}),
        };
        Ok(json!({"toolResult": {"toolUseId": id, "content": [content]}}))
    }
}

/// The token counts of a Converse `usage`: `inputTokens` counts the
/// uncached prompt tokens, the cache reads and writes come apart.
pub fn usage_from_converse(usage: &Value) -> Usage {
    Usage {
        input: count(usage.get("inputTokens")),
        output: count(usage.get("outputTokens")),
        cache_read: count(usage.get("cacheReadInputTokens")),
        cache_write: count(usage.get("cacheWriteInputTokens")),
    }
}

/// Converse's `stopReason` as OpenAI's `finish_reason`.
fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "content_filtered" | "guardrail_intervened" => "content_filter",
        _ => "stop",
    }
}

/// A `toolUse` block as an OpenAI tool call at `index`.
fn tool_call(tool_use: &Value, index: usize) -> Result<Value, TranslateError> {
    let id = tool_use.get("toolUseId").and_then(Value::as_str);
    let name = tool_use.get("name").and_then(Value::as_str);
    let (Some(id), Some(name)) = (id, name) else {
        return Err(TranslateError::invalid(
            "output.message.content.toolUse",
            "expected toolUseId and name",
        ));
    };
    let input = tool_use.get("input").cloned().unwrap_or_else(|| json!({}));
    Ok(json!({
        "index": index,
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": input.to_string()},
    }))
}

/// A Converse answer as an OpenAI chat completion, with its usage when the
/// answer reports one.
pub fn converse_to_chat_completion(
    answer: &Value,
    model: &str,
    created: u64,
    id: &str,
) -> Result<(Value, Option<Usage>), TranslateError> {
    let Some(blocks) = answer
        .get("output")
        .and_then(|o| o.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
    else {
        return Err(TranslateError::invalid(
            "output.message.content",
            "expected an array",
        ));
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(tool_use) = block.get("toolUse") {
            calls.push(tool_call(tool_use, calls.len())?);
        }
        // Reasoning and other blocks have no place in a chat completion.
    }
    let reason = answer
        .get("stopReason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let mut message = json!({"role": "assistant", "content": (!text.is_empty() || calls.is_empty()).then_some(text)});
    if !calls.is_empty() {
        for call in &mut calls {
            if let Some(object) = call.as_object_mut() {
                object.remove("index");
            }
        }
        message["tool_calls"] = Value::Array(calls);
    }
    let usage = answer.get("usage").map(usage_from_converse);
    let mut completion = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(reason)}],
    });
    if let Some(usage) = &usage {
        completion["usage"] = usage.to_openai();
    }
    Ok((completion, usage))
}

/// A Bedrock error answer (`{"message": ...}`, its type in
/// `x-amzn-errortype` when known) as OpenAI's error shape.
pub fn bedrock_error_to_openai(status: u16, error_type: Option<&str>, body: &[u8]) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .map_or_else(|| format!("upstream answered {status}"), str::to_owned);
    // `x-amzn-errortype` reads `ThrottlingException:http://...`; the
    // protocol layer passes it on in the body as `__type`.
    let code = error_type
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|v| v.get("__type"))
                .and_then(Value::as_str)
        })
        .map(|t| t.split(':').next().unwrap_or(t))
        .filter(|t| !t.is_empty());
    let kind = match status {
        400 | 404 | 422 => "invalid_request_error",
        401 | 403 => "authentication_error",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    json!({"error": {"message": message, "type": kind, "code": code}})
}

/// The HTTP status an exception in a stream stands for, by its
/// `:exception-type` (`throttlingException`, `validationException` ...).
pub fn exception_status(exception: &str) -> u16 {
    match exception {
        "throttlingException" | "ThrottlingException" => 429,
        "validationException" | "ValidationException" => 400,
        "modelTimeoutException" | "ModelTimeoutException" => 408,
        "serviceUnavailableException" | "ServiceUnavailableException" => 503,
        "accessDeniedException" | "AccessDeniedException" => 403,
        _ => 500,
    }
}

/// Whether a Bedrock model id names an Anthropic model, which takes
/// Anthropic's Messages body natively through InvokeModel:
/// `anthropic.claude-...`, or a cross-region inference profile such as
/// `us.anthropic.claude-...`.
pub fn is_anthropic_model(model: &str) -> bool {
    model.starts_with("anthropic.")
        || model
            .split_once('.')
            .is_some_and(|(_, rest)| rest.starts_with("anthropic."))
}

/// An Anthropic Messages request as InvokeModel's body for an Anthropic
/// model on Bedrock: the model goes in the path, not the body, the stream
/// in the method, and `anthropic_version` names Bedrock's.
pub fn messages_request_to_invoke(body: &Value) -> Result<Value, TranslateError> {
    let Some(object) = body.as_object() else {
        return Err(TranslateError::invalid("", "expected a JSON object"));
    };
    let mut object = object.clone();
    object.remove("model");
    object.remove("stream");
    object.insert(
        "anthropic_version".into(),
        Value::String(BEDROCK_ANTHROPIC_VERSION.into()),
    );
    Ok(Value::Object(object))
}

/// The `anthropic_version` Bedrock's Anthropic models take.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

#[cfg(test)]
mod tests;
