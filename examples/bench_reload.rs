//! Benchmark: how long from saving the config file until the new profile serves a request.
//!
//! Run with `cargo run --release --example bench_reload`. It builds and starts the release proxy binary
//! (`target/release/codex-api-proxy`) against the test suite's mock model and the real Codex CLI
//! (`$CODEX_BIN`, else `node_modules/.bin/codex`; run `npm ci` first), then measures three paths:
//!
//! - watcher: 20 saves (alternately in place and by rename), each adding a profile under a new name;
//! - SIGHUP: the file is saved with the watcher off, then the signal is sent (the reload alone);
//! - poll: `CODEX_PROXY_CONFIG_WATCH=poll` (no notify watcher) with the default 2 s poll interval, saves at
//!   spread-out moments; the worst case is about one poll interval.
//!
//! For each save it reports "routed" (the first streaming request for the new name gets its `200` headers:
//! the new snapshot is published and the new profile's pool admitted the request) and "answered" (that
//! request's `[DONE]`, which adds one Codex run against the mock model).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use proxy_test_support::harness::{
    build_release_proxy, codex_bin, create_subdirs, manifest_dir, millis, percentile, profile_toml,
    proxy_command, server_toml, start_proxy, toml_string_list, Proxy,
};
use proxy_test_support::mock_model::MockModel;
use serde_json::json;

struct Setup {
    dir: PathBuf,
    workspace: PathBuf,
    overrides: String,
    binary: PathBuf,
}

impl Setup {
    fn profile(&self, name: &str) -> String {
        format!("{}\n", profile_toml(name, &self.workspace, &self.overrides))
    }

    fn config(&self, names: &[&str]) -> String {
        let mut text = format!("{}log_level = \"warning\"\n\n", server_toml(&codex_bin()));
        for name in names {
            text.push_str(&self.profile(name));
        }
        text
    }

    fn path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn start(&self, vars: &[(&str, &str)]) -> Proxy {
        let mut command = proxy_command(
            &self.binary,
            &[],
            &self.path(),
            &self.dir.join("home"),
            &self.dir.join("codex-home"),
        );
        command.stdin(Stdio::null()).stderr(Stdio::inherit());
        for (name, value) in vars {
            command.env(name, value);
        }
        start_proxy(&mut command)
    }
}

fn save_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn save_by_rename(path: &Path, text: &str) {
    let temporary = path.with_file_name(".config.toml.tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Sends streaming requests for `model` until one is accepted; returns (routed, answered) since `since`.
async fn first_served(
    client: &reqwest::Client,
    proxy: &Proxy,
    model: &str,
    since: Instant,
) -> (Duration, Duration) {
    let body = json!({
        "model": model,
        "stream": true,
        "messages": [{"role": "user", "content": "mock:reply=served"}],
    });
    loop {
        let response = client
            .post(format!("{}/v1/chat/completions", proxy.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => {
                let routed = since.elapsed();
                let text = response.text().await.unwrap();
                assert!(
                    text.contains("served") && text.contains("[DONE]"),
                    "unexpected answer: {text}"
                );
                return (routed, since.elapsed());
            }
            404 => {
                assert!(
                    since.elapsed() < Duration::from_secs(30),
                    "{model} never became routable"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            status => panic!("{model}: HTTP {status}: {}", response.text().await.unwrap()),
        }
    }
}

fn summary(label: &str, samples: &[(Duration, Duration)]) {
    let routed = millis(&samples.iter().map(|s| s.0).collect::<Vec<_>>());
    let answered = millis(&samples.iter().map(|s| s.1).collect::<Vec<_>>());
    let (routed_p50, routed_max, routed_min) = (
        percentile(&routed, 0.5),
        percentile(&routed, 1.0),
        percentile(&routed, 0.0),
    );
    let (answered_p50, answered_max) = (percentile(&answered, 0.5), percentile(&answered, 1.0));
    println!(
        "{label:<34} n={:<3} routed p50 {routed_p50:7.1} ms  max {routed_max:7.1} ms  (min {routed_min:6.1})   answered p50 {answered_p50:7.1} ms  max {answered_max:7.1} ms",
        samples.len()
    );
}

#[tokio::main]
async fn main() {
    let binary = build_release_proxy();
    let base = manifest_dir().join("target").join("bench-reload");
    let _ = std::fs::remove_dir_all(&base);
    let workspace = base.join("workspace");
    create_subdirs(&base, &["home", "codex-home", "workspace"]);
    let mock = MockModel::start().await;
    let setup = Setup {
        dir: base.clone(),
        workspace: std::fs::canonicalize(&workspace).unwrap(),
        overrides: toml_string_list(&mock.provider_overrides()),
        binary,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let path = setup.path();

    // The default: notify on the parent directory, then the debounce.
    save_in_place(&path, &setup.config(&["base"]));
    let proxy = setup.start(&[]);
    first_served(&client, &proxy, "base", Instant::now()).await;
    let mut watcher = Vec::new();
    for index in 0..20 {
        let name = format!("watch{index}");
        let text = setup.config(&["base", &name]);
        let saved = Instant::now();
        if index % 2 == 0 {
            save_in_place(&path, &text);
        } else {
            save_by_rename(&path, &text);
        }
        watcher.push(first_served(&client, &proxy, &name, saved).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(proxy);

    // SIGHUP with the watcher off: the reload itself.
    save_in_place(&path, &setup.config(&["base"]));
    let proxy = setup.start(&[
        ("CODEX_PROXY_CONFIG_WATCH", "poll"),
        ("CODEX_PROXY_CONFIG_POLL_MS", "3600000"),
    ]);
    let mut sighup = Vec::new();
    for index in 0..10 {
        let name = format!("hup{index}");
        save_in_place(&path, &setup.config(&["base", &name]));
        let signalled = Instant::now();
        proxy.signal(libc::SIGHUP);
        sighup.push(first_served(&client, &proxy, &name, signalled).await);
    }
    drop(proxy);

    // Poll only, default interval: saves at spread-out moments of the poll cycle.
    save_in_place(&path, &setup.config(&["base"]));
    let proxy = setup.start(&[("CODEX_PROXY_CONFIG_WATCH", "poll")]);
    let mut poll = Vec::new();
    for index in 0..8 {
        tokio::time::sleep(Duration::from_millis(130 + 290 * index as u64)).await;
        let name = format!("poll{index}");
        let saved = Instant::now();
        save_in_place(&path, &setup.config(&["base", &name]));
        poll.push(first_served(&client, &proxy, &name, saved).await);
    }
    drop(proxy);

    println!();
    println!("save → first request served by the new profile (release build)");
    summary("watcher (in place / rename)", &watcher);
    summary("SIGHUP (reload only)", &sighup);
    summary("poll only, 2000 ms interval", &poll);
    let _ = std::fs::remove_dir_all(&base);
}
