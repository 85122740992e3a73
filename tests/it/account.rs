//! End-to-end: what the proxy knows of each Codex account. A fresh `CODEX_HOME` with Codex's default
//! provider is not logged in: `/ready` says so naming the home, requests get 503
//! `codex_not_logged_in` without running Codex, and a login written the way `codex login
//! --with-api-key` writes it is picked up without a restart. Quota windows reported through the
//! rate-limit headers reach `/v1/quota` (in its documented shape), and an account whose window is used
//! up answers 429 `insufficient_quota` with `Retry-After` at the reset.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::app::{chat_body, App, TestEnv};

/// A profile on Codex's default provider (it needs a login), in the test's workspace.
fn default_provider_profile(env: &TestEnv, name: &str) -> String {
    format!(
        "[profiles.{name}]\ndefault_cwd = {workspace:?}\nallowed_roots = [{workspace:?}]\n",
        workspace = env.workspace.display().to_string()
    )
}

#[tokio::test]
async fn not_logged_in_is_a_fast_503_and_a_login_is_picked_up_without_restart() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}{}",
        env.server(""),
        default_provider_profile(&env, "plain"),
        // The mock's custom provider needs no login: this profile stays ready.
        env.profile("mock", ""),
    );
    let app = App::start(&env, &config).await;
    let home = env.codex_home.display().to_string();

    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "not_ready");
    let reason = ready["profiles"]["plain"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("not logged in: run `codex login`"),
        "{reason}"
    );
    assert!(reason.contains(&home), "{reason}");
    assert_eq!(ready["profiles"]["mock"]["ready"], true, "{ready}");

    let started = Instant::now();
    let response = app.chat(&chat_body("plain", "hello")).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "codex_not_logged_in", "{body}");
    assert_eq!(body["error"]["type"], "server_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("run `codex login`") && message.contains(&home),
        "{message}"
    );
    eprintln!("codex_not_logged_in answered in {elapsed:?}");
    // Codex never ran for it: the exempt profile still works and the mock saw only that request.
    let (status, _) = app.chat_json(&chat_body("mock", "hello")).await;
    assert_eq!(status, 200);
    assert_eq!(env.mock.request_count(), 1);

    let (_, quota) = app.get_json("/v1/quota").await;
    let account = quota["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|account| account["codex_home"] == json!(home))
        .unwrap()
        .clone();
    assert_eq!(account["profiles"], json!(["plain", "mock"]));
    assert_eq!(
        account["login"],
        json!({"logged_in": false, "method": null})
    );

    support::app::login_with_api_key(&env).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, ready) = app.get_json("/ready").await;
        if status == 200 {
            assert_eq!(ready["profiles"]["plain"]["ready"], true);
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, quota) = app.get_json("/v1/quota").await;
    assert_eq!(
        quota["accounts"][0]["login"],
        json!({"logged_in": true, "method": "api_key"}),
        "{quota}"
    );
}

#[tokio::test]
async fn quota_windows_reach_v1_quota_and_an_exhausted_account_is_a_429_until_reset() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(""),
        env.profile("worker", "engine = \"app-server\"\nworkers = 1"),
    );
    let app = App::start(&env, &config).await;

    let (status, _) = app
        .chat_json(&chat_body("worker", "hello mock:used=42"))
        .await;
    assert_eq!(status, 200);
    let quota = wait_for_primary(&app, 42.0).await;
    assert_eq!(quota["object"], "quota");
    let accounts = quota["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1);
    let account = accounts[0].as_object().unwrap();
    let mut keys: Vec<&String> = account.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["codex_home", "login", "profiles", "updated_at", "windows"]
    );
    assert!(account["codex_home"]
        .as_str()
        .unwrap()
        .ends_with("codex-home/worker"));
    assert_eq!(account["profiles"], json!(["worker"]));
    // Only an exempt (custom provider) profile uses this home: its login is not checked.
    assert_eq!(account["login"], json!({"logged_in": null, "method": null}));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let windows = account["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{quota}");
    assert_eq!(windows[0]["id"], "primary");
    assert_eq!(windows[0]["used_percent"], 42.0);
    assert_eq!(windows[0]["window_minutes"], 300);
    let resets_at = windows[0]["resets_at"].as_u64().unwrap();
    assert!(
        resets_at > now + 3000 && resets_at <= now + 3700,
        "{resets_at}"
    );
    assert_eq!(windows[1]["id"], "secondary");
    assert_eq!(windows[1]["window_minutes"], 10080);
    let updated_at = account["updated_at"].as_u64().unwrap();
    assert!(updated_at + 60 > now && updated_at <= now + 1);

    // The window is used up: the request after it is refused without reaching the model.
    let (status, _) = app
        .chat_json(&chat_body("worker", "hello mock:used=100"))
        .await;
    assert_eq!(status, 200);
    wait_for_primary(&app, 100.0).await;
    let before = env.mock.request_count();
    let response = app.chat(&chat_body("worker", "hello")).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(env.mock.request_count(), before);
}

/// Polls `/v1/quota` until the primary window shows `used_percent`; returns the body.
async fn wait_for_primary(app: &App, used_percent: f64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, quota) = app.get_json("/v1/quota").await;
        assert_eq!(status, 200);
        if quota["accounts"][0]["windows"][0]["used_percent"] == json!(used_percent) {
            return quota;
        }
        assert!(Instant::now() < deadline, "{quota}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn list_models_adds_the_models_the_account_can_use() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}{}",
        env.server(""),
        env.profile(
            "gpt",
            "pass_model = true\nmatch = \"^gpt-\"\nlist_models = true"
        ),
        env.profile("plain", ""),
    );
    let app = App::start(&env, &config).await;
    let (status, body) = app.get_json("/v1/models").await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data[0]["id"], "gpt");
    assert_eq!(data[1]["id"], "plain");
    let discovered: Vec<&Value> = data
        .iter()
        .filter(|entry| entry["discovered"] == json!(true))
        .collect();
    assert!(!discovered.is_empty(), "{body}");
    for entry in &discovered {
        assert_eq!(entry["profile"], "gpt", "{entry}");
        assert!(entry["id"].as_str().unwrap().starts_with("gpt-"), "{entry}");
        assert_eq!(entry["object"], "model");
    }
    // A discovered model routes to its profile, which passes the name on to Codex.
    let model = discovered[0]["id"].as_str().unwrap().to_string();
    let (status, answer) = app.chat_json(&chat_body(&model, "hello")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        env.mock.requests().last().unwrap().model().as_deref(),
        Some(model.as_str())
    );
}

#[tokio::test]
async fn check_prints_each_accounts_login_and_the_fallback_chains() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}fallbacks = [\"mock\"]\n{}",
        env.server(""),
        default_provider_profile(&env, "plain"),
        env.profile("mock", "engine = \"app-server\""),
    );
    let path = env.write_config(&config);
    let check = |env: &TestEnv| {
        let output = env
            .command()
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let home = env.codex_home.display().to_string();
    let text = check(&env);
    assert!(text.contains("fallbacks:\n  plain → mock\n"), "{text}");
    assert!(
        text.contains(&format!(
            "{home} (plain): not logged in: run `codex login` (CODEX_HOME={home})"
        )),
        "{text}"
    );
    assert!(
        text.contains("codex-home/mock (mock): no login needed (custom model provider)"),
        "{text}"
    );
    support::app::login_with_api_key(&env).await;
    let text = check(&env);
    assert!(
        text.contains(&format!("{home} (plain): logged in (api_key)")),
        "{text}"
    );
}
