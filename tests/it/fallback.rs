//! End-to-end: profile fallbacks, with the real Codex CLI and two mock model services. Profile `a`
//! talks to a mock that answers 429 ([`MockModel::set_directives`]), profile `b` to one that works;
//! `a` lists `b` in `fallbacks`. A failure before anything was sent moves the request on (the run's
//! first event for an upstream 429, admission for a full queue), plain and streamed; the response
//! names the profile that served in `X-Codex-Proxy-Profile`; the hop is counted in
//! `codex_proxy_fallbacks_total` and named in the latency line. An upstream quota refusal marks the
//! account used up, so later requests go straight to the fallback until the window resets. A key that
//! may not use `b` gets `a`'s error, and a chain that ends without success answers with its last
//! error. A run silent past the fallback wait gets its response started on its own profile.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::app::{chat_body, App, TestEnv};
use support::mock_model::{MockModel, DEFAULT_REPLY};

/// A profile table like [`TestEnv::profile`], on `mock` rather than the test's own mock.
fn profile_on(env: &TestEnv, mock: &MockModel, name: &str, extra: &str) -> String {
    let config = mock
        .provider_overrides()
        .iter()
        .map(|item| format!("'{item}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[profiles.{name}]\nmodel = \"mock-model\"\ndefault_cwd = {workspace:?}\nallowed_roots = [{workspace:?}]\ncodex_config = [{config}]\n{extra}\n",
        workspace = env.workspace.display().to_string(),
    )
}

fn served_by(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-codex-proxy-profile")
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn prometheus(app: &App, key: Option<&str>) -> String {
    let mut request = App::client()
        .get(app.url("/metrics"))
        .header("accept", "text/plain");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn an_upstream_429_or_a_full_queue_moves_the_request_to_the_next_profile() {
    let env = TestEnv::new().await;
    let working = MockModel::start().await;
    env.mock.set_directives("mock:status=429");
    let config = format!(
        "{}{}{}{}",
        env.server(""),
        env.profile("a", "fallbacks = [\"b\"]"),
        profile_on(&env, &working, "b", ""),
        profile_on(
            &env,
            &working,
            "solo",
            "max_concurrency = 1\nmax_queue_size = 0\nfallbacks = [\"b\"]"
        ),
    );
    let app = App::start(&env, &config).await;

    // Plain: a's model service answers 429, b serves.
    let response = app.chat(&chat_body("a", "hello")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "b");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY);
    assert_eq!(body["model"], "a", "the client's model name stays");
    assert_eq!((env.mock.request_count(), working.request_count()), (1, 1));
    let line = app.wait_for_line("\"fallback_from\":[\"a\"]").await;
    assert!(line.contains("\"profile\":\"b\""), "{line}");
    assert!(line.contains("\"status\":200"), "{line}");

    // Streamed: the fallback happens before the first byte.
    let mut streamed = chat_body("a", "hello");
    streamed["stream"] = json!(true);
    let response = app.chat(&streamed).await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "b");
    let transcript = App::sse(response).await;
    assert!(transcript.done());
    assert_eq!(transcript.content(), DEFAULT_REPLY);
    assert!(
        !transcript
            .chunks()
            .iter()
            .any(|chunk| chunk.get("error").is_some()),
        "no in-band error"
    );
    assert_eq!((env.mock.request_count(), working.request_count()), (2, 2));

    // Without a failure the routed profile serves and says so.
    let response = app.chat(&chat_body("b", "hello")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "b");

    // A full queue at admission moves on too.
    let slow = {
        let url = app.url("/v1/chat/completions");
        tokio::spawn(async move {
            let response = App::client()
                .post(url)
                .json(&chat_body("solo", "slow mock:first_delay_ms=1500"))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), served_by(&response))
        })
    };
    assert!(working.wait_for_requests(4, Duration::from_secs(30)).await);
    let response = app.chat(&chat_body("solo", "hello")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "b");
    assert_eq!(slow.await.unwrap(), (200, "solo".to_string()));

    // Each hop is counted, and a's failures are its own errors, not the requests'.
    let text = prometheus(&app, None).await;
    assert!(
        text.contains("codex_proxy_fallbacks_total{from=\"a\",to=\"b\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("codex_proxy_fallbacks_total{from=\"solo\",to=\"b\"} 1"),
        "{text}"
    );
    let (_, metrics) = app.get_json("/metrics").await;
    assert_eq!(metrics["requests_error"], 0, "{metrics}");
    assert_eq!(metrics["requests_ok"], 5, "{metrics}");
    assert_eq!(
        metrics["profiles"]["a"]["errors_by_status"]["429"], 2,
        "{metrics}"
    );
    assert_eq!(metrics["profiles"]["b"]["ok"], 4, "{metrics}");
}

