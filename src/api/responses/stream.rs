//! The SSE stream of one streaming Responses answer: `event: <type>` plus the JSON `data` of each event
//! from the [`ResponsesRenderer`], with SSE comment keep-alives while Codex works. The stream owns the
//! engine run, so dropping it (client gone) cancels the Codex work at once.

use std::convert::Infallible;

use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

use crate::api::responses::render::ResponsesRenderer;
use crate::engine::RunHandle;
use crate::live::state::AppState;

struct SseStream {
    run: RunHandle,
    renderer: ResponsesRenderer,
    state: AppState,
    first_yielded: bool,
}

/// The streaming response: SSE headers now, then the renderer's events as the run produces them.
pub fn response(state: &AppState, run: RunHandle, renderer: ResponsesRenderer) -> Response {
    let stream = SseStream {
        run,
        renderer,
        state: state.clone(),
        first_yielded: false,
    };
    let mut response = Sse::new(events(stream))
        .keep_alive(
            KeepAlive::new()
                .interval(state.keep_alive())
                .text("keep-alive"),
        )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn events(stream: SseStream) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(stream, |mut stream| async move {
        loop {
            if let Some((kind, data)) = stream.renderer.next_pending() {
                if !stream.first_yielded {
                    stream.first_yielded = true;
                    stream.renderer.log().write_first_sse();
                }
                return Some((Ok(Event::default().event(kind).data(data)), stream));
            }
            if stream.renderer.finished() {
                return None;
            }
            let abort = stream.state.abort().clone();
            tokio::select! {
                event = stream.run.events.recv() => stream.renderer.feed(event),
                _ = abort.cancelled() => stream.renderer.abort(),
            }
        }
    })
}
