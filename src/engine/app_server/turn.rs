//! The app-server turn core: one request's turn as a state machine without I/O. The shell in `mod.rs`
//! feeds it the thread's messages (notifications and server-initiated requests, as the connection routes
//! them by `threadId`) and the reasons it stopped waiting; the core answers with [`Step`]s: emit a
//! delta, answer a server request, return a client tool call (the shell then holds the turn or
//! interrupts it), the model's response ended, interrupt the turn, the turn is done, or it failed.
//!
//! Method names and fields are those of the schema `codex app-server generate-json-schema --out DIR`
//! prints for Codex 0.169.0 (`ServerNotification.json`, `ServerRequest.json`). The unit tests replay
//! message sequences recorded from that Codex against the test suite's mock model
//! (`fixtures/*.jsonl`, recorded by `examples/record_app_server_fixtures.rs`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::protocol;
use super::rpc::{ThreadMessage, THREAD_BUFFER};
use crate::codex::events::summarize;
use crate::turn::limit::AnswerLimit;
use crate::turn::{
    ms, Completion, EngineError, FailureKind, FinishReason, Phases, ToolCall, TurnEvent, Usage,
};

/// What the proxy answers an `item/tool/call` it returned to the client when the turn is not continued
/// (holding off, or the hold expired). The turn is interrupted before this answer is sent, so Codex
/// does not show it to the model.
pub const RETURNED_TO_CLIENT: &str = "The call was returned to the client; the turn ended here.";

/// What the shell must do next.
#[derive(Debug)]
pub enum Step {
    /// Hand this event to the client (a delta of the final answer).
    Emit(TurnEvent),
    /// Answer the server request `id` with this result, or with this error code and message.
    Answer {
        id: Box<RawValue>,
        reply: Result<Value, (i64, String)>,
    },
    /// Send `turn/interrupt` for this turn.
    Interrupt { turn_id: String },
    /// The model called a client tool: hand `call` to the client and keep the server request `id`
    /// unanswered. `interrupt` (set on the first call of the response) is the turn to interrupt if it is
    /// not held; `reply` is the answer to send after such an interrupt.
    ToolCall {
        call: ToolCall,
        interrupt: Option<String>,
        id: Box<RawValue>,
        reply: Value,
    },
    /// Every client tool call of the model's response has arrived: the response ended
    /// (`rawResponse/completed`) and each of its client `function_call` items
    /// (`rawResponseItem/completed`) has its `item/tool/call`. The shell need not wait for the thread
    /// to go quiet.
    CallsComplete,
    /// The turn is over: this is the answer.
    Done(Completion),
    /// The turn is over: it failed.
    Fail(EngineError),
}

/// Why the shell stopped waiting for the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The client went away (the run was cancelled).
    Cancelled,
    /// The profile's timeout passed.
    TimedOut,
    /// The connection found the thread's buffer full: the client is not reading the stream.
    SlowClient,
}

/// The error of a profile timeout.
pub fn timed_out(timeout: Duration) -> EngineError {
    EngineError::new(
        FailureKind::Timeout,
        format!(
            "Codex did not finish within the profile's timeout of {} s; the turn was interrupted",
            timeout.as_secs()
        ),
    )
}

/// The error of a stop before the turn started (nothing to interrupt).
pub fn stopped_before_turn(stop: Stop, timeout: Duration) -> EngineError {
    match stop {
        Stop::TimedOut => timed_out(timeout),
        Stop::Cancelled | Stop::SlowClient => {
            EngineError::new(FailureKind::CodexFailed, "cancelled")
        }
    }
}

/// `turn/started`: `{turn: {id}}`. Workers opt out of it (`protocol::UNREAD_NOTIFICATIONS`): the turn id
/// comes from the `turn/start` answer. The recorded fixtures still hold it, and a core without an id
/// takes it from there.
#[derive(Deserialize)]
struct TurnStarted {
    turn: TurnId,
}

#[derive(Deserialize)]
struct TurnId {
    id: Option<String>,
}

/// `item/started` and `item/completed`: `{item: ThreadItem}`, of which only agent messages matter.
#[derive(Deserialize)]
struct ItemEvent<'a> {
    #[serde(borrow)]
    item: Item<'a>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// `item/agentMessage/delta`: `{itemId, delta}`.
#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default, rename = "itemId")]
    item_id: Cow<'a, str>,
    #[serde(borrow)]
    delta: Cow<'a, str>,
}

