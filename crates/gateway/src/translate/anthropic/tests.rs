//! Round trips through both directions: what an Anthropic client sends reaches
//! an Anthropic target unchanged, and streams keep their text and tool calls.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

#[test]
fn an_anthropic_request_survives_the_trip_through_openai() {
    let original = json!({
        "model": "claude-target",
        "system": "use tools",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "weather in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "text", "text": "and tomorrow?"},
            ]},
        ],
        "max_tokens": 300,
        "temperature": 0.3,
        "stop_sequences": ["END"],
        "stream": true,
        "metadata": {"user_id": "u-1"},
        "tools": [{"name": "weather", "description": "a city's weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": true},
    });

    let chat = messages_request_to_chat(&original, "gpt-middle").unwrap();
    let back = chat_request_to_messages(&chat, "claude-target", 1).unwrap();

    assert_eq!(back, original);
}

#[test]
fn an_openai_answer_survives_the_trip_through_anthropic() {
    let original = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 5,
        "model": "m",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Calling.", "refusal": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":[1,2]}"}},
            ]},
            "logprobs": null,
            "finish_reason": "tool_calls",
        }],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37,
                  "prompt_tokens_details": {"cached_tokens": 10}},
    });

    let (message, usage) = chat_completion_to_message(&original, "claude").unwrap();
    let (back, usage_back) = message_to_chat_completion(&message, "m", 5).unwrap();

    assert_eq!(usage, usage_back);
    assert_eq!(back["choices"], original["choices"]);
    assert_eq!(back["usage"], original["usage"]);
}

/// What a client reads from an OpenAI chunk stream.
#[derive(Debug, Default, PartialEq)]
struct Read {
    content: String,
    /// Each tool call's id, name and joined arguments, by call index.
    calls: Vec<(String, String, String)>,
    finish: Option<String>,
}

fn read(chunks: &[Value]) -> Read {
    let mut read = Read::default();
    for chunk in chunks {
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(text) = choice["delta"]["content"].as_str() {
            read.content.push_str(text);
        }
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if read.calls.len() <= index {
                read.calls.resize(index + 1, Default::default());
            }
            let entry = &mut read.calls[index];
            if let Some(id) = call["id"].as_str() {
                entry.0 = id.to_owned();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                entry.1 = name.to_owned();
            }
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                entry.2.push_str(arguments);
            }
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            read.finish = Some(finish.to_owned());
        }
    }
    read
}

/// An OpenAI stream of text pieces, then tool calls in argument fragments.
fn openai_stream(text: &[String], calls: &[Vec<String>], finish: &str) -> Vec<Value> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in text {
        chunks.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (index, fragments) in calls.iter().enumerate() {
        chunks.push(chunk(
            json!({"tool_calls": [{"index": index, "id": format!("call_{index}"), "type": "function",
                                   "function": {"name": format!("f{index}"), "arguments": ""}}]}),
            Value::Null,
        ));
        for fragment in fragments {
            chunks.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                Value::Null,
            ));
        }
    }
    chunks.push(chunk(json!({}), json!(finish)));
    chunks.push(
        json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}}),
    );
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// OpenAI chunks to Anthropic events and back read the same: the text,
    /// each call's id, name and arguments (as long as a call has any), the
    /// finish reason and the usage.
    #[test]
    fn a_stream_survives_the_trip_through_anthropic_events(
        text in prop::collection::vec(".{1,8}", 0..6),
        calls in prop::collection::vec(prop::collection::vec(".{1,6}", 1..4), 0..3),
        finish in prop::sample::select(vec!["stop", "length", "tool_calls", "content_filter"]),
    ) {
        let original = openai_stream(&text, &calls, finish);
        let mut to_anthropic = EventTranslator::new("claude");
        let mut events = Vec::new();
        for chunk in &original {
            events.extend(to_anthropic.feed(chunk.to_string().as_bytes()).unwrap());
        }
        events.extend(to_anthropic.feed(b"[DONE]").unwrap());

        let mut to_openai = ChunkTranslator::new("m", 1, true);
        let mut back = Vec::new();
        for (name, data) in &events {
            back.extend(to_openai.feed(name, data.to_string().as_bytes()).unwrap());
        }

        prop_assert!(to_openai.is_done());
        prop_assert_eq!(read(&back), read(&original));
        prop_assert_eq!(&back.last().unwrap()["usage"]["prompt_tokens"], &json!(4));
        prop_assert_eq!(&back.last().unwrap()["usage"]["completion_tokens"], &json!(2));
    }
}
