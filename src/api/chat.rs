//! `POST /v1/chat/completions`, plain and streaming.
//!
//! Everything fallible happens before a response starts (auth, body, validation, routing, cwd, queue
//! admission, the cwd check again after the queue), so those failures get real HTTP statuses. Then the profile's pool starts the engine run;
//! the [`RunHandle`] lives in the handler future (plain) or inside the SSE stream (streaming), so a client
//! that disconnects drops it and the Codex work is cancelled at once. After SSE headers, errors go in-band.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::api::body::read_body;
use crate::api::error::ApiError;
use crate::api::guard::Loaded;
use crate::api::types::{chunk_body, completion_body, usage_chunk_body, ChatRequest};
use crate::api::{authenticate, authorize_profile, RequestId};
use crate::codex::prompt::Conversation;
use crate::config::EngineKind;
use crate::config::Profile;
use crate::engine::exec::{developer_instructions_arg, MAX_ARG_BYTES};
use crate::engine::{ms, Completion, Job, Phases, RunHandle, TurnEvent, Usage};
use crate::live::state::AppState;
use crate::metrics::{InFlight, ProfileStats};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the latency log line needs, gathered along the way.
struct LatencyLog {
    request_id: String,
    profile: String,
    engine: &'static str,
    model: String,
    stream: bool,
    received_at: Instant,
    phases: Phases,
}

impl LatencyLog {
    fn write(&self, status: u16, extra: Value) {
        let mut phases = self.phases.clone();
        phases.insert("total", ms(self.received_at));
        let mut line = json!({
            "event": "chat_completion_latency",
            "request_id": self.request_id,
            "profile": self.profile,
            "engine": self.engine,
            "model": self.model,
            "stream": self.stream,
            "status": status,
            "phases_ms": phases,
        });
        if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
            line.extend(extra);
        }
        tracing::info!(target: "codex_api_proxy.latency", "{line}");
    }
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received_at = Instant::now();
    let mut stats: Option<Arc<ProfileStats>> = None;
    let request = Incoming {
        request_id,
        received_at,
        headers: &headers,
        body,
    };
    match handle(&state, snapshot, request, &mut stats).await {
        Ok(response) => response,
        Err(error) => {
            if stats.is_none() {
                state.metrics().request_started(None);
            }
            state
                .metrics()
                .request_error(stats.as_deref(), error.status().as_u16());
            error.into_response()
        }
    }
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