/// One request's turn, from `turn/start` to `turn/completed` (or a stop).
pub struct AppServerTurn {
    turn_id: Option<String>,
    /// The profile's timeout, named in the timeout error.
    timeout: Duration,
    phases: Phases,
    started: Instant,
    /// The `phase` of each agent message seen (`commentary` text is not part of the answer).
    phase_of_item: HashMap<String, Option<String>>,
    streamed: String,
    last_message: Option<String>,
    usage: Usage,
    first_delta: bool,
    /// The names of the client's tools (`dynamicTools` of the thread).
    client_tools: HashSet<String>,
    /// The client tool calls of this turn, in arrival order.
    tool_calls: Vec<ToolCall>,
    /// The usage of the model responses since the turn started or was resumed, summed from
    /// `rawResponse/completed` (threads with client tools ask for those events); `None` without them,
    /// and the thread's total from `thread/tokenUsage/updated` is used.
    response_usage: Option<Usage>,
    /// The call ids of the client `function_call` items of the current response (raw events), in
    /// the model's order.
    raw_calls: Vec<String>,
    /// Whether the current response has ended (`rawResponse/completed`).
    response_ended: bool,
    /// The reasoning summary text so far, and the summary part its last delta belonged to.
    reasoning: String,
    reasoning_part: Option<(String, i64)>,
    /// The request's `stop` sequences and token limit, fed the answer's deltas.
    stop: Vec<String>,
    max_tokens: Option<u64>,
    limit: AnswerLimit,
    /// The limit ended the answer and the turn must be interrupted (taken by the shell once).
    limit_interrupt: bool,
}

/// `item/reasoning/summaryTextDelta`: `{itemId, delta, summaryIndex}`.
#[derive(Deserialize)]
struct ReasoningDelta<'a> {
    #[serde(borrow, default, rename = "itemId")]
    item_id: Cow<'a, str>,
    #[serde(borrow)]
    delta: Cow<'a, str>,
    #[serde(default, rename = "summaryIndex")]
    summary_index: i64,
}

/// `rawResponseItem/completed`: `{item}`, of which only client `function_call` items matter.
#[derive(Deserialize)]
struct RawItem {
    item: RawFunctionCall,
}

#[derive(Deserialize)]
struct RawFunctionCall {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    call_id: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// `item/tool/call`: `{callId, tool, arguments, namespace}`.
#[derive(Deserialize)]
struct DynamicToolCall {
    #[serde(rename = "callId")]
    call_id: String,
    tool: String,
    #[serde(default)]
    arguments: Value,
    #[serde(default)]
    namespace: Option<String>,
}

impl AppServerTurn {
    /// A turn whose `turn/start` answered `turn_id` (if it did), with the phases measured so far.
    pub fn new(turn_id: Option<String>, phases: Phases, timeout: Duration) -> AppServerTurn {
        AppServerTurn {
            turn_id,
            timeout,
            phases,
            started: Instant::now(),
            phase_of_item: HashMap::new(),
            streamed: String::new(),
            last_message: None,
            usage: Usage::default(),
            first_delta: true,
            client_tools: HashSet::new(),
            tool_calls: Vec::new(),
            response_usage: None,
            raw_calls: Vec::new(),
            response_ended: false,
            reasoning: String::new(),
            reasoning_part: None,
            stop: Vec::new(),
            max_tokens: None,
            limit: AnswerLimit::default(),
            limit_interrupt: false,
        }
    }

    /// The request's `stop` sequences and token limit (see [`AnswerLimit`]): deltas are released only
    /// as far as they cannot be part of a stop sequence, and once the answer has ended the turn is
    /// interrupted ([`AppServerTurn::take_limit_interrupt`]) and completes with the cut answer.
    pub fn with_limits(mut self, stop: &[String], max_tokens: Option<u64>) -> AppServerTurn {
        self.stop = stop.to_vec();
        self.max_tokens = max_tokens;
        self.limit = AnswerLimit::new(stop, max_tokens);
        self
    }

    /// The turn to interrupt because the answer reached a stop sequence or its token limit; `Some`
    /// once.
    pub fn take_limit_interrupt(&mut self) -> Option<String> {
        if !self.limit_interrupt {
            return None;
        }
        self.limit_interrupt = false;
        self.turn_id.clone()
    }

