//! Benchmark of the app-server engine (not a test; prints figures).
//!
//! 1. Sequential latency: N requests through the proxy (app-server profile, one worker) next to N turns
//!    driven directly over JSON-RPC on the same native `codex app-server` binary, against the same mock.
//! 2. Throughput at 1, 4 and 8 concurrent clients: exec vs app-server with one and two workers, against
//!    an instant mock and a mock that takes about one second per answer; plus the memory of the proxy and
//!    its Codex processes after each run.
//! 3. The size of the model request with and without `tools = false`.
//! 4. With `--python` (or `BENCH_PYTHON=1`): the earlier Python tool (codex-api-proxy 0.1.1, installed
//!    into a venv under `target/` by `bench/python_contender.sh`) side by side with this proxy, same mock,
//!    same native Codex binary, both app-server engines with two workers, interleaved over 3 rounds.
//!    This proxy runs with `tools = false` (like the Python tool's threads: `environments: []`, no
//!    dynamic tools), the same with `spare_threads = false`, and, labelled, with `tools = true`: warm
//!    sequential p50, streamed p50, 4-client
//!    throughput, and CPU per request (over at least 150 requests a round); medians and ratios against
//!    the Python tool (see `support/contender.rs`).
//!
//! Every run also prints the CPU time per request of the proxy process and of its Codex processes (utime
//! + stime from `/proc`, the whole process tree, see `harness::cpu_sample`).
//!
//! Run: `cargo build --release && cargo run --release --example bench_app_server [N] [--python]`
//! (`--python-only` runs section 4 alone; `--probe` runs its workloads once on this proxy alone, for
//! counting syscalls or instructions per request, see `support/contender.rs`)
//! (needs `npm ci` for the pinned Codex CLI).

#[path = "support/contender.rs"]
mod contender;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_api_proxy::codex::launch::{resolve, spawn_in_group};
use codex_api_proxy::engine::app_server::protocol::initialize_params;
use codex_api_proxy::engine::app_server::rpc::Connection;
use codex_api_proxy::engine::app_server::worker::base_args;
use proxy_test_support::harness::{
    self, bench_envs, codex_launcher, cpu_per_request, cpu_sample, memory_mib, percentile,
    prebuilt_proxy, profile_toml, proxy_command, scratch_dir, server_toml, toml_string_list, Proxy,
};
use proxy_test_support::mock_model::MockModel;
use serde_json::json;

const SLOW: &str = "mock:deltas=4 mock:delay_ms=250";

