//! [`MessagesRenderer`]: the one place that maps an engine run's [`TurnEvent`]s to Anthropic Messages
//! output, for the plain `message` body and for the streamed event sequence alike, and that closes the
//! request's books (metrics and the `messages_latency` line) when the run is done or failed.
//!
//! Streaming follows Anthropic's sequence: `message_start`, a `ping`, then for each content block
//! `content_block_start`, its deltas (`thinking_delta`, `text_delta`, `input_json_delta`) and
//! `content_block_stop`, then `message_delta` (stop reason and usage) and `message_stop`. Reasoning
//! summaries become `thinking` blocks, text a `text` block, each tool call a `tool_use` block.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::messages::error as anthropic;
use crate::api::pipeline::{engine_phase_name, record_error, run_error, LatencyLog, Started};
use crate::api::request_log::Outcome;
use crate::config::EngineKind;
use crate::engine::{ms, Completion, TurnEvent};
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;
use crate::metrics::{InFlight, ProfileStats};
use crate::turn::{FinishReason, ToolCall, Usage};

/// The error of a run that ended without `Done` or `Failed`.
fn stopped_without_result() -> ApiError {
    ApiError::CodexFailed {
        message: "Codex stopped without reporting a result".to_string(),
        code: "codex_failed",
    }
}

/// Anthropic's `usage`: `input_tokens` excludes the cached part, which is `cache_read_input_tokens`.
pub fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    })
}

/// A tool call's `input`: its arguments parsed (an empty object when they are not a JSON object).
fn tool_input(call: &ToolCall) -> Value {
    match serde_json::from_str::<Value>(&call.arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({}),
    }
}

fn stop_reason(finish: FinishReason, tool_calls: usize) -> &'static str {
    match finish {
        _ if tool_calls > 0 => "tool_use",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::Length => "max_tokens",
        FinishReason::Stop => "end_turn",
        FinishReason::StopSequence(_) => "stop_sequence",
    }
}

/// The kind of the content block that is open in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
}

/// Renders one Messages response from the events of its run.
pub struct MessagesRenderer {
    id: String,
    model: String,
    streaming: bool,
    engine: EngineKind,
    engine_started: Instant,
    state: AppState,
    stats: Arc<ProfileStats>,
    log: LatencyLog,
    /// SSE events (name, data) ready to send, in order (streaming only).
    pending: VecDeque<(&'static str, String)>,
    /// The plain response, once known.
    outcome: Option<Result<Value, ApiError>>,
    /// Reasoning summary text (a `thinking` block of the plain response).
    thinking: String,
    /// Whether reasoning deltas arrived (exec sends its summary with `Done` only).
    seen_reasoning: bool,
    /// Streaming: the index of the next content block, and the open one.
    next_index: usize,
    open: Option<Open>,
    sent_text: bool,
    sent_tool_calls: usize,
    first_content_logged: bool,
    finished: bool,
    _in_flight: InFlight,
    /// The request's one snapshot, kept until the response ends.
    snapshot: Arc<Snapshot>,
    /// The request's `stop_sequences` (named in `stop_sequence` when one ended the answer).
    stop_sequences: Vec<String>,
}

impl MessagesRenderer {
    /// The request's `stop_sequences`, so that the one that ended the answer can be named.
    pub fn with_stop_sequences(mut self, stop_sequences: Vec<String>) -> MessagesRenderer {
        self.stop_sequences = stop_sequences;
        self
    }

    /// A renderer for `started`; a streaming one begins with `message_start` and a `ping`.
    pub fn new(
        state: &AppState,
        started: Started,
        streaming: bool,
    ) -> (MessagesRenderer, crate::engine::RunHandle) {
        let mut renderer = MessagesRenderer {
            id: format!("msg_{}", started.log.request_id),
            model: started.model,
            streaming,
            engine: started.engine,
            engine_started: started.engine_started,
            state: state.clone(),
            stats: started.stats,
            log: started.log,
            pending: VecDeque::new(),
            outcome: None,
            thinking: String::new(),
            seen_reasoning: false,
            next_index: 0,
            open: None,
            sent_text: false,
            sent_tool_calls: 0,
            first_content_logged: false,
            finished: false,
            _in_flight: started.in_flight,
            snapshot: started.snapshot,
            stop_sequences: Vec::new(),
        };
        if streaming {
            let message = json!({
                "id": renderer.id,
                "type": "message",
                "role": "assistant",
                "model": renderer.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            });
            renderer.push(
                "message_start",
                json!({"type": "message_start", "message": message}),
            );
            renderer.push("ping", json!({"type": "ping"}));
        }
        (renderer, started.run)
    }

