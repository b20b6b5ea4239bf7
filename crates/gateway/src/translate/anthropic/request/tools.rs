//! OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` as Anthropic's
//! `tools` and `tool_choice`.

use serde_json::{json, Map, Value};

use super::string_field;
use crate::translate::TranslateError;

pub(super) fn tools(tools: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
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
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Err(TranslateError::unsupported(
                    format!("{field}.type"),
                    "only function tools are available",
                ));
            }
            let function = tool.get("function").unwrap_or(&Value::Null);
            let name = string_field(function, "name", &format!("{field}.function"))?;
            let schema = match function.get("parameters") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(schema @ Value::Object(_)) => schema.clone(),
                Some(_) => {
                    return Err(TranslateError::invalid(
                        format!("{field}.function.parameters"),
                        "expected a JSON schema object",
                    ))
                }
            };
            let mut out = json!({"name": name, "input_schema": schema});
            if let Some(description) = function.get("description").and_then(Value::as_str) {
                out["description"] = json!(description);
            }
            Ok(out)
        })
        .collect()
}

/// `tool_choice` with `parallel_tool_calls: false` folded in, or `None` for
/// Anthropic's default (auto, parallel calls allowed).
pub(super) fn tool_choice(body: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let mut choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            _ => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    "expected auto, none, required or a named function",
                ))
            }
        },
        Some(named @ Value::Object(_)) => {
            if named.get("type").and_then(Value::as_str) != Some("function") {
                return Err(TranslateError::unsupported(
                    "tool_choice.type",
                    "only function tools are available",
                ));
            }
            let function = named.get("function").unwrap_or(&Value::Null);
            let name = string_field(function, "name", "tool_choice.function")?;
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "tool_choice",
                "expected a string or an object",
            ))
        }
    };
    match body.get("parallel_tool_calls") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
            // `none` takes no such flag: no tool, so nothing in parallel.
            if choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = json!(true);
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "parallel_tool_calls",
                "expected a boolean",
            ))
        }
    }
    Ok(choice)
}
