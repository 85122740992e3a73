//! End-to-end: every row of the API error table, through the real proxy binary, the real Codex CLI and
//! the mock model (fake `codex` scripts only for faults the real CLI cannot show). Every error body is
//! `{"error":{"message","type","param","code"}}`; after each fault the same profile still serves a normal
//! request, and no Codex process outlives its request.

use crate::support;

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{json, Value};
use support::app::{chat_body, App, TestEnv};
use support::fake_codex;
use support::mock_model::{DEFAULT_REPLY, FAILED_MESSAGE};

/// An error response: status, headers and the parsed body.
struct ErrorReply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl ErrorReply {
    async fn read(response: reqwest::Response) -> ErrorReply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("error body is not JSON ({status}): {text}"));
        ErrorReply {
            status,
            headers,
            body,
        }
    }

    /// Checks the status and the OpenAI error shape; returns the message.
    fn expect(&self, status: u16, kind: &str, code: Option<&str>) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        check_error_object(&self.body, kind, code)
    }

    fn param(&self) -> Option<&str> {
        self.body["error"]["param"].as_str()
    }

    fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

/// Checks `{"error":{"message","type","param","code"}}` (exactly those keys); returns the message.
fn check_error_object(body: &Value, kind: &str, code: Option<&str>) -> String {
    let error = body
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no error object: {body}"));
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{body}");
    assert_eq!(error["type"], kind, "{body}");
    if let Some(code) = code {
        assert_eq!(error["code"], code, "{body}");
    }
    assert!(
        error["param"].is_null() || error["param"].is_string(),
        "{body}"
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{body}");
    message.to_string()
}

async fn chat_error(app: &App, body: &Value) -> ErrorReply {
    ErrorReply::read(app.chat(body).await).await
}

async fn chat_error_with_key(app: &App, body: &Value, key: Option<&str>) -> ErrorReply {
    ErrorReply::read(app.chat_with_key(body, key).await).await
}

/// POSTs raw bytes as JSON to the chat endpoint.
async fn post_raw(app: &App, bytes: impl Into<reqwest::Body>) -> ErrorReply {
    let response = App::client()
        .post(app.url("/v1/chat/completions"))
        .header(CONTENT_TYPE, "application/json")
        .body(bytes)
        .send()
        .await
        .unwrap();
    ErrorReply::read(response).await
}

/// A normal request on `model` succeeds with `reply`.
async fn assert_serves(app: &App, model: &str, reply: &str) {
    let (status, body) = app.chat_json(&chat_body(model, "Say hello")).await;
    assert_eq!(status, 200, "{model}: {body}");
    assert_eq!(body["choices"][0]["message"]["content"], reply, "{body}");
}

/// Waits (up to 2 s) until the profile's `in_flight` and `running` in `/metrics` are 0; returns the last
/// metrics.
async fn wait_in_flight_zero(app: &App, profile: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let metrics = app.get_json("/metrics").await.1;
        // The request's slot and its run are given back one after the other: wait for both.
        let figures = &metrics["profiles"][profile];
        let idle = figures["in_flight"] == 0 && figures["running"].as_u64().unwrap_or(0) == 0;
        if idle || Instant::now() > deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that no process of this test but the server is alive (within `timeout`).
async fn assert_no_codex_left(env: &TestEnv, app: &App, timeout: Duration) {
    let left = env.wait_no_processes(&[app.pid()], timeout).await;
    assert!(left.is_empty(), "Codex processes left behind: {left:?}");
}

fn one_profile(env: &TestEnv, server: &str, name: &str, extra: &str) -> String {
    format!("{}{}", env.server(server), env.profile(name, extra))
}

#[tokio::test]
async fn invalid_requests_are_400_and_never_reach_codex() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &one_profile(&env, "", "default", "")).await;
    let user = json!([{"role": "user", "content": "hi"}]);

    // Malformed JSON and a body that is not an object.
    for raw in [r#"{"model":"default","messages":["#, "[]", "", "not json"] {
        let reply = post_raw(&app, raw.to_string()).await;
        reply.expect(400, "invalid_request_error", None);
        assert_eq!(reply.param(), None, "{raw}: {}", reply.body);
    }

    // Wrong types, missing and empty fields, unsupported parameters: the offending parameter is named.
    let cases = [
        (json!({"model": 5, "messages": user}), "model"),
        (json!({"model": "default", "messages": "hi"}), "messages"),
        (json!({"model": "default"}), "messages"),
        (json!({"model": "default", "messages": []}), "messages"),
        (json!({"messages": user}), "model"),
        (
            json!({"model": "default", "messages": user, "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": "default", "messages": user, "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "default", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "default", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (json!({"model": "default", "messages": user, "n": 0}), "n"),
        (
            json!({"model": "default", "messages": user,
                   "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
            "tools",
        ),
        (
            json!({"model": "default", "messages": user, "response_format": {"type": "xml"}}),
            "response_format.type",
        ),
        (
            json!({"model": "default", "messages": user,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"model": "default", "messages": user, "metadata": {"cwd": 3}}),
            "metadata.cwd",
        ),
    ];
    for (body, param) in &cases {
        let reply = chat_error(&app, body).await;
        reply.expect(400, "invalid_request_error", None);
        assert_eq!(reply.param(), Some(*param), "{body}: {}", reply.body);
    }

    // metadata.cwd outside the profile's roots, or not a usable directory.
    let outside = env.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, env.workspace.join("link-out")).unwrap();
    std::fs::write(env.workspace.join("file.txt"), "x").unwrap();
    let dotdot = format!("{}/../outside", env.workspace.display());
    let bad_dirs = [
        (dotdot, "outside the allowed roots"),
        (
            env.workspace.join("link-out").display().to_string(),
            "outside the allowed roots",
        ),
        (
            env.workspace.join("file.txt").display().to_string(),
            "not a directory",
        ),
        (
            env.workspace.join("missing").display().to_string(),
            "does not exist",
        ),
        ("workspace/sub".to_string(), "absolute"),
        (outside.display().to_string(), "outside the allowed roots"),
    ];
    for (cwd, why) in &bad_dirs {
        let mut body = chat_body("default", "hi");
        body["metadata"] = json!({ "cwd": cwd });
        let reply = chat_error(&app, &body).await;
        let message = reply.expect(400, "invalid_request_error", None);
        assert_eq!(reply.param(), Some("metadata.cwd"), "{cwd}: {}", reply.body);
        assert!(message.contains(why), "{cwd}: {message}");
    }

    // None of these started Codex.
    assert_eq!(env.mock.request_count(), 0);
    assert!(env.processes(&[app.pid()]).is_empty());
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["errors_by_status"]["400"], 4 + cases.len() + 6);
    assert_serves(&app, "default", DEFAULT_REPLY).await;
}

#[tokio::test]
async fn unknown_model_is_404_and_oversized_body_is_413() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}{}",
        env.server("max_request_bytes = 4096"),
        env.profile("alpha", "aliases = [\"alpha-latest\"]"),
        env.profile("beta", ""),
    );
    let app = App::start(&env, &config).await;

    let reply = chat_error(&app, &chat_body("gamma", "hi")).await;
    let message = reply.expect(404, "invalid_request_error", Some("model_not_found"));
    assert_eq!(reply.param(), Some("model"));
    for name in ["gamma", "alpha", "alpha-latest", "beta"] {
        assert!(message.contains(name), "{name} missing: {message}");
    }

    // Over max_request_bytes, with a Content-Length and chunked (no length up front).
    let big = chat_body("alpha", &"x".repeat(8 * 1024)).to_string();
    let reply = post_raw(&app, big.clone()).await;
    let message = reply.expect(413, "invalid_request_error", None);
    assert!(message.contains("4096"), "{message}");
    let chunks: Vec<Result<String, std::io::Error>> = big
        .as_bytes()
        .chunks(1024)
        .map(|chunk| Ok(String::from_utf8(chunk.to_vec()).unwrap()))
        .collect();
    let reply = post_raw(
        &app,
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    reply.expect(413, "invalid_request_error", None);

    assert_eq!(env.mock.request_count(), 0);
    // Just under the limit is served.
    assert_serves(&app, "alpha-latest", DEFAULT_REPLY).await;
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["errors_by_status"]["404"], 1);
    assert_eq!(metrics["errors_by_status"]["413"], 2);
}

