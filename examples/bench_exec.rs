//! Benchmark of the exec engine's overhead (not a test; prints figures).
//!
//! N sequential chat completions through the release proxy (one exec profile) next to N direct runs of
//! the same native `codex exec --json` binary with the same arguments, prompt, HOME and CODEX_HOME, all
//! against the test suite's mock model. Direct runs are timed twice: to the `turn.completed` line (when
//! the proxy answers) and to process exit. The runs alternate (direct, proxy, direct, …) after a warm-up,
//! so slow drift of the machine hits both sides alike. Beside latency it prints the CPU time per request
//! of the proxy process, of the Codex processes it started (reaped children, from its cutime + cstime),
//! and of the direct runs (this program's reaped children), all read from `/proc`.
//!
//! Run: `bench/exec_latency.sh [N]`, or `cargo run --release --example bench_exec -- [N]` (default 30;
//! needs `npm ci` for the pinned Codex CLI). Target: proxy p50 ≤ 1.05 × direct p50 to `turn.completed`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use codex_api_proxy::codex::launch::{resolve, ResolvedCodex};
use codex_api_proxy::config::{parse, Profile, ServerOverrides};
use codex_api_proxy::engine::exec::exec_args;
use codex_api_proxy::engine::Job;
use codex_api_proxy::turn::{Role, TurnRequest};
use proxy_test_support::harness::{
    self, build_release_proxy, codex_bin, cpu_per_request, cpu_sample, manifest_dir, mean, millis,
    percentile, profile_toml, proxy_command, reaped_children_ms, server_toml, start_proxy,
    toml_string_list,
};
use proxy_test_support::mock_model::{MockModel, DEFAULT_REPLY};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const WARMUP: usize = 3;
const PROMPT: &str = "Say hello";

/// One direct `codex exec` run: (time to `turn.completed`, time to exit).
async fn direct_run(
    codex: &ResolvedCodex,
    profile: &Profile,
    job: &Job,
    home: &Path,
    codex_home: &Path,
) -> (Duration, Duration) {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&codex.program)
        .args(exec_args(profile, job))
        .current_dir(&job.cwd)
        .envs(codex.env.iter().map(|(k, v)| (k, v)))
        .env("HOME", home)
        .env("CODEX_HOME", codex_home)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("codex starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(codex_api_proxy::codex::prompt::transcript(&job.request).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut completed = None;
    let mut reply = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        match event["type"].as_str() {
            Some("item.completed") if event["item"]["type"] == "agent_message" => {
                reply = event["item"]["text"].as_str().map(str::to_string);
            }
            Some("turn.completed") => completed = Some(started.elapsed()),
            Some("turn.failed") => panic!("direct codex run failed: {line}"),
            _ => {}
        }
    }
    let status = child.wait().await.unwrap();
    let exited = started.elapsed();
    assert!(status.success(), "direct codex run exited with {status}");
    assert_eq!(reply.as_deref(), Some(DEFAULT_REPLY));
    (completed.expect("turn.completed"), exited)
}

