//! The end of a request: its latency log line (and, through [`LatencyLog::finish`], everything else
//! that is recorded once per request when its response ends).

use std::time::Instant;

use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::config::Profile;
use crate::engine::{ms, Phases};
use crate::live::state::AppState;
use crate::turn::Usage;

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
        LatencyLog {
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
    /// `total`.
    pub fn finish(&self, outcome: Outcome<'_>) {
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
            api: self.surface,
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
