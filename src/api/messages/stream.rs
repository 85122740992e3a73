//! The SSE stream of one streaming Messages response: named events (`event: message_start` …) from the
//! [`MessagesRenderer`], and a `ping` event whenever the run has been quiet for the keep-alive interval
//! (Anthropic's keep-alive, which its SDKs expect instead of SSE comments). The stream owns the engine
//! run, so dropping it (client gone) cancels the Codex work at once.

use std::convert::Infallible;

use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::json;

use crate::api::messages::render::MessagesRenderer;
use crate::engine::RunHandle;
use crate::live::state::AppState;

struct SseStream {
    run: RunHandle,
    renderer: MessagesRenderer,
    state: AppState,
    first_yielded: bool,
}

/// The streaming response: SSE headers now, then the renderer's events as the run produces them.
pub fn response(state: &AppState, run: RunHandle, renderer: MessagesRenderer) -> Response {
    let stream = SseStream {
        run,
        renderer,
        state: state.clone(),
        first_yielded: false,
    };
    let mut response = Sse::new(events(stream)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn events(stream: SseStream) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(stream, |mut stream| async move {
        loop {
            if let Some((name, data)) = stream.renderer.next_pending() {
                if !stream.first_yielded {
                    stream.first_yielded = true;
                    stream.renderer.log().write_first_sse();
                }
                return Some((Ok(Event::default().event(name).data(data)), stream));
            }
            if stream.renderer.finished() {
                return None;
            }
            let abort = stream.state.abort().clone();
            let quiet = tokio::time::sleep(stream.state.keep_alive());
            tokio::select! {
                event = stream.run.events.recv() => stream.renderer.feed(event),
                _ = abort.cancelled() => stream.renderer.abort(),
                _ = quiet => {
                    let ping = json!({"type": "ping"}).to_string();
                    return Some((Ok(Event::default().event("ping").data(ping)), stream));
                }
            }
        }
    })
}
