//! OpenAI Responses request bodies → validated [`ResponsesRequest`] → the neutral [`TurnRequest`].
//!
//! `instructions` and `system`/`developer` messages of `input` become the instructions; `input` (a
//! string, or items) becomes the items in order: `message` items (`input_text`/`output_text`/
//! `input_image` parts) messages, `function_call` a [`Item::ToolCall`], `function_call_output` a
//! [`Item::ToolResult`]; `reasoning` items the client sends back are dropped (Codex keeps its own).
//! Function `tools` become the neutral tools; `text.format` json_schema/json_object the neutral output
//! format (refused by the pipeline while no engine carries it); `reasoning.effort` the reasoning effort.
//! `store` (default true) asks to keep the thread and `previous_response_id` (`resp_<request id>`) to
//! continue a kept one ([`ThreadKeeping`]). `web_search` is Codex's own tool, served by profiles that
//! let Codex use its tools (`tools = true`; checked once the request has a profile). `max_output_tokens`, `temperature`, `top_p`, `metadata` and
//! `parallel_tool_calls` are accepted and type-checked; the engines do not take them yet. Built-in tool
//! types are a 400 naming them.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use crate::api::chat::tools::valid_name;
use crate::api::error::ApiError;
use crate::turn::{
    Content, Item, OutputFormat, Role, ThreadKeeping, Tool, ToolChoice, TurnRequest,
};

#[derive(Debug, Deserialize)]
struct Wire {
    model: Option<Value>,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    text: Option<TextOptions>,
    #[serde(default)]
    reasoning: Option<Reasoning>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    metadata: Option<std::collections::HashMap<String, String>>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<WireItem>),
}

/// One input item. A message may come without `type` (the "easy" form: `role` and `content`).
#[derive(Debug, Deserialize)]
struct WireItem {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<MessageContent>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(default)]
    output: Option<MessageContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    image_url: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TextOptions {
    #[serde(default)]
    format: Option<Format>,
}

#[derive(Debug, Deserialize)]
struct Format {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Reasoning {
    #[serde(default)]
    effort: Option<String>,
    #[serde(default)]
    summary: Option<String>,
}

/// A validated Responses request, with what the response object echoes back.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    pub model: String,
    pub stream: bool,
    pub cwd: Option<String>,
    pub turn: TurnRequest,
    pub echo: Echo,
    /// The request lists Codex's own `web_search` tool (served only by profiles with Codex's tools).
    pub web_search: bool,
}

/// Request fields the `response` object repeats.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    pub instructions: Option<String>,
    pub metadata: serde_json::Map<String, Value>,
    pub parallel_tool_calls: bool,
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    pub max_output_tokens: Option<u64>,
    pub reasoning: Value,
    pub store: bool,
    pub previous_response_id: Option<String>,
    pub text: Value,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

