"""A LangChain agent loop: `ChatOpenAI(...).bind_tools(...)` against the proxy, calling the tool until
the model answers (two rounds, as the mock is told), the way LangChain's tool-calling guide runs it.

Run by tests/it/tools.rs with PROXY_URL (the proxy's /v1) and MODEL; prints one JSON report line.
LangChain sends the assistant's calls back with the arguments re-serialised from the parsed dict.
"""

import json
import os

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def lookup(word: str) -> str:
    """Look a word up."""
    return f"{word}: a river animal"


llm = ChatOpenAI(
    model=os.environ["MODEL"],
    base_url=os.environ["PROXY_URL"],
    api_key="unused",
    max_retries=0,
    timeout=60,
    use_responses_api=False,
)
agent = llm.bind_tools([lookup])
messages = [HumanMessage('mock:steps=2 mock:call=lookup:{"word":"otter"}')]
rounds = 0
while True:
    reply = agent.invoke(messages)
    messages.append(reply)
    if not reply.tool_calls:
        break
    rounds += 1
    if rounds > 5:
        raise SystemExit("the agent loop did not end")
    for call in reply.tool_calls:
        messages.append(ToolMessage(content=lookup.invoke(call["args"]), tool_call_id=call["id"]))

print(json.dumps({"rounds": rounds, "answer": reply.content}))
