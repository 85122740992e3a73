// A real OpenAI client against the proxy: the official `openai` Node SDK (pinned in package.json,
// installed by `npm ci`). Usage: node tests/sdk/client.mjs <base_url> <api_key> <model>
// Runs a plain completion, a streaming completion, a models listing and the error cases, and prints
// one JSON object with what the SDK returned or raised. tests/sdk.rs asserts on it.
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
if (!baseURL || !apiKey || !model) {
  console.error("usage: node tests/sdk/client.mjs <base_url> <api_key> <model>");
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

function describeError(error) {
  return {
    class: error?.constructor?.name ?? typeof error,
    is_api_error: error instanceof OpenAI.APIError,
    is_not_found: error instanceof OpenAI.NotFoundError,
    is_authentication: error instanceof OpenAI.AuthenticationError,
    status: error?.status ?? null,
    code: error?.code ?? null,
    type: error?.type ?? null,
    param: error?.param ?? null,
    message: String(error?.message ?? error),
  };
}

async function outcome(run) {
  try {
    return { ok: true, value: await run() };
  } catch (error) {
    return { ok: false, error: describeError(error) };
  }
}

const result = {};

result.plain = await outcome(async () => {
  const completion = await client.chat.completions.create({
    model,
    messages: [
      { role: "system", content: "Answer briefly." },
      { role: "user", content: "Say hello" },
    ],
  });
  return {
    id: completion.id,
    object: completion.object,
    model: completion.model,
    content: completion.choices[0].message.content,
    role: completion.choices[0].message.role,
    finish_reason: completion.choices[0].finish_reason,
    usage: completion.usage,
  };
});

result.plain_with_response = await outcome(async () => {
  const { data, response } = await client.chat.completions
    .create({ model, messages: [{ role: "user", content: "Say hello" }] })
    .withResponse();
  return {
    content: data.choices[0].message.content,
    request_id: response.headers.get("x-request-id"),
    id: data.id,
  };
});

result.stream = await outcome(async () => {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Say hello" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let content = "";
  let chunks = 0;
  let role = null;
  let finishReason = null;
  let usage = null;
  const ids = new Set();
  for await (const chunk of stream) {
    chunks += 1;
    ids.add(chunk.id);
    const choice = chunk.choices[0];
    if (choice) {
      role = role ?? choice.delta.role ?? null;
      content += choice.delta.content ?? "";
      finishReason = choice.finish_reason ?? finishReason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  return { content, chunks, role, finish_reason: finishReason, usage, distinct_ids: ids.size };
});

result.models = await outcome(async () => {
  const ids = [];
  for await (const entry of client.models.list()) ids.push(entry.id);
  return ids;
});

result.not_found = await outcome(() =>
  client.chat.completions.create({
    model: "no-such-model",
    messages: [{ role: "user", content: "hi" }],
  }),
);

result.unauthenticated = await outcome(() =>
  new OpenAI({ baseURL, apiKey: "wrong-key", maxRetries: 0 }).chat.completions.create({
    model,
    messages: [{ role: "user", content: "hi" }],
  }),
);

result.bad_request = await outcome(() =>
  client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "hi" }],
    n: 9,
  }),
);

// An error after the SSE headers: the SDK raises it while iterating.
result.stream_error = await outcome(async () => {
  const stream = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "mock:status=500" }],
    stream: true,
  });
  let chunks = 0;
  for await (const _chunk of stream) chunks += 1;
  return { chunks };
});

process.stdout.write(JSON.stringify(result) + "\n");
