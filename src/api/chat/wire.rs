//! The OpenAI chat response bodies: `chat.completion`, `chat.completion.chunk` and the final usage chunk,
//! so their shapes live in one file.

use serde_json::{json, Value};

use crate::turn::Usage;

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

/// The non-streaming `chat.completion` body.
pub fn completion_body(id: &str, created: u64, model: &str, text: &str, usage: &Usage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage_json(usage),
        "system_fingerprint": null,
    })
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
