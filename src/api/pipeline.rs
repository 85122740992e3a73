//! The engine-neutral request pipeline every API surface goes through.
//!
//! A surface adapter (`api::chat`) hands [`start`] the raw request and its own body parser; the pipeline
//! then authenticates, reads and parses the body, routes the model to a profile, authorizes the key,
//! resolves the working directory, checks that the profile's engine can carry what the request needs
//! ([`crate::engine::capabilities`]) and the exec engine's command-line limits, waits for admission,
//! checks the directory again and starts the engine run. It returns a [`Started`] run that the adapter
//! renders in its own wire format, or an [`ApiError`] that the adapter renders in its own error shape.
//!
//! Everything fallible here happens before a response starts, so these failures get real HTTP statuses.
//! The pipeline counts them in the metrics and, once routed, finishes their latency log (and so their
//! usage-ledger row); failures of the run itself are counted by the adapter's renderer
//! ([`record_error`]), which maps a run's failure with [`run_error`].
//!
//! **Fallbacks.** A routed request is tried on the profiles of its chain
//! ([`crate::account::fallback`]): the routed profile, or the first one the key may use whose account
//! is not out of quota. A failure before anything was sent to the client (the account checks, a full
//! queue, or the run's first event, e.g. an upstream 429) moves it on to the next. While a next
//! profile exists, [`start`] waits for the run's first event before returning (for at most
//! [`crate::live::state::FALLBACK_WAIT`]), and puts that event back in front of the run's events, so
//! adapters read the run as without fallbacks; a profile with nothing left to fall back to returns at
//! once, as before. The profile that served is noted for
//! the `X-Codex-Proxy-Profile` header ([`with_served_by`]).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::HeaderMap;

use crate::account::fallback;
use crate::account::keys::KeyGuard;
use crate::api::body::read_body;
use crate::api::error::ApiError;
use crate::api::request_log::Outcome;
pub use crate::api::request_log::{LatencyLog, RequestFacts};
use crate::api::{admit_key, authenticate, check_account, may_use, refusal, Caller};
use crate::config::{EngineKind, Profile};
use crate::engine::exec::{developer_instructions_arg, MAX_ARG_BYTES};
use crate::engine::{ms, EngineError, HoldPolicy, Job, RunHandle, TurnEvent, TurnRequest};
use crate::live::snapshot::{Route, Snapshot};
use crate::live::state::AppState;
use crate::metrics::{InFlight, ProfileStats};
use crate::turn::{HoldEvent, HoldLog, Needs};

/// What the handler received, before anything is checked.
pub struct Incoming<'a> {
    pub state: &'a AppState,
    /// The request's one snapshot (loaded by `api::guard`), kept until the response ends.
    pub snapshot: Arc<Snapshot>,
    pub request_id: String,
    pub received_at: Instant,
    pub headers: &'a HeaderMap,
    pub body: Body,
}

/// What a surface's parser takes out of its body for the pipeline. `request` is the surface's own
/// validated form of the conversation; it becomes the neutral [`TurnRequest`] only once the request has
/// a profile (the `prompt_build` phase), so a body refused before then never builds the neutral items.
pub struct Parsed<R> {
    /// The model name the client asked for (routed to a profile).
    pub model: String,
    pub request: R,
    /// The client's working directory, not yet checked against the allowed roots.
    pub cwd: Option<String>,
    /// Whether the client asked for a streamed answer (for the latency log).
    pub stream: bool,
}

/// A run that has started: what an adapter needs to render it.
pub struct Started {
    pub run: RunHandle,
    /// The model name as the client sent it.
    pub model: String,
    pub engine: EngineKind,
    pub stats: Arc<ProfileStats>,
    /// Counts the request as in flight until dropped.
    pub in_flight: InFlight,
    pub log: LatencyLog,
    pub engine_started: Instant,
    /// The request's one snapshot, kept until the response ends.
    pub snapshot: Arc<Snapshot>,
}

