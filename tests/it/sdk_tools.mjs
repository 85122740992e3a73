// The official `openai` Node SDK (pinned in package.json) through one tool round trip against the
// proxy: a streamed request whose tool-call deltas the SDK assembles, then the SDK's own assistant
// message and a tool message sent back. Usage: node tests/it/sdk_tools.mjs <base_url> <model>.
// Prints one JSON object; tests/it/tools.rs asserts on it.
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
const tools = [
  {
    type: "function",
    function: {
      name: "lookup",
      description: "Look a word up.",
      parameters: { type: "object", properties: { word: { type: "string" } }, required: ["word"] },
    },
  },
];
const messages = [{ role: "user", content: 'mock:call=lookup:{"word":"otter"}' }];

const stream = client.chat.completions.stream({
  model,
  messages,
  tools,
  stream_options: { include_usage: true },
});
const first = await stream.finalChatCompletion();
const message = first.choices[0].message;
messages.push(message);
messages.push({ role: "tool", tool_call_id: message.tool_calls[0].id, content: "a river animal" });
const second = await client.chat.completions.create({ model, messages, tools });

console.log(
  JSON.stringify({
    first: {
      finish_reason: first.choices[0].finish_reason,
      content: message.content,
      tool_calls: message.tool_calls.map((call) => ({
        id: call.id,
        type: call.type,
        name: call.function.name,
        arguments: call.function.arguments,
      })),
      total_tokens: first.usage?.total_tokens ?? null,
    },
    second: {
      finish_reason: second.choices[0].finish_reason,
      content: second.choices[0].message.content,
    },
  }),
);
