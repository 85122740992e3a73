//! The fault matrix, run for both engines: a model that hangs, clients that disconnect before, during and
//! after the first content byte, a Codex that cannot start (missing, not executable, garbage instead of
//! protocol). Each case checks the status or in-band error, that no Codex process leaked (exec) or the
//! worker survived (app-server), and that the next request on the same profile succeeds. The remaining
//! rows (HTTP 500/429/401 from the model, cut streams, crashes, timeouts) are in `errors.rs` (exec) and
//! `app_server.rs`.

use crate::support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::app::{chat_body, App, SseTranscript, TestEnv};
use support::mock_model::DEFAULT_REPLY;

const ENGINES: [&str; 2] = ["exec", "app-server"];

fn config(env: &TestEnv, engine: &str, extra: &str) -> String {
    format!(
        "{}{}",
        env.server(""),
        env.profile(
            "p",
            &format!("engine = \"{engine}\"\nmax_concurrency = 1\ntimeout_seconds = 20\n{extra}")
        )
    )
}

async fn wait_ready(app: &App) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.get("/ready").await.status() != 200 {
        assert!(Instant::now() < deadline, "never ready: {}", app.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn worker_pids(app: &App) -> Vec<u64> {
    let metrics = app.get_json("/metrics").await.1;
    metrics["profiles"]["p"]["workers"]
        .as_array()
        .map(|workers| workers.iter().filter_map(|w| w["pid"].as_u64()).collect())
        .unwrap_or_default()
}

/// After a fault: no model stream is left open, no Codex process other than the workers is alive, nothing
/// is in flight, the workers are the same, and a normal request succeeds.
async fn assert_recovered(env: &TestEnv, app: &App, workers_before: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.mock.open_streams() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.mock.open_streams(), 0, "a model stream was left open");
    let mut keep: Vec<u32> = workers_before.iter().map(|pid| *pid as u32).collect();
    keep.push(app.pid());
    let left = env.wait_no_processes(&keep, Duration::from_secs(3)).await;
    assert!(left.is_empty(), "Codex processes left: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = app.get_json("/metrics").await.1;
        if metrics["profiles"]["p"]["in_flight"] == 0 && metrics["profiles"]["p"]["running"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still in flight: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        worker_pids(app).await,
        workers_before,
        "the workers changed"
    );
    let (status, body) = app.chat_json(&chat_body("p", "after the fault")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY);
}

#[tokio::test]
async fn a_hanging_model_ends_in_a_clean_timeout_for_both_engines() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        // The mock provider's idle timeout (3 s) ends the hang inside Codex: the model stopped responding.
        let app = App::start(&env, &config(&env, engine, "")).await;
        wait_ready(&app).await;
        let workers = worker_pids(&app).await;
        let (status, body) = app.chat_json(&chat_body("p", "mock:hang")).await;
        assert_eq!(status, 504, "{engine}: {body}");
        assert_eq!(body["error"]["code"], "timeout", "{engine}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("idle timeout"),
            "{engine}: {body}"
        );
        assert_recovered(&env, &app, &workers).await;

        // The same in-band, after SSE headers.
        let mut request = chat_body("p", "mock:hang");
        request["stream"] = json!(true);
        let transcript = App::sse(app.chat(&request).await).await;
        let last = transcript.chunks().pop().unwrap();
        assert_eq!(last["error"]["code"], "timeout", "{engine}: {last}");
        assert_recovered(&env, &app, &workers).await;
    }
}

