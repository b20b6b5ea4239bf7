//! Fuzzes the Anthropic translation layer (`obleth_gateway::translate::anthropic`):
//! the two stream translators, which read an upstream's events one at a time,
//! and the four body translations.
//!
//! The input is read as server-sent events, a line at a time: `event: NAME`
//! names the next event, each `data: …` line is one event with that name
//! (then none), and other lines are skipped. Every event goes to a
//! `ChunkTranslator` (Anthropic events to OpenAI chunks) and its data to an
//! `EventTranslator` (OpenAI chunks to Anthropic events). The whole input and
//! each event's data, when they are JSON, go through the four body
//! translations.
//!
//! Checks: no panic; every chunk is a `chat.completion.chunk` object with the
//! translator's model and creation time and one id, at most one choice and at
//! most one finish reason a stream, tool calls numbered from 0; with
//! `include_usage` the same chunks plus `"usage": null` and a last usage
//! chunk; an error is `Upstream` only for an `error` event, and the stream is
//! done after `message_stop` or an `error` event, then ignores what follows.
//! Every event is a JSON object whose `type` is its name, in Anthropic's
//! order (`message_start`, blocks numbered from 0 that open, stream deltas of
//! their own kind and close one at a time, `message_delta`, `message_stop`),
//! or an `error` that ends it; data that is neither JSON nor `[DONE]` is the
//! only error. Each translator's output fed to the other is accepted: the
//! chunks are never refused, and the events are never malformed and carry
//! the usage through. A translated body has its protocol's shape (roles that
//! alternate for Anthropic, the caller's model, a positive `max_tokens`); a
//! message made from a completion translates back with the same usage; a
//! refusal names its field by a JSON path of the gateway's own field names.

#![no_main]

use libfuzzer_sys::fuzz_target;
use obleth_gateway::translate::anthropic::{
    chat_completion_to_message, chat_request_to_messages, message_to_chat_completion,
    messages_request_to_chat, usage_from_anthropic, ChunkTranslator, EventTranslator, StreamError,
};
use obleth_gateway::translate::TranslateError;
use serde_json::Value;

const MODEL: &str = "fuzz-model";
const CREATED: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let events = events(data);
    chunk_stream(&events);
    event_stream(&events);
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        bodies(&value);
    }
    for (_, payload) in &events {
        if let Ok(value) = serde_json::from_slice::<Value>(payload) {
            bodies(&value);
        }
    }
});

/// The (event name, data) pairs of the input, read as described at the top.
fn events(data: &[u8]) -> Vec<(String, &[u8])> {
    let mut events = Vec::new();
    let mut name = String::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"event:") {
            name = String::from_utf8_lossy(rest.trim_ascii()).into_owned();
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            events.push((std::mem::take(&mut name), rest));
        }
    }
    events
}

/// Anthropic events to OpenAI chunks, with and without `include_usage`, and
/// the chunks back to Anthropic events.
fn chunk_stream(events: &[(String, &[u8])]) {
    let mut with_usage = ChunkTranslator::new(MODEL, CREATED, true);
    let mut without = ChunkTranslator::new(MODEL, CREATED, false);
    let mut stream = ChunkStream::default();
    let mut back = EventTranslator::new(MODEL);
    let mut grammar = Grammar::default();
    for (name, data) in events {
        let was_done = with_usage.is_done();
        let result = with_usage.feed(name, data);
        let plain = without.feed(name, data);
        assert_eq!(with_usage.is_done(), without.is_done());
        assert_eq!(with_usage.usage(), without.usage());
        if was_done {
            assert_eq!(result, Ok(Vec::new()), "a done translator ignores events");
            assert_eq!(plain, Ok(Vec::new()), "a done translator ignores events");
            continue;
        }
        let chunks = match (result, plain) {
            (Ok(chunks), Ok(plain)) => {
                assert_eq!(
                    without_usage(&chunks),
                    plain,
                    "include_usage adds only usage"
                );
                chunks
            }
            (Err(err), Err(plain)) => {
                assert_eq!(err, plain);
                check_stream_error(&err, name, data, with_usage.is_done());
                continue;
            }
            (result, plain) => panic!("include_usage changed the outcome: {result:?} {plain:?}"),
        };
        for (k, chunk) in chunks.iter().enumerate() {
            let usage_chunk = stream.check(chunk);
            if usage_chunk {
                // The usage chunk ends the stream.
                assert_eq!(k + 1, chunks.len());
                assert!(with_usage.is_done());
                assert_eq!(chunk["usage"], with_usage.usage().to_openai());
            }
            let data = serde_json::to_vec(chunk).expect("a chunk serializes");
            let translated = back.feed(&data).expect("a chunk is a JSON object");
            for (name, data) in &translated {
                grammar.event(name, data);
            }
        }
    }
    for (name, data) in back.finish() {
        grammar.event(name, &data);
    }
    assert!(back.is_done() && grammar.ended);
}

