//! OpenAI chat completions to and from Google's Gemini `generateContent`
//! (Google AI Studio's Gemini API and Vertex AI's, which share the body):
//! the request, the whole answer, the streamed answer
//! (`streamGenerateContent?alt=sse`, one `GenerateContentResponse` per
//! `data:` event) and error bodies.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::messages::{
    called_function, chat_messages, conversation, declared_function, tool_output, Blocks,
    Conversation, Speaker, ToolOutput,
};
use super::TranslateError;

/// An OpenAI chat completion request as a Gemini `generateContent` body.
/// `system` and `developer` messages become `systemInstruction`; user and
/// tool messages are `user` turns, assistant ones `model` turns (adjacent
/// turns of one role are merged); tool calls and their results become
/// `functionCall` and `functionResponse` parts.
pub fn chat_request_to_gemini(body: &Value) -> Result<Value, TranslateError> {
    let (body, messages) = chat_messages(body)?;
    let Conversation { system, turns } = conversation(messages, &mut GeminiBlocks::default())?;
    if turns.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "needs at least one user or assistant message",
        ));
    }
    let contents: Vec<Value> = turns
        .into_iter()
        .map(|(speaker, parts)| {
            let role = match speaker {
                Speaker::User => "user",
                Speaker::Assistant => "model",
            };
            json!({"role": role, "parts": parts})
        })
        .collect();
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut config = Map::new();
    for (from, to) in [
        ("max_completion_tokens", "maxOutputTokens"),
        ("max_tokens", "maxOutputTokens"),
    ] {
        match body.get(from) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64().is_some() => {
                config.entry(to).or_insert_with(|| v.clone());
            }
            Some(_) => return Err(TranslateError::invalid(from, "expected a whole number")),
        }
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        match body.get(from) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                config.insert(to.into(), v.clone());
            }
            Some(_) => return Err(TranslateError::invalid(from, "expected a number")),
        }
    }
    match body.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            config.insert("stopSequences".into(), Value::Array(items.clone()));
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "stop",
                "expected a string or an array of strings",
            ))
        }
    }
    if let Some(format) = body.get("response_format").filter(|f| !f.is_null()) {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            _ => {
                return Err(TranslateError::unsupported(
                    "response_format",
                    "only text and json_object",
                ))
            }
        }
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        let Some(tools) = tools.as_array() else {
            return Err(TranslateError::invalid("tools", "expected an array"));
        };
        let mut declarations = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            let (function, name) = declared_function(tool, i)?;
            let mut declaration = Map::new();
            declaration.insert("name".into(), json!(name));
            if let Some(d) = function
                .and_then(|f| f.get("description"))
                .and_then(Value::as_str)
            {
                declaration.insert("description".into(), json!(d));
            }
            if let Some(p) = function
                .and_then(|f| f.get("parameters"))
                .filter(|p| !p.is_null())
            {
                declaration.insert("parameters".into(), p.clone());
            }
            declarations.push(Value::Object(declaration));
        }
        if !declarations.is_empty() {
            out.insert(
                "tools".into(),
                json!([{"functionDeclarations": declarations}]),
            );
        }
    }
    if let Some(choice) = body.get("tool_choice").filter(|c| !c.is_null()) {
        let config = match choice {
            Value::String(s) if s == "auto" => json!({"mode": "AUTO"}),
            Value::String(s) if s == "none" => json!({"mode": "NONE"}),
            Value::String(s) if s == "required" => json!({"mode": "ANY"}),
            Value::Object(_) => match choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            {
                Some(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
                None => {
                    return Err(TranslateError::invalid(
                        "tool_choice.function.name",
                        "expected a string",
                    ))
                }
            },
            _ => {
                return Err(TranslateError::invalid(
                    "tool_choice",
                    "expected auto, none, required or a function",
                ))
            }
        };
        out.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    Ok(Value::Object(out))
}

/// Gemini's spelling of a turn's parts.
#[derive(Default)]
struct GeminiBlocks {
    /// The function each tool call id named, for the tool results, which
    /// Gemini matches by name.
    call_names: HashMap<String, String>,
}

impl Blocks for GeminiBlocks {
    /// Gemini takes any image as inline data.
    fn image(&mut self, mime: &str, data: &str, _here: &str) -> Result<Value, TranslateError> {
        Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
    }

    fn assistant_text(&mut self, text: String) -> Option<Value> {
        Some(json!({"text": text}))
    }

    fn tool_call(&mut self, call: &Value, field: &str) -> Result<Value, TranslateError> {
        let (name, args) = called_function(call, field)?;
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            self.call_names.insert(id.to_owned(), name.to_owned());
        }
        Ok(json!({"functionCall": {"name": name, "args": args}}))
    }

    fn tool_result(&mut self, message: &Value, at: &str) -> Result<Value, TranslateError> {
        let id = message
            .get("tool_call_id")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(name) = self.call_names.get(id) else {
            return Err(TranslateError::invalid(
                format!("{at}.tool_call_id"),
                "names no earlier assistant tool call",
            ));
        };
        let response = match tool_output(message, at)? {
            ToolOutput::Object(object) => object,
            ToolOutput::Text(text) => json!({"content": text}),
        };
        Ok(json!({"functionResponse": {"name": name, "response": response}}))
    }
}

