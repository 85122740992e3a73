"""The Anthropic Python SDK against the proxy's Messages API (driven by tests/it/messages.rs).

Environment: BASE_URL (the proxy, without /v1), API_KEY (a server key), MODEL (an app-server profile).
Each case asserts on the SDK's own typed objects; any failure exits non-zero with a traceback.
"""

import os

import anthropic

BASE_URL = os.environ["BASE_URL"]
API_KEY = os.environ["API_KEY"]
MODEL = os.environ["MODEL"]

# auth_token= sends `Authorization: Bearer`, as Claude Code's ANTHROPIC_AUTH_TOKEN does.
client = anthropic.Anthropic(base_url=BASE_URL, auth_token=API_KEY, max_retries=0)

LOOKUP = {
    "name": "lookup",
    "description": "Look a word up.",
    "input_schema": {
        "type": "object",
        "properties": {"word": {"type": "string"}},
        "required": ["word"],
    },
}


def plain():
    message = client.messages.create(
        model=MODEL,
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "mock:reply=Hi_there"}],
    )
    assert isinstance(message, anthropic.types.Message), type(message)
    assert message.role == "assistant"
    assert message.id.startswith("msg_"), message.id
    assert [block.type for block in message.content] == ["text"], message.content
    assert message.content[0].text == "Hi there", message.content
    assert message.stop_reason == "end_turn", message.stop_reason
    assert message.usage.input_tokens == 100, message.usage
    assert message.usage.cache_read_input_tokens == 20, message.usage
    assert message.usage.output_tokens == 30, message.usage


def streaming():
    with client.messages.stream(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": "mock:deltas=4 say hello"}],
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Hello from the mock model.", texts
    assert len(texts) >= 2, texts
    assert final.stop_reason == "end_turn", final
    assert final.usage.output_tokens == 30, final.usage
    assert final.usage.input_tokens == 100, final.usage

    events = client.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": "mock:reply=Streamed"}],
        stream=True,
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start", kinds
    assert kinds[-2:] == ["message_delta", "message_stop"], kinds
    assert "content_block_start" in kinds and "content_block_stop" in kinds, kinds
    assert kinds.index("content_block_start") < kinds.index("content_block_delta"), kinds


def tool_round_trip():
    first = client.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[LOOKUP],
        messages=[{"role": "user", "content": 'mock:call=lookup:{"word":"otter"}'}],
    )
    assert first.stop_reason == "tool_use", first
    calls = [block for block in first.content if block.type == "tool_use"]
    assert len(calls) == 1, first.content
    assert calls[0].name == "lookup" and calls[0].input == {"word": "otter"}, calls
    second = client.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[LOOKUP],
        messages=[
            {"role": "user", "content": 'mock:call=lookup:{"word":"otter"}'},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": calls[0].id, "content": "a river animal"}
                ],
            },
        ],
    )
    assert second.stop_reason == "end_turn", second
    assert second.content[-1].text == "tool said: a river animal", second.content

    # The same call, streamed: a tool_use block whose input arrives as input_json_delta.
    with client.messages.stream(
        model=MODEL,
        max_tokens=256,
        tools=[LOOKUP],
        messages=[{"role": "user", "content": 'mock:call=lookup:{"word":"seal"}'}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use", final
    assert final.content[-1].type == "tool_use" and final.content[-1].input == {"word": "seal"}, final


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def image_block():
    # A base64 image block reaches the model with the text beside it.
    answer = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "text", "text": "mock:reply=A_pixel."},
                ],
            }
        ],
    )
    assert answer.content[0].text == "A pixel.", answer
    # A URL image is refused unfetched (never an SSRF), as the SDK's own class.
    try:
        client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/latest"}},
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ],
        )
    except anthropic.BadRequestError as error:
        assert error.status_code == 400
        assert error.body["type"] == "error", error.body
        assert error.body["error"]["type"] == "invalid_request_error", error.body
    else:
        raise AssertionError("a URL image was accepted")


