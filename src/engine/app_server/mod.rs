//! The app-server engine: `workers` long-lived `codex app-server` processes per pool, each running many
//! turns at once (one ephemeral thread per request, demultiplexed by `threadId`).
//!
//! Entry points: [`AppServerPool::start`] (when the pool comes into service: server start or reload) and
//! [`AppServerPool::run`] (one request). A run picks the least-loaded ready worker, starts a thread
//! (`developerInstructions` = system text), replays earlier messages with `thread/inject_items`, starts
//! the turn with the last user message, forwards final-answer deltas as they arrive, and unsubscribes the
//! thread at the end. Dropping the [`RunHandle`] or hitting `timeout_seconds` sends `turn/interrupt`; the
//! worker stays up.
//!
//! Client tools: a request's tools are the thread's `dynamicTools` (with `experimentalRawEvents`, whose
//! `rawResponse/completed` says when every parallel call of a response is known, and its usage). When
//! the model calls them, the calls are returned to the client at once (`finish_reason: tool_calls`) and
//! the turn is **held** ([`hold`]): its `item/tool/call` requests stay unanswered and its admission
//! permit is given back. The request that brings exactly those calls' results, after the same
//! conversation, is admitted like any other and continues the same turn: the results answer the server
//! requests and the rest of the turn streams into its response. A held turn ends after the profile's
//! `tool_call_timeout_seconds` (interrupted, counted as expired), when its worker dies, or when the pool
//! retires; a request that matches no held turn replays its conversation on a new thread. With holding
//! off (`tool_call_timeout_seconds = 0`), `max_held_turns` reached, or legacy `functions`, the turn is
//! interrupted at its calls instead. `tool_choice` `required` or a named function is enforced by
//! [`TurnContext::answer`].
//!
//! Submodules: `turn` (the turn's protocol core, without I/O), `hold` (the held-turn registry and its
//! matching rule), `worker` (process supervision), `rpc` (JSON-RPC), `protocol` (messages).

pub mod hold;
pub mod kept;
pub mod protocol;
pub mod rpc;
pub mod spare;
pub mod turn;
pub mod worker;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::codex::env::ChildEnv;
use crate::codex::events::summarize;
use crate::codex::launch::ResolvedCodex;
use crate::config::Profile;
use crate::engine::{
    ms, spawn_run, EngineError, FailureKind, HoldEvent, Job, Phases, RunHandle, TurnEvent,
};
use crate::turn::ToolChoice;
use hold::{Expected, HeldTurns, Resume};
use rpc::{Connection, RpcError, ThreadEvents, ThreadMessage, OVERLOADED};
use turn::{AppServerTurn, Step, Stop};
use worker::{supervise, Worker, WorkerFigures, WorkerSpec, WorkerState};

/// Longest wait for a JSON-RPC answer that should come at once (thread/start, turn/start, …).
const RPC_TIMEOUT: Duration = Duration::from_secs(15);
/// Retries of a request the app-server refused as overloaded (-32001), with doubling delays.
const OVERLOAD_RETRIES: u32 = 3;

/// The workers of one profile's pool.
pub struct AppServerPool {
    workers: Vec<Arc<Worker>>,
    /// Cancelled when the pool is shut down: supervisors stop their processes.
    stop: CancellationToken,
    /// Why no worker can run at all (binary missing), if so.
    unavailable: Option<String>,
    /// Turns that returned client tool calls and wait for their results.
    held: HeldTurns,
}

impl AppServerPool {
    /// Starts the supervisors of `profile.runtime.workers` processes.
    pub fn start(
        profile: &Profile,
        codex: Result<ResolvedCodex, String>,
        child_env: &ChildEnv,
    ) -> Arc<AppServerPool> {
        let workers: Vec<Arc<Worker>> = (0..profile.runtime.workers).map(Worker::new).collect();
        let stop = CancellationToken::new();
        let unavailable = match codex {
            Ok(codex) => {
                let mut args = worker::base_args();
                if !profile.runtime.tools {
                    args.extend(
                        crate::codex::launch::NO_TOOLS_ARGS
                            .iter()
                            .map(|arg| arg.to_string()),
                    );
                }
                for item in profile.effective_codex_config() {
                    args.push("-c".to_string());
                    args.push(item);
                }
                let env = child_env.build(
                    std::env::vars_os(),
                    &codex,
                    profile.runtime.proxy.as_deref(),
                );
                let spec = Arc::new(WorkerSpec {
                    codex,
                    args,
                    env,
                    codex_home: profile.runtime.codex_home.clone(),
                    working_dir: profile.runtime.default_cwd.clone(),
                });
                for worker in &workers {
                    tokio::spawn(supervise(worker.clone(), spec.clone(), stop.clone()));
                }
                None
            }
            Err(reason) => {
                for worker in &workers {
                    worker.set_state(WorkerState::Down(reason.clone()));
                }
                Some(reason)
            }
        };
        Arc::new(AppServerPool {
            workers,
            stop,
            unavailable,
            held: HeldTurns::default(),
        })
    }

