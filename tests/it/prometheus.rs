//! End-to-end: `/metrics` in the Prometheus text format and OpenMetrics, scraped with Prometheus's own
//! `Accept` header and parsed by the real `prometheus_client` parsers (Python), after real requests
//! through the real Codex CLI (exec and app-server) against the mock model. JSON stays the default.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::app::{chat_body, App, TestEnv};

/// Every series the README documents (family names as the parsers report them: counters without
/// `_total`).
const SERIES: &[&str] = &[
    "codex_proxy_requests",
    "codex_proxy_errors",
    "codex_proxy_tokens",
    "codex_proxy_request_duration_seconds",
    "codex_proxy_time_to_first_token_seconds",
    "codex_proxy_queue_wait_seconds",
    "codex_proxy_fallbacks",
    "codex_proxy_in_flight",
    "codex_proxy_queued",
    "codex_proxy_workers",
    "codex_proxy_worker_restarts",
    "codex_proxy_config_reloads",
    "codex_proxy_config_generation",
    "codex_proxy_uptime_seconds",
    "codex_proxy_quota_used_ratio",
    "codex_proxy_quota_resets_at_seconds",
    "codex_proxy_logged_in",
    "codex_proxy_key_limit_refusals",
    "codex_proxy_tool_turns",
    "codex_proxy_usage_dropped",
];

#[tokio::test]
async fn prometheus_and_openmetrics_carry_every_documented_series() {
    let env = TestEnv::new().await;
    // `nologin` uses Codex's default provider with the test's fresh CODEX_HOME: not logged in.
    let config = format!(
        "{}{}{}[profiles.nologin]\ndefault_cwd = {workspace:?}\nallowed_roots = [{workspace:?}]\n",
        env.server("api_keys = [{ name = \"ops\", key = \"sk-ops\", requests_per_minute = 1000 }]"),
        env.profile("fast", ""),
        env.profile(
            "stream",
            "engine = \"app-server\"\nworkers = 1\nfallbacks = [\"fast\"]"
        ),
        workspace = env.workspace.display().to_string(),
    );
    let app = App::start(&env, &config).await;

    let ok = app
        .chat_with_key(&chat_body("fast", "hello"), Some("sk-ops"))
        .await;
    assert_eq!(ok.status(), 200);
    // The mock sends the rate-limit headers; the app-server worker reports them as quota.
    let mut streamed = chat_body("stream", "hello mock:used=42");
    streamed["stream"] = json!(true);
    let response = app.chat_with_key(&streamed, Some("sk-ops")).await;
    assert_eq!(response.status(), 200);
    let transcript = App::sse(response).await;
    assert!(transcript.done());
    let missing = app
        .chat_with_key(&chat_body("nope", "hello"), Some("sk-ops"))
        .await;
    assert_eq!(missing.status(), 404);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = App::client()
            .get(app.url("/v1/quota"))
            .bearer_auth("sk-ops")
            .send()
            .await
            .unwrap();
        let quota: Value = response.json().await.unwrap();
        let reported = quota["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|account| !account["windows"].as_array().unwrap().is_empty());
        let login_known = quota["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|account| account["login"]["logged_in"] == json!(false));
        if reported && login_known {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{quota}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let output = support::run_python(
        "prometheus_scrape.py",
        &[
            ("PROXY_URL", app.url("")),
            ("PROXY_KEY", "sk-ops".to_string()),
            ("EXPECT", SERIES.join(",")),
        ],
        Duration::from_secs(60),
    )
    .await;
    let result: Value = serde_json::from_str(output.trim()).unwrap();
    assert!(result["openmetrics"]["content_type"]
        .as_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(result["text"]["content_type"]
        .as_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    for format in ["openmetrics", "text"] {
        let samples = &result[format]["samples"];
        let types = &result[format]["types"];
        assert_eq!(types["codex_proxy_request_duration_seconds"], "histogram");
        assert_eq!(types["codex_proxy_requests"], "counter");
        // Requests by profile, API, status and key *name*: never the key itself.
        assert_eq!(
            samples["codex_proxy_requests_total{api=chat,key=ops,profile=fast,status=200}"], 1.0,
            "{format}: {samples}"
        );
        assert_eq!(
            samples["codex_proxy_tokens_total{key=ops,kind=prompt,profile=stream}"],
            support::mock_model::USAGE_INPUT_TOKENS as f64,
            "{format}: {samples}"
        );
        assert_eq!(
            samples["codex_proxy_time_to_first_token_seconds_count{profile=stream}"], 1.0,
            "{format}: {samples}"
        );
        assert_eq!(
            samples["codex_proxy_errors_total{profile=,status=404}"], 1.0,
            "{format}: {samples}"
        );
        assert_eq!(
            samples["codex_proxy_workers{profile=stream,state=ready}"], 1.0,
            "{format}: {samples}"
        );
        assert_eq!(samples["codex_proxy_config_generation{}"], 1.0);
        assert_eq!(samples["codex_proxy_usage_dropped_total{}"], 0.0);
        for outcome in ["held", "continued", "expired", "replayed"] {
            let name = format!("codex_proxy_tool_turns_total{{outcome={outcome},profile=stream}}");
            assert_eq!(samples[&name], 0.0, "{format}: {samples}");
        }
        assert_eq!(
            samples["codex_proxy_fallbacks_total{from=stream,to=fast}"], 0.0,
            "{format}: {samples}"
        );
        let used: Vec<(&String, &Value)> = samples
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| name.starts_with("codex_proxy_quota_used_ratio{"))
            .collect();
        assert!(
            used.iter()
                .any(|(name, value)| name.contains("window=primary")
                    && name.contains("codex-home/stream")
                    && value.as_f64() == Some(0.42)),
            "{format}: {used:?}"
        );
        let login = format!(
            "codex_proxy_logged_in{{codex_home={},method=none}}",
            env.codex_home.display()
        );
        assert_eq!(samples[&login], 0.0, "{format}: {samples}");
        assert!(!samples.to_string().contains("sk-ops"));
    }

    // JSON stays the default, for `*/*` too.
    let response = App::client()
        .get(app.url("/metrics"))
        .bearer_auth("sk-ops")
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["profiles"]["fast"]["ok"], 1);
    assert_eq!(body["usage_dropped"], 0);

    // The exposition needs the same key as the JSON.
    let response = App::client()
        .get(app.url("/metrics"))
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
