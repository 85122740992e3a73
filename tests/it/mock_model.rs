//! Tests of the mock Responses API server (`crates/proxy-test-support/src/mock_model.rs`):
//! the real native Codex CLI (`codex exec --json`, no proxy) is pointed at it
//! and must see the mock's replies, usage and failures; plus a few direct HTTP
//! checks of the mock's SSE stream and bookkeeping.

use crate::support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use support::mock_model::{
    MockModel, DEFAULT_REPLY, FAILED_MESSAGE, USAGE_CACHED_TOKENS, USAGE_INPUT_TOKENS,
    USAGE_OUTPUT_TOKENS, USAGE_REASONING_TOKENS, USAGE_TOTAL_TOKENS,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Upper bound for one `codex exec` run (normally well under a second).
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome of one `codex exec --json` run.
struct ExecRun {
    /// stdout JSONL events with the time since spawn at which each arrived.
    events: Vec<(Duration, Value)>,
    exit_code: Option<i32>,
    stderr: String,
    elapsed: Duration,
}

impl ExecRun {
    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|(_, e)| e["type"] == kind)
            .map(|(_, e)| e)
            .collect()
    }

    fn agent_messages(&self) -> Vec<String> {
        self.of_type("item.completed")
            .into_iter()
            .filter(|e| e["item"]["type"] == "agent_message")
            .filter_map(|e| e["item"]["text"].as_str().map(str::to_owned))
            .collect()
    }

    fn usage(&self) -> Option<&Value> {
        self.of_type("turn.completed").last().map(|e| &e["usage"])
    }

    fn failure(&self) -> Option<String> {
        self.of_type("turn.failed")
            .last()
            .and_then(|e| e["error"]["message"].as_str())
            .map(str::to_owned)
    }

    fn at(&self, kind: &str) -> Option<Duration> {
        self.events
            .iter()
            .find(|(_, e)| e["type"] == kind)
            .map(|(t, _)| *t)
    }

    fn describe(&self) -> String {
        let events: Vec<String> = self.events.iter().map(|(_, e)| e.to_string()).collect();
        format!(
            "exit={:?} elapsed={:?}\nstdout:\n{}\nstderr:\n{}",
            self.exit_code,
            self.elapsed,
            events.join("\n"),
            self.stderr
        )
    }
}

/// Runs the native codex binary against `mock` with `prompt` on stdin, a fresh
/// `CODEX_HOME` and an empty working directory.
async fn run_exec(mock: &MockModel, prompt: &str, extra: &[&str]) -> ExecRun {
    let tmp = env!("CARGO_TARGET_TMPDIR");
    let home = tempfile::Builder::new()
        .prefix("codex-home-")
        .tempdir_in(tmp)
        .unwrap();
    let cwd = tempfile::Builder::new()
        .prefix("codex-cwd-")
        .tempdir_in(tmp)
        .unwrap();
    let mut cmd = tokio::process::Command::new(support::native_codex_bin());
    cmd.args([
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--ignore-user-config",
        "--ignore-rules",
        "--sandbox",
        "read-only",
        "--ephemeral",
        "--disable",
        "unbounded_connection_retries",
    ])
    .arg("--cd")
    .arg(cwd.path());
    for value in mock.provider_overrides() {
        cmd.arg("-c").arg(value);
    }
    cmd.args(extra)
        .arg("-")
        .env("CODEX_HOME", home.path())
        .env("RUST_LOG", "off")
        .env_remove("RUST_BACKTRACE")
        .env_remove("OPENAI_API_KEY")
        .env_remove("CODEX_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);

    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn codex");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(prompt.as_bytes()).await.unwrap();
    drop(stdin);
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut buf = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut buf).await;
        buf
    });

    let run = async {
        let mut events = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("non-JSON stdout line {line:?}: {e}"));
            events.push((started.elapsed(), event));
        }
        let status = child.wait().await.unwrap();
        (events, status)
    };
    let (events, status) = tokio::time::timeout(EXEC_TIMEOUT, run)
        .await
        .expect("codex exec timed out");
    ExecRun {
        events,
        exit_code: status.code(),
        stderr: stderr_task.await.unwrap(),
        elapsed: started.elapsed(),
    }
}