    /// Whether every client call of the current response is known (see [`Step::CallsComplete`]).
    pub fn calls_complete(&self) -> bool {
        self.response_ended
            && !self.tool_calls.is_empty()
            && self
                .raw_calls
                .iter()
                .all(|id| self.tool_calls.iter().any(|call| &call.call_id == id))
    }

    /// Forgets the current response's raw items (a new response follows).
    fn new_response(&mut self) {
        self.raw_calls.clear();
        self.response_ended = false;
    }

    /// The client tool calls of the current response, in the model's order.
    pub fn tool_calls(&self) -> &[ToolCall] {
        &self.tool_calls
    }

    /// The text written before the calls of the current response.
    pub fn text_so_far(&self) -> &str {
        self.last_message.as_deref().unwrap_or(&self.streamed)
    }

    /// The answer of a response that called client tools, returned while the turn stays open (held):
    /// the calls, the text before them and the usage of the responses so far. The core is then ready
    /// for [`AppServerTurn::resume`].
    pub fn returned_calls(&mut self) -> Completion {
        self.phases.insert("app_server_turn", ms(self.started));
        let text = self
            .last_message
            .take()
            .unwrap_or_else(|| std::mem::take(&mut self.streamed));
        // Codex may send the calls' requests in another order than the model wrote them: the
        // response's raw items give the model's order (calls without one keep their arrival order).
        let mut tool_calls = std::mem::take(&mut self.tool_calls);
        let raw_calls = &self.raw_calls;
        tool_calls.sort_by_key(|call| {
            raw_calls
                .iter()
                .position(|id| id == &call.call_id)
                .unwrap_or(usize::MAX)
        });
        Completion {
            text,
            reasoning: std::mem::take(&mut self.reasoning),
            tool_calls,
            usage: self.response_usage.take().unwrap_or(self.usage),
            finish: FinishReason::ToolCalls,
            phases: std::mem::take(&mut self.phases),
        }
    }

    /// The held turn goes on for a new request (its calls were answered): text, calls, usage and
    /// phases start again, so the next answer holds only what comes from now on.
    pub fn resume(&mut self, phases: Phases) {
        self.phases = phases;
        self.started = Instant::now();
        self.streamed.clear();
        self.last_message = None;
        self.tool_calls.clear();
        self.response_usage = Some(Usage::default());
        self.first_delta = true;
        self.reasoning.clear();
        self.limit = AnswerLimit::new(&self.stop, self.max_tokens);
        self.new_response();
    }

    /// A new turn on the same thread (`turn/start` answered `turn_id`): the earlier turn's answer is
    /// dropped, its usage kept.
    pub fn restart(&mut self, turn_id: Option<String>) {
        self.turn_id = turn_id;
        self.streamed.clear();
        self.last_message = None;
        self.tool_calls.clear();
        self.first_delta = true;
        self.limit = AnswerLimit::new(&self.stop, self.max_tokens);
        self.new_response();
    }

    /// The client's tools offered to the model as dynamic tools: calls of them are returned to the
    /// client instead of refused.
    pub fn with_client_tools(mut self, names: impl IntoIterator<Item = String>) -> AppServerTurn {
        self.client_tools = names.into_iter().collect();
        self
    }

    /// The turn's id, once known.
    pub fn turn_id(&self) -> Option<&str> {
        self.turn_id.as_deref()
    }

    /// One message about the thread.
    pub fn on_message(&mut self, message: ThreadMessage) -> Option<Step> {
        match message {
            ThreadMessage::Notification { method, params } => {
                self.on_notification(&method, &params)
            }
            ThreadMessage::Request { id, method, params } => {
                Some(self.on_server_request(id, &method, &params))
            }
        }
    }

    /// A server-initiated request: answered at once, so Codex never waits on the proxy. A call of a
    /// client tool ends the turn with that call (see [`Step::ToolCall`]); anything else is refused (see
    /// [`protocol::refusal`]).
    pub fn on_server_request(
        &mut self,
        id: Box<RawValue>,
        method: &str,
        params: &RawValue,
    ) -> Step {
        if method == "item/tool/call" {
            if let Some(call) = self.client_call(params) {
                let interrupt = if self.tool_calls.is_empty() {
                    self.turn_id.clone()
                } else {
                    None
                };
                self.tool_calls.push(call.clone());
                return Step::ToolCall {
                    call,
                    interrupt,
                    id,
                    reply: serde_json::json!({
                        "contentItems": [{"type": "inputText", "text": RETURNED_TO_CLIENT}],
                        "success": false,
                    }),
                };
            }
        }
        Step::Answer {
            id,
            reply: protocol::refusal(method),
        }
    }

