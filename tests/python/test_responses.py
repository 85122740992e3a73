"""The OpenAI Python SDK against the proxy's Responses API (driven by tests/it/responses.rs).

Environment: BASE_URL (the proxy's /v1), API_KEY, MODEL (an app-server profile).
Each case asserts on the SDK's own typed objects; any failure exits non-zero with a traceback.
"""

import os

import openai

client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ["API_KEY"], max_retries=0)
MODEL = os.environ["MODEL"]

LOOKUP = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up.",
    "parameters": {
        "type": "object",
        "properties": {"word": {"type": "string"}},
        "required": ["word"],
    },
}


def plain():
    response = client.responses.create(
        model=MODEL, instructions="Be brief.", input="mock:reply=Hi_there", metadata={"ticket": "7"}
    )
    assert response.object == "response" and response.status == "completed", response
    assert response.output_text == "Hi there", response.output
    assert response.output[0].type == "message", response.output
    assert response.usage.input_tokens == 120, response.usage
    assert response.usage.input_tokens_details.cached_tokens == 20, response.usage
    assert response.usage.output_tokens == 30, response.usage
    assert response.usage.output_tokens_details.reasoning_tokens == 10, response.usage
    assert response.metadata == {"ticket": "7"}, response.metadata


def streaming():
    kinds = []
    text = ""
    numbers = []
    with client.responses.stream(model=MODEL, input="mock:deltas=4 hello") as stream:
        for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert text == "Hello from the mock model.", text
    assert final.output_text == text, final
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    for kind in ["response.output_item.added", "response.content_part.added", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"]:
        assert kind in kinds, (kind, kinds)
    assert numbers == list(range(len(numbers))), numbers


def tool_round_trip():
    first = client.responses.create(model=MODEL, tools=[LOOKUP], input='mock:call=lookup:{"word":"otter"}')
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    assert calls[0].name == "lookup" and calls[0].arguments == '{"word":"otter"}', calls
    second = client.responses.create(
        model=MODEL,
        tools=[LOOKUP],
        input=[
            {"role": "user", "content": 'mock:call=lookup:{"word":"otter"}'},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "a river animal"},
        ],
    )
    assert second.output_text == "tool said: a river animal", second.output

    with client.responses.stream(model=MODEL, tools=[LOOKUP], input='mock:call=lookup:{"word":"seal"}') as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds, kinds
    assert final.output[-1].type == "function_call" and final.output[-1].arguments == '{"word":"seal"}', final


def refusals():
    try:
        client.responses.create(model=MODEL, input="hi", tools=[{"type": "file_search", "vector_store_ids": ["v"]}])
    except openai.BadRequestError as error:
        assert "file_search" in error.message, error
    else:
        raise AssertionError("a built-in tool was accepted")
    # A schema the model service's strict mode cannot use: a 400 naming its path.
    try:
        client.responses.create(
            model=MODEL,
            input="hi",
            text={"format": {"type": "json_schema", "name": "answer",
                             "schema": {"type": "object", "oneOf": [{"type": "object"}]}}},
        )
    except openai.BadRequestError as error:
        assert error.param == "text.format.schema.oneOf", error.body
    else:
        raise AssertionError("a schema strict mode cannot use was accepted")
    # Structured output is served: the schema goes to Codex, the answer is the model's JSON.
    answer = client.responses.create(
        model=MODEL,
        input='mock:json={"city":"Paris"}',
        text={"format": {"type": "json_schema", "name": "answer", "strict": True,
                         "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    )
    assert answer.output_text == '{"city":"Paris"}', answer
    # With strict, an answer that does not match the schema is never passed on: a 502.
    try:
        client.responses.create(
            model=MODEL,
            input='mock:json={"city":1}',
            text={"format": {"type": "json_schema", "name": "answer", "strict": True,
                             "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        )
    except openai.InternalServerError as error:
        assert error.status_code == 502 and error.code == "invalid_model_output", error.body
    else:
        raise AssertionError("an answer that breaks the schema was passed on")
    try:
        client.responses.retrieve("resp_unknown")
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("an unknown response was found")


def continuation():
    first = client.responses.create(model=MODEL, instructions="Be brief.", input="mock:reply=First")
    kept = client.responses.retrieve(first.id)
    assert kept.output_text == "First", kept
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input="mock:reply=Second")
    assert second.output_text == "Second", second
    assert second.previous_response_id == first.id, second
    with client.responses.stream(model=MODEL, previous_response_id=second.id, input="mock:reply=Third") as stream:
        third = stream.get_final_response()
    assert third.output_text == "Third", third
    client.responses.delete(third.id)
    try:
        client.responses.create(model=MODEL, previous_response_id=third.id, input="more")
    except openai.NotFoundError as error:
        assert error.code == "previous_response_not_found", error.body
        assert error.param == "previous_response_id", error.body
    else:
        raise AssertionError("a deleted response was continued")


for case in [plain, streaming, tool_round_trip, refusals, continuation]:
    case()
    print(f"ok {case.__name__}", flush=True)
