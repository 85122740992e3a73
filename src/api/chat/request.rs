//! OpenAI chat request parsing: raw JSON → a validated [`ChatRequest`], or a precise 400 naming the
//! parameter ("parse, don't validate").
//!
//! The body is never turned into one `serde_json::Value` tree, whose nodes cost many times the bytes
//! they came from: the top level is split into borrowed raw values, each message is deserialized
//! straight into a typed [`Message`] that owns only its strings, and only a message that fails the
//! typed form is re-read as a `Value` to name what is wrong with it. Parameters that are accepted but
//! ignored are type-checked from their first byte.
//!
//! The [`Messages`] map to the engine-neutral [`TurnRequest`] once the request has a profile (see
//! `api::pipeline`): `system` and `developer` text becomes the request's instructions (joined by blank
//! lines; Codex receives them as developer instructions), every other message becomes one text item of
//! its role, in order; an assistant message's `tool_calls` become tool-call items after its text, and a
//! `tool` message with a `tool_call_id` becomes that call's result item. `tools` and `tool_choice` are
//! parsed in `api::chat::tools`. Content parts other than text stay in the text as a placeholder naming
//! their type.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::api::chat::tools::{self, WireToolCall};
use crate::api::error::ApiError;
use crate::turn::{
    Content as TurnContent, Item, OutputFormat, Role, Tool, ToolCall, ToolChoice, TurnRequest,
};

/// A validated chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    /// Validated messages, in order; [`Messages::into`] maps them to the neutral [`TurnRequest`].
    pub messages: Messages,
    pub stream: bool,
    pub include_usage: bool,
    /// `metadata.cwd`, not yet checked against the allowed roots.
    pub cwd: Option<String>,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    /// The tools came as the legacy `functions`: the answer uses the legacy `function_call` shape.
    pub legacy_functions: bool,
    /// `reasoning_effort`, `stop`, `max_tokens` / `max_completion_tokens`.
    pub options: AnswerOptions,
    /// `n`: how many choices (independent turns of the same conversation), 1 to [`MAX_CHOICES`].
    pub n: usize,
}

/// The most choices (`n`) one request may ask for.
pub const MAX_CHOICES: usize = 8;

/// `n`: 1 unless given; more than one only without tools (a tool turn's calls belong to one answer).
fn parse_n(members: &Members, has_tools: bool) -> Result<usize, ApiError> {
    let n = match members.scalar("n") {
        None => return Ok(1),
        Some(Value::Number(number)) if number.is_u64() || number.is_i64() => number,
        Some(other) => return Err(wrong_type("n", "an integer", &other)),
    };
    match n.as_u64() {
        Some(n @ 1..) if n as usize <= MAX_CHOICES => {
            if n > 1 && has_tools {
                return Err(ApiError::invalid(
                    "n > 1 cannot be combined with tools: a tool turn's calls belong to one answer.",
                    Some("n"),
                ));
            }
            Ok(n as usize)
        }
        _ => Err(ApiError::invalid(
            format!("Invalid 'n': {n}; it must be between 1 and {MAX_CHOICES}."),
            Some("n"),
        )),
    }
}

/// What the request asks of the answer beyond its conversation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnswerOptions {
    /// `reasoning_effort`, one of [`crate::turn::REASONING_EFFORTS`].
    pub reasoning_effort: Option<String>,
    /// `stop`: up to [`MAX_STOP_SEQUENCES`] non-empty strings.
    pub stop: Vec<String>,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `response_format` other than `text`, its schema in strict form.
    pub output: Option<OutputFormat>,
}

/// The most `stop` sequences a request may send (as OpenAI allows).
pub const MAX_STOP_SEQUENCES: usize = 4;

/// The message roles a chat request may use.
pub const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// One validated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// One of [`ROLES`].
    pub role: &'static str,
    pub content: Content,
    /// An assistant message's `tool_calls`.
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message's `tool_call_id`; for a legacy `function` message, the id of the
    /// `function_call` it answers (see [`pair_legacy_results`]).
    pub tool_call_id: Option<String>,
    /// A legacy `function` message's `name`.
    pub function_name: Option<String>,
}

/// A message's `content`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// `null` or absent (allowed for `assistant`).
    Null,
    Text(String),
    Parts(Vec<Part>),
}

/// One content part: its `type`, its `text` when it is a string, and an `image_url` part's
/// `image_url` as sent (checked by [`check_images`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub image_url: Option<Value>,
}

