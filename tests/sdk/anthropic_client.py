"""The official `anthropic` Python SDK through the gateway's /v1/messages: a
message, a streamed one read through the SDK's stream helper, a tool use
and the tool's result sent back, for every route given (whatever provider
kind is behind it); and the errors of an unknown model and of an unknown
key, once.

Run by the sdk test (tests/sdk/main.rs); see harness.py for the command line.
"""

import anthropic

import harness
from harness import check

# The mock upstream's OpenAI and Anthropic endpoints answer a call of the first
# tool when the last user turn contains "use a tool"; the gateway's built-in
# `mock` kind ignores tools and answers text.
CALLS_TOOLS = {
    "openai": True,
    "anthropic": True,
    "azure": True,
    "gemini": True,
    "vertex": True,
    "bedrock": True,
    "mock": False,
}

TOOLS = [
    {
        "name": "lookup",
        "description": "Looks a text up.",
        "input_schema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    }
]


def client(target):
    # No retries: a failure must show as itself, not as a later success.
    return anthropic.Anthropic(base_url=target.gateway, api_key=target.api_key, max_retries=0, timeout=30)


def usage_line(usage):
    check(usage is not None, "no usage")
    check(usage.input_tokens > 0, f"input_tokens {usage.input_tokens}")
    check(usage.output_tokens > 0, f"output_tokens {usage.output_tokens}")
    return f"usage {usage.input_tokens} in, {usage.output_tokens} out"


def text_of(message):
    return "".join(block.text for block in message.content if block.type == "text")


def message(target, route):
    answer = client(target).messages.create(
        model=route.model,
        max_tokens=256,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say hello to the gateway."}],
    )
    check(answer.type == "message", f"type {answer.type!r}")
    check(answer.role == "assistant", f"role {answer.role!r}")
    text = text_of(answer)
    check(text, f"no text: {answer.content!r}")
    check(answer.stop_reason == "end_turn", f"stop_reason {answer.stop_reason!r}")
    return f"text {len(text)} chars, stop {answer.stop_reason}, {usage_line(answer.usage)}"


def stream(target, route):
    events = 0
    with client(target).messages.stream(
        model=route.model,
        max_tokens=256,
        messages=[{"role": "user", "content": "Stream a hello."}],
    ) as streamed:
        text = ""
        for piece in streamed.text_stream:
            events += 1
            text += piece
        final = streamed.get_final_message()
    check(text.strip(), "no text in the stream")
    check(text_of(final) == text, "the final message differs from the streamed text")
    check(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason!r}")
    return f"{events} text deltas, {len(text)} chars, stop {final.stop_reason}, {usage_line(final.usage)}"


def tool_use(target, route):
    api = client(target)
    messages = [{"role": "user", "content": "Please use a tool to look up the weather."}]
    first = api.messages.create(model=route.model, max_tokens=256, messages=messages, tools=TOOLS)
    uses = [block for block in first.content if block.type == "tool_use"]
    if CALLS_TOOLS[route.kind]:
        check(first.stop_reason == "tool_use", f"stop_reason {first.stop_reason!r}")
        check(len(uses) == 1, f"{len(uses)} tool uses: {first.content!r}")
        use = uses[0]
        check(use.name == "lookup", f"tool {use.name!r}")
        check(isinstance(use.input.get("text"), str), f"input {use.input!r}")
        assistant = [block.model_dump(exclude_none=True) for block in first.content]
        use_id = use.id
        said = f"tool_use {use.name}, id {use.id}"
    else:
        check(first.stop_reason == "end_turn", f"stop_reason {first.stop_reason!r}")
        check(not uses, f"unexpected tool use {uses!r}")
        # This kind answers text; the second turn still sends a tool use and
        # its result, to carry the SDK's tool blocks through the gateway.
        use_id = "toolu_sdk_1"
        assistant = [{"type": "tool_use", "id": use_id, "name": "lookup", "input": {"text": "weather"}}]
        said = f"text {len(text_of(first))} chars (this kind ignores tools)"
    first_usage = usage_line(first.usage)

    messages += [
        {"role": "assistant", "content": assistant},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use_id, "content": "Sunny, 21 degrees."}],
        },
    ]
    second = api.messages.create(model=route.model, max_tokens=256, messages=messages, tools=TOOLS)
    check(second.stop_reason == "end_turn", f"second turn stop_reason {second.stop_reason!r}")
    check(not any(b.type == "tool_use" for b in second.content), "second turn uses a tool again")
    check(text_of(second), "second turn has no text")
    return f"turn 1: {said}, {first_usage}; turn 2 with the result: text {len(text_of(second))} chars, {usage_line(second.usage)}"


def unknown_model(target):
    try:
        client(target).messages.create(
            model="no-such-model", max_tokens=16, messages=[{"role": "user", "content": "hello"}]
        )
    except anthropic.NotFoundError as err:
        check(err.status_code == 404, f"status {err.status_code}")
        error = err.body.get("error", {}) if isinstance(err.body, dict) else {}
        check(error.get("type") == "not_found_error", f"error {err.body!r}")
        return f"anthropic.NotFoundError {err.status_code} {error.get('type')}"
    raise harness.CheckFailed("an unknown model was answered")


def unknown_key(target):
    stranger = harness.Target(target.gateway, "obk_000000000000_" + "A" * 40)
    try:
        client(stranger).messages.create(
            model="sdk-mock", max_tokens=16, messages=[{"role": "user", "content": "hello"}]
        )
    except anthropic.AuthenticationError as err:
        check(err.status_code == 401, f"status {err.status_code}")
        error = err.body.get("error", {}) if isinstance(err.body, dict) else {}
        check(error.get("type") == "authentication_error", f"error {err.body!r}")
        return f"anthropic.AuthenticationError {err.status_code} {error.get('type')}"
    raise harness.CheckFailed("an unknown key was answered")


if __name__ == "__main__":
    harness.run(per_route=[message, stream, tool_use], once=[unknown_model, unknown_key])
