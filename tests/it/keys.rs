//! End-to-end: named API keys with limits. `requests_per_minute` and `max_concurrency` answer 429
//! `rate_limit_exceeded` with `Retry-After`; the concurrency slot is held until the response has
//! ended (streams included); a key's `profiles` narrows what it may use, `/v1/models` included; logs
//! and metrics carry the key's name, never the key.

use crate::support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::app::{chat_body, model_ids, App, TestEnv};

fn config(env: &TestEnv) -> String {
    format!(
        "{}{}{}",
        env.server(
            "api_keys = [\n  { name = \"per-minute\", key = \"sk-minute\", requests_per_minute = 2 },\n  { name = \"one-at-a-time\", key = \"sk-one\", max_concurrency = 1 },\n  { name = \"narrow\", key = \"sk-narrow\", profiles = [\"default\"] },\n  \"sk-plain\",\n]"
        ),
        env.profile("default", ""),
        env.profile("other", ""),
    )
}

async fn error_of(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_string());
    (status, retry_after, response.json().await.unwrap())
}

#[tokio::test]
async fn requests_per_minute_is_a_429_with_retry_after() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env)).await;
    for _ in 0..2 {
        let response = app
            .chat_with_key(&chat_body("default", "hi"), Some("sk-minute"))
            .await;
        assert_eq!(response.status(), 200);
    }
    let (status, retry_after, body) = error_of(
        app.chat_with_key(&chat_body("default", "hi"), Some("sk-minute"))
            .await,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let retry_after: u64 = retry_after.unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("per-minute") && !message.contains("sk-minute"),
        "{message}"
    );
    // Other keys are not limited by it.
    let response = app
        .chat_with_key(&chat_body("default", "hi"), Some("sk-plain"))
        .await;
    assert_eq!(response.status(), 200);

    // Logs and metrics name the key, never show it.
    let line = app.wait_for_line("\"key\":\"per-minute\"").await;
    assert!(!line.contains("sk-minute"));
    let plain_name = app.wait_for_line("\"key\":\"key-").await;
    assert!(!plain_name.contains("sk-plain"));
    let metrics = App::client()
        .get(app.url("/metrics"))
        .bearer_auth("sk-plain")
        .header("accept", "text/plain")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("key=\"per-minute\""), "{metrics}");
    assert!(
        metrics.contains(
            "codex_proxy_key_limit_refusals_total{key=\"per-minute\",limit=\"requests_per_minute\"} 1"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("sk-"), "{metrics}");
}

#[tokio::test]
async fn max_concurrency_holds_the_slot_until_the_stream_ends() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env)).await;

    // A slow stream holds the key's only slot…
    let mut slow = chat_body("default", "hi mock:deltas=4 mock:delay_ms=400");
    slow["stream"] = json!(true);
    let response = app.chat_with_key(&slow, Some("sk-one")).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());

    // …so a second request of that key is refused while it runs.
    let (status, retry_after, body) = error_of(
        app.chat_with_key(&chat_body("default", "hi"), Some("sk-one"))
            .await,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(retry_after.as_deref(), Some("1"));

    // Once the stream has ended, the slot is free again.
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = app
            .chat_with_key(&chat_body("default", "hi"), Some("sk-one"))
            .await;
        if response.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_keys_profiles_narrow_what_it_may_use() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env)).await;
    assert_eq!(
        model_ids(&app.url(""), Some("sk-narrow")).await,
        vec!["default"]
    );
    assert_eq!(
        model_ids(&app.url(""), Some("sk-plain")).await,
        vec!["default", "other"]
    );
    let (status, _, body) = error_of(
        app.chat_with_key(&chat_body("other", "hi"), Some("sk-narrow"))
            .await,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let response = app
        .chat_with_key(&chat_body("default", "hi"), Some("sk-narrow"))
        .await;
    assert_eq!(response.status(), 200);
}
