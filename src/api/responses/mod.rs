//! The OpenAI Responses API: `POST /v1/responses`, `GET` and `DELETE /v1/responses/{id}`, an adapter
//! over the engine-neutral pipeline like `api::chat`.
//!
//! [`request`] parses the body into a [`crate::turn::TurnRequest`] plus the fields the `response`
//! object echoes; [`crate::api::pipeline`] authenticates, routes, checks and admits it and starts the
//! engine run; [`render::ResponsesRenderer`] maps the run's events to the `response` object or to the
//! documented stream of `response.*` events ([`stream`]). Errors use OpenAI's shape (`ApiError`'s own).
//!
//! Responses are not kept yet: `previous_response_id` is refused with a 400, and `GET`/`DELETE` of an id
//! answer 404.

pub mod render;
pub mod request;
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
use crate::api::{authenticate, RequestId};
use crate::live::state::AppState;
use crate::turn::TurnRequest;
use render::ResponsesRenderer;
use request::{Echo, ResponsesRequest};

fn parse(body: &[u8]) -> Result<(Parsed<TurnRequest>, (bool, Echo)), ApiError> {
    let ResponsesRequest {
        model,
        stream,
        cwd,
        turn,
        echo,
    } = ResponsesRequest::parse(body)?;
    let parsed = Parsed {
        model,
        request: turn,
        cwd,
        stream,
    };
    Ok((parsed, (stream, echo)))
}

/// `POST /v1/responses`.
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
    let (started, (streaming, echo)) = match pipeline::start(incoming, "responses", parse).await {
        Ok(started) => started,
        Err(error) => return error.into_response(),
    };
    let (mut renderer, mut run) = ResponsesRenderer::new(&state, started, streaming, echo);
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

/// The 404 of a response id this proxy does not keep.
fn not_kept(snapshot: &crate::live::snapshot::Snapshot, headers: &HeaderMap, id: &str) -> Response {
    if let Err(error) = authenticate(snapshot, headers) {
        return error.into_response();
    }
    let id: String = id.chars().take(80).collect();
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {
            "message": format!("Response with id '{id}' not found: this proxy does not keep responses yet."),
            "type": "invalid_request_error",
            "param": null,
            "code": "response_not_found",
        }})),
    )
        .into_response()
}

/// `GET /v1/responses/{id}`.
pub async fn get(
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    not_kept(&snapshot, &headers, &id)
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    not_kept(&snapshot, &headers, &id)
}