/// The token counts of a Gemini `usageMetadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeminiUsage {
    /// `promptTokenCount` (cached tokens included).
    pub prompt: u64,
    /// `candidatesTokenCount` plus `thoughtsTokenCount`.
    pub completion: u64,
    /// `totalTokenCount`, or the sum when absent.
    pub total: u64,
    /// `cachedContentTokenCount`.
    pub cached: u64,
}

/// Reads a `usageMetadata` object.
pub fn usage_from_gemini(usage: &Value) -> GeminiUsage {
    let n = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount");
    let completion = n("candidatesTokenCount").saturating_add(n("thoughtsTokenCount"));
    let total = usage
        .get("totalTokenCount")
        .and_then(Value::as_u64)
        .unwrap_or(prompt.saturating_add(completion));
    GeminiUsage {
        prompt,
        completion,
        total,
        cached: n("cachedContentTokenCount"),
    }
}

impl GeminiUsage {
    /// OpenAI's `usage` object.
    pub fn to_openai(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.total,
            "prompt_tokens_details": {"cached_tokens": self.cached},
        })
    }
}

/// OpenAI's `finish_reason` for a Gemini `finishReason`.
fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// The text and tool calls of a candidate's parts (`thought` parts left
/// out); tool call ids are Gemini's when it gives them, else
/// `call_{response}_{index}` (`call_{index}` without a response id), so
/// they differ from one answer to the next.
fn read_parts(
    parts: &[Value],
    first_index: usize,
    response: Option<&str>,
) -> Result<(String, Vec<Value>), TranslateError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(call) = part.get("functionCall") {
            let Some(name) = call.get("name").and_then(Value::as_str) else {
                return Err(TranslateError::invalid(
                    format!("candidates[0].content.parts[{i}].functionCall.name"),
                    "expected a string",
                ));
            };
            let index = first_index + calls.len();
            let id = call.get("id").and_then(Value::as_str).map_or_else(
                || match response {
                    Some(r) => format!("call_{r}_{index}"),
                    None => format!("call_{index}"),
                },
                str::to_owned,
            );
            let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
            calls.push(json!({
                "index": index,
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": args.to_string()},
            }));
        }
    }
    Ok((text, calls))
}

/// A Gemini `GenerateContentResponse` as an OpenAI chat completion named
/// `model`, created at `created`, with its usage.
pub fn gemini_to_chat_completion(
    answer: &Value,
    model: &str,
    created: u64,
) -> Result<(Value, Option<GeminiUsage>), TranslateError> {
    if !answer.is_object() {
        return Err(TranslateError::invalid("", "expected a JSON object"));
    }
    let usage = answer.get("usageMetadata").map(usage_from_gemini);
    let candidate = answer.get("candidates").and_then(|c| c.get(0));
    let (text, calls, finish) = match candidate {
        Some(candidate) => {
            let parts = candidate
                .get("content")
                .and_then(|c| c.get("parts"))
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            let response = answer.get("responseId").and_then(Value::as_str);
            let (text, calls) = read_parts(parts, 0, response)?;
            let reason = candidate
                .get("finishReason")
                .and_then(Value::as_str)
                .unwrap_or("STOP");
            let finish = finish_reason(reason, !calls.is_empty());
            (text, calls, finish)
        }
        // No candidate: the prompt was blocked (`promptFeedback`).
        None => (String::new(), Vec::new(), "content_filter"),
    };
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    if !calls.is_empty() {
        let calls: Vec<Value> = calls
            .into_iter()
            .map(|mut c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove("index");
                }
                c
            })
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let mut completion = json!({
        "id": completion_id(answer),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": Value::Object(message),
            "finish_reason": finish,
        }],
    });
    if let Some(usage) = usage {
        completion["usage"] = usage.to_openai();
    }
    Ok((completion, usage))
}