    /// Takes in the run's next event (`None`: the run ended without a result).
    pub fn feed(&mut self, event: Option<TurnEvent>) {
        match event {
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

    /// The server's grace period for open requests is over: fail the response now.
    pub fn abort(&mut self) {
        self.fail(ApiError::ShuttingDown(
            "The proxy is shutting down and the grace period for this request is over; retry."
                .to_string(),
        ));
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The next SSE event (name, data) to send, if one is ready.
    pub fn next_pending(&mut self) -> Option<(&'static str, String)> {
        self.pending.pop_front()
    }

    /// The plain response: the `message` body, or the error (already counted and logged).
    pub fn into_outcome(mut self) -> Result<Value, ApiError> {
        self.outcome
            .take()
            .unwrap_or_else(|| Err(stopped_without_result()))
    }

    pub fn log(&self) -> &LatencyLog {
        &self.log
    }

    fn push(&mut self, event: &'static str, data: Value) {
        self.pending.push_back((event, data.to_string()));
    }

    fn first_content(&mut self) {
        if !self.first_content_logged {
            self.first_content_logged = true;
            self.log
                .phases
                .insert("time_to_first_content_sse", ms(self.log.received_at));
        }
    }

    /// Opens a block of `kind` unless it is the open one (closing any other first).
    fn open_block(&mut self, kind: Open) {
        if self.open == Some(kind) {
            return;
        }
        self.close_block();
        let block = match kind {
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Open::Text => json!({"type": "text", "text": ""}),
        };
        self.push(
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next_index, "content_block": block}),
        );
        self.open = Some(kind);
    }

    fn close_block(&mut self) {
        if self.open.take().is_some() {
            self.push(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.next_index}),
            );
            self.next_index += 1;
        }
    }

    fn delta(&mut self, delta: Value) {
        self.push(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next_index, "delta": delta}),
        );
    }

    fn reasoning(&mut self, text: String) {
        self.seen_reasoning = true;
        if !self.streaming {
            self.thinking.push_str(&text);
            return;
        }
        self.first_content();
        self.open_block(Open::Thinking);
        self.delta(json!({"type": "thinking_delta", "thinking": text}));
    }

    fn text(&mut self, text: String) {
        if !self.streaming || text.is_empty() {
            return;
        }
        self.first_content();
        self.sent_text = true;
        self.open_block(Open::Text);
        self.delta(json!({"type": "text_delta", "text": text}));
    }

    fn tool_call(&mut self, call: &ToolCall) {
        if !self.streaming {
            return;
        }
        self.first_content();
        self.close_block();
        let block = json!({"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}});
        self.push(
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next_index, "content_block": block}),
        );
        let input = tool_input(call).to_string();
        self.delta(json!({"type": "input_json_delta", "partial_json": input}));
        self.push(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": self.next_index}),
        );
        self.next_index += 1;
        self.sent_tool_calls += 1;
    }

    fn done(&mut self, completion: Completion) {
        let Completion {
            text,
            tool_calls,
            usage,
            finish,
            phases,
            reasoning,
        } = completion;
        if !self.seen_reasoning && !reasoning.is_empty() {
            self.reasoning(reasoning);
        }
        self.finished = true;
        self.log
            .phases
            .insert(engine_phase_name(self.engine), ms(self.engine_started));
        let stop_reason = stop_reason(finish, tool_calls.len());
        let stop_sequence = match finish {
            FinishReason::StopSequence(index) if tool_calls.is_empty() => {
                self.stop_sequences.get(index).cloned()
            }
            _ => None,
        };
        if self.streaming {
            if !self.sent_text && !text.is_empty() {
                self.text(text);
            }
            for call in tool_calls.iter().skip(self.sent_tool_calls) {
                self.tool_call(call);
            }
            self.close_block();
            self.push(
                "message_delta",
                json!({
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": usage_json(&usage),
                }),
            );
            self.push("message_stop", json!({"type": "message_stop"}));
            self.log.phases.extend(phases);
        } else {
            let started = Instant::now();
            let mut content = Vec::new();
            if !self.thinking.is_empty() {
                content
                    .push(json!({"type": "thinking", "thinking": self.thinking, "signature": ""}));
            }
            if !text.is_empty() {
                content.push(json!({"type": "text", "text": text}));
            }
            for call in &tool_calls {
                content.push(json!({
                    "type": "tool_use",
                    "id": call.call_id,
                    "name": call.name,
                    "input": tool_input(call),
                }));
            }
            let body = json!({
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
                "usage": usage_json(&usage),
            });
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
            self.pending
                .push_back(("error", anthropic::sse_data(&error)));
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
    fn usage_splits_cached_input() {
        let usage = Usage {
            prompt_tokens: 100,
            completion_tokens: 7,
            total_tokens: 107,
            cached_tokens: 60,
            reasoning_tokens: 2,
        };
        let json = usage_json(&usage);
        assert_eq!(json["input_tokens"], 40);
        assert_eq!(json["cache_read_input_tokens"], 60);
        assert_eq!(json["output_tokens"], 7);
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(stop_reason(FinishReason::Stop, 0), "end_turn");
        assert_eq!(stop_reason(FinishReason::Stop, 1), "tool_use");
        assert_eq!(stop_reason(FinishReason::Length, 0), "max_tokens");
        assert_eq!(
            stop_reason(FinishReason::StopSequence(0), 0),
            "stop_sequence"
        );
    }
}
