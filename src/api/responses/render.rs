//! [`ResponsesRenderer`]: the one place that maps an engine run's [`TurnEvent`]s to the OpenAI
//! `response` object and its streamed events, and that closes the request's books (metrics and the
//! `responses_latency` line) when the run is done or failed.
//!
//! Output items, in the order the run produced them: `reasoning` (its summary from reasoning deltas),
//! `message` (one `output_text` part) and one `function_call` per tool call. Streaming sends
//! `response.created`, `response.in_progress`, then per item `response.output_item.added`, its parts and
//! deltas (`response.content_part.added`, `response.output_text.delta`/`.done`,
//! `response.reasoning_summary_text.delta`/`.done`, `response.function_call_arguments.delta`/`.done`)
//! and `response.output_item.done`, then `response.completed` or `response.failed`; every event carries
//! its `sequence_number`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::pipeline::{engine_phase_name, record_error, run_error, LatencyLog, Started};
use crate::api::request_log::Outcome;
use crate::api::responses::request::Echo;
use crate::api::responses::store;
use crate::config::EngineKind;
use crate::engine::{ms, Completion, TurnEvent};
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;
use crate::metrics::{InFlight, ProfileStats};
use crate::turn::output::check_answer;
use crate::turn::{FinishReason, OutputFormat, ToolCall, Usage};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn stopped_without_result() -> ApiError {
    ApiError::CodexFailed {
        message: "Codex stopped without reporting a result".to_string(),
        code: "codex_failed",
    }
}

/// The Responses `usage` object.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    })
}

/// The item being streamed (reasoning or message); tool calls are sent whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Reasoning,
    Message,
}

/// Renders one Responses answer from the events of its run.
pub struct ResponsesRenderer {
    id: String,
    created_at: u64,
    model: String,
    echo: Echo,
    /// `text.format` (json_schema or json_object): the answer is checked, and held until then.
    format: Option<OutputFormat>,
    streaming: bool,
    engine: EngineKind,
    engine_started: Instant,
    state: AppState,
    stats: Arc<ProfileStats>,
    log: LatencyLog,
    /// SSE events (type, data) ready to send, in order (streaming only).
    pending: VecDeque<(String, String)>,
    sequence_number: u64,
    outcome: Option<Result<Value, ApiError>>,
    /// Finished output items, in order.
    output: Vec<Value>,
    /// The item being streamed and its text so far.
    open: Option<(Open, String)>,
    reasoning: String,
    /// Whether reasoning deltas arrived (exec sends its summary with `Done` only).
    seen_reasoning: bool,
    sent_text: bool,
    sent_tool_calls: usize,
    first_content_logged: bool,
    finished: bool,
    _in_flight: InFlight,
    snapshot: Arc<Snapshot>,
}

impl ResponsesRenderer {
    /// The request's `text.format`, checked against the answer (which is held until then).
    pub fn with_format(mut self, format: Option<OutputFormat>) -> ResponsesRenderer {
        self.format = format;
        self
    }

    /// A renderer for `started`; a streaming one begins with `response.created` and
    /// `response.in_progress`.
    pub fn new(
        state: &AppState,
        started: Started,
        streaming: bool,
        echo: Echo,
    ) -> (ResponsesRenderer, crate::engine::RunHandle) {
        let mut renderer = ResponsesRenderer {
            id: format!("resp_{}", started.log.request_id),
            created_at: unix_now(),
            model: started.model,
            echo,
            format: None,
            streaming,
            engine: started.engine,
            engine_started: started.engine_started,
            state: state.clone(),
            stats: started.stats,
            log: started.log,
            pending: VecDeque::new(),
            sequence_number: 0,
            outcome: None,
            output: Vec::new(),
            open: None,
            reasoning: String::new(),
            seen_reasoning: false,
            sent_text: false,
            sent_tool_calls: 0,
            first_content_logged: false,
            finished: false,
            _in_flight: started.in_flight,
            snapshot: started.snapshot,
        };
        if streaming {
            let response = renderer.response("in_progress", None, None);
            renderer.push("response.created", json!({"response": response}));
            renderer.push("response.in_progress", json!({"response": response}));
        }
        (renderer, started.run)
    }

