//! The usage ledger end to end, through the real proxy, the real Codex CLI and the mock model: one row
//! per routed request (never content, never keys), `GET /v1/usage` and `codex-api-proxy usage` showing
//! the same figures, rows surviving a restart, a locked file costing rows (counted) but never
//! requests, and a ledger that is off or cannot be opened leaving the proxy serving.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::app::{chat_body, App, TestEnv};

const SERVER_KEY: &str = "sk-ledger-server-key-1234";
/// A word that appears only in the prompts, to prove the ledger never stores content.
const PROMPT_MARKER: &str = "zanzibar-ledger-marker";

fn config(env: &TestEnv, server_extra: &str) -> String {
    format!(
        "{}{}",
        env.server(&format!("api_keys = [\"{SERVER_KEY}\"]\n{server_extra}")),
        env.profile("fast", "engine = \"app-server\"\nworkers = 1\n"),
    )
}

async fn chat(app: &App, body: &Value) -> (u16, String) {
    let response = app.chat_with_key(body, Some(SERVER_KEY)).await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn get_with_key(app: &App, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = App::client().get(app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, value)
}

/// Waits until `/v1/usage?by=profile` counts `requests` rows (the writer flushes every 200 ms).
async fn wait_for_rows(app: &App, requests: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_with_key(app, "/v1/usage?by=profile", Some(SERVER_KEY)).await;
        assert_eq!(status, 200, "{body}");
        let total: u64 = body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["requests"].as_u64().unwrap())
            .sum();
        if total >= requests {
            assert_eq!(total, requests, "{body}");
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the ledger never showed {requests} rows: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn usage_command(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let output = env
        .command()
        .arg("usage")
        .args(args)
        .output()
        .expect("codex-api-proxy usage runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_routed_request_is_one_row_shown_alike_by_the_endpoint_and_the_command() {
    let env = TestEnv::new().await;
    let mut app = App::start(&env, &config(&env, "")).await;

    let (status, body) = chat(&app, &chat_body("fast", &format!("hello {PROMPT_MARKER}"))).await;
    assert_eq!(status, 200, "{body}");
    let mut streamed = chat_body("fast", &format!("again {PROMPT_MARKER}"));
    streamed["stream"] = json!(true);
    let (status, body) = chat(&app, &streamed).await;
    assert_eq!(status, 200, "{body}");
    // Refused before routing: counted by /metrics, not billed to a profile in the ledger.
    let (status, _) = chat(&app, &chat_body("no-such-model", "x")).await;
    assert_eq!(status, 404);

    let by_profile = wait_for_rows(&app, 2).await;
    let row = &by_profile["rows"][0];
    assert_eq!(row["group"], "fast", "{by_profile}");
    assert_eq!(row["errors"], 0, "{by_profile}");
    assert!(row["prompt_tokens"].as_u64().unwrap() > 0, "{by_profile}");
    assert!(
        row["completion_tokens"].as_u64().unwrap() > 0,
        "{by_profile}"
    );
    // The streamed request measured its first token.
    assert!(row["first_token_p50_ms"].is_u64(), "{by_profile}");

    // Same access rule as /metrics.
    let (status, body) = get_with_key(&app, "/v1/usage", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = get_with_key(&app, "/v1/usage", Some("wrong")).await;
    assert_eq!(status, 401, "{body}");
    // Bad parameters are 400s naming the parameter.
    let (status, body) = get_with_key(&app, "/v1/usage?since=forever", Some(SERVER_KEY)).await;
    assert_eq!(
        (status, body["error"]["param"].clone()),
        (400, json!("since")),
        "{body}"
    );
    let (status, body) = get_with_key(&app, "/v1/usage?by=colour", Some(SERVER_KEY)).await;
    assert_eq!(
        (status, body["error"]["param"].clone()),
        (400, json!("by")),
        "{body}"
    );

    let (status, by_key) = get_with_key(&app, "/v1/usage?by=key&since=1h", Some(SERVER_KEY)).await;
    assert_eq!(status, 200, "{by_key}");
    let key_name = by_key["rows"][0]["group"].as_str().unwrap().to_string();
    assert!(key_name.starts_with("key-"), "{by_key}");

    // Never content, never keys: not in the file, not in its WAL.
    let ledger = env.home.join(".codex-api-proxy/usage.sqlite3");
    let mut bytes = std::fs::read(&ledger).unwrap();
    bytes.extend(std::fs::read(ledger.with_extension("sqlite3-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(PROMPT_MARKER),
        "the ledger holds prompt text"
    );
    assert!(!text.contains(SERVER_KEY), "the ledger holds a key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ledger).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The command reads the same file, with the server running (WAL readers) ...
    let (code, stdout, stderr) = usage_command(&env, &["--by", "profile", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["rows"], by_profile["rows"]);
    // ... and after it stopped.
    app.terminate(Duration::from_secs(10));
    let (code, table, stderr) = usage_command(&env, &["--since", "1d", "--by", "profile"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("profile") && lines[0].contains("requests"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("fast") && lines[1].split_whitespace().nth(1) == Some("2"),
        "{table}"
    );
    let (code, _, stderr) = usage_command(&env, &["--by", "colour"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("day, profile, key, model"), "{stderr}");

    // Rows survive a restart, and new ones add to them.
    let app = App::start(&env, &config(&env, "")).await;
    let (status, body) = chat(&app, &chat_body("fast", "third")).await;
    assert_eq!(status, 200, "{body}");
    wait_for_rows(&app, 3).await;
    let (status, by_day) = get_with_key(&app, "/v1/usage", Some(SERVER_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(by_day["by"], "day");
    assert_eq!(by_day["rows"][0]["requests"], 3, "{by_day}");
}

#[tokio::test]
async fn a_locked_ledger_costs_rows_not_requests() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env, "")).await;
    let (status, body) = chat(&app, &chat_body("fast", "warm up")).await;
    assert_eq!(status, 200, "{body}");
    wait_for_rows(&app, 1).await;

    // Another process holds the write lock for the whole time.
    let ledger = env.home.join(".codex-api-proxy/usage.sqlite3");
    let locker = rusqlite::Connection::open(&ledger).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    for index in 0..3 {
        let started = Instant::now();
        let (status, body) = chat(&app, &chat_body("fast", &format!("locked {index}"))).await;
        assert_eq!(status, 200, "{body}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        let (status, data) = get_with_key(&app, "/ui/data", Some(SERVER_KEY)).await;
        assert_eq!(status, 200, "{data}");
        let dropped = data["ledger"]["dropped"].as_u64().unwrap();
        if dropped >= 3 || Instant::now() > deadline {
            break dropped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        dropped, 3,
        "the rows written under the lock are counted as dropped"
    );
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    // Writes resume once the lock is gone; the live table kept every request.
    let (status, body) = chat(&app, &chat_body("fast", "after")).await;
    assert_eq!(status, 200, "{body}");
    wait_for_rows(&app, 2).await;
    let (_, data) = get_with_key(&app, "/ui/data", Some(SERVER_KEY)).await;
    assert_eq!(data["activity"]["recorded"], 5, "{data}");
}

#[tokio::test]
async fn a_ledger_that_is_off_or_cannot_open_leaves_the_proxy_serving() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &config(&env, "usage_db = \"\"")).await;
    let (status, body) = chat(&app, &chat_body("fast", "hi")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_with_key(&app, "/v1/usage", Some(SERVER_KEY)).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("usage_db"),
        "{body}"
    );
    assert!(!env.home.join(".codex-api-proxy/usage.sqlite3").exists());
    drop(app);

    // A path under a regular file cannot be created.
    let blocker = env.path().join("not-a-directory");
    std::fs::write(&blocker, "x").unwrap();
    let db = blocker.join("usage.sqlite3");
    let setting = format!("usage_db = {:?}", db.display().to_string());
    let app = App::start(&env, &config(&env, &setting)).await;
    app.wait_for_line("usage ledger off").await;
    let (status, body) = chat(&app, &chat_body("fast", "hi")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_with_key(&app, "/v1/usage", Some(SERVER_KEY)).await;
    assert_eq!(status, 404, "{body}");
    let (status, data) = get_with_key(&app, "/ui/data", Some(SERVER_KEY)).await;
    assert_eq!(status, 200, "{data}");
    assert_eq!(data["ledger"]["enabled"], false, "{data}");
    assert!(data["ledger"]["error"].is_string(), "{data}");
    assert_eq!(data["activity"]["recorded"], 1, "{data}");
}

#[tokio::test]
async fn a_request_refused_after_routing_before_the_engine_is_one_row() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(&format!("api_keys = [\"{SERVER_KEY}\"]")),
        env.profile("solo", "max_concurrency = 1\nmax_queue_size = 0"),
    );
    let app = App::start(&env, &config).await;
    // One request holds the only slot; the next finds no room in the queue: 429 queue_full.
    let slow = {
        let app_url = app.url("/v1/chat/completions");
        tokio::spawn(async move {
            App::client()
                .post(app_url)
                .bearer_auth(SERVER_KEY)
                .json(&chat_body("solo", "slow mock:first_delay_ms=1500"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert!(env.mock.wait_for_requests(1, Duration::from_secs(30)).await);
    let (status, body) = chat(&app, &chat_body("solo", "refused")).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("queue_full"), "{body}");
    assert_eq!(slow.await.unwrap(), 200);

    let by_profile = wait_for_rows(&app, 2).await;
    let row = &by_profile["rows"][0];
    assert_eq!(row["group"], "solo", "{by_profile}");
    assert_eq!(row["requests"], 2, "{by_profile}");
    assert_eq!(row["errors"], 1, "{by_profile}");
}
