//! The SSE stream of one streaming Responses answer: `event: <type>` plus the JSON `data` of each event
//! from the [`ResponsesRenderer`], with SSE comment keep-alives while Codex works. The stream owns the
//! engine run, so dropping it (client gone) cancels the Codex work at once.

use std::convert::Infallible;

use axum::response::sse::Event;
use axum::response::Response;
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
    crate::api::sse::response(state, events(stream))
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
