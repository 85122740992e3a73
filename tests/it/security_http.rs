//! End-to-end: the HTTP-level protections of the real binary. Browser requests (`Host`, `Origin`,
//! `Content-Type`), the in-flight body budget, who may read `/ready` and `/metrics`, what a profile key
//! opens, the working directory checked again after the queue wait, and the default workspace's mode.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::app::{chat_body, model_ids, App, TestEnv};

const SERVER_KEY: &str = "server-key-5d1e";
const PROFILE_KEY: &str = "profile-key-8b3a";

/// Status, headers and JSON body (Null when empty) of a response.
async fn parts(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn assert_error(status: u16, body: &Value, expected: u16, code: &str, mentions: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{message}");
}

/// One raw HTTP exchange; returns the status line and everything after it.
async fn raw_exchange(port: u16, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).to_string()
}

#[tokio::test]
async fn foreign_hosts_are_refused_on_every_path() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &format!(
            "{}{}",
            env.server("allowed_hosts = [\"proxy.lan\"]"),
            env.profile("default", "")
        ),
    )
    .await;
    let client = App::client();
    for path in [
        "/health",
        "/v1/models",
        "/no/such/path",
        "/v1/chat/completions",
    ] {
        let (status, _, body) = parts(
            client
                .get(app.url(path))
                .header("host", "attacker.example:8765")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_error(status, &body, 403, "host_not_allowed", "allowed_hosts");
    }
    let (status, _, body) = parts(
        client
            .post(app.url("/v1/chat/completions"))
            .header("host", "attacker.example")
            .json(&chat_body("default", "hi"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &body, 403, "host_not_allowed", "allowed_hosts");
    for host in [
        "localhost:1",
        "127.0.0.1",
        "[::1]:9",
        "PROXY.lan:80",
        "proxy.lan",
    ] {
        let response = client
            .get(app.url("/health"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
    // HTTP/1.0 without Host.
    let answer = raw_exchange(app.port, "GET /health HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 403"), "{answer}");
    assert!(answer.contains("host_not_allowed"), "{answer}");
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn browser_origins_need_cors_origins_and_bodies_must_be_json() {
    let env = TestEnv::new().await;
    let listed = "http://localhost:3000";
    let app = App::start(
        &env,
        &format!(
            "{}{}",
            env.server(&format!("cors_origins = [\"{listed}\"]")),
            env.profile("default", "")
        ),
    )
    .await;
    let client = App::client();
    let body = chat_body("default", "hi");

    let (status, _, answer) = parts(
        client
            .post(app.url("/v1/chat/completions"))
            .header("origin", "http://attacker.example")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(status, &answer, 403, "origin_not_allowed", "cors_origins");
    let response = client
        .request(reqwest::Method::OPTIONS, app.url("/v1/chat/completions"))
        .header("origin", "http://attacker.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // The listed origin: preflight, then the request itself, both with CORS headers.
    let response = client
        .request(reqwest::Method::OPTIONS, app.url("/v1/chat/completions"))
        .header("origin", listed)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], listed);
    assert!(headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert!(headers["vary"].to_str().unwrap().contains("Origin"));
    let (status, headers, answer) = parts(
        client
            .post(app.url("/v1/chat/completions"))
            .header("origin", listed)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(headers["access-control-allow-origin"], listed);
    assert!(headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-request-id"));
    assert_eq!(env.mock.request_count(), 1);

    // Bodies a form or a no-cors fetch can send are refused before anything runs.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut request = client
            .post(app.url("/v1/chat/completions"))
            .body(body.to_string());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let (status, _, answer) = parts(request.send().await.unwrap()).await;
        assert_error(
            status,
            &answer,
            415,
            "unsupported_media_type",
            "application/json",
        );
    }
    assert_eq!(env.mock.request_count(), 1);
    // JSON with parameters, in any case, is fine; so is a POST without a body.
    let (status, _, answer) = parts(
        client
            .post(app.url("/v1/chat/completions"))
            .header("content-type", "Application/JSON; charset=UTF-8")
            .body(json!({"model": "default"}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let response = client.post(app.url("/admin/reload")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

fn keyed_config(env: &TestEnv, server_keys: bool, extra_server: &str) -> String {
    let keys = if server_keys {
        format!("api_keys = [\"{SERVER_KEY}\"]\n")
    } else {
        String::new()
    };
    format!(
        "{}{}{}",
        env.server(&format!("{keys}{extra_server}")),
        env.profile("open", ""),
        env.profile("private", &format!("api_keys = [\"{PROFILE_KEY}\"]"))
    )
}

async fn get_with_key(app: &App, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = App::client().get(app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let (status, _, body) = parts(request.send().await.unwrap()).await;
    (status, body)
}

#[tokio::test]
async fn ready_and_metrics_need_a_server_key_unless_public() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &keyed_config(&env, true, "")).await;
    for path in ["/ready", "/metrics"] {
        for key in [None, Some(PROFILE_KEY), Some("wrong")] {
            let (status, body) = get_with_key(&app, path, key).await;
            assert_error(status, &body, 401, "invalid_api_key", "public_metrics");
            assert!(!body.to_string().contains("private"), "{body}");
        }
        let (status, body) = get_with_key(&app, path, Some(SERVER_KEY)).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body["profiles"].get("private").is_some(), "{body}");
    }
    let (status, health) = get_with_key(&app, "/health", None).await;
    assert_eq!(status, 200);
    let fields: Vec<&String> = health.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["pid", "status"], "{health}");
    let (_, health) = get_with_key(&app, "/health", Some(SERVER_KEY)).await;
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    drop(app);

    // Only profile keys: still closed (no key is a server key).
    let app = App::start(&env, &keyed_config(&env, false, "")).await;
    for path in ["/ready", "/metrics"] {
        assert_eq!(get_with_key(&app, path, None).await.0, 401);
        assert_eq!(get_with_key(&app, path, Some(PROFILE_KEY)).await.0, 401);
    }
    drop(app);

    let app = App::start(&env, &keyed_config(&env, true, "public_metrics = true")).await;
    for path in ["/ready", "/metrics"] {
        assert_eq!(get_with_key(&app, path, None).await.0, 200, "{path}");
    }
}

/// The status of a chat request that passes authorisation only to fail on its `metadata.cwd` (400), so
/// no Codex runs: 400 means allowed, 401/403 refused.
async fn access(app: &App, model: &str, key: Option<&str>) -> u16 {
    let mut body = chat_body(model, "hi");
    body["metadata"] = json!({"cwd": "/definitely/not/a/dir"});
    let response = app.chat_with_key(&body, key).await;
    response.status().as_u16()
}

#[tokio::test]
async fn profile_keys_open_only_their_own_profiles() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &keyed_config(&env, true, "")).await;
    assert_eq!(access(&app, "open", Some(SERVER_KEY)).await, 400);
    assert_eq!(access(&app, "open", Some(PROFILE_KEY)).await, 403);
    assert_eq!(access(&app, "open", None).await, 401);
    assert_eq!(access(&app, "private", Some(PROFILE_KEY)).await, 400);
    // A server key does not open a profile that lists its own keys.
    assert_eq!(access(&app, "private", Some(SERVER_KEY)).await, 403);
    assert_eq!(model_ids(&app.base_url, Some(SERVER_KEY)).await, ["open"]);
    assert_eq!(
        model_ids(&app.base_url, Some(PROFILE_KEY)).await,
        ["private"]
    );
    let (status, _) = get_with_key(&app, "/v1/models/open", Some(PROFILE_KEY)).await;
    assert_eq!(status, 404);
    drop(app);

    // Without server keys, unrestricted profiles are open to all, with or without a profile key.
    let app = App::start(&env, &keyed_config(&env, false, "")).await;
    assert_eq!(access(&app, "open", None).await, 400);
    assert_eq!(access(&app, "open", Some(PROFILE_KEY)).await, 400);
    assert_eq!(access(&app, "private", None).await, 401);
    assert_eq!(access(&app, "private", Some("wrong")).await, 403);
    assert_eq!(access(&app, "private", Some(PROFILE_KEY)).await, 400);
    assert_eq!(model_ids(&app.base_url, None).await, ["open"]);
    assert_eq!(
        model_ids(&app.base_url, Some(PROFILE_KEY)).await,
        ["open", "private"]
    );
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn bodies_beyond_the_in_flight_budget_get_503() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &format!(
            "{}{}",
            env.server("max_request_bytes = 65536\nmax_inflight_body_bytes = 65536"),
            env.profile("default", "")
        ),
    )
    .await;
    let mut body = chat_body("no-such-model", "hi");
    body["user"] = json!("x".repeat(10_000));
    // A client that declares 60 000 bytes and sends only the start holds that much of the budget. If
    // the probe got in first (then the slow client was the one refused), both are tried again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (slow, refused) = loop {
        let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .unwrap();
        slow.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{\"model\":",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, headers, answer) = parts(app.chat(&body).await).await;
        if status == 503 {
            break (slow, (headers, answer));
        }
        assert_eq!(status, 404, "{answer}");
        assert!(Instant::now() < deadline, "the budget never filled up");
    };
    let (headers, answer) = refused;
    assert_error(503, &answer, 503, "server_busy", "max_inflight_body_bytes");
    assert_eq!(headers["retry-after"], "1");
    // The budget comes back when the slow client goes away.
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = app.chat(&body).await.status().as_u16();
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the budget was not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_directory_swapped_for_a_symlink_during_the_queue_wait_is_refused() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &format!(
            "{}{}",
            env.server(""),
            env.profile(
                "default",
                "max_concurrency = 1\nmax_queue_size = 1\nqueue_timeout_seconds = 120"
            )
        ),
    )
    .await;
    let sub = env.workspace.join("sub");
    let outside = env.path().join("outside");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::create_dir_all(&outside).unwrap();

    // The slot is taken by a request the mock answers only after 4 s.
    let slow = {
        let app_url = app.url("/v1/chat/completions");
        tokio::spawn(async move {
            App::client()
                .post(app_url)
                .json(&chat_body("default", "mock:first_delay_ms=4000"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert!(env.mock.wait_for_requests(1, Duration::from_secs(60)).await);
    let queued = {
        let app_url = app.url("/v1/chat/completions");
        let mut body = chat_body("default", "hi");
        body["metadata"] = json!({"cwd": sub.display().to_string()});
        tokio::spawn(async move {
            let response = App::client()
                .post(app_url)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_with_key(&app, "/metrics", None).await.1["profiles"]["default"]["queued"] != 1 {
        assert!(Instant::now() < deadline, "the request never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&sub, env.workspace.join("sub-before")).unwrap();
    std::os::unix::fs::symlink(&outside, &sub).unwrap();

    let (status, body) = queued.await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "metadata.cwd");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("outside the allowed roots"));
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(
        env.mock.request_count(),
        1,
        "Codex ran for the swapped directory"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[tokio::test]
async fn the_default_workspace_is_created_private() {
    let env = TestEnv::new().await;
    let state_dir = env.home.join(".codex-api-proxy");
    assert!(!state_dir.exists());
    let _app = App::start_args(
        &env,
        &[
            "--codex-bin".to_string(),
            support::codex_bin().display().to_string(),
        ],
    )
    .await;
    for dir in [state_dir.clone(), state_dir.join("workspace")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{} is mode {mode:o}", dir.display());
    }
}
