//! Security regressions of the engines: timeouts and cancellation that hold against a worker that stops
//! reading or a client that stops reading, bounded output lines, the environment Codex processes get,
//! and private directory modes. Faults the real Codex CLI cannot show use the fakes of
//! `support::fake_hostile`; the slow streaming client runs the real CLI against the mock model.

use crate::support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::app::{chat_body, App, TestEnv};
use support::fake_hostile::{self, Behaviour};

fn fake_config(fake: &Path, server_extra: &str, profiles: &str) -> String {
    format!(
        "[server]\ncodex_bin = {:?}\n{server_extra}\n{profiles}",
        fake.display().to_string()
    )
}

async fn worker(app: &App, profile: &str, key: Option<&str>) -> Value {
    let mut request = App::client().get(app.url("/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let metrics: Value = request.send().await.unwrap().json().await.unwrap();
    metrics["profiles"][profile]["workers"][0].clone()
}

/// Waits (up to `limit`) until `check` holds for the first worker of `profile`.
async fn wait_worker(app: &App, profile: &str, limit: Duration, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let worker = worker(app, profile, None).await;
        if check(&worker) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "worker never got there: {worker}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_that_stops_reading_stdin_cannot_hold_requests_or_metrics() {
    let env = TestEnv::new().await;
    let fake = fake_hostile::write(&env.path().join("bin"), Behaviour::Deaf);
    let profile = format!(
        "[profiles.p]\nengine = \"app-server\"\ndefault_cwd = {ws:?}\nallowed_roots = [{ws:?}]\ntimeout_seconds = 2\n",
        ws = env.workspace.display().to_string()
    );
    let app = App::start_with_vars(&env, &fake_config(&fake, "", &profile), &[]).await;
    wait_worker(&app, "p", Duration::from_secs(20), |w| {
        w["state"] == "ready"
    })
    .await;
    let first_pid = worker(&app, "p", None).await["pid"].clone();

    // A large system message fills the pipe the worker no longer reads.
    let body = json!({"model": "p", "messages": [
        {"role": "system", "content": "s".repeat(512 * 1024)},
        {"role": "user", "content": "hello"},
    ]});
    let request = {
        let url = app.url("/v1/chat/completions");
        tokio::spawn(async move {
            let response = App::client().post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    // `/metrics` answers while the request is stuck on the worker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = App::client()
        .get(app.url("/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/metrics answered while a worker was stuck");
    assert_eq!(metrics.status(), 200);

    let (status, body) = request.await.unwrap();
    assert_eq!(status, 504, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("timeout"), "{message}");
    // The slot is free again.
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["profiles"]["p"]["running"], 0, "{metrics}");
    // The worker whose stdin stayed blocked is declared unhealthy and replaced.
    wait_worker(&app, "p", Duration::from_secs(30), |w| {
        w["restarts"].as_u64().unwrap_or(0) >= 1 && w["pid"] != first_pid && w["state"] == "ready"
    })
    .await;
    assert!(
        app.output().contains("stopped reading its stdin"),
        "{}",
        app.output()
    );
}

#[tokio::test]
async fn a_huge_stdout_line_fails_an_exec_run_with_bounded_memory() {
    let env = TestEnv::new().await;
    let fake = fake_hostile::write(&env.path().join("bin"), Behaviour::HugeLines);
    let profile = format!(
        "[profiles.p]\ndefault_cwd = {ws:?}\nallowed_roots = [{ws:?}]\ntimeout_seconds = 60\n",
        ws = env.workspace.display().to_string()
    );
    let app = App::start_with_vars(&env, &fake_config(&fake, "", &profile), &[]).await;
    let (status, body) = app.chat_json(&chat_body("p", "hello")).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("longer than 16 MiB"), "{message}");
    let peak = fake_hostile::peak_rss_kib(app.pid());
    println!("proxy peak RSS: {peak} KiB");
    assert!(peak < 120 * 1024, "the proxy grew to {peak} KiB");
}

#[tokio::test]
async fn a_huge_stdout_line_restarts_an_app_server_worker_with_bounded_memory() {
    let env = TestEnv::new().await;
    let fake = fake_hostile::write(&env.path().join("bin"), Behaviour::HugeLines);
    let profile = format!(
        "[profiles.p]\nengine = \"app-server\"\ndefault_cwd = {ws:?}\nallowed_roots = [{ws:?}]\ntimeout_seconds = 60\n",
        ws = env.workspace.display().to_string()
    );
    let app = App::start_with_vars(&env, &fake_config(&fake, "", &profile), &[]).await;
    wait_worker(&app, "p", Duration::from_secs(20), |w| {
        w["state"] == "ready"
    })
    .await;
    let (status, body) = app.chat_json(&chat_body("p", "hello")).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("longer than 16 MiB"), "{message}");
    wait_worker(&app, "p", Duration::from_secs(20), |w| {
        w["restarts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let peak = fake_hostile::peak_rss_kib(app.pid());
    println!("proxy peak RSS: {peak} KiB");
    assert!(peak < 120 * 1024, "the proxy grew to {peak} KiB");
}

fn has(env: &[String], name: &str) -> bool {
    env.iter().any(|line| line.starts_with(&format!("{name}=")))
}

#[tokio::test]
async fn codex_processes_get_only_the_allowed_environment() {
    for mode in ["minimal", "inherit"] {
        let env = TestEnv::new().await;
        let bin = env.path().join("bin");
        let fake = fake_hostile::write(&bin, Behaviour::Quiet);
        let profiles = format!(
            "[profiles.e]\ndefault_cwd = {ws:?}\nallowed_roots = [{ws:?}]\n\
             [profiles.a]\nengine = \"app-server\"\ndefault_cwd = {ws:?}\nallowed_roots = [{ws:?}]\n",
            ws = env.workspace.display().to_string()
        );
        let server = format!(
            "api_keys = [\"${{SECRET_REF}}\"]\ncodex_env = \"{mode}\"\npass_env = [\"PASSED_VAR\"]\ncodex_log = \"error\""
        );
        let vars = [
            ("SECRET_REF", "referenced-secret"),
            ("CODEX_PROXY_X", "proxy-only"),
            ("RUST_LOG", "trace"),
            ("UNRELATED_SECRET", "unrelated"),
            ("PASSED_VAR", "passed"),
        ];
        let app = App::start_with_vars(&env, &fake_config(&fake, &server, &profiles), &vars).await;
        let response = app
            .chat_with_key(&chat_body("e", "hello"), Some("referenced-secret"))
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while fake_hostile::dumped_env(&bin, "app-server").is_none() {
            assert!(Instant::now() < deadline, "the app-server fake never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for engine in ["exec", "app-server"] {
            let dumped = fake_hostile::dumped_env(&bin, engine).unwrap();
            let context = format!("{mode}, {engine}: {dumped:?}");
            assert!(!has(&dumped, "SECRET_REF"), "{context}");
            assert!(!has(&dumped, "CODEX_PROXY_X"), "{context}");
            assert!(dumped.contains(&"RUST_LOG=error".to_string()), "{context}");
            assert!(
                dumped.contains(&"PASSED_VAR=passed".to_string()),
                "{context}"
            );
            assert!(has(&dumped, "PATH"), "{context}");
            assert_eq!(
                has(&dumped, "UNRELATED_SECRET"),
                mode == "inherit",
                "{context}"
            );
        }
    }
}

#[tokio::test]
async fn the_private_codex_home_is_created_0700() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new().await;
    let fake = fake_hostile::write(&env.path().join("bin"), Behaviour::Quiet);
    let home = env.path().join("state").join("homes").join("p");
    let profile = format!(
        "[profiles.p]\nengine = \"app-server\"\ndefault_cwd = {ws:?}\nallowed_roots = [{ws:?}]\ncodex_home = {home:?}\n",
        ws = env.workspace.display().to_string(),
        home = home.display().to_string(),
    );
    let app = App::start_with_vars(&env, &fake_config(&fake, "", &profile), &[]).await;
    wait_worker(&app, "p", Duration::from_secs(20), |w| {
        w["state"] == "ready"
    })
    .await;
    for dir in [
        env.path().join("state"),
        env.path().join("state").join("homes"),
        home,
    ] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
}

/// Sends a streaming chat request on a raw socket and reads only the response headers.
fn start_unread_stream(app: &App, body: &Value) -> std::net::TcpStream {
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", app.port)).unwrap();
    let payload = body.to_string();
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        app.port,
        payload.len()
    )
    .unwrap();
    let mut head = [0u8; 256];
    let read = socket.read(&mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..read]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..read])
    );
    socket
}

#[tokio::test]
async fn a_streaming_client_that_stops_reading_frees_its_slot_with_bounded_memory() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(""),
        env.profile(
            "p",
            "engine = \"app-server\"\nmax_concurrency = 1\ntimeout_seconds = 8\n"
        )
    );
    let app = App::start(&env, &config).await;
    wait_worker(&app, "p", Duration::from_secs(30), |w| {
        w["state"] == "ready"
    })
    .await;
    let baseline = fake_hostile::peak_rss_kib(app.pid());
    let length = 300_000;
    let prompt = format!("mock:reply={} mock:deltas={length}", "y".repeat(length));
    let mut body = chat_body("p", &prompt);
    body["stream"] = json!(true);
    let socket = start_unread_stream(&app, &body);
    // The turn ends by its timeout (or earlier, when its buffer overflows) while the client still holds
    // the connection without reading.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let metrics = app.get_json("/metrics").await.1;
        if metrics["profiles"]["p"]["running"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was never freed: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = fake_hostile::peak_rss_kib(app.pid());
    println!("proxy peak RSS: {baseline} KiB before, {peak} KiB after");
    assert!(
        peak < baseline + 80 * 1024,
        "the proxy grew from {baseline} to {peak} KiB"
    );
    drop(socket);
    let (status, body) = app.chat_json(&chat_body("p", "after")).await;
    assert_eq!(status, 200, "{body}");
}

/// The size of the unnamed stderr file the proxy keeps for `profile`'s worker, if it has one open.
fn stderr_file_size(pid: u32, profile: &str) -> Option<u64> {
    let home = format!("/codex-home/{profile}/");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(Result::ok)
        .find(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                target.contains(&home) && target.ends_with("(deleted)")
            })
        })
        .and_then(|fd| std::fs::metadata(fd.path()).ok())
        .map(|meta| meta.len())
}

