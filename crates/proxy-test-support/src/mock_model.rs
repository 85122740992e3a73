//! A mock of the OpenAI Responses API (`POST /v1/responses`, SSE streaming)
//! for driving the real Codex CLI in tests without network access.
//!
//! Start it with [`MockModel::start`] and pass [`MockModel::provider_overrides`]
//! to codex as `-c` values (a custom provider `mock` with all retries off and
//! `stream_idle_timeout_ms=3000`). Every request is recorded
//! ([`MockModel::requests`]). Dropping the `MockModel` stops the server and
//! ends all streams still open.
//!
//! # Directives
//!
//! Behaviour is chosen per request by `mock:` directives found in any string
//! of the request body (so a test writes them into its prompt). Top-level
//! `instructions` are scanned first, then `input` in order, then the rest, so
//! when a directive is repeated the last one in the conversation wins.
//! Unknown directives are ignored; numbers are read leniently (leading digits).
//!
//! | directive | effect |
//! |---|---|
//! | (none) | reply [`DEFAULT_REPLY`] in [`DEFAULT_DELTAS`] `response.output_text.delta`s, then `response.completed` with the fixed `USAGE_*` numbers |
//! | `mock:reply=WORD` | reply WORD (a run of non-whitespace; `_` becomes a space) |
//! | `mock:json=TEXT` | reply TEXT verbatim (a run of non-whitespace, `_` kept): for JSON answers |
//! | `mock:reasoning=WORDS` | before the reply, stream a `reasoning` output item whose summary is WORDS (`_` becomes a space) in two `response.reasoning_summary_text.delta`s |
//! | `mock:echo` | reply the text of the last `user` message item (verbatim, directive included); wins over `reply` |
//! | `mock:deltas=N` | split the reply into N deltas (at most one per char) |
//! | `mock:delay_ms=N` | sleep N ms before each delta |
//! | `mock:first_delay_ms=N` | sleep N ms before the response starts (before the HTTP headers) |
//! | `mock:status=S` | answer HTTP S (any 4xx/5xx) with an OpenAI error body, see [`error_body`]; `mock:quota` (429) and `mock:context` (400) pick the code |
//! | `mock:hang` | send headers and `response.created`, then nothing until the client leaves |
//! | `mock:cut` | send (up to) 2 deltas, then abort the connection mid-body (no `response.completed`) |
//! | `mock:failed[=CODE]` | send `response.created` then `response.failed` with [`FAILED_MESSAGE`] (error code CODE, default `server_error`) |
//! | `mock:eof` | stream the whole reply incl. `output_item.done`, then end the body cleanly without `response.completed` |
//! | `mock:call=NAME:ARGS` | answer with a `function_call` item calling NAME with the JSON text ARGS (no whitespace; `{}` when absent), see [`call_id`]; several in one string are parallel calls, in order; the last string holding any `mock:call` wins; a `mock:reply=` beside them is sent as a message before the calls |
//! | `mock:used=P` | add the rate-limit headers Codex reads to the response (any status): `x-codex-primary-used-percent: P`, `…-window-minutes: 300`, `…-reset-at` one hour ahead, and a `secondary` window at 10 % of 10080 minutes resetting a week ahead, see [`rate_limit_headers`] |
//! | `mock:min_users=N` | with `mock:call`: make the calls only when the input holds at least N `user` messages; before that, send the reply (a model that calls a tool only when asked again) |
//! | `mock:steps=N` | with `mock:call`: keep answering tool output with the calls until the input holds N `function_call_output` items (an agent loop of N rounds), then quote the output as below |
//! | (input ends with `function_call_output`) | reply [`TOOL_REPLY_PREFIX`] + the outputs of the trailing `function_call_output` items joined with ` \| `; wins over every directive but `status`, so a conversation that asked for a call ends after the tool answered |
//!
//! [`MockModel::set_directives`] applies directives to every request a mock receives, before the
//! request's own: two mocks then answer the same body differently (one 429, one working).
//!
//! # What codex 0.169.0 makes of it (measured)
//!
//! `codex exec --json --skip-git-repo-check --ignore-user-config --ignore-rules
//! --sandbox read-only --ephemeral --disable unbounded_connection_retries -c
//! <provider_overrides> -` with a fresh `CODEX_HOME`, native musl binary.
//! Every failure came after exactly 1 request (retries off), was preceded by a
//! top-level `{"type":"error"}` with the same message, and exited 1; success
//! exited 0. The exec core's fixtures (`src/engine/exec/fixtures/`) record these runs.
//!
//! | directive | final exec event |
//! |---|---|
//! | (none) | `agent_message` "Hello from the mock model." + `turn.completed` usage `{input_tokens:120, cached_input_tokens:20, cache_write_input_tokens:0, output_tokens:30, reasoning_output_tokens:10}` |
//! | `mock:echo` / `mock:reply=A_b` | `turn.completed`, `agent_message` = the prompt / "A b" |
//! | `mock:deltas=4 mock:delay_ms=250` | `turn.completed` after ~1.4 s wall (vs ~0.4 s) |
//! | `mock:first_delay_ms=1000` (also 5000) | `turn.completed`, 1 s (5 s) later: codex has no header timeout |
//! | `mock:delay_ms=3500` | `turn.failed` "stream disconnected before completion: idle timeout waiting for SSE" |
//! | `mock:status=500` | `turn.failed` "We’re currently experiencing high demand, which may cause temporary errors." (body ignored) |
//! | `mock:status=429` | `turn.failed` "exceeded retry limit, last status: 429 Too Many Requests" |
//! | `mock:status=429 mock:quota` | `turn.failed` "Quota exceeded. Check your plan and billing details." |
//! | `mock:status=401` | `turn.failed` "unexpected status 401 Unauthorized: Incorrect API key provided (mock)., url: http://127.0.0.1:PORT/v1/responses" |
//! | `mock:status=403` | `turn.failed` "unexpected status 403 Forbidden: Country, region, or territory not supported (mock)., url: …" |
//! | `mock:status=400` | `turn.failed` with the raw JSON error body as the message |
//! | `mock:status=400 mock:context` | `turn.failed` "Codex ran out of room in the model's context window. Start a new thread or clear earlier history before retrying." |
//! | `mock:status=404` | `turn.failed` with the body's `error.message` ("The model `mock-missing` does not exist (mock).") |
//! | `mock:status=502` | `turn.failed` "unexpected status 502 Bad Gateway: Bad gateway (mock)., url: …" |
//! | `mock:status=503` | `turn.failed` "Selected model is at capacity. Please try a different model." |
//! | `mock:hang` | after the 3 s idle timeout: `turn.failed` "stream disconnected before completion: idle timeout waiting for SSE" (the mock counts it in `streams_cancelled`) |
//! | `mock:cut` | `turn.failed` "stream disconnected before completion: Transport error: network error: error decoding response body" (no `agent_message`) |
//! | `mock:failed` | `turn.failed` "stream disconnected before completion: The mock model failed this response." |
//! | `mock:failed=context_length_exceeded` / `=insufficient_quota` | the context-window / "Quota exceeded…" messages above |
//! | `mock:eof` | `agent_message` "Hello from the mock model." **and then** `turn.failed` "stream disconnected before completion: stream closed before response.completed" |
//!
//! App-server (`codex app-server` with the same `-c` values, checked by
//! hand): one `item/agentMessage/delta` per mock delta, at the mock's cadence
//! (`mock:deltas=5 mock:delay_ms=100` gave 5 deltas ~100 ms apart);
//! `thread/tokenUsage/updated` carried the same usage; failures end with
//! `turn/completed{status:"failed"}` and the same messages (500 →
//! `codexErrorInfo:"internalServerError"`, cut/eof/failed/hang → `"other"`).
//! `mock:cut` delivers its 2 deltas before failing; `mock:eof` all 4.
//!
//! Request shape seen from codex 0.169.0: no top-level `instructions` (the base
//! prompt is the first `developer` message of `input`). With the default model
//! slug the tools come as an `input` item `{"type":"additional_tools",…}` with
//! namespaces and there is no `tools` field; with an unknown slug (e.g.
//! `-c model=mock-model`) `tools` is a flat list. `tool_names()` handles both.
//!
//! Its own tests (the real Codex CLI against it) are in `tests/it/mock_model.rs` of the root package.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Reply text when no `mock:reply=` / `mock:echo` directive is given.
pub const DEFAULT_REPLY: &str = "Hello from the mock model.";
/// Number of `response.output_text.delta` events when no `mock:deltas=` is given.
pub const DEFAULT_DELTAS: usize = 4;
/// `usage.input_tokens` of every `response.completed` (includes the cached tokens).
pub const USAGE_INPUT_TOKENS: u64 = 120;
/// `usage.input_tokens_details.cached_tokens`.
pub const USAGE_CACHED_TOKENS: u64 = 20;
/// `usage.output_tokens` (includes the reasoning tokens).
pub const USAGE_OUTPUT_TOKENS: u64 = 30;
/// `usage.output_tokens_details.reasoning_tokens`.
pub const USAGE_REASONING_TOKENS: u64 = 10;
/// `usage.total_tokens`.
pub const USAGE_TOTAL_TOKENS: u64 = 150;
/// `error.message` of the `response.failed` event sent for `mock:failed`.
pub const FAILED_MESSAGE: &str = "The mock model failed this response.";
/// Model name reported by the mock when the request has none.
pub const DEFAULT_MODEL: &str = "mock-model";
/// What the reply starts with when the request's input ends with tool output.
pub const TOOL_REPLY_PREFIX: &str = "tool said: ";

