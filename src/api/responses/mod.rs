//! The OpenAI Responses API: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`, an adapter
//! over the engine-neutral pipeline like `api::chat`.
//!
//! [`request`] parses the body into a [`crate::turn::TurnRequest`] plus the fields the `response`
//! object echoes; [`crate::api::pipeline`] authenticates, routes, checks and admits it and starts the
//! engine run; [`render::ResponsesRenderer`] maps the run's events to the `response` object or to the
//! documented stream of `response.*` events ([`stream`]). Errors use OpenAI's shape (`ApiError`'s own).
//!
//! `previous_response_id` continues a kept thread of the app-server engine
//! ([`crate::engine::app_server::kept`]); an id that is not kept (unknown, expired, deleted, or made on
//! another instance) is OpenAI's 404 `previous_response_not_found`, answered before admission. `GET` and
//! `DELETE /v1/responses/{id}` work while the response is kept ([`store`]).

pub mod render;
pub mod request;
pub mod store;
pub mod stream;

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::api::error::ApiError;
use crate::api::guard::Loaded;
use crate::api::pipeline::{self, Incoming, Parsed};
use crate::api::{authenticate, may_use, RequestId};
use crate::engine::app_server::kept;
use crate::live::snapshot::Snapshot;
use crate::live::state::AppState;
use crate::turn::{OutputFormat, TurnRequest};
use render::ResponsesRenderer;
use request::{Echo, ResponsesRequest};

/// What the adapter keeps from the body besides the neutral request.
struct Kept {
    stream: bool,
    echo: Echo,
    /// `text.format` as the neutral output format: the answer is checked against it.
    output: Option<OutputFormat>,
    /// Codex's own `web_search` was asked for (checked against the profile).
    web_search: bool,
}

fn parse(body: &[u8]) -> Result<(Parsed<TurnRequest>, Kept), ApiError> {
    let ResponsesRequest {
        model,
        stream,
        cwd,
        turn,
        echo,
        web_search,
    } = ResponsesRequest::parse(body)?;
    let output = turn.output.clone();
    let parsed = Parsed {
        model,
        request: turn,
        cwd,
        stream,
    };
    Ok((
        parsed,
        Kept {
            stream,
            echo,
            output,
            web_search,
        },
    ))
}

/// Whether `parsed` continues a response this instance does not keep, on a profile whose engine keeps
/// threads (an exec profile gets the pipeline's 400 naming the profiles that can).
fn continues_unknown(snapshot: &Snapshot, parsed: &Parsed<TurnRequest>) -> bool {
    let Some(id) = &parsed.request.thread.continues else {
        return false;
    };
    let keeps_threads = snapshot.route(&parsed.model).is_some_and(|route| {
        crate::engine::capabilities(route.profile.runtime.engine).continuation
    });
    keeps_threads && !kept::contains(id)
}

/// A pipeline refusal names chat's parameters; a Responses client sent `input` and `text.format`.
fn in_responses_terms(error: ApiError) -> ApiError {
    match error {
        ApiError::InvalidRequest {
            message,
            param: Some(param),
            code,
        } => {
            let param = match param.as_str() {
                "messages" => "input".to_string(),
                "response_format" => "text.format".to_string(),
                _ => param,
            };
            ApiError::InvalidRequest {
                message,
                param: Some(param),
                code,
            }
        }
        other => other,
    }
}

/// Codex's own `web_search` is served only by a profile that lets Codex use its tools.
fn check_web_search(snapshot: &Snapshot, model: &str) -> Result<(), ApiError> {
    match snapshot.route(model) {
        Some(route) if !route.profile.runtime.tools => Err(ApiError::invalid(
            format!(
                "The 'web_search' tool is Codex's own, and model `{}` does not let Codex use its tools (its profile has tools = false). Use a profile with tools = true, or send the request without it.",
                route.profile.name
            ),
            Some("tools"),
        )),
        // An unknown model gets the pipeline's 404.
        _ => Ok(()),
    }
}

