//! The OpenAI Responses API (`POST /v1/responses`) end to end: the real proxy, the real Codex CLI and
//! the mock model. The streamed event sequence is checked on the raw HTTP; the OpenAI Python SDK
//! (`tests/python/test_responses.py`) checks plain and streamed answers, a function-tool round trip and
//! the refusals; the OpenAI Agents SDK (`tests/python/test_agents.py`) runs one tool-using agent.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::app::{App, TestEnv};
use support::mock_model::*;

const KEY: &str = "sk-responses-test";

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

async fn post(app: &App, body: &Value) -> reqwest::Response {
    App::client()
        .post(app.url("/v1/responses"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post_json(app: &App, body: &Value) -> (u16, Value) {
    let response = post(app, body).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

#[tokio::test]
async fn a_plain_response_has_openais_shape_on_both_engines() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    for model in ["fast", "slow"] {
        let (status, response) = post_json(
            &app,
            &json!({"model": model, "input": "mock:reply=Hi", "store": false}),
        )
        .await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["object"], "response");
        assert_eq!(response["status"], "completed");
        assert_eq!(response["model"], model);
        assert_eq!(response["store"], false);
        let output = response["output"].as_array().unwrap();
        assert_eq!(output.len(), 1, "{response}");
        assert_eq!(output[0]["type"], "message");
        assert_eq!(output[0]["content"][0]["type"], "output_text");
        assert_eq!(output[0]["content"][0]["text"], "Hi");
        assert_eq!(
            response["usage"],
            json!({
                "input_tokens": USAGE_INPUT_TOKENS,
                "input_tokens_details": {"cached_tokens": USAGE_CACHED_TOKENS},
                "output_tokens": USAGE_OUTPUT_TOKENS,
                "output_tokens_details": {"reasoning_tokens": USAGE_REASONING_TOKENS},
                "total_tokens": USAGE_TOTAL_TOKENS,
            })
        );
    }
    let line = app.wait_for_line("responses_latency").await;
    assert!(line.contains("\"status\":200"), "{line}");
}

#[tokio::test]
async fn a_stream_follows_the_documented_event_sequence() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let tools = json!([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]);
    let body = json!({
        "model": "fast",
        "stream": true,
        "tools": tools,
        "input": r#"mock:reply=Checking. mock:call=lookup:{"word":"otter"}"#,
    });
    let response = post(&app, &body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(event) = line.strip_prefix("event:") {
            name = event.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data:") {
            events.push((
                std::mem::take(&mut name),
                serde_json::from_str(data.trim()).unwrap(),
            ));
        }
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|(kind, _)| kind.as_str())
        .filter(|kind| *kind != "response.output_text.delta")
        .collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ],
        "{text}"
    );
    for (index, (kind, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], kind.as_str());
        assert_eq!(data["sequence_number"], index);
    }
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["output"][0]["content"][0]["text"], "Checking.");
    assert_eq!(completed["output"][1]["type"], "function_call");
    assert_eq!(completed["output"][1]["call_id"], call_id(1, 0));
    assert_eq!(completed["output"][1]["arguments"], r#"{"word":"otter"}"#);
    assert_eq!(completed["usage"]["total_tokens"], USAGE_TOTAL_TOKENS);
}

#[tokio::test]
async fn a_failed_stream_ends_with_response_failed() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let response = post(
        &app,
        &json!({"model": "fast", "stream": true, "input": "mock:failed"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let last = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("data:"))
        .unwrap();
    let last: Value = serde_json::from_str(last.trim()).unwrap();
    assert_eq!(last["type"], "response.failed", "{text}");
    assert_eq!(last["response"]["status"], "failed");
    assert!(last["response"]["error"]["message"]
        .as_str()
        .unwrap()
        .contains(FAILED_MESSAGE));
}

#[tokio::test]
async fn refusals_name_what_cannot_be_served() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let tools = json!([{"type": "function", "name": "lookup"}]);
    let (status, error) = post_json(
        &app,
        &json!({"model": "slow", "input": "hi", "tools": tools}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "unsupported_by_engine");
    assert!(error["error"]["message"].as_str().unwrap().contains("fast"));
    let (status, error) = post_json(
        &app,
        &json!({"model": "fast", "input": "hi", "tools": [{"type": "code_interpreter"}]}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("code_interpreter"), "{message}");
    assert_eq!(error["error"]["param"], "tools[0].type");
    // Codex's own web_search needs a profile that lets Codex use its tools.
    let (status, error) = post_json(
        &app,
        &json!({"model": "fast", "input": "hi", "tools": [{"type": "web_search"}]}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "tools");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("tools = true"), "{message}");
    let (status, error) = post_json(&app, &json!({"model": "fast"})).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "input");
}

#[tokio::test]
async fn the_openai_python_sdk_is_served() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let output = support::run_python(
        "test_responses.py",
        &[
            ("BASE_URL", app.url("/v1")),
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
        "refusals",
        "continuation",
    ] {
        assert!(output.contains(&format!("ok {case}\n")), "{output}");
    }
}

#[tokio::test]
async fn the_openai_agents_sdk_runs_a_tool_using_agent() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let output = support::run_python(
        "test_agents.py",
        &[
            ("BASE_URL", app.url("/v1")),
            ("API_KEY", KEY.to_string()),
            ("MODEL", "fast".to_string()),
        ],
        Duration::from_secs(240),
    )
    .await;
    assert!(output.contains("ok agent\n"), "{output}");
}

