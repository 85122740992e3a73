//! Function calling in OpenAI chat requests: `tools` and `tool_choice` (or the legacy `functions` and
//! `function_call`) → the neutral [`Tool`]s and [`ToolChoice`], the `tool_calls` of assistant messages,
//! and the check that every `tool` message answers a call made earlier in the conversation. Every
//! refusal is a 400 naming the parameter.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::api::error::ApiError;
use crate::turn::{Tool, ToolCall, ToolChoice};

/// Longest function name OpenAI (and Codex's dynamic tools) accept.
const MAX_NAME_LEN: usize = 64;

/// One entry of an assistant message's `tool_calls`.
#[derive(Debug, Clone, Deserialize)]
pub struct WireToolCall {
    id: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: WireFunctionCall,
}

#[derive(Debug, Clone, Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

impl WireToolCall {
    /// The neutral call, or a 400 naming `param` (`messages[i].tool_calls[j]`).
    pub fn into_call(self, param: &str) -> Result<ToolCall, ApiError> {
        if self.kind.as_deref().is_some_and(|kind| kind != "function") {
            return Err(ApiError::invalid(
                format!(
                    "Invalid value for '{param}.type': only 'function' tool calls are supported."
                ),
                Some(&format!("{param}.type")),
            ));
        }
        if self.id.is_empty() {
            return Err(ApiError::invalid(
                format!("'{param}.id' must not be empty."),
                Some(&format!("{param}.id")),
            ));
        }
        Ok(ToolCall {
            call_id: self.id,
            name: self.function.name,
            arguments: self.function.arguments,
        })
    }
}

/// Whether `name` is a function name OpenAI and Codex accept: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

fn invalid_name(param: &str, name: &str) -> ApiError {
    ApiError::invalid(
        format!(
            "Invalid '{param}': '{}'. Function names must match ^[a-zA-Z0-9_-]{{1,64}}$.",
            name.chars().take(80).collect::<String>()
        ),
        Some(param),
    )
}

/// `tools`: function tools only, names valid and unique.
pub fn parse_tools(raw: Option<&RawValue>) -> Result<Vec<Tool>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let entries: Vec<Value> = serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::invalid(
            "Invalid type for 'tools': expected an array of tools.",
            Some("tools"),
        )
    })?;
    let mut tools = Vec::with_capacity(entries.len());
    let mut names = HashSet::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let tool = parse_tool(index, entry)?;
        if !names.insert(tool.name.clone()) {
            let param = format!("tools[{index}].function.name");
            return Err(ApiError::invalid(
                format!(
                    "Duplicate function name '{}' in 'tools': each tool needs its own name.",
                    tool.name
                ),
                Some(&param),
            ));
        }
        tools.push(tool);
    }
    Ok(tools)
}

fn parse_tool(index: usize, entry: Value) -> Result<Tool, ApiError> {
    let param = format!("tools[{index}]");
    if entry.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::invalid(
            format!("Invalid value for '{param}.type': only 'function' tools are supported."),
            Some(&format!("{param}.type")),
        ));
    }
    let Some(function) = entry.get("function").and_then(Value::as_object) else {
        return Err(ApiError::invalid(
            format!("Missing required parameter: '{param}.function'."),
            Some(&format!("{param}.function")),
        ));
    };
    parse_function(&format!("{param}.function"), function)
}

/// The legacy `functions`: `[{name, description, parameters}]`, the same checks as `tools`.
pub fn parse_functions(raw: Option<&RawValue>) -> Result<Vec<Tool>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let entries: Vec<Value> = serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::invalid(
            "Invalid type for 'functions': expected an array of functions.",
            Some("functions"),
        )
    })?;
    let mut functions: Vec<Tool> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let param = format!("functions[{index}]");
        let Some(function) = entry.as_object() else {
            return Err(ApiError::invalid(
                format!("Invalid type for '{param}': expected an object."),
                Some(&param),
            ));
        };
        let function = parse_function(&param, function)?;
        if functions
            .iter()
            .any(|earlier| earlier.name == function.name)
        {
            return Err(ApiError::invalid(
                format!(
                    "Duplicate function name '{}' in 'functions': each function needs its own name.",
                    function.name
                ),
                Some(&format!("{param}.name")),
            ));
        }
        functions.push(function);
    }
    Ok(functions)
}

