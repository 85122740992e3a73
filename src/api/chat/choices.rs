//! `n` > 1: one chat completion with several choices, each an independent turn of the same
//! conversation.
//!
//! The first choice went through the pipeline with the request itself; each further one goes through
//! it again with the same body (authenticated, routed and admitted like a request, so it counts
//! against the key's and the profile's limits and has its own latency line, with request id
//! `ID-i`). All runs start together and run in parallel. The plain answer holds `choices[0..n]` with
//! their indexes and the summed usage; a stream interleaves the choices' chunks as they come, each
//! with its `index`, and ends with one `finish_reason` per choice, the summed usage (when asked for)
//! and `[DONE]`. If any choice fails, the whole request fails (the other runs are cancelled).

use std::convert::Infallible;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{SelectAll, StreamExt};
use serde_json::{json, Value};

use super::render::ChatRenderer;
use super::{parse, Rendering};
use crate::api::pipeline::{self, Incoming, Started};
use crate::engine::{RunHandle, TurnEvent};
use crate::live::state::AppState;

/// Starts the further choices and answers with all of them.
pub(super) async fn respond(
    state: &AppState,
    first: Started,
    rendering: Rendering,
    body: Bytes,
    request_id: &str,
    headers: &HeaderMap,
) -> Response {
    let snapshot = first.snapshot.clone();
    let further = (1..rendering.n).map(|index| {
        let incoming = Incoming {
            state,
            snapshot: snapshot.clone(),
            request_id: format!("{request_id}-{index}"),
            received_at: Instant::now(),
            headers,
            body: Body::from(body.clone()),
        };
        pipeline::start(incoming, "chat_completion", parse)
    });
    let mut started = vec![first];
    for result in futures_util::future::join_all(further).await {
        match result {
            Ok((run, _)) => started.push(run),
            // The runs already started are cancelled as they are dropped.
            Err(error) => return error.into_response(),
        }
    }
    let choices: Vec<(ChatRenderer, RunHandle)> = started
        .into_iter()
        .map(|started| {
            let (renderer, run) =
                ChatRenderer::new(state, started, rendering.stream, rendering.include_usage);
            let renderer = renderer
                .with_legacy_functions(rendering.legacy_functions)
                .with_output(rendering.output.clone());
            (renderer, run)
        })
        .collect();
    if rendering.stream {
        return stream(state, choices, rendering.include_usage);
    }
    let answers = choices.into_iter().map(|(mut renderer, mut run)| {
        let abort = state.abort().clone();
        async move {
            while !renderer.finished() {
                tokio::select! {
                    event = run.events.recv() => renderer.feed(event),
                    _ = abort.cancelled() => renderer.abort(),
                }
            }
            drop(run);
            renderer.into_outcome()
        }
    });
    let mut bodies = Vec::new();
    for answer in futures_util::future::join_all(answers).await {
        match answer {
            Ok(body) => bodies.push(body),
            Err(error) => return error.into_response(),
        }
    }
    Json(merge(bodies)).into_response()
}

/// One `chat.completion` body of all choices: the first body's id, each choice with its index,
/// usage summed.
fn merge(bodies: Vec<Value>) -> Value {
    let mut merged = bodies[0].clone();
    let mut choices = Vec::new();
    let mut usage = json!({});
    for (index, body) in bodies.iter().enumerate() {
        let mut choice = body["choices"][0].clone();
        choice["index"] = json!(index);
        choices.push(choice);
        add_usage(&mut usage, &body["usage"]);
    }
    merged["choices"] = Value::Array(choices);
    merged["usage"] = usage;
    merged
}

/// Adds the numbers of an OpenAI usage object (nested details included) into `sum`.
fn add_usage(sum: &mut Value, usage: &Value) {
    let Value::Object(fields) = usage else {
        return;
    };
    for (key, value) in fields {
        match value {
            Value::Number(number) => {
                let total = sum[key].as_u64().unwrap_or(0) + number.as_u64().unwrap_or(0);
                sum[key] = json!(total);
            }
            Value::Object(_) => {
                if !sum[key].is_object() {
                    sum[key] = json!({});
                }
                add_usage(&mut sum[key], value);
            }
            _ => {}
        }
    }
}