    /// Stops every worker (close stdin → SIGTERM → SIGKILL).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// `Ok` when at least one worker is ready, else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(reason) = &self.unavailable {
            return Err(reason.clone());
        }
        let mut reason = None;
        for worker in &self.workers {
            match worker.state() {
                WorkerState::Ready(_) => return Ok(()),
                WorkerState::Down(why) => reason = Some(why),
                WorkerState::Starting => {
                    reason.get_or_insert_with(|| "app-server workers are starting".to_string());
                }
                WorkerState::Stopped => {
                    reason.get_or_insert_with(|| "app-server workers are stopped".to_string());
                }
            }
        }
        Err(reason.unwrap_or_else(|| "no app-server workers".to_string()))
    }

    /// Per-worker metrics. Reads only figures the workers keep (atomics and their state), so `/metrics`
    /// never waits on a worker process; `threads_loaded` is the supervisor's last poll.
    pub fn workers_figures(&self) -> Vec<WorkerFigures> {
        self.workers.iter().map(|worker| worker.figures()).collect()
    }

    /// Process ids of the live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers
            .iter()
            .map(|worker| worker.pid.load(Ordering::Relaxed))
            .filter(|pid| *pid > 0)
            .collect()
    }

    /// Starts one request's turn in its own task. A request that brings the results of a held turn's
    /// calls continues that turn (see [`hold`]); any other starts a thread, replaying its conversation.
    pub fn run(
        self: &Arc<Self>,
        profile: Arc<Profile>,
        job: Job,
        permit: impl Send + Sync + 'static,
    ) -> RunHandle {
        let pool = self.clone();
        let permit: Box<dyn Send + Sync> = Box::new(permit);
        // The permit travels with the work (a held turn gives it back early), so the run's own guard
        // is empty.
        spawn_run((), 64, |events, cancel| async move {
            if let Some(id) = job.request.thread.continues.clone() {
                // A `previous_response_id`: hand the request to the turn that keeps that thread.
                let sender = kept::take(&id, &profile.name)
                    .map_err(|reason| EngineError::new(FailureKind::CodexFailed, reason))?;
                let continuation = kept::Continuation {
                    job,
                    events,
                    cancel,
                    permit,
                };
                return match sender.send(continuation) {
                    Ok(()) => Ok(()),
                    Err(continuation) => {
                        let error = EngineError::new(
                            FailureKind::CodexFailed,
                            format!("the response '{id}' is no longer kept (its thread ended)"),
                        );
                        fail(&continuation.events, error).await;
                        Ok(())
                    }
                };
            }
            let (job, permit) = match pool.hand_over(job, events.clone(), cancel.clone(), permit) {
                HandOver::Taken => return Ok(()),
                HandOver::Back(job, permit) => (*job, permit),
            };
            if hold::continues_tool_calls(&job.request) {
                job.hold.log.record(HoldEvent::Replayed);
            }
            pool.turn(&profile, job, events, cancel, permit).await
        })
    }

    /// Hands `job` to the held turn it continues, if there is one and it is still alive; otherwise
    /// gives the job and permit back.
    fn hand_over(
        &self,
        job: Job,
        events: mpsc::Sender<TurnEvent>,
        cancel: CancellationToken,
        permit: Box<dyn Send + Sync>,
    ) -> HandOver {
        let Some((resume, outputs)) = self.held.take(&job) else {
            return HandOver::Back(Box::new(job), permit);
        };
        match resume.send(Resume {
            job,
            outputs,
            events,
            cancel,
            permit,
        }) {
            // Counted as continued by the held turn once its answer is known.
            Ok(()) => HandOver::Taken,
            // The held turn ended in the meantime (its worker died): replay.
            Err(resume) => HandOver::Back(Box::new(resume.job), resume.permit),
        }
    }

    /// The least-loaded ready worker; waits (until `deadline`) while workers are starting.
    ///
    /// Spreading turns over the workers before multiplexing them on one process is the faster policy:
    /// against the mock model, two workers with one turn each ran as many turns per second as one worker
    /// with four (40.4 and 40.3), at half the p50 latency (50 and 99 ms) and less Codex CPU per turn (42
    /// and 48 ms), as measured by `examples/bench_codex_direct.rs` (`environments: []` rows).
    async fn pick_worker(
        &self,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
    ) -> Result<(Arc<Worker>, Arc<Connection>), EngineError> {
        if let Some(reason) = &self.unavailable {
            return Err(EngineError::new(
                FailureKind::CodexUnavailable,
                reason.clone(),
            ));
        }
        let mut changes: Vec<_> = self.workers.iter().map(|w| w.subscribe()).collect();
        loop {
            let mut best: Option<(Arc<Worker>, Arc<Connection>)> = None;
            let mut reasons = Vec::new();
            for worker in &self.workers {
                match worker.state() {
                    WorkerState::Ready(connection) if !connection.closed().is_cancelled() => {
                        let load = worker.in_flight.load(Ordering::Relaxed);
                        if best.as_ref().is_none_or(|(chosen, _)| {
                            load < chosen.in_flight.load(Ordering::Relaxed)
                        }) {
                            best = Some((worker.clone(), connection));
                        }
                    }
                    WorkerState::Down(reason) => reasons.push(reason),
                    WorkerState::Stopped => {
                        return Err(EngineError::new(
                            FailureKind::CodexFailed,
                            "the profile's app-server workers were stopped",
                        ))
                    }
                    WorkerState::Starting | WorkerState::Ready(_) => {}
                }
            }
            if let Some(found) = best {
                return Ok(found);
            }
            // Every worker's last start failed: the profile cannot serve now (503). A worker that merely
            // exited is being restarted within its backoff, and the request waits for it.
            if !reasons.is_empty()
                && self
                    .workers
                    .iter()
                    .all(|w| w.start_failures.load(Ordering::Relaxed) >= 1)
            {
                return Err(EngineError::new(
                    FailureKind::CodexUnavailable,
                    format!(
                        "the app-server workers cannot start: {}",
                        reasons.join("; ")
                    ),
                ));
            }
            let wait_any = futures_util::future::select_all(
                changes.iter_mut().map(|change| Box::pin(change.changed())),
            );
            tokio::select! {
                _ = wait_any => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(EngineError::new(
                        FailureKind::Timeout,
                        format!("no app-server worker became ready in time: {}", reasons.join("; ")),
                    ));
                }
                _ = cancel.cancelled() => {
                    return Err(EngineError::new(FailureKind::CodexFailed, "cancelled"));
                }
            }
        }
    }

    async fn turn(
        &self,
        profile: &Profile,
        job: Job,
        events: mpsc::Sender<TurnEvent>,
        cancel: CancellationToken,
        permit: Box<dyn Send + Sync>,
    ) -> Result<(), EngineError> {
        let deadline = tokio::time::Instant::from_std(job.received_at) + profile.runtime.timeout;
        let mut phases = Phases::new();
        let started = Instant::now();
        let (worker, connection) = self.pick_worker(deadline, &cancel).await?;
        phases.insert("app_server_worker_wait", ms(started));
        worker.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlightTurn(worker.clone());
        let mut turn = TurnContext {
            worker: &worker,
            connection: &connection,
            profile,
            deadline,
            cancel,
        };

        let Opened {
            thread_id,
            mut notifications,
            guard: _thread,
            mut core,
        } = turn.open(&connection, &job, phases).await?;

        // One part per request served by this turn: the first, then one per continuation of a hold.
        let mut part = Part {
            job,
            events,
            _permit: permit,
            resumed: false,
            sent: Default::default(),
        };
        let may_hold_part =
            |part: &Part| !part.job.hold.timeout.is_zero() && !part.job.request.legacy_calls;
        let mut may_hold = may_hold_part(&part);
        // The thread's client tools (fixed at thread/start) for the cores of later turns on it.
        let client_tools: Vec<String> = part
            .job
            .request
            .tools
            .iter()
            .map(|t| t.name.clone())
            .collect();
        // Without client tools a turn's usage is the thread's running total: a later turn on a kept
        // thread reports what it added to the total before it.
        let mut usage_before: Option<crate::turn::Usage> = None;
        loop {
            let outcome = turn
                .answer(&thread_id, &mut core, &mut notifications, &part, may_hold)
                .await;
            let lost_unseen =
                matches!(outcome, Ok(Outcome::Lost(_))) && !part.sent.load(Ordering::Relaxed);
            if part.resumed && !lost_unseen {
                part.job.hold.log.record(HoldEvent::Continued);
            }
            let mut calls = match outcome {
                Ok(Outcome::Done(mut completion)) => {
                    let thread_total = completion.usage;
                    if let Some(before) = usage_before {
                        completion.usage = usage_since(thread_total, before);
                    }
                    let keep =
                        part.job.request.thread.keep && !part.job.hold.response_ttl.is_zero();
                    let kept = keep.then(|| kept::keep(&part.job.request_id, &profile.name));
                    let _ = turn
                        .race(part.events.send(TurnEvent::Done(completion)))
                        .await;
                    let Some(kept) = kept else {
                        return Ok(());
                    };
                    let (id, ttl) = (part.job.request_id.clone(), part.job.hold.response_ttl);
                    // The answer is complete: the slot is free while the thread is kept.
                    drop(part);
                    let continuation = tokio::select! {
                        continuation = kept.continuation => continuation.ok(),
                        _ = tokio::time::sleep(ttl) => None,
                        _ = kept.ended.cancelled() => None,
                        _ = connection.closed().cancelled() => None,
                        _ = self.stop.cancelled() => None,
                    };
                    let Some(continuation) = continuation else {
                        kept::forget(&id, kept.generation);
                        return Ok(());
                    };
                    part = Part {
                        job: continuation.job,
                        events: continuation.events,
                        _permit: continuation.permit,
                        resumed: false,
                        sent: Default::default(),
                    };
                    turn.deadline = tokio::time::Instant::from_std(part.job.received_at)
                        + profile.runtime.timeout;
                    turn.cancel = continuation.cancel;
                    match self.next_turn(profile, &turn, &thread_id, &part.job).await {
                        Ok(turn_id) => {
                            core =
                                AppServerTurn::new(turn_id, Phases::new(), profile.runtime.timeout)
                                    .with_client_tools(client_tools.iter().cloned())
                                    .with_limits(
                                        &part.job.request.stop,
                                        part.job.request.max_output_tokens,
                                    );
                        }
                        Err(error) => {
                            fail(&part.events, error).await;
                            return Ok(());
                        }
                    }
                    usage_before = client_tools.is_empty().then_some(thread_total);
                    may_hold = may_hold_part(&part);
                    continue;
                }
                Ok(Outcome::Stopped) => return Ok(()),
                Ok(Outcome::Lost(error)) if !part.resumed || !lost_unseen => {
                    fail(&part.events, error).await;
                    return Ok(());
                }
                Ok(Outcome::Lost(_)) => {
                    // The worker died under a continuation that has sent nothing yet: replay it.
                    let Part {
                        job,
                        events,
                        _permit,
                        ..
                    } = part;
                    return self
                        .replay_continuation(profile, job, events, turn.cancel.clone(), _permit)
                        .await;
                }
                Err(error) => {
                    fail(&part.events, error).await;
                    return Ok(());
                }
                Ok(Outcome::Calls(calls)) => calls,
            };
            let expected = Expected::new(&part.job, core.text_so_far(), core.tool_calls());
            let held = self.held.hold(
                expected,
                part.job.hold.max_held,
                connection.closed().clone(),
            );
            let Some((key, resumed)) = held else {
                // Too many turns are held: end this one at its calls (continued by replay).
                calls.interrupt(&connection, &thread_id).await;
                may_hold = false;
                continue;
            };
            part.job.hold.log.record(HoldEvent::Held);
            let completion = core.returned_calls();
            let _ = turn
                .race(part.events.send(TurnEvent::Done(completion)))
                .await;
            // The answer is complete: the client's response ends and the slot is free while held.
            let (hold_log, timeout) = (part.job.hold.log.clone(), part.job.hold.timeout);
            drop(part);
            let held = HeldTurn {
                key: &key,
                thread_id: &thread_id,
                timeout,
                hold_log: &hold_log,
            };
            let Some(resume) = self
                .wait_held(
                    &connection,
                    held,
                    resumed,
                    &mut calls,
                    &mut core,
                    &mut notifications,
                )
                .await
            else {
                return Ok(());
            };
            if connection.closed().is_cancelled() {
                // The worker died as the continuation arrived: replay it on a new thread.
                let Resume {
                    job,
                    events,
                    cancel,
                    permit,
                    ..
                } = resume;
                return self
                    .replay_continuation(profile, job, events, cancel, permit)
                    .await;
            }
            calls.resume(&connection, &resume.outputs);
            turn.deadline =
                tokio::time::Instant::from_std(resume.job.received_at) + profile.runtime.timeout;
            turn.cancel = resume.cancel;
            core.resume(Phases::new());
            part = Part {
                job: resume.job,
                events: resume.events,
                _permit: resume.permit,
                resumed: true,
                sent: Default::default(),
            };
            may_hold = may_hold_part(&part);
        }
    }

    /// Starts a new turn on a kept thread for the request that continues it: any items before its last
    /// user message are injected, and that message is the turn's input. Returns the turn's id.
    async fn next_turn(
        &self,
        profile: &Profile,
        turn: &TurnContext<'_>,
        thread_id: &str,
        job: &Job,
    ) -> Result<Option<String>, EngineError> {
        let (history, input) = protocol::split_conversation(&job.request);
        if !history.is_empty() {
            let items = json!({"threadId": thread_id, "items": history});
            turn.call("thread/inject_items", items).await?;
        }
        let params = protocol::turn_start_params(profile, &job.request, thread_id, input);
        let started = turn.call("turn/start", params).await?;
        Ok(started
            .pointer("/turn/id")
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    /// Replays a continuation whose held turn was lost with its worker, on a new thread (of a worker
    /// that is up). Its errors go to its own client.
    async fn replay_continuation(
        &self,
        profile: &Profile,
        job: Job,
        events: mpsc::Sender<TurnEvent>,
        cancel: CancellationToken,
        permit: Box<dyn Send + Sync>,
    ) -> Result<(), EngineError> {
        job.hold.log.record(HoldEvent::Replayed);
        let failed = events.clone();
        let replay = Box::pin(self.turn(profile, job, events, cancel, permit));
        if let Err(error) = replay.await {
            fail(&failed, error).await;
        }
        Ok(())
    }

    /// Waits while a turn is held: for the request that continues it, the hold's timeout, the end of
    /// the worker, or the end of the turn. Returns the continuation, or `None` when the turn is over
    /// (it was interrupted and its calls answered when it expired).
    async fn wait_held(
        &self,
        connection: &Connection,
        held: HeldTurn<'_>,
        mut resumed: oneshot::Receiver<Resume>,
        calls: &mut HeldCalls,
        core: &mut AppServerTurn,
        messages: &mut ThreadEvents,
    ) -> Option<Resume> {
        let expiry = tokio::time::sleep(held.timeout);
        tokio::pin!(expiry);
        let mut expiry_seen = false;
        loop {
            tokio::select! {
                resume = &mut resumed => return match resume {
                    Ok(resume) => Some(resume),
                    Err(_) => {
                        calls.interrupt(connection, held.thread_id).await;
                        None
                    }
                },
                _ = &mut expiry, if !expiry_seen => {
                    expiry_seen = true;
                    // Not released: a continuation took the turn just now and its request is on the way.
                    if self.held.release(held.key) {
                        held.hold_log.record(HoldEvent::Expired);
                        calls.interrupt(connection, held.thread_id).await;
                        return None;
                    }
                }
                _ = connection.closed().cancelled() => {
                    // The worker died: the next request replays the conversation.
                    self.held.release(held.key);
                    return None;
                }
                message = messages.receiver.recv() => {
                    let Some(message) = message else {
                        self.held.release(held.key);
                        return None;
                    };
                    match core.on_message(message) {
                        Some(Step::Answer { id, reply }) => connection.respond(&id, &reply),
                        Some(Step::ToolCall { call, id, reply, .. }) => {
                            // A call the client never saw: the turn can no longer go on as returned.
                            calls.hold(None, call.call_id, id, reply);
                            if self.held.release(held.key) {
                                calls.interrupt(connection, held.thread_id).await;
                                return None;
                            }
                        }
                        Some(Step::Done(_) | Step::Fail(_)) => {
                            self.held.release(held.key);
                            calls.answer(connection);
                            return None;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// What a turn added to a thread's running token total: `total` minus the `before` of earlier turns.
fn usage_since(total: crate::turn::Usage, before: crate::turn::Usage) -> crate::turn::Usage {
    crate::turn::Usage {
        prompt_tokens: total.prompt_tokens.saturating_sub(before.prompt_tokens),
        completion_tokens: total
            .completion_tokens
            .saturating_sub(before.completion_tokens),
        total_tokens: total.total_tokens.saturating_sub(before.total_tokens),
        cached_tokens: total.cached_tokens.saturating_sub(before.cached_tokens),
        reasoning_tokens: total
            .reasoning_tokens
            .saturating_sub(before.reasoning_tokens),
    }
}

/// What became of a request offered to the held turns.
enum HandOver {
    /// A held turn took it over.
    Taken,
    /// No held turn continues it: the job and permit come back.
    Back(Box<Job>, Box<dyn Send + Sync>),
}

/// One request served by a turn: its job, where its events go, and its admission permit.
struct Part {
    job: Job,
    events: mpsc::Sender<TurnEvent>,
    _permit: Box<dyn Send + Sync>,
    /// A continuation of a held turn (not the request that started it).
    resumed: bool,
    /// Whether any event went to this request's client.
    sent: std::sync::atomic::AtomicBool,
}

/// A held turn's facts for [`AppServerPool::wait_held`].
struct HeldTurn<'a> {
    key: &'a str,
    thread_id: &'a str,
    timeout: Duration,
    hold_log: &'a crate::turn::HoldLog,
}

/// How one part of a turn ended.
enum Outcome {
    /// The turn completed: this is the answer.
    Done(crate::turn::Completion),
    /// The model called client tools and every call is known; the turn is still open.
    Calls(HeldCalls),
    /// The client went away; the turn was interrupted.
    Stopped,
    /// The thread's messages ended (the worker died): the turn is lost.
    Lost(EngineError),
}

/// What one part of a turn streams until.
enum Segment {
    Done(crate::turn::Completion),
    /// The calls of the response are all known (only when asked to stop there).
    Settled,
    Stopped,
    Lost(EngineError),
}

/// Where one turn runs and when the current request must end.
struct TurnContext<'a> {
    worker: &'a Worker,
    connection: &'a Connection,
    profile: &'a Profile,
    /// The deadline and cancellation of the request the turn serves now (a continuation brings its own).
    deadline: tokio::time::Instant,
    cancel: CancellationToken,
}

impl TurnContext<'_> {
    /// Runs `work` until it ends, the request's deadline passes, or the request is cancelled.
    async fn race<T>(&self, work: impl std::future::Future<Output = T>) -> Result<T, Stop> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(Stop::Cancelled),
            _ = tokio::time::sleep_until(self.deadline) => Err(Stop::TimedOut),
            value = work => Ok(value),
        }
    }

    /// Starts the request's thread (the worker's spare one when it has it), replays the conversation
    /// before the last user message, and starts the turn with that message; then starts the next spare
    /// thread, if one is wanted. `connection` is the one of `self`, shared.
    async fn open(
        &self,
        connection: &Arc<Connection>,
        job: &Job,
        mut phases: Phases,
    ) -> Result<Opened, EngineError> {
        let profile = self.profile;
        let started = Instant::now();
        let cwd = job.cwd.display().to_string();
        let instructions = protocol::developer_instructions(&job.request);
        let mut params = protocol::thread_start_params(
            profile,
            &cwd,
            job.model.as_deref(),
            instructions.as_deref(),
        );
        protocol::add_client_tools(&mut params, profile, &job.request);
        let (thread_id, refill) = self.start_thread(params).await?;
        phases.insert("app_server_thread_start", ms(started));
        let notifications = connection.subscribe_thread(&thread_id);
        // Dropped when the turn ends (or here, when it cannot start), after the final event was handed
        // over: the unsubscribe runs in its own task, off the response's path.
        let guard = ThreadGuard {
            connection: connection.clone(),
            thread_id: thread_id.clone(),
        };

        let (history, input) = protocol::split_conversation(&job.request);
        if !history.is_empty() {
            let items = json!({"threadId": thread_id, "items": history});
            self.call("thread/inject_items", items).await?;
        }
        let started = Instant::now();
        let params = protocol::turn_start_params(profile, &job.request, &thread_id, input);
        let started_turn = self.call("turn/start", params).await?;
        phases.insert("app_server_turn_start", ms(started));
        if let Some((key, params)) = refill {
            // After `turn/start` was answered, so the spare's start never delays this turn's.
            self.worker.spares.refill(connection, key, params);
        }
        let turn_id = started_turn
            .pointer("/turn/id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let core = AppServerTurn::new(turn_id, phases, profile.runtime.timeout)
            .with_client_tools(job.request.tools.iter().map(|tool| tool.name.clone()))
            .with_limits(&job.request.stop, job.request.max_output_tokens);
        Ok(Opened {
            thread_id,
            notifications,
            guard,
            core,
        })
    }

    /// The request's thread: the worker's spare thread for exactly these params when it has one (see
    /// [`spare`]), else a new one. Also the params to make the next spare with, when one is wanted.
    async fn start_thread(
        &self,
        params: Value,
    ) -> Result<(String, Option<(Arc<str>, Value)>), EngineError> {
        if !self.profile.runtime.spare_threads {
            let thread = self.call("thread/start", params).await?;
            return Ok((thread_id_in(&thread)?, None));
        }
        let key: Arc<str> = Arc::from(params.to_string());
        let wanted = match self.worker.spares.take(self.connection, &key) {
            Ok(ticket) => {
                let spare = self.race(ticket.thread_id()).await.map_err(|stop| {
                    turn::stopped_before_turn(stop, self.profile.runtime.timeout)
                })?;
                if let Some(thread_id) = spare {
                    return Ok((thread_id, Some((key, params))));
                }
                true
            }
            Err(wanted) => wanted,
        };
        let refill = wanted.then(|| (key, params.clone()));
        let thread = self.call("thread/start", params).await?;
        Ok((thread_id_in(&thread)?, refill))
    }

    /// A request that should be answered at once, bounded by the request's deadline and cancellation.
    async fn call(&self, method: &str, params: Value) -> Result<Value, EngineError> {
        self.race(call(
            self.worker,
            self.connection,
            method,
            params,
            self.deadline,
        ))
        .await
        .map_err(|stop| turn::stopped_before_turn(stop, self.profile.runtime.timeout))?
    }

    /// The thread's next message, or why the turn stopped waiting for it.
    async fn next_message(
        &self,
        messages: &mut ThreadEvents,
    ) -> Result<Option<ThreadMessage>, Stop> {
        self.race(async {
            tokio::select! {
                biased;
                _ = messages.overflowed.cancelled() => Err(Stop::SlowClient),
                next = messages.receiver.recv() => Ok(next),
            }
        })
        .await
        .and_then(|next| next)
    }

    /// Streams one part of the turn and enforces `tool_choice` `required` or a named function: the
    /// answer must call a tool. The requirement is in the thread's developer instructions; an answer
    /// without a call gets one more turn on the thread with a firmer request, and a second answer
    /// without a call fails the request (its text is never passed off as a compliant answer). While a
    /// call is required, text is not streamed as it comes: it is part of the answer only with a call.
    async fn answer(
        &self,
        thread_id: &str,
        core: &mut AppServerTurn,
        messages: &mut ThreadEvents,
        part: &Part,
        may_hold: bool,
    ) -> Result<Outcome, EngineError> {
        let request = &part.job.request;
        let enforced = !request.tools.is_empty()
            && matches!(
                request.tool_choice,
                ToolChoice::Required | ToolChoice::Named(_)
            );
        let mut reminded = false;
        loop {
            let mut calls = HeldCalls::default();
            let segment = self
                .stream(
                    thread_id,
                    core,
                    messages,
                    (&part.events, &part.sent),
                    &mut calls,
                    may_hold,
                    enforced,
                )
                .await?;
            match segment {
                Segment::Settled => return Ok(Outcome::Calls(calls)),
                Segment::Stopped => return Ok(Outcome::Stopped),
                Segment::Lost(error) => return Ok(Outcome::Lost(error)),
                Segment::Done(completion) if !enforced || !completion.tool_calls.is_empty() => {
                    return Ok(Outcome::Done(completion))
                }
                Segment::Done(_) if reminded => {
                    return Err(EngineError::new(
                        FailureKind::CodexFailed,
                        format!(
                            "The model answered without calling {}, which 'tool_choice' requires, even when asked a second time; retry the request or send tool_choice \"auto\".",
                            match &request.tool_choice {
                                ToolChoice::Named(name) => format!("the function `{name}`"),
                                _ => "a function".to_string(),
                            }
                        ),
                    ))
                }
                Segment::Done(_) => {
                    reminded = true;
                    let reminder = protocol::tool_choice_reminder(&request.tool_choice);
                    let input = json!([{"type": "text", "text": reminder, "text_elements": []}]);
                    let started = self
                        .call("turn/start", json!({"threadId": thread_id, "input": input}))
                        .await?;
                    core.restart(
                        started
                            .pointer("/turn/id")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    );
                }
            }
        }
    }

    /// Feeds the thread's messages to the turn core and carries out its steps until the turn is done,
    /// the response's calls are all known (`stop_at_calls`), the deadline passes, the run is
    /// cancelled, or the client stops reading. Every wait, including handing a delta to the client,
    /// races the deadline. `quiet` keeps text deltas back (they reach the client with the answer).
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        thread_id: &str,
        core: &mut AppServerTurn,
        messages: &mut ThreadEvents,
        (events, sent): (&mpsc::Sender<TurnEvent>, &std::sync::atomic::AtomicBool),
        held: &mut HeldCalls,
        stop_at_calls: bool,
        quiet: bool,
    ) -> Result<Segment, EngineError> {
        let stop = loop {
            let next = tokio::select! {
                next = self.next_message(messages) => next,
                _ = held.settled() => {
                    if stop_at_calls {
                        return Ok(Segment::Settled);
                    }
                    held.interrupt(self.connection, thread_id).await;
                    continue;
                }
            };
            let message = match next {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(Segment::Lost(core.on_closed(self.connection.failure()))),
                Err(stop) => break stop,
            };
            let step = core.on_message(message);
            if let Some(turn_id) = core.take_limit_interrupt() {
                // The answer reached a stop sequence or its token limit: save the rest of the turn.
                interrupt(self.connection, thread_id, &turn_id).await;
            }
            match step {
                None | Some(Step::Interrupt { .. }) => {}
                Some(Step::CallsComplete) => held.settle_now(),
                Some(Step::Emit(TurnEvent::TextDelta(_))) if quiet => {}
                Some(Step::Emit(event)) => match self.race(send(events, sent, event)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break Stop::Cancelled,
                    Err(stop) => break stop,
                },
                Some(Step::Answer { id, reply }) => self.connection.respond(&id, &reply),
                Some(Step::ToolCall {
                    call,
                    interrupt: first,
                    id,
                    reply,
                }) => {
                    held.hold(first, call.call_id.clone(), id, reply);
                    if core.calls_complete() {
                        held.settle_now();
                    }
                    let event = TurnEvent::ToolCall(call);
                    if let Err(stop) = self.race(send(events, sent, event)).await {
                        break stop;
                    }
                }
                Some(Step::Done(completion)) => {
                    held.answer(self.connection);
                    self.worker.served.fetch_add(1, Ordering::Relaxed);
                    return Ok(Segment::Done(completion));
                }
                Some(Step::Fail(error)) => return Err(error),
            }
        };
        for step in core.on_stop(stop) {
            match step {
                Step::Interrupt { turn_id } => {
                    interrupt(self.connection, thread_id, &turn_id).await
                }
                Step::Fail(error) => {
                    held.answer(self.connection);
                    return Err(error);
                }
                _ => {}
            }
        }
        held.answer(self.connection);
        Ok(Segment::Stopped)
    }
}

impl Drop for AppServerPool {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A safety net: how long the thread must stay quiet after a client tool call before the calls count
/// as all known even though Codex said nothing of the response's end. Threads with client tools ask for
/// raw events, and the calls are normally complete at [`Step::CallsComplete`], long before this (a
/// shorter quiet period was seen to miss a parallel call whose `item/tool/call` came after the
/// response's end under load).
const TOOL_CALL_SETTLE: Duration = Duration::from_secs(1);

/// The client tool calls of a turn's current response and their unanswered server requests. They are
/// answered with the client's outputs when the turn is continued, or with [`turn::RETURNED_TO_CLIENT`]
/// after the turn was interrupted (so Codex never passes that answer to the model).
#[derive(Default)]
struct HeldCalls {
    /// The turn to interrupt, once the thread is quiet until `at`.
    interrupt: Option<(String, tokio::time::Instant)>,
    /// Call id, server request id, and the answer to send if the turn is interrupted.
    replies: Vec<(String, Box<serde_json::value::RawValue>, Value)>,
}

impl HeldCalls {
    fn hold(
        &mut self,
        first: Option<String>,
        call_id: String,
        id: Box<serde_json::value::RawValue>,
        reply: Value,
    ) {
        let at = tokio::time::Instant::now() + TOOL_CALL_SETTLE;
        match (&mut self.interrupt, first) {
            (_, Some(turn_id)) => self.interrupt = Some((turn_id, at)),
            (Some((_, quiet_until)), None) => *quiet_until = at,
            (None, None) => {}
        }
        self.replies.push((call_id, id, reply));
    }

    /// The model's response has ended: every call is known now.
    fn settle_now(&mut self) {
        if let Some((_, at)) = &mut self.interrupt {
            *at = tokio::time::Instant::now();
        }
    }

    /// Ready when the calls are all known; never before the first.
    async fn settled(&self) {
        match &self.interrupt {
            Some((_, at)) => tokio::time::sleep_until(*at).await,
            None => std::future::pending().await,
        }
    }

    /// Interrupts the turn, then answers the held calls.
    async fn interrupt(&mut self, connection: &Connection, thread_id: &str) {
        if let Some((turn_id, _)) = self.interrupt.take() {
            interrupt(connection, thread_id, &turn_id).await;
        }
        self.answer(connection);
    }

    /// Answers the held calls with the client's outputs (in the calls' order) and lets the turn go on.
    fn resume(&mut self, connection: &Connection, outputs: &[String]) {
        self.interrupt = None;
        let mut outputs = outputs.iter();
        for (_, id, refusal) in self.replies.drain(..) {
            let reply = match outputs.next() {
                Some(text) => json!({
                    "contentItems": [{"type": "inputText", "text": text}],
                    "success": true,
                }),
                None => refusal,
            };
            connection.respond(&id, &Ok(reply));
        }
    }

    fn answer(&mut self, connection: &Connection) {
        for (_, id, reply) in self.replies.drain(..) {
            connection.respond(&id, &Ok(reply));
        }
    }
}

/// The thread id of a `thread/start` reply.
fn thread_id_in(reply: &Value) -> Result<String, EngineError> {
    spare::thread_id_of(reply)
        .map(str::to_string)
        .ok_or_else(|| {
            EngineError::new(
                FailureKind::CodexFailed,
                "thread/start returned no thread id",
            )
        })
}

/// A request's thread and first turn, as [`TurnContext::open`] started them.
struct Opened {
    thread_id: String,
    notifications: ThreadEvents,
    /// Unsubscribes the thread when the turn ends.
    guard: ThreadGuard,
    core: AppServerTurn,
}

/// Counts a turn on its worker while alive.
struct InFlightTurn(Arc<Worker>);

impl Drop for InFlightTurn {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stops routing a thread's events and unsubscribes it (so the app-server unloads it) when dropped.
struct ThreadGuard {
    connection: Arc<Connection>,
    thread_id: String,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.connection.forget_thread(&self.thread_id);
        let connection = self.connection.clone();
        let thread_id = self.thread_id.clone();
        // No runtime (process teardown): the worker is going away with its threads anyway.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _ = connection
                .request(
                    "thread/unsubscribe",
                    json!({"threadId": thread_id}),
                    Duration::from_secs(5),
                )
                .await;
        });
    }
}

/// A request that should be answered at once: retried briefly when the server is overloaded. It waits
/// at most [`RPC_TIMEOUT`], or until `deadline` when that comes first. A worker that does not answer
/// within [`RPC_TIMEOUT`] is killed (its supervisor restarts it); a request whose own deadline comes
/// first fails with a timeout.
async fn call(
    worker: &Worker,
    connection: &Connection,
    method: &str,
    params: Value,
    deadline: tokio::time::Instant,
) -> Result<Value, EngineError> {
    let mut delay = Duration::from_millis(100);
    for attempt in 0..=OVERLOAD_RETRIES {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let limit = left.min(RPC_TIMEOUT);
        match connection.request(method, params.clone(), limit).await {
            Ok(result) => return Ok(result),
            Err(RpcError::Remote { code, .. })
                if code == OVERLOADED && attempt < OVERLOAD_RETRIES =>
            {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(RpcError::Remote { code, message }) if code == OVERLOADED => {
                return Err(EngineError::new(
                    FailureKind::Overloaded,
                    format!("the app-server is overloaded ({message}); retry later"),
                ))
            }
            Err(RpcError::Remote { message, .. }) => {
                return Err(EngineError::new(
                    FailureKind::CodexFailed,
                    format!("{method} failed: {}", summarize(&message)),
                ))
            }
            Err(RpcError::Timeout { .. }) if limit < RPC_TIMEOUT => {
                return Err(EngineError::new(
                    FailureKind::Timeout,
                    format!("the app-server did not answer {method} before the profile's timeout; the request was stopped"),
                ))
            }
            Err(RpcError::Timeout { .. }) => {
                worker.request_kill();
                return Err(EngineError::new(
                    FailureKind::CodexFailed,
                    format!(
                        "the app-server worker stopped answering ({method}); it is being restarted"
                    ),
                ));
            }
            Err(RpcError::Closed) => {
                let message = match connection.failure() {
                    Some(reason) => format!("{reason}; retry the request"),
                    None => "the app-server worker exited during the request".to_string(),
                };
                return Err(EngineError::new(FailureKind::CodexFailed, message));
            }
        }
    }
    Err(EngineError::new(
        FailureKind::Overloaded,
        "the app-server is overloaded",
    ))
}

/// Hands a request's failure to its client. Not raced against the request's deadline (a timeout is
/// such a failure), only bounded: a client that reads nothing loses it.
async fn fail(events: &mpsc::Sender<TurnEvent>, error: EngineError) {
    let _ = tokio::time::timeout(RPC_TIMEOUT, events.send(TurnEvent::Failed(error))).await;
}

/// Hands an event to the client, noting that the client has seen something of this request.
async fn send(
    events: &mpsc::Sender<TurnEvent>,
    sent: &std::sync::atomic::AtomicBool,
    event: TurnEvent,
) -> Result<(), mpsc::error::SendError<TurnEvent>> {
    sent.store(true, Ordering::Relaxed);
    events.send(event).await
}

/// Interrupts a running turn (best effort, bounded).
async fn interrupt(connection: &Connection, thread_id: &str, turn_id: &str) {
    let _ = connection
        .request(
            "turn/interrupt",
            json!({"threadId": thread_id, "turnId": turn_id}),
            Duration::from_secs(2),
        )
        .await;
}
