//! The walk over an OpenAI chat request's `messages` that the translators to
//! Converse and Gemini share: system text apart, the rest as alternating
//! user and assistant turns of provider blocks.
//!
//! Both providers take a conversation the same way and differ only in how a
//! block is spelled, so the walk, the validation and the refusals (with the
//! field they name) live here once and each provider says how to spell an
//! image, an assistant's text, a tool call and a tool result. The checks of
//! a declared tool (`tools[i]`) are shared here too.

use serde_json::{json, Map, Value};

use super::{joined_text, user_content, TranslateError, UserPart};

/// An OpenAI chat completion request's body object and its `messages`,
/// refusing a body that is not an object, has no `messages` array or asks
/// for more than one choice.
pub(crate) fn chat_messages(
    body: &Value,
) -> Result<(&Map<String, Value>, &[Value]), TranslateError> {
    let Some(body) = body.as_object() else {
        return Err(TranslateError::invalid("", "expected a JSON object"));
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err(TranslateError::invalid("messages", "expected an array"));
    };
    if let Some(n) = body.get("n").filter(|n| !n.is_null()) {
        if n.as_u64() != Some(1) {
            return Err(TranslateError::unsupported("n", "only one choice"));
        }
    }
    Ok((body, messages))
}

/// Who speaks a turn; each provider names the assistant its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Speaker {
    User,
    Assistant,
}

/// A chat's messages as a provider takes them: the system and developer
/// text as `{"text": ...}` blocks, and the turns, adjacent turns of one
/// speaker merged.
pub(crate) struct Conversation {
    pub system: Vec<Value>,
    pub turns: Vec<(Speaker, Vec<Value>)>,
}

/// How one provider spells the blocks of a turn. Each method may refuse,
/// naming the field it was given.
pub(crate) trait Blocks {
    /// An image part of a user message, from a base64 `data:` URL's media
    /// type and data; `here` names the part.
    fn image(&mut self, mime: &str, data: &str, here: &str) -> Result<Value, TranslateError>;

    /// An assistant message's text, or `None` to leave it out.
    fn assistant_text(&mut self, text: String) -> Option<Value>;

    /// One of an assistant message's `tool_calls`, at `field`.
    fn tool_call(&mut self, call: &Value, field: &str) -> Result<Value, TranslateError>;

    /// A `tool` message, at `at`, as the block of the user turn carrying it.
    fn tool_result(&mut self, message: &Value, at: &str) -> Result<Value, TranslateError>;
}

/// Walks `messages` into a [`Conversation`] with `blocks`. User and tool
/// messages are user turns, assistant messages assistant turns; an unknown
/// role, or an assistant message with neither text nor tool calls, is
/// refused. The caller decides whether an empty conversation will do.
pub(crate) fn conversation(
    messages: &[Value],
    blocks: &mut impl Blocks,
) -> Result<Conversation, TranslateError> {
    let mut system = Vec::new();
    let mut turns: Vec<(Speaker, Vec<Value>)> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let (speaker, content) = match role {
            "system" | "developer" => {
                let text = joined_text(message.get("content"), &format!("{at}.content"))?;
                system.push(json!({"text": text}));
                continue;
            }
            "user" => (Speaker::User, user_blocks(message, &at, blocks)?),
            "assistant" => (Speaker::Assistant, assistant_blocks(message, &at, blocks)?),
            "tool" => (Speaker::User, vec![blocks.tool_result(message, &at)?]),
            _ => {
                return Err(TranslateError::invalid(
                    format!("{at}.role"),
                    "expected system, developer, user, assistant or tool",
                ))
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if *last == speaker => existing.extend(content),
            _ => turns.push((speaker, content)),
        }
    }
    Ok(Conversation { system, turns })
}

/// A user message's content as blocks: text, and images given as base64
/// `data:` URLs.
fn user_blocks(
    message: &Value,
    at: &str,
    blocks: &mut impl Blocks,
) -> Result<Vec<Value>, TranslateError> {
    let content = message.get("content");
    let field = format!("{at}.content");
    let Some(Value::Array(parts)) = content else {
        return Ok(vec![json!({"text": joined_text(content, &field)?})]);
    };
    user_content(parts, &field, |part, here| match part {
        UserPart::Text(t) => Ok(json!({"text": t})),
        UserPart::Image { mime, data } => blocks.image(mime, data, here),
    })
}

/// An assistant message's text and tool calls as blocks.
fn assistant_blocks(
    message: &Value,
    at: &str,
    blocks: &mut impl Blocks,
) -> Result<Vec<Value>, TranslateError> {
    let mut out = match message.get("content") {
        None | Some(Value::Null) => Vec::new(),
        content => {
            let text = joined_text(content, &format!("{at}.content"))?;
            blocks.assistant_text(text).into_iter().collect()
        }
    };
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let Some(calls) = calls.as_array() else {
            return Err(TranslateError::invalid(
                format!("{at}.tool_calls"),
                "expected an array",
            ));
        };
        for (j, call) in calls.iter().enumerate() {
            out.push(blocks.tool_call(call, &format!("{at}.tool_calls[{j}]"))?);
        }
    }
    if out.is_empty() {
        return Err(TranslateError::invalid(
            format!("{at}.content"),
            "an assistant message needs content or tool_calls",
        ));
    }
    Ok(out)
}

/// A tool call's function (at `field`): its name, and its `arguments`
/// parsed as a JSON object (absent or blank arguments are `{}`).
pub(crate) fn called_function<'a>(
    call: &'a Value,
    field: &str,
) -> Result<(&'a str, Value), TranslateError> {
    let function = call.get("function");
    let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) else {
        return Err(TranslateError::invalid(
            format!("{field}.function.name"),
            "expected a string",
        ));
    };
    let arguments = function
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str)
        .unwrap_or("{}");
    let arguments: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments).map_err(|_| {
            TranslateError::invalid(
                format!("{field}.function.arguments"),
                "expected a JSON object",
            )
        })?
    };
    if !arguments.is_object() {
        return Err(TranslateError::invalid(
            format!("{field}.function.arguments"),
            "expected a JSON object",
        ));
    }
    Ok((name, arguments))
}

/// The function `tools[i]` declares, and its name: only function tools,
/// each with a name.
pub(crate) fn declared_function(
    tool: &Value,
    i: usize,
) -> Result<(Option<&Value>, &str), TranslateError> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(TranslateError::unsupported(
            format!("tools[{i}].type"),
            "only function tools",
        ));
    }
    let function = tool.get("function");
    let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) else {
        return Err(TranslateError::invalid(
            format!("tools[{i}].function.name"),
            "expected a string",
        ));
    };
    Ok((function, name))
}

/// What a tool message returned: a JSON object when its text is one, else
/// the text.
pub(crate) enum ToolOutput {
    Object(Value),
    Text(String),
}

/// Reads the content of the tool message at `at` as a [`ToolOutput`].
pub(crate) fn tool_output(message: &Value, at: &str) -> Result<ToolOutput, TranslateError> {
    let text = joined_text(message.get("content"), &format!("{at}.content"))?;
    Ok(match serde_json::from_str::<Value>(&text) {
        Ok(value @ Value::Object(_)) => ToolOutput::Object(value),
        _ => ToolOutput::Text(text),
    })
}
