//! Benchmark of the app-server engine (not a test; prints figures).
//!
//! 1. Sequential latency: N requests through the proxy (app-server profile, one worker) next to N turns
//!    driven directly over JSON-RPC on the same native `codex app-server` binary, against the same mock.
//! 2. Throughput at 1, 4 and 8 concurrent clients: exec vs app-server with one and two workers, against
//!    an instant mock and a mock that takes about one second per answer; plus the memory of the proxy and
//!    its Codex processes after each run.
//! 3. The size of the model request with and without `tools = false`.
//!
//! Run: `cargo build --release && cargo run --release --example bench_app_server [N]`
//! (needs `npm ci` for the pinned Codex CLI).

#[path = "../tests/support/mock_model.rs"]
mod mock_model;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codex_api_proxy::codex::launch::{resolve, spawn_in_group};
use codex_api_proxy::engine::app_server::protocol::initialize_params;
use codex_api_proxy::engine::app_server::rpc::Connection;
use codex_api_proxy::engine::app_server::worker::base_args;
use mock_model::MockModel;
use serde_json::json;

const SLOW: &str = "mock:deltas=4 mock:delay_ms=250";

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

struct Proxy {
    child: Child,
    url: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn start_proxy(dir: &Path, config: &str) -> Proxy {
    let binary = std::env::var("PROXY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest().join("target/release/codex-api-proxy"));
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release` first",
        binary.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(binary)
        .args([
            "start",
            "--foreground",
            "--port",
            "0",
            "--log-level",
            "warning",
            "--config",
        ])
        .arg(&path)
        .env("HOME", dir.join("home"))
        .env("CODEX_HOME", dir.join("codex-home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("proxy exited").unwrap();
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Proxy { child, url }
}

/// Sum of VmRSS (MiB) of the proxy and every process whose environment mentions `dir`.
fn memory_mib(dir: &Path, proxy_pid: u32) -> f64 {
    let marker = dir.display().to_string();
    let mut total_kib = 0u64;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if pid != proxy_pid && !String::from_utf8_lossy(&environ).contains(&marker) {
            continue;
        }
        if pid == std::process::id() {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse::<u64>().ok())
        {
            total_kib += kib;
        }
    }
    total_kib as f64 / 1024.0
}

async fn wait_ready(client: &reqwest::Client, url: &str) {
    for _ in 0..400 {
        if let Ok(response) = client.get(format!("{url}/ready")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proxy never became ready");
}

async fn post(client: &reqwest::Client, url: &str, model: &str, text: &str) -> f64 {
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
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let base = manifest().join("target").join("bench-envs");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(&base)
        .unwrap();
    let workspace = dir.path().join("workspace");
    for sub in ["home", "codex-home", "workspace", "direct-home"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let mock = MockModel::start().await;
    let launcher = manifest().join("node_modules/.bin/codex");
    let codex = resolve(launcher.to_str().unwrap()).expect("run `npm ci` first");
    let overrides: Vec<String> = mock
        .provider_overrides()
        .into_iter()
        .chain(["model=\"mock-model\"".to_string()])
        .collect();
    let client = reqwest::Client::new();

    // --- 1. Sequential latency: proxy vs direct JSON-RPC on the same binary.
    let profile = |name: &str, extra: &str| {
        format!(
            "[profiles.{name}]\nmodel = \"mock-model\"\ndefault_cwd = {ws:?}\nallowed_roots = [{ws:?}]\ncodex_config = [{cfg}]\nmax_concurrency = 8\nmax_queue_size = 64\n{extra}\n",
            ws = workspace.display().to_string(),
            cfg = mock
                .provider_overrides()
                .iter()
                .map(|item| format!("'{item}'"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    let config = format!(
        "[server]\ncodex_bin = {:?}\n{}",
        launcher.display().to_string(),
        profile("as1", "engine = \"app-server\"\nworkers = 1"),
    );
    let proxy = start_proxy(dir.path(), &config);
    wait_ready(&client, &proxy.url).await;

    let mut args = base_args();
    for item in &overrides {
        args.push("-c".into());
        args.push(item.clone());
    }
    let mut command = tokio::process::Command::new(&codex.program);
    command
        .args(&args)
        .env("CODEX_HOME", dir.path().join("direct-home"))
        .current_dir(&workspace);
    let (mut child, _group) = spawn_in_group(&mut command).unwrap();
    let connection = Connection::start(child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut sink = Vec::new();
        let mut stderr = stderr;
        let _ = stderr.read_to_end(&mut sink).await;
    });
    connection
        .request("initialize", initialize_params(), Duration::from_secs(30))
        .await
        .unwrap();
    connection.notify("initialized", None).await.unwrap();
    let cwd = workspace.display().to_string();
    // Warm both sides.
    for _ in 0..3 {
        direct_turn(&connection, &cwd, "warm").await;
        post(&client, &proxy.url, "as1", "warm").await;
    }
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for _ in 0..requests {
        direct.push(direct_turn(&connection, &cwd, "hello").await);
        through.push(post(&client, &proxy.url, "as1", "hello").await);
    }
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
    drop(connection);
    let _ = child.kill().await;

    // --- 2. Throughput: one proxy per engine set-up, so the memory column is that set-up's alone.
    drop(proxy);
    println!();
    println!("== throughput (requests/s) and peak memory of proxy + its Codex processes (MiB) ==");
    println!(
        "{:<10} {:<14} {:>5} {:>9} {:>9}",
        "mock", "engine", "conc", "req/s", "MiB"
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
        for sub in ["home", "codex-home"] {
            std::fs::create_dir_all(run_dir.join(sub)).unwrap();
        }
        let config = format!(
            "[server]\ncodex_bin = {:?}\n{profile_text}",
            launcher.display().to_string()
        );
        let proxy = start_proxy(&run_dir, &config);
        wait_ready(&client, &proxy.url).await;
        post(&client, &proxy.url, "bench", "warm").await;
        for (mock_name, text, per_client) in [("instant", "hello", 6usize), ("~1 s", SLOW, 3usize)]
        {
            for concurrency in [1usize, 4, 8] {
                let per = per_client * concurrency.max(2) / concurrency;
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
                    let url = proxy.url.clone();
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
                println!("{mock_name:<10} {label:<14} {concurrency:>5} {rate:>9.2} {peak:>9.0}");
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
        dir.path(),
        &format!(
            "[server]\ncodex_bin = {:?}\n{}{}",
            launcher.display().to_string(),
            profile("as1", "engine = \"app-server\"\nworkers = 1"),
            profile(
                "as1-plain",
                "engine = \"app-server\"\nworkers = 1\ntools = false"
            ),
        ),
    );
    wait_ready(&client, &proxy.url).await;
    let before = mock.request_count();
    post(&client, &proxy.url, "as1", "size").await;
    post(&client, &proxy.url, "as1-plain", "size").await;
    let recorded = mock.requests();
    let with_tools = recorded[before].body_len();
    let without = recorded[before + 1].body_len();
    println!();
    println!("== model request size (bytes) ==");
    println!("tools = true   {with_tools}");
    println!("tools = false  {without}");
    drop(proxy);
}
