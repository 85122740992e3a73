"""The OpenAI Python SDK's structured output against the proxy: `chat.completions.parse` with a
Pydantic model, plain and streamed, and JSON mode.

Run by tests/it/rich.rs with PROXY_URL (the proxy's /v1) and MODEL; prints one JSON report line.
The mock model answers the JSON text given by the `mock:json=` directive in the prompt.
"""

import json
import os

from openai import OpenAI
from pydantic import BaseModel

client = OpenAI(base_url=os.environ["PROXY_URL"], api_key="unused", max_retries=0)
model = os.environ["MODEL"]


class Weather(BaseModel):
    city: str
    temp: int


prompt = 'mock:json={"city":"Paris","temp":21}'
parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
parsed = parse(
    model=model,
    messages=[{"role": "user", "content": prompt}],
    response_format=Weather,
)
weather = parsed.choices[0].message.parsed
assert isinstance(weather, Weather), weather
assert weather == Weather(city="Paris", temp=21), weather

with client.chat.completions.stream(
    model=model,
    messages=[{"role": "user", "content": prompt}],
    response_format=Weather,
) as stream:
    for _ in stream:
        pass
    streamed = stream.get_final_completion().choices[0].message.parsed
assert streamed == weather, streamed

json_mode = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": 'mock:json={"ok":true}'}],
    response_format={"type": "json_object"},
)
as_object = json.loads(json_mode.choices[0].message.content)

print(json.dumps({"parsed": weather.model_dump(), "streamed": streamed.model_dump(), "json_object": as_object}))
