//! The dashboard in a real browser: Debian's chromium, headless, driven by `playwright-core`
//! (`tests/ui/dashboard.mjs`) against the real proxy with the real Codex CLI and the mock model.
//!
//! Traffic goes through an app-server profile and an exec profile (plus twenty idle profiles, to see the
//! page cope with dozens), one app-server worker is killed with SIGKILL, and then the page must: refuse a
//! wrong key, open with the server key (kept in `sessionStorage` across a reload), show the figures
//! `/metrics` reports (totals, each profile's counters, the workers' pids and the restart), the
//! ledger's token totals, the recent requests without content or keys, the charts, and the quota box
//! ("quota unavailable" while `/v1/quota` answers 404). It refreshes at most once a second and logs no
//! script or CSP error. The screenshot lands in `target/dashboard/dashboard.png`; set
//! `DASHBOARD_SCREENSHOT_TO_DOCS=1` to also copy it to `docs/dashboard.png` for the README.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::app::{chat_body, send_signal, App, TestEnv};

const SERVER_KEY: &str = "sk-dashboard-server-key-5678";
const PROMPT_MARKER: &str = "quokka-dashboard-marker";
const IDLE_PROFILES: usize = 20;

const INSTALL_HINT: &str = "the dashboard test needs Debian's chromium at /usr/bin/chromium (`sudo apt-get install -y chromium`) \
     and playwright-core in node_modules (`npm ci`); scripts/test.sh installs both";

async fn get(app: &App, path: &str) -> (u16, Value) {
    let response = App::client()
        .get(app.url(path))
        .bearer_auth(SERVER_KEY)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn chat(app: &App, body: &Value) -> u16 {
    let response = app.chat_with_key(body, Some(SERVER_KEY)).await;
    let status = response.status().as_u16();
    let _ = response.text().await;
    status
}

/// Waits until `check` holds for `/metrics`, and returns that body.
async fn wait_metrics(app: &App, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, metrics) = get(app, "/metrics").await;
        assert_eq!(status, 200, "{metrics}");
        if check(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_browser(base_url: &str, screenshot: &Path) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(Path::new("/usr/bin/chromium").is_file(), "{INSTALL_HINT}");
    assert!(
        root.join("node_modules/playwright-core/package.json")
            .is_file(),
        "{INSTALL_HINT}"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|output| output.status.success()),
        "`node` is not available ({node:?}): install Node.js 20+; {INSTALL_HINT}"
    );
    let mut command = tokio::process::Command::new("node");
    command
        .arg(root.join("tests/ui/dashboard.mjs"))
        .arg(base_url)
        .arg(SERVER_KEY)
        .arg(screenshot)
        .current_dir(root)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser script did not finish within 120 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!("the browser script printed no JSON ({error}):\n{stdout}\n{stderr}")
    })
}

