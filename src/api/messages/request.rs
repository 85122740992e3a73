//! Anthropic Messages request bodies → validated [`MessagesRequest`] → the neutral [`TurnRequest`].
//!
//! `system` (a string or text blocks; `cache_control` is accepted and ignored) becomes the instructions;
//! each message's blocks become items in order: `text` and `image` blocks a message, `tool_use` a
//! [`Item::ToolCall`] (its `input` as JSON text), `tool_result` a [`Item::ToolResult`] (with
//! `is_error`). Earlier `thinking` blocks of assistant turns are dropped (Codex keeps its own reasoning).
//! `thinking.budget_tokens` picks a reasoning effort ([`effort_of_budget`]). Every refusal is a 400
//! naming the parameter; what the proxy cannot honour is refused rather than
//! silently dropped.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use crate::api::chat::tools::valid_name;
use crate::api::error::ApiError;
use crate::turn::{Content, Item, Role, Tool, ToolChoice, TurnRequest};

/// A Messages request as the client sent it (unknown members, such as `metadata.user_id`, are accepted
/// and ignored).
#[derive(Debug, Deserialize)]
struct Wire {
    model: Option<Value>,
    #[serde(default)]
    system: Option<System>,
    messages: Option<Vec<WireMessage>>,
    max_tokens: Option<Value>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<WireTool>>,
    #[serde(default)]
    tool_choice: Option<WireToolChoice>,
    #[serde(default)]
    thinking: Option<Thinking>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Blocks(Vec<SystemBlock>),
}

#[derive(Debug, Deserialize)]
struct SystemBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: String,
    content: MessageContent,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Blocks(Vec<Block>),
}

/// One content block; unknown types are named in the 400.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<ToolResultContent>,
        #[serde(default)]
        is_error: Option<bool>,
    },
    Thinking {},
    RedactedThinking {},
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource {
    Base64 {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
struct WireTool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct WireToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    budget_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    /// The proxy's own extension, as in chat's `metadata.cwd`.
    #[serde(default)]
    cwd: Option<String>,
}

/// A validated Messages request.
#[derive(Debug, Clone)]
pub struct MessagesRequest {
    pub model: String,
    pub stream: bool,
    pub cwd: Option<String>,
    pub turn: TurnRequest,
}

/// The most `stop_sequences` a request may send: each is searched in every streamed delta.
const MAX_STOP_SEQUENCES: usize = 16;

/// What a body must carry: `max_tokens` only for `POST /v1/messages` (not for `count_tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Create,
    CountTokens,
}

fn invalid(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(message, Some(param))
}

/// The reasoning effort of a thinking budget: under 4,096 tokens `low`, under 16,384 `medium`, from
/// 16,384 on `high` (Anthropic's minimum budget is 1,024).
pub fn effort_of_budget(budget_tokens: u64) -> &'static str {
    match budget_tokens {
        0..=4095 => "low",
        4096..=16383 => "medium",
        _ => "high",
    }
}