fn completion_id(answer: &Value) -> String {
    match answer.get("responseId").and_then(Value::as_str) {
        Some(id) => format!("chatcmpl-{id}"),
        None => "chatcmpl-gemini".to_owned(),
    }
}

/// A Google error body (`{"error":{"code","message","status"}}`) as
/// OpenAI's error shape, with the same status.
pub fn gemini_error_to_openai(status: u16, body: &[u8]) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("upstream answered {status}"), str::to_owned);
    let code = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let kind = match status {
        400 | 404 | 422 => "invalid_request_error",
        401 | 403 => "authentication_error",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    json!({"error": {"message": message, "type": kind, "code": code}})
}

/// Turns a Gemini SSE stream's events (each a `GenerateContentResponse`)
/// into OpenAI chat completion chunks: the first carries the role, text
/// parts become content deltas, function calls tool call deltas (whole),
/// the finish reason its own chunk; at the end of the upstream stream,
/// with [`StreamTranslator::finish`], a usage chunk (no choices).
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    created: u64,
    id: Option<String>,
    started: bool,
    calls: usize,
    finished: bool,
    usage: Option<GeminiUsage>,
}

impl StreamTranslator {
    pub fn new(model: &str, created: u64) -> StreamTranslator {
        StreamTranslator {
            model: model.to_owned(),
            created,
            id: None,
            started: false,
            calls: 0,
            finished: false,
            usage: None,
        }
    }

    /// The usage last reported.
    pub fn usage(&self) -> Option<GeminiUsage> {
        self.usage
    }

