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
//! The pipeline counts them in the metrics; failures of the run itself are counted by the adapter's
//! renderer ([`record_error`]).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::HeaderMap;

use crate::api::body::read_body;
use crate::api::error::ApiError;
pub use crate::api::request_log::{LatencyLog, RequestFacts};
use crate::api::{authenticate, authorize_profile, may_use, Caller};
use crate::config::{EngineKind, Profile};
use crate::engine::exec::{developer_instructions_arg, MAX_ARG_BYTES};
use crate::engine::{ms, HoldPolicy, Job, RunHandle, TurnRequest};
use crate::live::snapshot::{Route, Snapshot};
use crate::live::state::AppState;
use crate::metrics::{InFlight, ProfileStats};
use crate::pool::Pool;
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
    let (profile, pool) = (route.profile.clone(), route.pool.clone());
    authorize_profile(&snapshot, &profile, &parsed.model, &caller)?;
    if profile.runtime.pass_model {
        check_passed_model(&parsed.model)?;
    }

    let stats = state.metrics().profile(&profile.name);
    state.metrics().request_started(Some(&stats));
    *stats_slot = Some(stats.clone());
    let log = LatencyLog::new(
        state,
        surface,
        &profile,
        RequestFacts {
            request_id,
            model: parsed.model.clone(),
            stream: parsed.stream,
            key_name: caller.key_name(),
            received_at,
        },
    );
    let routed = Routed {
        snapshot,
        caller,
        profile,
        pool,
        stats,
        log,
    };
    Ok((launch(routed, parsed).await?, kept))
}

/// A request that passed authentication, routing and authorization, counted for its profile.
struct Routed {
    snapshot: Arc<Snapshot>,
    caller: Caller,
    profile: Arc<Profile>,
    pool: Arc<Pool>,
    stats: Arc<ProfileStats>,
    log: LatencyLog,
}

/// Checks the directory and the engine, waits for admission, checks the directory again, starts the run.
async fn launch<R: Into<TurnRequest>>(
    routed: Routed,
    parsed: Parsed<R>,
) -> Result<Started, ApiError> {
    let Routed {
        snapshot,
        caller,
        profile,
        pool,
        stats,
        mut log,
    } = routed;
    let started = Instant::now();
    // An early answer for a directory that is already wrong; the path used is the one checked again
    // after the queue wait, below.
    resolve_cwd(&profile, parsed.cwd.as_deref())?;
    log.phases.insert("cwd_resolve", ms(started));

    let started = Instant::now();
    let request: TurnRequest = parsed.request.into();
    check_engine(&snapshot, &profile, &caller, &request)?;
    log.phases.insert("prompt_build", ms(started));

    let in_flight = InFlight::new(stats.clone()).holding(caller.take_key_guard());
    let started = Instant::now();
    let permit = pool.admit().await?;
    log.phases.insert("queue_wait", ms(started));
    // The directory may have been replaced (by a symlink out of the roots, say) while the request
    // waited: check it again now and give the engine this canonical path, just before the spawn.
    let cwd = resolve_cwd(&profile, parsed.cwd.as_deref())?;

    let job = Job {
        request_id: log.request_id.clone(),
        request,
        cwd,
        model: if profile.runtime.pass_model {
            Some(parsed.model.clone())
        } else {
            profile.runtime.model.clone()
        },
        received_at: log.received_at,
        hold: HoldPolicy {
            timeout: profile.hold.timeout,
            max_held: profile.hold.max_held,
            log: hold_log(&stats),
        },
    };
    let engine_started = Instant::now();
    let run = pool.start(job, permit);
    Ok(Started {
        run,
        model: parsed.model,
        engine: profile.runtime.engine,
        stats,
        in_flight,
        log,
        engine_started,
        snapshot,
    })
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