#[tokio::test]
async fn client_disconnects_before_during_and_after_the_first_byte() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = App::start(&env, &config(&env, engine, "")).await;
        wait_ready(&app).await;
        let workers = worker_pids(&app).await;

        // Before the first byte: a plain request whose answer has not started.
        let request = {
            let client = App::client();
            let url = app.url("/v1/chat/completions");
            tokio::spawn(async move {
                let _ = client
                    .post(url)
                    .json(&chat_body("p", "mock:first_delay_ms=20000"))
                    .send()
                    .await;
            })
        };
        assert!(env.mock.wait_for_requests(1, Duration::from_secs(15)).await);
        request.abort();
        assert_recovered(&env, &app, &workers).await;

        // Before the first content byte of a stream: headers and the role chunk only.
        let mut body = chat_body("p", "mock:first_delay_ms=20000");
        body["stream"] = json!(true);
        let response = app.chat(&body).await;
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
        assert!(env.mock.wait_for_requests(3, Duration::from_secs(15)).await);
        drop(stream);
        assert_recovered(&env, &app, &workers).await;

        // During the answer: after the first content bytes (app-server streams them as generated; exec
        // delivers the answer at the end, so there the client leaves right after it starts).
        let before = env.mock.request_count();
        let mut body = chat_body("p", "mock:deltas=20 mock:delay_ms=300");
        body["stream"] = json!(true);
        let response = app.chat(&body).await;
        let mut stream = response.bytes_stream();
        let mut seen = String::new();
        if engine == "app-server" {
            while SseTranscript::parse(&seen).content().is_empty() {
                seen.push_str(&String::from_utf8_lossy(
                    &stream.next().await.unwrap().unwrap(),
                ));
            }
        } else {
            assert!(
                env.mock
                    .wait_for_requests(before + 1, Duration::from_secs(15))
                    .await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            env.mock.open_streams(),
            1,
            "{engine}: the model should be mid-answer"
        );
        drop(stream);
        assert_recovered(&env, &app, &workers).await;
        let metrics = app.get_json("/metrics").await.1;
        assert_eq!(metrics["profiles"]["p"]["in_flight"], 0);
    }
}

#[tokio::test]
async fn a_codex_that_cannot_start_is_503_for_both_engines() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let missing = env.path().join("no-such-codex");
        let not_executable = env.path().join("codex-not-executable");
        std::fs::write(&not_executable, "#!/bin/sh\necho hi\n").unwrap();
        let garbage = env.path().join("codex-garbage");
        std::fs::write(
            &garbage,
            "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then echo 'codex-cli 0.0.0-fake'; exit 0; fi\n\
             cat >/dev/null &\necho 'this is not JSON'\necho '{\"half\": '\nexit 0\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();

        for (label, binary, expect) in [
            ("missing", &missing, "not found"),
            ("not executable", &not_executable, "not executable"),
            ("garbage", &garbage, ""),
        ] {
            let text = config(&env, engine, "").replace(
                &format!(
                    "codex_bin = {:?}",
                    support::codex_bin().display().to_string()
                ),
                &format!("codex_bin = {:?}", binary.display().to_string()),
            );
            let app = App::start(&env, &text).await;
            if label == "garbage" && engine == "exec" {
                // exec starts a process per request: the garbage is a 502 for that request.
                let (status, body) = app.chat_json(&chat_body("p", "hi")).await;
                assert_eq!(status, 502, "{engine}/{label}: {body}");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("non-JSON"),
                    "{body}"
                );
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            let (status, body) = loop {
                let (status, body) = app.chat_json(&chat_body("p", "hi")).await;
                if status == 503 || Instant::now() > deadline {
                    break (status, body);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(status, 503, "{engine}/{label}: {body}");
            assert_eq!(
                body["error"]["code"], "codex_unavailable",
                "{engine}/{label}: {body}"
            );
            assert!(
                body["error"]["message"].as_str().unwrap().contains(expect),
                "{engine}/{label}: {body}"
            );
            let (status, ready) = app.get_json("/ready").await;
            assert_eq!(status, 503, "{engine}/{label}: {ready}");
            assert!(
                ready["profiles"]["p"]["reason"].as_str().is_some(),
                "{ready}"
            );
            let left = env
                .wait_no_processes(&[app.pid()], Duration::from_secs(3))
                .await;
            assert!(left.is_empty(), "{engine}/{label}: processes left {left:?}");
        }
    }
}

#[tokio::test]
async fn metrics_count_each_fault_by_status() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env, "exec", "")).await;
    let _ = app.chat_json(&chat_body("p", "mock:status=500")).await;
    let _ = app.chat_json(&chat_body("missing-model", "x")).await;
    let _ = app.chat_json(&chat_body("p", "fine")).await;
    let metrics: Value = app.get_json("/metrics").await.1;
    assert_eq!(metrics["errors_by_status"]["502"], 1, "{metrics}");
    assert_eq!(metrics["errors_by_status"]["404"], 1, "{metrics}");
    assert_eq!(
        metrics["profiles"]["p"]["errors_by_status"]["502"], 1,
        "{metrics}"
    );
    assert_eq!(metrics["profiles"]["p"]["ok"], 1);
    assert_eq!(metrics["requests_total"], 3);
}