#[tokio::test]
async fn the_dashboard_shows_what_metrics_reports_in_a_real_browser() {
    let env = TestEnv::new().await;
    let mut config = format!(
        "{}{}{}",
        env.server(&format!("api_keys = [\"{SERVER_KEY}\"]")),
        env.profile("fast", "engine = \"app-server\"\nworkers = 1\n"),
        env.profile("slow", "engine = \"exec\"\n"),
    );
    for index in 0..IDLE_PROFILES {
        config.push_str(&env.profile(&format!("team-{index:02}"), "engine = \"exec\"\n"));
    }
    let app = App::start(&env, &config).await;

    // Traffic: plain and streamed on both engines, one upstream failure, one unknown model.
    for index in 0..3 {
        let body = chat_body("fast", &format!("{PROMPT_MARKER} {index}"));
        assert_eq!(chat(&app, &body).await, 200);
    }
    let mut streamed = chat_body("fast", PROMPT_MARKER);
    streamed["stream"] = json!(true);
    assert_eq!(chat(&app, &streamed).await, 200);
    assert_eq!(chat(&app, &chat_body("slow", PROMPT_MARKER)).await, 200);
    let failing = chat_body("fast", &format!("{PROMPT_MARKER} mock:status=500"));
    assert!(chat(&app, &failing).await >= 500);
    assert_eq!(chat(&app, &chat_body("nobody", PROMPT_MARKER)).await, 404);
    let routed = 6;

    // Kill the app-server worker; the pool restarts it.
    let before = wait_metrics(&app, "a ready worker", |m| {
        m["profiles"]["fast"]["workers"][0]["state"] == "ready"
    })
    .await;
    let old_pid = before["profiles"]["fast"]["workers"][0]["pid"]
        .as_u64()
        .unwrap();
    send_signal(old_pid as u32, libc::SIGKILL);
    let metrics = wait_metrics(&app, "the worker's restart", |m| {
        let worker = &m["profiles"]["fast"]["workers"][0];
        worker["restarts"] == 1 && worker["state"] == "ready" && worker["pid"] != json!(old_pid)
    })
    .await;

    // Every routed request is in the ledger before the page reads it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let usage = loop {
        let (status, usage) = get(&app, "/v1/usage?by=profile").await;
        assert_eq!(status, 200, "{usage}");
        let rows: u64 = usage["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["requests"].as_u64().unwrap())
            .sum();
        if rows == routed || Instant::now() > deadline {
            assert_eq!(rows, routed, "{usage}");
            break usage;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let report = run_browser(&app.base_url, &screenshot).await;
    let page = &report["page"];

    // The key: asked once, a wrong one refused and not kept, the right one kept for the session.
    assert_eq!(report["form_first"], true, "{report}");
    let refused = report["wrong_key_message"].as_str().unwrap();
    assert!(refused.contains("refused"), "{refused}");
    assert_eq!(report["wrong_key_dashboard_hidden"], true);
    assert_eq!(report["wrong_key_stored"], Value::Null);
    assert_eq!(report["form_after_reload"], false, "{report}");

    // At most one refresh a second (3 s watched; one extra for the boundaries).
    let ticks = report["ticks_in_3s"].as_u64().unwrap();
    assert!((1..=4).contains(&ticks), "{ticks} refreshes in 3 s");

    // The same numbers as /metrics. No traffic ran since `metrics` was read, and the page's own
    // polling of /metrics and /ui/data is not counted as requests.
    let (_, now) = get(&app, "/metrics").await;
    assert_eq!(without_uptime(&now), without_uptime(&metrics));
    let counters = &now;
    assert_eq!(page["requests_total"], counters["requests_total"], "{page}");
    assert_eq!(page["requests_ok"], counters["requests_ok"]);
    assert_eq!(page["requests_error"], counters["requests_error"]);
    assert_eq!(page["config_generation"], now["config"]["generation"]);
    assert_eq!(page["in_flight"], 0);
    assert_eq!(page["queued"], 0);
    assert_eq!(page["ledger_dropped"], 0);
    let shown = page["profiles"].as_object().unwrap();
    assert_eq!(shown.len(), 2 + IDLE_PROFILES, "every profile has a row");
    for (name, profile) in now["profiles"].as_object().unwrap() {
        let row = &shown[name];
        let c = profile;
        let errors: u64 = c["errors_by_status"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(row["engine"], profile["engine"], "{name}");
        assert_eq!(row["requests"], c["requests"], "{name}");
        assert_eq!(row["ok"], c["ok"], "{name}");
        assert_eq!(row["errors"], json!(errors), "{name}");
        assert_eq!(row["tokens"], c["tokens"]["total"], "{name}");
        let workers: Vec<Value> = profile["workers"]
            .as_array()
            .map(|workers| {
                workers
                    .iter()
                    .map(|w| json!({"pid": w["pid"], "state": w["state"], "restarts": w["restarts"], "turns": w["turns_in_flight"]}))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(row["workers"], json!(workers), "{name}");
    }
    // The kill shows as a restart with the new pid.
    let fast_worker = &shown["fast"]["workers"][0];
    assert_eq!(fast_worker["restarts"], 1, "{fast_worker}");
    assert_ne!(fast_worker["pid"], json!(old_pid));
    assert_eq!(report["filtered_rows"], 1);

    // Tokens from the ledger.
    let ledger_fast = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["group"] == "fast")
        .unwrap();
    let page_fast = page["tokens_profile"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["group"] == "fast")
        .unwrap_or_else(|| panic!("no ledger row for fast: {page}"));
    assert_eq!(page_fast["requests"], ledger_fast["requests"]);
    assert_eq!(page_fast["prompt_tokens"], ledger_fast["prompt_tokens"]);
    assert_eq!(
        page_fast["completion_tokens"],
        ledger_fast["completion_tokens"]
    );
    assert_eq!(page["tokens_key"].as_array().unwrap().len(), 1);
    assert_eq!(page["tokens_day"][0]["requests"], json!(routed));

    // The live table: every routed request, key names only, a failure marked.
    let recent = page["recent"].as_array().unwrap();
    assert_eq!(recent.len() as u64, routed, "{page}");
    assert!(recent
        .iter()
        .all(|row| row["key_name"].as_str().unwrap().starts_with("key-")));
    assert!(recent
        .iter()
        .any(|row| row["status"].as_str().unwrap().starts_with('5')));
    let text = page["body_text"].as_str().unwrap();
    assert!(!text.contains(SERVER_KEY), "the page shows the key");
    assert!(!text.contains(PROMPT_MARKER), "the page shows content");
    assert!(page["rps_path"].as_str().unwrap().starts_with('M'));
    assert!(page["latency_paths"][1].as_str().unwrap().starts_with('M'));

    // Quota: gauges once /v1/quota exists, a plain note until then.
    let quota = App::client()
        .get(app.url("/v1/quota"))
        .bearer_auth(SERVER_KEY)
        .send()
        .await
        .unwrap();
    let quota_text = page["quota"].as_str().unwrap();
    if quota.status().as_u16() == 404 {
        assert_eq!(quota_text, "quota unavailable");
    } else {
        let body: Value = quota.json().await.unwrap();
        for account in body["accounts"].as_array().unwrap() {
            assert!(quota_text.contains(account["codex_home"].as_str().unwrap()));
        }
    }

    // No script error and no CSP violation; only the refused key's 401s and the absent quota's 404.
    let unexpected: Vec<&Value> = report["console_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|line| {
            let line = line.as_str().unwrap_or_default();
            !(line.contains("status of 401") || line.contains("status of 404"))
        })
        .collect();
    assert!(unexpected.is_empty(), "console errors: {unexpected:?}");

    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG"));
    if std::env::var_os("DASHBOARD_SCREENSHOT_TO_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
        std::fs::write(docs, png).unwrap();
    }
}

/// A `/metrics` body without the figure that moves by itself.
fn without_uptime(metrics: &Value) -> Value {
    let mut metrics = metrics.clone();
    metrics.as_object_mut().unwrap().remove("uptime_seconds");
    metrics
}
