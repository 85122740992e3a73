//! Direct JSON-RPC experiment on `codex app-server` (not a test; prints figures).
//!
//! Drives the native Codex binary (found the way `codex::launch::resolve` finds it behind the npm
//! launcher) against the test suite's mock model, without the proxy, and measures turns/s, p50 turn
//! latency and Codex CPU per turn (utime + stime of the worker processes and their children, from
//! `/proc`) for one option at a time against a baseline that starts threads the way the proxy does today:
//!
//! - `baseline`: `thread/start {cwd, approvalPolicy, sandbox, ephemeral}`, provider config as `-c` on the
//!   worker's command line, `thread/unsubscribe` after each turn;
//! - `environments: []`: plus `environments: []` and `dynamicTools: []` in `thread/start`;
//! - `config per thread`: the provider config (and model) in `thread/start.config` instead of `-c`;
//! - `config both`: the provider config as `-c` and again in `thread/start.config` (the earlier Python
//!   tool's way);
//! - `no unsubscribe`: no `thread/unsubscribe` after the turn;
//! - `tools off`: `config` = `protocol::no_tools_config()` and `dynamicTools: []`, as `tools = false` does;
//! - `tools off + env []`: both of the above.
//!
//! Each option runs on one worker at 1, 2 and 4 concurrent turns, and on two workers at 1 and 2 turns
//! each. The options are interleaved over several rounds; the medians of the rounds are printed, and the
//! spread (min–max of the rounds) of turns/s so the noise of a shared machine shows. The model request size
//! of each option is printed too.
//!
//! Run: `cargo run --release --example bench_codex_direct -- [TURNS_PER_CELL] [ROUNDS]` (default 40, 3; use an odd ROUNDS, the median of an even count is the upper middle one;
//! needs `npm ci` for the pinned Codex CLI).

#[path = "support/direct.rs"]
mod direct;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codex_api_proxy::codex::launch::{resolve, ResolvedCodex};
use codex_api_proxy::engine::app_server::protocol::no_tools_config;
use codex_api_proxy::engine::app_server::rpc::Connection;
use codex_api_proxy::engine::app_server::worker::base_args;
use direct::Worker;
use proxy_test_support::harness::{
    self, codex_launcher, cpu_per_request, cpu_sample, percentile, scratch_dir, CpuSample,
};
use proxy_test_support::mock_model::MockModel;
use serde_json::{json, Value};

/// (workers, concurrent turns per worker) of each cell.
const CELLS: [(usize, usize); 5] = [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2)];

/// One way of starting threads and workers.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Baseline,
    EmptyEnvironments,
    ConfigPerThread,
    ConfigBoth,
    NoUnsubscribe,
    ToolsOff,
    ToolsOffEmptyEnvironments,
}

const VARIANTS: [Variant; 7] = [
    Variant::Baseline,
    Variant::EmptyEnvironments,
    Variant::ConfigPerThread,
    Variant::ConfigBoth,
    Variant::NoUnsubscribe,
    Variant::ToolsOff,
    Variant::ToolsOffEmptyEnvironments,
];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Baseline => "baseline",
            Variant::EmptyEnvironments => "environments: []",
            Variant::ConfigPerThread => "config per thread",
            Variant::ConfigBoth => "config both",
            Variant::NoUnsubscribe => "no unsubscribe",
            Variant::ToolsOff => "tools off",
            Variant::ToolsOffEmptyEnvironments => "tools off + env []",
        }
    }

    fn config_on_command_line(self) -> bool {
        self != Variant::ConfigPerThread
    }

    fn config_in_thread(self) -> bool {
        matches!(self, Variant::ConfigPerThread | Variant::ConfigBoth)
    }
}

/// The mock provider and model as a `thread/start.config` object (the `-c` values, parsed).
fn provider_config(mock: &MockModel) -> Value {
    json!({
        "model": "mock-model",
        "model_provider": "mock",
        "model_providers": {"mock": {
            "name": "mock",
            "base_url": mock.base_url(),
            "wire_api": "responses",
            "request_max_retries": 0,
            "stream_max_retries": 0,
            "stream_idle_timeout_ms": 3000,
        }},
    })
}

/// `thread/start` params of one variant.
fn thread_params(variant: Variant, cwd: &str, provider: &Value) -> Value {
    let mut params =
        json!({"cwd": cwd, "approvalPolicy": "never", "sandbox": "read-only", "ephemeral": true});
    if variant.config_in_thread() {
        params["config"] = provider.clone();
    }
    if matches!(
        variant,
        Variant::ToolsOff | Variant::ToolsOffEmptyEnvironments
    ) {
        params["config"] = no_tools_config();
        params["dynamicTools"] = json!([]);
    }
    if matches!(
        variant,
        Variant::EmptyEnvironments | Variant::ToolsOffEmptyEnvironments
    ) {
        params["environments"] = json!([]);
        params["dynamicTools"] = json!([]);
    }
    params
}

/// Starts a worker with the proxy's fixed arguments and `overrides` as `-c`.
async fn start_worker(
    codex: &ResolvedCodex,
    overrides: &[String],
    codex_home: &Path,
    cwd: &Path,
) -> Worker {
    let mut args = base_args();
    for item in overrides {
        args.push("-c".into());
        args.push(item.clone());
    }
    let home = codex_home.parent().unwrap().join("home");
    Worker::start(codex, &args, (codex_home, &home, cwd), &[]).await
}

/// One turn, then (unless told not to) `thread/unsubscribe`.
async fn turn(connection: &Connection, params: Value, unsubscribe: bool) -> f64 {
    direct::turn(
        connection,
        params,
        unsubscribe.then_some("thread/unsubscribe"),
    )
    .await
}