#[tokio::test]
async fn previous_response_id_continues_the_kept_thread() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let (status, first) = post_json(
        &app,
        &json!({"model": "fast", "instructions": "Be brief.", "input": "mock:reply=First"}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_string();

    // Kept: GET answers with the same response.
    let got = App::client()
        .get(app.url(&format!("/v1/responses/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let got: Value = got.json().await.unwrap();
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["output"], first["output"]);

    let (status, second) = post_json(
        &app,
        &json!({"model": "fast", "previous_response_id": id, "input": "mock:reply=Second"}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["output"][0]["content"][0]["text"], "Second");
    assert_eq!(second["previous_response_id"], id.as_str());
    // The continuation's own usage, not the thread's running total.
    assert_eq!(second["usage"]["input_tokens"], USAGE_INPUT_TOKENS);

    // The same thread went on: the model saw the first exchange, under the same prompt cache key,
    // and the developer instructions were not sent again by the client.
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 2);
    let texts = requests[1].input_texts();
    assert!(
        texts
            .iter()
            .any(|(role, text)| role == "assistant" && text == "First"),
        "{texts:?}"
    );
    assert!(requests[1].text().contains("Be brief."));
    let cache_key = |index: usize| requests[index].body["prompt_cache_key"].clone();
    assert!(!cache_key(0).is_null());
    assert_eq!(cache_key(0), cache_key(1));

    // The continuation was kept in turn; the first was taken by it.
    let second_id = second["id"].as_str().unwrap().to_string();
    let (status, error) = post_json(
        &app,
        &json!({"model": "fast", "previous_response_id": id, "input": "again"}),
    )
    .await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["code"], "previous_response_not_found");
    assert_eq!(error["error"]["param"], "previous_response_id");

    // DELETE ends the kept thread: then it is not found.
    let deleted = App::client()
        .delete(app.url(&format!("/v1/responses/{second_id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let deleted: Value = deleted.json().await.unwrap();
    assert_eq!(
        deleted,
        json!({"id": second_id, "object": "response", "deleted": true})
    );
    let (status, _) = post_json(
        &app,
        &json!({"model": "fast", "previous_response_id": second_id, "input": "again"}),
    )
    .await;
    assert_eq!(status, 404);
    let got = App::client()
        .get(app.url(&format!("/v1/responses/{second_id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 404);
}

#[tokio::test]
async fn an_exec_profile_refuses_previous_response_id_and_names_app_server_profiles() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let (status, response) = post_json(
        &app,
        &json!({"model": "slow", "input": "mock:reply=Hi", "store": true}),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let (status, error) = post_json(
        &app,
        &json!({"model": "slow", "previous_response_id": response["id"], "input": "more"}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["param"], "previous_response_id");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("fast"), "{message}");
}

#[tokio::test]
async fn a_kept_response_expires_after_its_ttl() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(""),
        env.profile(
            "fast",
            "engine = \"app-server\"\nworkers = 1\nresponse_ttl_seconds = 1\n"
        ),
    );
    let app = App::start(&env, &config).await;
    let (status, first) =
        post_json(&app, &json!({"model": "fast", "input": "mock:reply=First"})).await;
    assert_eq!(status, 200, "{first}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, error) = post_json(
        &app,
        &json!({"model": "fast", "previous_response_id": first["id"], "input": "more"}),
    )
    .await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["code"], "previous_response_not_found");
    // store: false keeps nothing.
    let (_, unstored) = post_json(
        &app,
        &json!({"model": "fast", "input": "mock:reply=Once", "store": false}),
    )
    .await;
    let got = App::client()
        .get(app.url(&format!(
            "/v1/responses/{}",
            unstored["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 404);
}

#[tokio::test]
async fn web_search_is_served_by_a_profile_with_codexs_tools() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(""),
        env.profile(
            "agent",
            "engine = \"app-server\"\nworkers = 1\ntools = true\n"
        ),
    );
    let app = App::start(&env, &config).await;
    let (status, response) = post_json(
        &app,
        &json!({"model": "agent", "input": "mock:reply=Searched", "tools": [{"type": "web_search"}]}),
    )
    .await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["output"][0]["content"][0]["text"], "Searched");
}
