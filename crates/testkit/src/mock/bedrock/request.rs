//! The Bedrock mock's request checks: a Converse body as Bedrock validates
//! it, and InvokeModel's Anthropic body, each down to what the answer
//! needs (the prompt's words, the first tool, the last user text).

use std::collections::HashSet;

use axum::body::Bytes;
use base64::Engine;
use serde_json::Value;

/// A body that passed the checks.
#[derive(Debug, Default)]
pub(super) struct Converse {
    pub(super) max_tokens: Option<u64>,
    pub(super) prompt_tokens: u32,
    pub(super) tool: Option<String>,
    pub(super) last_user_text: String,
}

const FIELDS: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
];

const CONFIG_FIELDS: &[&str] = &["maxTokens", "temperature", "topP", "stopSequences"];

const BLOCKS: &[&str] = &[
    "text",
    "image",
    "toolUse",
    "toolResult",
    "document",
    "reasoningContent",
    "cachePoint",
];

fn words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

impl Converse {
    pub(super) fn parse(bytes: &Bytes) -> Result<Converse, String> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
            return Err("The request body is not a JSON object.".to_owned());
        };
        if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!("Unknown field: {unknown}"));
        }
        let mut out = Converse::default();
        if let Some(system) = body.get("system") {
            let Some(blocks) = system.as_array() else {
                return Err("system must be a list".to_owned());
            };
            for block in blocks {
                match block.get("text").and_then(Value::as_str) {
                    Some(t) => out.prompt_tokens += words(t),
                    None => return Err("system blocks must be text".to_owned()),
                }
            }
        }
        if let Some(config) = body.get("inferenceConfig") {
            let Some(config) = config.as_object() else {
                return Err("inferenceConfig must be an object".to_owned());
            };
            if let Some(unknown) = config.keys().find(|k| !CONFIG_FIELDS.contains(&k.as_str())) {
                return Err(format!("Unknown field: inferenceConfig.{unknown}"));
            }
            if let Some(max) = config.get("maxTokens") {
                match max.as_u64() {
                    Some(n) if n >= 1 => out.max_tokens = Some(n),
                    _ => return Err("inferenceConfig.maxTokens must be at least 1".to_owned()),
                }
            }
        }
        let tools = body.get("toolConfig").and_then(|t| t.get("tools"));
        if body.get("toolConfig").is_some() {
            let Some(tools) = tools.and_then(Value::as_array).filter(|t| !t.is_empty()) else {
                return Err("toolConfig.tools must have at least 1 tool".to_owned());
            };
            for (i, tool) in tools.iter().enumerate() {
                let spec = tool.get("toolSpec");
                let name = spec.and_then(|s| s.get("name")).and_then(Value::as_str);
                let schema = spec
                    .and_then(|s| s.get("inputSchema"))
                    .and_then(|s| s.get("json"));
                match (name, schema) {
                    (Some(name), Some(_)) if out.tool.is_none() => out.tool = Some(name.to_owned()),
                    (Some(_), Some(_)) => {}
                    _ => {
                        return Err(format!(
                            "toolConfig.tools.{i}: toolSpec needs name and inputSchema.json"
                        ))
                    }
                }
            }
        }
        let Some(messages) = body
            .get("messages")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
        else {
            return Err("messages must have at least 1 message".to_owned());
        };
        let mut uses_before: HashSet<String> = HashSet::new();
        for (i, message) in messages.iter().enumerate() {
            let role = message.get("role").and_then(Value::as_str);
            let expected = if i % 2 == 0 { "user" } else { "assistant" };
            if role != Some(expected) {
                return Err(format!(
                    "A conversation must alternate between user and assistant roles, starting with user: messages.{i}.role"
                ));
            }
            let Some(blocks) = message
                .get("content")
                .and_then(Value::as_array)
                .filter(|c| !c.is_empty())
            else {
                return Err(format!("messages.{i}.content must have at least 1 block"));
            };
            let mut uses = HashSet::new();
            let mut text = String::new();
            for (j, block) in blocks.iter().enumerate() {
                let Some(object) = block.as_object().filter(|o| o.len() == 1) else {
                    return Err(format!(
                        "messages.{i}.content.{j} must have exactly one member"
                    ));
                };
                let Some(kind) = object
                    .keys()
                    .next()
                    .filter(|k| BLOCKS.contains(&k.as_str()))
                else {
                    return Err(format!("messages.{i}.content.{j}: unknown block"));
                };
                match kind.as_str() {
                    "text" => match block["text"].as_str() {
                        Some(t) => {
                            out.prompt_tokens += words(t);
                            text.push_str(t);
                        }
                        None => {
                            return Err(format!("messages.{i}.content.{j}.text must be a string"))
                        }
                    },
                    "image" => {
                        let format = block["image"].get("format").and_then(Value::as_str);
                        let bytes = block["image"]
                            .get("source")
                            .and_then(|s| s.get("bytes"))
                            .and_then(Value::as_str);
                        let decodes = bytes.is_some_and(|b| {
                            base64::engine::general_purpose::STANDARD.decode(b).is_ok()
                        });
                        if !matches!(format, Some("png" | "jpeg" | "gif" | "webp"))
                            || !decodes
                            || role != Some("user")
                        {
                            return Err(format!("messages.{i}.content.{j}.image needs a format and base64 source.bytes, in a user turn"));
                        }
                    }
                    "toolUse" => {
                        let id = block["toolUse"].get("toolUseId").and_then(Value::as_str);
                        let named = block["toolUse"]
                            .get("name")
                            .and_then(Value::as_str)
                            .is_some();
                        let input = block["toolUse"].get("input").is_some_and(Value::is_object);
                        match id {
                            Some(id) if named && input && role == Some("assistant") => {
                                uses.insert(id.to_owned());
                            }
                            _ => return Err(format!("messages.{i}.content.{j}.toolUse needs toolUseId, name and an input object, in an assistant turn")),
                        }
                    }
                    "toolResult" => {
                        let id = block["toolResult"]
                            .get("toolUseId")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if !uses_before.contains(id) {
                            return Err(format!("messages.{i}.content.{j}.toolResult: the toolUseId does not match a toolUse of the previous turn"));
                        }
                        let content = block["toolResult"].get("content").and_then(Value::as_array);
                        if content.is_none_or(|c| c.is_empty()) {
                            return Err(format!("messages.{i}.content.{j}.toolResult.content must have at least 1 block"));
                        }
                        for part in content.into_iter().flatten() {
                            if let Some(t) = part.get("text").and_then(Value::as_str) {
                                out.prompt_tokens += words(t);
                            }
                        }
                    }
                    _ => {}
                }
                if matches!(kind.as_str(), "toolUse" | "toolResult")
                    && body.get("toolConfig").is_none()
                {
                    return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".to_owned());
                }
            }
            uses_before = uses;
            if role == Some("user") {
                out.last_user_text = text;
            }
        }
        if messages.len() % 2 == 0 {
            return Err("A conversation must end with a user message.".to_owned());
        }
        Ok(out)
    }

    /// An InvokeModel body for an Anthropic model (Anthropic's Messages
    /// body as Bedrock takes it).
    pub(super) fn parse_anthropic(bytes: &Bytes) -> Result<Converse, String> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(bytes) else {
            return Err("The request body is not a JSON object.".to_owned());
        };
        for refused in ["model", "stream"] {
            if body.contains_key(refused) {
                return Err(format!(
                    "Malformed input request: extraneous key [{refused}] is not permitted"
                ));
            }
        }
        if body.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
            return Err(
                "Malformed input request: anthropic_version must be bedrock-2023-05-31".to_owned(),
            );
        }
        let Some(max_tokens) = body
            .get("max_tokens")
            .and_then(Value::as_u64)
            .filter(|n| *n >= 1)
        else {
            return Err("Malformed input request: required key [max_tokens] not found".to_owned());
        };
        let Some(messages) = body
            .get("messages")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
        else {
            return Err("Malformed input request: required key [messages] not found".to_owned());
        };
        let mut out = Converse {
            max_tokens: Some(max_tokens),
            ..Converse::default()
        };
        if let Some(system) = body.get("system").and_then(Value::as_str) {
            out.prompt_tokens += words(system);
        }
        out.tool = body
            .get("tools")
            .and_then(|t| t.get(0))
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        // Tool use ids of the turn before, which its tool results answer.
        let mut uses_before: HashSet<String> = HashSet::new();
        for (i, message) in messages.iter().enumerate() {
            let mut uses = HashSet::new();
            let text = match message.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(blocks)) => {
                    for block in blocks {
                        match block.get("type").and_then(Value::as_str) {
                            Some("tool_use") => {
                                if let Some(id) = block.get("id").and_then(Value::as_str) {
                                    uses.insert(id.to_owned());
                                }
                            }
                            Some("tool_result") => {
                                let id = block.get("tool_use_id").and_then(Value::as_str);
                                if !id.is_some_and(|id| uses_before.contains(id)) {
                                    return Err(format!("messages.{i}: tool_result blocks must answer a tool_use of the previous message"));
                                }
                            }
                            _ => {}
                        }
                    }
                    blocks
                        .iter()
                        .filter_map(|b| b.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(" ")
                }
                _ => return Err("Malformed input request: messages need content".to_owned()),
            };
            uses_before = uses;
            out.prompt_tokens += words(&text);
            if message.get("role").and_then(Value::as_str) == Some("user") {
                out.last_user_text = text;
            }
        }
        Ok(out)
    }
}
