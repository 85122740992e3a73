//! Running the real `codex-api-proxy` binary for end-to-end tests: a private temp HOME, CODEX_HOME and
//! workspace per test, a config that points the real Codex CLI at the test's [`MockModel`], the server on
//! port 0 (its `listening on` line is read from stdout), and helpers to find Codex processes that belong
//! to the test (to prove none leaked). Dropping an [`App`] kills the server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::mock_model::MockModel;

/// A test's private directories and its mock model.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub codex_home: PathBuf,
    pub workspace: PathBuf,
    pub mock: MockModel,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        // Not under /tmp: Codex warns on stderr when CODEX_HOME is there.
        let base = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("test-envs");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("env-")
            .tempdir_in(&base)
            .unwrap();
        let home = dir.path().join("home");
        let codex_home = dir.path().join("codex-home");
        let workspace = dir.path().join("workspace");
        for path in [&home, &codex_home, &workspace] {
            std::fs::create_dir_all(path).unwrap();
        }
        TestEnv {
            home,
            codex_home,
            workspace: std::fs::canonicalize(&workspace).unwrap(),
            dir,
            mock: MockModel::start().await,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `codex_config` entries that send Codex to the mock, as a TOML array body.
    pub fn codex_config_toml(&self) -> String {
        self.mock
            .provider_overrides()
            .iter()
            .map(|item| format!("'{item}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A profile table that runs the real Codex against the mock. `extra` is appended inside it.
    pub fn profile(&self, name: &str, extra: &str) -> String {
        format!(
            "[profiles.{name}]\nmodel = \"mock-model\"\ndefault_cwd = {workspace:?}\nallowed_roots = [{workspace:?}]\ncodex_config = [{config}]\n{extra}\n",
            workspace = self.workspace.display().to_string(),
            config = self.codex_config_toml(),
        )
    }

    /// A `[server]` table with the test's Codex binary. `extra` is appended inside it.
    pub fn server(&self, extra: &str) -> String {
        format!(
            "[server]\ncodex_bin = {:?}\n{extra}\n",
            super::codex_bin().display().to_string()
        )
    }

    /// Writes `config.toml` into the test directory and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The binary under test, with the test's HOME and CODEX_HOME.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_codex-api-proxy"));
        command
            .env("HOME", &self.home)
            .env("CODEX_HOME", &self.codex_home)
            .env_remove("CODEX_PROXY_API_KEY")
            .env_remove("RUST_LOG");
        command
    }

    /// Pids of live processes (other than `except`) whose command line or environment mentions this
    /// test's directory: the Codex processes the proxy started for this test.
    pub fn processes(&self, except: &[u32]) -> Vec<u32> {
        let marker = self.path().display().to_string();
        let own = std::process::id();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == own || except.contains(&pid) {
                continue;
            }
            let status = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // Zombies are already dead.
            if status.split_whitespace().nth(2) == Some("Z") {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let mentions = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(&marker);
            if mentions(&cmdline) || mentions(&environ) {
                found.push(pid);
            }
        }
        found
    }

    /// Waits up to `timeout` for this test's Codex processes (except `except`) to be gone.
    pub async fn wait_no_processes(&self, except: &[u32], timeout: Duration) -> Vec<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.processes(except);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running proxy.
pub struct App {
    pub child: Child,
    pub base_url: String,
    pub port: u16,
    pub config_path: Option<PathBuf>,
    output: Arc<Mutex<String>>,
}

impl App {
    /// Starts `start --foreground --port 0 --config <config>` with the given config text.
    pub async fn start(env: &TestEnv, config: &str) -> App {
        App::start_with_vars(env, config, &[]).await
    }

    /// [`App::start`] with extra environment variables for the proxy.
    pub async fn start_with_vars(env: &TestEnv, config: &str, vars: &[(&str, &str)]) -> App {
        let path = env.write_config(config);
        let args = vec!["--config".to_string(), path.display().to_string()];
        let mut app = App::start_args_with_vars(env, &args, vars).await;
        app.config_path = Some(path);
        app
    }

    /// Starts `start --foreground --port 0 ARGS…`.
    pub async fn start_args(env: &TestEnv, args: &[String]) -> App {
        App::start_args_with_vars(env, args, &[]).await
    }

    async fn start_args_with_vars(env: &TestEnv, args: &[String], vars: &[(&str, &str)]) -> App {
        let mut command = env.command();
        command
            .args(["start", "--foreground", "--port", "0"])
            .args(args)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        App::spawn(command).await
    }

    /// Spawns a prepared command and waits for its `listening on` line.
    pub async fn spawn(mut command: Command) -> App {
        let mut child = command.spawn().expect("the codex-api-proxy binary runs");
        let output = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if std::env::var_os("TEST_LOG").is_some() {
                        eprintln!("[proxy] {line}");
                    }
                    let mut output = output.lock().unwrap();
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel::<String>();
        {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    {
                        let mut output = output.lock().unwrap();
                        output.push_str(&line);
                        output.push('\n');
                    }
                    if !sent {
                        if let Some(url) = line.strip_prefix("listening on ") {
                            let _ = sender.send(url.trim().to_string());
                            sent = true;
                        }
                    }
                }
            });
        }
        let url =
            tokio::task::spawn_blocking(move || receiver.recv_timeout(Duration::from_secs(20)))
                .await
                .unwrap();
        let base_url = match url {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the proxy did not print `listening on`; its output:\n{}",
                    output.lock().unwrap()
                );
            }
        };
        let port = base_url.rsplit(':').next().unwrap().parse().unwrap();
        App {
            child,
            base_url,
            port,
            config_path: None,
            output,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits up to 5 s for the server to print a line containing `needle`, and returns that line.
    pub async fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.output().lines().find(|line| line.contains(needle)) {
                return line.to_string();
            }
            if Instant::now() > deadline {
                panic!(
                    "the proxy never printed {needle:?}; output:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        App::client().get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// POSTs a chat request (with an optional bearer key) and returns the raw response.
    pub async fn chat_with_key(&self, body: &Value, key: Option<&str>) -> reqwest::Response {
        let mut request = App::client()
            .post(self.url("/v1/chat/completions"))
            .json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.unwrap()
    }

    pub async fn chat(&self, body: &Value) -> reqwest::Response {
        self.chat_with_key(body, None).await
    }

    /// A plain chat request's status and JSON body.
    pub async fn chat_json(&self, body: &Value) -> (u16, Value) {
        let response = self.chat(body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, value)
    }

    /// Reads a whole SSE response into its `data:` payloads (and counts comment lines).
    pub async fn sse(response: reqwest::Response) -> SseTranscript {
        let text = response.text().await.unwrap();
        SseTranscript::parse(&text)
    }

    /// Sends SIGTERM and waits for the exit status (SIGKILL after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        send_signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) only sends a signal.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate(Duration::from_secs(5));
        }
    }
}