    /// The `response` object in `status`, with the output so far.
    fn response(&self, status: &str, usage: Option<&Usage>, error: Option<Value>) -> Value {
        let echo = &self.echo;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": null,
            "instructions": echo.instructions,
            "max_output_tokens": echo.max_output_tokens,
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": echo.parallel_tool_calls,
            "previous_response_id": echo.previous_response_id,
            "reasoning": echo.reasoning,
            "store": echo.store,
            "temperature": echo.temperature,
            "text": echo.text,
            "tool_choice": echo.tool_choice,
            "tools": echo.tools,
            "top_p": echo.top_p,
            "truncation": "disabled",
            "usage": usage.map(usage_json),
            "user": null,
            "metadata": echo.metadata,
        })
    }

    pub fn feed(&mut self, event: Option<TurnEvent>) {
        match event {
            // With a text.format the answer is held until it has been checked (see `done`).
            Some(TurnEvent::TextDelta(_)) if self.format.is_some() => {}
            Some(TurnEvent::TextDelta(text)) => self.text(text),
            Some(TurnEvent::ReasoningDelta(text)) => self.reasoning(text),
            Some(TurnEvent::ToolCall(call)) => self.tool_call(&call),
            Some(TurnEvent::Done(completion)) => self.done(completion),
            Some(TurnEvent::Failed(error)) => {
                self.fail(run_error(&self.snapshot, &self.log.profile, error))
            }
            None => self.fail(stopped_without_result()),
        }
    }

    pub fn abort(&mut self) {
        self.fail(ApiError::ShuttingDown(
            "The proxy is shutting down and the grace period for this request is over; retry."
                .to_string(),
        ));
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The next SSE event (type, data), if one is ready.
    pub fn next_pending(&mut self) -> Option<(String, String)> {
        self.pending.pop_front()
    }

    pub fn into_outcome(mut self) -> Result<Value, ApiError> {
        self.outcome
            .take()
            .unwrap_or_else(|| Err(stopped_without_result()))
    }

    pub fn log(&self) -> &LatencyLog {
        &self.log
    }

    fn push(&mut self, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence_number);
        self.sequence_number += 1;
        self.pending.push_back((kind.to_string(), data.to_string()));
    }

    fn first_content(&mut self) {
        if !self.first_content_logged {
            self.first_content_logged = true;
            self.log
                .phases
                .insert("time_to_first_content_sse", ms(self.log.received_at));
        }
    }

    fn item_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}_{}", self.log.request_id, self.output.len())
    }

    fn reasoning_item(&self, text: &str) -> Value {
        let summary = if text.is_empty() {
            json!([])
        } else {
            json!([{"type": "summary_text", "text": text}])
        };
        json!({"type": "reasoning", "id": self.item_id("rs"), "summary": summary})
    }

    fn message_item(&self, text: &str, status: &str) -> Value {
        let content = if status == "in_progress" {
            json!([])
        } else {
            json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
        };
        json!({"type": "message", "id": self.item_id("msg"), "status": status, "role": "assistant", "content": content})
    }

    fn call_item(&self, call: &ToolCall) -> Value {
        json!({
            "type": "function_call",
            "id": self.item_id("fc"),
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
            "status": "completed",
        })
    }

    /// Streaming: opens an item of `kind` unless it is the open one (closing any other first).
    fn open_item(&mut self, kind: Open) {
        if self.open.as_ref().is_some_and(|(open, _)| *open == kind) {
            return;
        }
        self.close_item();
        let output_index = self.output.len();
        let item_id = match kind {
            Open::Reasoning => self.item_id("rs"),
            Open::Message => self.item_id("msg"),
        };
        match kind {
            Open::Reasoning => {
                let item = self.reasoning_item("");
                self.push(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                );
                self.push(
                    "response.reasoning_summary_part.added",
                    json!({"item_id": item_id, "output_index": output_index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": ""}}),
                );
            }
            Open::Message => {
                let item = self.message_item("", "in_progress");
                self.push(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                );
                self.push(
                    "response.content_part.added",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                );
            }
        }
        self.open = Some((kind, String::new()));
    }

    /// Streaming: ends the open item with its `.done` events and keeps it in the output.
    fn close_item(&mut self) {
        let Some((kind, text)) = self.open.take() else {
            return;
        };
        let output_index = self.output.len();
        let item = match kind {
            Open::Reasoning => {
                let item = self.reasoning_item(&text);
                let item_id = item["id"].clone();
                self.push(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": item_id, "output_index": output_index, "summary_index": 0, "text": text}),
                );
                self.push(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": item_id, "output_index": output_index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": text}}),
                );
                item
            }
            Open::Message => {
                let item = self.message_item(&text, "completed");
                let item_id = item["id"].clone();
                self.push(
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.push(
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "part": item["content"][0]}),
                );
                item
            }
        };
        self.push(
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
    }

    fn reasoning(&mut self, text: String) {
        self.seen_reasoning = true;
        if !self.streaming {
            self.reasoning.push_str(&text);
            return;
        }
        self.first_content();
        self.open_item(Open::Reasoning);
        let output_index = self.output.len();
        let item_id = self.item_id("rs");
        if let Some((_, so_far)) = self.open.as_mut() {
            so_far.push_str(&text);
        }
        self.push(
            "response.reasoning_summary_text.delta",
            json!({"item_id": item_id, "output_index": output_index, "summary_index": 0, "delta": text}),
        );
    }

    fn text(&mut self, text: String) {
        if !self.streaming || text.is_empty() {
            return;
        }
        self.first_content();
        self.sent_text = true;
        self.open_item(Open::Message);
        let output_index = self.output.len();
        let item_id = self.item_id("msg");
        if let Some((_, so_far)) = self.open.as_mut() {
            so_far.push_str(&text);
        }
        self.push(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": output_index, "content_index": 0, "delta": text, "logprobs": []}),
        );
    }

    fn tool_call(&mut self, call: &ToolCall) {
        if !self.streaming {
            return;
        }
        self.first_content();
        self.close_item();
        let output_index = self.output.len();
        let item = self.call_item(call);
        let mut added = item.clone();
        added["arguments"] = json!("");
        added["status"] = json!("in_progress");
        self.push(
            "response.output_item.added",
            json!({"output_index": output_index, "item": added}),
        );
        self.push(
            "response.function_call_arguments.delta",
            json!({"item_id": item["id"], "output_index": output_index, "delta": call.arguments}),
        );
        self.push(
            "response.function_call_arguments.done",
            json!({"item_id": item["id"], "output_index": output_index, "name": call.name, "arguments": call.arguments}),
        );
        self.push(
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
        self.sent_tool_calls += 1;
    }

    fn done(&mut self, completion: Completion) {
        let Completion {
            text,
            tool_calls,
            usage,
            phases,
            reasoning,
            finish,
        } = completion;
        // As in chat: an answer cut at the token limit is returned as it is; any other answer must
        // have the shape text.format asks for, or the response fails (never passed on).
        if let (Some(format), true) = (
            &self.format,
            tool_calls.is_empty() && finish != FinishReason::Length,
        ) {
            if let Err(problem) = check_answer(format, &text) {
                return self.fail(ApiError::CodexFailed {
                    message: format!(
                        "The model's answer does not have the shape text.format asks for: {problem}."
                    ),
                    code: "invalid_model_output",
                });
            }
        }
        if !self.seen_reasoning && !reasoning.is_empty() {
            self.reasoning(reasoning);
        }
        self.finished = true;
        self.log
            .phases
            .insert(engine_phase_name(self.engine), ms(self.engine_started));
        if self.streaming {
            if !self.sent_text && !text.is_empty() {
                self.text(text);
            }
            for call in tool_calls.iter().skip(self.sent_tool_calls) {
                self.tool_call(call);
            }
            self.close_item();
            let response = self.response("completed", Some(&usage), None);
            if self.echo.store {
                store::remember(&self.log.request_id, &self.log.profile, response.clone());
            }
            self.push("response.completed", json!({"response": response}));
            self.log.phases.extend(phases);
        } else {
            let started = Instant::now();
            if !self.reasoning.is_empty() {
                let item = self.reasoning_item(&self.reasoning);
                self.output.push(item);
            }
            if !text.is_empty() {
                let item = self.message_item(&text, "completed");
                self.output.push(item);
            }
            for call in &tool_calls {
                let item = self.call_item(call);
                self.output.push(item);
            }
            let body = self.response("completed", Some(&usage), None);
            if self.echo.store {
                store::remember(&self.log.request_id, &self.log.profile, body.clone());
            }
            self.log.phases.extend(phases);
            self.log.phases.insert("response_build", ms(started));
            self.outcome = Some(Ok(body));
        }
        self.state.metrics().request_ok(&self.stats, &usage);
        self.log.finish(Outcome::ok(&usage, tool_calls.len()));
    }

    fn fail(&mut self, error: ApiError) {
        self.finished = true;
        record_error(&self.state, Some(&self.stats), &error);
        if self.streaming {
            let body = error.body();
            let failure = json!({
                "code": body["error"]["code"].as_str().unwrap_or("server_error"),
                "message": error.to_string(),
            });
            let response = self.response("failed", None, Some(failure));
            self.push("response.failed", json!({"response": response}));
            self.log.finish(Outcome::failed(&error, true));
        } else {
            self.log
                .phases
                .insert(engine_phase_name(self.engine), ms(self.engine_started));
            self.log.finish(Outcome::failed(&error, false));
            self.outcome = Some(Err(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_has_the_details() {
        let usage = Usage {
            prompt_tokens: 120,
            completion_tokens: 30,
            total_tokens: 150,
            cached_tokens: 20,
            reasoning_tokens: 10,
        };
        let json = usage_json(&usage);
        assert_eq!(json["input_tokens_details"]["cached_tokens"], 20);
        assert_eq!(json["output_tokens_details"]["reasoning_tokens"], 10);
        assert_eq!(json["total_tokens"], 150);
    }
}