/// The `call_id` of the `index`th (from 0) `function_call` of the mock's `seq`th streamed response
/// (from 1; error statuses are not counted).
pub fn call_id(seq: usize, index: usize) -> String {
    format!("call_mock_{seq}_{index}")
}

/// One `POST /v1/responses` as received by the mock.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Header names are lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body (a JSON string holding the raw text if it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// `body.model`.
    pub fn model(&self) -> Option<String> {
        self.body.get("model")?.as_str().map(str::to_owned)
    }

    /// `body.instructions` (empty if absent). Note: codex 0.169 sends no
    /// `instructions` field; its base prompt is the first `developer` message
    /// of [`input_texts`](Self::input_texts).
    pub fn instructions(&self) -> String {
        self.body
            .get("instructions")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// The `message` items of `body.input` in order, as (role, text) where the
    /// text parts of the item are joined with `\n`.
    pub fn input_texts(&self) -> Vec<(String, String)> {
        let Some(items) = self.body.get("input").and_then(Value::as_array) else {
            return Vec::new();
        };
        items
            .iter()
            .filter(|item| {
                item.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("message")
                    == "message"
                    && item.get("role").is_some()
            })
            .map(|item| {
                let role = item
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                (role, message_text(item))
            })
            .collect()
    }

    /// Text of the last `user` message item of `body.input`.
    pub fn last_user_text(&self) -> Option<String> {
        self.input_texts()
            .into_iter()
            .rev()
            .find(|(role, _)| role == "user")
            .map(|(_, text)| text)
    }

    /// Names of the tools offered to the model: the entries of `body.tools`
    /// plus those of `additional_tools` items in `body.input` (codex 0.169
    /// sends its tools that way for its default model). Namespaces are
    /// flattened to their member names; a tool without a name (e.g.
    /// `{"type":"web_search"}`) is listed by its `type`.
    pub fn tool_names(&self) -> Vec<String> {
        fn flatten(tools: &[Value], out: &mut Vec<String>) {
            for tool in tools {
                if let Some(members) = tool.get("tools").and_then(Value::as_array) {
                    flatten(members, out);
                } else if let Some(name) = tool
                    .get("name")
                    .or_else(|| tool.get("type"))
                    .and_then(Value::as_str)
                {
                    out.push(name.to_owned());
                }
            }
        }
        let mut out = Vec::new();
        if let Some(tools) = self.body.get("tools").and_then(Value::as_array) {
            flatten(tools, &mut out);
        }
        for item in self
            .body
            .get("input")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if item.get("type").and_then(Value::as_str) == Some("additional_tools") {
                if let Some(tools) = item.get("tools").and_then(Value::as_array) {
                    flatten(tools, &mut out);
                }
            }
        }
        out
    }

    /// The `input` items of one `type` (e.g. `function_call`, `function_call_output`), in order.
    pub fn input_items(&self, kind: &str) -> Vec<Value> {
        self.body
            .get("input")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|item| item.get("type").and_then(Value::as_str) == Some(kind))
            .cloned()
            .collect()
    }

    /// The outputs of the `function_call_output` items that end `body.input` (after its last item of
    /// another type), in order; empty when the input does not end with tool output. An output given
    /// as content parts is the join of their texts.
    pub fn trailing_tool_outputs(&self) -> Vec<String> {
        let items = self
            .body
            .get("input")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let trailing = items
            .iter()
            .rev()
            .take_while(|item| {
                item.get("type").and_then(Value::as_str) == Some("function_call_output")
            })
            .count();
        items[items.len() - trailing..]
            .iter()
            .map(|item| match item.get("output") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(_)) => message_text(&json!({"content": item["output"]})),
                Some(other) => other.to_string(),
                None => String::new(),
            })
            .collect()
    }

    /// Size in bytes of the body serialized as compact JSON.
    pub fn body_len(&self) -> usize {
        serde_json::to_vec(&self.body).map(|v| v.len()).unwrap_or(0)
    }

    /// The whole body as (compact JSON) text, for substring assertions.
    pub fn text(&self) -> String {
        self.body.to_string()
    }

    /// Value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

