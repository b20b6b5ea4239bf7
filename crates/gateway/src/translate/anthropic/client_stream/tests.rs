//! Tests of the OpenAI chunk stream to Anthropic events translation.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn chunk(delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

/// A stream as OpenAI sends it: role, text, two tool calls in fragments, the
/// finish reason, the usage chunk and `[DONE]`.
fn recorded() -> Vec<Vec<u8>> {
    let chunks = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Let me "}), Value::Null),
        chunk(json!({"content": "check."}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
            "function": {"name": "weather", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
            "function": {"name": "time", "arguments": "{}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
                         "prompt_tokens_details": {"cached_tokens": 5}}}),
    ];
    let mut lines: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_string().into_bytes()).collect();
    lines.push(b"[DONE]".to_vec());
    lines
}

fn run(translator: &mut EventTranslator, lines: &[Vec<u8>]) -> Vec<Event> {
    lines
        .iter()
        .flat_map(|line| translator.feed(line).unwrap())
        .collect()
}

#[test]
fn a_recorded_stream_becomes_anthropic_events_in_order() {
    let mut translator = EventTranslator::new("claude-alias");
    let events = run(&mut translator, &recorded());
    let names: Vec<&str> = events.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], *name);
    }
    let start = &events[0].1["message"];
    assert_eq!(start["id"], "msg_chatcmpl-9");
    assert_eq!(start["model"], "claude-alias");
    assert_eq!(start["content"], json!([]));

    let text: String = events
        .iter()
        .filter(|(_, d)| d["index"] == 0)
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Let me check.");
    assert_eq!(
        events[5].1["content_block"],
        json!({"type": "tool_use", "id": "call_a", "name": "weather", "input": {}})
    );
    let input: String = events
        .iter()
        .filter(|(_, d)| d["index"] == 1)
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(events[9].1["content_block"]["id"], "call_b");
    assert_eq!(events[9].1["index"], 2);

    let delta = &events[12].1;
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "tool_use", "stop_sequence": null})
    );
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 15, "output_tokens": 9,
               "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0})
    );
    assert!(translator.is_done());
    assert_eq!(translator.usage().prompt_tokens(), 20);
    assert!(translator.finish().is_empty());
}

#[test]
fn a_stream_cut_before_done_still_ends_well_formed() {
    let mut translator = EventTranslator::new("m");
    let mut events = run(&mut translator, &recorded()[..3]);
    events.extend(translator.finish());
    let names: Vec<&str> = events.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[5].1["delta"]["stop_reason"], "end_turn");
}

#[test]
fn an_empty_stream_is_an_empty_message() {
    let mut translator = EventTranslator::new("m");
    let names: Vec<&str> = translator
        .feed(b" [DONE] ")
        .unwrap()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
}

#[test]
fn a_length_finish_is_max_tokens() {
    let mut translator = EventTranslator::new("m");
    let events = run(
        &mut translator,
        &[
            chunk(json!({"content": "cut"}), json!("length"))
                .to_string()
                .into_bytes(),
            b"[DONE]".to_vec(),
        ],
    );
    let delta = events.iter().find(|(n, _)| *n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "max_tokens");
}

#[test]
fn an_error_chunk_becomes_an_error_event_and_ends_the_stream() {
    let mut translator = EventTranslator::new("m");
    run(&mut translator, &recorded()[..2]);
    let events = translator
        .feed(br#"{"error":{"message":"upstream broke","type":"server_error"}}"#)
        .unwrap();
    assert_eq!(
        events,
        [(
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": "upstream broke"}})
        )]
    );
    assert!(translator.is_done());
    assert!(translator.finish().is_empty());
}

#[test]
fn data_that_is_not_a_json_object_is_an_error() {
    let mut translator = EventTranslator::new("m");
    for data in [&b"{"[..], b"[1]", b""] {
        assert!(matches!(
            translator.feed(data),
            Err(StreamError::Malformed {
                event: "chat.completion.chunk",
                ..
            })
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_translator_never_panics_and_always_ends_with_message_stop(
        lines in prop::collection::vec(
            prop_oneof![
                prop::sample::select(recorded()),
                (".*", 0u64..3, any::<bool>()).prop_map(|(text, index, finish)| {
                    let delta = if index == 0 {
                        json!({"content": text})
                    } else {
                        json!({"tool_calls": [{"index": index, "function": {"arguments": text}}]})
                    };
                    chunk(delta, if finish { json!("stop") } else { Value::Null })
                        .to_string()
                        .into_bytes()
                }),
                prop::collection::vec(any::<u8>(), 0..30),
            ],
            0..30,
        ),
    ) {
        let mut translator = EventTranslator::new("m");
        let mut events = Vec::new();
        for line in &lines {
            if let Ok(more) = translator.feed(line) {
                events.extend(more);
            }
        }
        events.extend(translator.finish());
        let last = events.last().map(|(name, _)| *name);
        prop_assert!(last == Some("message_stop") || last == Some("error"));
        let message_starts = events.iter().filter(|(n, _)| *n == "message_start").count();
        prop_assert!(message_starts <= 1);
        if last == Some("message_stop") {
            prop_assert_eq!(message_starts, 1);
        }
        let starts = events.iter().filter(|(n, _)| *n == "content_block_start").count();
        let stops = events.iter().filter(|(n, _)| *n == "content_block_stop").count();
        if last == Some("message_stop") {
            prop_assert_eq!(starts, stops);
        }
    }
}
