//! The engine core: how a profile's pool runs Codex, whichever way it runs it.
//!
//! [`Engine`] is one pool's engine, built once from its profile: [`Engine::Exec`] starts one
//! `codex exec --json` process per job ([`exec`]), [`Engine::AppServer`] keeps long-lived
//! `codex app-server` workers and runs each job as a turn on one of them ([`app_server`]). It does three
//! things: dispatch ([`Engine::start`] an admitted [`Job`] with the pool's admission permit as its guard),
//! readiness ([`Engine::readiness`], for `/ready` and 503s) and capabilities ([`Engine::capabilities`],
//! or [`capabilities`] of an [`EngineKind`]: what the engine can carry beyond plain text, checked by an
//! API adapter before admission).
//!
//! Engines never touch HTTP. They read a [`TurnRequest`] (in the [`Job`]) and write [`TurnEvent`]s to
//! the [`RunHandle`]'s channel, both from `crate::turn`; an API adapter (`api::chat`, through
//! `api::pipeline`) turns those events into responses. Every run lives in its own task ([`spawn_run`])
//! that owns the Codex process (exec) or turn (app-server); dropping the handle cancels the run at once
//! (the process group is killed, or the turn interrupted), and the guard is dropped only when the Codex
//! work has ended. The engine knows nothing of the pool that admits jobs.

pub mod app_server;
pub mod exec;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::codex::env::ChildEnv;
use crate::codex::launch::{CodexUnavailable, ResolvedCodex};
use crate::config::{EngineKind, Profile};
pub use crate::turn::{
    ms, Capabilities, Completion, EngineError, FailureKind, FinishReason, HoldEvent, HoldLog,
    Phases, TurnEvent, TurnRequest, Usage,
};
use app_server::worker::WorkerFigures;
use app_server::AppServerPool;

/// What each engine can carry beyond plain text. An API adapter compares it with
/// [`TurnRequest::needs`] and answers 400 before admission when the profile's engine lacks something.
pub fn capabilities(engine: EngineKind) -> Capabilities {
    match engine {
        EngineKind::Exec => Capabilities {
            client_tools: false,
            images: true,
            output_schema: true,
            streams_deltas: false,
            continuation: false,
        },
        EngineKind::AppServer => Capabilities {
            client_tools: true,
            images: true,
            output_schema: true,
            streams_deltas: true,
            continuation: true,
        },
    }
}

/// Whether an engine can take work now, and if not, why (for `/ready` and 503s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The Codex binary was not found or did not answer `--version`.
    CodexUnavailable(CodexUnavailable),
    /// No app-server worker is ready (starting, down or stopped); the reason names the state.
    WorkersNotReady(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }

    /// Why the engine cannot serve, or `None` when it can.
    pub fn reason(&self) -> Option<String> {
        match self {
            Readiness::Ready => None,
            Readiness::CodexUnavailable(err) => Some(err.0.clone()),
            Readiness::WorkersNotReady(reason) => Some(reason.clone()),
        }
    }
}

/// The Codex engine of one pool: dispatch of admitted jobs, readiness and capabilities. Built once per
/// pool (an app-server engine starts its workers when built) from the profile it runs.
pub enum Engine {
    /// One `codex exec` process per job.
    Exec(ExecEngine),
    /// Long-lived `codex app-server` workers.
    AppServer(AppServerEngine),
}

/// What an exec run needs besides the job.
pub struct ExecEngine {
    profile: Arc<Profile>,
    codex: Result<ResolvedCodex, CodexUnavailable>,
    child_env: Arc<ChildEnv>,
}

/// The workers of an app-server profile and the profile they were started with.
pub struct AppServerEngine {
    profile: Arc<Profile>,
    codex: Result<ResolvedCodex, CodexUnavailable>,
    child_env: Arc<ChildEnv>,
    workers: Arc<AppServerPool>,
}