#[tokio::test]
async fn keys_give_401_and_403_and_no_route_bypasses_a_profile_key() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}{}",
        env.server("api_keys = [\"k1\"]\nfallback_profile = \"restricted\""),
        env.profile("open", ""),
        env.profile(
            "restricted",
            "api_keys = [\"k2\"]\naliases = [\"restricted-alias\"]\nmatch = \"^secret-\""
        ),
    );
    let app = App::start(&env, &config).await;

    // 401: no bearer, a wrong bearer, then another scheme.
    for key in [None, Some("wrong"), Some("k1x")] {
        let reply = chat_error_with_key(&app, &chat_body("open", "hi"), key).await;
        reply.expect(401, "authentication_error", None);
        assert_eq!(reply.header(WWW_AUTHENTICATE), Some("Bearer"), "{key:?}");
    }
    let response = App::client()
        .post(app.url("/v1/chat/completions"))
        .header("authorization", "Basic azE6")
        .json(&chat_body("open", "hi"))
        .send()
        .await
        .unwrap();
    let reply = ErrorReply::read(response).await;
    reply.expect(401, "authentication_error", None);
    assert_eq!(reply.header(WWW_AUTHENTICATE), Some("Bearer"));

    // 403: the server key may not use the restricted profile by its name, an alias, its `match`
    // regex, or through fallback routing.
    for model in [
        "restricted",
        "restricted-alias",
        "secret-model",
        "unlisted-model",
    ] {
        let reply = chat_error_with_key(&app, &chat_body(model, "hi"), Some("k1")).await;
        let message = reply.expect(403, "permission_error", None);
        assert!(message.contains(model), "{model}: {message}");
    }
    assert_eq!(
        env.mock.request_count(),
        0,
        "a refused request reached Codex"
    );

    let key_ok = |model: &'static str, key: &'static str| {
        let app = &app;
        async move {
            let response = app.chat_with_key(&chat_body(model, "hi"), Some(key)).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 200, "{model} with {key}: {body}");
            assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY);
        }
    };
    key_ok("open", "k1").await;
    key_ok("restricted-alias", "k2").await;
    key_ok("unlisted-model", "k2").await;
    assert_eq!(env.mock.request_count(), 3);
    // With keys configured, /metrics needs a server key.
    let metrics: Value = App::client()
        .get(app.url("/metrics"))
        .bearer_auth("k1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metrics["errors_by_status"]["401"], 4);
    assert_eq!(metrics["errors_by_status"]["403"], 4);
}