/// Writes `config` to `DIR/config.toml` and starts the proxy on it, waiting until it is ready.
async fn start_proxy(client: &reqwest::Client, dir: &Path, config: &str) -> Proxy {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = harness::start_proxy(
        proxy_command(
            &prebuilt_proxy(),
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

pub async fn post(client: &reqwest::Client, url: &str, model: &str, text: &str) -> f64 {
    let started = Instant::now();
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let _ = response.bytes().await.unwrap();
    started.elapsed().as_secs_f64() * 1000.0
}

/// One turn driven directly over JSON-RPC, as a minimal client would.
/// A streamed request's time to its response headers (the first byte), to its first content
/// chunk, and to its end, in ms.
async fn stream_timings(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    text: &str,
) -> (f64, f64, f64) {
    use futures_util::StreamExt;
    let ms = |started: Instant| started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": model, "stream": true, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let headers = ms(started);
    let mut first_content = None;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        if first_content.is_none() && String::from_utf8_lossy(&chunk).contains("\"content\":\"H") {
            first_content = Some(ms(started));
        }
    }
    (headers, first_content.unwrap_or(f64::NAN), ms(started))
}

async fn direct_turn(connection: &Connection, cwd: &str, text: &str) -> f64 {
    let started = Instant::now();
    let timeout = Duration::from_secs(30);
    let thread = connection
        .request(
            "thread/start",
            json!({"cwd": cwd, "approvalPolicy": "never", "sandbox": "read-only", "ephemeral": true}),
            timeout,
        )
        .await
        .unwrap();
    let thread_id = thread["thread"]["id"].as_str().unwrap().to_string();
    let mut events = connection.subscribe_thread(&thread_id);
    connection
        .request(
            "turn/start",
            json!({"threadId": thread_id, "input": [{"type": "text", "text": text}]}),
            timeout,
        )
        .await
        .unwrap();
    while let Some((method, _)) = events.recv().await {
        if method == "turn/completed" {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    connection.forget_thread(&thread_id);
    let _ = connection
        .request(
            "thread/unsubscribe",
            json!({"threadId": thread_id}),
            timeout,
        )
        .await;
    elapsed
}

#[tokio::main]
async fn main() {
    let requests: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(40);
    let python_only = std::env::args().any(|arg| arg == "--python-only");
    let with_python = python_only
        || std::env::args().any(|arg| arg == "--python")
        || std::env::var("BENCH_PYTHON").is_ok_and(|value| value == "1");
    let dir = scratch_dir(
        &bench_envs(),
        "bench-",
        &["home", "codex-home", "workspace", "direct-home"],
    );
    let workspace = dir.path().join("workspace");
    let mock = MockModel::start().await;
    let launcher = codex_launcher();
    let codex = resolve(launcher.to_str().unwrap()).expect("run `npm ci` first");
    let overrides: Vec<String> = mock
        .provider_overrides()
        .into_iter()
        .chain(["model=\"mock-model\"".to_string()])
        .collect();
    let client = reqwest::Client::new();

    if std::env::args().any(|arg| arg == "--probe") {
        contender::probe(&client, &mock, &launcher, &workspace, requests).await;
        return;
    }
    if python_only {
        contender::compare(&client, &mock, &launcher, &workspace, requests).await;
        return;
    }

    // --- 1. Sequential latency: proxy vs direct JSON-RPC on the same binary.
    let profile = |name: &str, extra: &str| {
        format!(
            "{}max_concurrency = 8\nmax_queue_size = 64\n{extra}\n",
            profile_toml(
                name,
                &workspace,
                &toml_string_list(&mock.provider_overrides())
            ),
        )
    };
    let config = format!(
        "{}{}{}",
        server_toml(&launcher),
        profile("as1", "engine = \"app-server\"\nworkers = 1"),
        // The same set-up with a fallback chain: the pipeline waits for the run's first event.
        profile(
            "as1f",
            "engine = \"app-server\"\nworkers = 1\nfallbacks = [\"as1\"]"
        ),
    );
    let proxy = start_proxy(&client, dir.path(), &config).await;

    let mut args = base_args();
    for item in &overrides {
        args.push("-c".into());
        args.push(item.clone());
    }
    let mut command = tokio::process::Command::new(&codex.program);
    command
        .args(&args)
        .env("CODEX_HOME", dir.path().join("direct-home"))
        // The same HOME as the proxy: Codex snapshots the login shell of HOME for each thread.
        .env("HOME", dir.path().join("home"))
        .env_remove("RUST_LOG")
        .current_dir(&workspace);
    // Stderr is not read, as the proxy reads its workers' only when one fails (`codex::stderr_file`).
    let (mut child, _group) = spawn_in_group(&mut command, std::process::Stdio::null()).unwrap();
    let connection = Connection::start(child.stdin.take().unwrap(), child.stdout.take().unwrap());
    connection
        .request("initialize", initialize_params(), Duration::from_secs(30))
        .await
        .unwrap();
    connection.notify("initialized", None).await.unwrap();
    let cwd = workspace.display().to_string();
    // Warm both sides.
    for _ in 0..3 {
        direct_turn(&connection, &cwd, "warm").await;
        post(&client, &proxy.base_url, "as1", "warm").await;
    }
    let mut direct = Vec::new();
    let mut through = Vec::new();
    let proxy_before = cpu_sample(proxy.pid());
    let direct_pid = child.id().unwrap();
    let direct_before = cpu_sample(direct_pid);
    for _ in 0..requests {
        direct.push(direct_turn(&connection, &cwd, "hello").await);
        through.push(post(&client, &proxy.base_url, "as1", "hello").await);
    }
    let (proxy_cpu, codex_cpu) = cpu_per_request(&proxy_before, &cpu_sample(proxy.pid()), requests);
    let (direct_cpu, direct_children) =
        cpu_per_request(&direct_before, &cpu_sample(direct_pid), requests);
    let (d50, d90) = (percentile(&direct, 0.5), percentile(&direct, 0.9));
    let (p50, p90) = (percentile(&through, 0.5), percentile(&through, 0.9));
    println!("== sequential latency, {requests} requests each, instant mock (ms) ==");
    println!("direct JSON-RPC turn      p50 {d50:7.1}  p90 {d90:7.1}");
    println!("proxy, app-server engine  p50 {p50:7.1}  p90 {p90:7.1}");
    println!(
        "ratio proxy/direct        p50 {:7.2}x p90 {:7.2}x",
        p50 / d50,
        p90 / d90
    );
    println!(
        "CPU per request (ms): proxy process {proxy_cpu:.2}, its Codex {codex_cpu:.1}; direct Codex {:.1}",
        direct_cpu + direct_children
    );
    drop(connection);
    let _ = child.kill().await;

    // Streamed, with and without a fallback chain (interleaved): headers, first content, end.
    for _ in 0..3 {
        stream_timings(&client, &proxy.base_url, "as1", "warm").await;
        stream_timings(&client, &proxy.base_url, "as1f", "warm").await;
    }
    for (label, text) in [("instant mock", "hello"), ("4 deltas 250 ms apart", SLOW)] {
        let mut plain: [Vec<f64>; 3] = Default::default();
        let mut chained: [Vec<f64>; 3] = Default::default();
        for _ in 0..requests {
            for (model, into) in [("as1", &mut plain), ("as1f", &mut chained)] {
                let (headers, first, total) =
                    stream_timings(&client, &proxy.base_url, model, text).await;
                into[0].push(headers);
                into[1].push(first);
                into[2].push(total);
            }
        }
        println!();
        println!("== streamed, {requests} requests each, {label}: p50 (p90) ms ==");
        println!(
            "{:<22} {:>17} {:>17} {:>17}",
            "profile", "first byte", "first content", "end"
        );
        for (name, figures) in [("no fallbacks", &plain), ("fallbacks = [...]", &chained)] {
            let cell = |values: &Vec<f64>| {
                format!(
                    "{:7.1} ({:7.1})",
                    percentile(values, 0.5),
                    percentile(values, 0.9)
                )
            };
            println!(
                "{name:<22} {:>17} {:>17} {:>17}",
                cell(&figures[0]),
                cell(&figures[1]),
                cell(&figures[2])
            );
        }
    }

    // --- 2. Throughput: one proxy per engine set-up, so the memory column is that set-up's alone.
    drop(proxy);
    println!();
    println!("== throughput (requests/s) and peak memory of proxy + its Codex processes (MiB) ==");
    println!(
        "{:<10} {:<14} {:>5} {:>9} {:>9} {:>12} {:>12}",
        "mock", "engine", "conc", "req/s", "MiB", "proxy ms/req", "codex ms/req"
    );
    let setups = [
        ("exec", profile("bench", "")),
        (
            "app-server 1",
            profile("bench", "engine = \"app-server\"\nworkers = 1"),
        ),
        (
            "app-server 2",
            profile("bench", "engine = \"app-server\"\nworkers = 2"),
        ),
    ];
    let mut table = Vec::new();
    for (label, profile_text) in &setups {
        let run_dir = dir.path().join(label.replace(' ', "-"));
        harness::create_subdirs(&run_dir, &["home", "codex-home"]);
        let config = format!("{}{profile_text}", server_toml(&launcher));
        let proxy = start_proxy(&client, &run_dir, &config).await;
        post(&client, &proxy.base_url, "bench", "warm").await;
        for (mock_name, text, per_client) in [("instant", "hello", 6usize), ("~1 s", SLOW, 3usize)]
        {
            for concurrency in [1usize, 4, 8] {
                let per = per_client * concurrency.max(2) / concurrency;
                let cpu_before = cpu_sample(proxy.pid());
                let started = Instant::now();
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let sampler = {
                    let dir = run_dir.clone();
                    let pid = proxy.child.id();
                    let flag = done.clone();
                    tokio::spawn(async move {
                        let mut peak: f64 = 0.0;
                        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                            peak = peak.max(memory_mib(&dir, pid));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        peak
                    })
                };
                let mut tasks = Vec::new();
                for _ in 0..concurrency {
                    let client = client.clone();
                    let url = proxy.base_url.clone();
                    let text = text.to_string();
                    tasks.push(tokio::spawn(async move {
                        for _ in 0..per {
                            post(&client, &url, "bench", &text).await;
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
                let elapsed = started.elapsed().as_secs_f64();
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                let peak = sampler.await.unwrap();
                let rate = (per * concurrency) as f64 / elapsed;
                let (proxy_cpu, codex_cpu) =
                    cpu_per_request(&cpu_before, &cpu_sample(proxy.pid()), per * concurrency);
                println!(
                    "{mock_name:<10} {label:<14} {concurrency:>5} {rate:>9.2} {peak:>9.0} {proxy_cpu:>12.2} {codex_cpu:>12.1}"
                );
                table.push((mock_name, *label, concurrency, rate));
            }
        }
    }
    for mock_name in ["instant", "~1 s"] {
        for concurrency in [1usize, 4, 8] {
            let rate = |label: &str| {
                table
                    .iter()
                    .find(|row| row.0 == mock_name && row.1 == label && row.2 == concurrency)
                    .map(|row| row.3)
                    .unwrap_or(f64::NAN)
            };
            println!(
                "{mock_name:<10} conc {concurrency}: app-server 1 / exec = {:.2}x, app-server 2 / exec = {:.2}x",
                rate("app-server 1") / rate("exec"),
                rate("app-server 2") / rate("exec")
            );
        }
    }

    // --- 3. Request size with and without Codex's tools.
    let proxy = start_proxy(
        &client,
        dir.path(),
        &format!(
            "{}{}{}",
            server_toml(&launcher),
            profile("as1", "engine = \"app-server\"\nworkers = 1"),
            profile(
                "as1-plain",
                "engine = \"app-server\"\nworkers = 1\ntools = false"
            ),
        ),
    )
    .await;
    let before = mock.request_count();
    post(&client, &proxy.base_url, "as1", "size").await;
    post(&client, &proxy.base_url, "as1-plain", "size").await;
    let recorded = mock.requests();
    let with_tools = recorded[before].body_len();
    let without = recorded[before + 1].body_len();
    println!();
    println!("== model request size (bytes) ==");
    println!("tools = true   {with_tools}");
    println!("tools = false  {without}");
    drop(proxy);

    if with_python {
        println!();
        contender::compare(&client, &mock, &launcher, &workspace, requests).await;
    }
}
