//! The OpenAI chat response bodies: `chat.completion`, `chat.completion.chunk` and the final usage chunk,
//! so their shapes live in one file.

use serde_json::{json, Value};

use crate::turn::{ToolCall, Usage};

/// The OpenAI chat `usage` object.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    })
}

/// One entry of `message.tool_calls`; streamed with its `index` as one `delta.tool_calls` entry.
pub fn tool_call_json(call: &ToolCall, index: Option<usize>) -> Value {
    let mut entry = json!({
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    });
    if let Some(index) = index {
        entry["index"] = json!(index);
    }
    entry
}

/// The non-streaming `chat.completion` body. With tool calls, `content` is the text written before
/// them, or null when there was none, and `finish_reason` is `tool_calls`.
pub fn completion_body(
    id: &str,
    created: u64,
    model: &str,
    text: &str,
    tool_calls: &[ToolCall],
    usage: &Usage,
) -> Value {
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    let mut finish_reason = "stop";
    if !tool_calls.is_empty() {
        finish_reason = "tool_calls";
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = tool_calls
            .iter()
            .map(|call| tool_call_json(call, None))
            .collect();
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": usage_json(usage),
        "system_fingerprint": null,
    })
}

/// Turns a `chat.completion` body with `tool_calls` into the legacy shape: the first call as
/// `message.function_call {name, arguments}` and `finish_reason` `function_call`.
pub fn to_legacy_function_call(body: &mut Value) {
    let choice = &mut body["choices"][0];
    let Some(calls) = choice["message"]
        .as_object_mut()
        .and_then(|message| message.remove("tool_calls"))
    else {
        return;
    };
    if let Some(first) = calls.get(0) {
        choice["message"]["function_call"] = first["function"].clone();
        choice["finish_reason"] = json!("function_call");
    }
}

/// One `chat.completion.chunk` with a single choice.
pub fn chunk_body(
    id: &str,
    created: u64,
    model: &str,
    delta: Value,
    finish_reason: Option<&str>,
    include_usage: bool,
) -> Value {
    let mut chunk = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": null,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    });
    if include_usage {
        chunk["usage"] = Value::Null;
    }
    chunk
}

/// The final usage chunk of `stream_options.include_usage`: empty `choices`.
pub fn usage_chunk_body(id: &str, created: u64, model: &str, usage: &Usage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": null,
        "choices": [],
        "usage": usage_json(usage),
    })
}