impl MessagesRequest {
    pub fn parse(body: &[u8], purpose: Purpose) -> Result<MessagesRequest, ApiError> {
        let wire: Wire = serde_json::from_slice(body).map_err(|err| {
            ApiError::invalid(
                format!("The request body is not a valid Messages request: {err}."),
                None,
            )
        })?;
        let model = match wire.model {
            Some(Value::String(model)) if !model.is_empty() => model,
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(invalid("model: Field required", "model"))
            }
            Some(_) => return Err(invalid("model: Input should be a valid string", "model")),
        };
        let mut max_output_tokens = None;
        if purpose == Purpose::Create {
            match wire.max_tokens {
                None | Some(Value::Null) => {
                    return Err(invalid("max_tokens: Field required", "max_tokens"))
                }
                Some(Value::Number(number)) if number.as_u64().is_some_and(|n| n >= 1) => {
                    max_output_tokens = number.as_u64();
                }
                Some(_) => {
                    return Err(invalid(
                        "max_tokens: Input should be an integer greater than or equal to 1",
                        "max_tokens",
                    ))
                }
            }
        }
        let _ignored = (wire.temperature, wire.top_p, wire.top_k);
        let stop = wire.stop_sequences.unwrap_or_default();
        if stop.len() > MAX_STOP_SEQUENCES {
            return Err(invalid(
                format!(
                    "stop_sequences: at most {MAX_STOP_SEQUENCES} sequences, got {}.",
                    stop.len()
                ),
                "stop_sequences",
            ));
        }
        if stop.iter().any(String::is_empty) {
            return Err(invalid(
                "stop_sequences: a sequence must not be empty.",
                "stop_sequences",
            ));
        }
        let instructions = match wire.system {
            None => None,
            Some(System::Text(text)) => Some(text),
            Some(System::Blocks(blocks)) => {
                let mut texts = Vec::with_capacity(blocks.len());
                for (index, block) in blocks.into_iter().enumerate() {
                    if block.kind != "text" {
                        return Err(invalid(
                            format!("system.{index}.type: only 'text' system blocks are supported, not '{}'.", block.kind),
                            "system",
                        ));
                    }
                    texts.push(block.text);
                }
                Some(texts.join("\n\n"))
            }
        }
        .filter(|text| !text.is_empty());
        let Some(messages) = wire.messages else {
            return Err(invalid("messages: Field required", "messages"));
        };
        if messages.is_empty() {
            return Err(invalid(
                "messages: at least one message is required",
                "messages",
            ));
        }
        let items = parse_messages(messages)?;
        let tools = parse_tools(wire.tools.unwrap_or_default())?;
        let tool_choice = tool_choice_of(wire.tool_choice, &tools)?;
        let reasoning_effort = match wire.thinking {
            None => None,
            Some(thinking) => match (thinking.kind.as_str(), thinking.budget_tokens) {
                ("enabled", Some(budget)) => Some(effort_of_budget(budget).to_string()),
                ("enabled", None) => {
                    return Err(invalid(
                        "thinking.budget_tokens: Field required",
                        "thinking.budget_tokens",
                    ))
                }
                ("disabled" | "adaptive", _) => None,
                (other, _) => {
                    return Err(invalid(
                        format!("thinking.type: expected 'enabled' or 'disabled', not '{other}'."),
                        "thinking.type",
                    ))
                }
            },
        };
        let cwd = match wire.metadata {
            Some(Metadata { cwd: Some(cwd) }) if cwd.is_empty() => {
                return Err(invalid("metadata.cwd must not be empty.", "metadata.cwd"))
            }
            Some(metadata) => metadata.cwd,
            None => None,
        };
        Ok(MessagesRequest {
            model,
            stream: wire.stream.unwrap_or(false),
            cwd,
            turn: TurnRequest {
                instructions,
                items,
                tools,
                tool_choice,
                output: None,
                reasoning_effort,
                max_output_tokens,
                stop,
                ..TurnRequest::default()
            },
        })
    }
}

