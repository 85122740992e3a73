//! Benchmark: the proxy's peak memory while it reads and parses large request bodies.
//!
//! Run with `cargo run --release --example bench_body_memory`. It builds and starts the release proxy
//! binary with `max_inflight_body_bytes` large enough for every body at once, sends `CONCURRENCY`
//! concurrent bodies of about 9.4 MiB, each made of many small messages, for a model no profile serves
//! (so each request is parsed completely and then answered 404: no Codex runs), and prints the proxy's
//! peak resident memory (`VmHWM` of `/proc/PID/status`) against the bytes in flight. Memory is what the
//! run is about; the answers' statuses are printed as a check.

use std::time::Instant;

use proxy_test_support::harness::{
    bench_envs, build_release_proxy, codex_bin, proc_status_value, profile_toml, proxy_command,
    scratch_dir, server_toml, start_proxy,
};

const CONCURRENCY: usize = 8;
/// About 9.4 MiB per body.
const BODY_BYTES: usize = 9_856_000;
/// The text of each message (a short chat line).
const MESSAGE_TEXT: &str = "a short message of a long conversation, about as long as a chat line";

/// A chat body of about [`BODY_BYTES`] made of small user messages.
fn body() -> Vec<u8> {
    let message = format!("{{\"role\":\"user\",\"content\":\"{MESSAGE_TEXT}\"}}");
    let mut body = String::with_capacity(BODY_BYTES + message.len() + 64);
    body.push_str("{\"model\":\"no-such-model\",\"messages\":[");
    let mut first = true;
    while body.len() < BODY_BYTES {
        if !first {
            body.push(',');
        }
        first = false;
        body.push_str(&message);
    }
    body.push_str("]}");
    body.into_bytes()
}

#[tokio::main]
async fn main() {
    let binary = build_release_proxy();
    let dir = scratch_dir(
        &bench_envs(),
        "body-memory-",
        &["home", "codex-home", "workspace"],
    );
    let workspace = dir.path().join("workspace");
    let config = dir.path().join("config.toml");
    let body = body();
    let budget = (CONCURRENCY + 1) * body.len();
    std::fs::write(
        &config,
        format!(
            "{}max_inflight_body_bytes = {budget}\n{}",
            server_toml(&codex_bin()),
            profile_toml("default", &workspace, "")
        ),
    )
    .unwrap();
    let mut command = proxy_command(
        &binary,
        &[],
        &config,
        &dir.path().join("home"),
        &dir.path().join("codex-home"),
    );
    let proxy = start_proxy(command.stderr(std::process::Stdio::null()));
    let idle_kib = proc_status_value(proxy.pid(), "VmHWM:");
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", proxy.base_url);

    let started = Instant::now();
    let requests = (0..CONCURRENCY).map(|_| {
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send();
        async move { request.await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed();
    let peak_kib = proc_status_value(proxy.pid(), "VmHWM:");

    let in_flight = (CONCURRENCY * body.len()) as f64;
    let peak = (peak_kib * 1024) as f64;
    let idle = (idle_kib * 1024) as f64;
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    let messages = body.len() / (MESSAGE_TEXT.len() + 30);
    println!(
        "{CONCURRENCY} concurrent bodies of {:.1} MiB (~{messages} messages each), statuses {statuses:?}, {:.1} s",
        mib(body.len() as f64),
        elapsed.as_secs_f64()
    );
    println!(
        "bytes in flight {:.1} MiB; proxy peak RSS (VmHWM) {:.1} MiB = {:.2}x in flight ({:.1} MiB before the requests; {:.2}x counting only the growth)",
        mib(in_flight),
        mib(peak),
        peak / in_flight,
        mib(idle),
        (peak - idle) / in_flight
    );
}
