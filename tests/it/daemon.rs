//! End-to-end: the daemon commands of the real binary (`start` in the background, `status`, `restart`,
//! `stop`, `reload`, `check`) with a private HOME per test, the real Codex CLI and the mock model.
//! Every daemon a test starts is killed by a [`DaemonGuard`] even when the test fails.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::app::{chat_body, model_ids, send_signal, SseTranscript, TestEnv};
use support::mock_model::*;

/// What one command printed, and its exit code.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            code,
            "exit code {} instead of {code}; output:\n{}",
            self.code,
            self.text()
        );
        self
    }

    #[track_caller]
    fn assert_contains(&self, needle: &str) -> &Run {
        assert!(
            self.text().contains(needle),
            "{needle:?} not in the output:\n{}",
            self.text()
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("not JSON ({err}):\n{}", self.text()))
    }
}

/// The daemon files of one test, and a way to run the binary with them.
struct Daemon<'a> {
    env: &'a TestEnv,
    /// `None`: the defaults under the test's HOME.
    explicit_files: bool,
    /// Everything printed so far, to prove no key ever shows.
    transcript: std::sync::Mutex<String>,
}

impl<'a> Daemon<'a> {
    /// Files given explicitly, under the test directory.
    fn new(env: &'a TestEnv) -> Daemon<'a> {
        Daemon {
            env,
            explicit_files: true,
            transcript: Default::default(),
        }
    }

    /// Files in their default place, `~/.codex-api-proxy` of the test's HOME.
    fn with_default_files(env: &'a TestEnv) -> Daemon<'a> {
        Daemon {
            env,
            explicit_files: false,
            transcript: Default::default(),
        }
    }

    fn pid_file(&self) -> PathBuf {
        if self.explicit_files {
            self.env.path().join("run/proxy.pid")
        } else {
            self.env.home.join(".codex-api-proxy/codex-api-proxy.pid")
        }
    }

    fn state_file(&self) -> PathBuf {
        if self.explicit_files {
            self.env.path().join("run/proxy.state.json")
        } else {
            self.env
                .home
                .join(".codex-api-proxy/codex-api-proxy.state.json")
        }
    }

    fn log_file(&self) -> PathBuf {
        if self.explicit_files {
            self.env.path().join("run/proxy.log")
        } else {
            self.env.home.join(".codex-api-proxy/codex-api-proxy.log")
        }
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }

    /// Runs `codex-api-proxy COMMAND [file flags] ARGS` (file flags only for daemon commands).
    async fn run(&self, command: &str, args: &[&str]) -> Run {
        let mut process = self.env.command();
        process.arg(command);
        let daemon_command = ["start", "stop", "status", "restart", "reload"].contains(&command);
        if self.explicit_files && daemon_command {
            process
                .arg("--pid-file")
                .arg(self.pid_file())
                .arg("--state-file")
                .arg(self.state_file())
                .arg("--log-file")
                .arg(self.log_file());
        }
        process.args(args);
        let output = tokio::process::Command::from(process)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("the binary runs");
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).to_string(),
        };
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("$ {command} {args:?} -> {}\n{}", run.code, run.text());
        }
        self.transcript.lock().unwrap().push_str(&run.text());
        run
    }

    /// `start --port 0 ARGS` that must succeed; returns its output and the state it saved.
    async fn start(&self, args: &[&str]) -> (Run, Value) {
        let mut all = vec!["--port", "0"];
        all.extend_from_slice(args);
        let run = self.run("start", &all).await;
        run.assert_code(0);
        (run, self.state())
    }

    fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.state_file()).expect("a state file");
        serde_json::from_str(&text).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn printed(&self) -> String {
        self.transcript.lock().unwrap().clone()
    }
}

/// Kills, when dropped, every process of the test (the daemon and any Codex process): a failing test
/// must not leave a server behind.
struct DaemonGuard<'a>(&'a Daemon<'a>);

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        if let Some(pid) = self.0.pid() {
            // Only a process of this test (its environment names the test directory).
            if self.0.env.processes(&[]).contains(&pid) {
                send_signal(pid, libc::SIGKILL);
            }
        }
        for pid in self.0.env.processes(&[]) {
            send_signal(pid, libc::SIGKILL);
        }
    }
}