/// The messages' blocks → neutral items, in order; every `tool_result` must answer an earlier
/// `tool_use`.
fn parse_messages(messages: Vec<WireMessage>) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::new();
    let mut calls_made: HashSet<String> = HashSet::new();
    for (index, message) in messages.into_iter().enumerate() {
        let role = match message.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(invalid(
                    format!(
                        "messages.{index}.role: expected 'user' or 'assistant', not '{other}'."
                    ),
                    &format!("messages.{index}.role"),
                ))
            }
        };
        let blocks = match message.content {
            MessageContent::Text(text) => vec![Block::Text { text }],
            MessageContent::Blocks(blocks) => blocks,
        };
        let mut content: Vec<Content> = Vec::new();
        let flush = |content: &mut Vec<Content>, items: &mut Vec<Item>| {
            if !content.is_empty() {
                items.push(Item::Message {
                    role,
                    content: std::mem::take(content),
                });
            }
        };
        for (block_index, block) in blocks.into_iter().enumerate() {
            let param = format!("messages.{index}.content.{block_index}");
            match block {
                Block::Text { text } => content.push(Content::Text(text)),
                Block::Image { source } => content.push(image(source, &param)?),
                Block::ToolUse { id, name, input } => {
                    if role != Role::Assistant {
                        return Err(invalid(
                            format!("{param}: tool_use blocks belong in assistant messages."),
                            &param,
                        ));
                    }
                    if id.is_empty() {
                        return Err(invalid(format!("{param}.id must not be empty."), &param));
                    }
                    flush(&mut content, &mut items);
                    calls_made.insert(id.clone());
                    let arguments = if input.is_null() {
                        "{}".to_string()
                    } else {
                        input.to_string()
                    };
                    items.push(Item::ToolCall {
                        call_id: id,
                        name,
                        arguments,
                    });
                }
                Block::ToolResult {
                    tool_use_id,
                    content: result,
                    is_error,
                } => {
                    if role != Role::User {
                        return Err(invalid(
                            format!("{param}: tool_result blocks belong in user messages."),
                            &param,
                        ));
                    }
                    if !calls_made.contains(&tool_use_id) {
                        return Err(invalid(
                            format!("{param}.tool_use_id: '{}' does not answer a tool_use block of an earlier assistant message.", tool_use_id.chars().take(80).collect::<String>()),
                            &format!("{param}.tool_use_id"),
                        ));
                    }
                    flush(&mut content, &mut items);
                    items.push(Item::ToolResult {
                        call_id: tool_use_id,
                        output: tool_result_text(result, &param)?,
                        is_error: is_error.unwrap_or(false),
                    });
                }
                Block::Thinking {} | Block::RedactedThinking {} => {}
                Block::Other => {
                    return Err(invalid(
                        format!("{param}.type: this proxy accepts text, image, tool_use, tool_result and thinking blocks."),
                        &format!("{param}.type"),
                    ))
                }
            }
        }
        flush(&mut content, &mut items);
    }
    if items.is_empty() {
        return Err(invalid(
            "messages: the conversation has no content.",
            "messages",
        ));
    }
    Ok(items)
}

/// An image block's source as the neutral image URL (`data:` for base64).
fn image(source: ImageSource, param: &str) -> Result<Content, ApiError> {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } if url.starts_with("https://") || url.starts_with("http://") => {
            url
        }
        ImageSource::Url { .. } | ImageSource::Other => {
            return Err(invalid(
                format!("{param}.source: expected a base64 source or an http(s) url."),
                &format!("{param}.source"),
            ))
        }
    };
    ApiError::image(&url, &format!("{param}.source"))?;
    Ok(Content::Image { url, detail: None })
}

