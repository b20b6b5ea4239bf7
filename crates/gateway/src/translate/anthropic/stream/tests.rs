//! Tests of the Anthropic stream to OpenAI chunks translation.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// A stream as Anthropic sends it: thinking, text, then a tool call whose
/// input arrives as partial JSON, with cache tokens in the usage.
fn recorded() -> Vec<(&'static str, Value)> {
    vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": "msg_01abc", "type": "message", "role": "assistant", "content": [],
                "model": "claude-sonnet", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 25, "output_tokens": 1,
                          "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 50},
            }}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Let me see."}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "text_delta", "text": "I'll check "}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "text_delta", "text": "the weather."}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{\"location\": \"San Fra"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "ncisco, CA\", \"unit\": \"c"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "elsius\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"output_tokens": 89}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]
}

fn run(translator: &mut ChunkTranslator, events: &[(&str, Value)]) -> Vec<Value> {
    events
        .iter()
        .flat_map(|(name, data)| translator.feed(name, data.to_string().as_bytes()).unwrap())
        .collect()
}

#[test]
fn a_recorded_stream_reconstructs_the_content_and_the_arguments() {
    let mut translator = ChunkTranslator::new("alias", 1_700_000_000, true);
    let chunks = run(&mut translator, &recorded());
    assert!(translator.is_done());

    for chunk in &chunks {
        assert_eq!(chunk["id"], "msg_01abc");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["created"], 1_700_000_000);
        assert_eq!(chunk["model"], "alias");
    }
    let (usage_chunk, chunks) = chunks.split_last().unwrap();
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    let content: String = deltas
        .iter()
        .filter_map(|d| d["content"].as_str())
        .collect();
    assert_eq!(content, "I'll check the weather.");
    let calls: Vec<&Value> = deltas
        .iter()
        .filter_map(|d| d["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls[0]["id"], "toolu_01");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls.iter().all(|c| c["index"] == 0));
    let arguments: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );

    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("tool_calls")]);
    assert!(chunks.iter().all(|c| c["usage"].is_null()));
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({
            "prompt_tokens": 1075,
            "completion_tokens": 89,
            "total_tokens": 1164,
            "prompt_tokens_details": {"cached_tokens": 1000},
        })
    );
    assert_eq!(
        translator.usage(),
        Usage {
            input: 25,
            output: 89,
            cache_read: 1000,
            cache_write: 50
        }
    );
}

#[test]
fn without_include_usage_there_is_no_usage_chunk_but_the_usage_is_kept() {
    let mut translator = ChunkTranslator::new("m", 0, false);
    let chunks = run(&mut translator, &recorded());
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    assert_eq!(translator.usage().output, 89);
}

