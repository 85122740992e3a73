//! OpenAI chat request validation and response bodies.
//!
//! [`ChatRequest::parse`] turns raw JSON into a validated request or a precise 400 naming the parameter
//! ("parse, don't validate"): the body is inspected as a `serde_json::Value` so every wrong type gets
//! its own message. Parameters that are accepted but ignored are type-checked too. Response and chunk
//! bodies are built here so their shapes live in one file.

use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::engine::Usage;

/// A validated chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    /// Validated message objects (role known, content a string, parts array or null).
    pub messages: Vec<Value>,
    pub stream: bool,
    pub include_usage: bool,
    /// `metadata.cwd`, not yet checked against the allowed roots.
    pub cwd: Option<String>,
}

/// The message roles a chat request may use.
pub const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(param: &str, expected: &str, found: &Value) -> ApiError {
    ApiError::invalid(
        format!(
            "Invalid type for '{param}': expected {expected}, but got {}.",
            type_name(found)
        ),
        Some(param),
    )
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|err| {
            ApiError::invalid(
                format!(
                    "The request body is not valid JSON ({err}). Send a JSON object with `model` and `messages`."
                ),
                None,
            )
        })?;
        let Value::Object(object) = &value else {
            return Err(ApiError::invalid(
                format!(
                    "The request body must be a JSON object, but got {}.",
                    type_name(&value)
                ),
                None,
            ));
        };

        let model = match object.get("model") {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    "You must provide a model parameter.",
                    Some("model"),
                ))
            }
            Some(Value::String(model)) if model.trim().is_empty() => {
                return Err(ApiError::invalid(
                    "The 'model' parameter must not be empty.",
                    Some("model"),
                ))
            }
            Some(Value::String(model)) => model.clone(),
            Some(other) => return Err(wrong_type("model", "a string", other)),
        };

        let messages = match object.get("messages") {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    "Missing required parameter: 'messages'.",
                    Some("messages"),
                ))
            }
            Some(Value::Array(messages)) => messages,
            Some(other) => return Err(wrong_type("messages", "an array", other)),
        };
        if messages.is_empty() {
            return Err(ApiError::invalid(
                "'messages' must contain at least one message.",
                Some("messages"),
            ));
        }
        for (index, message) in messages.iter().enumerate() {
            validate_message(index, message)?;
        }
        if !messages.iter().any(|message| {
            message.get("role").and_then(Value::as_str) != Some("system")
                && message.get("role").and_then(Value::as_str) != Some("developer")
        }) {
            return Err(ApiError::invalid(
                "'messages' must contain at least one user or assistant message, not only system/developer messages.",
                Some("messages"),
            ));
        }

        let stream = optional_bool(object.get("stream"), "stream")?.unwrap_or(false);
        let include_usage = match object.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(options)) => {
                optional_bool(options.get("include_usage"), "stream_options.include_usage")?
                    .unwrap_or(false)
            }
            Some(other) => return Err(wrong_type("stream_options", "an object", other)),
        };

        for param in [
            "temperature",
            "top_p",
            "presence_penalty",
            "frequency_penalty",
        ] {
            match object.get(param) {
                None | Some(Value::Null) | Some(Value::Number(_)) => {}
                Some(other) => return Err(wrong_type(param, "a number", other)),
            }
        }
        for param in ["max_tokens", "max_completion_tokens", "seed"] {
            match object.get(param) {
                None | Some(Value::Null) => {}
                Some(Value::Number(number)) if number.is_i64() || number.is_u64() => {}
                Some(other) => return Err(wrong_type(param, "an integer", other)),
            }
        }
        match object.get("user") {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => return Err(wrong_type("user", "a string", other)),
        }

        match object.get("n") {
            None | Some(Value::Null) => {}
            Some(Value::Number(number)) if number.as_u64() == Some(1) => {}
            Some(Value::Number(number)) if number.is_u64() || number.is_i64() => {
                return Err(ApiError::invalid(
                    format!(
                        "n={number} is not supported: this proxy returns exactly one choice (n=1)."
                    ),
                    Some("n"),
                ))
            }
            Some(other) => return Err(wrong_type("n", "an integer", other)),
        }
        match object.get("tools") {
            None | Some(Value::Null) => {}
            Some(Value::Array(tools)) if tools.is_empty() => {}
            Some(Value::Array(_)) => {
                return Err(ApiError::invalid(
                    "Function calling ('tools') is not supported by this proxy yet; send the request without 'tools'.",
                    Some("tools"),
                ))
            }
            Some(other) => return Err(wrong_type("tools", "an array", other)),
        }
        match object.get("tool_choice") {
            None | Some(Value::Null) => {}
            Some(Value::String(choice)) if choice == "none" || choice == "auto" => {}
            Some(_) => return Err(ApiError::invalid(
                "'tool_choice' is not supported by this proxy yet (only \"none\" and \"auto\").",
                Some("tool_choice"),
            )),
        }
        match object.get("response_format") {
            None | Some(Value::Null) => {}
            Some(Value::Object(format))
                if format.get("type").and_then(Value::as_str) == Some("text") => {}
            Some(Value::Object(format)) => {
                let kind = format.get("type").and_then(Value::as_str).unwrap_or("?");
                return Err(ApiError::invalid(
                    format!("response_format type '{kind}' is not supported by this proxy yet; only 'text' is."),
                    Some("response_format"),
                ));
            }
            Some(other) => return Err(wrong_type("response_format", "an object", other)),
        }
        match object.get("stop") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) if items.is_empty() => {}
            Some(_) => {
                return Err(ApiError::invalid(
                    "'stop' sequences are not supported by this proxy; send the request without 'stop'.",
                    Some("stop"),
                ))
            }
        }
        if object.get("logprobs").and_then(Value::as_bool) == Some(true) {
            return Err(ApiError::invalid(
                "'logprobs' is not supported by this proxy.",
                Some("logprobs"),
            ));
        }

        let cwd = match object.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(metadata)) => match metadata.get("cwd") {
                None | Some(Value::Null) => None,
                Some(Value::String(cwd)) if cwd.is_empty() => {
                    return Err(ApiError::invalid(
                        "'metadata.cwd' must not be empty.",
                        Some("metadata.cwd"),
                    ))
                }
                Some(Value::String(cwd)) => Some(cwd.clone()),
                Some(other) => return Err(wrong_type("metadata.cwd", "a string", other)),
            },
            Some(other) => return Err(wrong_type("metadata", "an object", other)),
        };

        Ok(ChatRequest {
            model,
            messages: messages.clone(),
            stream,
            include_usage,
            cwd,
        })
    }
}