/// The chunks without `"usage"` fields and without the usage chunk.
fn without_usage(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .filter(|c| c["choices"].as_array().is_some_and(|c| !c.is_empty()))
        .map(|c| {
            let mut c = c.clone();
            c.as_object_mut()
                .expect("a chunk is an object")
                .remove("usage");
            c
        })
        .collect()
}

fn check_stream_error(err: &StreamError, name: &str, data: &[u8], done: bool) {
    let effective = if name.is_empty() {
        serde_json::from_slice::<Value>(data)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default()
    } else {
        name.to_owned()
    };
    match err {
        StreamError::Upstream { .. } => {
            assert_eq!(
                effective, "error",
                "only an error event is an upstream error"
            );
            assert!(done, "an error event ends the stream");
        }
        StreamError::Malformed { event, .. } => {
            assert_eq!(*event, effective, "a malformed event is named");
            assert_eq!(
                done,
                *event == "error",
                "only a broken error event ends the stream"
            );
        }
    }
    let body = err.to_openai();
    assert!(body["error"]["message"].is_string() && body["error"]["code"].is_string());
}

/// What one OpenAI chunk stream has shown so far.
#[derive(Default)]
struct ChunkStream {
    id: Option<String>,
    finishes: usize,
    tool_calls: u64,
}

impl ChunkStream {
    /// Checks one chunk (of a translator with `include_usage`); answers
    /// whether it is the usage chunk.
    fn check(&mut self, chunk: &Value) -> bool {
        let object = chunk.as_object().expect("a chunk is a JSON object");
        assert_eq!(object["object"], "chat.completion.chunk");
        assert_eq!(object["model"], MODEL);
        assert_eq!(object["created"], CREATED);
        let id = object["id"].as_str().expect("a chunk's id is a string");
        assert_eq!(
            self.id.get_or_insert_with(|| id.to_owned()),
            id,
            "one id a stream"
        );
        let choices = object["choices"].as_array().expect("choices is an array");
        let Some(choice) = choices.first() else {
            assert!(
                object["usage"].is_object(),
                "the usage chunk carries the usage"
            );
            return true;
        };
        assert_eq!(choices.len(), 1);
        assert!(object["usage"].is_null() && object.contains_key("usage"));
        assert_eq!(choice["index"], 0);
        assert!(choice["delta"].is_object());
        match &choice["finish_reason"] {
            Value::Null => {}
            Value::String(reason) => {
                assert!(["stop", "length", "tool_calls", "content_filter"].contains(&&**reason));
                self.finishes += 1;
                assert_eq!(self.finishes, 1, "one finish reason a stream");
            }
            other => panic!("finish_reason {other}"),
        }
        if let Some(calls) = choice["delta"]["tool_calls"].as_array() {
            for call in calls.iter().filter(|c| c.get("id").is_some()) {
                assert_eq!(
                    call["index"], self.tool_calls,
                    "tool calls numbered in order"
                );
                assert!(call["function"]["name"].is_string());
                self.tool_calls += 1;
            }
        }
        false
    }
}

