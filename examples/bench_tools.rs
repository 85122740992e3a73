//! Benchmark of continuing a tool round trip (not a test; prints figures): by the held turn vs by
//! replay, side by side in one run, through the release proxy against the mock model.
//!
//! One proxy, two app-server profiles on the same single worker: `hold` (the default
//! `tool_call_timeout_seconds`) and `replay` (`tool_call_timeout_seconds = 0`: holding off). Each round
//! sends, on both profiles in turn (the order alternates), a request whose model calls the tool, then
//! times the request that brings the tool's result and gets the final answer: on `hold` it continues the
//! held turn, on `replay` it starts a thread and injects the conversation. Two conversations: a short one
//! (one user message) and a long one (40 earlier messages of about 400 bytes each before it).
//!
//! The mock answers at once, so the figures are the proxy's and Codex's own cost of each path; with a
//! real model, replay also loses the prompt cache of the earlier turn, which these figures do not show.
//!
//! Run: `cargo build --release && cargo run --release --example bench_tools [ROUNDS]`
//! (needs `npm ci` for the pinned Codex CLI).

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use proxy_test_support::harness::{
    self, bench_envs, codex_launcher, mean, percentile, prebuilt_proxy, profile_toml,
    proxy_command, scratch_dir, server_toml, toml_string_list, Proxy,
};
use proxy_test_support::mock_model::MockModel;
use serde_json::{json, Value};

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

async fn chat(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

fn tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "lookup", "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    }}])
}

/// `earlier` user/assistant message pairs of about 400 bytes each, then the message that calls the tool.
fn conversation(earlier: usize, round: usize) -> Vec<Value> {
    let filler = "The otter is a semiaquatic mammal of rivers and coasts. ".repeat(7);
    let mut messages = Vec::new();
    for index in 0..earlier / 2 {
        messages.push(json!({"role": "user", "content": format!("question {index}: {filler}")}));
        messages.push(json!({"role": "assistant", "content": format!("answer {index}: {filler}")}));
    }
    messages.push(json!({"role": "user",
        "content": format!("round {round} mock:call=lookup:{{\"word\":\"otter\"}}")}));
    messages
}

/// One round trip on `model`; returns the milliseconds of the continuing request.
async fn round_trip(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    earlier: usize,
    round: usize,
) -> f64 {
    let mut body =
        json!({"model": model, "messages": conversation(earlier, round), "tools": tools()});
    let first = chat(client, url, &body).await;
    let message = first["choices"][0]["message"].clone();
    assert_eq!(
        first["choices"][0]["finish_reason"], "tool_calls",
        "{first}"
    );
    let call_id = message["tool_calls"][0]["id"].clone();
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": "a river animal"}));
    let started = Instant::now();
    let second = chat(client, url, &body).await;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(second["choices"][0]["finish_reason"], "stop", "{second}");
    elapsed
}

fn summary(samples: &[f64]) -> String {
    format!(
        "p50 {:7.1}  p90 {:7.1}  mean {:7.1}",
        percentile(samples, 0.5),
        percentile(samples, 0.9),
        mean(samples)
    )
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(30);
    let dir = scratch_dir(
        &bench_envs(),
        "bench-tools-",
        &["home", "codex-home", "workspace"],
    );
    let workspace = dir.path().join("workspace");
    let mock = MockModel::start().await;
    let client = reqwest::Client::new();
    let profile = |name: &str, extra: &str| {
        format!(
            "{}engine = \"app-server\"\nworkers = 1\nmax_concurrency = 8\n{extra}\n",
            profile_toml(
                name,
                &workspace,
                &toml_string_list(&mock.provider_overrides())
            ),
        )
    };
    let config = format!(
        "{}{}{}",
        server_toml(&codex_launcher()),
        profile("hold", ""),
        profile("replay", "tool_call_timeout_seconds = 0"),
    );
    let proxy = start_proxy(&client, dir.path(), &config).await;
    for round in 0..3 {
        round_trip(&client, &proxy.base_url, "hold", 0, round).await;
        round_trip(&client, &proxy.base_url, "replay", 0, round).await;
    }

    println!("continuing a tool round trip: the request with the tool result, milliseconds ({rounds} rounds each)");
    for (label, earlier) in [("short conversation", 0), ("40 earlier messages", 40)] {
        let (mut hold, mut replay) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let round_id = 1000 * (earlier + 1) + round;
            if round % 2 == 0 {
                hold.push(round_trip(&client, &proxy.base_url, "hold", earlier, round_id).await);
                replay
                    .push(round_trip(&client, &proxy.base_url, "replay", earlier, round_id).await);
            } else {
                replay
                    .push(round_trip(&client, &proxy.base_url, "replay", earlier, round_id).await);
                hold.push(round_trip(&client, &proxy.base_url, "hold", earlier, round_id).await);
            }
        }
        println!("  {label}");
        println!("    by hold    {}", summary(&hold));
        println!("    by replay  {}", summary(&replay));
        println!(
            "    replay / hold (p50): {:.2}",
            percentile(&replay, 0.5) / percentile(&hold, 0.5)
        );
    }
    let metrics: Value = client
        .get(format!("{}/metrics", proxy.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for name in ["hold", "replay"] {
        let profile = &metrics["profiles"][name];
        println!(
            "  {name}: held {} continued {} expired {} replayed {}",
            profile["tool_turns_held"],
            profile["tool_turns_continued"],
            profile["tool_turns_expired"],
            profile["tool_turns_replayed"]
        );
    }
}
