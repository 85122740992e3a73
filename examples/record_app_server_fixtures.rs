//! Records the fixtures of the app-server turn core's unit tests (not a test; writes files).
//!
//! Drives the native `codex app-server` (found behind the npm launcher the way `codex::launch::resolve`
//! finds it) against the test suite's mock model, one ephemeral thread per scenario, started the way the
//! proxy starts a `tools = false` thread (`protocol::thread_start_params`), except `tools_on` which keeps
//! Codex's tools and environment. Every message the app-server sends about the scenario's thread
//! (notifications and server-initiated requests) is written as one JSON line, in arrival order, to
//! `src/engine/app_server/fixtures/SCENARIO.jsonl`. The scratch directory's path is replaced by
//! `/workspace` and the mock's port by `PORT`, so a re-recording differs only where Codex changed.
//!
//! `interrupt` starts a turn the mock never answers (`mock:hang`) and sends `turn/interrupt` once the
//! turn has started, as the proxy does on cancellation.
//!
//! Run: `cargo run --example record_app_server_fixtures` (needs `npm ci` for the pinned Codex CLI).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use codex_api_proxy::codex::launch::{resolve, spawn_in_group};
use codex_api_proxy::config::{self, Profile, ServerOverrides};
use codex_api_proxy::engine::app_server::protocol::{
    initialize_params, refusal, thread_start_params,
};
use codex_api_proxy::engine::app_server::worker::base_args;
use proxy_test_support::harness::{bench_envs, codex_launcher, manifest_dir, scratch_dir};
use proxy_test_support::mock_model::MockModel;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

const TIMEOUT: Duration = Duration::from_secs(30);

/// (fixture name, prompt, Codex tools on).
const SCENARIOS: [(&str, &str, bool); 11] = [
    ("default", "hello", false),
    ("deltas", "mock:deltas=12", false),
    ("status_500", "mock:status=500", false),
    ("quota", "mock:status=429 mock:quota", false),
    ("context", "mock:status=400 mock:context", false),
    ("model_missing", "mock:status=404", false),
    ("failed", "mock:failed", false),
    ("cut", "mock:cut", false),
    ("eof", "mock:eof", false),
    ("interrupt", "mock:hang", false),
    ("tools_on", "hello", true),
];

/// One app-server process spoken to line by line.
struct Rpc {
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl Rpc {
    async fn send(&mut self, message: Value) {
        let line = format!("{message}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next message from stdout (non-JSON lines are skipped).
    async fn next(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(TIMEOUT, self.stdout.next_line())
                .await
                .expect("the app-server answers in time")
                .unwrap()
                .expect("the app-server is running");
            if let Ok(message) = serde_json::from_str(&line) {
                return message;
            }
        }
    }

    /// Sends a request and returns its result; messages arriving meanwhile go to `other`.
    async fn request(&mut self, method: &str, params: Value, other: &mut Vec<Value>) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"id": id, "method": method, "params": params}))
            .await;
        loop {
            let message = self.next().await;
            if message.get("method").is_none() && message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
            other.push(message);
        }
    }
}

/// The profile the proxy would run these threads with.
fn profile(tools: bool, cwd: &str) -> Arc<Profile> {
    let text = format!(
        "[profiles.p]\nengine = \"app-server\"\ntools = {tools}\nmodel = \"mock-model\"\ndefault_cwd = {cwd:?}\nallowed_roots = [{cwd:?}]\n"
    );
    let config = config::parse(
        &text,
        Path::new("fixtures.toml"),
        &ServerOverrides::default(),
        &|_| None,
    )
    .expect("a valid config");
    config.profiles[0].clone()
}

/// Runs one scenario and returns the thread's messages.
async fn record(rpc: &mut Rpc, prompt: &str, tools: bool, cwd: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    let params = thread_start_params(&profile(tools, cwd), cwd, Some("mock-model"), None);
    let thread = rpc.request("thread/start", params, &mut seen).await;
    let thread_id = thread["thread"]["id"].as_str().unwrap().to_string();
    let input = json!([{"type": "text", "text": prompt, "text_elements": []}]);
    let started = rpc
        .request(
            "turn/start",
            json!({"threadId": thread_id, "input": input}),
            &mut seen,
        )
        .await;
    let turn_id = started["turn"]["id"].as_str().unwrap().to_string();
    if prompt.contains("mock:hang") {
        let params = json!({"threadId": thread_id, "turnId": turn_id});
        rpc.request("turn/interrupt", params, &mut seen).await;
    }
    loop {
        let message = rpc.next().await;
        if let (Some(method), Some(id)) = (message["method"].as_str(), message.get("id")) {
            let answer = match refusal(method) {
                Ok(result) => json!({"id": id, "result": result}),
                Err((code, text)) => json!({"id": id, "error": {"code": code, "message": text}}),
            };
            rpc.send(answer).await;
        }
        let done = message["method"] == "turn/completed";
        seen.push(message);
        if done {
            break;
        }
    }
    let mut unsubscribe_seen = Vec::new();
    rpc.request(
        "thread/unsubscribe",
        json!({"threadId": thread_id}),
        &mut unsubscribe_seen,
    )
    .await;
    seen.retain(|message| message["params"]["threadId"] == thread_id.as_str());
    seen
}

fn write_fixture(dir: &Path, name: &str, messages: &[Value], scratch: &str, port: &str) {
    let mut text = String::new();
    for message in messages {
        let line = message
            .to_string()
            .replace(scratch, "/workspace")
            .replace(port, "PORT");
        text.push_str(&line);
        text.push('\n');
    }
    let path = dir.join(format!("{name}.jsonl"));
    std::fs::write(&path, text).unwrap();
    println!("{} ({} messages)", path.display(), messages.len());
}

#[tokio::main]
async fn main() {
    let codex = resolve(codex_launcher().to_str().unwrap()).expect("run `npm ci` first");
    let mock = MockModel::start().await;
    let dir = scratch_dir(
        &bench_envs(),
        "fixtures-",
        &["codex-home", "workspace", "home"],
    );
    let workspace = dir.path().join("workspace");
    let mut args = base_args();
    for item in mock.provider_overrides() {
        args.extend(["-c".to_string(), item]);
    }
    let mut command = tokio::process::Command::new(&codex.program);
    command
        .args(&args)
        .envs(codex.env.iter().map(|(k, v)| (k, v)))
        .env("CODEX_HOME", dir.path().join("codex-home"))
        .env("HOME", dir.path().join("home"))
        .env_remove("RUST_LOG")
        .current_dir(&workspace);
    let (mut child, _group) = spawn_in_group(&mut command, std::process::Stdio::piped())
        .expect("codex app-server starts");
    let mut rpc = Rpc {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
        next_id: 1,
    };
    rpc.request("initialize", initialize_params(), &mut Vec::new())
        .await;
    rpc.send(json!({"method": "initialized"})).await;

    let out = manifest_dir().join("src/engine/app_server/fixtures");
    std::fs::create_dir_all(&out).unwrap();
    let cwd = workspace.display().to_string();
    let scratch = dir.path().display().to_string();
    let port = mock
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .replace("/v1", "");
    for (name, prompt, tools) in SCENARIOS {
        let messages = record(&mut rpc, prompt, tools, &cwd).await;
        write_fixture(&out, name, &messages, &scratch, &port);
    }
}
