//! The engine interface: what a profile's pool asks of Codex, and the events both engines produce.
//!
//! A run is started with a [`Job`] and a guard (the pool's admission permit); it returns a
//! [`RunHandle`]. The run lives in its own task that owns the Codex process (exec) or turn (app-server);
//! dropping the handle cancels the run at once (the process group is killed, or the turn interrupted).
//! Engines never touch HTTP; they read a [`TurnRequest`] and write [`TurnEvent`]s (`crate::turn`), which
//! `api::chat` turns into responses.

pub mod app_server;
pub mod exec;

use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::EngineKind;
pub use crate::turn::{
    ms, Capabilities, Completion, EngineError, FailureKind, FinishReason, Phases, TurnEvent,
    TurnRequest, Usage,
};

/// What each engine can carry beyond plain text. An API adapter compares it with
/// [`TurnRequest::needs`] and answers 400 before admission when the profile's engine lacks something.
pub fn capabilities(engine: EngineKind) -> Capabilities {
    match engine {
        EngineKind::Exec => Capabilities {
            client_tools: false,
            images: false,
            output_schema: false,
            streams_deltas: false,
        },
        EngineKind::AppServer => Capabilities {
            client_tools: false,
            images: false,
            output_schema: false,
            streams_deltas: true,
        },
    }
}

/// One request's work, as the engine needs it.
#[derive(Debug, Clone)]
pub struct Job {
    pub request_id: String,
    /// The conversation and its options, in the engine-neutral model.
    pub request: TurnRequest,
    /// The validated working directory.
    pub cwd: PathBuf,
    /// The model Codex should use (`--model`), if any.
    pub model: Option<String>,
    /// When the HTTP request arrived (for latency phases).
    pub received_at: Instant,
}

/// A started run. Dropping it cancels the run.
pub struct RunHandle {
    pub events: mpsc::Receiver<TurnEvent>,
    /// Cancels the run's task when dropped (client gone, response finished).
    pub cancel: DropGuard,
}

/// Runs an engine's `work` in its own task and returns the handle that cancels it when dropped.
/// An error from `work` becomes the run's final `Failed` event. `guard` (the admission permit) is
/// dropped only when `work` has ended, so a slot is free only once the Codex work really is.
pub fn spawn_run<Guard, Work, Run>(guard: Guard, buffer: usize, work: Work) -> RunHandle
where
    Guard: Send + 'static,
    Work: FnOnce(mpsc::Sender<TurnEvent>, CancellationToken) -> Run,
    Run: Future<Output = Result<(), EngineError>> + Send + 'static,
{
    let (events, receiver) = mpsc::channel(buffer);
    let cancel = CancellationToken::new();
    let run = work(events.clone(), cancel.clone());
    tokio::spawn(async move {
        if let Err(error) = run.await {
            let _ = events.send(TurnEvent::Failed(error)).await;
        }
        drop(guard);
    });
    RunHandle {
        events: receiver,
        cancel: cancel.drop_guard(),
    }
}