fn optional_bool(value: Option<&Value>, param: &str) -> Result<Option<bool>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(other) => Err(wrong_type(param, "a boolean", other)),
    }
}

fn validate_message(index: usize, message: &Value) -> Result<(), ApiError> {
    let param = format!("messages[{index}]");
    let Value::Object(object) = message else {
        return Err(wrong_type(&param, "an object", message));
    };
    let role = match object.get("role") {
        Some(Value::String(role)) => role,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                format!("Missing required parameter: '{param}.role'."),
                Some(&format!("{param}.role")),
            ))
        }
        Some(other) => return Err(wrong_type(&format!("{param}.role"), "a string", other)),
    };
    if !ROLES.contains(&role.as_str()) {
        return Err(ApiError::invalid(
            format!(
                "Invalid value for '{param}.role': '{}'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool' and 'function'.",
                role.chars().take(64).collect::<String>()
            ),
            Some(&format!("{param}.role")),
        ));
    }
    let content_param = format!("{param}.content");
    match object.get("content") {
        Some(Value::String(_)) => Ok(()),
        None | Some(Value::Null) if role == "assistant" => Ok(()),
        None | Some(Value::Null) => Err(ApiError::invalid(
            format!("Missing required parameter: '{content_param}'."),
            Some(&content_param),
        )),
        Some(Value::Array(parts)) => {
            for (part_index, part) in parts.iter().enumerate() {
                let part_param = format!("{content_param}[{part_index}]");
                let Value::Object(part_object) = part else {
                    return Err(wrong_type(&part_param, "an object", part));
                };
                match part_object.get("type") {
                    Some(Value::String(kind)) => {
                        if kind == "text" {
                            match part_object.get("text") {
                                Some(Value::String(_)) => {}
                                Some(other) => {
                                    return Err(wrong_type(
                                        &format!("{part_param}.text"),
                                        "a string",
                                        other,
                                    ))
                                }
                                None => {
                                    return Err(ApiError::invalid(
                                        format!("Missing required parameter: '{part_param}.text'."),
                                        Some(&format!("{part_param}.text")),
                                    ))
                                }
                            }
                        }
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            format!("Missing required parameter: '{part_param}.type'."),
                            Some(&format!("{part_param}.type")),
                        ))
                    }
                }
            }
            Ok(())
        }
        Some(other) => Err(wrong_type(
            &content_param,
            "a string or an array of parts",
            other,
        )),
    }
}

/// The non-streaming `chat.completion` body.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(body: &str) -> (String, Option<String>) {
        match ChatRequest::parse(body.as_bytes()) {
            Err(ApiError::InvalidRequest { message, param, .. }) => (message, param),
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_plain_request() {
        let request = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
                "stream_options":{"include_usage":true},"temperature":0.2,"max_tokens":5,
                "metadata":{"cwd":"/x"},"user":"u","seed":1,"tools":[],"response_format":{"type":"text"}}"#,
        )
        .unwrap();
        assert!(request.stream && request.include_usage);
        assert_eq!(request.cwd.as_deref(), Some("/x"));
    }

    #[test]
    fn names_the_offending_parameter() {
        let cases = [
            ("{", None),
            ("[]", None),
            (
                r#"{"messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
            ),
            (r#"{"model":5,"messages":[]}"#, Some("model")),
            (r#"{"model":"m"}"#, Some("messages")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (r#"{"model":"m","messages":"hi"}"#, Some("messages")),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                Some("messages[0].content"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                Some("messages[0].content"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#,
                Some("messages"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                Some("stream"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
                Some("n"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#,
                Some("tools"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
                Some("response_format"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
                Some("temperature"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"metadata":{"cwd":3}}"#,
                Some("metadata.cwd"),
            ),
        ];
        for (body, param) in cases {
            let (message, found) = error_of(body);
            assert_eq!(found.as_deref(), param, "{body}: {message}");
            assert!(!message.is_empty());
        }
    }
}
