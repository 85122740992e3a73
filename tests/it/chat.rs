//! End-to-end: the real proxy binary, the real Codex CLI, the mock model. Successful requests in both
//! response shapes, what reaches the model, routing, `/v1/models` and the operational endpoints.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::app::{chat_body, App, TestEnv};
use support::mock_model::*;

#[tokio::test]
async fn plain_completion_has_the_openai_shape_and_real_usage() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &format!("{}{}", env.server(""), env.profile("default", "")),
    )
    .await;

    let response = app.chat(&chat_body("default", "Say hello")).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!request_id.is_empty());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], format!("chatcmpl-{request_id}"));
    assert_eq!(body["model"], "default");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({
            "prompt_tokens": USAGE_INPUT_TOKENS,
            "completion_tokens": USAGE_OUTPUT_TOKENS,
            "total_tokens": USAGE_TOTAL_TOKENS,
            "prompt_tokens_details": {"cached_tokens": USAGE_CACHED_TOKENS},
            "completion_tokens_details": {"reasoning_tokens": USAGE_REASONING_TOKENS},
        })
    );

    // What reached the model: the configured model and the transcript.
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].model().as_deref(), Some("mock-model"));
    assert_eq!(
        requests[0].last_user_text().as_deref(),
        Some("[user]\nSay hello\n")
    );

    // One latency line with the reference's phase names and the profile.
    let line = app.wait_for_line("chat_completion_latency").await;
    for field in [
        "\"profile\":\"default\"",
        "phases_ms",
        "codex_exec",
        "queue_wait",
        "cwd_resolve",
        "prompt_build",
        "codex_process_spawn",
        "codex_first_stdout_event",
        "total",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[tokio::test]
async fn streaming_sends_role_content_finish_usage_and_done() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &format!("{}{}", env.server(""), env.profile("default", "")),
    )
    .await;
    let mut body = chat_body("default", "Say hello");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = app.chat(&body).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(headers.contains_key("x-request-id"));
    let transcript = App::sse(response).await;
    assert!(transcript.done(), "{:?}", transcript.data);
    let chunks = transcript.chunks();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["model"], "default");
    }
    assert_eq!(transcript.content(), DEFAULT_REPLY);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], USAGE_INPUT_TOKENS);
    assert_eq!(usage["usage"]["completion_tokens"], USAGE_OUTPUT_TOKENS);
    assert_eq!(usage["usage"]["total_tokens"], USAGE_TOTAL_TOKENS);
    app.wait_for_line("chat_completion_first_sse").await;

    // Without include_usage there is no usage chunk.
    body["stream_options"] = Value::Null;
    let transcript = App::sse(app.chat(&body).await).await;
    assert!(transcript
        .chunks()
        .iter()
        .all(|chunk| chunk.get("usage").is_none()));
    assert!(transcript.done());
}

#[tokio::test]
async fn streams_send_keep_alive_comments_while_codex_works() {
    let env = TestEnv::new().await;
    let config = format!("{}{}", env.server(""), env.profile("default", ""));
    let path = env.write_config(&config);
    let mut command = env.command();
    command
        .args(["start", "--foreground", "--port", "0", "--config"])
        .arg(&path)
        .env("CODEX_PROXY_SSE_KEEPALIVE_MS", "200")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let app = App::spawn(command).await;
    let mut body = chat_body("default", "mock:first_delay_ms=1500");
    body["stream"] = json!(true);
    let transcript = App::sse(app.chat(&body).await).await;
    assert!(
        transcript.comments >= 3,
        "only {} comments",
        transcript.comments
    );
    assert_eq!(transcript.content(), DEFAULT_REPLY);
}

#[tokio::test]
async fn system_text_becomes_developer_instructions_and_history_a_transcript() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &format!("{}{}", env.server(""), env.profile("default", "")),
    )
    .await;
    let body = json!({
        "model": "default",
        "messages": [
            {"role": "system", "content": "You are \"terse\".\nAnswer in one word."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": [{"type": "text", "text": "Second"}, {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]},
        ],
    });
    let (status, _) = app.chat_json(&body).await;
    assert_eq!(status, 200);
    let request = &env.mock.requests()[0];
    let texts = request.input_texts();
    assert!(
        texts.iter().any(|(role, text)| role == "developer"
            && text.contains("You are \"terse\".\nAnswer in one word.")),
        "{texts:?}"
    );
    assert_eq!(
        request.last_user_text().as_deref(),
        Some("[user]\nFirst question\n\n[assistant]\nFirst answer\n\n[user]\nSecond\n[input_audio content omitted: not supported by this proxy]\n")
    );
    // The client's system text never replaces Codex's own base instructions.
    assert!(!request.instructions().contains("terse"));
}