/// A process the test started itself, killed when dropped.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn spawn() -> Sleeper {
        Sleeper(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn process_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    !stat.is_empty() && state != "Z" && state != "X"
}

fn write_pid(path: &Path, pid: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{pid}\n")).unwrap();
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn chat(url: &str, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = client()
        .post(format!("{url}/v1/chat/completions"))
        .json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

fn one_profile_config(env: &TestEnv) -> PathBuf {
    env.write_config(&format!("{}{}", env.server(""), env.profile("default", "")))
}

#[tokio::test]
async fn start_status_request_restart_stop_with_the_default_files() {
    let env = TestEnv::new().await;
    let config = one_profile_config(&env);
    let daemon = Daemon::with_default_files(&env);
    let _guard = DaemonGuard(&daemon);
    let (first_key, second_key) = ("first-secret-4f1c", "second-secret-9a7e");

    let (run, state) = daemon
        .start(&["--config", config.to_str().unwrap(), "--api-key", first_key])
        .await;
    let first_pid = daemon.pid().expect("a pid file");
    run.assert_contains(&format!("running (pid {first_pid})"))
        .assert_contains("api_key=<redacted>")
        .assert_contains(config.to_str().unwrap())
        .assert_contains("engine=exec")
        .assert_contains("/v1/chat/completions")
        .assert_contains(daemon.state_file().to_str().unwrap())
        .assert_contains(daemon.log_file().to_str().unwrap());
    let url = state["url"].as_str().unwrap().to_string();
    assert_ne!(state["port"], 0, "the real port is saved: {state}");
    assert!(run.stdout.contains(&url));
    // The state file keeps the key for `restart`, so only its owner may read it.
    let mode = std::fs::metadata(daemon.state_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(state["settings"]["api_key"], first_key);
    // The server got the key on stdin: it is not in its command line or environment (which Codex
    // processes would inherit).
    for file in ["cmdline", "environ"] {
        let bytes = std::fs::read(format!("/proc/{first_pid}/{file}")).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(first_key),
            "the key is in {file}"
        );
    }

    let status = daemon.run("status", &["--json"]).await;
    status.assert_code(0);
    let report = status.json();
    assert_eq!(report["running"], true);
    assert_eq!(report["pid"], first_pid);
    assert_eq!(report["url"], url.as_str());
    assert_eq!(report["profiles"]["default"]["engine"], "exec");
    assert_eq!(report["config"]["generation"], 1);
    assert_eq!(report["last_start"]["settings"]["api_key"], "<redacted>");

    // Starting again changes nothing.
    daemon
        .run("start", &["--config", config.to_str().unwrap()])
        .await
        .assert_code(0)
        .assert_contains(&format!("already running (pid {first_pid})"));
    assert_eq!(daemon.pid(), Some(first_pid));

    let response = chat(&url, Some(first_key), &chat_body("default", "hi")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY);
    assert_eq!(
        chat(&url, None, &chat_body("default", "hi")).await.status(),
        401
    );

    daemon
        .run("status", &[])
        .await
        .assert_code(0)
        .assert_contains("is running")
        .assert_contains("generation 1")
        .assert_contains("requests 1")
        .assert_contains("in flight 0");

    // An invalid restart leaves the server alone.
    daemon
        .run("restart", &["--model", "other"])
        .await
        .assert_code(1)
        .assert_contains("cannot be combined with --config");
    assert_eq!(daemon.pid(), Some(first_pid));
    assert!(process_alive(first_pid));

    // Restart reuses the saved settings (the config, port 0) with the new key.
    let restart = daemon.run("restart", &["--api-key", second_key]).await;
    restart
        .assert_code(0)
        .assert_contains(&format!("stopped codex-api-proxy (pid {first_pid})"));
    let second_pid = daemon.pid().expect("a new pid file");
    assert_ne!(second_pid, first_pid);
    assert!(!process_alive(first_pid));
    let state = daemon.state();
    assert_eq!(state["settings"]["api_key"], second_key);
    assert_eq!(state["config"], config.to_str().unwrap());
    let url = state["url"].as_str().unwrap().to_string();

    let report = daemon.run("status", &["--json", "--verbose"]).await;
    report.assert_code(0);
    let report = report.json();
    assert_eq!(report["pid"], second_pid);
    assert_eq!(report["url"], url.as_str());
    assert_eq!(report["last_start"]["settings"]["api_key"], "<redacted>");
    daemon
        .run("status", &["--verbose"])
        .await
        .assert_contains("--api-key=<redacted>");
    let response = chat(&url, Some(second_key), &chat_body("default", "hi")).await;
    assert_eq!(response.status(), 200);
    let response = chat(&url, Some(first_key), &chat_body("default", "hi")).await;
    assert_eq!(response.status(), 401);

    daemon
        .run("stop", &[])
        .await
        .assert_code(0)
        .assert_contains(&format!("stopped codex-api-proxy (pid {second_pid})"));
    assert!(!daemon.pid_file().exists());
    assert!(!process_alive(second_pid));
    daemon
        .run("status", &[])
        .await
        .assert_code(1)
        .assert_contains("not running");
    assert_eq!(
        daemon.run("status", &["--json"]).await.json()["running"],
        false
    );
    // Stopping twice is fine.
    daemon
        .run("stop", &[])
        .await
        .assert_code(0)
        .assert_contains("not running");

    let log = daemon.log();
    assert!(log.contains("listening on"), "{log}");
    for key in [first_key, second_key] {
        assert!(!daemon.printed().contains(key), "{}", daemon.printed());
        assert!(!log.contains(key), "the key is in the log:\n{log}");
    }
    assert_eq!(
        env.wait_no_processes(&[], Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn failed_starts_say_why_and_leave_no_pid_file() {
    let env = TestEnv::new().await;
    let config = one_profile_config(&env);
    let daemon = Daemon::new(&env);
    let _guard = DaemonGuard(&daemon);

    // The port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = daemon
        .run(
            "start",
            &["--config", config.to_str().unwrap(), "--port", &port],
        )
        .await;
    assert_ne!(run.code, 0, "{}", run.text());
    run.assert_contains("Address already in use")
        .assert_contains(&format!("127.0.0.1:{port}"))
        .assert_contains("did not start");
    assert!(!daemon.pid_file().exists());
    daemon.run("status", &[]).await.assert_code(1);
    drop(taken);

    // The config is invalid: every problem is listed before anything starts.
    let broken = env.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[server]\nport = \"eighty\"\n\n[profiles.a]\nengine = \"warp\"\nunknown_key = 1\n",
    )
    .unwrap();
    let run = daemon
        .run("start", &["--config", broken.to_str().unwrap()])
        .await;
    assert_eq!(run.code, 1, "{}", run.text());
    run.assert_contains("3 problems")
        .assert_contains("broken.toml:2:")
        .assert_contains("broken.toml:5: profile `a`")
        .assert_contains("broken.toml:6: profile `a`");
    assert!(!daemon.pid_file().exists());

    // Codex cannot run; the non-loopback bind without a key is warned about first.
    let run = daemon
        .run(
            "start",
            &[
                "--config",
                config.to_str().unwrap(),
                "--port",
                "0",
                "--host",
                "0.0.0.0",
                "--codex-bin",
                "/nonexistent/codex",
            ],
        )
        .await;
    assert_eq!(run.code, 1, "{}", run.text());
    run.assert_contains("WARNING: binding to non-loopback host 0.0.0.0 without an API key")
        .assert_contains("Codex cannot run")
        .assert_contains("/nonexistent/codex")
        .assert_contains("last lines of");
    assert!(!daemon.pid_file().exists());
    assert!(
        !daemon.state_file().exists(),
        "only successful starts are saved"
    );
    assert_eq!(
        env.wait_no_processes(&[], Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn stale_pid_files_are_reported_cleared_and_never_signalled() {
    let env = TestEnv::new().await;
    let config = one_profile_config(&env);
    let daemon = Daemon::new(&env);
    let _guard = DaemonGuard(&daemon);

    // A dead pid.
    let dead = dead_pid();
    write_pid(&daemon.pid_file(), dead);
    daemon
        .run("status", &[])
        .await
        .assert_code(1)
        .assert_contains("not running")
        .assert_contains(&format!("pid {dead} is not running"));
    assert_eq!(
        daemon.run("status", &["--json"]).await.json()["state"],
        "stale"
    );
    daemon
        .run("stop", &[])
        .await
        .assert_code(0)
        .assert_contains("stale pid file");
    assert!(!daemon.pid_file().exists());
    write_pid(&daemon.pid_file(), dead);
    let (run, _) = daemon.start(&["--config", config.to_str().unwrap()]).await;
    run.assert_contains(&format!("pid {dead} is not running"));
    let pid = daemon.pid().unwrap();
    assert_ne!(pid, dead);
    daemon.run("status", &[]).await.assert_code(0);
    daemon.run("stop", &[]).await.assert_code(0);

    // A live pid that is not the proxy (a reused pid): reported, cleared, never signalled.
    let mut sleeper = Sleeper::spawn();
    write_pid(&daemon.pid_file(), sleeper.pid());
    daemon
        .run("status", &[])
        .await
        .assert_code(1)
        .assert_contains("not codex-api-proxy");
    daemon
        .run("stop", &[])
        .await
        .assert_code(0)
        .assert_contains("not codex-api-proxy");
    assert!(sleeper.alive(), "stop signalled a process that is not ours");
    assert!(!daemon.pid_file().exists());
    write_pid(&daemon.pid_file(), sleeper.pid());
    let (run, _) = daemon.start(&["--config", config.to_str().unwrap()]).await;
    run.assert_contains("not codex-api-proxy");
    let pid = daemon.pid().unwrap();
    assert_ne!(pid, sleeper.pid());
    daemon.run("status", &[]).await.assert_code(0);
    daemon.run("stop", &[]).await.assert_code(0);
    assert!(sleeper.alive());
    assert_eq!(
        env.wait_no_processes(&[], Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

/// Starts a streaming request and waits until Codex is talking to the mock model. The task returns
/// the response text, or the transport error.
async fn slow_stream(
    env: &TestEnv,
    url: &str,
    directives: &str,
) -> tokio::task::JoinHandle<Result<String, reqwest::Error>> {
    let mut body = chat_body("default", directives);
    body["stream"] = json!(true);
    let url = format!("{url}/v1/chat/completions");
    let request =
        tokio::spawn(async move { client().post(url).json(&body).send().await?.text().await });
    assert!(
        env.mock.wait_for_requests(1, Duration::from_secs(20)).await,
        "Codex never called the model"
    );
    request
}

#[tokio::test]
async fn stop_lets_a_streaming_request_finish_within_the_grace_period() {
    let env = TestEnv::new().await;
    let config = one_profile_config(&env);
    let daemon = Daemon::new(&env);
    let _guard = DaemonGuard(&daemon);
    let (_, state) = daemon
        .start(&["--config", config.to_str().unwrap(), "--grace-seconds", "8"])
        .await;
    let url = state["url"].as_str().unwrap();

    let request = slow_stream(&env, url, "mock:deltas=5 mock:delay_ms=300").await;
    let began = Instant::now();
    let stop = daemon.run("stop", &[]).await;
    let took = began.elapsed();
    stop.assert_code(0)
        .assert_contains("stopped codex-api-proxy");
    assert!(!stop.text().contains("SIGKILL"), "{}", stop.text());
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    let transcript = SseTranscript::parse(&request.await.unwrap().unwrap());
    assert!(transcript.done(), "{:?}", transcript.data);
    assert_eq!(transcript.content(), DEFAULT_REPLY);
    assert!(!daemon.pid_file().exists());
    assert_eq!(
        env.wait_no_processes(&[], Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn stop_ends_requests_that_outlast_the_grace_period_and_leaves_no_codex_behind() {
    let env = TestEnv::new().await;
    let config = one_profile_config(&env);
    let daemon = Daemon::new(&env);
    let _guard = DaemonGuard(&daemon);
    let (_, state) = daemon
        .start(&["--config", config.to_str().unwrap(), "--grace-seconds", "1"])
        .await;
    let url = state["url"].as_str().unwrap();

    // An answer far longer than the 1 s grace period, during which Codex writes nothing (so only a
    // kill ends it, not a broken pipe).
    let request = slow_stream(&env, url, "mock:first_delay_ms=30000").await;
    let began = Instant::now();
    let stop = daemon.run("stop", &[]).await;
    let took = began.elapsed();
    stop.assert_code(0)
        .assert_contains("stopped codex-api-proxy");
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?}: {}",
        stop.text()
    );
    let transcript = SseTranscript::parse(&request.await.unwrap().unwrap());
    let errors: Vec<Value> = transcript
        .chunks()
        .into_iter()
        .filter(|chunk| chunk.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 1, "no in-band error: {:?}", transcript.data);
    assert!(errors[0]["error"]["message"].is_string());
    assert_ne!(transcript.content(), DEFAULT_REPLY);
    assert_eq!(
        env.wait_no_processes(&[], Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn a_server_that_ignores_sigterm_is_reported_and_killed_with_its_codex_processes() {
    let env = TestEnv::new().await;
    let config = one_profile_config(&env);
    let daemon = Daemon::new(&env);
    let _guard = DaemonGuard(&daemon);
    let (_, state) = daemon.start(&["--config", config.to_str().unwrap()]).await;
    let url = state["url"].as_str().unwrap();
    // Codex waits silently for the model: nothing but a kill ends it early.
    let request = slow_stream(&env, url, "mock:first_delay_ms=30000").await;
    let pid = daemon.pid().unwrap();
    let codex = env.processes(&[pid]);
    assert!(!codex.is_empty(), "no Codex process runs the request");

    // A stopped process neither answers nor handles SIGTERM. The stop takes effect asynchronously:
    // wait until the kernel shows the process stopped (state `T`).
    send_signal(pid, libc::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'T' && state != 't')
        })
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon
        .run("status", &[])
        .await
        .assert_code(1)
        .assert_contains("not responding");
    let stop = daemon.run("stop", &["--grace-seconds", "0"]).await;
    stop.assert_code(0)
        .assert_contains("sent SIGKILL to its session");
    // The client is not left hanging: its connection ended without a complete answer.
    let answer = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the client still waits")
        .unwrap();
    assert!(answer.map_or(true, |text| !text.contains("[DONE]")));
    assert!(!process_alive(pid));
    assert!(!daemon.pid_file().exists());
    assert_eq!(
        env.wait_no_processes(&[], Duration::from_secs(5)).await,
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn reload_applies_an_edit_and_rejects_a_broken_one() {
    let env = TestEnv::new().await;
    // The key is in the file, not on the command line: `reload` must still authenticate.
    let key = "file-key-77c2";
    let server = env.server(&format!("api_keys = [\"{key}\"]"));
    let config = env.write_config(&format!("{server}{}", env.profile("first", "")));
    let daemon = Daemon::new(&env);
    let _guard = DaemonGuard(&daemon);
    let (run, state) = daemon.start(&["--config", config.to_str().unwrap()]).await;
    run.assert_contains("first");
    let url = state["url"].as_str().unwrap();
    assert_eq!(model_ids(url, Some(key)).await, vec!["first"]);

    std::fs::write(
        &config,
        format!(
            "{server}{}{}",
            env.profile("first", ""),
            env.profile("second", "")
        ),
    )
    .unwrap();
    // The file watcher may apply the edit first; either way, once `reload` returns the file serves.
    daemon
        .run("reload", &[])
        .await
        .assert_code(0)
        .assert_contains("generation 2");
    assert_eq!(model_ids(url, Some(key)).await, vec!["first", "second"]);

    let broken = format!(
        "{server}{}{}",
        env.profile("first", ""),
        env.profile("second", "no_such_key = true")
    );
    std::fs::write(&config, &broken).unwrap();
    let line = broken
        .lines()
        .position(|line| line.starts_with("no_such_key"))
        .unwrap()
        + 1;
    let run = daemon.run("reload", &[]).await;
    assert_eq!(run.code, 1, "{}", run.text());
    run.assert_contains("reload rejected")
        .assert_contains(&format!("config.toml:{line}: profile `second`"))
        .assert_contains("no_such_key");
    // Still serving the last good file; status shows the error.
    assert_eq!(model_ids(url, Some(key)).await, vec!["first", "second"]);
    daemon
        .run("status", &[])
        .await
        .assert_code(0)
        .assert_contains("generation 2")
        .assert_contains("last reload error")
        .assert_contains("no_such_key");

    daemon.run("stop", &[]).await.assert_code(0);
    daemon
        .run("reload", &[])
        .await
        .assert_code(1)
        .assert_contains("not running");
    assert!(!daemon.printed().contains(key));
    assert!(!daemon.log().contains(key));
}

#[tokio::test]
async fn check_shows_profiles_and_routes_or_every_problem() {
    let env = TestEnv::new().await;
    let daemon = Daemon::new(&env);
    let config = env.write_config(&format!(
        "{}{}{}",
        env.server(""),
        env.profile(
            "primary",
            "aliases = [\"prime\"]\nmatch = \"^gpt-5\"\nengine = \"app-server\""
        ),
        env.profile("second", "match = \"^gpt-\"")
    ));
    let run = daemon
        .run(
            "check",
            &["--config", config.to_str().unwrap(), "--model", "gpt-4o"],
        )
        .await;
    run.assert_code(0).assert_contains("OK, 2 profiles");
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    let has = |expected: &[&str]| {
        assert!(
            lines.iter().any(|line| line.as_slice() == expected),
            "no line {expected:?} in:\n{}",
            run.stdout
        )
    };
    has(&["primary", "app-server", "mock-model", "prime", "^gpt-5"]);
    has(&["second", "exec", "mock-model", "-", "^gpt-"]);
    has(&["primary", "primary", "name"]);
    has(&["prime", "primary", "alias"]);
    has(&["gpt-5", "primary", "match"]);
    has(&["gpt-4o", "second", "match"]);
    has(&["unknown-model", "(no", "profile:", "404)", "-"]);

    let broken = env.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[server]\nfallback_profile = \"missing\"\n\n[profiles.a]\nmodel = 5\n\n[profiles.b]\ntimeout_seconds = -1\n",
    )
    .unwrap();
    let run = daemon
        .run("check", &["--config", broken.to_str().unwrap()])
        .await;
    run.assert_code(64);
    for needle in [
        "broken.toml:2:",
        "broken.toml:5: profile `a`",
        "broken.toml:8: profile `b`",
    ] {
        run.assert_contains(needle);
    }
    daemon
        .run("check", &["--config", "/nonexistent/config.toml"])
        .await
        .assert_code(64)
        .assert_contains("cannot read");
}

#[tokio::test]
async fn help_explains_options_and_defaults() {
    let env = TestEnv::new().await;
    let daemon = Daemon::new(&env);
    daemon
        .run("--version", &[])
        .await
        .assert_code(0)
        .assert_contains(env!("CARGO_PKG_VERSION"));
    let help = daemon.run("start", &["--help"]).await;
    help.assert_code(0);
    for needle in [
        "--config <FILE>",
        "--foreground",
        "--grace-seconds",
        "[default: 10]",
        "[default: 8765]",
        "--pid-file",
        "codex-api-proxy.state.json",
    ] {
        help.assert_contains(needle);
    }
    for command in ["stop", "status", "restart", "check", "reload"] {
        daemon
            .run(command, &["--help"])
            .await
            .assert_code(0)
            .assert_contains("Usage: codex-api-proxy");
    }
    // Help is wrapped to the terminal; compare words.
    let words = |run: &Run| run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    let stop = words(&daemon.run("stop", &["--help"]).await);
    assert!(
        stop.contains("its own grace period, set by `start --grace-seconds`"),
        "{stop}"
    );
    let restart = words(&daemon.run("restart", &["--help"]).await);
    assert!(restart.contains("a flag given now wins"), "{restart}");
}
