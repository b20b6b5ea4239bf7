//! The Converse translation's cases.

use serde_json::json;

use super::*;

#[test]
fn a_chat_request_becomes_messages_system_config_and_tools() {
    let body = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "look", "arguments": "{\"a\":1}"}},
                {"id": "t2", "type": "function", "function": {"name": "look", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "t1", "content": "{\"seen\":true}"},
            {"role": "tool", "tool_call_id": "t2", "content": "plain"},
            {"role": "user", "content": "so?"},
        ],
        "max_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "look", "description": "looks", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "stream": true,
    });
    let converse = chat_request_to_converse(&body).unwrap();
    assert_eq!(
        converse,
        json!({
            "system": [{"text": "be brief"}, {"text": "and kind"}],
            "messages": [
                {"role": "user", "content": [
                    {"text": "what is this?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBORw0K"}}},
                ]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "t1", "name": "look", "input": {"a": 1}}},
                    {"toolUse": {"toolUseId": "t2", "name": "look", "input": {}}},
                ]},
                // Tool results and the next user message make one user turn.
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "t1", "content": [{"json": {"seen": true}}]}},
                    {"toolResult": {"toolUseId": "t2", "content": [{"text": "plain"}]}},
                    {"text": "so?"},
                ]},
            ],
            "inferenceConfig": {"maxTokens": 64, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "look", "description": "looks", "inputSchema": {"json": {"type": "object"}}}}],
                "toolChoice": {"tool": {"name": "look"}},
            },
        })
    );
    for (choice, expected) in [
        ("auto", json!({"auto": {}})),
        ("required", json!({"any": {}})),
    ] {
        let mut b = body.clone();
        b["tool_choice"] = json!(choice);
        assert_eq!(
            chat_request_to_converse(&b).unwrap()["toolConfig"]["toolChoice"],
            expected
        );
    }
}

#[test]
fn refused_requests_name_the_field() {
    let base = json!({"messages": [{"role": "user", "content": "hi"}]});
    let check = |patch: Value, field: &str| {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let e = chat_request_to_converse(&body).unwrap_err();
        assert_eq!(e.field(), field, "{patch}: {e}");
    };
    check(json!({"n": 2}), "n");
    check(json!({"max_tokens": 0}), "max_tokens");
    check(json!({"temperature": "hot"}), "temperature");
    check(json!({"stop": 3}), "stop");
    check(json!({"tools": [{"type": "retrieval"}]}), "tools[0].type");
    check(
        json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}),
        "tool_choice",
    );
    check(
        json!({"messages": [{"role": "wizard", "content": "x"}]}),
        "messages[0].role",
    );
    check(json!({"messages": []}), "messages");
    check(
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
        "messages[0].content[0].image_url.url",
    );
    check(
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AA"}}]}]}),
        "messages[0].content[0].image_url.url",
    );
    check(
        json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "[1]"}}]}]}),
        "messages[0].tool_calls[0].function.arguments",
    );
    check(
        json!({"messages": [{"role": "tool", "content": "x"}]}),
        "messages[0].tool_call_id",
    );
    assert!(chat_request_to_converse(&json!([])).is_err());
}

#[test]
fn a_converse_answer_becomes_a_chat_completion_with_usage() {
    let answer = json!({
        "output": {"message": {"role": "assistant", "content": [
            {"text": "Let me look."},
            {"toolUse": {"toolUseId": "tooluse_1", "name": "look", "input": {"a": 1}}},
        ]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 20},
        "metrics": {"latencyMs": 12},
    });
    let (completion, usage) = converse_to_chat_completion(&answer, "pub", 7, "id1").unwrap();
    assert_eq!(
        completion,
        json!({
            "id": "id1", "object": "chat.completion", "created": 7, "model": "pub",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me look.",
                "tool_calls": [{"id": "tooluse_1", "type": "function", "function": {"name": "look", "arguments": "{\"a\":1}"}}],
            }}],
            "usage": {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135, "prompt_tokens_details": {"cached_tokens": 100}},
        })
    );
    assert_eq!(usage.unwrap().cache_write, 20);
    for (reason, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
    ] {
        let answer =
            json!({"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": reason});
        let (c, u) = converse_to_chat_completion(&answer, "m", 0, "i").unwrap();
        assert_eq!(c["choices"][0]["finish_reason"], finish, "{reason}");
        assert!(u.is_none() && c.get("usage").is_none());
    }
    assert!(converse_to_chat_completion(&json!({"output": {}}), "m", 0, "i").is_err());
    let bad_tool = json!({"output": {"message": {"content": [{"toolUse": {"name": "x"}}]}}});
    assert!(converse_to_chat_completion(&bad_tool, "m", 0, "i").is_err());
}

