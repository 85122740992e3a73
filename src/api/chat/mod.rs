//! `POST /v1/chat/completions`: the OpenAI chat adapter over the engine-neutral pipeline.
//!
//! [`request`] parses OpenAI chat JSON into validated messages that map to a
//! [`crate::turn::TurnRequest`]; [`crate::api::pipeline`]
//! authenticates, routes, checks and admits it and starts the engine run; [`render::ChatRenderer`] maps
//! the run's events back to a `chat.completion` body or to `chat.completion.chunk` SSE events
//! ([`stream`]); [`wire`] holds those bodies. Errors before the response starts are rendered in
//! OpenAI's error shape with their HTTP status; after SSE headers they go in-band.
//!
//! The [`crate::engine::RunHandle`] lives in the handler future (plain) or inside the SSE stream
//! (streaming), so a client that disconnects drops it and the Codex work is cancelled at once.

mod choices;
pub mod render;
pub mod request;
pub mod stream;
pub mod tools;
pub mod wire;

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::api::guard::Loaded;
use crate::api::pipeline::{self, Incoming, Parsed};
use crate::api::RequestId;
use crate::live::state::AppState;
use render::ChatRenderer;
use request::{ChatRequest, Conversation};

/// What the chat adapter keeps from the body for rendering.
struct Rendering {
    stream: bool,
    include_usage: bool,
    /// The tools came as the legacy `functions`: answer with `function_call`.
    legacy_functions: bool,
    /// `response_format`: the answer is checked before it is returned.
    output: Option<crate::turn::OutputFormat>,
    /// `n`: the number of choices.
    n: usize,
}

fn parse(body: &[u8]) -> Result<(Parsed<Conversation>, Rendering), crate::api::error::ApiError> {
    let ChatRequest {
        model,
        messages,
        stream,
        include_usage,
        cwd,
        tools,
        tool_choice,
        legacy_functions,
        options,
        n,
    } = ChatRequest::parse(body)?;
    let output = options.output.clone();
    let parsed = Parsed {
        model,
        request: Conversation {
            messages,
            tools,
            tool_choice,
            legacy_functions,
            options,
        },
        cwd,
        stream,
    };
    Ok((
        parsed,
        Rendering {
            stream,
            include_usage,
            legacy_functions,
            output,
            n,
        },
    ))
}

/// A 400 when the profile `model` routes to can never admit `n` turns at once: more than its
/// `max_concurrency` plus `max_queue_size` (an unknown model is left to the pipeline's 404).
fn check_choices(
    snapshot: &crate::live::snapshot::Snapshot,
    model: &str,
    n: usize,
) -> Result<(), crate::api::error::ApiError> {
    let Some(route) = snapshot.route(model) else {
        return Ok(());
    };
    let runtime = &route.profile.runtime;
    let most = runtime.max_concurrency + runtime.max_queue_size;
    if n > most {
        return Err(crate::api::error::ApiError::invalid(
            format!(
                "n={n} is more than model `{}` can ever admit at once ({} running plus {} queued); ask for at most {most} choices.",
                route.profile.name, runtime.max_concurrency, runtime.max_queue_size
            ),
            Some("n"),
        ));
    }
    Ok(())
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(Loaded(snapshot)): Extension<Loaded>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let first_request_id = request_id.clone();
    let incoming = Incoming {
        state: &state,
        snapshot,
        request_id,
        received_at: Instant::now(),
        headers: &headers,
        body,
    };
    // The body, kept for the further choices of a request with `n` > 1.
    let mut kept_body: Option<axum::body::Bytes> = None;
    let routes = incoming.snapshot.clone();
    let parse_and_keep = |body: &[u8]| {
        let parsed = parse(body)?;
        if parsed.1.n > 1 {
            check_choices(&routes, &parsed.0.model, parsed.1.n)?;
            kept_body = Some(axum::body::Bytes::copy_from_slice(body));
        }
        Ok(parsed)
    };
    let (started, rendering) =
        match pipeline::start(incoming, "chat_completion", parse_and_keep).await {
            Ok(started) => started,
            Err(error) => return error.into_response(),
        };
    if let Some(body) = kept_body {
        return choices::respond(
            &state,
            started,
            rendering,
            body,
            &first_request_id,
            &headers,
        )
        .await;
    }
    let (renderer, mut run) =
        ChatRenderer::new(&state, started, rendering.stream, rendering.include_usage);
    let mut renderer = renderer
        .with_legacy_functions(rendering.legacy_functions)
        .with_output(rendering.output);
    if rendering.stream {
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