#[tokio::test]
async fn default_reply_and_exact_usage() {
    let mock = MockModel::start().await;
    let run = run_exec(&mock, "Say hello.", &[]).await;
    let info = run.describe();

    assert_eq!(run.exit_code, Some(0), "{info}");
    assert_eq!(
        run.agent_messages(),
        vec![DEFAULT_REPLY.to_owned()],
        "{info}"
    );
    let usage = run
        .usage()
        .unwrap_or_else(|| panic!("no turn.completed\n{info}"));
    assert_eq!(usage["input_tokens"], USAGE_INPUT_TOKENS, "{info}");
    assert_eq!(usage["cached_input_tokens"], USAGE_CACHED_TOKENS, "{info}");
    assert_eq!(usage["output_tokens"], USAGE_OUTPUT_TOKENS, "{info}");
    assert_eq!(
        usage["reasoning_output_tokens"], USAGE_REASONING_TOKENS,
        "{info}"
    );
    assert_eq!(
        USAGE_INPUT_TOKENS + USAGE_OUTPUT_TOKENS,
        USAGE_TOTAL_TOKENS,
        "total = input + output, as in the Responses API"
    );
    assert_eq!(mock.request_count(), 1);
    assert_eq!(mock.open_streams(), 0);
    assert_eq!(mock.streams_cancelled(), 0);

    let request = &mock.requests()[0];
    assert_eq!(request.body["stream"], true);
    assert_eq!(
        request.input_texts().last(),
        Some(&("user".to_owned(), "Say hello.".to_owned()))
    );
    assert_eq!(request.header("originator").as_deref(), Some("codex_exec"));
    assert!(request.body_len() > 1000, "codex sends its whole prompt");
    eprintln!(
        "default exec: thread.started {:?}, turn.completed {:?}, exit {:?}",
        run.at("thread.started"),
        run.at("turn.completed"),
        run.elapsed
    );
}

#[tokio::test]
async fn echo_replies_with_the_last_user_message() {
    let mock = MockModel::start().await;
    let prompt = "mock:echo The quick brown fox jumps over the lazy dog.";
    let run = run_exec(&mock, prompt, &[]).await;
    let info = run.describe();

    assert_eq!(run.exit_code, Some(0), "{info}");
    assert_eq!(run.agent_messages(), vec![prompt.to_owned()], "{info}");
    let request = &mock.requests()[0];
    assert_eq!(request.last_user_text().as_deref(), Some(prompt));
    assert!(request.text().contains("lazy dog"));
}

#[tokio::test]
async fn status_500_fails_the_turn() {
    let mock = MockModel::start().await;
    let run = run_exec(&mock, "mock:status=500", &[]).await;
    let info = run.describe();

    assert_eq!(run.exit_code, Some(1), "{info}");
    assert!(run.usage().is_none(), "{info}");
    let message = run
        .failure()
        .unwrap_or_else(|| panic!("no turn.failed\n{info}"));
    assert!(message.contains("high demand"), "{info}");
    assert_eq!(mock.request_count(), 1, "retries are off");
}

#[tokio::test]
async fn records_the_model_passed_with_c_model() {
    let mock = MockModel::start().await;
    let run = run_exec(&mock, "hi", &["-c", "model=mock-model-xyz"]).await;
    assert_eq!(run.exit_code, Some(0), "{}", run.describe());

    assert!(mock.wait_for_requests(1, Duration::from_secs(1)).await);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].model().as_deref(), Some("mock-model-xyz"));
    // An unknown slug makes codex list its tools in `body.tools`.
    assert!(!requests[0].tool_names().is_empty());
}