/// The events of one SSE response.
#[derive(Debug, Default)]
pub struct SseTranscript {
    /// Raw `data:` payloads in order (including `[DONE]`).
    pub data: Vec<String>,
    pub comments: usize,
}

impl SseTranscript {
    pub fn parse(text: &str) -> SseTranscript {
        let mut transcript = SseTranscript::default();
        for line in text.lines() {
            if let Some(data) = line.strip_prefix("data:") {
                transcript.data.push(data.trim_start().to_string());
            } else if line.starts_with(':') {
                transcript.comments += 1;
            }
        }
        transcript
    }

    /// The JSON payloads (everything but `[DONE]`).
    pub fn chunks(&self) -> Vec<Value> {
        self.data
            .iter()
            .filter(|data| data.as_str() != "[DONE]")
            .map(|data| serde_json::from_str(data).unwrap())
            .collect()
    }

    /// The concatenated `delta.content` of all chunks.
    pub fn content(&self) -> String {
        self.chunks()
            .iter()
            .filter_map(|chunk| {
                chunk
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }

    pub fn done(&self) -> bool {
        self.data.last().map(String::as_str) == Some("[DONE]")
    }
}

/// The ids `GET /v1/models` lists at `base_url`, as seen with `key`.
pub async fn model_ids(base_url: &str, key: Option<&str>) -> Vec<String> {
    let mut request = App::client().get(format!("{base_url}/v1/models"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["id"].as_str().unwrap().to_string())
        .collect()
}

/// A one-message chat request body.
pub fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// `codex login --with-api-key` as a user runs it, with the real CLI, against the test's CODEX_HOME.
pub async fn login_with_api_key(env: &TestEnv) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(super::codex_bin())
        .args(["login", "--with-api-key"])
        .env("HOME", &env.home)
        .env("CODEX_HOME", &env.codex_home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"sk-deploy-test-login\n").await.unwrap();
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "codex login --with-api-key failed");
}