/// One plain request through the proxy: time until the whole response is read.
async fn proxy_run(client: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .json(&json!({"model": "bench", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    let elapsed = started.elapsed();
    assert!(status.is_success(), "proxy answered {status}: {body}");
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY);
    elapsed
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("N must be a number"))
        .unwrap_or(30)
        .max(1);
    let binary = build_release_proxy();
    let mock = MockModel::start().await;

    let dir = harness::scratch_dir(
        &manifest_dir().join("target"),
        "bench-exec-",
        &["home", "codex-home", "workspace"],
    );
    let home = dir.path().join("home");
    let codex_home = dir.path().join("codex-home");
    let workspace = dir.path().join("workspace");
    let workspace = std::fs::canonicalize(&workspace).unwrap();
    let config_text = format!(
        "{}log_level = \"warning\"\n\n{}",
        server_toml(&codex_bin()),
        profile_toml(
            "bench",
            &workspace,
            &toml_string_list(&mock.provider_overrides())
        ),
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &config_text).unwrap();

    // The direct runs use exactly the proxy's command line for this profile and prompt.
    let config = parse(
        &config_text,
        &config_path,
        &ServerOverrides::default(),
        &|_| None,
    )
    .expect("the benchmark config is valid");
    let profile = config.profiles[0].clone();
    let codex = resolve(&config.server.codex_bin).expect("the Codex CLI resolves");
    let job = Job {
        request_id: "bench".to_string(),
        request: TurnRequest::from_texts(None, [(Role::User, PROMPT.to_string())]),
        cwd: workspace.clone(),
        model: profile.runtime.model.clone(),
        received_at: Instant::now(),
        hold: Default::default(),
    };

    let proxy = start_proxy(
        proxy_command(&binary, &[], &config_path, &home, &codex_home)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let url = format!("{}/v1/chat/completions", proxy.base_url);
    let client = reqwest::Client::new();
    let version = Command::new(&codex.program)
        .arg("--version")
        .envs(codex.env.iter().map(|(k, v)| (k, v)))
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();

    for _ in 0..WARMUP {
        direct_run(&codex, &profile, &job, &home, &codex_home).await;
        proxy_run(&client, &url).await;
    }
    let mut direct_completed = Vec::with_capacity(runs);
    let mut direct_exit = Vec::with_capacity(runs);
    let mut through_proxy = Vec::with_capacity(runs);
    let proxy_before = cpu_sample(proxy.pid());
    let mut direct_cpu = 0.0;
    for _ in 0..runs {
        let direct_before = reaped_children_ms(std::process::id());
        let (completed, exited) = direct_run(&codex, &profile, &job, &home, &codex_home).await;
        direct_cpu += reaped_children_ms(std::process::id()) - direct_before;
        direct_completed.push(completed);
        direct_exit.push(exited);
        through_proxy.push(proxy_run(&client, &url).await);
    }
    let (proxy_cpu, codex_cpu) = cpu_per_request(&proxy_before, &cpu_sample(proxy.pid()), runs);
    drop(proxy);
    let (direct_completed, direct_exit, through_proxy) = (
        millis(&direct_completed),
        millis(&direct_exit),
        millis(&through_proxy),
    );

    println!(
        "exec engine latency: {runs} sequential requests each way (after {WARMUP} warm-up), mock model, {version}"
    );
    println!("codex: {}", codex.program.display());
    println!("proxy: {} (release)", binary.display());
    println!();
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>9}",
        "", "min ms", "p50 ms", "p90 ms", "mean ms"
    );
    for (label, samples) in [
        ("direct codex exec → turn.completed", &direct_completed),
        ("direct codex exec → exit", &direct_exit),
        ("proxy /v1/chat/completions", &through_proxy),
    ] {
        println!(
            "{label:<36} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            percentile(samples, 0.0),
            percentile(samples, 0.5),
            percentile(samples, 0.9),
            mean(samples)
        );
    }
    println!();
    for (label, baseline) in [
        ("turn.completed", &direct_completed),
        ("exit", &direct_exit),
    ] {
        println!(
            "proxy / direct to {label:<15} p50 {:.3}×  p90 {:.3}×  mean {:.3}×",
            percentile(&through_proxy, 0.5) / percentile(baseline, 0.5),
            percentile(&through_proxy, 0.9) / percentile(baseline, 0.9),
            mean(&through_proxy) / mean(baseline),
        );
    }
    // Each proxy request ran right after a direct run: the median of those pairs' ratios is the figure
    // least disturbed by other load on the machine.
    let mut paired: Vec<f64> = through_proxy
        .iter()
        .zip(&direct_completed)
        .map(|(proxy, direct)| proxy / direct)
        .collect();
    paired.sort_by(f64::total_cmp);
    println!(
        "paired median of proxy_i / direct_i (turn.completed): {:.3}×",
        paired[paired.len() / 2]
    );
    println!(
        "CPU per request (ms): proxy process {proxy_cpu:.2}, its codex exec processes {codex_cpu:.1}, direct codex exec {:.1}",
        direct_cpu / runs as f64
    );
    let ratio = percentile(&through_proxy, 0.5) / percentile(&direct_completed, 0.5);
    println!(
        "target: proxy p50 ≤ 1.05 × direct p50 to turn.completed: {}",
        if ratio <= 1.05 { "met" } else { "NOT met" }
    );
}
