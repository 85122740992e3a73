//! Codex CPU per warm tool-free turn under different worker and thread options (not a test; prints
//! figures).
//!
//! Drives the native Codex binary directly over JSON-RPC against the test suite's mock model. Each
//! variant gets its own worker; the variants are interleaved over several rounds of N turns, two at a
//! time on the worker, and the medians of the rounds are printed: turns/s, p50 latency and Codex CPU
//! per turn (utime + stime of the worker's process tree from `/proc`).
//!
//! - `proxy`: how the proxy ran a `tools = false` profile before `codex::trust` (its worker arguments,
//!   `no_tools_config()` in `thread/start.config`, `environments: []`, `dynamicTools: []`,
//!   `thread/unsubscribe` after; the benchmark's own certificate environment);
//! - `proxy, no thread config`: the same without `thread/start.config` (the worker's command line
//!   already carries the same settings as `-c`/`--disable`);
//! - `Python 0.1.1`: the earlier Python tool's worker arguments and thread params (`config` = its `-c`
//!   values, `thread/archive` after);
//! - `proxy, empty SSL_CERT_DIR`: the proxy's way with an empty certificate directory (Codex reads the
//!   system certificates for every turn's HTTP client; the bundle file still applies);
//! - `proxy, one trust file`: the proxy's way with `codex::trust` (the bundle and the directory's
//!   certificates in one file, an empty directory), as the proxy runs its workers now;
//! - `trust file, 1 runtime thread`: the same with `TOKIO_WORKER_THREADS=1` (Codex's async runtime on
//!   one thread instead of one per core).
//!
//! Run: `cargo run --release --example bench_codex_options -- [TURNS] [ROUNDS]` (default 60, 5).

#[path = "support/direct.rs"]
mod direct;

use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

use codex_api_proxy::codex::launch::{resolve, ResolvedCodex, NO_TOOLS_ARGS};
use codex_api_proxy::engine::app_server::protocol::no_tools_config;
use codex_api_proxy::engine::app_server::rpc::Connection;
use codex_api_proxy::engine::app_server::worker::base_args;
use direct::Worker;
use proxy_test_support::harness::{
    self, codex_launcher, cpu_per_request, cpu_sample, percentile, scratch_dir,
};
use proxy_test_support::mock_model::MockModel;
use serde_json::{json, Value};

const CONCURRENT: usize = 2;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Proxy,
    ProxyNoThreadConfig,
    Python,
    ProxyEmptyCertDir,
    ProxyTrustFile,
    ProxyOneRuntimeThread,
}

const VARIANTS: [Variant; 6] = [
    Variant::Proxy,
    Variant::ProxyNoThreadConfig,
    Variant::Python,
    Variant::ProxyEmptyCertDir,
    Variant::ProxyTrustFile,
    Variant::ProxyOneRuntimeThread,
];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Proxy => "proxy",
            Variant::ProxyNoThreadConfig => "proxy, no thread config",
            Variant::Python => "Python 0.1.1",
            Variant::ProxyEmptyCertDir => "proxy, empty SSL_CERT_DIR",
            Variant::ProxyTrustFile => "proxy, one trust file",
            Variant::ProxyOneRuntimeThread => "trust file, 1 runtime thread",
        }
    }

    fn args(self, mock: &MockModel) -> Vec<String> {
        let mut args: Vec<String> = match self {
            Variant::Python => [
                "app-server",
                "--disable",
                "apps",
                "--disable",
                "plugins",
                "--disable",
                "skill_mcp_dependency_install",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect(),
            _ => {
                let mut args = base_args();
                args.extend(NO_TOOLS_ARGS.iter().map(|a| a.to_string()));
                args
            }
        };
        for item in mock.provider_overrides() {
            args.push("-c".into());
            args.push(item);
        }
        args.push("-c".into());
        args.push("model=\"mock-model\"".into());
        if self == Variant::Python {
            args.extend(["-c".into(), "mcp_servers={}".into()]);
            args.extend(["-c".into(), "skills.config=[{name=\"imagegen\",enabled=false},{name=\"openai-docs\",enabled=false},{name=\"plugin-creator\",enabled=false},{name=\"skill-creator\",enabled=false},{name=\"skill-installer\",enabled=false}]".into()]);
        }
        args
    }

    fn thread_params(self, cwd: &str, mock: &MockModel) -> Value {
        let mut params = json!({
            "cwd": cwd, "approvalPolicy": "never", "sandbox": "read-only", "ephemeral": true,
            "dynamicTools": [], "environments": [],
        });
        match self {
            Variant::Proxy
            | Variant::ProxyEmptyCertDir
            | Variant::ProxyTrustFile
            | Variant::ProxyOneRuntimeThread => params["config"] = no_tools_config(),
            Variant::ProxyNoThreadConfig => {}
            Variant::Python => {
                params["model"] = json!("mock-model");
                params["config"] = json!({
                    "model_provider": "mock",
                    "model_providers": {"mock": {
                        "name": "mock", "base_url": mock.base_url(), "wire_api": "responses",
                        "request_max_retries": 0, "stream_max_retries": 0,
                        "stream_idle_timeout_ms": 3000,
                    }},
                });
            }
        }
        params
    }
}