impl ResponsesRequest {
    pub fn parse(body: &[u8]) -> Result<ResponsesRequest, ApiError> {
        let wire: Wire = serde_json::from_slice(body).map_err(|err| {
            ApiError::invalid(
                format!("The request body is not a valid Responses request: {err}."),
                None,
            )
        })?;
        let model = match wire.model {
            Some(Value::String(model)) if !model.is_empty() => model,
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(invalid("Missing required parameter: 'model'.", "model"))
            }
            Some(_) => {
                return Err(invalid(
                    "Invalid type for 'model': expected a string.",
                    "model",
                ))
            }
        };
        let continues = match wire.previous_response_id.as_deref() {
            None => None,
            Some(id) => match id.strip_prefix("resp_") {
                Some(request_id) if !request_id.is_empty() => Some(request_id.to_string()),
                _ => {
                    return Err(invalid(
                        format!("Invalid 'previous_response_id': '{}'. Expected an id that begins with 'resp_'.", id.chars().take(80).collect::<String>()),
                        "previous_response_id",
                    ))
                }
            },
        };
        let store = wire.store.unwrap_or(true);
        let mut instructions: Vec<String> = wire.instructions.clone().into_iter().collect();
        let items = match wire.input {
            None => return Err(invalid("Missing required parameter: 'input'.", "input")),
            Some(Input::Text(text)) => vec![Item::text(Role::User, text)],
            Some(Input::Items(items)) => parse_items(items, &mut instructions)?,
        };
        if items.is_empty() {
            return Err(invalid("'input' must contain at least one item.", "input"));
        }
        let raw_tools = wire.tools.unwrap_or_default();
        let (tools, web_search) = parse_tools(&raw_tools)?;
        let tool_choice = tool_choice_of(wire.tool_choice.as_ref(), &tools)?;
        let format = wire.text.and_then(|text| text.format);
        let (output, text_echo) = match format {
            None => (None, serde_json::json!({"format": {"type": "text"}})),
            Some(format) => {
                let echo = serde_json::json!({"format": {
                    "type": format.kind, "name": format.name, "schema": format.schema, "strict": format.strict,
                }});
                let output = match format.kind.as_str() {
                    "text" => None,
                    "json_object" => Some(OutputFormat::JsonObject),
                    "json_schema" => {
                        let (Some(name), Some(schema)) = (format.name, format.schema) else {
                            return Err(invalid(
                                "'text.format' of type json_schema needs 'name' and 'schema'.",
                                "text.format",
                            ));
                        };
                        let schema =
                            crate::turn::output::strict_schema(&schema).map_err(|problem| {
                                let at = format!("text.format.schema{}", problem.path);
                                invalid(
                                    format!(
                                        "Invalid schema for text.format '{name}' at '{at}': {}. Codex sends every output schema to the model in strict mode, which this schema cannot use.",
                                        problem.message
                                    ),
                                    &at,
                                )
                            })?;
                        Some(OutputFormat::JsonSchema {
                            name,
                            schema,
                            strict: format.strict.unwrap_or(false),
                        })
                    }
                    other => {
                        return Err(invalid(
                            format!("Invalid value for 'text.format.type': '{other}'; expected text, json_object or json_schema."),
                            "text.format.type",
                        ))
                    }
                };
                (output, echo)
            }
        };
        let (reasoning_effort, reasoning_echo) = match wire.reasoning {
            None => (None, serde_json::json!({"effort": null, "summary": null})),
            Some(reasoning) => {
                if let Some(effort) = reasoning.effort.as_deref() {
                    if !["minimal", "low", "medium", "high", "xhigh", "none"].contains(&effort) {
                        return Err(invalid(
                            format!("Invalid value for 'reasoning.effort': '{effort}'; expected minimal, low, medium or high."),
                            "reasoning.effort",
                        ));
                    }
                }
                (
                    reasoning.effort.clone(),
                    serde_json::json!({"effort": reasoning.effort, "summary": reasoning.summary}),
                )
            }
        };
        let mut metadata = wire.metadata.unwrap_or_default();
        let cwd = metadata.remove("cwd");
        if cwd.as_deref() == Some("") {
            return Err(invalid("'metadata.cwd' must not be empty.", "metadata.cwd"));
        }
        let instructions = instructions.join("\n\n");
        Ok(ResponsesRequest {
            model,
            stream: wire.stream.unwrap_or(false),
            cwd: cwd.clone(),
            turn: TurnRequest {
                instructions: (!instructions.is_empty()).then_some(instructions),
                items,
                tools,
                tool_choice,
                output,
                reasoning_effort,
                thread: ThreadKeeping {
                    keep: store,
                    continues,
                },
                max_output_tokens: wire.max_output_tokens.filter(|tokens| *tokens > 0),
                ..TurnRequest::default()
            },
            echo: Echo {
                instructions: wire.instructions,
                metadata: metadata
                    .into_iter()
                    .chain(cwd.map(|cwd| ("cwd".to_string(), cwd)))
                    .map(|(key, value)| (key, Value::String(value)))
                    .collect(),
                parallel_tool_calls: wire.parallel_tool_calls.unwrap_or(true),
                tool_choice: wire.tool_choice.unwrap_or_else(|| Value::from("auto")),
                tools: raw_tools,
                max_output_tokens: wire.max_output_tokens,
                reasoning: reasoning_echo,
                store,
                previous_response_id: wire.previous_response_id,
                text: text_echo,
                temperature: wire.temperature,
                top_p: wire.top_p,
            },
            web_search,
        })
    }
}