fn message_text(item: &Value) -> String {
    match item.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| match part {
                Value::String(s) => Some(s.as_str()),
                _ => part.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    request_count: watch::Sender<usize>,
    open_streams: AtomicUsize,
    streams_cancelled: AtomicUsize,
    response_seq: AtomicUsize,
    shutdown: CancellationToken,
    /// Directives applied to every request before its own ([`MockModel::set_directives`]).
    directives: Mutex<String>,
}

/// The mock server. It listens on `127.0.0.1:<random port>` until dropped;
/// dropping it also ends every response still being streamed.
pub struct MockModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl MockModel {
    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    pub async fn start() -> MockModel {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            request_count: watch::Sender::new(0),
            open_streams: AtomicUsize::new(0),
            streams_cancelled: AtomicUsize::new(0),
            response_seq: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            directives: Mutex::new(String::new()),
        });
        let app = Router::new()
            .route("/v1/responses", post(handle_responses))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("mock model: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("mock model: local_addr");
        let shutdown = shared.shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        });
        MockModel { addr, shared }
    }

    /// `http://127.0.0.1:PORT/v1`, the provider `base_url` (Codex appends `/responses`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The `-c` values (without the `-c`) that make Codex use this mock as its
    /// model provider, with all retries off and a 3 s stream idle timeout.
    pub fn provider_overrides(&self) -> Vec<String> {
        vec![
            r#"model_provider="mock""#.to_owned(),
            format!(
                r#"model_providers.mock={{name="mock",base_url="{}",wire_api="responses",request_max_retries=0,stream_max_retries=0,stream_idle_timeout_ms=3000}}"#,
                self.base_url()
            ),
        ]
    }

    /// Makes this mock behave as if every request carried `directives` (e.g. `mock:status=429`)
    /// before its own, until set again (`""`: none). Lets two mocks answer the same request body
    /// differently, as two model services would.
    pub fn set_directives(&self, directives: &str) {
        *self.shared.directives.lock().unwrap() = directives.to_owned();
    }

    /// Every `POST /v1/responses` received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Number of `POST /v1/responses` received so far.
    pub fn request_count(&self) -> usize {
        *self.shared.request_count.borrow()
    }

    /// Streaming responses not yet finished (including ones waiting for
    /// `mock:first_delay_ms`). Decremented when the stream ends or the client
    /// disconnects.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    /// Streaming responses whose client went away before the mock finished them.
    pub fn streams_cancelled(&self) -> usize {
        self.shared.streams_cancelled.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests were received; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.shared.request_count.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|count| *count >= n)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Waits until no response is being streamed; false on timeout.
    pub async fn wait_for_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.open_streams() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl Drop for MockModel {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

// ---------------------------------------------------------------------------
// Directives

/// Behaviour requested by `mock:` directives in a request body.
#[derive(Debug, Default, Clone, PartialEq)]
struct Directives {
    reply: Option<String>,
    /// `mock:reasoning=WORDS`: a reasoning summary streamed before the message.
    reasoning: Option<String>,
    echo: bool,
    deltas: Option<usize>,
    delay_ms: u64,
    first_delay_ms: u64,
    status: Option<u16>,
    quota: bool,
    context: bool,
    hang: bool,
    cut: bool,
    eof: bool,
    /// `Some(code)` for `mock:failed[=code]`.
    failed: Option<Option<String>>,
    /// `mock:call=NAME:ARGS` as (name, arguments), from the last string holding any.
    calls: Vec<(String, String)>,
    /// `mock:steps=N`: tool rounds before the final answer.
    steps: Option<usize>,
    /// `mock:used=P`: send the rate-limit headers with P as the primary window's used percent.
    used: Option<u64>,
    /// `mock:min_users=N`: the calls need at least N user messages in the input.
    min_users: usize,
}

impl Directives {
    /// Scans every string in the body. Top-level `instructions` are scanned
    /// before `input`, so for a repeated directive the last occurrence in the
    /// conversation (normally the newest user message) wins.
    /// The mock-wide `defaults` ([`MockModel::set_directives`]) come first, so the body's own
    /// directives override them.
    fn parse_after(defaults: &str, body: &Value) -> Directives {
        let mut texts = Vec::new();
        match body {
            Value::Object(map) => {
                for key in ["instructions", "input"] {
                    if let Some(v) = map.get(key) {
                        collect_strings(v, &mut texts);
                    }
                }
                for (key, v) in map {
                    if key != "instructions" && key != "input" {
                        collect_strings(v, &mut texts);
                    }
                }
            }
            other => collect_strings(other, &mut texts),
        }
        let mut d = Directives::default();
        d.scan(defaults);
        for text in texts {
            d.scan(text);
        }
        d
    }

    fn scan(&mut self, text: &str) {
        let lower = text.to_ascii_lowercase();
        if lower.contains("mock:call=") {
            self.calls.clear();
        }
        let mut from = 0;
        while let Some(pos) = lower[from..].find("mock:") {
            let start = from + pos + "mock:".len();
            let rest = &text[start..];
            let name_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = rest[..name_len].to_ascii_lowercase();
            let mut value = None;
            let mut end = start + name_len;
            if let Some(after) = rest[name_len..].strip_prefix('=') {
                let len = after.find(char::is_whitespace).unwrap_or(after.len());
                value = Some(&after[..len]);
                end += 1 + len;
            }
            self.apply(&name, value);
            from = end.max(start);
        }
    }

    fn apply(&mut self, name: &str, value: Option<&str>) {
        let number = || value.and_then(leading_number);
        match name {
            "reply" => {
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    self.reply = Some(v.replace('_', " "));
                }
            }
            "json" => {
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    self.reply = Some(v.to_owned());
                }
            }
            "reasoning" => {
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    self.reasoning = Some(v.replace('_', " "));
                }
            }
            "echo" => self.echo = true,
            "deltas" => {
                if let Some(n) = number() {
                    self.deltas = Some(n as usize);
                }
            }
            "delay_ms" => self.delay_ms = number().unwrap_or(self.delay_ms),
            "first_delay_ms" => self.first_delay_ms = number().unwrap_or(self.first_delay_ms),
            "status" => {
                if let Some(n) = number() {
                    self.status = u16::try_from(n).ok();
                }
            }
            "quota" => self.quota = true,
            "context" => self.context = true,
            "hang" => self.hang = true,
            "cut" => self.cut = true,
            "eof" => self.eof = true,
            "failed" => self.failed = Some(value.filter(|v| !v.is_empty()).map(str::to_owned)),
            "steps" => self.steps = number().map(|n| n as usize),
            "used" => self.used = number(),
            "min_users" => self.min_users = number().unwrap_or(0) as usize,
            "call" => {
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    let (name, arguments) = v.split_once(':').unwrap_or((v, "{}"));
                    self.calls.push((name.to_owned(), arguments.to_owned()));
                }
            }
            _ => {}
        }
    }
}