#[tokio::test]
async fn profile_keys_without_server_keys_and_the_404_list_hides_restricted_models() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}{}",
        env.server(""),
        env.profile("open", ""),
        env.profile(
            "restricted",
            "api_keys = [\"k2\"]\naliases = [\"hidden-alias\"]\nmatch = \"^secret-\""
        ),
    );
    let app = App::start(&env, &config).await;
    // No key at all for a keyed profile: 401 (via the name and the regex).
    for model in ["restricted", "secret-x"] {
        let reply = chat_error_with_key(&app, &chat_body(model, "hi"), None).await;
        reply.expect(401, "authentication_error", None);
        assert_eq!(reply.header(WWW_AUTHENTICATE), Some("Bearer"));
    }
    // Some other key: 403.
    let reply = chat_error_with_key(&app, &chat_body("hidden-alias", "hi"), Some("k9")).await;
    reply.expect(403, "permission_error", None);
    // A 404 lists only the models the caller may use.
    let reply = chat_error_with_key(&app, &chat_body("nothing", "hi"), None).await;
    let message = reply.expect(404, "invalid_request_error", Some("model_not_found"));
    assert!(message.contains("open"), "{message}");
    assert!(
        !message.contains("restricted") && !message.contains("hidden-alias"),
        "{message}"
    );
    let reply = chat_error_with_key(&app, &chat_body("nothing", "hi"), Some("k2")).await;
    let message = reply.expect(404, "invalid_request_error", Some("model_not_found"));
    assert!(message.contains("hidden-alias"), "{message}");
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn full_queue_and_queue_timeout_are_429_with_retry_after() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}{}",
        env.server(""),
        env.profile("solo", "max_concurrency = 1\nmax_queue_size = 0"),
        env.profile(
            "waiting",
            "max_concurrency = 1\nmax_queue_size = 1\nqueue_timeout_seconds = 1"
        ),
    );
    let app = App::start(&env, &config).await;
    let slow = |model: &'static str| {
        let url = app.url("/v1/chat/completions");
        tokio::spawn(async move {
            let response = App::client()
                .post(url)
                .json(&chat_body(model, "slow mock:first_delay_ms=3000"))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        })
    };
    let solo = slow("solo");
    let waiting = slow("waiting");
    assert!(env.mock.wait_for_requests(2, Duration::from_secs(20)).await);

    // max_queue_size = 0: refused at once.
    let reply = chat_error(&app, &chat_body("solo", "hi")).await;
    let message = reply.expect(429, "rate_limit_error", Some("queue_full"));
    assert!(message.contains("queue is full"), "{message}");
    assert_eq!(reply.header(RETRY_AFTER), Some("1"));

    // max_queue_size = 1, queue_timeout_seconds = 1: queued, then refused.
    let reply = chat_error(&app, &chat_body("waiting", "hi")).await;
    let message = reply.expect(429, "rate_limit_error", None);
    assert!(message.contains("within 1 s"), "{message}");
    assert_eq!(reply.header(RETRY_AFTER), Some("1"));

    // The slow requests were not disturbed, and the freed slots serve again.
    for (name, task) in [("solo", solo), ("waiting", waiting)] {
        let (status, text) = task.await.unwrap();
        assert_eq!(status, 200, "{name}: {text}");
    }
    assert_serves(&app, "solo", DEFAULT_REPLY).await;
    assert_serves(&app, "waiting", DEFAULT_REPLY).await;
    assert_eq!(env.mock.request_count(), 4);
}