/// Input items → neutral items; system and developer messages add to `instructions`.
fn parse_items(wire: Vec<WireItem>, instructions: &mut Vec<String>) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::with_capacity(wire.len());
    let mut calls_made: HashSet<String> = HashSet::new();
    for (index, item) in wire.into_iter().enumerate() {
        let param = format!("input[{index}]");
        match item.kind.as_deref().unwrap_or("message") {
            "message" => {
                let role = item.role.as_deref().unwrap_or("");
                let content = parts(item.content, &param)?;
                match role {
                    "user" => items.push(Item::Message {
                        role: Role::User,
                        content,
                    }),
                    "assistant" => items.push(Item::Message {
                        role: Role::Assistant,
                        content,
                    }),
                    "system" | "developer" => {
                        let text: Vec<String> = content
                            .into_iter()
                            .filter_map(|part| match part {
                                Content::Text(text) => Some(text),
                                Content::Image { .. } => None,
                            })
                            .collect();
                        instructions.push(text.join("\n"));
                    }
                    other => {
                        return Err(invalid(
                            format!("Invalid value for '{param}.role': '{other}'; expected user, assistant, system or developer."),
                            &format!("{param}.role"),
                        ))
                    }
                }
            }
            "function_call" => {
                let (Some(call_id), Some(name)) = (item.call_id, item.name) else {
                    return Err(invalid(
                        format!("'{param}' of type function_call needs 'call_id' and 'name'."),
                        &param,
                    ));
                };
                calls_made.insert(call_id.clone());
                items.push(Item::ToolCall {
                    call_id,
                    name,
                    arguments: item.arguments.unwrap_or_else(|| "{}".to_string()),
                });
            }
            "function_call_output" => {
                let Some(call_id) = item.call_id else {
                    return Err(invalid(
                        format!("Missing required parameter: '{param}.call_id'."),
                        &format!("{param}.call_id"),
                    ));
                };
                if !calls_made.contains(&call_id) {
                    return Err(invalid(
                        format!("No tool call found for function call output with call_id {}.", call_id.chars().take(80).collect::<String>()),
                        &format!("{param}.call_id"),
                    ));
                }
                let output = parts(item.output, &param)?
                    .into_iter()
                    .filter_map(|part| match part {
                        Content::Text(text) => Some(text),
                        Content::Image { .. } => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                items.push(Item::ToolResult {
                    call_id,
                    output,
                    is_error: false,
                });
            }
            "reasoning" => {}
            other => {
                return Err(invalid(
                    format!("'{param}.type' '{other}' is not supported by this proxy; input items may be message, function_call, function_call_output or reasoning."),
                    &format!("{param}.type"),
                ))
            }
        }
    }
    Ok(items)
}

/// A message's content (a string or parts) as neutral content.
fn parts(content: Option<MessageContent>, param: &str) -> Result<Vec<Content>, ApiError> {
    match content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(text)) => Ok(vec![Content::Text(text)]),
        Some(MessageContent::Parts(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(index, part)| match part.kind.as_str() {
                "input_text" | "output_text" | "text" | "refusal" => {
                    Ok(Content::Text(part.text.unwrap_or_default()))
                }
                "input_image" => match part.image_url {
                    Some(url) => {
                        ApiError::image(&url, &format!("{param}.content[{index}].image_url"))?;
                        Ok(Content::Image {
                            url,
                            detail: part.detail,
                        })
                    }
                    None => Err(invalid(
                        format!("'{param}.content[{index}]' needs an 'image_url' (file ids are not supported)."),
                        &format!("{param}.content[{index}].image_url"),
                    )),
                },
                other => Err(invalid(
                    format!("'{param}.content[{index}].type' '{other}' is not supported by this proxy."),
                    &format!("{param}.content[{index}].type"),
                )),
            })
            .collect(),
    }
}

