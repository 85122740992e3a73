//! The Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) end to end: the
//! real proxy, the real Codex CLI and the mock model. The exact streamed event sequence and the error
//! shape are checked on the raw HTTP; the Anthropic Python SDK (`tests/python/test_messages.py`) checks
//! plain and streamed answers, a tool round trip, an image block, `count_tokens`, typed errors, a
//! Claude-Code-style request and `/v1/models` in Anthropic's shape.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::app::{App, TestEnv};
use support::mock_model::*;

const KEY: &str = "sk-messages-test";

/// An app-server profile `fast` and an exec profile `slow`, behind one server key.
async fn proxy(env: &TestEnv) -> App {
    let config = format!(
        "{}{}{}",
        env.server(&format!("api_keys = [\"{KEY}\"]")),
        env.profile("fast", "engine = \"app-server\"\nworkers = 1\n"),
        env.profile("slow", "engine = \"exec\"\n"),
    );
    App::start(env, &config).await
}

async fn post(app: &App, path: &str, body: &Value) -> reqwest::Response {
    App::client()
        .post(app.url(path))
        .bearer_auth(KEY)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post_json(app: &App, path: &str, body: &Value) -> (u16, Value) {
    let response = post(app, path, body).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

/// The `(event, data)` pairs of an SSE body.
fn events(text: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(event) = line.strip_prefix("event:") {
            name = event.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data:") {
            let data: Value = serde_json::from_str(data.trim()).unwrap();
            events.push((std::mem::take(&mut name), data));
        }
    }
    events
}

fn body(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn a_plain_message_has_anthropics_shape_on_both_engines() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    for model in ["fast", "slow"] {
        let (status, message) =
            post_json(&app, "/v1/messages", &body(model, "mock:reply=Hi")).await;
        assert_eq!(status, 200, "{message}");
        assert_eq!(message["type"], "message");
        assert_eq!(message["role"], "assistant");
        assert_eq!(message["model"], model);
        assert_eq!(message["content"], json!([{"type": "text", "text": "Hi"}]));
        assert_eq!(message["stop_reason"], "end_turn");
        assert_eq!(message["stop_sequence"], Value::Null);
        assert_eq!(
            message["usage"],
            json!({
                "input_tokens": USAGE_INPUT_TOKENS - USAGE_CACHED_TOKENS,
                "output_tokens": USAGE_OUTPUT_TOKENS,
                "cache_read_input_tokens": USAGE_CACHED_TOKENS,
                "cache_creation_input_tokens": 0,
            })
        );
    }
    // Logged and recorded as the Messages API.
    let line = app.wait_for_line("messages_latency").await;
    assert!(line.contains("\"status\":200"), "{line}");
}

#[tokio::test]
async fn a_stream_follows_anthropics_event_sequence() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = body(
        "fast",
        r#"mock:reply=Checking. mock:call=lookup:{"word":"otter"}"#,
    );
    request["stream"] = json!(true);
    request["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    let response = post(&app, "/v1/messages", &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = events(&response.text().await.unwrap());
    let names: Vec<&str> = events
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| *name != "ping" && *name != "content_block_delta")
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_stop",
            "content_block_start",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{events:?}"
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "{data}");
    }
    assert_eq!(events[1].0, "ping");
    let text: String = events
        .iter()
        .filter_map(|(_, data)| data.pointer("/delta/text").and_then(Value::as_str))
        .collect();
    assert_eq!(text, "Checking.");
    let tool_start = events
        .iter()
        .filter(|(name, _)| name == "content_block_start")
        .nth(1)
        .unwrap();
    assert_eq!(tool_start.1["index"], 1);
    assert_eq!(tool_start.1["content_block"]["type"], "tool_use");
    assert_eq!(tool_start.1["content_block"]["name"], "lookup");
    assert_eq!(tool_start.1["content_block"]["id"], call_id(1, 0));
    let json_delta = events
        .iter()
        .find(|(_, data)| data["delta"]["type"] == "input_json_delta")
        .unwrap();
    assert_eq!(json_delta.1["delta"]["partial_json"], r#"{"word":"otter"}"#);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], USAGE_OUTPUT_TOKENS);
}

#[tokio::test]
async fn refusals_come_in_anthropics_error_shape() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut missing = body("fast", "hi");
    missing.as_object_mut().unwrap().remove("max_tokens");
    let (status, error) = post_json(&app, "/v1/messages", &missing).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(
        error,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
    );

    let (status, error) = post_json(&app, "/v1/messages", &body("nope", "hi")).await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["type"], "not_found_error");

    let mut tools = body("slow", "hi");
    tools["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    let (status, error) = post_json(&app, "/v1/messages", &tools).await;
    assert_eq!(status, 400, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("fast"), "{message}");

    let unauthenticated = App::client()
        .post(app.url("/v1/messages"))
        .json(&body("fast", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let error: Value = unauthenticated.json().await.unwrap();
    assert_eq!(error["error"]["type"], "authentication_error");

    let (status, error) = post_json(&app, "/v1/messages", &json!([1])).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["type"], "error");
}

#[tokio::test]
async fn count_tokens_counts_without_running_codex() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let request =
        json!({"model": "fast", "messages": [{"role": "user", "content": "Hello, world!"}]});
    let (status, count) = post_json(&app, "/v1/messages/count_tokens", &request).await;
    assert_eq!(status, 200, "{count}");
    assert_eq!(count, json!({"input_tokens": 10}));
    assert!(env.mock.requests().is_empty());
}

#[tokio::test]
async fn the_x_api_key_header_authenticates() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let response = App::client()
        .post(app.url("/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body("fast", "mock:reply=Keyed"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let message: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["content"][0]["text"], "Keyed");
}

#[tokio::test]
async fn the_anthropic_python_sdk_is_served() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let output = support::run_python(
        "test_messages.py",
        &[
            ("BASE_URL", app.url("")),
            ("API_KEY", KEY.to_string()),
            ("MODEL", "fast".to_string()),
        ],
        Duration::from_secs(240),
    )
    .await;
    for case in [
        "plain",
        "streaming",
        "tool_round_trip",
        "image_block",
        "count_tokens",
        "errors",
        "claude_code_style",
        "stop_sequences",
        "models",
    ] {
        assert!(output.contains(&format!("ok {case}\n")), "{output}");
    }
}
