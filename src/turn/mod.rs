//! The engine-neutral request and event model: the one seam every API surface and both engines share.
//!
//! An API adapter (`api::chat` today) parses its wire format into a [`TurnRequest`] and maps the
//! [`TurnEvent`]s an engine produces back to its wire format; an engine reads only a [`TurnRequest`] and
//! writes only [`TurnEvent`]s. Nothing here knows HTTP, JSON-RPC or a process: it is plain data, plus the
//! failure kinds and token counts both sides speak of. [`Capabilities`] is how an engine says what it can
//! carry, so an adapter refuses a request the profile's engine cannot serve before admission.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub mod image;
pub mod limit;
pub mod output;

/// Who wrote a conversation message. System and developer text is not a message: it is
/// [`TurnRequest::instructions`]. `Tool` and `Function` are tool output sent as plain text messages (a
/// chat `tool` message that answers a call of the conversation is an [`Item::ToolResult`] instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    Tool,
    Function,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
        }
    }
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    /// An image by URL: a `data:` URL, checked by [`image::check_image_url`] (the proxy fetches no
    /// remote images). `detail` is the client's `auto`, `low` or `high`, if given.
    Image {
        url: String,
        detail: Option<String>,
    },
}

/// One item of the conversation, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Message {
        role: Role,
        content: Vec<Content>,
    },
    /// A function call the assistant made earlier in the conversation.
    ToolCall {
        call_id: String,
        name: String,
        /// The arguments as the JSON text the model produced.
        arguments: String,
    },
    /// The client's answer to a [`Item::ToolCall`].
    ToolResult {
        call_id: String,
        output: String,
        is_error: bool,
    },
}

impl Item {
    /// A message holding one text part.
    pub fn text(role: Role, text: impl Into<String>) -> Item {
        Item::Message {
            role,
            content: vec![Content::Text(text.into())],
        }
    }

    /// The text parts of a message joined with newlines; `None` for items that are not messages.
    pub fn message_text(&self) -> Option<(Role, String)> {
        match self {
            Item::Message { role, content } => {
                let texts: Vec<&str> = content
                    .iter()
                    .filter_map(|part| match part {
                        Content::Text(text) => Some(text.as_str()),
                        Content::Image { .. } => None,
                    })
                    .collect();
                Some((*role, texts.join("\n")))
            }
            _ => None,
        }
    }
}

/// A function the client offers the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// The JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    pub strict: bool,
}

/// Which tools the model may or must call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    /// Tools are not offered at all.
    None,
    Required,
    Named(String),
}

/// The shape the answer must have. Engines give the model the schema (Codex sends it as a strict
/// `json_schema` text format) or, for `JsonObject`, the instruction [`output::JSON_OBJECT_INSTRUCTION`]
/// (see [`TurnRequest::developer_text`]); the API adapter checks the answer with
/// [`output::check_answer`] before it is returned.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object.
    JsonObject,
    JsonSchema {
        name: String,
        /// The schema as the model receives it: already in strict form ([`output::strict_schema`]).
        schema: serde_json::Value,
        /// Validate the answer against `schema` (else it only has to be JSON).
        strict: bool,
    },
}

/// One request, as both engines see it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TurnRequest {
    /// System and developer text, joined by blank lines; sent as Codex developer instructions.
    pub instructions: Option<String>,
    pub items: Vec<Item>,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub output: Option<OutputFormat>,
    /// A per-request reasoning effort, one of [`REASONING_EFFORTS`] (an adapter validates it); it
    /// overrides the profile's (`fast`, or `model_reasoning_effort` in `codex_config`).
    pub reasoning_effort: Option<String>,
    /// Stop sequences: the answer ends before the first occurrence of any of them (none: no cut).
    /// Applied by the engines through [`limit::AnswerLimit`], which also interrupts the turn.
    pub stop: Vec<String>,
    /// The most answer tokens (o200k_base, counted as the text arrives); at the limit the turn is
    /// interrupted and the answer cut, with [`FinishReason::Length`]. `None`: no limit.
    pub max_output_tokens: Option<u64>,
    /// The client names no calls by id and takes one call per answer (OpenAI's legacy `functions`):
    /// its next request cannot be matched to a held turn, so the turn is not held.
    pub legacy_calls: bool,
    /// Keeping this turn's thread for a later request, or continuing a kept one (`previous_response_id`).
    pub thread: ThreadKeeping,
}

