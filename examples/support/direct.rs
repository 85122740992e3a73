//! A `codex app-server` worker driven directly over JSON-RPC, without the proxy: what the direct
//! benchmarks (`bench_codex_direct`, `bench_codex_options`, `bench_turn_timeline`) share.

// Each benchmark includes this file as its own module and uses part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_api_proxy::codex::launch::{spawn_in_group, GroupKiller, ResolvedCodex};
use codex_api_proxy::engine::app_server::protocol::initialize_params;
use codex_api_proxy::engine::app_server::rpc::Connection;
use serde_json::{json, Value};

/// The longest wait for any answer of a worker.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A running, initialized `codex app-server` worker.
pub struct Worker {
    pub connection: Arc<Connection>,
    pub child: tokio::process::Child,
    _group: GroupKiller,
}

/// The command of `codex app-server` with `args` in `cwd`, with `CODEX_HOME` = `codex_home`, an empty
/// `HOME` (as the benchmarks give the proxy: Codex snapshots the login shell of `HOME` for each thread
/// that has an environment, so a heavy shell profile would dominate the figures) and `env` on top of the
/// benchmark's own environment.
pub fn command(
    codex: &ResolvedCodex,
    args: &[String],
    (codex_home, home, cwd): (&Path, &Path, &Path),
    env: &[(OsString, OsString)],
) -> std::process::Command {
    let mut command = std::process::Command::new(&codex.program);
    command
        .args(args)
        .envs(codex.env.iter().map(|(k, v)| (k, v)))
        .envs(env.iter().cloned())
        .env("CODEX_HOME", codex_home)
        .env("HOME", home)
        .env_remove("RUST_LOG")
        .current_dir(cwd);
    command
}

impl Worker {
    /// Starts the worker of [`command`] and runs the `initialize` handshake.
    pub async fn start(
        codex: &ResolvedCodex,
        args: &[String],
        dirs: (&Path, &Path, &Path),
        env: &[(OsString, OsString)],
    ) -> Worker {
        let mut command = tokio::process::Command::from(command(codex, args, dirs, env));
        // Stderr is not read, as the proxy reads its workers' only when one fails (`codex::stderr_file`).
        let (mut child, group) = spawn_in_group(&mut command, std::process::Stdio::null())
            .expect("codex app-server starts");
        let connection =
            Connection::start(child.stdin.take().unwrap(), child.stdout.take().unwrap());
        connection
            .request("initialize", initialize_params(), TIMEOUT)
            .await
            .expect("initialize");
        connection.notify("initialized", None).await.unwrap();
        Worker {
            connection,
            child,
            _group: group,
        }
    }

    /// The process id of the worker.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }
}

/// One turn on a new thread: `thread/start` with `params`, `turn/start` saying "hello", the wait for
/// `turn/completed` (which must be `completed`), then `cleanup` (`thread/unsubscribe`,
/// `thread/archive`) if any. Returns the ms until `turn/completed`.
pub async fn turn(connection: &Connection, params: Value, cleanup: Option<&str>) -> f64 {
    let started = Instant::now();
    let thread = connection
        .request("thread/start", params, TIMEOUT)
        .await
        .expect("thread/start");
    let thread_id = thread["thread"]["id"].as_str().unwrap().to_string();
    let mut events = connection.subscribe_thread(&thread_id);
    connection
        .request(
            "turn/start",
            json!({"threadId": thread_id, "input": [{"type": "text", "text": "hello"}]}),
            TIMEOUT,
        )
        .await
        .expect("turn/start");
    while let Some((method, params)) = events.recv().await {
        if method == "turn/completed" {
            assert_eq!(params["turn"]["status"], "completed", "{params}");
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    connection.forget_thread(&thread_id);
    if let Some(method) = cleanup {
        let _ = connection
            .request(method, json!({"threadId": thread_id}), TIMEOUT)
            .await;
    }
    elapsed
}

/// The `SSL_CERT_*` variables the proxy gives its workers (`codex::trust`), from the benchmark's own
/// environment, with the certificate file written under `codex_home`.
pub fn proxy_certificates(codex_home: &Path) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    assert!(
        codex_api_proxy::codex::trust::compact(&mut env, codex_home),
        "no certificates to compact"
    );
    env.retain(|(name, _)| name.to_str().is_some_and(|n| n.starts_with("SSL_CERT_")));
    env
}