/// One cell's result: turns/s, p50 latency (ms), Codex CPU per turn (ms).
#[derive(Clone, Copy)]
struct Cell {
    rate: f64,
    p50: f64,
    cpu: f64,
}

/// `turns` turns spread over `workers[..count]` with `per_worker` concurrent turns on each.
async fn run_cell(
    workers: &[Worker],
    count: usize,
    per_worker: usize,
    turns: usize,
    params: &Value,
    unsubscribe: bool,
) -> Cell {
    let before: Vec<CpuSample> = workers[..count]
        .iter()
        .map(|w| cpu_sample(w.pid()))
        .collect();
    let remaining = Arc::new(AtomicUsize::new(turns));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in &workers[..count] {
        for _ in 0..per_worker {
            let (connection, params) = (worker.connection.clone(), params.clone());
            let (remaining, samples) = (remaining.clone(), samples.clone());
            tasks.push(tokio::spawn(async move {
                while remaining
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let ms = turn(&connection, params.clone(), unsubscribe).await;
                    samples.lock().unwrap().push(ms);
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: f64 = workers[..count]
        .iter()
        .zip(&before)
        .map(|(w, b)| {
            let (own, children) = cpu_per_request(b, &cpu_sample(w.pid()), turns);
            own + children
        })
        .sum();
    let samples = samples.lock().unwrap().clone();
    Cell {
        rate: turns as f64 / elapsed,
        p50: percentile(&samples, 0.5),
        cpu,
    }
}

/// Starts two workers for `variant`, warms them, measures every cell; also the model request size.
async fn run_variant(
    variant: Variant,
    codex: &ResolvedCodex,
    mock: &MockModel,
    dir: &Path,
    turns: usize,
) -> (Vec<Cell>, usize) {
    let overrides: Vec<String> = if variant.config_on_command_line() {
        mock.provider_overrides()
            .into_iter()
            .chain(["model=\"mock-model\"".to_string()])
            .collect()
    } else {
        Vec::new()
    };
    let home = dir.join("codex-home");
    let cwd = dir.join("workspace");
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(start_worker(codex, &overrides, &home, &cwd).await);
    }
    let params = thread_params(variant, &cwd.display().to_string(), &provider_config(mock));
    let unsubscribe = variant != Variant::NoUnsubscribe;
    for worker in &workers {
        for _ in 0..3 {
            turn(&worker.connection, params.clone(), unsubscribe).await;
        }
    }
    let before = mock.request_count();
    turn(&workers[0].connection, params.clone(), unsubscribe).await;
    let size = mock.requests()[before].body_len();
    let mut cells = Vec::new();
    for (count, per_worker) in CELLS {
        cells.push(run_cell(&workers, count, per_worker, turns, &params, unsubscribe).await);
    }
    for mut worker in workers {
        worker.connection.close_stdin();
        let _ = tokio::time::timeout(Duration::from_secs(2), worker.child.wait()).await;
    }
    (cells, size)
}

fn spread(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

#[tokio::main]
async fn main() {
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let turns = numbers.next().unwrap_or(40).max(4);
    let rounds = numbers.next().unwrap_or(3).max(1);
    let mock = MockModel::start().await;
    let codex = resolve(codex_launcher().to_str().unwrap()).expect("run `npm ci` first");
    let dir = scratch_dir(
        &harness::bench_envs(),
        "direct-",
        &["codex-home", "workspace", "home"],
    );
    // results[variant][round] = (cells, request size)
    let mut results: Vec<Vec<(Vec<Cell>, usize)>> = vec![Vec::new(); VARIANTS.len()];
    for round in 1..=rounds {
        for (index, variant) in VARIANTS.iter().enumerate() {
            let result = run_variant(*variant, &codex, &mock, dir.path(), turns).await;
            let line: Vec<String> = result
                .0
                .iter()
                .map(|c| format!("{:5.1}/s {:5.1}ms {:5.1}cpu", c.rate, c.p50, c.cpu))
                .collect();
            eprintln!("round {round} {:<20} {}", variant.label(), line.join(" | "));
            results[index].push(result);
        }
    }
    print_table(&results, turns, rounds);
}

fn print_table(results: &[Vec<(Vec<Cell>, usize)>], turns: usize, rounds: usize) {
    println!(
        "== codex app-server driven directly: {turns} turns per cell, medians of {rounds} interleaved rounds =="
    );
    println!("cell = workers × concurrent turns per worker; each entry: turns/s [min–max of rounds], p50 ms, Codex CPU ms/turn");
    let header: Vec<String> = CELLS.iter().map(|(w, c)| format!("{w}×{c}")).collect();
    println!(
        "{:<20} {:>8} | {}",
        "variant",
        "req B",
        header
            .iter()
            .map(|h| format!("{h:^32}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for (index, variant) in VARIANTS.iter().enumerate() {
        let rounds_of = &results[index];
        let mut cells = Vec::new();
        for cell in 0..CELLS.len() {
            let pick = |f: fn(&Cell) -> f64| -> Vec<f64> {
                rounds_of.iter().map(|(cells, _)| f(&cells[cell])).collect()
            };
            let rates = pick(|c| c.rate);
            let (low, high) = spread(&rates);
            cells.push(format!(
                "{:5.1} [{:4.1}–{:4.1}] {:5.1} {:5.1}",
                percentile(&rates, 0.5),
                low,
                high,
                percentile(&pick(|c| c.p50), 0.5),
                percentile(&pick(|c| c.cpu), 0.5)
            ));
        }
        println!(
            "{:<20} {:>8} | {}",
            variant.label(),
            rounds_of[0].1,
            cells.join(" | ")
        );
    }
}
