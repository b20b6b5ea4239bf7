//! Tests of the OpenAI request to Anthropic request translation.

use serde_json::{json, Value};

use super::*;

fn translate(body: Value) -> Value {
    chat_request_to_messages(&body, "claude-test", 1024).unwrap()
}

fn refused(body: Value) -> TranslateError {
    chat_request_to_messages(&body, "claude-test", 1024).unwrap_err()
}

#[test]
fn a_simple_chat_becomes_a_messages_request_with_the_default_limit() {
    let out = translate(json!({
        "model": "alias",
        "messages": [{"role": "user", "content": "hello"}],
    }));
    assert_eq!(
        out,
        json!({
            "model": "claude-test",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
            "max_tokens": 1024,
        })
    );
}

#[test]
fn system_and_developer_messages_become_the_top_level_system() {
    let one = translate(json!({"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]}));
    assert_eq!(one["system"], "be brief");

    let several = translate(json!({"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "be kind"}]},
        {"role": "user", "content": "again"},
    ]}));
    assert_eq!(
        several["system"],
        json!([{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}])
    );
    // The two user turns around the hoisted system message merge into one.
    assert_eq!(
        several["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "text", "text": "again"},
        ]}])
    );
}

#[test]
fn sampling_stop_stream_and_user_carry_over() {
    let out = translate(json!({
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "u-1",
        "seed": 7,
        "n": 1,
        "presence_penalty": 0,
        "logprobs": false,
        "top_logprobs": 0,
        "logit_bias": {},
    }));
    assert_eq!(out["max_tokens"], 50);
    assert_eq!(out["temperature"], 0.5);
    assert_eq!(out["top_p"], 0.9);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["stream"], true);
    assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
    for dropped in [
        "stream_options",
        "seed",
        "n",
        "presence_penalty",
        "user",
        "stop",
    ] {
        assert!(out.get(dropped).is_none(), "{dropped} is not Anthropic's");
    }
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let out = translate(json!({
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "max_completion_tokens": 70,
        "stop": ["a", "b"],
        "metadata": {"user": "u-2"},
    }));
    assert_eq!(out["max_tokens"], 70);
    assert_eq!(out["stop_sequences"], json!(["a", "b"]));
    assert_eq!(out["metadata"], json!({"user_id": "u-2"}));
}

#[test]
fn image_parts_become_base64_or_url_sources() {
    let out = translate(json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ])
    );
}

#[test]
fn a_multi_turn_tool_conversation_alternates_with_tool_results_in_user_turns() {
    let out = translate(json!({
        "messages": [
            {"role": "system", "content": "use tools"},
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
            {"role": "assistant", "content": "Paris is sunny, Rome rainy."},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "weather",
            "description": "the weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }}],
        "tool_choice": "auto",
    }));
    assert_eq!(out["system"], "use tools");
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "Paris is sunny, Rome rainy."}]},
            {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
        ])
    );
    assert_eq!(
        out["tools"],
        json!([{
            "name": "weather",
            "description": "the weather of a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }])
    );
    assert_eq!(out["tool_choice"], json!({"type": "auto"}));
}

#[test]
fn a_tool_result_followed_by_user_text_shares_one_user_turn_results_first() {
    let out = translate(json!({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "c", "content": "done"},
        {"role": "user", "content": "and now?"},
    ]}));
    assert_eq!(
        out["messages"][1]["content"],
        json!([
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "c", "name": "f", "input": {}},
        ])
    );
    assert_eq!(
        out["messages"][2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "c", "content": "done"},
            {"type": "text", "text": "and now?"},
        ])
    );
}