/// One choice's events, tagged with its index.
fn choice_events(
    index: usize,
    run: RunHandle,
) -> impl futures_util::Stream<Item = (usize, Option<TurnEvent>)> {
    let RunHandle { events, cancel } = run;
    futures_util::stream::unfold(Some((events, cancel)), move |state| async move {
        let (mut events, cancel) = state?;
        match events.recv().await {
            Some(event) => Some(((index, Some(event)), Some((events, cancel)))),
            // The end of the run, once; the cancel guard goes with it.
            None => Some(((index, None), None)),
        }
    })
}

/// One choice's tagged events, boxed so all choices fit one `SelectAll`.
type ChoiceEvents =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = (usize, Option<TurnEvent>)> + Send>>;

/// The merged stream state: the choices' renderers and their tagged events.
struct Merged {
    renderers: Vec<ChatRenderer>,
    events: SelectAll<ChoiceEvents>,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    usage: Value,
    /// Payloads ready to send.
    pending: std::collections::VecDeque<String>,
    finished: Vec<bool>,
    ended: bool,
}

impl Merged {
    /// Takes the renderer `index`'s pending payloads: chunks re-tagged with the choice's index and
    /// the common id; its usage chunk is summed and its `[DONE]` dropped; an error ends everything.
    fn drain(&mut self, index: usize) {
        while let Some(data) = self.renderers[index].next_pending() {
            if data == "[DONE]" {
                continue;
            }
            let Ok(mut chunk) = serde_json::from_str::<Value>(&data) else {
                self.pending.push_back(data);
                continue;
            };
            if chunk.get("error").is_some() {
                self.pending.push_back(data);
                self.ended = true;
                return;
            }
            let empty = chunk["choices"].as_array().is_some_and(|c| c.is_empty());
            if empty {
                add_usage(&mut self.usage, &chunk["usage"]);
                continue;
            }
            chunk["id"] = json!(self.id);
            chunk["choices"][0]["index"] = json!(index);
            self.pending.push_back(chunk.to_string());
        }
        if self.renderers[index].finished() {
            self.finished[index] = true;
        }
        if self.finished.iter().all(|done| *done) && !self.ended {
            self.ended = true;
            if self.include_usage {
                self.pending.push_back(
                    json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "system_fingerprint": null,
                        "choices": [],
                        "usage": self.usage,
                    })
                    .to_string(),
                );
            }
            self.pending.push_back("[DONE]".to_string());
        }
    }
}

/// The streamed answer of all choices (see the module documentation).
fn stream(
    state: &AppState,
    choices: Vec<(ChatRenderer, RunHandle)>,
    include_usage: bool,
) -> Response {
    let mut renderers = Vec::new();
    let mut events = SelectAll::new();
    for (index, (renderer, run)) in choices.into_iter().enumerate() {
        renderers.push(renderer);
        events.push(Box::pin(choice_events(index, run)) as ChoiceEvents);
    }
    let id = renderers[0].id().to_string();
    let (created, model) = renderers[0].created_and_model();
    let model = model.to_string();
    let count = renderers.len();
    let mut merged = Merged {
        renderers,
        events,
        id,
        created,
        model,
        include_usage,
        usage: json!({}),
        pending: Default::default(),
        finished: vec![false; count],
        ended: false,
    };
    for index in 0..count {
        merged.drain(index);
    }
    let abort = state.abort().clone();
    let body = futures_util::stream::unfold(merged, move |mut merged| {
        let abort = abort.clone();
        async move {
            loop {
                if let Some(data) = merged.pending.pop_front() {
                    return Some((Ok::<_, Infallible>(Event::default().data(data)), merged));
                }
                if merged.ended {
                    return None;
                }
                tokio::select! {
                    next = merged.events.next() => match next {
                        Some((index, event)) => {
                            if !merged.renderers[index].finished() {
                                merged.renderers[index].feed(event);
                            }
                            merged.drain(index);
                        }
                        None => return None,
                    },
                    _ = abort.cancelled() => {
                        for index in 0..merged.renderers.len() {
                            if !merged.renderers[index].finished() {
                                merged.renderers[index].abort();
                            }
                            merged.drain(index);
                        }
                    }
                }
            }
        }
    });
    crate::api::sse::response(state, body)
}