/// OpenAI chunks to Anthropic events, and the events back to chunks.
fn event_stream(events: &[(String, &[u8])]) {
    let mut translator = EventTranslator::new(MODEL);
    let mut grammar = Grammar::default();
    let mut again = ChunkTranslator::new(MODEL, CREATED, true);
    let mut forward = |name: &str, data: &Value, grammar: &mut Grammar| {
        grammar.event(name, data);
        let bytes = serde_json::to_vec(data).expect("an event serializes");
        match again.feed(name, &bytes) {
            Ok(chunks) => {
                for chunk in &chunks {
                    assert!(chunk.is_object());
                }
            }
            Err(StreamError::Upstream { .. }) if name == "error" => {}
            Err(err) => panic!("a translated event is refused: {err} ({name} {data})"),
        }
    };
    for (_, data) in events {
        let was_done = translator.is_done();
        let result = translator.feed(data);
        if was_done {
            assert_eq!(result, Ok(Vec::new()), "a done translator ignores chunks");
            continue;
        }
        let is_chunk = data.trim_ascii() == b"[DONE]"
            || serde_json::from_slice::<Value>(data).is_ok_and(|v| v.is_object());
        match result {
            Ok(translated) => {
                assert!(is_chunk, "data that is not a JSON object is refused");
                for (name, data) in &translated {
                    forward(name, data, &mut grammar);
                }
            }
            Err(err) => {
                assert!(!is_chunk, "a JSON object is not refused: {err}");
                let _ = err.to_openai();
            }
        }
        assert_eq!(translator.is_done(), grammar.ended);
    }
    let ended_by_error = grammar.error;
    for (name, data) in translator.finish() {
        forward(name, &data, &mut grammar);
    }
    assert!(translator.is_done() && grammar.ended);
    assert!(
        translator.finish().is_empty(),
        "finish ends the stream once"
    );
    assert!(again.is_done());
    if !ended_by_error {
        assert_eq!(
            again.usage(),
            translator.usage(),
            "the usage survives the round trip"
        );
    }
}

/// Anthropic's event order, checked one event at a time.
#[derive(Default)]
struct Grammar {
    started: bool,
    /// The open block's index and type.
    open: Option<(u64, String)>,
    blocks: u64,
    delta: bool,
    ended: bool,
    error: bool,
}

impl Grammar {
    fn event(&mut self, name: &str, data: &Value) {
        assert!(!self.ended, "{name} after the stream ended");
        let object = data.as_object().expect("an event's data is a JSON object");
        assert_eq!(object["type"], name, "an event's type is its name");
        if name == "error" {
            assert!(data["error"]["type"].is_string() && data["error"]["message"].is_string());
            self.ended = true;
            self.error = true;
            return;
        }
        assert_eq!(
            name == "message_start",
            !self.started,
            "message_start comes once, first"
        );
        assert!(
            !self.delta || name == "message_stop",
            "{name} after message_delta"
        );
        match name {
            "message_start" => {
                self.started = true;
                assert_eq!(data["message"]["model"], MODEL);
                assert!(data["message"]["id"].is_string());
            }
            "content_block_start" => {
                assert!(self.open.is_none(), "a block opens while one is open");
                assert_eq!(data["index"], self.blocks, "blocks numbered in order");
                let kind = data["content_block"]["type"].as_str().unwrap_or_default();
                assert!(kind == "text" || kind == "tool_use", "block type {kind}");
                self.open = Some((self.blocks, kind.to_owned()));
                self.blocks += 1;
            }
            "content_block_delta" => {
                let (index, kind) = self.open.as_ref().expect("a delta with no open block");
                assert_eq!(data["index"], *index, "a delta for another block");
                let delta = &data["delta"];
                let field = if kind == "text" {
                    assert_eq!(delta["type"], "text_delta");
                    "text"
                } else {
                    assert_eq!(delta["type"], "input_json_delta");
                    "partial_json"
                };
                assert!(delta[field].as_str().is_some_and(|s| !s.is_empty()));
            }
            "content_block_stop" => {
                let (index, _) = self.open.take().expect("a stop with no open block");
                assert_eq!(data["index"], index, "a stop for another block");
            }
            "message_delta" => {
                assert!(self.open.is_none(), "message_delta with a block open");
                assert!(data["delta"]["stop_reason"].is_string());
                assert!(data["usage"].is_object());
                self.delta = true;
            }
            "message_stop" => {
                assert!(self.delta, "message_stop without message_delta");
                self.ended = true;
            }
            other => panic!("unknown event {other}"),
        }
    }
}