#[tokio::test]
async fn a_quota_refusal_sends_later_requests_straight_to_the_fallback_until_reset() {
    let env = TestEnv::new().await;
    let working = MockModel::start().await;
    let config = format!(
        "{}{}{}",
        env.server(""),
        env.profile(
            "a",
            "engine = \"app-server\"\nworkers = 1\nfallbacks = [\"b\"]"
        ),
        profile_on(&env, &working, "b", ""),
    );
    let app = App::start(&env, &config).await;

    // a's account reports its windows (primary 50 % used, resetting in an hour).
    let response = app.chat(&chat_body("a", "hello mock:used=50")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "a");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, quota) = app.get_json("/v1/quota").await;
        let primary = quota["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|account| account["profiles"] == json!(["a"]))
            .map(|account| account["windows"][0]["used_percent"].clone());
        if primary == Some(json!(50.0)) {
            break;
        }
        assert!(Instant::now() < deadline, "{quota}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // a's model service now refuses for quota: the request moves to b ...
    env.mock.set_directives("mock:status=429 mock:quota");
    let before = env.mock.request_count();
    let response = app.chat(&chat_body("a", "hello")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "b");
    assert_eq!(env.mock.request_count(), before + 1);
    // ... and a's account is marked used up until the window's reset.
    let (_, quota) = app.get_json("/v1/quota").await;
    let account = quota["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|account| account["profiles"] == json!(["a"]))
        .unwrap()
        .clone();
    assert_eq!(account["windows"][0]["used_percent"], 100.0, "{quota}");

    // Later requests skip a without asking its model service, plain and streamed.
    let response = app.chat(&chat_body("a", "again")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "b");
    let mut streamed = chat_body("a", "again");
    streamed["stream"] = json!(true);
    let response = app.chat(&streamed).await;
    assert_eq!(served_by(&response), "b");
    assert_eq!(App::sse(response).await.content(), DEFAULT_REPLY);
    assert_eq!(env.mock.request_count(), before + 1);
    let text = prometheus(&app, None).await;
    assert!(
        text.contains("codex_proxy_fallbacks_total{from=\"a\",to=\"b\"} 3"),
        "{text}"
    );
}

#[tokio::test]
async fn a_key_that_may_not_use_the_fallback_gets_the_first_error_and_a_failed_chain_its_last() {
    let env = TestEnv::new().await;
    let working = MockModel::start().await;
    env.mock.set_directives("mock:status=429");
    let config = format!(
        "{}{}{}",
        env.server(
            "api_keys = [\"sk-all\", { name = \"narrow\", key = \"sk-narrow\", profiles = [\"a\"] }]"
        ),
        env.profile("a", "fallbacks = [\"b\"]"),
        profile_on(&env, &working, "b", ""),
    );
    let app = App::start(&env, &config).await;

    // `narrow` may use a only: a's 429 is its answer, and b never hears of it.
    let response = app
        .chat_with_key(&chat_body("a", "hello"), Some("sk-narrow"))
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(served_by(&response), "a");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(working.request_count(), 0);

    // Anthropic-style clients send the key as x-api-key.
    let response = App::client()
        .post(app.url("/v1/chat/completions"))
        .header("x-api-key", "sk-all")
        .json(&chat_body("a", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "b");

    // Both model services fail: the last failure (b's 503) is the answer.
    working.set_directives("mock:status=503");
    let response = app
        .chat_with_key(&chat_body("a", "hello"), Some("sk-all"))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(served_by(&response), "b");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_overloaded", "{body}");
    let mut streamed = chat_body("a", "hello");
    streamed["stream"] = json!(true);
    let response = app.chat_with_key(&streamed, Some("sk-all")).await;
    assert_eq!(served_by(&response), "b");
    let transcript = App::sse(response).await;
    let last = transcript.chunks().last().cloned().unwrap_or_default();
    assert_eq!(last["error"]["code"], "model_overloaded", "{last}");

    let (_, metrics) = {
        let response = App::client()
            .get(app.url("/metrics"))
            .bearer_auth("sk-all")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    assert_eq!(metrics["requests_error"], 3, "{metrics}");
    assert_eq!(
        metrics["profiles"]["b"]["errors_by_status"]["503"], 2,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_model_silent_past_the_fallback_wait_gets_its_response_started_on_its_own_profile() {
    let env = TestEnv::new().await;
    let working = MockModel::start().await;
    let config = format!(
        "{}{}{}",
        env.server(""),
        env.profile("a", "fallbacks = [\"b\"]"),
        profile_on(&env, &working, "b", ""),
    );
    let app = App::start_with_vars(&env, &config, &[("CODEX_PROXY_FALLBACK_WAIT_MS", "300")]).await;
    // a's model sends its headers and then nothing, until Codex's idle timeout (3 s for the mock)
    // fails the run: no first event for 3 s. The response starts after the 300 ms wait instead, on a,
    // and the failure that comes later is a's answer, in-band: the request no longer moves on.
    let mut streamed = chat_body("a", "hello mock:hang");
    streamed["stream"] = json!(true);
    let started = Instant::now();
    let response = app.chat(&streamed).await;
    let headers_after = started.elapsed();
    assert_eq!(response.status(), 200);
    assert_eq!(served_by(&response), "a");
    let transcript = App::sse(response).await;
    let error = transcript
        .chunks()
        .iter()
        .find_map(|chunk| chunk.get("error").cloned())
        .expect("the run's failure is sent in-band");
    assert!(
        headers_after < started.elapsed() - Duration::from_millis(500),
        "the headers came {headers_after:?} after the request, the failure {:?}: {error}",
        started.elapsed()
    );
    assert_eq!(
        working.request_count(),
        0,
        "no fallback after the response started"
    );
}