/// The `url` and `detail` of an `image_url` part's `image_url` (`{url, detail}`, or the URL alone).
fn image_of(image_url: &Value) -> Option<(&str, Option<&str>)> {
    match image_url {
        Value::String(url) => Some((url, None)),
        Value::Object(map) => Some((
            map.get("url")?.as_str()?,
            map.get("detail").and_then(Value::as_str),
        )),
        _ => None,
    }
}

/// The image details a client may ask for.
const DETAILS: &[&str] = &["auto", "low", "high"];

/// Every `image_url` part of user messages is a `data:` image the proxy can carry (400, or 413 when
/// too large), and there are at most [`crate::turn::image::MAX_IMAGES`]. (In other messages an image
/// part is replaced by the text `[image]`, as OpenAI takes images from users only.)
pub fn check_images(messages: &[Message]) -> Result<(), ApiError> {
    use crate::turn::image::{check_image_url, ImageProblem, MAX_IMAGES};
    let mut count = 0;
    for (index, message) in messages.iter().enumerate() {
        let Content::Parts(parts) = &message.content else {
            continue;
        };
        for (part_index, part) in parts.iter().enumerate() {
            if part.kind != "image_url" {
                continue;
            }
            if message.role != "user" {
                // Only user messages carry images; elsewhere an image part stays a placeholder.
                continue;
            }
            let param = format!("messages[{index}].content[{part_index}].image_url");
            let Some((url, detail)) = part.image_url.as_ref().and_then(image_of) else {
                return Err(ApiError::invalid(
                    format!("Invalid '{param}': expected an object with a 'url' string."),
                    Some(&param),
                ));
            };
            if detail.is_some_and(|detail| !DETAILS.contains(&detail)) {
                return Err(ApiError::invalid(
                    format!("Invalid '{param}.detail': use 'auto', 'low' or 'high'."),
                    Some(&format!("{param}.detail")),
                ));
            }
            match check_image_url(url) {
                Ok(()) => {}
                Err(ImageProblem::Invalid(reason)) => {
                    return Err(ApiError::invalid(
                        format!("Invalid image in '{param}.url': {reason}."),
                        Some(&format!("{param}.url")),
                    ))
                }
                Err(ImageProblem::TooLarge(reason)) => {
                    return Err(ApiError::PayloadTooLarge(format!(
                        "The image in '{param}.url' is too large: {reason}."
                    )))
                }
            }
            count += 1;
            if count > MAX_IMAGES {
                return Err(ApiError::invalid(
                    format!("A request may carry at most {MAX_IMAGES} images."),
                    Some(&param),
                ));
            }
        }
    }
    Ok(())
}

impl Content {
    /// The neutral content of a user message: text parts and images (already checked by
    /// [`check_images`]) in order; other parts as placeholders, as in [`Content::into_text`].
    pub fn into_parts(self) -> Vec<TurnContent> {
        match self {
            Content::Parts(parts) => parts
                .into_iter()
                .map(
                    |part| match (part.kind.as_str(), part.text, &part.image_url) {
                        ("text" | "input_text", Some(text), _) => TurnContent::Text(text),
                        ("image_url", _, Some(image)) if image_of(image).is_some() => {
                            let (url, detail) = image_of(image).unwrap_or_default();
                            TurnContent::Image {
                                url: url.to_string(),
                                detail: detail.map(str::to_string),
                            }
                        }
                        (kind, _, _) => TurnContent::Text(format!(
                            "[{kind} content omitted: not supported by this proxy]"
                        )),
                    },
                )
                .collect(),
            other => vec![TurnContent::Text(other.into_text())],
        }
    }