/// The name of an engine's run phase in the latency log.
pub fn engine_phase_name(engine: EngineKind) -> &'static str {
    match engine {
        EngineKind::Exec => "codex_exec",
        EngineKind::AppServer => "app_server_exec",
    }
}

/// Counts a failed request: its profile's stats when it reached one.
pub fn record_error(state: &AppState, stats: Option<&ProfileStats>, error: &ApiError) {
    state
        .metrics()
        .request_error(stats, error.status().as_u16());
}

/// Runs the pipeline (see the module documentation) up to a started run. `surface` names the latency
/// log events; `parse` turns the body into the neutral request plus whatever the adapter keeps for
/// rendering. A refusal is counted in the metrics before it is returned.
pub async fn start<R: Into<TurnRequest>, T>(
    incoming: Incoming<'_>,
    surface: &'static str,
    parse: impl FnOnce(&[u8]) -> Result<(Parsed<R>, T), ApiError>,
) -> Result<(Started, T), ApiError> {
    let state = incoming.state;
    let mut stats = None;
    let result = admit_and_start(incoming, surface, parse, &mut stats).await;
    if let Err(error) = &result {
        if stats.is_none() {
            state.metrics().request_started(None);
        }
        record_error(state, stats.as_deref(), error);
    }
    result
}

async fn admit_and_start<R: Into<TurnRequest>, T>(
    incoming: Incoming<'_>,
    surface: &'static str,
    parse: impl FnOnce(&[u8]) -> Result<(Parsed<R>, T), ApiError>,
    stats_slot: &mut Option<Arc<ProfileStats>>,
) -> Result<(Started, T), ApiError> {
    let Incoming {
        state,
        snapshot,
        request_id,
        received_at,
        headers,
        body,
    } = incoming;
    if state.shutdown().is_cancelled() {
        return Err(ApiError::ShuttingDown(
            "The proxy is shutting down; retry in a moment.".to_string(),
        ));
    }
    let caller = authenticate(&snapshot, headers)?;
    let (parsed, kept) = receive(state, &snapshot, headers, body, parse).await?;
    let route = route(&snapshot, &parsed.model, &caller)?;
    let routed = route.profile.clone();
    if !may_use(&snapshot, &routed, &caller) {
        return Err(refusal(&parsed.model, &caller));
    }
    let Parsed {
        model,
        request,
        cwd,
        stream,
    } = parsed;
    let prompt_started = Instant::now();
    let request: TurnRequest = request.into();
    let prompt_build = ms(prompt_started);
    let facts = RequestFacts {
        request_id,
        model,
        stream,
        key_name: caller.key_name(),
        received_at,
    };
    let request = Request {
        facts,
        request,
        cwd,
        prompt_build,
    };
    let started = serve(
        state, snapshot, caller, &routed, request, surface, stats_slot,
    )
    .await?;
    Ok((started, kept))
}

/// What a routed request carries from one profile of its fallback chain to the next.
struct Request {
    facts: RequestFacts,
    request: TurnRequest,
    /// The client's working directory, not yet checked against the allowed roots.
    cwd: Option<String>,
    /// How long building the neutral request took (the `prompt_build` phase).
    prompt_build: f64,
}