/// How a request's thread outlives it (the Responses API's `store` and `previous_response_id`). The
/// default keeps nothing and continues nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThreadKeeping {
    /// Keep the thread loaded after the answer, under the request's id, for the profile's
    /// `response_ttl_seconds` (engines that cannot keep threads ignore it).
    pub keep: bool,
    /// Continue the kept thread of this earlier request id with a new turn, instead of starting one.
    pub continues: Option<String>,
}

impl TurnRequest {
    /// A request of plain text messages (what every surface sends today).
    pub fn from_texts(
        instructions: Option<String>,
        messages: impl IntoIterator<Item = (Role, String)>,
    ) -> TurnRequest {
        TurnRequest {
            instructions,
            items: messages
                .into_iter()
                .map(|(role, text)| Item::text(role, text))
                .collect(),
            ..TurnRequest::default()
        }
    }

    /// The developer text an engine gives Codex: the instructions, then what the output format asks
    /// of the answer when it has no schema to carry it (`JsonObject`).
    pub fn developer_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        let extra = match self.output {
            Some(OutputFormat::JsonObject) => Some(output::JSON_OBJECT_INSTRUCTION),
            _ => None,
        };
        match (self.instructions.as_deref(), extra) {
            (None, None) => None,
            (Some(text), None) => Some(Cow::Borrowed(text)),
            (None, Some(extra)) => Some(Cow::Borrowed(extra)),
            (Some(text), Some(extra)) => Some(Cow::Owned(format!("{text}\n\n{extra}"))),
        }
    }

    /// The `ToolResult` items that end the conversation (the answers to the last tool calls), in order.
    pub fn trailing_tool_results(&self) -> &[Item] {
        let count = self
            .items
            .iter()
            .rev()
            .take_while(|item| matches!(item, Item::ToolResult { .. }))
            .count();
        &self.items[self.items.len() - count..]
    }

    /// What the request needs of an engine beyond plain text.
    pub fn needs(&self) -> Needs {
        Needs {
            client_tools: !self.tools.is_empty() && self.tool_choice != ToolChoice::None
                || self
                    .items
                    .iter()
                    .any(|item| !matches!(item, Item::Message { .. })),
            images: self.items.iter().any(|item| match item {
                Item::Message { content, .. } => content
                    .iter()
                    .any(|part| matches!(part, Content::Image { .. })),
                _ => false,
            }),
            output_schema: matches!(self.output, Some(OutputFormat::JsonSchema { .. })),
            continuation: self.thread.continues.is_some(),
        }
    }
}

/// What became of a turn that returned client tool calls, as each profile counts it (`/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEvent {
    /// The turn returned its calls and now waits for their results (no slot held).
    Held,
    /// A request brought the results of a held turn's calls: the same turn went on.
    Continued,
    /// A held turn waited `tool_call_timeout_seconds` in vain and was interrupted.
    Expired,
    /// A request carrying tool results matched no held turn: its conversation was replayed.
    Replayed,
}

/// Where an engine reports [`HoldEvent`]s (the profile's counters, set by `api::pipeline`); the
/// default reports nowhere.
#[derive(Clone, Default)]
pub struct HoldLog(Option<Arc<dyn Fn(HoldEvent) + Send + Sync>>);

impl HoldLog {
    pub fn new(record: impl Fn(HoldEvent) + Send + Sync + 'static) -> HoldLog {
        HoldLog(Some(Arc::new(record)))
    }

    pub fn record(&self, event: HoldEvent) {
        if let Some(record) = &self.0 {
            record(event);
        }
    }
}

impl fmt::Debug for HoldLog {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "HoldLog(set)"
        } else {
            "HoldLog(none)"
        })
    }
}

/// The reasoning efforts a request may ask for: the values the model service accepts for
/// `reasoning.effort` (Codex passes the string on unchecked).
pub const REASONING_EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh"];

/// What a request asks for beyond plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub client_tools: bool,
    pub images: bool,
    pub output_schema: bool,
    /// It continues a kept thread (`previous_response_id`).
    pub continuation: bool,
}

/// What an engine can carry. An adapter compares it with [`TurnRequest::needs`] before admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Client-declared function tools and tool-call history.
    pub client_tools: bool,
    pub images: bool,
    pub output_schema: bool,
    /// Text arrives in deltas while the model writes (exec delivers the answer at the end).
    pub streams_deltas: bool,
    /// Threads can be kept after a request and continued by a later one.
    pub continuation: bool,
}

