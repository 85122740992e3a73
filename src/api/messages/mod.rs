//! The Anthropic Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`, an adapter over
//! the engine-neutral pipeline like `api::chat`.
//!
//! [`request`] parses the Anthropic body into a [`crate::turn::TurnRequest`]; [`crate::api::pipeline`]
//! authenticates, routes, checks and admits it and starts the engine run; [`render::MessagesRenderer`]
//! maps the run's events to a `message` body or to Anthropic's SSE event sequence ([`stream`]). Every
//! error, before or after the response starts, is rendered in Anthropic's shape ([`error`]). The
//! `anthropic-version` header is accepted and not required. `count_tokens` authenticates, routes and
//! parses the same way and counts without starting Codex ([`count`]).

pub mod count;
pub mod error;
pub mod render;
pub mod request;
pub mod stream;

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::api::body::read_body;
use crate::api::error::ApiError;
use crate::api::guard::Loaded;
use crate::api::pipeline::{self, Incoming, Parsed};
use crate::api::{authenticate, authorize_profile, RequestId};
use crate::live::state::AppState;
use crate::turn::TurnRequest;
use render::MessagesRenderer;
use request::{MessagesRequest, Purpose};

/// What the handler keeps from the body for rendering: whether to stream, and the stop sequences.
type Kept = (bool, Vec<String>);

fn parse(body: &[u8]) -> Result<(Parsed<TurnRequest>, Kept), ApiError> {
    let MessagesRequest {
        model,
        stream,
        cwd,
        turn,
    } = MessagesRequest::parse(body, Purpose::Create)?;
    let stops = turn.stop.clone();
    let parsed = Parsed {
        model,
        request: turn,
        cwd,
        stream,
    };
    Ok((parsed, (stream, stops)))
}

/// `POST /v1/messages`.
pub async fn create(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let incoming = Incoming {
        state: &state,
        snapshot,
        request_id,
        received_at: Instant::now(),
        headers: &headers,
        body,
    };
    let (started, (streaming, stops)) = match pipeline::start(incoming, "messages", parse).await {
        Ok(started) => started,
        Err(error) => return error::response(error),
    };
    let (renderer, mut run) = MessagesRenderer::new(&state, started, streaming);
    let mut renderer = renderer.with_stop_sequences(stops);
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
        Err(error) => error::response(error),
    }
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}` (see [`count`] for how it is counted).
pub async fn count_tokens(
    State(state): State<AppState>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match counted(&state, &snapshot, &headers, body).await {
        Ok(tokens) => Json(json!({"input_tokens": tokens})).into_response(),
        Err(error) => error::response(error),
    }
}

async fn counted(
    state: &AppState,
    snapshot: &crate::live::snapshot::Snapshot,
    headers: &HeaderMap,
    body: Body,
) -> Result<usize, ApiError> {
    let caller = authenticate(snapshot, headers)?;
    let server = &snapshot.config.server;
    let bytes = read_body(
        body,
        server.max_request_bytes,
        server.inflight_body_limit(),
        headers,
        state.client_timeout(),
    )
    .await?;
    let request = MessagesRequest::parse(&bytes, Purpose::CountTokens)?;
    drop(bytes);
    let Some(route) = snapshot.route(&request.model) else {
        return Err(ApiError::ModelNotFound(format!(
            "The model `{}` does not exist on this proxy.",
            request.model
        )));
    };
    authorize_profile(snapshot, route.profile, &request.model, &caller)?;
    Ok(count::count(&request.turn))
}