#[tokio::test]
async fn upstream_rate_limit_quota_and_context_errors_keep_their_meaning() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &one_profile(&env, "", "default", "")).await;

    let reply = chat_error(&app, &chat_body("default", "mock:status=429")).await;
    let message = reply.expect(429, "rate_limit_error", Some("rate_limit_exceeded"));
    assert!(message.contains("429 Too Many Requests"), "{message}");
    assert!(reply.header(RETRY_AFTER).is_some(), "{:?}", reply.headers);
    assert_serves(&app, "default", DEFAULT_REPLY).await;

    let reply = chat_error(&app, &chat_body("default", "mock:status=429 mock:quota")).await;
    let message = reply.expect(429, "rate_limit_error", Some("insufficient_quota"));
    assert!(message.contains("Quota exceeded"), "{message}");
    assert_serves(&app, "default", DEFAULT_REPLY).await;

    let reply = chat_error(&app, &chat_body("default", "mock:status=400 mock:context")).await;
    let message = reply.expect(
        400,
        "invalid_request_error",
        Some("context_length_exceeded"),
    );
    assert!(message.contains("context window"), "{message}");
    assert_serves(&app, "default", DEFAULT_REPLY).await;
    assert_no_codex_left(&env, &app, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn codex_failures_are_502_with_codex_text_in_band_after_sse_headers() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &one_profile(&env, "", "default", "")).await;

    let cases = [
        ("mock:status=500", "experiencing high demand"),
        ("mock:status=401", "401 Unauthorized"),
        ("mock:cut", "stream disconnected before completion"),
        ("mock:failed", FAILED_MESSAGE),
    ];
    for (prompt, codex_text) in cases {
        let reply = chat_error(&app, &chat_body("default", prompt)).await;
        let message = reply.expect(502, "server_error", Some("codex_failed"));
        assert!(message.contains(codex_text), "{prompt}: {message}");
        assert_serves(&app, "default", DEFAULT_REPLY).await;
    }

    // Streaming: the SSE headers are out before Codex fails, so the error comes in-band and ends the
    // stream (no [DONE]).
    let mut body = chat_body("default", "mock:status=500");
    body["stream"] = json!(true);
    let response = app.chat(&body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let transcript = App::sse(response).await;
    assert!(!transcript.done(), "{:?}", transcript.data);
    let last: Value = serde_json::from_str(transcript.data.last().unwrap()).unwrap();
    let message = check_error_object(&last, "server_error", Some("codex_failed"));
    assert!(message.contains("experiencing high demand"), "{message}");
    let chunks = transcript.chunks();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|chunk| chunk["object"] == "chat.completion.chunk"));

    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["profiles"]["default"]["errors_by_status"]["502"], 5);
    assert_eq!(metrics["profiles"]["default"]["ok"], 4);
    assert_no_codex_left(&env, &app, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn garbage_output_and_a_crash_mid_stream_are_502() {
    let env = TestEnv::new().await;
    let fake = fake_codex::write(env.path(), "codex");
    let config = format!(
        "[server]\ncodex_bin = {:?}\n{}",
        fake.display().to_string(),
        env.profile("default", "")
    );
    let app = App::start(&env, &config).await;
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["codex"]["version"], fake_codex::FAKE_VERSION);

    let reply = chat_error(&app, &chat_body("default", "fake:garbage")).await;
    let message = reply.expect(502, "server_error", Some("codex_failed"));
    assert!(message.contains("non-JSON"), "{message}");
    assert!(message.contains(fake_codex::GARBAGE_LINE), "{message}");
    assert_serves(&app, "default", fake_codex::FAKE_REPLY).await;

    let reply = chat_error(&app, &chat_body("default", "fake:crash")).await;
    let message = reply.expect(502, "server_error", Some("codex_failed"));
    assert!(message.contains(fake_codex::CRASH_MESSAGE), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert_serves(&app, "default", fake_codex::FAKE_REPLY).await;

    // The same crash while streaming: in-band.
    let mut body = chat_body("default", "fake:crash");
    body["stream"] = json!(true);
    let transcript = App::sse(app.chat(&body).await).await;
    let last: Value = serde_json::from_str(transcript.data.last().unwrap()).unwrap();
    let message = check_error_object(&last, "server_error", Some("codex_failed"));
    assert!(message.contains(fake_codex::CRASH_MESSAGE), "{message}");
    assert_no_codex_left(&env, &app, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_missing_or_non_executable_codex_is_503() {
    let env = TestEnv::new().await;
    let missing = env.path().join("no-such-codex");
    let app = App::start(
        &env,
        &format!(
            "[server]\ncodex_bin = {:?}\n{}",
            missing.display().to_string(),
            env.profile("default", "")
        ),
    )
    .await;
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["profiles"]["default"]["ready"], false);
    let reason = ready["profiles"]["default"]["reason"].as_str().unwrap();
    assert!(reason.contains("was not found"), "{reason}");
    let reply = chat_error(&app, &chat_body("default", "hi")).await;
    let message = reply.expect(503, "server_error", Some("codex_unavailable"));
    assert!(message.contains("was not found"), "{message}");
    drop(app);

    let plain_file = env.path().join("codex-not-executable");
    std::fs::write(&plain_file, "#!/bin/sh\necho codex-cli 0.0.0\n").unwrap();
    let app = App::start(
        &env,
        &format!(
            "[server]\ncodex_bin = {:?}\n{}",
            plain_file.display().to_string(),
            env.profile("default", "")
        ),
    )
    .await;
    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 503, "{ready}");
    let reason = ready["profiles"]["default"]["reason"].as_str().unwrap();
    assert!(reason.contains("not executable"), "{reason}");
    let reply = chat_error(&app, &chat_body("default", "hi")).await;
    let message = reply.expect(503, "server_error", Some("codex_unavailable"));
    assert!(message.contains("not executable"), "{message}");
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn timeout_is_504_and_kills_the_codex_process_group() {
    let env = TestEnv::new().await;
    // Long enough that a normal run fits even on a busy machine, short of the mock's delay.
    let app = App::start(
        &env,
        &one_profile(&env, "", "default", "timeout_seconds = 8"),
    )
    .await;
    let reply = chat_error(&app, &chat_body("default", "mock:first_delay_ms=20000")).await;
    let message = reply.expect(504, "server_error", Some("timeout"));
    assert!(message.contains("8 s"), "{message}");
    assert_eq!(env.mock.request_count(), 1);
    assert_no_codex_left(&env, &app, Duration::from_secs(2)).await;

    assert_serves(&app, "default", DEFAULT_REPLY).await;
    let metrics = wait_in_flight_zero(&app, "default").await;
    assert_eq!(metrics["profiles"]["default"]["errors_by_status"]["504"], 1);
    assert_eq!(metrics["profiles"]["default"]["running"], 0);
}

#[tokio::test]
async fn a_codex_that_hangs_before_any_output_is_504_and_killed() {
    let env = TestEnv::new().await;
    let fake = fake_codex::write(env.path(), "codex");
    let config = format!(
        "[server]\ncodex_bin = {:?}\n{}",
        fake.display().to_string(),
        env.profile("default", "timeout_seconds = 1")
    );
    let app = App::start(&env, &config).await;
    let runs_before = fake_codex::runs(env.path());
    let reply = chat_error(&app, &chat_body("default", "fake:hang")).await;
    let message = reply.expect(504, "server_error", Some("timeout"));
    assert!(message.contains("1 s"), "{message}");
    assert_eq!(fake_codex::runs(env.path()), runs_before + 1);
    // The script and the `sleep` it started are both gone: the whole group was killed.
    assert_no_codex_left(&env, &app, Duration::from_secs(2)).await;
    assert_serves(&app, "default", fake_codex::FAKE_REPLY).await;

    // Streaming: the SSE headers are out, so the timeout arrives in-band and ends the stream.
    let mut body = chat_body("default", "fake:hang");
    body["stream"] = json!(true);
    let transcript = App::sse(app.chat(&body).await).await;
    assert!(!transcript.done(), "{:?}", transcript.data);
    let last: Value = serde_json::from_str(transcript.data.last().unwrap()).unwrap();
    check_error_object(&last, "server_error", Some("timeout"));
    assert_no_codex_left(&env, &app, Duration::from_secs(2)).await;
    assert_serves(&app, "default", fake_codex::FAKE_REPLY).await;
    let metrics = wait_in_flight_zero(&app, "default").await;
    assert_eq!(metrics["profiles"]["default"]["errors_by_status"]["504"], 2);
}

#[tokio::test]
async fn client_disconnect_kills_codex_plain_and_streaming() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &one_profile(&env, "", "default", "")).await;

    for (round, stream) in [(1, false), (2, true)] {
        let mut body = chat_body("default", "mock:first_delay_ms=20000");
        body["stream"] = json!(stream);
        let url = app.url("/v1/chat/completions");
        let request = tokio::spawn(async move {
            let response = App::client().post(url).json(&body).send().await.unwrap();
            // Streaming: the headers and the role chunk arrive; then the client goes away.
            let mut response = response;
            let first = response.chunk().await.unwrap();
            assert!(first.is_some());
            std::future::pending::<()>().await;
        });
        assert!(
            env.mock
                .wait_for_requests(round, Duration::from_secs(20))
                .await
        );
        assert!(
            !env.processes(&[app.pid()]).is_empty(),
            "Codex should be running"
        );
        let metrics = app.get_json("/metrics").await.1;
        assert_eq!(metrics["profiles"]["default"]["in_flight"], 1);

        request.abort();
        let _ = request.await;
        assert_no_codex_left(&env, &app, Duration::from_secs(2)).await;
        let metrics = wait_in_flight_zero(&app, "default").await;
        assert_eq!(
            metrics["profiles"]["default"]["in_flight"], 0,
            "stream={stream}"
        );
        assert_eq!(metrics["profiles"]["default"]["running"], 0);
    }
    assert_serves(&app, "default", DEFAULT_REPLY).await;
}