#[test]
fn several_tool_calls_get_consecutive_indexes_and_empty_inputs_read_as_an_object() {
    let mut translator = ChunkTranslator::new("m", 0, false);
    let chunks = run(
        &mut translator,
        &[
            (
                "message_start",
                json!({"message": {"id": "msg_2", "usage": {"input_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"index": 0, "content_block": {"type": "tool_use", "id": "a", "name": "now", "input": {}}}),
            ),
            ("content_block_stop", json!({"index": 0})),
            (
                "content_block_start",
                json!({"index": 1, "content_block": {"type": "tool_use", "id": "b", "name": "echo", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"x\":1}"}}),
            ),
            ("content_block_stop", json!({"index": 1})),
        ],
    );
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    let arguments = |index: u64| -> String {
        calls
            .iter()
            .filter(|c| c["index"] == index)
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect()
    };
    assert_eq!(arguments(0), "{}");
    assert_eq!(arguments(1), "{\"x\":1}");
    assert!(!translator.is_done());
}

#[test]
fn message_delta_maps_the_stop_reason_and_message_stop_without_one_says_stop() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ] {
        let mut translator = ChunkTranslator::new("m", 0, false);
        let chunks = run(
            &mut translator,
            &[
                ("message_start", json!({"message": {"id": "x"}})),
                (
                    "message_delta",
                    json!({"delta": {"stop_reason": stop}, "usage": {"output_tokens": 3}}),
                ),
                ("message_stop", json!({})),
            ],
        );
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], finish);
    }
    let mut translator = ChunkTranslator::new("m", 0, false);
    let chunks = run(
        &mut translator,
        &[
            ("message_start", json!({"message": {"id": "x"}})),
            ("message_stop", json!({})),
        ],
    );
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn event_names_may_come_from_the_data_type() {
    let mut translator = ChunkTranslator::new("m", 0, false);
    let chunks = translator
        .feed("", br#"{"type":"message_start","message":{"id":"msg_3"}}"#)
        .unwrap();
    assert_eq!(chunks[0]["id"], "msg_3");
}

#[test]
fn an_error_event_is_surfaced_and_ends_the_stream() {
    let mut translator = ChunkTranslator::new("m", 0, true);
    run(&mut translator, &recorded()[..3]);
    let err = translator
        .feed(
            "error",
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
    assert_eq!(
        err,
        StreamError::Upstream {
            kind: "overloaded_error".into(),
            message: "Overloaded".into()
        }
    );
    assert_eq!(err.to_openai()["error"]["type"], "overloaded_error");
    assert!(translator.is_done());
    assert_eq!(
        translator.feed("message_stop", b"{}").unwrap(),
        Vec::<Value>::new()
    );
}

#[test]
fn pings_unknown_events_and_unknown_deltas_are_skipped() {
    let mut translator = ChunkTranslator::new("m", 0, false);
    assert!(translator
        .feed("ping", b"not even json")
        .unwrap()
        .is_empty());
    assert!(translator.feed("future_event", b"{}").unwrap().is_empty());
    run(&mut translator, &recorded()[..1]);
    run(
        &mut translator,
        &[(
            "content_block_start",
            json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
        )],
    );
    let chunks = translator
        .feed(
            "content_block_delta",
            br#"{"index":0,"delta":{"type":"citations_delta","citation":{}}}"#,
        )
        .unwrap();
    assert!(chunks.is_empty());
}

#[test]
fn malformed_events_are_errors_naming_the_event() {
    let started = &recorded()[..1];
    let cases: [(&str, &[u8], &str); 8] = [
        ("message_start", b"{", "message_start"),
        ("message_start", b"{\"message\":5}", "message_start"),
        (
            "content_block_start",
            b"{\"content_block\":{\"type\":\"text\"}}",
            "content_block_start",
        ),
        (
            "content_block_start",
            b"{\"index\":0,\"content_block\":{\"type\":\"tool_use\"}}",
            "content_block_start",
        ),
        (
            "content_block_delta",
            b"{\"index\":7,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}",
            "content_block_delta",
        ),
        (
            "content_block_delta",
            b"{\"delta\":{}}",
            "content_block_delta",
        ),
        ("message_delta", b"[1]", "message_delta"),
        ("error", b"oops", "error"),
    ];
    for (name, data, event) in cases {
        let mut translator = ChunkTranslator::new("m", 0, false);
        run(&mut translator, started);
        match translator.feed(name, data) {
            Err(StreamError::Malformed { event: got, .. }) => assert_eq!(got, event),
            other => panic!("{name} {:?}: {other:?}", String::from_utf8_lossy(data)),
        }
    }
    // A delta that does not fit its block.
    let mut translator = ChunkTranslator::new("m", 0, false);
    run(&mut translator, &recorded()[..1]);
    run(
        &mut translator,
        &[(
            "content_block_start",
            json!({"index": 0, "content_block": {"type": "text", "text": ""}}),
        )],
    );
    let err = translator
        .feed(
            "content_block_delta",
            br#"{"index":0,"delta":{"type":"input_json_delta","partial_json":"{"}}"#,
        )
        .unwrap_err();
    assert!(matches!(err, StreamError::Malformed { .. }));
    assert_eq!(err.to_openai()["error"]["code"], "upstream_failed");
}

/// An event of the stream's vocabulary with data from a small alphabet of
/// shapes, so that sequences reach deep states, or arbitrary bytes.
fn event() -> impl Strategy<Value = (String, Vec<u8>)> {
    let names = prop::sample::select(vec![
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
        "",
        "other",
    ]);
    let index = 0u64..4;
    let data = prop_oneof![
        Just(json!({"message": {"id": "m", "usage": {"input_tokens": 3, "cache_read_input_tokens": -1}}})),
        index.clone().prop_map(|i| json!({"index": i, "content_block": {"type": "text", "text": "a"}})),
        index.clone().prop_map(|i| json!({"index": i, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}})),
        index.clone().prop_map(|i| json!({"index": i, "content_block": {"type": "thinking"}})),
        (index.clone(), ".*").prop_map(|(i, t)| json!({"index": i, "delta": {"type": "text_delta", "text": t}})),
        (index.clone(), ".*").prop_map(|(i, t)| json!({"index": i, "delta": {"type": "input_json_delta", "partial_json": t}})),
        index.prop_map(|i| json!({"index": i})),
        Just(json!({"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 18_446_744_073_709_551_615u64}})),
        Just(json!({"error": {"type": "x"}})),
        any::<i64>().prop_map(|n| json!({"index": n, "delta": null, "usage": n})),
    ]
    .prop_map(|v| v.to_string().into_bytes());
    let bytes = prop::collection::vec(any::<u8>(), 0..40);
    (
        names.prop_map(str::to_owned),
        prop_oneof![4 => data, 1 => bytes],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn the_translator_never_panics_and_keeps_one_id(
        events in prop::collection::vec(event(), 0..40),
        include_usage in any::<bool>(),
    ) {
        let mut translator = ChunkTranslator::new("m", 7, include_usage);
        let mut ids = std::collections::BTreeSet::new();
        for (name, data) in &events {
            if let Ok(chunks) = translator.feed(name, data) {
                for chunk in chunks {
                    prop_assert_eq!(&chunk["created"], &json!(7));
                    ids.insert(chunk["id"].to_string());
                }
            }
        }
        prop_assert!(ids.len() <= 1);
        let _ = translator.usage().prompt_tokens();
    }
}