#[tokio::test]
async fn a_worker_s_stderr_goes_to_a_bounded_file_whose_last_line_explains_its_exit() {
    let env = TestEnv::new().await;
    let bin = env.path().join("bin");
    let fake = fake_hostile::write(&bin, Behaviour::ChattyStderr);
    let profile = format!(
        "[profiles.p]\nengine = \"app-server\"\nworkers = 1\ndefault_cwd = {ws:?}\nallowed_roots = [{ws:?}]\n",
        ws = env.workspace.display().to_string()
    );
    let app = App::start_with_vars(&env, &fake_config(&fake, "", &profile), &[]).await;
    wait_worker(&app, "p", Duration::from_secs(20), |w| {
        w["state"] == "ready"
    })
    .await;
    // 3 MiB of warnings land in a file the proxy never reads while the worker lives, and the worker's
    // supervisor empties it once it is over 1 MiB (it checks at each poll of the worker, every 1-2 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bin.join("wrote").exists() {
        assert!(Instant::now() < deadline, "the fake never wrote its stderr");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let size = stderr_file_size(app.pid(), "p");
        if size.is_some_and(|size| size <= 1 << 20) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker's stderr file was never cut back: {size:?} bytes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its last line is the reason given when it exits, and when a new process fails to start.
    wait_worker(&app, "p", Duration::from_secs(30), |w| {
        w["restarts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let exited = app.wait_for_line(fake_hostile::LAST_WORDS).await;
    assert!(
        exited.contains("worker exited (exit status: 1)"),
        "{exited}"
    );
    let failed = app.wait_for_line(fake_hostile::SECOND_START_WORDS).await;
    assert!(failed.contains("did not start"), "{failed}");
    wait_worker(&app, "p", Duration::from_secs(20), |w| {
        w["error"]
            .as_str()
            .is_some_and(|error| error.contains(fake_hostile::SECOND_START_WORDS))
    })
    .await;
    // Nothing is left behind in the worker's CODEX_HOME.
    let home = env.home.join(".codex-api-proxy/codex-home/p");
    let names: Vec<String> = std::fs::read_dir(&home)
        .unwrap_or_else(|err| panic!("{home:?}: {err}"))
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|name| !name.starts_with(".tmp")),
        "{home:?}: {names:?}"
    );
}