/// The fallback loop: tries the routed profile, or the first profile of its chain the caller may use
/// whose account is not out of quota, and moves on along the chain while a failure happens before
/// anything was sent ([`fallback::falls_back`]): the account checks, admission, and the run's first
/// event ([`first_event`]). The per-key limits are applied once, whichever profile serves. The last
/// failure is the answer when the chain ends; it is written to the latency log and the usage ledger
/// here (a started run's outcome is written by the adapter's renderer).
async fn serve(
    state: &AppState,
    snapshot: Arc<Snapshot>,
    caller: Caller,
    routed: &Arc<Profile>,
    mut request: Request,
    surface: &'static str,
    stats_slot: &mut Option<Arc<ProfileStats>>,
) -> Result<Started, ApiError> {
    let chain = fallback::chain(&snapshot.config, &routed.name);
    let needs = request.request.needs();
    // A profile the request may move to: one the key may use whose engine can carry the request
    // (the routed profile answers a request its engine cannot carry with its own 400).
    let usable = |name: &str| {
        snapshot.config.profile(name).is_some_and(|profile| {
            may_use(&snapshot, profile, &caller)
                && (profile.name == routed.name
                    || crate::engine::capabilities(profile.runtime.engine)
                        .missing(needs)
                        .is_none())
        })
    };
    let next = |tried: &[String]| {
        let now = crate::account::unix_now();
        fallback::next_profile(
            &chain,
            tried,
            usable,
            |name| snapshot.exhausted_until(name, now),
            now,
        )
        .map(str::to_string)
    };
    let recorder = state.metrics().recorder();
    // Profiles tried (or skipped for quota) before the current one, in order.
    let mut hops: Vec<String> = Vec::new();
    // The routed profile answers itself (a 429 `insufficient_quota` with its reset) when no profile
    // of its chain can serve.
    let mut current = next(&[]).unwrap_or_else(|| routed.name.clone());
    if current != routed.name {
        hops.push(routed.name.clone());
        note_hop(&recorder, &routed.name, &current, None);
    }
    // The caller's per-key concurrency slot, taken once and shared by each attempt's in-flight count.
    let mut key_slot: Option<Arc<Option<KeyGuard>>> = None;
    loop {
        let profile = snapshot
            .config
            .profile(&current)
            .cloned()
            .expect("the chain holds profiles of this snapshot");
        set_served_by(&profile.name);
        let stats = state.metrics().profile(&profile.name);
        if stats_slot.is_none() {
            state.metrics().request_started(Some(&stats));
        } else {
            state.metrics().hop_started(&stats);
        }
        *stats_slot = Some(stats.clone());
        let mut log = LatencyLog::new(state, surface, &profile, request.facts.clone());
        log.fallback_from = hops.clone();
        log.phases.insert("prompt_build", request.prompt_build);
        let mut tried = hops.clone();
        tried.push(profile.name.clone());
        let moves_on = next(&tried).is_some();
        let attempt = Attempt {
            snapshot: &snapshot,
            caller: &caller,
            profile: &profile,
            stats,
            log,
        };
        let launched = attempt.launch(&mut key_slot, &mut request, moves_on).await;
        let (error, log, stats) = match launched {
            Ok(started) if !moves_on => return Ok(started),
            Ok(started) => match first_event(state, &snapshot, started).await {
                FirstEvent::Ready(started) => return Ok(started),
                FirstEvent::Failed {
                    error,
                    event,
                    started,
                } => {
                    let status = error.status().as_u16();
                    let code = error.body()["error"]["code"].as_str().map(str::to_string);
                    let follow = next(&tried)
                        .filter(|_| fallback::falls_back(status, code.as_deref(), false));
                    let Some(next_profile) = follow else {
                        // The adapter renders the failure from the event, as without fallbacks.
                        return Ok(replay_first(started, TurnEvent::Failed(event)));
                    };
                    state.metrics().hop_failed(&started.stats, status);
                    note_hop(&recorder, &profile.name, &next_profile, Some(&error));
                    // Dropping the run cancels it; the admission permit goes with its task.
                    drop(started);
                    hops = tried;
                    current = next_profile;
                    continue;
                }
            },
            Err(failure) => failure,
        };
        let status = error.status().as_u16();
        let code = error.body()["error"]["code"].as_str().map(str::to_string);
        // The key's own limits hold on every profile.
        let key_refusal = key_slot.is_none() && is_key_refusal(&error);
        let follow = next(&tried)
            .filter(|_| !key_refusal && fallback::falls_back(status, code.as_deref(), false));
        let Some(next_profile) = follow else {
            log.finish(Outcome::failed(&error, false));
            return Err(error);
        };
        state.metrics().hop_failed(&stats, status);
        note_hop(&recorder, &profile.name, &next_profile, Some(&error));
        hops = tried;
        current = next_profile;
    }
}

