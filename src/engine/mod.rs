//! The engine interface: what a profile's pool asks of Codex, and the events both engines produce.
//!
//! A run is started with a [`Job`] and an admission [`Permit`](crate::pool::Permit); it returns a
//! [`RunHandle`]. The run lives in its own task that owns the Codex process (exec) or turn (app-server);
//! dropping the handle cancels the run at once (the process group is killed, or the turn interrupted).
//! Engines never touch HTTP; `api::chat` turns [`EngineEvent`]s into responses.

pub mod app_server;
pub mod exec;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::codex::prompt::Conversation;
use crate::pool::Permit;

/// One request's work, as the engine needs it.
#[derive(Debug, Clone)]
pub struct Job {
    pub request_id: String,
    pub conversation: Conversation,
    /// The validated working directory.
    pub cwd: PathBuf,
    /// The model Codex should use (`--model`), if any.
    pub model: Option<String>,
    /// When the HTTP request arrived (for latency phases).
    pub received_at: Instant,
}

/// Token counts in OpenAI's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    /// The OpenAI `usage` object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        })
    }
}

/// Latency phases in milliseconds, named as in the original tool's `phases_ms`.
pub type Phases = BTreeMap<&'static str, f64>;

/// What a run reports, in order: zero or more deltas, then exactly one `Done` or `Failed`.
#[derive(Debug)]
pub enum EngineEvent {
    /// A piece of the final answer, as soon as it is known (app-server streams; exec sends none).
    Delta(String),
    /// The turn completed.
    Done {
        text: String,
        usage: Usage,
        phases: Phases,
    },
    /// The run failed.
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
#[derive(Debug, Clone, thiserror::Error)]
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

/// A started run. Dropping it cancels the run.
pub struct RunHandle {
    pub events: mpsc::Receiver<EngineEvent>,
    /// Cancels the run's task when dropped (client gone, response finished).
    pub cancel: DropGuard,
}

/// Milliseconds since `since`, rounded to two decimals (the unit of every latency phase).
pub fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 100_000.0).round() / 100.0
}

/// Runs an engine's `work` in its own task and returns the handle that cancels it when dropped.
/// An error from `work` becomes the run's final `Failed` event; the admission permit is released only
/// when `work` has ended, so a slot is free only once the Codex work really is.
pub fn spawn_run<Work, Run>(permit: Permit, buffer: usize, work: Work) -> RunHandle
where
    Work: FnOnce(mpsc::Sender<EngineEvent>, CancellationToken) -> Run,
    Run: Future<Output = Result<(), EngineError>> + Send + 'static,
{
    let (events, receiver) = mpsc::channel(buffer);
    let cancel = CancellationToken::new();
    let run = work(events.clone(), cancel.clone());
    tokio::spawn(async move {
        if let Err(error) = run.await {
            let _ = events.send(EngineEvent::Failed(error)).await;
        }
        drop(permit);
    });
    RunHandle {
        events: receiver,
        cancel: cancel.drop_guard(),
    }
}
