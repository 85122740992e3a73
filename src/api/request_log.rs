//! The end of a request: its latency log line and, through [`LatencyLog::finish`], everything else
//! that is recorded once per request when its response ends: the usage ledger row and the
//! dashboard's live figures ([`crate::usage::Recorder::record`], which never waits).
//!
//! Only routed requests have a `LatencyLog`, so the ledger sees requests that reached a profile.
//! Refusals before routing (a bad key, an unknown model, a malformed body) have no profile to bill
//! and are counted by `/metrics` only.

use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::config::Profile;
use crate::engine::{ms, Phases};
use crate::live::state::AppState;
use crate::turn::Usage;
use crate::usage::{Api, Record};

/// How a request ended, as its adapter saw it.
pub struct Outcome<'a> {
    /// The HTTP status (for an in-band streamed error, the status the error would have had).
    pub status: u16,
    pub error: Option<&'a ApiError>,
    /// The error was sent inside an already started stream.
    pub in_band: bool,
    /// Token counts of a completed turn.
    pub usage: Option<&'a Usage>,
    /// How many tool calls the answer carried.
    pub tool_calls: usize,
}

impl<'a> Outcome<'a> {
    /// A completed answer.
    pub fn ok(usage: &'a Usage, tool_calls: usize) -> Self {
        Outcome {
            status: 200,
            error: None,
            in_band: false,
            usage: Some(usage),
            tool_calls,
        }
    }

    /// A failure: before the response started, or in band when `in_band`.
    pub fn failed(error: &'a ApiError, in_band: bool) -> Self {
        Outcome {
            status: error.status().as_u16(),
            error: Some(error),
            in_band,
            usage: None,
            tool_calls: 0,
        }
    }
}

/// What is known of a request once it is routed.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub request_id: String,
    /// The model name as the client sent it.
    pub model: String,
    pub stream: bool,
    /// The caller's key name ([`crate::api::Caller::key_name`]), never the key.
    pub key_name: Option<String>,
    pub received_at: Instant,
}

/// What the latency log line needs, gathered along the way.
pub struct LatencyLog {
    /// Where the ledger row goes when the request ends.
    state: AppState,
    /// The request's arrival on the wall clock, for the ledger (`received_at` is monotonic).
    arrived_at: SystemTime,
    /// Profiles tried before `profile` answered, in order (filled by the fallback logic).
    pub fallback_from: Vec<String>,
    /// The surface's prefix of the log events (`chat_completion` → `chat_completion_latency`).
    pub surface: &'static str,
    pub request_id: String,
    pub profile: String,
    pub engine: &'static str,
    pub model: String,
    pub stream: bool,
    /// The caller's key name ([`crate::api::Caller::key_name`]), never the key.
    pub key_name: Option<String>,
    pub received_at: Instant,
    pub phases: Phases,
    /// Where the request's Prometheus series are recorded.
    recorder: crate::metrics::Recorder,
}

impl LatencyLog {
    /// The log of a request routed to `profile`.
    pub fn new(
        state: &AppState,
        surface: &'static str,
        profile: &Profile,
        facts: RequestFacts,
    ) -> Self {
        let RequestFacts {
            request_id,
            model,
            stream,
            key_name,
            received_at,
        } = facts;
        let arrived_at = SystemTime::now()
            .checked_sub(received_at.elapsed())
            .unwrap_or_else(SystemTime::now);
        LatencyLog {
            state: state.clone(),
            arrived_at,
            fallback_from: Vec::new(),
            surface,
            request_id,
            profile: profile.name.clone(),
            engine: profile.runtime.engine.as_str(),
            model,
            stream,
            key_name,
            received_at,
            phases: Phases::new(),
            recorder: state.metrics().recorder(),
        }
    }

    /// Records the end of the request: the `{surface}_latency` line with the phases so far plus
    /// `total`, and the usage ledger row.
    pub fn finish(&self, outcome: Outcome<'_>) {
        self.state.usage().record(self.record(&outcome));
        let mut extra = json!({});
        if let Some(error) = outcome.error {
            extra["error"] = json!(error.to_string());
            if outcome.in_band {
                extra["in_band"] = json!(true);
            }
        }
        self.write(outcome.status, extra);
        self.recorder.finished(crate::metrics::Finished {
            profile: &self.profile,
            api: api_of(self.surface).as_str(),
            status: outcome.status,
            key_name: self.key_name.as_deref(),
            usage: outcome.usage,
            total: self.received_at.elapsed(),
            queue_wait: self
                .phases
                .get("queue_wait")
                .map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0)),
        });
    }

    /// The ledger row of this request: counts, names and timings, never content or keys.
    fn record(&self, outcome: &Outcome<'_>) -> Record {
        let usage = outcome.usage.copied().unwrap_or_default();
        let error_code = outcome.error.map(|error| {
            let body = error.body();
            let field = |name: &str| body["error"][name].as_str().map(str::to_string);
            field("code")
                .or_else(|| field("type"))
                .unwrap_or_else(|| "error".to_string())
        });
        let first_token = self
            .phases
            .get("time_to_first_content_sse")
            .filter(|ms| ms.is_finite() && **ms >= 0.0)
            .map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0));
        Record {
            at: self.arrived_at,
            request_id: self.request_id.clone(),
            api: api_of(self.surface),
            profile: self.profile.clone(),
            fallback_from: self.fallback_from.clone(),
            key_name: self.key_name.clone(),
            model: self.model.clone(),
            engine: self.engine.to_string(),
            stream: self.stream,
            status: outcome.status,
            error_code,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            reasoning_tokens: usage.reasoning_tokens,
            latency: self.received_at.elapsed(),
            first_token,
            tool_calls: u32::try_from(outcome.tool_calls).unwrap_or(u32::MAX),
        }
    }

    /// The `{surface}_latency` line: the phases so far plus `total`, and any `extra` fields.
    fn write(&self, status: u16, extra: Value) {
        let mut phases = self.phases.clone();
        phases.insert("total", ms(self.received_at));
        let mut line = json!({
            "event": format!("{}_latency", self.surface),
            "request_id": self.request_id,
            "profile": self.profile,
            "engine": self.engine,
            "model": self.model,
            "stream": self.stream,
            "key": self.key_name,
            "status": status,
            "phases_ms": phases,
        });
        if !self.fallback_from.is_empty() {
            line["fallback_from"] = json!(self.fallback_from);
        }
        if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
            line.extend(extra);
        }
        tracing::info!(target: "codex_api_proxy.latency", "{line}");
    }

    /// The `{surface}_first_sse` line: the time until the first streamed event was handed over.
    pub fn write_first_sse(&self) {
        self.recorder
            .first_token(&self.profile, self.received_at.elapsed());
        tracing::info!(
            target: "codex_api_proxy.latency",
            "{}",
            json!({
                "event": format!("{}_first_sse", self.surface),
                "request_id": self.request_id,
                "profile": self.profile,
                "engine": self.engine,
                "time_to_first_sse_ms": ms(self.received_at),
            })
        );
    }
}

/// The client API of a latency-log surface name.
fn api_of(surface: &str) -> Api {
    match surface {
        "response" | "responses" => Api::Responses,
        "message" | "messages" => Api::Messages,
        _ => Api::Chat,
    }
}
