//! End-to-end: the daemon's side of the security review. The documented key setup
//! (`api_keys = ["${CODEX_PROXY_API_KEY}"]` with the variable set) works in the background, reloads
//! included; out-of-range numeric flags are usage errors, not panics; `cors_origins = ["*"]` is
//! warned about. Real binary, real Codex CLI, mock model; every daemon is killed when a test ends.

use crate::support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::app::{chat_body, send_signal, TestEnv};
use support::mock_model::DEFAULT_REPLY;

const KEY: &str = "example-key-7d2e";

/// What one command printed, and its exit code.
struct Run {
    code: i32,
    text: String,
}

/// The daemon files of one test under its directory.
struct Daemon<'a> {
    env: &'a TestEnv,
}

impl Daemon<'_> {
    fn file(&self, name: &str) -> PathBuf {
        self.env.path().join("run").join(name)
    }

    /// Runs `codex-api-proxy COMMAND [file flags] ARGS` with `vars` set in its environment.
    async fn run(&self, command: &str, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut process = self.env.command();
        process.arg(command);
        if ["start", "stop", "reload", "restart"].contains(&command) {
            process
                .arg("--pid-file")
                .arg(self.file("proxy.pid"))
                .arg("--state-file")
                .arg(self.file("proxy.state.json"))
                .arg("--log-file")
                .arg(self.file("proxy.log"));
        }
        process.args(args).envs(vars.iter().copied());
        let output = tokio::process::Command::from(process)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("the binary runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            text: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.file("proxy.state.json")).expect("a state file");
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        for pid in self.env.processes(&[]) {
            send_signal(pid, libc::SIGKILL);
        }
    }
}

async fn chat(url: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .timeout(Duration::from_secs(60))
        .json(&chat_body("default", "hi"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn ready(url: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{url}/ready"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The config of `config.example.toml`'s key setup, one profile described as `description`.
fn example_config(env: &TestEnv, description: &str) -> String {
    format!(
        "{}{}",
        env.server("api_keys = [\"${CODEX_PROXY_API_KEY}\"]"),
        env.profile("default", &format!("description = {description:?}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_key_setup_works_in_the_background_and_on_reload() {
    let env = TestEnv::new().await;
    let config = env.write_config(&example_config(&env, "first"));
    let daemon = Daemon { env: &env };
    let config_arg = config.to_str().unwrap();

    let start = daemon
        .run(
            "start",
            &["--port", "0", "--config", config_arg],
            &[("CODEX_PROXY_API_KEY", KEY)],
        )
        .await;
    assert_eq!(start.code, 0, "{}", start.text);
    assert!(!start.text.contains(KEY), "{}", start.text);
    let state = daemon.state();
    let url = state["url"].as_str().unwrap().to_string();
    let pid = state["pid"].as_u64().unwrap();
    // The key reached the server on stdin only.
    for file in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(KEY),
            "the key is in {file}"
        );
    }

    let response = chat(&url, Some(KEY)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY);
    assert_eq!(chat(&url, None).await.status(), 401);

    // An edited file is expanded with the values handed over at start: the server's environment
    // lacks the variable, and so does this `reload` command's.
    std::fs::write(&config, example_config(&env, "second")).unwrap();
    let reload = daemon.run("reload", &[], &[]).await;
    assert_eq!(reload.code, 0, "{}", reload.text);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = ready(&url).await;
        if ready["config"]["generation"] == 2 {
            assert_eq!(ready["config"]["last_error"], Value::Null, "{ready}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edit was never applied: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(chat(&url, Some(KEY)).await.status(), 200);
    assert_eq!(chat(&url, None).await.status(), 401);

    // `restart` in a shell without the variable: the values saved at start are used.
    let restart = daemon.run("restart", &[], &[]).await;
    assert_eq!(restart.code, 0, "{}", restart.text);
    assert!(!restart.text.contains(KEY), "{}", restart.text);
    let url = daemon.state()["url"].as_str().unwrap().to_string();
    assert_eq!(chat(&url, Some(KEY)).await.status(), 200);

    let stop = daemon.run("stop", &[], &[]).await;
    assert_eq!(stop.code, 0, "{}", stop.text);
}

#[tokio::test]
async fn out_of_range_numeric_flags_are_usage_errors() {
    let env = TestEnv::new().await;
    let daemon = Daemon { env: &env };
    let huge = "9223372036854775807";
    for flag in [
        "--timeout-seconds",
        "--max-concurrency",
        "--workers",
        "--max-queue-size",
        "--queue-timeout-seconds",
        "--grace-seconds",
    ] {
        let run = daemon
            .run("start", &["--foreground", "--port", "0", flag, huge], &[])
            .await;
        assert_eq!(run.code, 2, "{flag}: {}", run.text);
        assert!(run.text.contains(flag), "{flag}: {}", run.text);
        assert!(!run.text.contains("panicked"), "{flag}: {}", run.text);
    }
    // The variables behind the flags are held to the same ranges.
    let run = daemon
        .run(
            "start",
            &["--foreground", "--port", "0"],
            &[("CODEX_PROXY_TIMEOUT_SECONDS", huge)],
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.text);
    assert!(
        run.text.contains("CODEX_PROXY_TIMEOUT_SECONDS") && run.text.contains("604800"),
        "{}",
        run.text
    );
}

#[tokio::test]
async fn cors_wildcard_is_warned_about() {
    let env = TestEnv::new().await;
    let config = env.write_config(&format!(
        "{}{}",
        env.server("cors_origins = [\"*\"]"),
        env.profile("default", "")
    ));
    let daemon = Daemon { env: &env };
    let check = daemon
        .run("check", &["--config", config.to_str().unwrap()], &[])
        .await;
    assert_eq!(check.code, 0, "{}", check.text);
    assert!(
        check
            .text
            .contains("WARNING: [server] cors_origins contains \"*\""),
        "{}",
        check.text
    );

    // In the foreground, before the `listening on` line.
    let mut command = env.command();
    command
        .args(["start", "--foreground", "--port", "0", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut server = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let mut seen = String::new();
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("cors_origins") {
                break;
            }
        }
    };
    // A server that never warns fails the test instead of hanging it.
    let _ = tokio::time::timeout(Duration::from_secs(60), read).await;
    let _ = server.kill().await;
    assert!(
        seen.contains("WARNING: [server] cors_origins contains \"*\""),
        "{seen}"
    );
}
