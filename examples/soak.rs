//! Load + reload soak (not a test; prints a report and exits non-zero when a requirement fails).
//!
//! Mixed streaming and non-streaming clients across an exec and an app-server profile at concurrency 16,
//! a config reload every second (alternating two valid files: one changes the exec profile's runtime
//! settings so its pool is replaced, and adds/removes an idle profile), and one app-server worker killed
//! with SIGKILL every 20 s. Loopback only; bounded in time.
//!
//! Run: `cargo build --release && cargo run --release --example soak [SECONDS]` (default 120).
//!
//! Reports requests sent / succeeded / failed by status and reason, p50/p99 latency, proxy RSS and open file
//! descriptors at start and end, and Codex processes alive at the end. Requirements: the only failures are
//! the turns running on a killed worker (clean 502 or in-band errors), RSS and fd counts flat, no orphan.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proxy_test_support::harness::{
    self, bench_envs, codex_launcher, open_fds, percentile, prebuilt_proxy, proc_status_value,
    processes, profile_toml, proxy_command, scratch_dir, send_signal, server_toml, start_proxy,
    toml_string_list,
};
use proxy_test_support::mock_model::{self, MockModel};
use serde_json::{json, Value};

const CLIENTS: usize = 16;

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    /// "status: reason" → count.
    failed: BTreeMap<String, u64>,
    latencies_ms: Vec<f64>,
}

/// One request; returns Ok(()) or the failure as "status: message".
async fn one_request(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    stream: bool,
) -> Result<(), String> {
    let body = json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "soak mock:deltas=3 mock:delay_ms=60"}],
    });
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .map_err(|err| format!("transport: {err}"))?;
    let status = response.status().as_u16();
    if !stream {
        let value: Value = response
            .json()
            .await
            .map_err(|err| format!("{status}: body: {err}"))?;
        if status != 200 {
            return Err(format!(
                "{status}: {}",
                value["error"]["message"].as_str().unwrap_or("?")
            ));
        }
        if value["choices"][0]["message"]["content"] != mock_model::DEFAULT_REPLY {
            return Err(format!("{status}: wrong content {value}"));
        }
        return Ok(());
    }
    if status != 200 {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("{status}: {text}"));
    }
    let mut text = String::new();
    let mut stream = response.bytes_stream();
    while let Some(piece) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(
            &piece.map_err(|err| format!("200: stream: {err}"))?,
        ));
    }
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            if data.contains("\"error\"") {
                let value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                return Err(format!(
                    "200 in-band: {}",
                    value["error"]["message"].as_str().unwrap_or(data)
                ));
            }
        }
    }
    if !text.trim_end().ends_with("data: [DONE]") {
        return Err("200: stream ended without [DONE]".to_string());
    }
    Ok(())
}