    /// The plain text: a string as is; text parts joined with newlines; any other part replaced by a
    /// placeholder naming its type.
    pub fn into_text(self) -> String {
        match self {
            Content::Null => String::new(),
            Content::Text(text) => text,
            Content::Parts(parts) => parts
                .into_iter()
                .map(|part| match (part.kind.as_str(), part.text) {
                    ("text" | "input_text", Some(text)) => text,
                    ("image_url", _) => "[image]".to_string(),
                    (kind, _) => format!("[{kind} content omitted: not supported by this proxy]"),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Content, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of parts")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Content, E> {
                Ok(Content::Text(text.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Content, E> {
                Ok(Content::Text(text))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Content, E> {
                Ok(Content::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<Part>()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// The typed form of one message; anything it does not accept goes to [`validate_message`].
#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    /// The legacy form of one call: `{name, arguments}`.
    #[serde(default)]
    function_call: Option<LegacyCall>,
    #[serde(default)]
    name: Option<String>,
}

/// An assistant message's legacy `function_call`.
#[derive(Deserialize)]
struct LegacyCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// The id the proxy gives the legacy `function_call` of message `index` (legacy calls have none).
pub fn legacy_call_id(index: usize) -> String {
    format!("call_legacy_{index}")
}

impl LegacyCall {
    fn into_call(self, index: usize) -> ToolCall {
        ToolCall {
            call_id: legacy_call_id(index),
            name: self.name,
            arguments: self.arguments,
        }
    }
}

/// The JSON type of a raw value, from its first byte (the value is known to be valid JSON).
fn raw_type(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

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
    wrong_type_named(param, expected, type_name(found))
}

fn wrong_type_named(param: &str, expected: &str, found: &str) -> ApiError {
    ApiError::invalid(
        format!("Invalid type for '{param}': expected {expected}, but got {found}."),
        Some(param),
    )
}

/// The top-level members of the body, as borrowed raw JSON (`null` members count as absent).
struct Members<'a>(HashMap<String, &'a RawValue>);

impl<'a> Members<'a> {
    fn raw(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .get(name)
            .copied()
            .filter(|raw| raw_type(raw) != "null")
    }

    /// A member parsed as a `Value`: only for members whose accepted forms are small (scalars and
    /// small objects); arrays and objects are type-checked without being built.
    fn scalar(&self, name: &str) -> Option<Value> {
        let raw = self.raw(name)?;
        match raw_type(raw) {
            "an array" => Some(Value::Array(Vec::new())),
            "an object" => Some(Value::Object(Default::default())),
            _ => serde_json::from_str(raw.get()).ok(),
        }
    }

    /// A member parsed as a `Value` whatever its type: only for members that are small by nature.
    fn scalar_value(&self, name: &str) -> Option<Value> {
        serde_json::from_str(self.raw(name)?.get()).ok()
    }

    fn object(&self, name: &str) -> Result<Option<Members<'a>>, ApiError> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        if raw_type(raw) != "an object" {
            return Err(wrong_type_named(name, "an object", raw_type(raw)));
        }
        Ok(Some(Members(serde_json::from_str(raw.get()).map_err(
            |err| ApiError::invalid(format!("Invalid '{name}': {err}"), Some(name)),
        )?)))
    }

    /// The number of elements of an array member, without building them.
    fn array_len(&self, name: &str) -> Result<Option<usize>, ApiError> {
        let Some(raw) = self.raw(name) else {
            return Ok(None);
        };
        if raw_type(raw) != "an array" {
            return Err(wrong_type_named(name, "an array", raw_type(raw)));
        }
        let items: Vec<IgnoredAny> = serde_json::from_str(raw.get())
            .map_err(|err| ApiError::invalid(format!("Invalid '{name}': {err}"), Some(name)))?;
        Ok(Some(items.len()))
    }
}

fn not_json(err: serde_json::Error) -> ApiError {
    ApiError::invalid(
        format!(
            "The request body is not valid JSON ({err}). Send a JSON object with `model` and `messages`."
        ),
        None,
    )
}

/// Any JSON value, checked exactly as `serde_json::Value` would check it (string escapes, number range,
/// nesting depth) without keeping any of it.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Valid, D::Error> {
        struct ValidVisitor;
        impl<'de> Visitor<'de> for ValidVisitor {
            type Value = Valid;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_unit<E>(self) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
                while seq.next_element::<Valid>()?.is_some() {}
                Ok(Valid)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Valid, A::Error> {
                while map.next_entry::<Valid, Valid>()?.is_some() {}
                Ok(Valid)
            }
        }
        deserializer.deserialize_any(ValidVisitor)
    }
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
        // The raw values below are not fully checked as they are split off; this pass is.
        serde_json::from_slice::<Valid>(body).map_err(not_json)?;
        let raw: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
        if raw_type(raw) != "an object" {
            return Err(ApiError::invalid(
                format!(
                    "The request body must be a JSON object, but got {}.",
                    raw_type(raw)
                ),
                None,
            ));
        }
        let members = Members(serde_json::from_str(raw.get()).map_err(not_json)?);
        let model = match members.scalar("model") {
            None => {
                return Err(ApiError::invalid(
                    "You must provide a model parameter.",
                    Some("model"),
                ))
            }
            Some(Value::String(model)) if model.is_empty() => {
                return Err(ApiError::invalid(
                    "The 'model' parameter must not be empty.",
                    Some("model"),
                ))
            }
            Some(Value::String(model)) => model,
            Some(other) => return Err(wrong_type("model", "a string", &other)),
        };
        let messages = parse_messages(&members)?;
        check_images(&messages.0)?;
        let stream = optional_bool(members.scalar("stream").as_ref(), "stream")?.unwrap_or(false);
        let include_usage = match members.object("stream_options")? {
            None => false,
            Some(options) => optional_bool(
                options.scalar("include_usage").as_ref(),
                "stream_options.include_usage",
            )?
            .unwrap_or(false),
        };
        check_ignored(&members)?;
        check_unsupported(&members)?;
        let options = parse_options(&members)?;
        let tools = tools::parse_tools(members.raw("tools"))?;
        let functions = tools::parse_functions(members.raw("functions"))?;
        let legacy_functions = !functions.is_empty();
        if legacy_functions && !tools.is_empty() {
            return Err(ApiError::invalid(
                "Send either 'tools' or the legacy 'functions', not both.",
                Some("functions"),
            ));
        }
        let (tools, tool_choice) =
            if legacy_functions || (tools.is_empty() && members.raw("function_call").is_some()) {
                let choice =
                    tools::parse_function_call(members.scalar_value("function_call"), &functions)?;
                (functions, choice)
            } else {
                let choice = tools::parse_tool_choice(members.scalar_value("tool_choice"), &tools)?;
                (tools, choice)
            };
        tools::check_answers(
            messages
                .0
                .iter()
                .map(|m| (m.tool_calls.as_slice(), m.tool_call_id.as_deref())),
        )?;
        let n = parse_n(
            &members,
            !tools.is_empty() && tool_choice != ToolChoice::None,
        )?;
        let cwd = match members.object("metadata")? {
            None => None,
            Some(metadata) => match metadata.scalar("cwd") {
                None => None,
                Some(Value::String(cwd)) if cwd.is_empty() => {
                    return Err(ApiError::invalid(
                        "'metadata.cwd' must not be empty.",
                        Some("metadata.cwd"),
                    ))
                }
                Some(Value::String(cwd)) => Some(cwd),
                Some(other) => return Err(wrong_type("metadata.cwd", "a string", &other)),
            },
        };
        Ok(ChatRequest {
            model,
            messages,
            stream,
            include_usage,
            cwd,
            tools,
            tool_choice,
            legacy_functions,
            options,
            n,
        })
    }
}

/// `reasoning_effort`, `stop` and the token limit.
fn parse_options(members: &Members) -> Result<AnswerOptions, ApiError> {
    let reasoning_effort = match members.scalar("reasoning_effort") {
        None => None,
        Some(Value::String(effort))
            if crate::turn::REASONING_EFFORTS.contains(&effort.as_str()) =>
        {
            Some(effort)
        }
        Some(Value::String(effort)) => {
            return Err(ApiError::invalid(
                format!(
                    "Invalid value for 'reasoning_effort': '{}'. Supported values are: {}.",
                    effort.chars().take(32).collect::<String>(),
                    crate::turn::REASONING_EFFORTS
                        .iter()
                        .map(|e| format!("'{e}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some("reasoning_effort"),
            ))
        }
        Some(other) => return Err(wrong_type("reasoning_effort", "a string", &other)),
    };
    let stop = match members.scalar_value("stop") {
        None => Vec::new(),
        Some(Value::String(stop)) => vec![stop],
        Some(Value::Array(list)) => {
            if list.len() > MAX_STOP_SEQUENCES {
                return Err(ApiError::invalid(
                    format!(
                        "'stop' may hold at most {MAX_STOP_SEQUENCES} sequences, but got {}.",
                        list.len()
                    ),
                    Some("stop"),
                ));
            }
            let mut stops = Vec::with_capacity(list.len());
            for (index, item) in list.into_iter().enumerate() {
                match item {
                    Value::String(stop) => stops.push(stop),
                    other => return Err(wrong_type(&format!("stop[{index}]"), "a string", &other)),
                }
            }
            stops
        }
        Some(other) => {
            return Err(wrong_type(
                "stop",
                "a string or an array of strings",
                &other,
            ))
        }
    };
    let mut max_tokens = None;
    for param in ["max_tokens", "max_completion_tokens"] {
        if let Some(Value::Number(number)) = members.scalar(param) {
            match number.as_u64() {
                Some(limit) if limit >= 1 => max_tokens = Some(limit),
                _ => {
                    return Err(ApiError::invalid(
                        format!("Invalid '{param}': {number}; it must be at least 1."),
                        Some(param),
                    ))
                }
            }
        }
    }
    Ok(AnswerOptions {
        reasoning_effort,
        stop: stop.into_iter().filter(|stop| !stop.is_empty()).collect(),
        max_tokens,
        output: parse_response_format(members)?,
    })
}

/// `response_format`: `text` (nothing to do), `json_object`, or `json_schema` with a schema the
/// model service accepts in strict mode (adapted, or a 400 naming the offending path).
fn parse_response_format(members: &Members) -> Result<Option<OutputFormat>, ApiError> {
    let Some(format) = members.object("response_format")? else {
        return Ok(None);
    };
    let kind = match format.scalar("type") {
        Some(Value::String(kind)) => kind,
        None => {
            return Err(ApiError::invalid(
                "Missing required parameter: 'response_format.type'.",
                Some("response_format.type"),
            ))
        }
        Some(other) => return Err(wrong_type("response_format.type", "a string", &other)),
    };
    match kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutputFormat::JsonObject)),
        "json_schema" => {
            let param = "response_format.json_schema";
            let Some(spec) = format.object("json_schema")? else {
                return Err(ApiError::invalid(
                    format!("Missing required parameter: '{param}'."),
                    Some(param),
                ));
            };
            let name = match spec.scalar("name") {
                Some(Value::String(name))
                    if !name.is_empty()
                        && name.len() <= 64
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
                {
                    name
                }
                Some(Value::String(_)) => {
                    return Err(ApiError::invalid(
                        format!("Invalid '{param}.name': use 1 to 64 letters, digits, '_' or '-'."),
                        Some(&format!("{param}.name")),
                    ))
                }
                None => {
                    return Err(ApiError::invalid(
                        format!("Missing required parameter: '{param}.name'."),
                        Some(&format!("{param}.name")),
                    ))
                }
                Some(other) => {
                    return Err(wrong_type(&format!("{param}.name"), "a string", &other))
                }
            };
            let strict = optional_bool(spec.scalar("strict").as_ref(), &format!("{param}.strict"))?
                .unwrap_or(false);
            let schema_param = format!("{param}.schema");
            let schema = match spec.scalar_value("schema") {
                Some(schema @ Value::Object(_)) => schema,
                None => {
                    return Err(ApiError::invalid(
                        format!("Missing required parameter: '{schema_param}'."),
                        Some(&schema_param),
                    ))
                }
                Some(other) => return Err(wrong_type(&schema_param, "an object", &other)),
            };
            let schema = crate::turn::output::strict_schema(&schema).map_err(|problem| {
                let at = format!("{schema_param}{}", problem.path);
                ApiError::invalid(
                    format!(
                        "Invalid schema for response_format '{name}' at '{at}': {}. Codex sends every output schema to the model in strict mode, which this schema cannot use.",
                        problem.message
                    ),
                    Some(&at),
                )
            })?;
            Ok(Some(OutputFormat::JsonSchema {
                name,
                schema,
                strict,
            }))
        }
        other => Err(ApiError::invalid(
            format!(
                "Invalid value for 'response_format.type': '{}'. Supported values are: 'text', 'json_object' and 'json_schema'.",
                other.chars().take(32).collect::<String>()
            ),
            Some("response_format.type"),
        )),
    }
}

/// A request's validated messages, kept in this compact form until the request has a profile (a body
/// that is refused before then never builds the larger neutral items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Messages(pub Vec<Message>);

impl From<Messages> for TurnRequest {
    /// Moves the text out, without copying it: system/developer text → instructions, the rest → items.
    fn from(messages: Messages) -> TurnRequest {
        let mut instructions: Vec<String> = Vec::new();
        let mut items = Vec::with_capacity(messages.0.len());
        for message in messages.0 {
            let has_image = matches!(&message.content, Content::Parts(parts)
                if parts.iter().any(|part| part.kind == "image_url"));
            if message.role == "user" && has_image {
                items.push(Item::Message {
                    role: Role::User,
                    content: message.content.into_parts(),
                });
                continue;
            }
            let text = message.content.into_text();
            match (turn_role(message.role), message.tool_call_id) {
                (Some(Role::Tool | Role::Function), Some(call_id)) => {
                    items.push(Item::ToolResult {
                        call_id,
                        output: text,
                        is_error: false,
                    })
                }
                (Some(Role::Assistant), _) if !message.tool_calls.is_empty() => {
                    if !text.is_empty() {
                        items.push(Item::text(Role::Assistant, text));
                    }
                    items.extend(message.tool_calls.into_iter().map(|call| Item::ToolCall {
                        call_id: call.call_id,
                        name: call.name,
                        arguments: call.arguments,
                    }));
                }
                (Some(role), _) => items.push(Item::text(role, text)),
                (None, _) if text.is_empty() => {}
                (None, _) => instructions.push(text),
            }
        }
        TurnRequest {
            instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
            items,
            ..TurnRequest::default()
        }
    }
}

/// The messages with the request's tools: what the chat adapter hands the pipeline.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub messages: Messages,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    /// The tools came as the legacy `functions`.
    pub legacy_functions: bool,
    pub options: AnswerOptions,
}

impl From<Conversation> for TurnRequest {
    fn from(conversation: Conversation) -> TurnRequest {
        TurnRequest {
            tools: conversation.tools,
            tool_choice: conversation.tool_choice,
            legacy_calls: conversation.legacy_functions,
            reasoning_effort: conversation.options.reasoning_effort,
            stop: conversation.options.stop,
            max_output_tokens: conversation.options.max_tokens,
            output: conversation.options.output,
            ..TurnRequest::from(conversation.messages)
        }
    }
}

fn parse_messages(members: &Members) -> Result<Messages, ApiError> {
    let Some(raw) = members.raw("messages") else {
        return Err(ApiError::invalid(
            "Missing required parameter: 'messages'.",
            Some("messages"),
        ));
    };
    if raw_type(raw) != "an array" {
        return Err(wrong_type_named("messages", "an array", raw_type(raw)));
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(not_json)?;
    if items.is_empty() {
        return Err(ApiError::invalid(
            "'messages' must contain at least one message.",
            Some("messages"),
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        messages.push(parse_message(index, item)?);
    }
    if messages
        .iter()
        .all(|message| turn_role(message.role).is_none())
    {
        return Err(ApiError::invalid(
            "'messages' must contain at least one user or assistant message, not only system/developer messages.",
            Some("messages"),
        ));
    }
    pair_legacy_results(&mut messages);
    Ok(Messages(messages))
}

/// A legacy `function` message answers the latest unanswered `function_call` of its name made
/// earlier (legacy calls carry no ids): it gets that call's id, so the pair is replayed as a call and
/// its output. A `function` message that answers no call stays a plain message.
fn pair_legacy_results(messages: &mut [Message]) {
    let mut open: Vec<(String, String)> = Vec::new();
    for message in messages.iter_mut() {
        if message.role == "assistant" {
            open.extend(
                message
                    .tool_calls
                    .iter()
                    .filter(|call| call.call_id.starts_with("call_legacy_"))
                    .map(|call| (call.call_id.clone(), call.name.clone())),
            );
        } else if message.role == "function" && message.tool_call_id.is_none() {
            let found = open.iter().rposition(|(_, name)| {
                message
                    .function_name
                    .as_deref()
                    .is_none_or(|wanted| wanted == name)
            });
            if let Some(position) = found {
                message.tool_call_id = Some(open.remove(position).0);
            }
        }
    }
}

/// The conversation role of a chat role; `None` for `system` and `developer`, which are instructions.
fn turn_role(role: &str) -> Option<Role> {
    match role {
        "system" | "developer" => None,
        "assistant" => Some(Role::Assistant),
        "tool" => Some(Role::Tool),
        "function" => Some(Role::Function),
        _ => Some(Role::User),
    }
}

/// One message: the typed form when it fits, else the `Value` form, which names what is wrong.
fn parse_message(index: usize, raw: &RawValue) -> Result<Message, ApiError> {
    if let Ok(wire) = serde_json::from_str::<WireMessage>(raw.get()) {
        let role = ROLES.iter().find(|role| **role == wire.role).copied();
        let content = wire.content.unwrap_or(Content::Null);
        let parts_ok = match &content {
            Content::Parts(parts) => parts
                .iter()
                .all(|part| part.kind != "text" || part.text.is_some()),
            _ => true,
        };
        if let Some(role) = role {
            if parts_ok && (content != Content::Null || role == "assistant") {
                let mut tool_calls = tool_calls_of(index, wire.tool_calls.unwrap_or_default())?;
                if role == "assistant" && tool_calls.is_empty() {
                    tool_calls.extend(wire.function_call.map(|call| call.into_call(index)));
                }
                return Ok(Message {
                    role,
                    content,
                    tool_calls,
                    tool_call_id: wire.tool_call_id.filter(|_| role == "tool"),
                    function_name: wire.name.filter(|_| role == "function"),
                });
            }
        }
    }
    let value: Value = serde_json::from_str(raw.get()).map_err(not_json)?;
    validate_message(index, &value)?;
    let wire_calls = match value.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(calls) => Vec::<WireToolCall>::deserialize(calls).map_err(|err| {
            let param = format!("messages[{index}].tool_calls");
            ApiError::invalid(
                format!("Invalid '{param}': {err}. Each call needs 'id', 'type':'function' and 'function':{{'name','arguments'}}."),
                Some(&param),
            )
        })?,
    };
    let mut tool_calls = tool_calls_of(index, wire_calls)?;
    let legacy = value
        .get("function_call")
        .filter(|call| !call.is_null())
        .map(|call| {
            LegacyCall::deserialize(call).map_err(|err| {
                let param = format!("messages[{index}].function_call");
                ApiError::invalid(
                    format!(
                        "Invalid '{param}': {err}. A function call needs 'name' and 'arguments'."
                    ),
                    Some(&param),
                )
            })
        })
        .transpose()?;
    let mut message = message_from_value(value);
    if message.role == "assistant" && tool_calls.is_empty() {
        tool_calls.extend(legacy.map(|call| call.into_call(index)));
    }
    message.tool_calls = tool_calls;
    Ok(message)
}

/// An assistant message's `tool_calls` in the neutral form.
fn tool_calls_of(index: usize, calls: Vec<WireToolCall>) -> Result<Vec<ToolCall>, ApiError> {
    calls
        .into_iter()
        .enumerate()
        .map(|(position, call)| {
            call.into_call(&format!("messages[{index}].tool_calls[{position}]"))
        })
        .collect()
}

/// A message that [`validate_message`] accepted.
fn message_from_value(value: Value) -> Message {
    let Value::Object(mut object) = value else {
        unreachable!("validate_message accepts only objects")
    };
    let role_text = object.get("role").and_then(Value::as_str).unwrap_or("user");
    let role = ROLES
        .iter()
        .find(|role| **role == role_text)
        .copied()
        .unwrap_or("user");
    let content = match object.remove("content") {
        Some(Value::String(text)) => Content::Text(text),
        Some(Value::Array(parts)) => Content::Parts(
            parts
                .into_iter()
                .map(|part| Part {
                    kind: part
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string(),
                    text: part.get("text").and_then(Value::as_str).map(str::to_string),
                    image_url: part.get("image_url").cloned(),
                })
                .collect(),
        ),
        _ => Content::Null,
    };
    let tool_call_id = match object.remove("tool_call_id") {
        Some(Value::String(id)) if role == "tool" => Some(id),
        _ => None,
    };
    let function_name = match object.remove("name") {
        Some(Value::String(name)) if role == "function" => Some(name),
        _ => None,
    };
    Message {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id,
        function_name,
    }
}

/// Parameters that are accepted but ignored still must have the right type.
fn check_ignored(members: &Members) -> Result<(), ApiError> {
    for param in [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
    ] {
        match members.scalar(param) {
            None | Some(Value::Number(_)) => {}
            Some(other) => return Err(wrong_type(param, "a number", &other)),
        }
    }
    for param in ["max_tokens", "max_completion_tokens", "seed"] {
        match members.scalar(param) {
            None => {}
            Some(Value::Number(number)) if number.is_i64() || number.is_u64() => {}
            Some(other) => return Err(wrong_type(param, "an integer", &other)),
        }
    }
    match members.scalar("user") {
        None | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(wrong_type("user", "a string", &other)),
    }
}

/// Parameters the proxy cannot honour: refused unless they ask for the default.
fn check_unsupported(members: &Members) -> Result<(), ApiError> {
    members.array_len("tools")?;
    optional_bool(
        members.scalar("parallel_tool_calls").as_ref(),
        "parallel_tool_calls",
    )?;
    if members
        .raw("logprobs")
        .is_some_and(|raw| raw.get().trim() == "true")
    {
        return Err(ApiError::invalid(
            "'logprobs' is not supported by this proxy.",
            Some("logprobs"),
        ));
    }
    Ok(())
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
    fn maps_messages_to_instructions_and_items() {
        let request = ChatRequest::parse(
            br#"{"model":"m","messages":[
                {"role":"system","content":"Be terse."},
                {"role":"user","content":"Hi"},
                {"role":"assistant","content":"Hello"},
                {"role":"developer","content":"Use metric."},
                {"role":"system","content":""},
                {"role":"tool","content":"42"},
                {"role":"user","content":[{"type":"text","text":"What is"},
                    {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0K"}},{"type":"text","text":"this?"}]}]}"#,
        )
        .unwrap();
        let request = TurnRequest::from(request.messages);
        assert_eq!(
            request.instructions.as_deref(),
            Some("Be terse.\n\nUse metric.")
        );
        assert_eq!(
            crate::codex::prompt::transcript(&request),
            "[user]\nHi\n\n[assistant]\nHello\n\n[tool]\n42\n\n[user]\nWhat is\nthis?\n"
        );
        assert!(request.needs().images);
    }

    #[test]
    fn maps_tool_calls_and_their_results_to_items() {
        let request = ChatRequest::parse(
            br#"{"model":"m","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
                "tool_choice":"auto","messages":[
                {"role":"user","content":"go"},
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
                    {"id":"c2","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"one"},
                {"role":"tool","tool_call_id":"c2","content":[{"type":"text","text":"two"}]}]}"#,
        )
        .unwrap();
        assert_eq!(request.tools.len(), 1);
        let request = TurnRequest::from(Conversation {
            messages: request.messages,
            tools: request.tools,
            tool_choice: request.tool_choice,
            legacy_functions: false,
            options: AnswerOptions::default(),
        });
        assert_eq!(
            request.items[1..],
            [
                Item::ToolCall {
                    call_id: "c1".into(),
                    name: "f".into(),
                    arguments: r#"{"a":1}"#.into()
                },
                Item::ToolCall {
                    call_id: "c2".into(),
                    name: "f".into(),
                    arguments: "{}".into()
                },
                Item::ToolResult {
                    call_id: "c1".into(),
                    output: "one".into(),
                    is_error: false
                },
                Item::ToolResult {
                    call_id: "c2".into(),
                    output: "two".into(),
                    is_error: false
                },
            ]
        );
        assert!(request.needs().client_tools);
    }

    #[test]
    fn legacy_function_fields_that_ask_for_nothing_are_accepted() {
        for extra in [
            r#""functions":[]"#,
            r#""functions":null"#,
            r#""function_call":"none""#,
            r#""function_call":"auto""#,
        ] {
            let body =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],{extra}}}"#);
            assert!(ChatRequest::parse(body.as_bytes()).is_ok(), "{extra}");
        }
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"functions":[{"name":"f"}],"function_call":{"name":"f"}}"#;
        let request = ChatRequest::parse(body.as_bytes()).unwrap();
        assert!(request.legacy_functions);
        assert_eq!(request.tools[0].name, "f");
        assert_eq!(request.tool_choice, ToolChoice::Named("f".into()));
    }

    #[test]
    fn legacy_function_messages_answer_the_latest_call_of_their_name() {
        let body = r#"{"model":"m","functions":[{"name":"f"}],"messages":[
            {"role":"user","content":"hi"},
            {"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{}"}},
            {"role":"function","name":"f","content":"1"},
            {"role":"function","name":"g","content":"stray"}]}"#;
        let request = ChatRequest::parse(body.as_bytes()).unwrap();
        let turn = TurnRequest::from(request.messages);
        assert_eq!(
            turn.items[1],
            Item::ToolCall {
                call_id: legacy_call_id(1),
                name: "f".into(),
                arguments: "{}".into()
            }
        );
        assert_eq!(
            turn.items[2],
            Item::ToolResult {
                call_id: legacy_call_id(1),
                output: "1".into(),
                is_error: false
            }
        );
        assert_eq!(turn.items[3], Item::text(Role::Function, "stray"));
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
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
                Some("n"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":9}"#,
                Some("n"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#,
                Some("tools[0].function"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":{"type":"function"}}"#,
                Some("tools"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#,
                Some("tool_choice"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"nope","content":"1"}]}"#,
                Some("messages[1].tool_call_id"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}"#,
                Some("response_format.type"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object","properties":{"a":{"not":{}}}}}}}"#,
                Some("response_format.json_schema.schema.properties.a.not"),
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