    /// Whether a finish reason came.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id.as_deref().unwrap_or("chatcmpl-gemini"),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// The chunks for one event's `data`. An `error` payload is an error.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<Value>, TranslateError> {
        let event: Value = serde_json::from_slice(data)
            .map_err(|_| TranslateError::invalid("data", "expected a JSON object"))?;
        if let Some(error) = event.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the upstream stream reported an error");
            return Err(TranslateError::invalid("error", message.to_owned()));
        }
        if self.id.is_none() {
            self.id = Some(completion_id(&event));
        }
        if let Some(usage) = event.get("usageMetadata") {
            self.usage = Some(usage_from_gemini(usage));
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        let candidate = event.get("candidates").and_then(|c| c.get(0));
        let Some(candidate) = candidate else {
            if event.get("promptFeedback").is_some() && !self.finished {
                self.finished = true;
                out.push(self.chunk(json!({}), Some("content_filter")));
            }
            return Ok(out);
        };
        let parts = candidate
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let response = event.get("responseId").and_then(Value::as_str);
        let (text, calls) = read_parts(parts, self.calls, response)?;
        if !text.is_empty() {
            out.push(self.chunk(json!({"content": text}), None));
        }
        if !calls.is_empty() {
            self.calls += calls.len();
            out.push(self.chunk(json!({"tool_calls": calls}), None));
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            if !self.finished {
                self.finished = true;
                let finish = finish_reason(reason, self.calls > 0);
                out.push(self.chunk(json!({}), Some(finish)));
            }
        }
        Ok(out)
    }

    /// The usage chunk that ends the stream, when usage was reported.
    pub fn finish(&self) -> Option<Value> {
        let usage = self.usage?;
        Some(json!({
            "id": self.id.as_deref().unwrap_or("chatcmpl-gemini"),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.to_openai(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_request_becomes_contents_system_config_and_tools() {
        let body = json!({
            "model": "gemini-2.0-flash",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{\"a\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "user", "content": [{"type": "text", "text": "and then?"}]},
            ],
            "max_tokens": 7,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "tools": [{"type": "function", "function": {"name": "get", "description": "d", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
        });
        let out = chat_request_to_gemini(&body).unwrap();
        assert_eq!(
            out["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
        assert!(out["systemInstruction"].get("role").is_none());
        assert_eq!(
            out["contents"],
            json!([
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get", "args": {"a": 1}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get", "response": {"content": "sunny"}}},
                    {"text": "and then?"},
                ]},
            ])
        );
        assert_eq!(
            out["generationConfig"],
            json!({"maxOutputTokens": 7, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]})
        );
        assert_eq!(
            out["tools"],
            json!([{"functionDeclarations": [{"name": "get", "description": "d", "parameters": {"type": "object"}}]}])
        );
        assert_eq!(
            out["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
        assert!(out.get("model").is_none());
    }

    #[test]
    fn requests_gemini_cannot_take_are_refused_naming_the_field() {
        let user = json!([{"role": "user", "content": "hi"}]);
        for (body, field) in [
            (json!({"messages": user, "n": 2}), "n"),
            (json!({"messages": []}), "messages"),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "messages",
            ),
            (
                json!({"messages": [{"role": "bot", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"messages": [{"role": "tool", "tool_call_id": "x", "content": "x"}]}),
                "messages[0].tool_call_id",
            ),
            (json!({"messages": user, "stop": 3}), "stop"),
            (
                json!({"messages": user, "tools": [{"type": "web"}]}),
                "tools[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
        ] {
            let e = chat_request_to_gemini(&body).unwrap_err();
            assert_eq!(e.field(), field, "{body}");
        }
    }

    #[test]
    fn an_answer_becomes_a_chat_completion_with_usage() {
        let answer = json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "tok1 "}, {"text": "tok2"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7, "cachedContentTokenCount": 3},
            "responseId": "r1",
        });
        let (out, usage) = gemini_to_chat_completion(&answer, "public", 9).unwrap();
        assert_eq!(out["id"], "chatcmpl-r1");
        assert_eq!(out["model"], "public");
        assert_eq!(out["created"], 9);
        assert_eq!(
            out["choices"][0]["message"],
            json!({"role": "assistant", "content": "tok1 tok2"})
        );
        assert_eq!(out["choices"][0]["finish_reason"], "length");
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 3}})
        );
        assert_eq!(usage.unwrap().total, 7);
    }

    #[test]
    fn function_calls_become_tool_calls_and_finish_reasons_map() {
        let answer = json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "get", "args": {"a": 1}}}]}, "finishReason": "STOP"}]});
        let (out, usage) = gemini_to_chat_completion(&answer, "m", 0).unwrap();
        assert!(usage.is_none());
        let message = &out["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(message["tool_calls"][0]["id"], "call_0");
        let mut with_id = answer.clone();
        with_id["responseId"] = json!("r7");
        let (out, _) = gemini_to_chat_completion(&with_id, "m", 0).unwrap();
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["id"],
            "call_r7_0"
        );
        assert_eq!(message["tool_calls"][0]["function"]["name"], "get");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        for (reason, openai) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("OTHER", "stop"),
        ] {
            assert_eq!(finish_reason(reason, false), openai);
        }
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        let (out, _) = gemini_to_chat_completion(&blocked, "m", 0).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    }

    #[test]
    fn errors_take_openai_shape() {
        let body = br#"{"error":{"code":403,"message":"bad key","status":"PERMISSION_DENIED"}}"#;
        let out = gemini_error_to_openai(403, body);
        assert_eq!(out["error"]["message"], "bad key");
        assert_eq!(out["error"]["type"], "authentication_error");
        assert_eq!(out["error"]["code"], "permission_denied");
        assert_eq!(
            gemini_error_to_openai(502, b"<html>")["error"]["type"],
            "api_error"
        );
    }

    #[test]
    fn a_stream_becomes_chunks_then_usage() {
        let mut t = StreamTranslator::new("public", 1);
        let first = t
            .feed(br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"tok1 "}]}}],"responseId":"r"}"#)
            .unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first[1]["choices"][0]["delta"]["content"], "tok1 ");
        assert_eq!(first[1]["id"], "chatcmpl-r");
        assert!(t.finish().is_none());
        let last = t
            .feed(br#"{"candidates":[{"content":{"parts":[{"text":"tok2"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5}}"#)
            .unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last[1]["choices"][0]["finish_reason"], "stop");
        assert!(t.is_finished());
        let usage = t.finish().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 5);
        assert!(t.feed(br#"{"error":{"message":"boom"}}"#).is_err());
        assert!(t.feed(b"not json").is_err());
    }

    #[test]
    fn streamed_function_calls_are_numbered_across_events() {
        let mut t = StreamTranslator::new("m", 0);
        let a = t
            .feed(br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"a","args":{}}}]}}]}"#)
            .unwrap();
        let b = t
            .feed(br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"b","args":{}}}]},"finishReason":"STOP"}]}"#)
            .unwrap();
        assert_eq!(a[1]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(b[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(b[1]["choices"][0]["finish_reason"], "tool_calls");
    }
}