/// A `tool_result`'s content as text: a string, or its text blocks joined by newlines.
fn tool_result_text(content: Option<ToolResultContent>, param: &str) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(ToolResultContent::Text(text)) => Ok(text),
        Some(ToolResultContent::Blocks(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for block in blocks {
                match block {
                    Block::Text { text } => texts.push(text),
                    _ => {
                        return Err(invalid(
                            format!(
                            "{param}.content: only text blocks are supported inside a tool_result."
                        ),
                            &format!("{param}.content"),
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
    }
}

/// `tool_choice`: `auto`, `none`, `any` (a call is required) or `tool` (that tool must be called).
fn tool_choice_of(choice: Option<WireToolChoice>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    let choice = match choice {
        None => return Ok(ToolChoice::Auto),
        Some(choice) => choice,
    };
    let choice = match (choice.kind.as_str(), choice.name) {
        ("auto", _) => return Ok(ToolChoice::Auto),
        ("none", _) => return Ok(ToolChoice::None),
        ("any", _) => ToolChoice::Required,
        ("tool", Some(name)) => ToolChoice::Named(name),
        ("tool", None) => {
            return Err(invalid(
                "tool_choice.name: Field required",
                "tool_choice.name",
            ))
        }
        (other, _) => {
            return Err(invalid(
                format!(
                    "tool_choice.type: expected 'auto', 'any', 'tool' or 'none', not '{other}'."
                ),
                "tool_choice.type",
            ))
        }
    };
    if tools.is_empty() {
        return Err(invalid(
            "tool_choice requires a tool call, but the request has no tools.",
            "tool_choice",
        ));
    }
    if let ToolChoice::Named(name) = &choice {
        if !tools.iter().any(|tool| &tool.name == name) {
            return Err(invalid(
                format!(
                    "tool_choice.name: '{}' is not one of the request's tools.",
                    name.chars().take(80).collect::<String>()
                ),
                "tool_choice.name",
            ));
        }
    }
    Ok(choice)
}

/// Client tools: custom tools with a valid, unique name; Anthropic's server tools are refused by type.
fn parse_tools(wire: Vec<WireTool>) -> Result<Vec<Tool>, ApiError> {
    let mut tools = Vec::with_capacity(wire.len());
    let mut names = HashSet::new();
    for (index, tool) in wire.into_iter().enumerate() {
        let param = format!("tools.{index}");
        if let Some(kind) = tool.kind.as_deref().filter(|kind| *kind != "custom") {
            return Err(invalid(
                format!("{param}.type: the tool type '{kind}' is not supported by this proxy; only custom tools (name, description, input_schema) are."),
                &format!("{param}.type"),
            ));
        }
        let name = tool.name.unwrap_or_default();
        if !valid_name(&name) {
            return Err(invalid(
                format!(
                    "{param}.name: '{}' must match ^[a-zA-Z0-9_-]{{1,64}}$.",
                    name.chars().take(80).collect::<String>()
                ),
                &format!("{param}.name"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(
                format!("tools: the tool name '{name}' is used twice."),
                &format!("{param}.name"),
            ));
        }
        let parameters = match tool.input_schema {
            Some(schema @ Value::Object(_)) => schema,
            None => {
                return Err(invalid(
                    format!("{param}.input_schema: Field required"),
                    &format!("{param}.input_schema"),
                ))
            }
            Some(_) => {
                return Err(invalid(
                    format!("{param}.input_schema: expected a JSON Schema object."),
                    &format!("{param}.input_schema"),
                ))
            }
        };
        tools.push(Tool {
            name,
            description: tool.description,
            parameters,
            strict: false,
        });
    }
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: serde_json::Value) -> Result<MessagesRequest, ApiError> {
        MessagesRequest::parse(body.to_string().as_bytes(), Purpose::Create)
    }

    #[test]
    fn maps_system_blocks_messages_and_tools() {
        let request = parse(serde_json::json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                       {"type": "text", "text": "Use tools."}],
            "tools": [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": 1}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}], "is_error": true},
                    {"type": "text", "text": "go on"}]}
            ]
        }))
        .unwrap();
        let turn = request.turn;
        assert_eq!(
            turn.instructions.as_deref(),
            Some("Be brief.\n\nUse tools.")
        );
        assert_eq!(turn.reasoning_effort.as_deref(), Some("low"));
        assert_eq!(turn.tools.len(), 1);
        assert_eq!(
            turn.items,
            vec![
                Item::text(Role::User, "hi"),
                Item::text(Role::Assistant, "Let me look."),
                Item::ToolCall {
                    call_id: "toolu_1".into(),
                    name: "lookup".into(),
                    arguments: "{\"q\":1}".into()
                },
                Item::ToolResult {
                    call_id: "toolu_1".into(),
                    output: "42".into(),
                    is_error: true
                },
                Item::text(Role::User, "go on"),
            ]
        );
    }

    #[test]
    fn refusals_name_the_parameter() {
        let base = serde_json::json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let cases = [
            ("max_tokens", serde_json::Value::Null, "max_tokens"),
            ("stop_sequences", serde_json::json!([""]), "stop_sequences"),
            (
                "tool_choice",
                serde_json::json!({"type": "any"}),
                "tool_choice",
            ),
            (
                "tools",
                serde_json::json!([{"type": "web_search_20250305", "name": "web_search"}]),
                "tools.0.type",
            ),
        ];
        for (member, value, param) in cases {
            let mut body = base.clone();
            body[member] = value;
            let error = parse(body).unwrap_err();
            assert_eq!(error.body()["error"]["param"], param, "{error}");
            assert_eq!(error.status().as_u16(), 400);
        }
        let mut orphan = base.clone();
        orphan["messages"] = serde_json::json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}]);
        assert!(parse(orphan).is_err());
        assert!(MessagesRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            Purpose::CountTokens
        )
        .is_ok());
    }

    #[test]
    fn thinking_budgets_map_to_efforts() {
        assert_eq!(effort_of_budget(1024), "low");
        assert_eq!(effort_of_budget(4096), "medium");
        assert_eq!(effort_of_budget(16384), "high");
    }
}