    /// The call of `item/tool/call` params when it names one of the client's tools.
    fn client_call(&self, params: &RawValue) -> Option<ToolCall> {
        let call: DynamicToolCall = serde_json::from_str(params.get()).ok()?;
        if call.namespace.is_some() || !self.client_tools.contains(&call.tool) {
            return None;
        }
        let arguments = match call.arguments {
            Value::String(text) => text,
            Value::Null => "{}".to_string(),
            other => other.to_string(),
        };
        Some(ToolCall {
            call_id: call.call_id,
            name: call.tool,
            arguments,
        })
    }

    /// A notification. Params that do not have the expected shape are ignored, like unknown methods.
    pub fn on_notification(&mut self, method: &str, params: &RawValue) -> Option<Step> {
        let params = params.get();
        match method {
            "turn/started" if self.turn_id.is_none() => {
                if let Ok(started) = serde_json::from_str::<TurnStarted>(params) {
                    self.turn_id = started.turn.id;
                }
            }
            "item/started" | "item/completed" => {
                if let Ok(event) = serde_json::from_str::<ItemEvent>(params) {
                    self.on_item(method == "item/completed", event.item);
                }
            }
            "item/reasoning/summaryTextDelta" => {
                let delta = serde_json::from_str::<ReasoningDelta>(params).ok()?;
                let part = (delta.item_id.into_owned(), delta.summary_index);
                let mut text = delta.delta.into_owned();
                if self.reasoning_part.as_ref() != Some(&part) {
                    if !self.reasoning.is_empty() {
                        text.insert_str(0, "\n\n");
                    }
                    self.reasoning_part = Some(part);
                }
                self.reasoning.push_str(&text);
                return Some(Step::Emit(TurnEvent::ReasoningDelta(text)));
            }
            "item/agentMessage/delta" => {
                let delta = serde_json::from_str::<Delta>(params).ok()?;
                return self
                    .on_delta(&delta.item_id, delta.delta)
                    .map(|text| Step::Emit(TurnEvent::TextDelta(text)));
            }
            "thread/tokenUsage/updated" => {
                let params = serde_json::from_str(params).unwrap_or(Value::Null);
                if let Some(update) = protocol::token_usage(&params) {
                    self.usage = update;
                }
            }
            "rawResponse/completed" => {
                let params = serde_json::from_str(params).unwrap_or(Value::Null);
                if let Some(usage) = params.get("usage").and_then(protocol::usage_breakdown) {
                    let sum = self.response_usage.get_or_insert_with(Usage::default);
                    sum.prompt_tokens += usage.prompt_tokens;
                    sum.completion_tokens += usage.completion_tokens;
                    sum.total_tokens += usage.total_tokens;
                    sum.cached_tokens += usage.cached_tokens;
                    sum.reasoning_tokens += usage.reasoning_tokens;
                }
                self.response_ended = true;
                if self.calls_complete() {
                    return Some(Step::CallsComplete);
                }
            }
            "rawResponseItem/completed" => {
                if let Ok(RawItem { item }) = serde_json::from_str::<RawItem>(params) {
                    if item.kind == "function_call"
                        && item.namespace.is_none()
                        && self.client_tools.contains(&item.name)
                    {
                        if self.response_ended {
                            // The first item of a new response of the same turn.
                            self.new_response();
                        }
                        if !self.raw_calls.contains(&item.call_id) {
                            self.raw_calls.push(item.call_id);
                        }
                    }
                }
            }
            "turn/completed" => {
                let params = serde_json::from_str(params).unwrap_or(Value::Null);
                return Some(match self.on_completed(&params) {
                    Ok(completion) => Step::Done(completion),
                    Err(error) => Step::Fail(error),
                });
            }
            _ => {}
        }
        None
    }

