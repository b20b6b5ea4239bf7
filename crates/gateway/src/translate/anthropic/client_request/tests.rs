//! Tests of the Anthropic request to OpenAI request translation.

use serde_json::{json, Value};

use super::*;

fn translate(body: Value) -> Value {
    messages_request_to_chat(&body, "gpt-test").unwrap()
}

fn refused(body: Value) -> TranslateError {
    messages_request_to_chat(&body, "gpt-test").unwrap_err()
}

#[test]
fn a_simple_request_becomes_a_chat_request() {
    let out = translate(json!({
        "model": "claude-alias",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.2,
        "top_p": 0.8,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }));
    assert_eq!(
        out,
        json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello"},
            ],
            "max_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.8,
            "stop": ["END"],
            "user": "u-1",
        })
    );
}

#[test]
fn system_blocks_and_streaming_ask_for_usage() {
    let out = translate(json!({
        "max_tokens": 10,
        "stream": true,
        "system": [
            {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "two"},
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }));
    assert_eq!(
        out["messages"][0],
        json!({"role": "system", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]})
    );
    assert_eq!(out["messages"][1], json!({"role": "user", "content": "hi"}));
    assert_eq!(out["stream"], true);
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
}

#[test]
fn images_become_image_url_parts() {
    let out = translate(json!({
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is it"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        ]}],
    }));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "text", "text": "what is it"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ])
    );
}

#[test]
fn a_multi_turn_tool_conversation_becomes_tool_calls_and_tool_messages() {
    let out = translate(json!({
        "max_tokens": 200,
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "need a tool", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "time", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "noon"}], "is_error": false},
                {"type": "text", "text": "and tomorrow?"},
            ]},
            {"role": "assistant", "content": "Probably sunny."},
        ],
        "tools": [{"name": "weather", "description": "a city's weather",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                  {"type": "custom", "name": "time", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
    }));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "noon"},
            {"role": "user", "content": "and tomorrow?"},
            {"role": "assistant", "content": "Probably sunny."},
        ])
    );
    assert_eq!(
        out["tools"],
        json!([
            {"type": "function", "function": {"name": "weather", "description": "a city's weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}},
        ])
    );
    assert_eq!(out["tool_choice"], "required");
    assert_eq!(out["parallel_tool_calls"], false);
}

#[test]
fn tool_choice_types_map_to_openai_modes() {
    for (choice, expected) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "none"}), json!("none")),
        (json!({"type": "any"}), json!("required")),
        (
            json!({"type": "tool", "name": "f"}),
            json!({"type": "function", "function": {"name": "f"}}),
        ),
    ] {
        let out = translate(json!({
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": choice,
        }));
        assert_eq!(out["tool_choice"], expected);
        assert!(out.get("parallel_tool_calls").is_none());
    }
}

#[test]
fn unsupported_inputs_are_refused_by_field() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (
            json!({"max_tokens": 1, "messages": user, "top_k": 5}),
            "top_k",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
            "thinking",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "x"}},
            ]}]}),
            "messages[0].content[0]",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "file", "file_id": "f"}},
            ]}]}),
            "messages[0].content[0].source.type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                ]},
            ]}]}),
            "messages[0].content[0].content",
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
    // Disabled thinking asks for nothing.
    translate(json!({"max_tokens": 1, "messages": user, "thinking": {"type": "disabled"}}));
}

#[test]
fn malformed_inputs_are_invalid_by_field() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!(null), "body"),
        (json!({"max_tokens": 1}), "messages"),
        (json!({"max_tokens": 1, "messages": []}), "messages"),
        (json!({"messages": user}), "max_tokens"),
        (json!({"max_tokens": 0, "messages": user}), "max_tokens"),
        (
            json!({"max_tokens": 1, "messages": [{"role": "system", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "audio"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages[0].content[0].text",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
            "messages[0].content[0].tool_use_id",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}]}),
            "messages[0].content[0].input",
        ),
        (
            json!({"max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]}),
            "messages[0].content[0].id",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "system": 5}),
            "system",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "system": [{"type": "image"}]}),
            "system[0].type",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "temperature": "x"}),
            "temperature",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "stop_sequences": "END"}),
            "stop_sequences",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "stream": 1}),
            "stream",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "metadata": {"user_id": 5}}),
            "metadata.user_id",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "tools": [{"input_schema": {}}]}),
            "tools[0].name",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "tools": [{"name": "f"}]}),
            "tools[0].input_schema",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "maybe"}}),
            "tool_choice.type",
        ),
        (
            json!({"max_tokens": 1, "messages": user, "tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool"}}),
            "tool_choice.name",
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