def count_tokens():
    short = client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hello, world!"}]
    )
    # 3 (reply) + 3 (message) + 4 ("Hello, world!" in o200k_base).
    assert short.input_tokens == 10, short
    with_tools = client.messages.count_tokens(
        model=MODEL,
        system="Be brief.",
        tools=[LOOKUP],
        messages=[{"role": "user", "content": "Hello, world!"}],
    )
    assert with_tools.input_tokens > short.input_tokens + 20, with_tools


def errors():
    try:
        client.messages.create(
            model="claude-nonexistent", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    except anthropic.NotFoundError as error:
        assert error.body["error"]["type"] == "not_found_error", error.body
    else:
        raise AssertionError("an unknown model was served")
    wrong = anthropic.Anthropic(base_url=BASE_URL, auth_token="wrong-key", max_retries=0)
    try:
        wrong.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    except anthropic.AuthenticationError as error:
        assert error.body["error"]["type"] == "authentication_error", error.body
    else:
        raise AssertionError("a wrong key was accepted")
    try:
        client.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "hi"}], stop_sequences=[""]
        )
    except anthropic.BadRequestError as error:
        assert "stop_sequences" in error.body["error"]["message"], error.body
    else:
        raise AssertionError("an empty stop sequence was accepted")
    # A failure after the stream started arrives as the SDK's in-band error.
    try:
        with client.messages.stream(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "mock:failed"}]
        ) as stream:
            stream.get_final_message()
    except anthropic.APIStatusError as error:
        assert "mock model failed" in str(error), error
    else:
        raise AssertionError("a failed turn was not reported")


def claude_code_style():
    # What Claude Code sends: system blocks with cache_control, many tools, metadata, stream:true.
    tools = [
        {
            "name": f"Tool{index}",
            "description": f"Tool number {index}.",
            "input_schema": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["path"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        }
        for index in range(24)
    ]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    with client.messages.stream(
        model=MODEL,
        max_tokens=32000,
        system=[
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "You are an interactive CLI tool.", "cache_control": {"type": "ephemeral"}},
        ],
        tools=tools,
        metadata={"user_id": "user_abc_account__session_123"},
        extra_body={"temperature": 1},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                    {"type": "text", "text": "mock:reply=Done.", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
        extra_headers={"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"},
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "Done.", final


def stop_sequences():
    answer = client.messages.create(
        model=MODEL,
        max_tokens=64,
        stop_sequences=["END", "NEVER"],
        messages=[{"role": "user", "content": "mock:reply=one_two_END_three"}],
    )
    assert answer.content[0].text == "one two ", answer
    assert answer.stop_reason == "stop_sequence" and answer.stop_sequence == "END", answer
    with client.messages.stream(
        model=MODEL,
        max_tokens=64,
        stop_sequences=["END"],
        messages=[{"role": "user", "content": "mock:deltas=4 mock:reply=one_two_END_three"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "one two ", text
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "END", final
    # max_tokens is enforced: the answer is cut at that many tokens.
    cut = client.messages.create(
        model=MODEL,
        max_tokens=2,
        messages=[{"role": "user", "content": "mock:reply=alpha_beta_gamma_delta_epsilon"}],
    )
    assert cut.stop_reason == "max_tokens", cut
    assert len(cut.content[0].text) < len("alpha beta gamma delta epsilon"), cut


def models():
    page = client.models.list()
    ids = [model.id for model in page.data]
    assert MODEL in ids, ids
    one = client.models.retrieve(MODEL)
    assert one.id == MODEL and one.type == "model", one
    assert one.created_at.year >= 2024, one
    try:
        client.models.retrieve("no-such-model")
    except anthropic.NotFoundError:
        pass
    else:
        raise AssertionError("an unknown model was found")


for case in [
    plain,
    streaming,
    tool_round_trip,
    image_block,
    count_tokens,
    errors,
    claude_code_style,
    stop_sequences,
    models,
]:
    case()
    print(f"ok {case.__name__}", flush=True)