#[test]
fn tool_choice_modes_map_to_anthropic_types() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let cases = [
        (json!("auto"), None, json!({"type": "auto"})),
        (json!("none"), None, json!({"type": "none"})),
        (json!("required"), None, json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            None,
            json!({"type": "tool", "name": "f"}),
        ),
        (
            json!("required"),
            Some(false),
            json!({"type": "any", "disable_parallel_tool_use": true}),
        ),
        (
            Value::Null,
            Some(false),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        ),
        (json!("none"), Some(false), json!({"type": "none"})),
    ];
    for (choice, parallel, expected) in cases {
        let mut body = json!({
            "messages": [{"role": "user", "content": "hi"}],
            "tools": tools,
            "tool_choice": choice,
        });
        if let Some(parallel) = parallel {
            body["parallel_tool_calls"] = json!(parallel);
        }
        let out = translate(body);
        assert_eq!(out["tool_choice"], expected, "{choice} {parallel:?}");
        assert_eq!(
            out["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );
    }
}

#[test]
fn tool_choice_without_tools_is_dropped() {
    let out = translate(json!({
        "messages": [{"role": "user", "content": "hi"}],
        "tool_choice": "none",
        "parallel_tool_calls": false,
    }));
    assert!(out.get("tool_choice").is_none());
    assert!(out.get("tools").is_none());
}

#[test]
fn invalid_tool_arguments_are_an_error_naming_the_field() {
    let err = refused(json!({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}},
        ]},
    ]}));
    assert_eq!(err.field(), "messages[1].tool_calls[0].function.arguments");
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    assert!(!err.to_string().contains("not json"), "no body text: {err}");

    let err = refused(json!({"messages": [
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}},
        ]},
    ]}));
    assert_eq!(err.field(), "messages[0].tool_calls[0].function.arguments");
}

#[test]
fn unsupported_inputs_are_refused_by_field() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"messages": user, "n": 2}), "n"),
        (json!({"messages": user, "logprobs": true}), "logprobs"),
        (json!({"messages": user, "top_logprobs": 2}), "top_logprobs"),
        (
            json!({"messages": user, "logit_bias": {"1": 5}}),
            "logit_bias",
        ),
        (json!({"messages": user, "audio": {"voice": "x"}}), "audio"),
        (
            json!({"messages": user, "modalities": ["text", "audio"]}),
            "modalities",
        ),
        (
            json!({"messages": user, "presence_penalty": 0.5}),
            "presence_penalty",
        ),
        (
            json!({"messages": user, "frequency_penalty": 1}),
            "frequency_penalty",
        ),
        (
            json!({"messages": user, "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"messages": user, "functions": [{"name": "f"}]}),
            "functions",
        ),
        (
            json!({"messages": user, "tools": [{"type": "custom", "custom": {}}]}),
            "tools[0].type",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
            ]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "file", "file": {"file_id": "f"}},
            ]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}),
            "messages[0].role",
        ),
    ];
    for (body, field) in cases {
        let err = refused(body);
        assert!(
            matches!(err, TranslateError::Unsupported { .. }),
            "{field}: {err}"
        );
        assert_eq!(err.field(), field);
    }
}

#[test]
fn malformed_inputs_are_invalid_by_field() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!("not an object"), "body"),
        (json!({}), "messages"),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "system", "content": "only this"}]}),
            "messages",
        ),
        (
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "user", "content": ""}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": null}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages[0].content[0].text",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "video"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}},
            ]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png,abc"}},
            ]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
            "messages[0].tool_calls[0].id",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]}]}),
            "messages[0].tool_calls[0].function.name",
        ),
        (json!({"messages": user, "max_tokens": 0}), "max_tokens"),
        (
            json!({"messages": user, "max_completion_tokens": "9"}),
            "max_completion_tokens",
        ),
        (
            json!({"messages": user, "temperature": "hot"}),
            "temperature",
        ),
        (json!({"messages": user, "stop": [1]}), "stop"),
        (json!({"messages": user, "stream": "yes"}), "stream"),
        (json!({"messages": user, "user": 5}), "user"),
        (json!({"messages": user, "tools": {}}), "tools"),
        (
            json!({"messages": user, "tools": [{"type": "function", "function": {}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "maybe"}),
            "tool_choice",
        ),
        (
            json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f"}}], "parallel_tool_calls": "no"}),
            "parallel_tool_calls",
        ),
    ];
    for (body, field) in cases {
        let err = refused(body);
        assert!(
            matches!(err, TranslateError::Invalid { .. }),
            "{field}: {err}"
        );
        assert_eq!(err.field(), field, "{err}");
    }
}
