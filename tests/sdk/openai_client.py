"""The official `openai` Python SDK through the gateway: a chat completion, a
streamed one with its usage chunk, a tool call and the tool's result sent
back, and `responses.create` (whole and streamed where the provider speaks
the Responses API, a 400 where it does not), for every route given; and the
errors of an unknown model and of an unknown key, once.

Run by the sdk test (tests/sdk/main.rs); see harness.py for the command line.
"""

import json

import openai

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
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Looks a text up.",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        },
    }
]


def client(target):
    # No retries: a failure must show as itself, not as a later success.
    return openai.OpenAI(base_url=f"{target.gateway}/v1", api_key=target.api_key, max_retries=0, timeout=30)


def usage_line(usage):
    check(usage is not None, "no usage")
    check(usage.prompt_tokens > 0, f"prompt_tokens {usage.prompt_tokens}")
    check(usage.completion_tokens > 0, f"completion_tokens {usage.completion_tokens}")
    check(
        usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        f"total_tokens {usage.total_tokens} is not prompt + completion",
    )
    return f"usage {usage.prompt_tokens}+{usage.completion_tokens}={usage.total_tokens}"


def chat(target, route):
    answer = client(target).chat.completions.create(
        model=route.model,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the gateway."},
        ],
    )
    check(answer.object == "chat.completion", f"object {answer.object!r}")
    check(len(answer.choices) == 1, f"{len(answer.choices)} choices")
    choice = answer.choices[0]
    check(choice.message.role == "assistant", f"role {choice.message.role!r}")
    check(choice.message.content, f"empty content: {choice.message!r}")
    check(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}")
    return f"content {len(choice.message.content)} chars, finish {choice.finish_reason}, {usage_line(answer.usage)}"


def stream(target, route):
    chunks = client(target).chat.completions.create(
        model=route.model,
        messages=[{"role": "user", "content": "Stream a hello."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content, finish, usage, count, after_usage = "", None, None, 0, 0
    for chunk in chunks:
        count += 1
        check(chunk.object == "chat.completion.chunk", f"object {chunk.object!r}")
        if usage is not None:
            after_usage += 1
        if chunk.usage is not None:
            check(usage is None, "a second usage chunk")
            check(chunk.choices == [], f"the usage chunk has choices {chunk.choices!r}")
            usage = chunk.usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check(content.strip(), "no content in the deltas")
    check(finish == "stop", f"finish_reason {finish!r}")
    check(usage is not None, "no usage chunk")
    check(after_usage == 0, f"{after_usage} chunks after the usage chunk")
    return f"{count} chunks, content {len(content)} chars, finish {finish}, final chunk {usage_line(usage)}"


def tool_call(target, route):
    api = client(target)
    messages = [{"role": "user", "content": "Please use a tool to look up the weather."}]
    first = api.chat.completions.create(model=route.model, messages=messages, tools=TOOLS)
    choice = first.choices[0]
    if CALLS_TOOLS[route.kind]:
        check(choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}")
        calls = choice.message.tool_calls or []
        check(len(calls) == 1, f"{len(calls)} tool calls: {choice.message!r}")
        call = calls[0]
        check(call.type == "function" and call.function.name == "lookup", f"call {call!r}")
        arguments = json.loads(call.function.arguments)
        check(isinstance(arguments.get("text"), str), f"arguments {arguments!r}")
        call_id, arguments_json = call.id, call.function.arguments
        said = f"call {call.function.name}({len(arguments_json)} chars of arguments), id {call.id}"
    else:
        check(choice.finish_reason == "stop", f"finish_reason {choice.finish_reason!r}")
        check(not choice.message.tool_calls, f"unexpected tool calls {choice.message.tool_calls!r}")
        check(choice.message.content, "empty content")
        # This kind answers text; the second turn still sends a call and its
        # result, to carry the SDK's tool messages through the gateway.
        call_id, arguments_json = "call_sdk_1", json.dumps({"text": "weather"})
        said = f"text {len(choice.message.content)} chars (this kind ignores tools)"
    first_usage = usage_line(first.usage)

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": arguments_json}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 degrees."},
    ]
    second = api.chat.completions.create(model=route.model, messages=messages, tools=TOOLS)
    answer = second.choices[0]
    check(answer.finish_reason == "stop", f"second turn finish_reason {answer.finish_reason!r}")
    check(not answer.message.tool_calls, f"second turn calls again: {answer.message.tool_calls!r}")
    check(answer.message.content, "second turn has no content")
    return (
        f"turn 1: {said}, {first_usage}; turn 2 with the result: "
        f"content {len(answer.message.content)} chars, {usage_line(second.usage)}"
    )


# Kinds whose providers speak the Responses API; the others answer 400.
SERVES_RESPONSES = {
    "openai": True,
    "anthropic": False,
    "azure": True,
    "gemini": False,
    "vertex": False,
    "bedrock": False,
    "mock": False,
}


def responses(target, route):
    api = client(target)
    if not SERVES_RESPONSES[route.kind]:
        refused = 0
        for stream in (False, True):
            try:
                api.responses.create(model=route.model, input="Say hello.", stream=stream)
            except openai.BadRequestError as err:
                check(err.status_code == 400, f"status {err.status_code}")
                check(route.kind in err.message, f"message {err.message!r}")
                refused += 1
                continue
            raise harness.CheckFailed(f"a {route.kind} route served the Responses API")
        return f"{refused} refusals: openai.BadRequestError 400 (kind {route.kind} does not serve it)"
    answer = api.responses.create(model=route.model, input="Say hello to the gateway.")
    check(answer.status == "completed", f"status {answer.status!r}")
    check(answer.output_text, f"no output text: {answer.output!r}")
    usage = answer.usage
    check(usage.input_tokens > 0 and usage.output_tokens > 0, f"usage {usage!r}")
    deltas, completed = "", None
    for event in api.responses.create(model=route.model, input="Stream a hello.", stream=True):
        if event.type == "response.output_text.delta":
            deltas += event.delta
        elif event.type == "response.completed":
            completed = event.response
    check(deltas.strip(), "no text deltas")
    check(completed is not None, "no response.completed event")
    check(completed.output_text == deltas, "the completed output differs from the deltas")
    return (
        f"text {len(answer.output_text)} chars, usage {usage.input_tokens} in, {usage.output_tokens} out; "
        f"streamed {len(deltas)} chars, completed usage {completed.usage.input_tokens} in, "
        f"{completed.usage.output_tokens} out"
    )


def unknown_model(target):
    try:
        client(target).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hello"}]
        )
    except openai.NotFoundError as err:
        check(err.status_code == 404, f"status {err.status_code}")
        check(err.code == "model_not_found", f"code {err.code!r}")
        return f"openai.NotFoundError {err.status_code} {err.code}: {err.message}"
    raise harness.CheckFailed("an unknown model was answered")


def unknown_key(target):
    stranger = harness.Target(target.gateway, "obk_000000000000_" + "A" * 40)
    try:
        client(stranger).chat.completions.create(
            model="sdk-mock", messages=[{"role": "user", "content": "hello"}]
        )
    except openai.AuthenticationError as err:
        check(err.status_code == 401, f"status {err.status_code}")
        check(err.code == "invalid_api_key", f"code {err.code!r}")
        return f"openai.AuthenticationError {err.status_code} {err.code}"
    raise harness.CheckFailed("an unknown key was answered")


if __name__ == "__main__":
    harness.run(per_route=[chat, stream, tool_call, responses], once=[unknown_model, unknown_key])