/// The directive → outcome table documented at the top of
/// `crates/proxy-test-support/src/mock_model.rs`, re-measured against the real binary.
#[tokio::test]
async fn directive_outcomes_match_the_documented_table() {
    // (prompt, expected agent_message, expected turn.failed substring)
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        ("mock:reply=Pong_pong!", Some("Pong pong!"), None),
        (
            "mock:deltas=3 mock:delay_ms=100 mock:first_delay_ms=100",
            Some(DEFAULT_REPLY),
            None,
        ),
        ("mock:status=429", None, Some("429 Too Many Requests")),
        (
            "mock:status=429 mock:quota",
            None,
            Some("Quota exceeded. Check your plan and billing details."),
        ),
        (
            "mock:status=401",
            None,
            Some("unexpected status 401 Unauthorized: Incorrect API key provided (mock)."),
        ),
        ("mock:status=403", None, Some("unexpected status 403 Forbidden")),
        (
            "mock:status=400",
            None,
            Some(r#"{"error":{"code":"invalid_request""#),
        ),
        (
            "mock:status=400 mock:context",
            None,
            Some("Codex ran out of room in the model's context window"),
        ),
        ("mock:status=502", None, Some("unexpected status 502 Bad Gateway")),
        (
            "mock:status=503",
            None,
            Some("Selected model is at capacity. Please try a different model."),
        ),
        (
            "mock:hang",
            None,
            Some("stream disconnected before completion: idle timeout waiting for SSE"),
        ),
        (
            "mock:cut",
            None,
            Some("stream disconnected before completion: Transport error: network error: error decoding response body"),
        ),
        ("mock:failed", None, Some(FAILED_MESSAGE)),
        (
            "mock:eof",
            Some(DEFAULT_REPLY),
            Some("stream disconnected before completion: stream closed before response.completed"),
        ),
    ];

    let runs = futures_util::stream::iter(cases.iter().map(|case| async move {
        let mock = MockModel::start().await;
        let run = run_exec(&mock, case.0, &[]).await;
        (case, run, mock.request_count(), mock.open_streams())
    }))
    .buffer_unordered(3)
    .collect::<Vec<_>>()
    .await;

    for ((prompt, reply, failure), run, requests, open) in runs {
        let info = format!("directive {prompt:?}\n{}", run.describe());
        assert_eq!(requests, 1, "{info}");
        assert_eq!(open, 0, "{info}");
        match reply {
            Some(text) => assert_eq!(run.agent_messages(), vec![text.to_string()], "{info}"),
            None => assert!(run.agent_messages().is_empty(), "{info}"),
        }
        match failure {
            Some(needle) => {
                assert_eq!(run.exit_code, Some(1), "{info}");
                let message = run.failure().unwrap_or_else(|| panic!("{info}"));
                assert!(message.contains(needle), "{info}");
            }
            None => {
                assert_eq!(run.exit_code, Some(0), "{info}");
                assert!(run.usage().is_some(), "{info}");
            }
        }
        if *prompt == "mock:hang" {
            assert!(run.elapsed >= Duration::from_millis(2900), "{info}");
        }
    }
}

/// Splits an SSE body into its `data:` JSON payloads.
fn sse_events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

async fn post(mock: &MockModel, text: &str) -> reqwest::Response {
    let body = serde_json::json!({
        "model": "direct-test",
        "stream": true,
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        ],
    });
    reqwest::Client::new()
        .post(format!("{}/responses", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sse_stream_shape_and_directives_over_http() {
    let mock = MockModel::start().await;

    let response = post(&mock, "plain").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = sse_events(&response.text().await.unwrap());
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas.len(), 4);
    assert_eq!(deltas.concat(), DEFAULT_REPLY);
    let usage = &events.last().unwrap()["response"]["usage"];
    assert_eq!(usage["total_tokens"], USAGE_TOTAL_TOKENS);
    assert_eq!(
        usage["input_tokens_details"]["cached_tokens"],
        USAGE_CACHED_TOKENS
    );
    assert_eq!(events[0]["response"]["model"], "direct-test");

    let response = post(&mock, "x mock:reply=Pong_pong mock:deltas=2 y").await;
    let events = sse_events(&response.text().await.unwrap());
    let deltas: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, vec!["Pong ", "pong"]);

    let response = post(&mock, "mock:status=429 mock:quota").await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota");

    let response = post(&mock, "mock:status=503").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "server_is_overloaded");

    let started = Instant::now();
    let response = post(&mock, "mock:deltas=4 mock:delay_ms=50").await;
    let _ = response.text().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));

    assert_eq!(mock.request_count(), 5);
    assert!(mock.wait_for_requests(5, Duration::from_millis(10)).await);
    assert!(!mock.wait_for_requests(6, Duration::from_millis(50)).await);
    assert_eq!(mock.open_streams(), 0);
    assert_eq!(mock.streams_cancelled(), 0);
}

#[tokio::test]
async fn client_disconnect_is_counted_as_cancelled() {
    let mock = MockModel::start().await;

    let mut response = post(&mock, "mock:hang").await;
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("response.created"));
    assert_eq!(mock.open_streams(), 1);
    drop(response);
    assert!(mock.wait_for_idle(Duration::from_secs(5)).await);
    assert_eq!(mock.streams_cancelled(), 1);

    // Leaving in the middle of a slow stream counts too.
    let mut response = post(&mock, "mock:deltas=10 mock:delay_ms=100").await;
    let _ = response.chunk().await.unwrap();
    drop(response);
    assert!(mock.wait_for_idle(Duration::from_secs(5)).await);
    assert_eq!(mock.streams_cancelled(), 2);

    // A stream the mock cuts on purpose is not a cancellation.
    let response = post(&mock, "mock:cut").await;
    assert!(
        response.text().await.is_err(),
        "the body must end in an error"
    );
    assert!(mock.wait_for_idle(Duration::from_secs(5)).await);
    assert_eq!(mock.streams_cancelled(), 2);
    assert_eq!(mock.request_count(), 3);
}