/// The legacy `function_call`: `none`, `auto` or `{name}` (one of `functions`).
pub fn parse_function_call(
    value: Option<Value>,
    functions: &[Tool],
) -> Result<ToolChoice, ApiError> {
    match value {
        None => Ok(ToolChoice::Auto),
        Some(Value::String(choice)) if choice == "auto" => Ok(ToolChoice::Auto),
        Some(Value::String(choice)) if choice == "none" => Ok(ToolChoice::None),
        Some(Value::Object(object)) => match object.get("name") {
            Some(Value::String(name)) if functions.iter().any(|f| &f.name == name) => {
                Ok(ToolChoice::Named(name.clone()))
            }
            Some(Value::String(name)) => Err(ApiError::invalid(
                format!(
                    "Invalid 'function_call': the function '{}' is not in 'functions'.",
                    name.chars().take(80).collect::<String>()
                ),
                Some("function_call.name"),
            )),
            _ => Err(ApiError::invalid(
                "Missing required parameter: 'function_call.name'.",
                Some("function_call.name"),
            )),
        },
        Some(_) => Err(ApiError::invalid(
            "Invalid value for 'function_call': expected \"none\", \"auto\" or {\"name\":…}.",
            Some("function_call"),
        )),
    }
}

/// One function definition (`tools[i].function` or `functions[i]`), `param` naming it.
fn parse_function(
    param: &str,
    function: &serde_json::Map<String, Value>,
) -> Result<Tool, ApiError> {
    let name_param = format!("{param}.name");
    let name = match function.get("name") {
        Some(Value::String(name)) if valid_name(name) => name.clone(),
        Some(Value::String(name)) => return Err(invalid_name(&name_param, name)),
        _ => {
            return Err(ApiError::invalid(
                format!("Missing required parameter: '{name_param}'."),
                Some(&name_param),
            ))
        }
    };
    let description = match function.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("Invalid type for '{param}.description': expected a string."),
                Some(&format!("{param}.description")),
            ))
        }
    };
    let parameters = match function.get("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(schema @ Value::Object(_)) => schema.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                format!("Invalid type for '{param}.parameters': expected a JSON Schema object."),
                Some(&format!("{param}.parameters")),
            ))
        }
    };
    let strict = function
        .get("strict")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Tool {
        name,
        description,
        parameters,
        strict,
    })
}

/// `tool_choice`: `none`, `auto`, `required` or `{"type":"function","function":{"name":…}}`. A choice
/// that requires a call needs `tools`, and a named function must be one of them. (How `required` and
/// a named function are enforced: see `engine::app_server`, `TurnContext::answer`.)
pub fn parse_tool_choice(value: Option<Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "Invalid value for 'tool_choice': expected \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":…}}.",
            Some("tool_choice"),
        )
    };
    let choice = match value {
        None => return Ok(ToolChoice::Auto),
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => return Ok(ToolChoice::Auto),
            "none" => return Ok(ToolChoice::None),
            "required" => ToolChoice::Required,
            _ => return Err(invalid()),
        },
        Some(Value::Object(object)) => {
            if object.get("type").and_then(Value::as_str) != Some("function") {
                return Err(invalid());
            }
            match object.get("function").and_then(|f| f.get("name")) {
                Some(Value::String(name)) => ToolChoice::Named(name.clone()),
                _ => {
                    return Err(ApiError::invalid(
                        "Missing required parameter: 'tool_choice.function.name'.",
                        Some("tool_choice.function.name"),
                    ))
                }
            }
        }
        Some(_) => return Err(invalid()),
    };
    if tools.is_empty() {
        return Err(ApiError::invalid(
            "'tool_choice' requires a tool call, but the request has no 'tools'.",
            Some("tool_choice"),
        ));
    }
    if let ToolChoice::Named(name) = &choice {
        if !tools.iter().any(|tool| &tool.name == name) {
            return Err(ApiError::invalid(
                format!(
                    "Invalid 'tool_choice': the function '{}' is not in 'tools'.",
                    name.chars().take(80).collect::<String>()
                ),
                Some("tool_choice.function.name"),
            ));
        }
    }
    Ok(choice)
}

/// Every `tool` message with a `tool_call_id` must answer a call of an earlier assistant message.
/// `calls[i]` and `answers[i]` are message `i`'s `tool_calls` and `tool_call_id`.
pub fn check_answers<'a>(
    messages: impl Iterator<Item = (&'a [ToolCall], Option<&'a str>)>,
) -> Result<(), ApiError> {
    let mut made: HashSet<&str> = HashSet::new();
    for (index, (calls, answer)) in messages.enumerate() {
        made.extend(calls.iter().map(|call| call.call_id.as_str()));
        if let Some(id) = answer {
            if !made.contains(id) {
                let param = format!("messages[{index}].tool_call_id");
                return Err(ApiError::invalid(
                    format!(
                        "Invalid '{param}': '{}' does not answer any tool call of an earlier assistant message. Send the assistant message with its 'tool_calls' before the 'tool' messages that answer them.",
                        id.chars().take(80).collect::<String>()
                    ),
                    Some(&param),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_openai_pattern() {
        assert!(valid_name("get_weather-2"));
        assert!(valid_name(&"a".repeat(64)));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(!valid_name("has space"));
        assert!(!valid_name("dot.ted"));
    }
}