/// Whether `error` is the refusal of the caller's own key limits (which no other profile lifts).
fn is_key_refusal(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::RateLimited {
            code: "rate_limit_exceeded",
            ..
        }
    )
}

/// Writes one fallback hop: the `codex_proxy_fallbacks_total{from,to}` series and a log line with
/// the failure that caused it (`None`: `from` was skipped, its account being out of quota).
fn note_hop(recorder: &crate::metrics::Recorder, from: &str, to: &str, error: Option<&ApiError>) {
    recorder.fallback(from, to);
    let reason = match error {
        Some(error) => format!("{} {}", error.status().as_u16(), error),
        None => "out of quota until its reset".to_string(),
    };
    tracing::info!(
        target: "codex_api_proxy.fallback",
        from,
        to,
        reason = %reason,
        "profile fallback"
    );
}

/// One try of one profile of the chain.
struct Attempt<'a> {
    snapshot: &'a Arc<Snapshot>,
    caller: &'a Caller,
    profile: &'a Arc<Profile>,
    stats: Arc<ProfileStats>,
    log: LatencyLog,
}

/// A failed attempt: its error, with the attempt's log and stats for the caller to finish or move on.
type AttemptFailure = (ApiError, LatencyLog, Arc<ProfileStats>);

impl Attempt<'_> {
    /// Checks the account and the key (the key once per request: `key_slot`), the directory and the
    /// engine, waits for admission, checks the directory again and starts the run. `keep_request`:
    /// another profile may follow, so the request is cloned rather than moved into the job.
    async fn launch(
        self,
        key_slot: &mut Option<Arc<Option<KeyGuard>>>,
        request: &mut Request,
        keep_request: bool,
    ) -> Result<Started, AttemptFailure> {
        let Attempt {
            snapshot,
            caller,
            profile,
            stats,
            mut log,
        } = self;
        let key_guard = match checks(snapshot, caller, profile, key_slot, request, &mut log) {
            Ok(key_guard) => key_guard,
            Err(error) => return Err((error, log, stats)),
        };
        let in_flight = InFlight::new(stats.clone()).holding(key_guard);
        let pool = snapshot
            .pool_of(&profile.name)
            .expect("every profile has a pool")
            .clone();
        let started = Instant::now();
        let permit = match pool.admit().await {
            Ok(permit) => permit,
            Err(error) => return Err((error.into(), log, stats)),
        };
        log.phases.insert("queue_wait", ms(started));
        // The directory may have been replaced (by a symlink out of the roots, say) while the request
        // waited: check it again now and give the engine this canonical path, just before the spawn.
        let cwd = match resolve_cwd(profile, request.cwd.as_deref()) {
            Ok(cwd) => cwd,
            Err(error) => return Err((error, log, stats)),
        };
        let turn = if keep_request {
            request.request.clone()
        } else {
            std::mem::take(&mut request.request)
        };
        let job = Job {
            request_id: log.request_id.clone(),
            request: turn,
            cwd,
            model: if profile.runtime.pass_model {
                Some(request.facts.model.clone())
            } else {
                profile.runtime.model.clone()
            },
            received_at: log.received_at,
            hold: HoldPolicy {
                timeout: profile.hold.timeout,
                max_held: profile.hold.max_held,
                log: hold_log(&stats),
                response_ttl: profile.hold.response_ttl,
            },
        };
        let engine_started = Instant::now();
        let run = pool.start(job, permit);
        Ok(Started {
            run,
            model: request.facts.model.clone(),
            engine: profile.runtime.engine,
            stats,
            in_flight,
            log,
            engine_started,
            snapshot: snapshot.clone(),
        })
    }
}