/// The proxy's `/metrics` document.
async fn metrics(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn config_text(dir: &Path, mock: &MockModel, variant: usize) -> String {
    let workspace = dir.join("workspace");
    let codex_config = toml_string_list(&mock.provider_overrides());
    let profile = |name: &str, extra: &str| {
        format!(
            "{}tools = false\nmax_queue_size = 256\nqueue_timeout_seconds = 120\n{extra}\n",
            profile_toml(name, &workspace, &codex_config)
        )
    };
    let mut text = server_toml(&codex_launcher());
    // The exec profile's timeout alternates: a runtime change, so its pool is replaced each reload.
    text.push_str(&profile(
        "exec-a",
        &format!("max_concurrency = 4\ntimeout_seconds = {}", 120 + variant),
    ));
    text.push_str(&profile(
        "app-a",
        &format!(
            "engine = \"app-server\"\nworkers = 2\nmax_concurrency = 12\ndescription = \"variant {variant}\""
        ),
    ));
    if variant == 1 {
        text.push_str(&profile("idle-extra", ""));
    }
    text
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(120);
    let dir = scratch_dir(&bench_envs(), "soak-", &["home", "codex-home", "workspace"]);
    let mock = MockModel::start().await;
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config_text(dir.path(), &mock, 0)).unwrap();
    let mut proxy = start_proxy(
        proxy_command(
            &prebuilt_proxy(),
            &["--log-level", "warning"],
            &config_path,
            &dir.path().join("home"),
            &dir.path().join("codex-home"),
        )
        .stderr(Stdio::null()),
    );
    proxy.stop_signal = libc::SIGKILL;
    let pid = proxy.pid();
    let url = proxy.base_url.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap();
    harness::wait_ready(&client, &url, 200).await;
    // Warm up, then take the baseline.
    for model in ["exec-a", "app-a"] {
        one_request(&client, &url, model, false)
            .await
            .expect("warm-up request failed");
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for index in 0..CLIENTS {
        let client = client.clone();
        let url = url.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            let mut round = 0usize;
            while Instant::now() < deadline {
                // A quarter of the clients use exec; half of all requests stream.
                let model = if index % 4 == 0 { "exec-a" } else { "app-a" };
                let stream = (index + round) % 2 == 0;
                round += 1;
                let started = Instant::now();
                let result = one_request(&client, &url, model, stream).await;
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                let mut tally = tally.lock().unwrap();
                tally.sent += 1;
                match result {
                    Ok(()) => {
                        tally.ok += 1;
                        tally.latencies_ms.push(elapsed);
                    }
                    Err(reason) => {
                        *tally
                            .failed
                            .entry(format!("{model}: {reason}"))
                            .or_default() += 1
                    }
                }
            }
        }));
    }

    // The baseline is taken once every client is connected and the workers are warm.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_start = proc_status_value(pid, "VmRSS:");
    let fds_start = open_fds(pid);

    // Reload every second; kill one app-server worker every 20 s.
    let mut reloads = 0u64;
    let mut kills = 0u64;
    let mut next_kill = Instant::now() + Duration::from_secs(20);
    let mut variant = 0usize;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        variant = 1 - variant;
        let temp = dir.path().join("config.toml.tmp");
        std::fs::write(&temp, config_text(dir.path(), &mock, variant)).unwrap();
        std::fs::rename(&temp, &config_path).unwrap();
        reloads += 1;
        if Instant::now() >= next_kill && Instant::now() + Duration::from_secs(3) < deadline {
            next_kill += Duration::from_secs(20);
            let metrics: Value = metrics(&client, &url).await;
            if let Some(worker_pid) = metrics["profiles"]["app-a"]["workers"]
                .as_array()
                .and_then(|workers| workers.iter().find_map(|w| w["pid"].as_u64()))
            {
                send_signal(worker_pid as u32, libc::SIGKILL);
                kills += 1;
            }
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics: Value = metrics(&client, &url).await;
    let rss_end = proc_status_value(pid, "VmRSS:");
    let fds_end = open_fds(pid);
    let workers_alive = metrics["profiles"]["app-a"]["workers"]
        .as_array()
        .map(|workers| {
            workers
                .iter()
                .filter(|w| w["pid"].as_u64().is_some())
                .count()
        })
        .unwrap_or(0);
    let children = processes(dir.path(), &[pid]);
    // Stop the proxy gracefully and look for orphans.
    send_signal(pid, libc::SIGTERM);
    let stop_deadline = Instant::now() + Duration::from_secs(20);
    while processes(dir.path(), &[]).contains(&pid) && Instant::now() < stop_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orphans = processes(dir.path(), &[]);
    drop(proxy);

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let p50 = percentile(&tally.latencies_ms, 0.5);
    let p99 = percentile(&tally.latencies_ms, 0.99);
    println!(
        "== soak: {seconds} s, {CLIENTS} clients, reload every 1 s, worker SIGKILL every 20 s =="
    );
    println!("requests sent      {}", tally.sent);
    println!("succeeded          {}", tally.ok);
    println!("failed             {}", tally.sent - tally.ok);
    for (reason, count) in &tally.failed {
        println!("  {count:>5} × {reason}");
    }
    println!("latency p50/p99    {p50:.0} / {p99:.0} ms");
    println!(
        "reloads            {reloads} (config generation now {})",
        metrics["config"]["generation"]
    );
    println!("workers killed     {kills}");
    println!(
        "proxy RSS          {:.1} MiB at start, {:.1} MiB at end",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    println!("proxy open fds     {fds_start} at start, {fds_end} at end");
    println!(
        "Codex processes    {} alive at the end under the proxy ({} app-server workers expected)",
        children.len(),
        workers_alive
    );
    println!("after stop         {} orphan process(es)", orphans.len());

    let unexplained: u64 = tally
        .failed
        .iter()
        .filter(|(reason, _)| {
            !(reason.contains("worker exited")
                && (reason.contains("502") || reason.contains("in-band")))
        })
        .map(|(_, count)| count)
        .sum();
    let mut problems = Vec::new();
    if unexplained > 0 {
        problems.push(format!(
            "{unexplained} failures not caused by the injected kills"
        ));
    }
    if rss_end > rss_start + 64 * 1024 {
        problems.push("proxy RSS grew by more than 64 MiB".to_string());
    }
    if fds_end > fds_start + 8 {
        problems.push("proxy file descriptors grew".to_string());
    }
    if children.len() != workers_alive {
        problems.push(format!(
            "{} Codex processes alive, {} expected",
            children.len(),
            workers_alive
        ));
    }
    if !orphans.is_empty() {
        problems.push(format!("orphan processes after stop: {orphans:?}"));
    }
    if problems.is_empty() {
        println!("result             PASS");
    } else {
        println!("result             FAIL: {}", problems.join("; "));
        std::process::exit(1);
    }
}