/// The four body translations of one JSON value.
fn bodies(value: &Value) {
    match message_to_chat_completion(value, MODEL, CREATED) {
        Ok((completion, usage)) => {
            assert_eq!(completion["object"], "chat.completion");
            assert_eq!(completion["model"], MODEL);
            assert_eq!(completion["created"], CREATED);
            assert_eq!(completion["choices"].as_array().map(Vec::len), Some(1));
            assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
            assert_eq!(usage, usage_from_anthropic(&value["usage"]));
            assert_eq!(completion["usage"], usage.to_openai());
            // A tool input that is not an object has no way back; only the
            // absence of a panic is checked.
            let _ = chat_completion_to_message(&completion, MODEL);
        }
        Err(err) => check_error(&err),
    }
    match chat_completion_to_message(value, MODEL) {
        Ok((message, usage)) => {
            assert_eq!(message["type"], "message");
            assert_eq!(message["role"], "assistant");
            assert_eq!(message["model"], MODEL);
            assert!(message["stop_reason"].is_string());
            for block in message["content"].as_array().expect("content is an array") {
                match block["type"].as_str() {
                    Some("text") => assert!(block["text"].as_str().is_some_and(|t| !t.is_empty())),
                    Some("tool_use") => {
                        assert!(block["id"].is_string() && block["name"].is_string());
                        assert!(block["input"].is_object());
                    }
                    _ => panic!("block {block}"),
                }
            }
            // The gateway's own message reads back whole, usage and all.
            let (_, back) = message_to_chat_completion(&message, MODEL, CREATED)
                .expect("a translated message translates back");
            assert_eq!(back, usage);
        }
        Err(err) => check_error(&err),
    }
    match chat_request_to_messages(value, MODEL, 1024) {
        Ok(request) => {
            assert_eq!(request["model"], MODEL);
            assert!(request["max_tokens"].as_u64().is_some_and(|n| n > 0));
            let turns = request["messages"]
                .as_array()
                .expect("messages is an array");
            assert!(!turns.is_empty());
            for (k, turn) in turns.iter().enumerate() {
                let role = turn["role"].as_str().expect("a role");
                assert!(role == "user" || role == "assistant");
                if k > 0 {
                    assert_ne!(turns[k - 1]["role"], role, "roles alternate");
                }
                assert!(turn["content"].as_array().is_some_and(|c| !c.is_empty()));
            }
            let _ = messages_request_to_chat(&request, MODEL);
        }
        Err(err) => check_error(&err),
    }
    match messages_request_to_chat(value, MODEL) {
        Ok(request) => {
            assert_eq!(request["model"], MODEL);
            assert_eq!(request["max_tokens"], value["max_tokens"]);
            assert!(request["max_tokens"].as_u64().is_some_and(|n| n > 0));
            for message in request["messages"]
                .as_array()
                .expect("messages is an array")
            {
                let role = message["role"].as_str().unwrap_or_default();
                assert!(
                    ["system", "user", "assistant", "tool"].contains(&role),
                    "role {role}"
                );
            }
            if value["stream"] == true {
                assert_eq!(request["stream_options"]["include_usage"], true);
            }
            let _ = chat_request_to_messages(&request, MODEL, 1024);
        }
        Err(err) => check_error(&err),
    }
}

/// A refusal names its field by a JSON path made of lower-case names and
/// indices (`messages[2].tool_calls[0].function.arguments`) and leads with
/// it.
fn check_error(err: &TranslateError) {
    let field = err.field();
    let path = field.split('.').all(|segment| {
        let (name, mut indices) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        let mut ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        while ok && !indices.is_empty() {
            let inner = indices.strip_prefix('[').unwrap_or_default();
            let end = inner.find(']').unwrap_or(0);
            ok = end > 0 && inner[..end].bytes().all(|b| b.is_ascii_digit());
            indices = inner.get(end + 1..).unwrap_or_default();
        }
        ok
    });
    assert!(
        path,
        "a field that is not a path of the gateway's names: {field:?}"
    );
    assert!(
        err.to_string().starts_with(&format!("`{field}` is")),
        "{err}"
    );
}
