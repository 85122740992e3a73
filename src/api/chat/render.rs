//! [`ChatRenderer`]: the one place that maps an engine run's [`TurnEvent`]s to OpenAI chat output, for
//! the plain and the streaming response alike. It also closes the request's books: the metrics and the
//! `chat_completion_latency` line are written when the run is done or failed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::api::chat::wire::{
    chunk_body, completion_body, to_legacy_function_call, tool_call_json, usage_chunk_body,
};
use crate::api::error::ApiError;
use crate::api::pipeline::{engine_phase_name, record_error, run_error, LatencyLog, Started};
use crate::api::request_log::Outcome;
use crate::config::EngineKind;
use crate::engine::{ms, Completion, FinishReason, TurnEvent};
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;
use crate::metrics::{InFlight, ProfileStats};
use crate::turn::output::check_answer;
use crate::turn::{OutputFormat, ToolCall};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The error of a run that ended without `Done` or `Failed`.
fn stopped_without_result() -> ApiError {
    ApiError::CodexFailed {
        message: "Codex stopped without reporting a result".to_string(),
        code: "codex_failed",
    }
}

/// The error of a run cut short because the server's grace period ended.
fn shutting_down() -> ApiError {
    ApiError::ShuttingDown(
        "The proxy is shutting down and the grace period for this request is over; retry."
            .to_string(),
    )
}

/// Renders one chat completion from the events of its run.
pub struct ChatRenderer {
    id: String,
    created: u64,
    model: String,
    /// Streaming: SSE chunks; otherwise one `chat.completion` body at the end.
    streaming: bool,
    include_usage: bool,
    engine: EngineKind,
    engine_started: Instant,
    state: AppState,
    stats: Arc<ProfileStats>,
    log: LatencyLog,
    /// SSE `data` payloads ready to send, in order (streaming only).
    pending: VecDeque<String>,
    /// The plain response, once known.
    outcome: Option<Result<Value, ApiError>>,
    /// The answer text streamed so far (at `Done`, only what is missing of the answer is sent).
    sent_text: String,
    /// Whether reasoning summary deltas were streamed (exec sends the summary with `Done` only).
    sent_reasoning: bool,
    /// Tool calls already streamed (their `index` is their position).
    sent_tool_calls: usize,
    /// The request sent the legacy `functions`: one call, as `function_call`.
    legacy_functions: bool,
    /// `response_format`: the answer is checked at `Done`, so a stream sends its text only then.
    output: Option<OutputFormat>,
    first_content_logged: bool,
    finished: bool,
    _in_flight: InFlight,
    /// The request's one snapshot, kept until the response ends.
    snapshot: Arc<Snapshot>,
}

impl ChatRenderer {
    /// A renderer for `started`; a streaming one begins with the assistant role chunk.
    pub fn new(
        state: &AppState,
        started: Started,
        streaming: bool,
        include_usage: bool,
    ) -> (ChatRenderer, crate::engine::RunHandle) {
        let mut renderer = ChatRenderer {
            id: format!("chatcmpl-{}", started.log.request_id),
            created: unix_now(),
            model: started.model,
            streaming,
            include_usage,
            engine: started.engine,
            engine_started: started.engine_started,
            state: state.clone(),
            stats: started.stats,
            log: started.log,
            pending: VecDeque::new(),
            outcome: None,
            sent_text: String::new(),
            sent_reasoning: false,
            sent_tool_calls: 0,
            legacy_functions: false,
            output: None,
            first_content_logged: false,
            finished: false,
            _in_flight: started.in_flight,
            snapshot: started.snapshot,
        };
        if streaming {
            renderer.push_chunk(json!({"role": "assistant", "content": ""}), None);
        }
        (renderer, started.run)
    }

    /// Answers in the legacy function-calling shape (the request sent `functions`): the first call
    /// as `message.function_call`, `finish_reason` `function_call`. Legacy clients handle one call
    /// per answer, so further parallel calls are left out.
    pub fn with_legacy_functions(mut self, legacy: bool) -> ChatRenderer {
        self.legacy_functions = legacy;
        self
    }

    /// Checks the answer against the request's `response_format` (see `turn::output::check_answer`):
    /// a mismatch is a 502 `invalid_model_output` quoting what is wrong, never passed on. A stream
    /// holds the answer's text back until it has been checked.
    pub fn with_output(mut self, output: Option<OutputFormat>) -> ChatRenderer {
        self.output = output;
        self
    }