impl Capabilities {
    /// The first thing `needs` asks for that these capabilities lack, named for an error message.
    pub fn missing(&self, needs: Needs) -> Option<&'static str> {
        if needs.client_tools && !self.client_tools {
            Some("client tools")
        } else if needs.images && !self.images {
            Some("images")
        } else if needs.output_schema && !self.output_schema {
            Some("structured output")
        } else if needs.continuation && !self.continuation {
            Some("the continuation of a kept response (previous_response_id)")
        } else {
            None
        }
    }
}

/// Token counts in OpenAI's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
}

/// Latency phases in milliseconds, named as in the latency log's `phases_ms`.
pub type Phases = BTreeMap<&'static str, f64>;

/// Milliseconds since `since`, rounded to two decimals (the unit of every latency phase).
pub fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 100_000.0).round() / 100.0
}

/// A function call the model made in this turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
}

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its answer.
    Stop,
    /// The answer reached the request's stop sequence of this index (and ends before it).
    StopSequence(usize),
    ToolCalls,
    Length,
}

/// A finished turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The reasoning summary of the turn (empty when the profile asks for none, or the model gave
    /// none); also streamed as [`TurnEvent::ReasoningDelta`]s by engines that stream.
    pub reasoning: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub finish: FinishReason,
    pub phases: Phases,
}

/// What a run reports, in order: any number of deltas and tool calls, then exactly one `Done` or
/// `Failed`.
#[derive(Debug)]
pub enum TurnEvent {
    /// A piece of the final answer, as soon as it is known.
    TextDelta(String),
    /// A piece of a reasoning summary.
    ReasoningDelta(String),
    ToolCall(ToolCall),
    Done(Completion),
    Failed(EngineError),
}

/// How a run failed; decides the HTTP status (see `api::error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The model service rate-limited the request (upstream 429).
    UpstreamRateLimited,
    /// The account's quota is used up.
    QuotaExceeded,
    /// The conversation does not fit the model's context window.
    ContextLengthExceeded,
    /// The model service is overloaded (upstream 503).
    UpstreamOverloaded,
    /// The upstream stream went idle for too long.
    UpstreamTimeout,
    /// The model service rejected the request as invalid (other upstream 400).
    UpstreamBadRequest,
    /// Codex failed for any other reason (non-zero exit, `turn.failed`, no final message).
    CodexFailed,
    /// The Codex executable is missing or cannot run.
    CodexUnavailable,
    /// The profile's `timeout_seconds` passed.
    Timeout,
    /// Too many requests are waiting for the engine (app-server overload).
    Overloaded,
}

/// A failed run: its kind and a message fit for the client (no secrets, no paths beyond Codex's own text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub kind: FailureKind,
    pub message: String,
}

impl EngineError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> EngineError {
        EngineError {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_follow_the_request() {
        let plain = TurnRequest::from_texts(None, [(Role::User, "hi".to_string())]);
        assert_eq!(plain.needs(), Needs::default());
        let mut tools = plain.clone();
        tools.tools.push(Tool {
            name: "f".into(),
            description: None,
            parameters: serde_json::json!({"type": "object"}),
            strict: false,
        });
        assert!(tools.needs().client_tools);
        tools.tool_choice = ToolChoice::None;
        assert!(!tools.needs().client_tools);
        let mut image = plain.clone();
        image.items.push(Item::Message {
            role: Role::User,
            content: vec![Content::Image {
                url: "data:image/png;base64,AA==".into(),
                detail: None,
            }],
        });
        assert!(image.needs().images);
        let exec = Capabilities {
            client_tools: false,
            images: true,
            output_schema: true,
            streams_deltas: false,
            continuation: false,
        };
        assert_eq!(exec.missing(tools.needs()), None);
        tools.tool_choice = ToolChoice::Auto;
        assert_eq!(exec.missing(tools.needs()), Some("client tools"));
    }

    #[test]
    fn message_text_joins_text_parts_only() {
        let item = Item::Message {
            role: Role::User,
            content: vec![
                Content::Text("a".into()),
                Content::Image {
                    url: "https://example.com/x.png".into(),
                    detail: None,
                },
                Content::Text("b".into()),
            ],
        };
        assert_eq!(item.message_text(), Some((Role::User, "a\nb".to_string())));
    }
}