async fn start_worker(
    codex: &ResolvedCodex,
    variant: Variant,
    mock: &MockModel,
    dir: &Path,
) -> Worker {
    let codex_home = dir.join("codex-home");
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if variant == Variant::ProxyEmptyCertDir {
        env.push(("SSL_CERT_DIR".into(), dir.join("certs").into()));
    }
    if variant == Variant::ProxyOneRuntimeThread {
        env.push(("TOKIO_WORKER_THREADS".into(), "1".into()));
    }
    if matches!(
        variant,
        Variant::ProxyTrustFile | Variant::ProxyOneRuntimeThread
    ) {
        env.extend(direct::proxy_certificates(&codex_home));
    }
    let dirs = (
        codex_home.as_path(),
        &*dir.join("home"),
        &*dir.join("workspace"),
    );
    Worker::start(codex, &variant.args(mock), dirs, &env).await
}

async fn turn(connection: &Connection, variant: Variant, params: Value) -> f64 {
    let cleanup = if variant == Variant::Python {
        "thread/archive"
    } else {
        "thread/unsubscribe"
    };
    direct::turn(connection, params, Some(cleanup)).await
}

/// (turns/s, p50 ms, Codex CPU ms per turn) of `turns` turns, `CONCURRENT` at a time.
async fn run(worker: &Worker, variant: Variant, params: &Value, turns: usize) -> (f64, f64, f64) {
    let pid = worker.pid();
    let before = cpu_sample(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT {
        let (connection, params) = (worker.connection.clone(), params.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for _ in 0..turns / CONCURRENT {
                samples.push(turn(&connection, variant, params.clone()).await);
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (own, children) = cpu_per_request(&before, &cpu_sample(pid), samples.len());
    (
        samples.len() as f64 / elapsed,
        percentile(&samples, 0.5),
        own + children,
    )
}

#[tokio::main]
async fn main() {
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let turns = numbers.next().unwrap_or(60).max(CONCURRENT);
    let rounds = numbers.next().unwrap_or(5).max(1);
    let mock = MockModel::start().await;
    let codex = resolve(codex_launcher().to_str().unwrap()).expect("run `npm ci` first");
    let mut workers = Vec::new();
    let mut dirs = Vec::new();
    for variant in VARIANTS {
        let dir = scratch_dir(
            &harness::bench_envs(),
            "options-",
            &["codex-home", "workspace", "home", "certs"],
        );
        let worker = start_worker(&codex, variant, &mock, dir.path()).await;
        let cwd = dir.path().join("workspace").display().to_string();
        let params = variant.thread_params(&cwd, &mock);
        for _ in 0..4 {
            turn(&worker.connection, variant, params.clone()).await;
        }
        workers.push((worker, params));
        dirs.push(dir);
    }
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); VARIANTS.len()];
    for round in 0..rounds {
        for offset in 0..VARIANTS.len() {
            let index = (round + offset) % VARIANTS.len();
            let (worker, params) = &workers[index];
            let result = run(worker, VARIANTS[index], params, turns).await;
            eprintln!(
                "round {} {:<28} {:6.1}/s {:6.1} ms {:6.1} ms CPU",
                round + 1,
                VARIANTS[index].label(),
                result.0,
                result.1,
                result.2
            );
            results[index].push(result);
        }
    }
    println!("== Codex CPU per warm tool-free turn, {turns} turns ({CONCURRENT} at a time on one worker) per round, medians of {rounds} interleaved rounds ==");
    println!(
        "{:<28} {:>9} {:>9} {:>12}",
        "variant", "turns/s", "p50 ms", "CPU ms/turn"
    );
    for (variant, rounds) in VARIANTS.iter().zip(&results) {
        let median = |field: fn(&(f64, f64, f64)) -> f64| {
            percentile(&rounds.iter().map(field).collect::<Vec<_>>(), 0.5)
        };
        println!(
            "{:<28} {:>9.1} {:>9.1} {:>12.1}",
            variant.label(),
            median(|r| r.0),
            median(|r| r.1),
            median(|r| r.2)
        );
    }
}