/// OpenAI's 404 for a `previous_response_id` that is not kept.
fn previous_not_found(id: &str) -> Response {
    let id: String = id.chars().take(80).collect();
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {
            "message": format!("Previous response with id '{id}' not found. Responses are kept by the instance that made them for the profile's response_ttl_seconds."),
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        }})),
    )
        .into_response()
}

/// `POST /v1/responses`.
pub async fn create(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let snapshot_for_check = snapshot.clone();
    let incoming = Incoming {
        state: &state,
        snapshot,
        request_id,
        received_at: Instant::now(),
        headers: &headers,
        body,
    };
    // Set by the parser when `previous_response_id` names a response that is not kept.
    let not_kept: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let parse_and_check = |body: &[u8]| {
        let (parsed, kept) = parse(body)?;
        if kept.web_search {
            check_web_search(&snapshot_for_check, &parsed.model)?;
        }
        if continues_unknown(&snapshot_for_check, &parsed) {
            *not_kept.lock().unwrap_or_else(|p| p.into_inner()) =
                kept.echo.previous_response_id.clone();
            return Err(ApiError::RouteNotFound(
                "previous_response_not_found".to_string(),
            ));
        }
        Ok((parsed, kept))
    };
    let started = pipeline::start(incoming, "responses", parse_and_check).await;
    let (
        started,
        Kept {
            stream: streaming,
            echo,
            output,
            ..
        },
    ) = match started {
        Ok(started) => started,
        Err(error) => {
            let id = not_kept.lock().unwrap_or_else(|p| p.into_inner()).take();
            return match id {
                Some(id) => previous_not_found(&id),
                None => in_responses_terms(error).into_response(),
            };
        }
    };
    let (renderer, mut run) = ResponsesRenderer::new(&state, started, streaming, echo);
    let mut renderer = renderer.with_format(output);
    if streaming {
        return stream::response(&state, run, renderer);
    }
    let abort = state.abort().clone();
    while !renderer.finished() {
        tokio::select! {
            event = run.events.recv() => renderer.feed(event),
            _ = abort.cancelled() => renderer.abort(),
        }
    }
    drop(run);
    match renderer.into_outcome() {
        Ok(body) => Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The 404 of a response id this instance does not keep.
fn not_kept(id: &str) -> Response {
    let id: String = id.chars().take(80).collect();
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {
            "message": format!("Response with id '{id}' not found."),
            "type": "invalid_request_error",
            "param": null,
            "code": "response_not_found",
        }})),
    )
        .into_response()
}

/// The kept response `id` (`resp_<request id>`) if the caller may use the profile that made it.
fn readable(
    snapshot: &Snapshot,
    headers: &HeaderMap,
    id: &str,
) -> Result<Option<String>, ApiError> {
    let caller = authenticate(snapshot, headers)?;
    let Some(request_id) = id.strip_prefix("resp_") else {
        return Ok(None);
    };
    let Some(stored) = store::get(request_id) else {
        return Ok(None);
    };
    let allowed = snapshot
        .config
        .profiles
        .iter()
        .find(|profile| profile.name == stored.profile)
        .is_some_and(|profile| may_use(snapshot, profile, &caller));
    Ok(allowed.then(|| request_id.to_string()))
}

/// `GET /v1/responses/{id}`: the `response` object while it is kept.
pub async fn get(
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match readable(&snapshot, &headers, &id) {
        Err(error) => error.into_response(),
        Ok(None) => not_kept(&id),
        Ok(Some(request_id)) => match store::get(&request_id) {
            Some(stored) => Json(stored.response).into_response(),
            None => not_kept(&id),
        },
    }
}

/// `DELETE /v1/responses/{id}`: ends the kept thread; the deletion object, or 404.
pub async fn delete(
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match readable(&snapshot, &headers, &id) {
        Err(error) => error.into_response(),
        Ok(None) => not_kept(&id),
        Ok(Some(request_id)) => {
            store::delete(&request_id);
            Json(json!({"id": id, "object": "response", "deleted": true})).into_response()
        }
    }
}