    /// Takes in the run's next event (`None`: the run ended without a result).
    pub fn feed(&mut self, event: Option<TurnEvent>) {
        match event {
            Some(TurnEvent::TextDelta(_)) if self.output.is_some() => {}
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
        self.fail(shutting_down());
    }

    /// Whether the response is complete (nothing more is read from the run).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The next SSE `data` payload to send, if one is ready.
    pub fn next_pending(&mut self) -> Option<String> {
        self.pending.pop_front()
    }

    /// The plain response: the `chat.completion` body, or the error (already counted and logged).
    pub fn into_outcome(mut self) -> Result<Value, ApiError> {
        self.outcome
            .take()
            .unwrap_or_else(|| Err(stopped_without_result()))
    }

    /// The completion's id (`chatcmpl-…`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The completion's `created` time and model name, as its chunks carry them.
    pub fn created_and_model(&self) -> (u64, &str) {
        (self.created, &self.model)
    }

    /// The latency log of this request (for the first-SSE line).
    pub fn log(&self) -> &LatencyLog {
        &self.log
    }

    fn push_chunk(&mut self, delta: Value, finish_reason: Option<&str>) {
        let chunk = chunk_body(
            &self.id,
            self.created,
            &self.model,
            delta,
            finish_reason,
            self.include_usage,
        );
        self.pending.push_back(chunk.to_string());
    }

    fn text(&mut self, text: String) {
        if !self.streaming {
            // A plain response takes the whole answer from `Done`.
            return;
        }
        if !self.first_content_logged {
            self.first_content_logged = true;
            self.log
                .phases
                .insert("time_to_first_content_sse", ms(self.log.received_at));
        }
        self.sent_text.push_str(&text);
        self.push_chunk(json!({"content": text}), None);
    }

    /// Streams a piece of the reasoning summary as `delta.reasoning_content` (the field DeepSeek,
    /// vLLM and LiteLLM clients read); a plain response takes the summary from `Done`.
    fn reasoning(&mut self, text: String) {
        if !self.streaming || text.is_empty() {
            return;
        }
        self.sent_reasoning = true;
        self.push_chunk(json!({"reasoning_content": text}), None);
    }

    /// Streams one tool call as OpenAI does: a `delta.tool_calls` entry with its id, type, name and
    /// empty arguments, then the arguments as a fragment of the same `index` (a plain response takes
    /// the calls from `Done`). Legacy: `delta.function_call`, the first call only.
    fn tool_call(&mut self, call: &ToolCall) {
        if !self.streaming {
            return;
        }
        let index = self.sent_tool_calls;
        self.sent_tool_calls += 1;
        if self.legacy_functions {
            if index == 0 {
                self.push_chunk(
                    json!({"function_call": {"name": call.name, "arguments": ""}}),
                    None,
                );
                self.push_chunk(
                    json!({"function_call": {"arguments": call.arguments}}),
                    None,
                );
            }
            return;
        }
        let head = ToolCall {
            arguments: String::new(),
            ..call.clone()
        };
        self.push_chunk(
            json!({"tool_calls": [tool_call_json(&head, Some(index))]}),
            None,
        );
        self.push_chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]}),
            None,
        );
    }

    fn done(&mut self, completion: Completion) {
        let Completion {
            text,
            reasoning,
            tool_calls,
            usage,
            finish,
            phases,
        } = completion;
        // An answer cut at `max_tokens` is returned as it is, with finish_reason `length` (as OpenAI).
        let checked = tool_calls.is_empty() && finish != FinishReason::Length;
        if let (Some(format), true) = (&self.output, checked) {
            if let Err(problem) = check_answer(format, &text) {
                let message = format!(
                    "The model's answer does not have the shape response_format asks for: {problem}."
                );
                return self.fail(ApiError::CodexFailed {
                    message,
                    code: "invalid_model_output",
                });
            }
        }
        let finish_reason = match (tool_calls.is_empty(), self.legacy_functions) {
            (true, _) if finish == FinishReason::Length => "length",
            (true, _) => "stop",
            (false, false) => "tool_calls",
            (false, true) => "function_call",
        };
        self.finished = true;
        self.log
            .phases
            .insert(engine_phase_name(self.engine), ms(self.engine_started));
        if self.streaming {
            if !self.sent_reasoning && !reasoning.is_empty() {
                self.reasoning(reasoning);
            }
            // What the deltas have not carried yet: all of it (exec), or the tail held back while it
            // might have been the start of a stop sequence.
            if let Some(rest) = text.strip_prefix(self.sent_text.as_str()) {
                if !rest.is_empty() {
                    self.text(rest.to_string());
                }
            }
            for call in tool_calls.iter().skip(self.sent_tool_calls) {
                self.tool_call(call);
            }
            self.push_chunk(json!({}), Some(finish_reason));
            if self.include_usage {
                let chunk = usage_chunk_body(&self.id, self.created, &self.model, &usage);
                self.pending.push_back(chunk.to_string());
            }
            self.pending.push_back("[DONE]".to_string());
            self.log.phases.extend(phases);
        } else {
            let started = Instant::now();
            let mut body = completion_body(
                &self.id,
                self.created,
                &self.model,
                &text,
                &tool_calls,
                &usage,
            );
            if self.legacy_functions {
                to_legacy_function_call(&mut body);
            }
            if finish_reason == "length" {
                body["choices"][0]["finish_reason"] = json!("length");
            }
            if !reasoning.is_empty() {
                body["choices"][0]["message"]["reasoning_content"] = json!(reasoning);
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
            // After the SSE headers, the error goes in-band.
            self.pending.push_back(error.sse_data());
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