/// The checks of one attempt before its queue: the account (logged in, not out of quota), the
/// caller's key limits (once per request), a passed model name, the directory and the engine.
/// Returns the key's concurrency slot for the attempt's in-flight count to hold.
fn checks(
    snapshot: &Snapshot,
    caller: &Caller,
    profile: &Profile,
    key_slot: &mut Option<Arc<Option<KeyGuard>>>,
    request: &Request,
    log: &mut LatencyLog,
) -> Result<Arc<Option<KeyGuard>>, ApiError> {
    check_account(snapshot, profile)?;
    let key_guard = match key_slot {
        Some(slot) => slot.clone(),
        None => {
            admit_key(snapshot, caller)?;
            key_slot.insert(Arc::new(caller.take_key_guard())).clone()
        }
    };
    if profile.runtime.pass_model {
        check_passed_model(&request.facts.model)?;
    }
    let started = Instant::now();
    // An early answer for a directory that is already wrong; the path used is the one checked again
    // after the queue wait.
    resolve_cwd(profile, request.cwd.as_deref())?;
    log.phases.insert("cwd_resolve", ms(started));
    check_engine(snapshot, profile, caller, &request.request)?;
    Ok(key_guard)
}

/// How a run's first event turned out.
enum FirstEvent {
    /// Anything but a failure: the run, with that event put back first.
    Ready(Started),
    /// The run failed before producing anything: its error as the API error (`event` as the
    /// engine reported it, to replay when the request does not move on).
    Failed {
        error: ApiError,
        event: EngineError,
        started: Started,
    },
}

/// Waits for the first event of a run that could still move to another profile, before the
/// response starts (no byte has been sent). A failure there is a failure before anything was sent;
/// anything else is put back in front of the run's events ([`replay_first`]), so the adapter reads
/// the run as if nothing had been taken. The server's grace period ending stops the wait, and so
/// does [`AppState::fallback_wait`] passing: the response then starts on this profile, and a later
/// failure is this profile's answer.
async fn first_event(state: &AppState, snapshot: &Snapshot, mut started: Started) -> FirstEvent {
    let abort = state.abort().clone();
    let event = tokio::select! {
        event = started.run.events.recv() => event,
        _ = abort.cancelled() => return FirstEvent::Ready(started),
        _ = tokio::time::sleep(state.fallback_wait()) => return FirstEvent::Ready(started),
    };
    match event {
        Some(TurnEvent::Failed(failure)) => FirstEvent::Failed {
            error: run_error(snapshot, &started.log.profile, failure.clone()),
            event: failure,
            started,
        },
        Some(event) => FirstEvent::Ready(replay_first(started, event)),
        // The run ended without an event: the adapter reads the same end.
        None => FirstEvent::Ready(started),
    }
}

/// How many events the channel that replays a run's first event holds ahead of the adapter.
const REPLAY_BUFFER: usize = 64;

/// `started` with `first` put back in front of its run's events ([`replay`]).
fn replay_first(mut started: Started, first: TurnEvent) -> Started {
    let (_, closed) = tokio::sync::mpsc::channel(1);
    let upstream = std::mem::replace(&mut started.run.events, closed);
    started.run.events = replay(first, upstream);
    started
}

/// The events `first`, then those of `upstream`: a forwarding task moves `upstream`'s events behind
/// `first`. It ends when `upstream` ends or the returned receiver is dropped (the adapter dropping
/// the run, which also cancels it, as before).
fn replay(
    first: TurnEvent,
    mut upstream: tokio::sync::mpsc::Receiver<TurnEvent>,
) -> tokio::sync::mpsc::Receiver<TurnEvent> {
    let (sender, events) = tokio::sync::mpsc::channel(REPLAY_BUFFER);
    // The channel is new and has room: this cannot fail.
    let _ = sender.try_send(first);
    tokio::spawn(async move {
        while let Some(event) = upstream.recv().await {
            if sender.send(event).await.is_err() {
                break;
            }
        }
    });
    events
}