#[test]
fn stream_events_become_chunks_tool_calls_finish_and_usage() {
    let mut t = StreamTranslator::new("pub", 3, "cid".into());
    let mut feed = |event: &str, data: Value| t.feed(event, data.to_string().as_bytes()).unwrap();
    let start = feed("messageStart", json!({"role": "assistant"}));
    assert_eq!(
        start[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text = feed(
        "contentBlockDelta",
        json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    );
    assert_eq!(text[0]["choices"][0]["delta"], json!({"content": "Hi"}));
    assert!(feed("contentBlockStop", json!({"contentBlockIndex": 0})).is_empty());
    let tool = feed(
        "contentBlockStart",
        json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu1", "name": "look"}}}),
    );
    assert_eq!(
        tool[0]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "id": "tu1", "type": "function", "function": {"name": "look", "arguments": ""}})
    );
    let args = feed(
        "contentBlockDelta",
        json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}}),
    );
    assert_eq!(
        args[0]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "function": {"arguments": "{\"a\":"}})
    );
    let stop = feed("messageStop", json!({"stopReason": "tool_use"}));
    assert_eq!(stop[0]["choices"][0]["finish_reason"], "tool_calls");
    assert!(feed(
        "metadata",
        json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}})
    )
    .is_empty());
    assert!(t.is_finished());
    let usage = t.finish().unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 3);
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert_eq!(usage["choices"], json!([]));
    // Input for a block that never started, and a payload that is not JSON.
    let mut t = StreamTranslator::new("pub", 3, "cid".into());
    assert!(t
        .feed(
            "contentBlockDelta",
            br#"{"contentBlockIndex":4,"delta":{"toolUse":{"input":"{}"}}}"#
        )
        .is_err());
    assert!(t.feed("messageStart", b"nope").is_err());
    assert!(t.feed("somethingNew", b"{}").is_ok());
}

#[test]
fn errors_keep_the_message_and_name_the_kind() {
    let e = bedrock_error_to_openai(
        429,
        Some("ThrottlingException:http://internal.amazon.com/coral/"),
        br#"{"message":"Too many requests"}"#,
    );
    assert_eq!(
        e,
        json!({"error": {"message": "Too many requests", "type": "rate_limit_error", "code": "ThrottlingException"}})
    );
    let e = bedrock_error_to_openai(403, None, b"<html>");
    assert_eq!(e["error"]["message"], "upstream answered 403");
    assert_eq!(e["error"]["type"], "authentication_error");
    assert_eq!(exception_status("throttlingException"), 429);
    assert_eq!(exception_status("internalServerException"), 500);
}

#[test]
fn anthropic_models_are_told_apart_and_their_body_is_bedrocks() {
    for (model, anthropic) in [
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", true),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", true),
        ("eu.anthropic.claude-3-7-sonnet-20250219-v1:0", true),
        ("amazon.nova-pro-v1:0", false),
        ("meta.llama3-70b-instruct-v1:0", false),
        ("anthropicish.model", false),
    ] {
        assert_eq!(is_anthropic_model(model), anthropic, "{model}");
    }
    let body = json!({"model": "x", "stream": true, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        messages_request_to_invoke(&body).unwrap(),
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    );
    assert!(messages_request_to_invoke(&json!("x")).is_err());
}