fn leading_number(v: &str) -> Option<u64> {
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn collect_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

/// The OpenAI-shaped error body the mock answers for `mock:status=<status>`.
/// `quota` selects `insufficient_quota` for 429; `context` selects
/// `context_length_exceeded` for 400.
pub fn error_body(status: u16, quota: bool, context: bool) -> Value {
    let (message, kind, code): (&str, &str, Value) = match status {
        400 if context => (
            "Your input exceeds the context window of this model. Please adjust your input and try again.",
            "invalid_request_error",
            json!("context_length_exceeded"),
        ),
        400 => (
            "Invalid request (mock): unsupported parameter.",
            "invalid_request_error",
            json!("invalid_request"),
        ),
        401 => (
            "Incorrect API key provided (mock).",
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        403 => (
            "Country, region, or territory not supported (mock).",
            "invalid_request_error",
            json!("unsupported_country_region_territory"),
        ),
        404 => (
            "The model `mock-missing` does not exist (mock).",
            "invalid_request_error",
            json!("model_not_found"),
        ),
        429 if quota => (
            "You exceeded your current quota, please check your plan and billing details (mock).",
            "insufficient_quota",
            json!("insufficient_quota"),
        ),
        429 => (
            "Rate limit reached for requests (mock).",
            "requests",
            json!("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request (mock).",
            "server_error",
            json!("server_error"),
        ),
        502 => ("Bad gateway (mock).", "server_error", Value::Null),
        503 => (
            "The server is overloaded. Please try again later (mock).",
            "service_unavailable_error",
            json!("server_is_overloaded"),
        ),
        _ => ("Mock upstream error.", "server_error", Value::Null),
    };
    json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })
}

// ---------------------------------------------------------------------------
// Request handling

async fn handle_responses(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let defaults = shared.directives.lock().unwrap().clone();
    let directives = Directives::parse_after(&defaults, &body);
    let request = RecordedRequest {
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let model = request.model().unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    let echo_text = request.last_user_text().unwrap_or_default();
    let tool_outputs = request.trailing_tool_outputs();
    let rounds_done = request.input_items("function_call_output").len();
    let users = request
        .input_texts()
        .iter()
        .filter(|(role, _)| role == "user")
        .count();
    shared.requests.lock().unwrap().push(request);
    shared.request_count.send_modify(|count| *count += 1);

    if let Some(status) = directives.status.filter(|s| *s >= 400) {
        sleep_or_shutdown(&shared.shutdown, directives.first_delay_ms).await;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = error_body(status.as_u16(), directives.quota, directives.context);
        let mut response = (status, axum::Json(body)).into_response();
        add_rate_limit_headers(&mut response, directives.used);
        return response;
    }

    // Counted as open (and as cancelled if hyper drops this future because the
    // client left) from here on, including the first-byte delay.
    let guard = StreamGuard::new(shared.clone());
    if !sleep_or_shutdown(&shared.shutdown, directives.first_delay_ms).await {
        guard.finished.store(true, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }

    let seq = shared.response_seq.fetch_add(1, Ordering::SeqCst) + 1;
    let mut directives = directives;
    if users < directives.min_users {
        directives.calls.clear();
    }
    let more_rounds = directives.steps.is_some_and(|steps| rounds_done < steps);
    let reply = if !tool_outputs.is_empty() && more_rounds {
        directives.reply.clone().unwrap_or_default()
    } else if !tool_outputs.is_empty() {
        directives.calls.clear();
        format!("{TOOL_REPLY_PREFIX}{}", tool_outputs.join(" | "))
    } else if directives.echo {
        echo_text
    } else {
        directives
            .reply
            .clone()
            .unwrap_or_else(|| DEFAULT_REPLY.to_owned())
    };
    let plan = Plan {
        response_id: format!("resp_mock_{seq}"),
        item_id: format!("msg_mock_{seq}"),
        seq,
        with_message: directives.calls.is_empty() || directives.reply.is_some(),
        model,
        deltas: split_text(&reply, directives.deltas.unwrap_or(DEFAULT_DELTAS)),
        reply,
        directives,
    };

    let used = plan.directives.used;
    let (tx, rx) = mpsc::channel(16);
    let finished = guard.finished.clone();
    tokio::spawn(produce(plan, tx, finished, shared.shutdown.clone()));
    let body = Body::from_stream(GuardedStream { rx, _guard: guard });
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap();
    add_rate_limit_headers(&mut response, used);
    response
}

/// The rate-limit headers Codex reads from a model response (`mock:used=P`), with the reset times
/// relative to `now` (unix seconds): the primary window (300 minutes, P % used, resetting in an hour)
/// and the secondary one (10080 minutes, 10 % used, resetting in a week).
pub fn rate_limit_headers(used_percent: u64, now: u64) -> Vec<(&'static str, String)> {
    vec![
        ("x-codex-primary-used-percent", used_percent.to_string()),
        ("x-codex-primary-window-minutes", "300".to_string()),
        ("x-codex-primary-reset-at", (now + 3600).to_string()),
        ("x-codex-primary-reset-after-seconds", "3600".to_string()),
        ("x-codex-secondary-used-percent", "10".to_string()),
        ("x-codex-secondary-window-minutes", "10080".to_string()),
        (
            "x-codex-secondary-reset-at",
            (now + 7 * 24 * 3600).to_string(),
        ),
        (
            "x-codex-secondary-reset-after-seconds",
            (7 * 24 * 3600).to_string(),
        ),
    ]
}

fn add_rate_limit_headers(response: &mut Response, used: Option<u64>) {
    let Some(used) = used else { return };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (name, value) in rate_limit_headers(used, now) {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
}

/// Sleeps `ms` unless the mock shuts down first (returns false then).
async fn sleep_or_shutdown(shutdown: &CancellationToken, ms: u64) -> bool {
    if ms == 0 {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Splits `text` into `n` chunks of nearly equal char counts (fewer if the
/// text has fewer chars; none for an empty text).
fn split_text(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let n = n.max(1).min(chars.len());
    if n == 0 {
        return Vec::new();
    }
    let (base, extra) = (chars.len() / n, chars.len() % n);
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for i in 0..n {
        let len = base + usize::from(i < extra);
        out.push(chars[at..at + len].iter().collect());
        at += len;
    }
    out
}

struct Plan {
    response_id: String,
    item_id: String,
    /// The response's number, for [`call_id`].
    seq: usize,
    /// Whether a text message is sent (always, unless only calls were asked for).
    with_message: bool,
    model: String,
    reply: String,
    deltas: Vec<String>,
    directives: Directives,
}

type Chunk = Result<Bytes, io::Error>;

/// Pause before `mock:cut` drops the connection, so the deltas reach the client.
const CUT_FLUSH_MS: u64 = 50;

/// Why the producer stopped early.
enum Stop {
    ClientGone,
    Shutdown,
}

struct Producer {
    tx: mpsc::Sender<Chunk>,
    shutdown: CancellationToken,
    sequence: u64,
}

impl Producer {
    async fn event(&mut self, mut data: Value) -> Result<(), Stop> {
        let kind = data["type"].as_str().unwrap_or_default().to_owned();
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        let frame = format!("event: {kind}\ndata: {data}\n\n");
        self.tx
            .send(Ok(Bytes::from(frame)))
            .await
            .map_err(|_| Stop::ClientGone)
    }

    async fn pause(&self, ms: u64) -> Result<(), Stop> {
        if ms == 0 {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(()),
            _ = self.tx.closed() => Err(Stop::ClientGone),
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown),
        }
    }

    /// Waits until the client disconnects or the mock shuts down.
    async fn hang(&self) -> Stop {
        tokio::select! {
            _ = self.tx.closed() => Stop::ClientGone,
            _ = self.shutdown.cancelled() => Stop::Shutdown,
        }
    }
}

async fn produce(
    plan: Plan,
    tx: mpsc::Sender<Chunk>,
    finished: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut producer = Producer {
        tx,
        shutdown,
        sequence: 0,
    };
    match stream_events(&plan, &mut producer).await {
        Ok(()) | Err(Stop::Shutdown) => finished.store(true, Ordering::SeqCst),
        Err(Stop::ClientGone) => {}
    }
}

async fn stream_events(plan: &Plan, p: &mut Producer) -> Result<(), Stop> {
    let d = &plan.directives;
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_secs())
        .unwrap_or(0);
    let response = |status: &str| {
        json!({
            "id": plan.response_id,
            "object": "response",
            "created_at": created_at,
            "status": status,
            "model": plan.model,
            "output": [],
        })
    };
    p.event(json!({"type": "response.created", "response": response("in_progress")}))
        .await?;

    if d.hang {
        return Err(p.hang().await);
    }

    if let Some(code) = &d.failed {
        let mut failed = response("failed");
        failed["error"] = json!({
            "code": code.as_deref().unwrap_or("server_error"),
            "message": FAILED_MESSAGE,
        });
        p.event(json!({"type": "response.failed", "response": failed}))
            .await?;
        return Ok(());
    }

    let mut output = Vec::new();
    if let Some(summary) = &d.reasoning {
        output.push(stream_reasoning(plan, p, summary).await?);
    }
    if plan.with_message {
        match stream_message(plan, p).await? {
            Some(item) => output.push(item),
            None => return Ok(()),
        }
    }
    for (index, (name, arguments)) in d.calls.iter().enumerate() {
        let item = stream_call(plan, p, output.len(), index, name, arguments).await?;
        output.push(item);
    }

    if d.eof {
        // Clean end of the stream, but without `response.completed`.
        return Ok(());
    }

    let mut completed = response("completed");
    completed["output"] = json!(output);
    completed["usage"] = json!({
        "input_tokens": USAGE_INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": USAGE_CACHED_TOKENS},
        "output_tokens": USAGE_OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": USAGE_REASONING_TOKENS},
        "total_tokens": USAGE_TOTAL_TOKENS,
    });
    p.event(json!({"type": "response.completed", "response": completed}))
        .await
}

/// Streams a `reasoning` item at output index 0 whose summary is `summary`, in two deltas.
async fn stream_reasoning(plan: &Plan, p: &mut Producer, summary: &str) -> Result<Value, Stop> {
    let id = format!("rs_mock_{}", plan.seq);
    p.event(json!({
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {"type": "reasoning", "id": id, "summary": []},
    }))
    .await?;
    p.event(json!({
        "type": "response.reasoning_summary_part.added",
        "item_id": id,
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": ""},
    }))
    .await?;
    for delta in split_text(summary, 2) {
        p.pause(plan.directives.delay_ms).await?;
        p.event(json!({
            "type": "response.reasoning_summary_text.delta",
            "item_id": id,
            "output_index": 0,
            "summary_index": 0,
            "delta": delta,
        }))
        .await?;
    }
    p.event(json!({
        "type": "response.reasoning_summary_text.done",
        "item_id": id,
        "output_index": 0,
        "summary_index": 0,
        "text": summary,
    }))
    .await?;
    p.event(json!({
        "type": "response.reasoning_summary_part.done",
        "item_id": id,
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": summary},
    }))
    .await?;
    let item = json!({
        "type": "reasoning",
        "id": id,
        "summary": [{"type": "summary_text", "text": summary}],
    });
    p.event(json!({"type": "response.output_item.done", "output_index": 0, "item": item}))
        .await?;
    Ok(item)
}

/// Streams the text message (at output index 0, or 1 after a reasoning item) and returns its finished item; `None` after `mock:cut`
/// aborted the connection.
async fn stream_message(plan: &Plan, p: &mut Producer) -> Result<Option<Value>, Stop> {
    let d = &plan.directives;
    let index = usize::from(d.reasoning.is_some());
    let item_in_progress = json!({
        "type": "message",
        "id": plan.item_id,
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    });
    p.event(json!({
        "type": "response.output_item.added",
        "output_index": index,
        "item": item_in_progress,
    }))
    .await?;
    p.event(json!({
        "type": "response.content_part.added",
        "item_id": plan.item_id,
        "output_index": index,
        "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": []},
    }))
    .await?;

    let delta_limit = if d.cut { 2 } else { usize::MAX };
    for delta in plan.deltas.iter().take(delta_limit) {
        p.pause(d.delay_ms).await?;
        p.event(json!({
            "type": "response.output_text.delta",
            "item_id": plan.item_id,
            "output_index": index,
            "content_index": 0,
            "delta": delta,
        }))
        .await?;
    }

    if d.cut {
        // Let hyper flush the deltas first (it discards buffered output when
        // the body errors), then an error chunk makes it abort the connection
        // without the final chunk of the chunked encoding: the client sees a
        // transport error.
        p.pause(CUT_FLUSH_MS).await?;
        let _ =
            p.tx.send(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock:cut",
            )))
            .await;
        return Ok(None);
    }

    p.event(json!({
        "type": "response.output_text.done",
        "item_id": plan.item_id,
        "output_index": index,
        "content_index": 0,
        "text": plan.reply,
    }))
    .await?;
    let part = json!({"type": "output_text", "text": plan.reply, "annotations": []});
    p.event(json!({
        "type": "response.content_part.done",
        "item_id": plan.item_id,
        "output_index": index,
        "content_index": 0,
        "part": part,
    }))
    .await?;
    let item = json!({
        "type": "message",
        "id": plan.item_id,
        "status": "completed",
        "role": "assistant",
        "content": [part],
    });
    p.event(json!({
        "type": "response.output_item.done",
        "output_index": index,
        "item": item,
    }))
    .await?;
    Ok(Some(item))
}

/// Streams one `function_call` item (its arguments in two deltas) and returns the finished item.
async fn stream_call(
    plan: &Plan,
    p: &mut Producer,
    output_index: usize,
    index: usize,
    name: &str,
    arguments: &str,
) -> Result<Value, Stop> {
    let item_id = format!("fc_mock_{}_{index}", plan.seq);
    let call = |status: &str, arguments: &str| {
        json!({
            "type": "function_call",
            "id": item_id,
            "status": status,
            "call_id": call_id(plan.seq, index),
            "name": name,
            "arguments": arguments,
        })
    };
    p.event(json!({
        "type": "response.output_item.added",
        "output_index": output_index,
        "item": call("in_progress", ""),
    }))
    .await?;
    for delta in split_text(arguments, 2) {
        p.pause(plan.directives.delay_ms).await?;
        p.event(json!({
            "type": "response.function_call_arguments.delta",
            "item_id": item_id,
            "output_index": output_index,
            "delta": delta,
        }))
        .await?;
    }
    p.event(json!({
        "type": "response.function_call_arguments.done",
        "item_id": item_id,
        "output_index": output_index,
        "arguments": arguments,
    }))
    .await?;
    let item = call("completed", arguments);
    p.event(json!({
        "type": "response.output_item.done",
        "output_index": output_index,
        "item": item,
    }))
    .await?;
    Ok(item)
}

/// Counts an open stream; on drop, decrements it and counts a cancellation
/// unless the mock had finished the stream.
struct StreamGuard {
    shared: Arc<Shared>,
    finished: Arc<AtomicBool>,
}

impl StreamGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open_streams.fetch_add(1, Ordering::SeqCst);
        StreamGuard {
            shared,
            finished: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            self.shared.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.open_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The response body: the producer's frames, holding the guard so that
/// hyper dropping the body (client gone) is observed.
struct GuardedStream {
    rx: mpsc::Receiver<Chunk>,
    _guard: StreamGuard,
}

impl Stream for GuardedStream {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.rx.poll_recv(cx)
    }
}
