"""The OpenAI Python SDK's tool-calling round trip against the proxy, plain and streamed.

Run by tests/it/tools.rs with PROXY_URL (the proxy's /v1) and MODEL; prints one JSON report line.
The conversation is built the way the SDK's documentation shows: the assistant message object is
appended as returned, then one `tool` message per call.
"""

import json
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["PROXY_URL"], api_key="unused", max_retries=0)
model = os.environ["MODEL"]
tools = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string"}},
                "required": ["word"],
            },
        },
    }
]


def lookup(word):
    return f"{word}: a river animal"


def plain_round_trip():
    messages = [{"role": "user", "content": 'mock:call=lookup:{"word":"otter"}'}]
    first = client.chat.completions.create(model=model, messages=messages, tools=tools)
    choice = first.choices[0]
    messages.append(choice.message)
    for call in choice.message.tool_calls:
        output = lookup(**json.loads(call.function.arguments))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
    second = client.chat.completions.create(model=model, messages=messages, tools=tools)
    return {
        "finish_reason": choice.finish_reason,
        "calls": [[c.id, c.function.name, c.function.arguments] for c in choice.message.tool_calls],
        "answer": second.choices[0].message.content,
        "answer_finish_reason": second.choices[0].finish_reason,
    }


def streamed_round_trip():
    messages = [{"role": "user", "content": 'mock:call=lookup:{"word":"heron"}'}]
    calls = {}
    finish_reason = None
    stream = client.chat.completions.create(
        model=model, messages=messages, tools=tools, stream=True
    )
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
        finish_reason = choice.finish_reason or finish_reason
    ordered = [calls[index] for index in sorted(calls)]
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in ordered
            ],
        }
    )
    for call in ordered:
        output = lookup(**json.loads(call["arguments"]))
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
    text = ""
    stream = client.chat.completions.create(
        model=model, messages=messages, tools=tools, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    return {
        "finish_reason": finish_reason,
        "calls": [[c["id"], c["name"], c["arguments"]] for c in ordered],
        "answer": text,
    }


print(json.dumps({"plain": plain_round_trip(), "streamed": streamed_round_trip()}))