/// The exec engine gives the system and developer text to Codex as one command-line argument, which
/// Linux limits to [`MAX_ARG_BYTES`]; longer text is a 400 rather than a failed spawn.
fn check_exec_instructions(profile: &str, conversation: &Conversation) -> Result<(), ApiError> {
    let Some(instructions) = &conversation.developer_instructions else {
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

/// What the handler received, before anything is checked.
struct Incoming<'a> {
    request_id: String,
    received_at: Instant,
    headers: &'a HeaderMap,
    body: Body,
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

/// Reads the body under the in-flight budget and parses it; the budget is released when this returns.
async fn receive(
    state: &AppState,
    snapshot: &crate::live::snapshot::Snapshot,
    headers: &HeaderMap,
    body: Body,
) -> Result<ChatRequest, ApiError> {
    let server = &snapshot.config.server;
    let bytes = read_body(
        body,
        server.max_request_bytes,
        server.inflight_body_limit(),
        headers,
        state.client_timeout(),
    )
    .await?;
    ChatRequest::parse(&bytes)
}

async fn handle(
    state: &AppState,
    snapshot: Arc<crate::live::snapshot::Snapshot>,
    incoming: Incoming<'_>,
    stats_slot: &mut Option<Arc<ProfileStats>>,
) -> Result<Response, ApiError> {
    let Incoming {
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
    let mut request = receive(state, &snapshot, headers, body).await?;

    let Some(route) = snapshot.route(&request.model) else {
        let available: Vec<String> = snapshot
            .config
            .profiles
            .iter()
            .filter(|profile| crate::api::may_use(&snapshot, profile, &caller))
            .flat_map(|p| std::iter::once(p.name.clone()).chain(p.routing.aliases.iter().cloned()))
            .collect();
        return Err(ApiError::ModelNotFound(format!(
            "The model `{}` does not exist on this proxy. Available models: {}.",
            request.model,
            if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            }
        )));
    };
    let profile = route.profile.clone();
    let pool = route.pool.clone();
    authorize_profile(&snapshot, &profile, &request.model, &caller)?;
    if profile.runtime.pass_model {
        check_passed_model(&request.model)?;
    }

    let stats = state.metrics().profile(&profile.name);
    state.metrics().request_started(Some(&stats));
    *stats_slot = Some(stats.clone());

    let mut log = LatencyLog {
        request_id: request_id.clone(),
        profile: profile.name.clone(),
        engine: profile.runtime.engine.as_str(),
        model: request.model.clone(),
        stream: request.stream,
        received_at,
        phases: Phases::new(),
    };

    let started = Instant::now();
    // An early answer for a directory that is already wrong; the path used is the one checked again
    // after the queue wait, below.
    resolve_cwd(&profile, request.cwd.as_deref())?;
    log.phases.insert("cwd_resolve", ms(started));

    let started = Instant::now();
    let conversation = request.take_conversation();
    if profile.runtime.engine == EngineKind::Exec {
        check_exec_instructions(&profile.name, &conversation)?;
    }
    log.phases.insert("prompt_build", ms(started));

    let in_flight = InFlight::new(stats.clone());
    let started = Instant::now();
    let permit = pool.admit().await?;
    log.phases.insert("queue_wait", ms(started));
    // The directory may have been replaced (by a symlink out of the roots, say) while the request
    // waited: check it again now and give the engine this canonical path, just before the spawn.
    let cwd = resolve_cwd(&profile, request.cwd.as_deref())?;

    let job = Job {
        request_id: request_id.clone(),
        request: conversation.into(),
        cwd,
        model: if profile.runtime.pass_model {
            Some(request.model.clone())
        } else {
            profile.runtime.model.clone()
        },
        received_at,
    };
    let engine_started = Instant::now();
    let run = pool.start(job, permit);
    let id = format!("chatcmpl-{request_id}");
    let created = unix_now();

    if request.stream {
        let stream = SseState {
            run,
            id,
            created,
            model: request.model.clone(),
            include_usage: request.include_usage,
            pending: VecDeque::new(),
            sent_content: false,
            finished: false,
            first_yielded: false,
            first_content_logged: false,
            state: state.clone(),
            stats,
            log,
            engine_started,
            _in_flight: in_flight,
            _snapshot: snapshot.clone(),
        }
        .into_stream();
        let mut response = Sse::new(stream)
            .keep_alive(
                KeepAlive::new()
                    .interval(state.keep_alive())
                    .text("keep-alive"),
            )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        return Ok(response);
    }

    let mut run = run;
    let abort = state.abort().clone();
    let outcome = loop {
        let event = tokio::select! {
            event = run.events.recv() => event,
            _ = abort.cancelled() => break Err(shutting_down()),
        };
        match event {
            Some(TurnEvent::Done(Completion {
                text,
                usage,
                phases,
                ..
            })) => break Ok((text, usage, phases)),
            Some(TurnEvent::Failed(error)) => break Err(ApiError::from(error)),
            Some(_) => continue,
            None => {
                break Err(ApiError::CodexFailed {
                    message: "Codex stopped without reporting a result".to_string(),
                    code: "codex_failed",
                })
            }
        }
    };
    drop(in_flight);
    let engine_phase = engine_phase_name(profile.runtime.engine);
    log.phases.insert(engine_phase, ms(engine_started));
    match outcome {
        Ok((text, usage, phases)) => {
            let started = Instant::now();
            let body = completion_body(&id, created, &request.model, &text, &usage);
            log.phases.extend(phases);
            log.phases.insert("response_build", ms(started));
            state.metrics().request_ok(&stats, &usage);
            log.write(200, json!({}));
            Ok(Json(body).into_response())
        }
        Err(error) => {
            log.write(error.status().as_u16(), json!({"error": error.to_string()}));
            Err(error)
        }
    }
}

fn shutting_down() -> ApiError {
    ApiError::ShuttingDown(
        "The proxy is shutting down and the grace period for this request is over; retry."
            .to_string(),
    )
}

fn engine_phase_name(engine: crate::config::EngineKind) -> &'static str {
    match engine {
        crate::config::EngineKind::Exec => "codex_exec",
        crate::config::EngineKind::AppServer => "app_server_exec",
    }
}

/// The SSE stream of one streaming request. It owns the engine run and the in-flight guard, so dropping
/// the stream (client gone) cancels the Codex work.
struct SseState {
    run: RunHandle,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Events ready to send, in order.
    pending: VecDeque<Event>,
    sent_content: bool,
    finished: bool,
    first_yielded: bool,
    first_content_logged: bool,
    state: AppState,
    stats: Arc<ProfileStats>,
    log: LatencyLog,
    engine_started: Instant,
    _in_flight: InFlight,
    /// The request's one snapshot, kept until the stream ends (like the plain path keeps it).
    _snapshot: Arc<crate::live::snapshot::Snapshot>,
}

impl SseState {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Event {
        Event::default().data(
            chunk_body(
                &self.id,
                self.created,
                &self.model,
                delta,
                finish_reason,
                self.include_usage,
            )
            .to_string(),
        )
    }

    fn content(&mut self, text: String) {
        if !self.first_content_logged {
            self.first_content_logged = true;
            self.log
                .phases
                .insert("time_to_first_content_sse", ms(self.log.received_at));
        }
        self.sent_content = true;
        let event = self.chunk(json!({"content": text}), None);
        self.pending.push_back(event);
    }

    fn done(&mut self, text: String, usage: Usage, phases: Phases) {
        if !self.sent_content && !text.is_empty() {
            self.content(text);
        }
        let finish = self.chunk(json!({}), Some("stop"));
        self.pending.push_back(finish);
        if self.include_usage {
            self.pending.push_back(
                Event::default().data(
                    usage_chunk_body(&self.id, self.created, &self.model, &usage).to_string(),
                ),
            );
        }
        self.pending.push_back(Event::default().data("[DONE]"));
        self.finished = true;
        self.state.metrics().request_ok(&self.stats, &usage);
        let phase = engine_phase_name(self.run_engine());
        self.log.phases.insert(phase, ms(self.engine_started));
        self.log.phases.extend(phases);
        self.log.write(200, json!({}));
    }

    fn fail(&mut self, error: ApiError) {
        self.pending
            .push_back(Event::default().data(error.sse_data()));
        self.finished = true;
        let status = error.status().as_u16();
        self.state
            .metrics()
            .request_error(Some(&self.stats), status);
        self.log
            .write(status, json!({"error": error.to_string(), "in_band": true}));
    }

    fn run_engine(&self) -> crate::config::EngineKind {
        if self.log.engine == "exec" {
            crate::config::EngineKind::Exec
        } else {
            crate::config::EngineKind::AppServer
        }
    }

    fn into_stream(mut self) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
        let role = self.chunk(json!({"role": "assistant", "content": ""}), None);
        self.pending.push_back(role);
        futures_util::stream::unfold(self, |mut stream| async move {
            loop {
                if let Some(event) = stream.pending.pop_front() {
                    if !stream.first_yielded {
                        stream.first_yielded = true;
                        tracing::info!(
                            target: "codex_api_proxy.latency",
                            "{}",
                            json!({
                                "event": "chat_completion_first_sse",
                                "request_id": stream.log.request_id,
                                "profile": stream.log.profile,
                                "engine": stream.log.engine,
                                "time_to_first_sse_ms": ms(stream.log.received_at),
                            })
                        );
                    }
                    return Some((Ok(event), stream));
                }
                if stream.finished {
                    return None;
                }
                let abort = stream.state.abort().clone();
                let event = tokio::select! {
                    event = stream.run.events.recv() => event,
                    _ = abort.cancelled() => {
                        stream.fail(shutting_down());
                        continue;
                    }
                };
                match event {
                    Some(TurnEvent::TextDelta(text)) => stream.content(text),
                    Some(TurnEvent::Done(Completion {
                        text,
                        usage,
                        phases,
                        ..
                    })) => stream.done(text, usage, phases),
                    Some(TurnEvent::Failed(error)) => stream.fail(ApiError::from(error)),
                    Some(_) => continue,
                    None => stream.fail(ApiError::CodexFailed {
                        message: "Codex stopped without reporting a result".to_string(),
                        code: "codex_failed",
                    }),
                }
            }
        })
    }
}
