"""The OpenAI Agents SDK running one tool-using agent against the proxy's Responses API (driven by
tests/it/responses.rs). Environment: BASE_URL (the proxy's /v1), API_KEY, MODEL (an app-server profile).
"""

import asyncio
import os

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

set_tracing_disabled(True)
client = AsyncOpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ["API_KEY"], max_retries=0)
calls = []


@function_tool
def lookup(word: str) -> str:
    """Look a word up."""
    calls.append(word)
    return f"{word} is a river animal"


async def main():
    agent = Agent(
        name="Librarian",
        instructions="Answer with the tool's help.",
        tools=[lookup],
        model=OpenAIResponsesModel(model=os.environ["MODEL"], openai_client=client),
    )
    result = await Runner.run(agent, 'mock:call=lookup:{"word":"otter"}')
    assert calls == ["otter"], calls
    assert result.final_output == "tool said: otter is a river animal", result.final_output
    print("ok agent", flush=True)


asyncio.run(main())
