//! Benchmark of the usage ledger (not a test; prints figures).
//!
//! 1. Through the proxy: requests per second of the release binary with the ledger on
//!    (`usage_db = FILE`) and off (`usage_db = ""`), side by side in one run: an app-server profile with
//!    two workers against the instant mock, `CLIENTS` concurrent clients, `N` requests a round after a
//!    warm-up, rounds interleaved on/off `ROUNDS` times; medians and the on/off ratio. Rows written and
//!    dropped are read back from the ledger file.
//! 2. In process: the cost of [`Recorder::record`] (what `LatencyLog::finish` calls on the request
//!    path) from one and four threads, with the ledger on and off, and the rate at which the writer
//!    thread commits a burst that fills its queue.
//!
//! Run: `cargo run --release --example bench_ledger [N]` (needs `npm ci` for the pinned Codex CLI;
//! builds the release proxy first).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use codex_api_proxy::usage::{Api, By, Reader, Record, Recorder, QUEUE_ROWS};
use proxy_test_support::harness::{
    self, bench_envs, build_release_proxy, codex_bin, profile_toml, proxy_command, scratch_dir,
    server_toml, toml_string_list, Proxy,
};
use proxy_test_support::mock_model::MockModel;
use serde_json::json;

const CLIENTS: usize = 8;
const ROUNDS: usize = 3;
const WARM_UP: usize = 24;

async fn start(client: &reqwest::Client, binary: &Path, dir: &Path, config: &str) -> Proxy {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = harness::start_proxy(
        proxy_command(
            binary,
            &["--log-level", "warning"],
            &path,
            &dir.join("home"),
            &dir.join("codex-home"),
        )
        .stderr(Stdio::null()),
    );
    assert!(
        harness::wait_ready(client, &proxy.base_url, 400).await,
        "proxy never became ready"
    );
    proxy
}

/// Sends `requests` chat requests from [`CLIENTS`] concurrent clients; returns requests per second.
async fn load(client: &reqwest::Client, url: &str, requests: usize) -> f64 {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, next) = (client.clone(), url.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let response = client
                    .post(format!("{url}/v1/chat/completions"))
                    .json(
                        &json!({"model": "bench", "messages": [{"role": "user", "content": "hi"}]}),
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let _ = response.bytes().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    requests as f64 / started.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn sample_record(index: usize) -> Record {
    Record {
        at: SystemTime::now(),
        request_id: format!("{index:024x}"),
        api: Api::Chat,
        profile: "bench".into(),
        fallback_from: Vec::new(),
        key_name: Some("key-0123abcd".into()),
        model: "bench".into(),
        engine: "app-server".into(),
        stream: index % 2 == 0,
        status: 200,
        error_code: None,
        prompt_tokens: 120,
        completion_tokens: 30,
        cached_tokens: 20,
        reasoning_tokens: 10,
        latency: Duration::from_millis(40),
        first_token: Some(Duration::from_millis(12)),
        tool_calls: 0,
    }
}

/// Nanoseconds per `record` call from `threads` threads.
fn record_cost(recorder: &Arc<Recorder>, threads: usize, per_thread: usize) -> f64 {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let recorder = recorder.clone();
            std::thread::spawn(move || {
                for index in 0..per_thread {
                    recorder.record(sample_record(thread * per_thread + index));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    started.elapsed().as_nanos() as f64 / (threads * per_thread) as f64
}

#[tokio::main]
async fn main() {
    let requests: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(400);
    let binary = build_release_proxy();
    let dir = scratch_dir(
        &bench_envs(),
        "bench-ledger-",
        &["home", "codex-home", "workspace"],
    );
    let workspace = dir.path().join("workspace");
    let mock = MockModel::start().await;
    let overrides = toml_string_list(&mock.provider_overrides());
    let ledger = dir.path().join("usage.sqlite3");
    let config = |usage_db: &str| {
        format!(
            "{}usage_db = {usage_db:?}\n{}engine = \"app-server\"\nworkers = 2\nmax_concurrency = 8\n",
            server_toml(&codex_bin()),
            profile_toml("bench", &workspace, &overrides),
        )
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();

    println!(
        "1. through the proxy: {requests} requests a round, {CLIENTS} clients, app-server (2 workers), instant mock"
    );
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for ledger_on in [true, false] {
            let usage_db = if ledger_on {
                ledger.display().to_string()
            } else {
                String::new()
            };
            let proxy = start(&client, &binary, dir.path(), &config(&usage_db)).await;
            load(&client, &proxy.base_url, WARM_UP).await;
            let rps = load(&client, &proxy.base_url, requests).await;
            drop(proxy);
            println!(
                "   round {}: ledger {:<3} {rps:8.1} requests/s",
                round + 1,
                if ledger_on { "on" } else { "off" }
            );
            if ledger_on { &mut on } else { &mut off }.push(rps);
        }
    }
    let (on_median, off_median) = (median(&mut on), median(&mut off));
    println!(
        "   median: ledger on {on_median:.1} requests/s, off {off_median:.1} requests/s, on/off = {:.3}",
        on_median / off_median
    );
    let rows: u64 = Reader::open(&ledger)
        .unwrap()
        .summary(SystemTime::UNIX_EPOCH, By::Profile)
        .unwrap()
        .iter()
        .map(|row| row.requests)
        .sum();
    let expected = (ROUNDS * (requests + WARM_UP)) as u64;
    println!("   ledger rows written: {rows} of {expected} requests sent with the ledger on");

    println!("2. in process: the cost of Recorder::record on the request path");
    let per_thread = QUEUE_ROWS / 4;
    for threads in [1, 4] {
        let path = dir.path().join(format!("in-process-{threads}.sqlite3"));
        let on = Arc::new(Recorder::start(Some(&path), 90));
        let on_ns = record_cost(&on, threads, per_thread);
        let off_ns = record_cost(&Arc::new(Recorder::default()), threads, per_thread);
        // The burst fits the queue, so nothing is dropped; closing waits for the writer to commit it.
        let flush = Instant::now();
        let stats = on.close().unwrap();
        let flushed_in = flush.elapsed();
        println!(
            "   {threads} thread(s): ledger on {on_ns:.0} ns per request, off (live figures only) {off_ns:.0} ns; \
             {} rows written, {} dropped; the writer committed at {:.0} rows/s",
            stats.written,
            stats.dropped,
            stats.written as f64 / (flushed_in.as_secs_f64() + on_ns * (threads * per_thread) as f64 / 1e9)
        );
    }
}
