//! A real client: the official `openai` Node SDK (pinned in package.json, installed by `npm ci`) runs
//! `tests/sdk/client.mjs` against the proxy (real Codex CLI, mock model) and must get completions,
//! streams and models back, and raise the right exception class for each error.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::app::{App, TestEnv};
use support::mock_model::{
    DEFAULT_REPLY, USAGE_INPUT_TOKENS, USAGE_OUTPUT_TOKENS, USAGE_TOTAL_TOKENS,
};

const NPM_HINT: &str =
    "run `npm ci` in the repository root (it installs the pinned openai SDK and \
     Codex CLI into node_modules/)";

/// Runs the SDK client script against `base_url` and returns its JSON report.
async fn run_client(base_url: &str, api_key: &str, model: &str) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sdk = root.join("node_modules/openai/package.json");
    assert!(
        sdk.is_file(),
        "the openai SDK is missing ({} not found): {NPM_HINT}",
        sdk.display()
    );
    let version = Command::new("node").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|output| output.status.success()),
        "`node` is not available ({version:?}): install Node.js 20+, then {NPM_HINT}"
    );
    let mut command = tokio::process::Command::new("node");
    command
        .arg(root.join("tests/sdk/client.mjs"))
        .arg(format!("{base_url}/v1"))
        .arg(api_key)
        .arg(model)
        .current_dir(root)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the SDK client did not finish within 120 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("the SDK client printed no JSON ({err}):\n{stdout}\n{stderr}"))
}

fn value<'a>(report: &'a Value, case: &str) -> &'a Value {
    assert_eq!(report[case]["ok"], true, "{case}: {}", report[case]);
    &report[case]["value"]
}

fn error<'a>(report: &'a Value, case: &str) -> &'a Value {
    assert_eq!(report[case]["ok"], false, "{case}: {}", report[case]);
    &report[case]["error"]
}

#[tokio::test]
async fn the_openai_node_sdk_gets_completions_streams_and_typed_errors() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server("api_keys = [\"sdk-key\"]"),
        env.profile("default", "aliases = [\"default-latest\"]")
    );
    let app = App::start(&env, &config).await;
    let report = run_client(&app.base_url, "sdk-key", "default").await;

    let plain = value(&report, "plain");
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["model"], "default");
    assert_eq!(plain["role"], "assistant");
    assert_eq!(plain["content"], DEFAULT_REPLY);
    assert_eq!(plain["finish_reason"], "stop");
    assert_eq!(plain["usage"]["prompt_tokens"], USAGE_INPUT_TOKENS);
    assert_eq!(plain["usage"]["completion_tokens"], USAGE_OUTPUT_TOKENS);
    assert_eq!(plain["usage"]["total_tokens"], USAGE_TOTAL_TOKENS);

    let with_response = value(&report, "plain_with_response");
    assert_eq!(with_response["content"], DEFAULT_REPLY);
    let request_id = with_response["request_id"].as_str().unwrap();
    assert_eq!(with_response["id"], format!("chatcmpl-{request_id}"));

    let stream = value(&report, "stream");
    assert_eq!(stream["content"], DEFAULT_REPLY);
    assert_eq!(stream["role"], "assistant");
    assert_eq!(stream["finish_reason"], "stop");
    assert_eq!(stream["distinct_ids"], 1);
    assert!(stream["chunks"].as_u64().unwrap() >= 3, "{stream}");
    assert_eq!(stream["usage"]["total_tokens"], USAGE_TOTAL_TOKENS);

    assert_eq!(value(&report, "models"), &serde_json::json!(["default"]));

    let not_found = error(&report, "not_found");
    assert_eq!(not_found["class"], "NotFoundError", "{not_found}");
    assert_eq!(not_found["is_not_found"], true);
    assert_eq!(not_found["status"], 404);
    assert_eq!(not_found["code"], "model_not_found");
    assert_eq!(not_found["param"], "model");
    let message = not_found["message"].as_str().unwrap();
    assert!(message.contains("default-latest"), "{message}");

    let unauthenticated = error(&report, "unauthenticated");
    assert_eq!(
        unauthenticated["class"], "AuthenticationError",
        "{unauthenticated}"
    );
    assert_eq!(unauthenticated["is_authentication"], true);
    assert_eq!(unauthenticated["status"], 401);
    assert_eq!(unauthenticated["type"], "authentication_error");

    let bad_request = error(&report, "bad_request");
    assert_eq!(bad_request["class"], "BadRequestError", "{bad_request}");
    assert_eq!(bad_request["status"], 400);
    assert_eq!(bad_request["param"], "n");

    // In-band after the SSE headers: a plain APIError (no HTTP status) with the proxy's error body.
    let stream_error = error(&report, "stream_error");
    assert_eq!(stream_error["is_api_error"], true, "{stream_error}");
    assert_eq!(stream_error["code"], "codex_failed");
    assert_eq!(stream_error["type"], "server_error");
    let message = stream_error["message"].as_str().unwrap();
    assert!(message.contains("experiencing high demand"), "{message}");

    // Three successful completions and one failed Codex run reached the model; nothing else did.
    assert_eq!(env.mock.request_count(), 4);
}