    /// The shell stopped waiting: interrupt the turn if it has an id, and say how the run ends (a
    /// cancelled run ends without an error: nobody is left to read it).
    pub fn on_stop(&mut self, stop: Stop) -> Vec<Step> {
        let mut steps = Vec::new();
        if let Some(turn_id) = &self.turn_id {
            steps.push(Step::Interrupt {
                turn_id: turn_id.clone(),
            });
        }
        match stop {
            Stop::Cancelled => {}
            Stop::TimedOut => steps.push(Step::Fail(timed_out(self.timeout))),
            Stop::SlowClient => steps.push(Step::Fail(EngineError::new(
                FailureKind::Timeout,
                format!(
                    "the client did not read the stream fast enough (more than {THREAD_BUFFER} events waited); the turn was interrupted"
                ),
            ))),
        }
        steps
    }

    /// The thread's messages ended before `turn/completed`: the worker exited or its connection broke
    /// (`failure` says why, when known).
    pub fn on_closed(&mut self, failure: Option<String>) -> EngineError {
        let message = match failure {
            Some(reason) => format!("{reason}; the turn was lost, retry the request"),
            None => "the app-server worker exited during the turn".to_string(),
        };
        EngineError::new(FailureKind::CodexFailed, message)
    }

    fn on_item(&mut self, completed: bool, item: Item) {
        if item.kind != "agentMessage" {
            return;
        }
        if completed && item.phase.as_deref() != Some("commentary") {
            if let Some(text) = item.text {
                self.last_message = Some(text);
            }
        }
        self.phase_of_item.insert(item.id.into_owned(), item.phase);
    }

    fn on_delta(&mut self, item: &str, delta: Cow<str>) -> Option<String> {
        let commentary = self
            .phase_of_item
            .get(item)
            .is_some_and(|phase| phase.as_deref() == Some("commentary"));
        if commentary {
            return None;
        }
        if self.first_delta {
            self.first_delta = false;
            self.phases
                .insert("app_server_first_delta", ms(self.started));
        }
        self.streamed.push_str(&delta);
        if !self.limit.is_active() {
            return Some(delta.into_owned());
        }
        let ended_before = self.limit.ended().is_some();
        let released = self.limit.push(&delta);
        if !ended_before && self.limit.ended().is_some() {
            self.limit_interrupt = true;
        }
        (!released.is_empty()).then_some(released)
    }

    /// `turn/completed`: the answer is the last agent message of `turn.items`, else the last completed
    /// final agent message, else the deltas streamed.
    fn on_completed(&mut self, params: &Value) -> Result<Completion, EngineError> {
        let turn = params.get("turn").unwrap_or(&Value::Null);
        let status = turn.get("status").and_then(Value::as_str).unwrap_or("");
        self.phases.insert("app_server_turn", ms(self.started));
        let called = !self.tool_calls.is_empty();
        if let (Some(finish), false) = (self.limit.ended(), called) {
            // Interrupted at a stop sequence or the token limit: the cut answer.
            return Ok(Completion {
                text: self.limit.answer().to_string(),
                reasoning: std::mem::take(&mut self.reasoning),
                tool_calls: Vec::new(),
                usage: self.response_usage.unwrap_or(self.usage),
                finish,
                phases: std::mem::take(&mut self.phases),
            });
        }
        if status != "completed" && !called {
            let error = turn.get("error").cloned().unwrap_or(Value::Null);
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("the turn ended with status `{status}`"));
            return Err(EngineError::new(
                protocol::failure_kind(&error),
                summarize(&message),
            ));
        }
        let final_text =
            turn.get("items")
                .and_then(Value::as_array)
                .and_then(|items| {
                    items.iter().rev().find(|item| {
                        item.get("type").and_then(Value::as_str) == Some("agentMessage")
                    })
                })
                .and_then(|item| item.get("text").and_then(Value::as_str))
                .map(str::to_string)
                .or_else(|| self.last_message.take())
                .unwrap_or_else(|| std::mem::take(&mut self.streamed));
        // The whole answer arrived within the limits, or it ended at them without streaming deltas.
        let (final_text, cut) = AnswerLimit::apply(&self.stop, self.max_tokens, &final_text);
        Ok(Completion {
            text: final_text,
            reasoning: std::mem::take(&mut self.reasoning),
            tool_calls: std::mem::take(&mut self.tool_calls),
            usage: self.response_usage.unwrap_or(self.usage),
            finish: if called {
                FinishReason::ToolCalls
            } else {
                cut.unwrap_or(FinishReason::Stop)
            },
            phases: std::mem::take(&mut self.phases),
        })
    }
}

#[cfg(test)]
#[path = "turn_tests.rs"]
mod tests;