#[tokio::test]
async fn by_default_a_profile_is_a_plain_model_call() {
    let env = TestEnv::new().await;
    let config = format!("{}{}", env.server(""), env.profile("default", ""));
    let app = App::start(&env, &config).await;
    assert_eq!(app.chat_json(&chat_body("default", "hi")).await.0, 200);
    let requests = env.mock.requests();
    assert!(
        requests[0].tool_names().is_empty(),
        "{:?}",
        requests[0].tool_names()
    );
}

#[tokio::test]
async fn tools_false_makes_a_plain_smaller_model_call() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}{}",
        env.server(""),
        env.profile("agentic", "tools = true"),
        env.profile("plain", "tools = false")
    );
    let app = App::start(&env, &config).await;
    assert_eq!(app.chat_json(&chat_body("agentic", "hi")).await.0, 200);
    assert_eq!(app.chat_json(&chat_body("plain", "hi")).await.0, 200);
    let requests = env.mock.requests();
    let (with_tools, without) = (&requests[0], &requests[1]);
    assert!(!with_tools.tool_names().is_empty());
    assert!(
        without.tool_names().is_empty(),
        "{:?}",
        without.tool_names()
    );
    assert!(!without.text().contains("<environment_context>"));
    assert!(!without.text().contains("<permissions instructions>"));
    assert!(
        without.body_len() * 2 < with_tools.body_len(),
        "{} vs {}",
        without.body_len(),
        with_tools.body_len()
    );
}

#[tokio::test]
async fn routing_order_pass_model_and_models_list() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}{}{}",
        env.server("fallback_profile = \"catchall\""),
        env.profile(
            "primary",
            "aliases = [\"prime\", \"gpt-5-exact\"]\ndescription = \"The main one\"\nmatch = \"^gpt-5\""
        ),
        env.profile("second", "match = \"^gpt-\"\npass_model = true"),
        env.profile("catchall", "")
    );
    let app = App::start(&env, &config).await;

    let routed = |model: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app.chat_json(&chat_body(model, "route me")).await;
            assert_eq!(status, 200, "{model}: {body}");
            assert_eq!(body["model"], model);
        }
    };
    routed("primary").await;
    routed("prime").await;
    routed("gpt-5.1").await;
    routed("gpt-4o").await;
    routed("llama-3").await;
    let requests = env.mock.requests();
    // pass_model sends the request's model name to Codex; the others send the profile's.
    let models: Vec<String> = requests.iter().map(|r| r.model().unwrap()).collect();
    assert_eq!(
        models,
        vec![
            "mock-model",
            "mock-model",
            "mock-model",
            "gpt-4o",
            "mock-model"
        ]
    );

    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["profiles"]["primary"]["requests"], 3);
    assert_eq!(metrics["profiles"]["second"]["requests"], 1);
    assert_eq!(metrics["profiles"]["catchall"]["requests"], 1);
    assert_eq!(
        metrics["profiles"]["primary"]["tokens"]["total"],
        3 * USAGE_TOTAL_TOKENS
    );
    assert_eq!(metrics["requests_total"], 5);
    assert_eq!(metrics["requests_ok"], 5);

    let (status, models) = app.get_json("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    let data = models["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["primary", "second", "catchall"]);
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "codex-api-proxy");
    assert!(data[0]["created"].as_u64().unwrap() > 0);
    assert_eq!(data[0]["aliases"], json!(["prime", "gpt-5-exact"]));
    assert_eq!(data[0]["engine"], "exec");
    assert_eq!(data[0]["description"], "The main one");
    let (status, one) = app.get_json("/v1/models/prime").await;
    assert_eq!(status, 200);
    assert_eq!(one["profile"], "primary");
}