/// The API error of a failed run of `profile`. An upstream quota refusal (`insufficient_quota`)
/// marks the profile's account used up until its window's reset, so later requests skip it
/// ([`Snapshot::exhausted_until`]), and carries that reset as `Retry-After`. Adapters map a run's
/// `TurnEvent::Failed` through this.
pub fn run_error(snapshot: &Snapshot, profile: &str, error: EngineError) -> ApiError {
    let mut error = ApiError::from(error);
    if let ApiError::RateLimited {
        code: "insufficient_quota",
        retry_after_seconds,
        ..
    } = &mut error
    {
        if let Some(account) = snapshot.account_of(profile) {
            *retry_after_seconds = crate::account::quota::record_quota_refusal(
                &account.codex_home,
                crate::account::unix_now(),
            );
        }
    }
    error
}

tokio::task_local! {
    /// The profile that serves the request being handled (the last one tried), for the
    /// `X-Codex-Proxy-Profile` response header ([`with_served_by`]).
    static SERVED_BY: std::cell::RefCell<Option<String>>;
}

/// Runs a request's handler and returns, with its response, the profile that served it: the
/// pipeline notes it in a task-local slot, so every API surface gets the header without passing it.
pub async fn with_served_by<F: std::future::Future>(handler: F) -> (F::Output, Option<String>) {
    SERVED_BY
        .scope(std::cell::RefCell::new(None), async move {
            let output = handler.await;
            let profile = SERVED_BY.with(|slot| slot.borrow_mut().take());
            (output, profile)
        })
        .await
}

fn set_served_by(profile: &str) {
    let _ = SERVED_BY.try_with(|slot| *slot.borrow_mut() = Some(profile.to_string()));
}

/// The profile's tool-turn counters, as the engine reports to them.
fn hold_log(stats: &Arc<ProfileStats>) -> HoldLog {
    let stats = stats.clone();
    HoldLog::new(move |event| {
        let counter = match event {
            HoldEvent::Held => &stats.tool_turns_held,
            HoldEvent::Continued => &stats.tool_turns_continued,
            HoldEvent::Expired => &stats.tool_turns_expired,
            HoldEvent::Replayed => &stats.tool_turns_replayed,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
}

/// Reads the body under the in-flight budget and parses it; the budget is released when this returns.
async fn receive<R, T>(
    state: &AppState,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    body: Body,
    parse: impl FnOnce(&[u8]) -> Result<(Parsed<R>, T), ApiError>,
) -> Result<(Parsed<R>, T), ApiError> {
    let server = &snapshot.config.server;
    let bytes = read_body(
        body,
        server.max_request_bytes,
        server.inflight_body_limit(),
        headers,
        state.client_timeout(),
    )
    .await?;
    parse(&bytes)
}

/// The profile `model` routes to, or a 404 listing the models this caller may use.
fn route<'a>(snapshot: &'a Snapshot, model: &str, caller: &Caller) -> Result<Route<'a>, ApiError> {
    if let Some(route) = snapshot.route(model) {
        return Ok(route);
    }
    let available: Vec<String> = snapshot
        .config
        .profiles
        .iter()
        .filter(|profile| may_use(snapshot, profile, caller))
        .flat_map(|p| std::iter::once(p.name.clone()).chain(p.routing.aliases.iter().cloned()))
        .collect();
    Err(ApiError::ModelNotFound(format!(
        "The model `{model}` does not exist on this proxy. Available models: {}.",
        if available.is_empty() {
            "none".to_string()
        } else {
            available.join(", ")
        }
    )))
}

/// The longest model name a `pass_model` profile gives Codex.
const MAX_PASSED_MODEL_BYTES: usize = 256;

/// A model name that goes to Codex (`pass_model`): short, without control characters (a NUL byte cannot
/// be in a command-line argument).
fn check_passed_model(model: &str) -> Result<(), ApiError> {
    if model.len() > MAX_PASSED_MODEL_BYTES || model.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            format!(
                "This profile passes the model name to Codex, so it must be at most {MAX_PASSED_MODEL_BYTES} bytes without control characters."
            ),
            Some("model"),
        ));
    }
    Ok(())
}

