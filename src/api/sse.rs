//! The one shape of every streamed answer: `text/event-stream` with a `keep-alive` comment while Codex
//! works, `Cache-Control: no-cache` and `X-Accel-Buffering: no` (so proxies such as nginx pass each
//! event on at once).

use std::convert::Infallible;

use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

use crate::live::state::AppState;

/// The streaming response for `events`, with the server's keep-alive interval.
pub fn response<S>(state: &AppState, events: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut response = Sse::new(events)
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