/// A fake app-server that speaks just enough JSON-RPC: it answers `initialize`, sends the proxy one
/// server-initiated request of each kind and records the answers, and refuses every `thread/start` as
/// overloaded (-32001), counting the attempts.
const FAKE_APP_SERVER: &str = r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo 'codex-cli 0.0.0-fake'; exit 0; fi
dir=$(dirname "$0")
n=100
while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/^{"id":\([0-9]*\),.*/\1/p')
  case "$line" in
    *'"method":"initialize"'*)
      printf '{"id":%s,"result":{"userAgent":"fake"}}\n' "$id"
      for method in item/commandExecution/requestApproval item/fileChange/requestApproval item/permissions/requestApproval item/tool/requestUserInput mcpServer/elicitation/request applyPatchApproval execCommandApproval item/tool/call currentTime/read; do
        n=$((n+1))
        printf '{"id":%s,"method":"%s","params":{"threadId":"t"}}\n' "$n" "$method"
      done ;;
    *'"method":"thread/start"'*)
      echo x >> "$dir/thread-start-attempts"
      printf '{"id":%s,"error":{"code":-32001,"message":"Server overloaded; retry later."}}\n' "$id" ;;
    *'"method"'*)
      [ -n "$id" ] && printf '{"id":%s,"result":{"data":[]}}\n' "$id" ;;
    *) printf '%s\n' "$line" >> "$dir/answers" ;;
  esac
done
"#;

#[tokio::test]
async fn server_requests_are_refused_at_once_and_overload_is_retried_then_429() {
    let env = TestEnv::new().await;
    let fake = env.path().join("fake-app-server");
    std::fs::write(&fake, FAKE_APP_SERVER).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = config(&env, "app-server", "").replace(
        &format!(
            "codex_bin = {:?}",
            support::codex_bin().display().to_string()
        ),
        &format!("codex_bin = {:?}", fake.display().to_string()),
    );
    let app = App::start(&env, &text).await;
    wait_ready(&app).await;

    // Every server-initiated request got an immediate answer: a safe refusal, or an error for the
    // methods the proxy does not support.
    let answers_path = env.path().join("answers");
    let deadline = Instant::now() + Duration::from_secs(10);
    let answers = loop {
        let answers = std::fs::read_to_string(&answers_path).unwrap_or_default();
        if answers.lines().count() >= 9 || Instant::now() > deadline {
            break answers;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_id: Vec<Value> = answers
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let answer = |id: u64| {
        by_id
            .iter()
            .find(|answer| answer["id"] == id)
            .unwrap_or_else(|| panic!("no answer to request {id}: {answers}"))
            .clone()
    };
    assert_eq!(answer(101)["result"]["decision"], "decline");
    assert_eq!(answer(102)["result"]["decision"], "decline");
    assert_eq!(answer(103)["result"]["permissions"], json!({}));
    assert_eq!(answer(104)["result"]["answers"], json!({}));
    assert_eq!(answer(105)["result"]["action"], "decline");
    assert_eq!(answer(106)["result"]["decision"], "denied");
    assert_eq!(answer(107)["result"]["decision"], "denied");
    assert_eq!(answer(108)["result"]["success"], false);
    assert_eq!(answer(109)["error"]["code"], -32601);

    // -32001 is retried briefly, then the client gets a 429.
    let (status, body) = app.chat_json(&chat_body("p", "hi")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "engine_overloaded");
    let attempts = std::fs::read_to_string(env.path().join("thread-start-attempts")).unwrap();
    assert_eq!(attempts.lines().count(), 4, "one try and three retries");
}