/// `tool_choice`: `auto`, `none`, `required`, or `{"type":"function","name":…}`.
fn tool_choice_of(value: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let invalid_choice = || {
        invalid(
            "Invalid value for 'tool_choice': expected \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"name\":…}.",
            "tool_choice",
        )
    };
    let choice = match value {
        None => return Ok(ToolChoice::Auto),
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => return Ok(ToolChoice::Auto),
            "none" => return Ok(ToolChoice::None),
            "required" => ToolChoice::Required,
            _ => return Err(invalid_choice()),
        },
        Some(Value::Object(object))
            if object.get("type").and_then(Value::as_str) == Some("function") =>
        {
            match object.get("name") {
                Some(Value::String(name)) => ToolChoice::Named(name.clone()),
                _ => {
                    return Err(invalid(
                        "Missing required parameter: 'tool_choice.name'.",
                        "tool_choice.name",
                    ))
                }
            }
        }
        Some(_) => return Err(invalid_choice()),
    };
    if tools.is_empty() {
        return Err(invalid(
            "'tool_choice' requires a tool call, but the request has no 'tools'.",
            "tool_choice",
        ));
    }
    if let ToolChoice::Named(name) = &choice {
        if !tools.iter().any(|tool| &tool.name == name) {
            return Err(invalid(
                format!(
                    "Invalid 'tool_choice.name': '{}' is not one of the request's tools.",
                    name.chars().take(80).collect::<String>()
                ),
                "tool_choice.name",
            ));
        }
    }
    Ok(choice)
}

/// Function tools, and whether Codex's own `web_search` is asked for; other built-in tool types are
/// refused by name.
fn parse_tools(raw: &[Value]) -> Result<(Vec<Tool>, bool), ApiError> {
    let mut tools = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    let mut web_search = false;
    for (index, entry) in raw.iter().enumerate() {
        let param = format!("tools[{index}]");
        match entry.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some("web_search" | "web_search_preview") => {
                web_search = true;
                continue;
            }
            Some(kind) => {
                return Err(invalid(
                    format!("The tool type '{kind}' is not supported by this proxy; only 'function' tools are."),
                    &format!("{param}.type"),
                ))
            }
            None => {
                return Err(invalid(
                    format!("Missing required parameter: '{param}.type'."),
                    &format!("{param}.type"),
                ))
            }
        }
        let name = entry.get("name").and_then(Value::as_str).unwrap_or("");
        if !valid_name(name) {
            return Err(invalid(
                format!("Invalid '{param}.name': '{}'. Function names must match ^[a-zA-Z0-9_-]{{1,64}}$.", name.chars().take(80).collect::<String>()),
                &format!("{param}.name"),
            ));
        }
        if !names.insert(name.to_string()) {
            return Err(invalid(
                format!("Duplicate function name '{name}' in 'tools'."),
                &format!("{param}.name"),
            ));
        }
        let parameters = match entry.get("parameters") {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(schema @ Value::Object(_)) => schema.clone(),
            Some(_) => {
                return Err(invalid(
                    format!(
                        "Invalid type for '{param}.parameters': expected a JSON Schema object."
                    ),
                    &format!("{param}.parameters"),
                ))
            }
        };
        tools.push(Tool {
            name: name.to_string(),
            description: entry
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters,
            strict: entry
                .get("strict")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
    Ok((tools, web_search))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<ResponsesRequest, ApiError> {
        ResponsesRequest::parse(body.to_string().as_bytes())
    }

    #[test]
    fn maps_input_items_and_instructions() {
        let request = parse(json!({
            "model": "m",
            "instructions": "Be brief.",
            "reasoning": {"effort": "high", "summary": "auto"},
            "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ]
        }))
        .unwrap();
        let turn = request.turn;
        assert_eq!(
            turn.instructions.as_deref(),
            Some("Be brief.\n\nUse tools.")
        );
        assert_eq!(turn.reasoning_effort.as_deref(), Some("high"));
        assert_eq!(
            turn.items,
            vec![
                Item::text(Role::User, "hi"),
                Item::ToolCall {
                    call_id: "c1".into(),
                    name: "lookup".into(),
                    arguments: "{}".into()
                },
                Item::ToolResult {
                    call_id: "c1".into(),
                    output: "42".into(),
                    is_error: false
                },
            ]
        );
        assert!(request.echo.store);
    }

    #[test]
    fn refusals_name_the_parameter() {
        let cases = [
            (json!({"model": "m"}), "input"),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "m", "input": "x", "previous_response_id": "msg_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": "x", "tool_choice": "required"}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "x", "output": "y"}]}),
                "input[0].call_id",
            ),
        ];
        for (body, param) in cases {
            let error = parse(body).unwrap_err();
            assert_eq!(error.body()["error"]["param"], param, "{error}");
        }
        let structured = parse(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}}})).unwrap();
        assert!(structured.turn.output.is_some());
    }
}