/// The working directory for a request, as a 400 (client's `metadata.cwd`) or 503 (profile default).
fn resolve_cwd(profile: &Profile, requested: Option<&str>) -> Result<std::path::PathBuf, ApiError> {
    crate::cwd::resolve(profile, requested).map_err(|err| {
        if requested.is_some() {
            ApiError::invalid(err.0, Some("metadata.cwd"))
        } else {
            // The profile's own default_cwd is unusable: a server-side problem, not the client's.
            ApiError::Unavailable {
                message: format!("The profile's working directory is unavailable: {}", err.0),
                code: "workspace_unavailable",
            }
        }
    })
}

/// Whether the profile's engine can run `request`: what it carries, then the exec engine's limits.
fn check_engine(
    snapshot: &Snapshot,
    profile: &Profile,
    caller: &Caller,
    request: &TurnRequest,
) -> Result<(), ApiError> {
    check_capabilities(snapshot, profile, caller, request)?;
    if profile.runtime.engine == EngineKind::Exec {
        check_exec_instructions(&profile.name, request)?;
    }
    Ok(())
}

/// A 400 when the request needs something the profile's engine lacks, naming it and the profiles this
/// caller may use whose engine has it.
fn check_capabilities(
    snapshot: &Snapshot,
    profile: &Profile,
    caller: &Caller,
    request: &TurnRequest,
) -> Result<(), ApiError> {
    let usable: Vec<&Profile> = snapshot
        .config
        .profiles
        .iter()
        .filter(|other| may_use(snapshot, other, caller))
        .map(|other| &**other)
        .collect();
    match unsupported(profile, request.needs(), &usable) {
        Some(ApiError::InvalidRequest {
            message,
            param: None,
            code,
        }) => Err(ApiError::InvalidRequest {
            param: Some(refused_param(profile, request).to_string()),
            message,
            code,
        }),
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The parameter a capability refusal names: what the engine of `profile` lacks, as the request
/// asked for it.
fn refused_param(profile: &Profile, request: &TurnRequest) -> &'static str {
    match crate::engine::capabilities(profile.runtime.engine).missing(request.needs()) {
        Some("client tools") if !request.tools.is_empty() => "tools",
        Some("structured output") => "response_format",
        Some(_) if request.thread.continues.is_some() => "previous_response_id",
        _ => "messages",
    }
}

/// The refusal of a request whose `needs` the engine of `profile` lacks; `usable` are the profiles the
/// caller may use, of which those whose engine has what is missing are named.
fn unsupported(profile: &Profile, needs: Needs, usable: &[&Profile]) -> Option<ApiError> {
    let missing = crate::engine::capabilities(profile.runtime.engine).missing(needs)?;
    let able: Vec<&str> = usable
        .iter()
        .filter(|other| {
            crate::engine::capabilities(other.runtime.engine)
                .missing(needs)
                .is_none()
        })
        .map(|other| other.name.as_str())
        .collect();
    let instead = if able.is_empty() {
        "No model this key may use supports it; send the request without it.".to_string()
    } else {
        format!("Use one of these models instead: {}.", able.join(", "))
    };
    Some(ApiError::InvalidRequest {
        message: format!(
            "This request needs {missing}, which model `{}` cannot serve: its {} engine does not support {missing}. {instead}",
            profile.name,
            profile.runtime.engine.as_str(),
        ),
        param: None,
        code: Some("unsupported_by_engine"),
    })
}

/// The exec engine gives the instructions to Codex as one command-line argument, which Linux limits to
/// [`MAX_ARG_BYTES`]; longer text is a 400 rather than a failed spawn.
fn check_exec_instructions(profile: &str, request: &TurnRequest) -> Result<(), ApiError> {
    let Some(instructions) = &request.instructions else {
        return Ok(());
    };
    let size = developer_instructions_arg(instructions).len();
    if size <= MAX_ARG_BYTES {
        return Ok(());
    }
    Err(ApiError::InvalidRequest {
        message: format!(
            "The system and developer messages are too long for profile `{profile}`: its exec engine passes them to Codex as one command-line argument of at most {MAX_ARG_BYTES} bytes, and these need {size}. Shorten them, or use a profile with engine = \"app-server\"."
        ),
        param: Some("messages".to_string()),
        code: Some("instructions_too_long"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ServerOverrides};
    use crate::turn::{Content, Item, Role, Tool};
    use std::path::Path;

    fn profiles() -> Vec<Arc<Profile>> {
        parse(
            "[profiles.fast]\n[profiles.stream]\nengine = \"app-server\"\n",
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap()
        .profiles
    }

    #[tokio::test]
    async fn a_replayed_first_event_comes_before_the_rest_of_the_run() {
        let (sender, upstream) = tokio::sync::mpsc::channel(4);
        sender
            .send(TurnEvent::TextDelta("second".into()))
            .await
            .unwrap();
        let mut events = replay(TurnEvent::TextDelta("first".into()), upstream);
        sender
            .send(TurnEvent::TextDelta("third".into()))
            .await
            .unwrap();
        drop(sender);
        for expected in ["first", "second", "third"] {
            match events.recv().await {
                Some(TurnEvent::TextDelta(text)) => assert_eq!(text, expected),
                other => panic!("{other:?}"),
            }
        }
        assert!(events.recv().await.is_none(), "the run's end is passed on");

        // The adapter dropping the run ends the forwarding: the run's sender sees it closed.
        let (sender, upstream) = tokio::sync::mpsc::channel(1);
        let events = replay(TurnEvent::TextDelta("first".into()), upstream);
        drop(events);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while sender
                .send(TurnEvent::TextDelta("more".into()))
                .await
                .is_ok()
            {}
        })
        .await
        .expect("the forwarder let go of the run's events");
    }

    #[test]
    fn plain_text_passes_every_engine() {
        let profiles = profiles();
        let usable: Vec<&Profile> = profiles.iter().map(|p| &**p).collect();
        let request = TurnRequest::from_texts(None, [(Role::User, "hi".to_string())]);
        for profile in &usable {
            assert!(unsupported(profile, request.needs(), &usable).is_none());
        }
    }

    #[test]
    fn a_need_the_engine_lacks_is_a_400_naming_it() {
        let profiles = profiles();
        let usable: Vec<&Profile> = profiles.iter().map(|p| &**p).collect();
        let mut request = TurnRequest::from_texts(None, [(Role::User, "hi".to_string())]);
        request.tools.push(Tool {
            name: "lookup".into(),
            description: None,
            parameters: serde_json::json!({"type": "object"}),
            strict: false,
        });
        request.items.push(Item::Message {
            role: Role::User,
            content: vec![Content::Image {
                url: "data:image/png;base64,AA==".into(),
                detail: None,
            }],
        });
        let error = unsupported(usable[0], request.needs(), &usable).expect("refused");
        assert_eq!(error.status().as_u16(), 400);
        let message = error.to_string();
        assert!(message.contains("client tools"), "{message}");
        assert!(message.contains("model `fast`"), "{message}");
        assert!(message.contains("exec engine"), "{message}");
        assert!(message.contains("instead: stream."), "{message}");
        assert_eq!(
            error.body()["error"]["code"],
            serde_json::json!("unsupported_by_engine")
        );
    }
}