impl Engine {
    /// Builds the engine `profile.runtime.engine` names; an app-server engine starts its workers now.
    pub fn new(
        profile: Arc<Profile>,
        codex: Result<ResolvedCodex, CodexUnavailable>,
        child_env: Arc<ChildEnv>,
    ) -> Engine {
        match profile.runtime.engine {
            EngineKind::Exec => Engine::Exec(ExecEngine {
                profile,
                codex,
                child_env,
            }),
            EngineKind::AppServer => {
                let plain = codex.clone().map_err(|err| err.0);
                let workers = AppServerPool::start(&profile, plain, &child_env);
                Engine::AppServer(AppServerEngine {
                    profile,
                    codex,
                    child_env,
                    workers,
                })
            }
        }
    }

    /// Starts an admitted job; `guard` (the admission permit) is dropped when the Codex work has ended.
    pub fn start(&self, job: Job, guard: impl Send + Sync + 'static) -> RunHandle {
        match self {
            Engine::Exec(exec) => exec::start(
                exec.profile.clone(),
                exec.codex.clone().map_err(|err| err.0),
                exec.child_env.clone(),
                job,
                guard,
            ),
            Engine::AppServer(app) => app.workers.run(app.profile.clone(), job, guard),
        }
    }

    pub fn readiness(&self) -> Readiness {
        let codex = match self {
            Engine::Exec(exec) => &exec.codex,
            Engine::AppServer(app) => &app.codex,
        };
        if let Err(err) = codex {
            return Readiness::CodexUnavailable(err.clone());
        }
        match self {
            Engine::Exec(_) => Readiness::Ready,
            Engine::AppServer(app) => match app.workers.readiness() {
                Ok(()) => Readiness::Ready,
                Err(reason) => Readiness::WorkersNotReady(reason),
            },
        }
    }

    /// Whether the Codex binary was usable when the engine was built.
    pub fn codex_runnable(&self) -> bool {
        match self {
            Engine::Exec(exec) => exec.codex.is_ok(),
            Engine::AppServer(app) => app.codex.is_ok(),
        }
    }

    /// The environment settings of its Codex processes (part of a pool's runtime identity).
    pub fn child_env(&self) -> &Arc<ChildEnv> {
        match self {
            Engine::Exec(exec) => &exec.child_env,
            Engine::AppServer(app) => &app.child_env,
        }
    }

    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Exec(_) => EngineKind::Exec,
            Engine::AppServer(_) => EngineKind::AppServer,
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        capabilities(self.kind())
    }

    /// The app-server workers' figures for `/metrics` (`None` for exec).
    pub fn workers_figures(&self) -> Option<Vec<WorkerFigures>> {
        match self {
            Engine::Exec(_) => None,
            Engine::AppServer(app) => Some(app.workers.workers_figures()),
        }
    }

    /// Process ids of live workers (empty for exec: its processes belong to their runs).
    pub fn worker_pids(&self) -> Vec<u32> {
        match self {
            Engine::Exec(_) => Vec::new(),
            Engine::AppServer(app) => app.workers.worker_pids(),
        }
    }

    /// Stops long-lived processes now (exec has none: its runs end with their tasks).
    pub fn shutdown(&self) {
        if let Engine::AppServer(app) = self {
            app.workers.shutdown();
        }
    }

    /// Whether the engine keeps processes that must be stopped when its pool retires.
    pub fn has_workers(&self) -> bool {
        matches!(self, Engine::AppServer(_))
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
    /// Whether, and how long, the app-server engine holds a turn that returned client tool calls, and
    /// where it reports what became of it.
    pub hold: HoldPolicy,
}

/// The hold settings of the request's profile (from the request's snapshot, so a reload that keeps
/// the pool still applies new values) and the profile's counters. The default holds nothing.
#[derive(Debug, Clone, Default)]
pub struct HoldPolicy {
    /// `tool_call_timeout_seconds`; zero: holding off.
    pub timeout: std::time::Duration,
    /// `max_held_turns`.
    pub max_held: usize,
    pub log: HoldLog,
    /// `response_ttl_seconds`: how long a kept thread waits for its continuation (app-server).
    pub response_ttl: std::time::Duration,
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
