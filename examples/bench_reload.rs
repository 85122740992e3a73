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

#[path = "../tests/support/mock_model.rs"]
mod mock_model;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mock_model::MockModel;
use serde_json::json;

struct Proxy {
    child: Child,
    base_url: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SAFETY: kill(2) only sends a signal.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn codex_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CODEX_BIN").filter(|value| !value.is_empty()) {
        return PathBuf::from(path);
    }
    let launcher = manifest_dir().join("node_modules/.bin/codex");
    assert!(
        launcher.exists(),
        "the Codex CLI is not installed: run `npm ci` in the repository root or set CODEX_BIN"
    );
    launcher
}

/// Builds the release binary (a no-op when it is up to date) and returns its path.
fn proxy_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "codex-api-proxy"])
        .current_dir(manifest_dir())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the release proxy failed");
    manifest_dir().join("target/release/codex-api-proxy")
}

struct Setup {
    dir: PathBuf,
    workspace: PathBuf,
    overrides: String,
    binary: PathBuf,
}

impl Setup {
    fn profile(&self, name: &str) -> String {
        format!(
            "[profiles.{name}]\nmodel = \"mock-model\"\ndefault_cwd = {workspace:?}\nallowed_roots = [{workspace:?}]\ncodex_config = [{config}]\n\n",
            workspace = self.workspace.display().to_string(),
            config = self.overrides,
        )
    }

    fn config(&self, names: &[&str]) -> String {
        let mut text = format!(
            "[server]\ncodex_bin = {:?}\nlog_level = \"warning\"\n\n",
            codex_bin().display().to_string()
        );
        for name in names {
            text.push_str(&self.profile(name));
        }
        text
    }

    fn path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    fn start(&self, vars: &[(&str, &str)]) -> Proxy {
        let mut command = Command::new(&self.binary);
        command
            .args(["start", "--foreground", "--port", "0", "--config"])
            .arg(self.path())
            .env("HOME", self.dir.join("home"))
            .env("CODEX_HOME", self.dir.join("codex-home"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in vars {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the proxy starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base_url = loop {
            let line = lines
                .next()
                .expect("the proxy printed `listening on`")
                .unwrap();
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Proxy { child, base_url }
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
    let stats = |mut values: Vec<Duration>| {
        values.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        (
            ms(values[values.len() / 2]),
            ms(values[values.len() - 1]),
            ms(values[0]),
        )
    };
    let (routed_p50, routed_max, routed_min) = stats(samples.iter().map(|s| s.0).collect());
    let (answered_p50, answered_max, _) = stats(samples.iter().map(|s| s.1).collect());
    println!(
        "{label:<34} n={:<3} routed p50 {routed_p50:7.1} ms  max {routed_max:7.1} ms  (min {routed_min:6.1})   answered p50 {answered_p50:7.1} ms  max {answered_max:7.1} ms",
        samples.len()
    );
}

#[tokio::main]
async fn main() {
    let binary = proxy_binary();
    let base = manifest_dir().join("target").join("bench-reload");
    let _ = std::fs::remove_dir_all(&base);
    let workspace = base.join("workspace");
    for dir in ["home", "codex-home", "workspace"] {
        std::fs::create_dir_all(base.join(dir)).unwrap();
    }
    let mock = MockModel::start().await;
    let setup = Setup {
        dir: base.clone(),
        workspace: std::fs::canonicalize(&workspace).unwrap(),
        overrides: mock
            .provider_overrides()
            .iter()
            .map(|item| format!("'{item}'"))
            .collect::<Vec<_>>()
            .join(", "),
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
        // SAFETY: kill(2) only sends a signal.
        unsafe {
            libc::kill(proxy.child.id() as i32, libc::SIGHUP);
        }
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