#[tokio::test]
async fn health_ready_and_metrics_describe_the_server() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &format!("{}{}", env.server(""), env.profile("default", "")),
    )
    .await;
    let (status, health) = app.get_json("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));

    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["profiles"]["default"]["ready"], true);
    // The npm launcher is bypassed: the native binary runs.
    let program = ready["codex"]["program"].as_str().unwrap();
    assert!(program.ends_with("/bin/codex"), "{program}");
    assert!(program.contains("vendor"), "{program}");
    assert!(ready["codex"]["npm_launcher_bypassed"]
        .as_str()
        .unwrap()
        .ends_with("codex.js"));
    assert!(ready["codex"]["version"]
        .as_str()
        .unwrap()
        .contains("0.169.0"));

    let (status, metrics) = app.get_json("/metrics").await;
    assert_eq!(status, 200);
    for key in [
        "requests_total",
        "requests_ok",
        "requests_error",
        "errors_by_status",
        "uptime_seconds",
    ] {
        assert!(metrics.get(key).is_some(), "{key} missing: {metrics}");
    }
    let block = &metrics["profiles"]["default"];
    for key in [
        "requests",
        "ok",
        "errors_by_status",
        "in_flight",
        "queued",
        "tokens",
        "pool",
    ] {
        assert!(block.get(key).is_some(), "{key} missing: {block}");
    }
    assert_eq!(metrics["config"]["generation"], 1);
}

#[tokio::test]
async fn metadata_cwd_selects_a_directory_inside_the_roots() {
    let env = TestEnv::new().await;
    // Codex's environment context (which names the directory) comes with its tools.
    let app = App::start(
        &env,
        &format!(
            "{}{}",
            env.server(""),
            env.profile("default", "tools = true")
        ),
    )
    .await;
    let project = env.workspace.join("project-a");
    std::fs::create_dir_all(&project).unwrap();
    let mut body = chat_body("default", "where am I");
    body["metadata"] = json!({"cwd": project.display().to_string()});
    let (status, response) = app.chat_json(&body).await;
    assert_eq!(status, 200, "{response}");
    // Codex describes its working directory to the model in the environment context.
    let text = env.mock.requests()[0].text();
    assert!(
        text.contains(&project.display().to_string()),
        "cwd not in the request"
    );
}

#[tokio::test]
async fn without_config_the_implicit_profile_takes_every_model() {
    let env = TestEnv::new().await;
    let mut args = vec![
        "--codex-bin".to_string(),
        support::codex_bin().display().to_string(),
        "--model".to_string(),
        "mock-model".to_string(),
        "--default-cwd".to_string(),
        env.workspace.display().to_string(),
    ];
    for item in env.mock.provider_overrides() {
        args.push("--codex-config".to_string());
        args.push(item);
    }
    let app = App::start_args(&env, &args).await;
    let (status, body) = app.chat_json(&chat_body("anything-at-all", "hi")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "anything-at-all");
    let models = app.get_json("/v1/models").await.1;
    assert_eq!(models["data"][0]["id"], "codex-local");
    assert_eq!(
        env.mock.requests()[0].model().as_deref(),
        Some("mock-model")
    );
}

#[tokio::test]
async fn fast_profiles_ask_for_low_reasoning_effort() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &format!("{}{}", env.server(""), env.profile("quick", "fast = true")),
    )
    .await;
    assert_eq!(app.chat_json(&chat_body("quick", "hi")).await.0, 200);
    let body = &env.mock.requests()[0].body;
    assert_eq!(
        body.pointer("/reasoning/effort").and_then(Value::as_str),
        Some("low"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn the_example_config_loads_and_serves_its_profiles() {
    let env = TestEnv::new().await;
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let mut command = env.command();
    command
        .args(["start", "--foreground", "--port", "0", "--codex-bin"])
        .arg(support::codex_bin())
        .arg("--config")
        .arg(&example)
        .env("CODEX_PROXY_API_KEY", "example-key")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let app = App::spawn(command).await;
    // The key from ${CODEX_PROXY_API_KEY} is required.
    assert_eq!(app.get("/v1/models").await.status(), 401);
    let models: Value = App::client()
        .get(app.url("/v1/models"))
        .bearer_auth("example-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["default", "quick"]);
    assert_eq!(models["data"][1]["engine"], "app-server");
    assert_eq!(models["data"][0]["aliases"], json!(["codex-local"]));
}
