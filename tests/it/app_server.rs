//! End-to-end: the app-server engine with real `codex app-server` workers and the mock model. Streaming
//! deltas as they are generated, multiplexed turns on one worker, history replay, interrupts on
//! disconnect and timeout, worker crashes, failure mapping, and bounded resources over many requests.

use crate::support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::app::{chat_body, send_signal, App, SseTranscript, TestEnv};
use support::mock_model::*;

fn app_server_config(env: &TestEnv, extra: &str) -> String {
    format!(
        "{}{}",
        env.server(""),
        env.profile(
            "fast",
            &format!("engine = \"app-server\"\nworkers = 1\n{extra}")
        )
    )
}

/// The worker pids of profile `fast` from /metrics.
async fn worker_pids(app: &App) -> Vec<u64> {
    let metrics = app.get_json("/metrics").await.1;
    metrics["profiles"]["fast"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|worker| worker["pid"].as_u64())
        .collect()
}

async fn wait_ready(app: &App) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = app.get_json("/ready").await;
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn plain_and_streaming_answers_with_usage() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &app_server_config(&env, "")).await;
    let ready = wait_ready(&app).await;
    assert_eq!(ready["profiles"]["fast"]["engine"], "app-server");
    // Workers start with the server, before any request.
    assert_eq!(worker_pids(&app).await.len(), 1);

    let (status, body) = app.chat_json(&chat_body("fast", "hello")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY);
    assert_eq!(body["usage"]["prompt_tokens"], USAGE_INPUT_TOKENS);
    assert_eq!(body["usage"]["completion_tokens"], USAGE_OUTPUT_TOKENS);
    assert_eq!(body["usage"]["total_tokens"], USAGE_TOTAL_TOKENS);
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"],
        USAGE_CACHED_TOKENS
    );
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        USAGE_REASONING_TOKENS
    );

    let mut request = chat_body("fast", "hello");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let transcript = App::sse(app.chat(&request).await).await;
    assert!(transcript.done());
    assert_eq!(transcript.content(), DEFAULT_REPLY);
    // One content chunk per model delta.
    let content_chunks = transcript
        .chunks()
        .iter()
        .filter(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(content_chunks, DEFAULT_DELTAS);
    assert_eq!(
        transcript.chunks().last().unwrap()["usage"]["total_tokens"],
        USAGE_TOTAL_TOKENS
    );
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["profiles"]["fast"]["workers"][0]["turns_served"], 2);
    assert_eq!(metrics["profiles"]["fast"]["workers"][0]["state"], "ready");
}

#[tokio::test]
async fn deltas_reach_the_client_before_the_turn_ends() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &app_server_config(&env, "")).await;
    wait_ready(&app).await;
    let mut request = chat_body("fast", "mock:deltas=5 mock:delay_ms=400");
    request["stream"] = json!(true);
    let response = app.chat(&request).await;
    let started = Instant::now();
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut content_times = Vec::new();
    while let Some(piece) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&piece.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let transcript = SseTranscript::parse(&event);
            if !transcript.content().is_empty() {
                content_times.push(started.elapsed());
            }
        }
    }
    assert_eq!(content_times.len(), 5, "{content_times:?}");
    // The first delta arrived while the model was still producing the others: the gap between first
    // and last content chunk spans the model's own pacing (4 × 400 ms).
    let spread = content_times[4] - content_times[0];
    assert!(
        spread >= Duration::from_millis(1000),
        "deltas were buffered: {content_times:?}"
    );
}

#[tokio::test]
async fn one_worker_runs_concurrent_turns_at_once() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &app_server_config(&env, "max_concurrency = 4")).await;
    wait_ready(&app).await;
    let body = chat_body("fast", "mock:deltas=4 mock:delay_ms=500");
    let mut requests = Vec::new();
    for _ in 0..4 {
        let client = App::client();
        let url = app.url("/v1/chat/completions");
        let body = body.clone();
        requests.push(tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            response.status().as_u16()
        }));
    }
    // All four model streams are open at the same time on the single worker.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while requests.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
        most = most.max(env.mock.open_streams());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(most, 4, "turns did not overlap");
    assert_eq!(worker_pids(&app).await.len(), 1);
}

#[tokio::test]
async fn history_is_replayed_as_real_message_items() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &app_server_config(&env, "")).await;
    wait_ready(&app).await;
    let body = json!({
        "model": "fast",
        "messages": [
            {"role": "system", "content": "Answer like a pirate."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "second answer"},
            {"role": "user", "content": "third question"},
        ],
    });
    assert_eq!(app.chat_json(&body).await.0, 200);
    let texts = env.mock.requests()[0].input_texts();
    let developer = texts
        .iter()
        .position(|(role, text)| role == "developer" && text.contains("Answer like a pirate."));
    assert!(developer.is_some(), "{texts:?}");
    let conversation: Vec<(String, String)> = texts
        .iter()
        .filter(|(role, text)| {
            (role == "user" || role == "assistant")
                && (text.contains("question") || text.contains("answer"))
        })
        .cloned()
        .collect();
    assert_eq!(
        conversation,
        vec![
            ("user".to_string(), "first question".to_string()),
            ("assistant".to_string(), "first answer".to_string()),
            ("user".to_string(), "second question".to_string()),
            ("assistant".to_string(), "second answer".to_string()),
            ("user".to_string(), "third question".to_string()),
        ]
    );
    assert!(
        developer.unwrap()
            < texts
                .iter()
                .position(|(_, t)| t == "first question")
                .unwrap()
    );
}

#[tokio::test]
async fn disconnect_and_timeout_interrupt_the_turn_and_the_worker_keeps_serving() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &app_server_config(&env, "timeout_seconds = 2")).await;
    wait_ready(&app).await;
    let pids = worker_pids(&app).await;

    // Disconnect mid-stream.
    let mut request = chat_body("fast", "mock:deltas=10 mock:delay_ms=500");
    request["stream"] = json!(true);
    let response = app.chat(&request).await;
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    // Read until the first real content delta has arrived: the model is mid-answer.
    while SseTranscript::parse(&seen).content().is_empty() {
        seen.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }
    assert_eq!(env.mock.open_streams(), 1);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.mock.open_streams() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.mock.open_streams(), 0, "the turn was not interrupted");
    assert_eq!(env.mock.streams_cancelled(), 1);
    assert_eq!(app.chat_json(&chat_body("fast", "next")).await.0, 200);

    // Timeout: 504, then the same worker serves the next request.
    let (status, body) = app
        .chat_json(&chat_body("fast", "mock:first_delay_ms=10000"))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.mock.open_streams() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.mock.open_streams(), 0);
    assert_eq!(
        app.chat_json(&chat_body("fast", "after timeout")).await.0,
        200
    );
    assert_eq!(worker_pids(&app).await, pids, "the worker was replaced");
}

#[tokio::test]
async fn a_killed_worker_fails_its_turn_cleanly_and_comes_back() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &app_server_config(&env, "")).await;
    wait_ready(&app).await;
    let pid = worker_pids(&app).await[0];

    let slow = {
        let client = App::client();
        let url = app.url("/v1/chat/completions");
        let body = chat_body("fast", "mock:deltas=4 mock:delay_ms=1000");
        tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    assert!(env.mock.wait_for_requests(1, Duration::from_secs(10)).await);
    send_signal(pid as u32, libc::SIGKILL);
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "server_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("worker exited"),
        "{body}"
    );

    // The worker is respawned and serves again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pids = worker_pids(&app).await;
        if pids.len() == 1 && pids[0] != pid {
            break;
        }
        assert!(Instant::now() < deadline, "the worker did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.chat_json(&chat_body("fast", "again")).await.0, 200);
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["profiles"]["fast"]["workers"][0]["restarts"], 1);
}

#[tokio::test]
async fn upstream_failures_map_to_statuses() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &app_server_config(&env, "max_concurrency = 8")).await;
    wait_ready(&app).await;
    let cases = [
        ("mock:status=500", 502, "codex_failed"),
        ("mock:status=401", 502, "codex_failed"),
        ("mock:status=429", 429, "rate_limit_exceeded"),
        ("mock:status=429 mock:quota", 429, "insufficient_quota"),
        (
            "mock:status=400 mock:context",
            400,
            "context_length_exceeded",
        ),
        ("mock:status=503", 503, "model_overloaded"),
        ("mock:failed", 502, "codex_failed"),
        ("mock:cut", 502, "codex_failed"),
    ];
    for (directive, status, code) in cases {
        let (got, body) = app.chat_json(&chat_body("fast", directive)).await;
        assert_eq!(got, status, "{directive}: {body}");
        assert_eq!(body["error"]["code"], code, "{directive}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    // In-band after the stream started.
    let mut request = chat_body("fast", "mock:status=500");
    request["stream"] = json!(true);
    let transcript = App::sse(app.chat(&request).await).await;
    let last = transcript.chunks().pop().unwrap();
    assert_eq!(last["error"]["code"], "codex_failed", "{last}");
    assert!(!transcript.done());
    // The worker is still fine.
    assert_eq!(app.chat_json(&chat_body("fast", "ok now")).await.0, 200);
}

#[tokio::test]
async fn a_profile_whose_workers_cannot_start_is_not_ready_and_others_serve() {
    let env = TestEnv::new().await;
    // The private CODEX_HOME cannot be created (a file is in the way): the workers cannot start.
    let blocker = env.path().join("not-a-directory");
    std::fs::write(&blocker, "x").unwrap();
    let config = format!(
        "{}{}{}",
        env.server(""),
        env.profile(
            "broken",
            &format!(
                "engine = \"app-server\"\ncodex_home = {:?}",
                blocker.join("home").display().to_string()
            )
        ),
        env.profile("fine", "")
    );
    let app = App::start(&env, &config).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let (status, body) = app.get_json("/ready").await;
        let reason = body["profiles"]["broken"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if status == 503 && !reason.contains("starting") && !reason.is_empty() {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready["profiles"]["fine"]["ready"], true);
    let (status, body) = app.chat_json(&chat_body("broken", "hi")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "codex_unavailable");
    assert_eq!(app.chat_json(&chat_body("fine", "hi")).await.0, 200);
}

fn rss_kib(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn many_requests_leave_threads_and_memory_bounded() {
    let env = TestEnv::new().await;
    let app = App::start(
        &env,
        &app_server_config(&env, "tools = false\nmax_concurrency = 4"),
    )
    .await;
    wait_ready(&app).await;
    let pid = worker_pids(&app).await[0];
    let run_batch = |count: usize| {
        let url = app.url("/v1/chat/completions");
        async move {
            let mut clients = Vec::new();
            for client_index in 0..4 {
                let url = url.clone();
                clients.push(tokio::spawn(async move {
                    let client = App::client();
                    for i in 0..count / 4 {
                        let body = chat_body("fast", &format!("request {client_index}-{i}"));
                        let response = client.post(&url).json(&body).send().await.unwrap();
                        assert_eq!(response.status(), 200);
                    }
                }));
            }
            for client in clients {
                client.await.unwrap();
            }
        }
    };
    run_batch(200).await;
    let rss_after_warmup = rss_kib(pid);
    run_batch(800).await;
    let rss_after = rss_kib(pid);
    println!("worker RSS: {rss_after_warmup} KiB after 200 requests, {rss_after} KiB after 1000");
    assert!(
        rss_after < rss_after_warmup + 120 * 1024,
        "RSS grew from {rss_after_warmup} to {rss_after} KiB"
    );
    // A turn's bookkeeping ends just after its response was sent: wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = app.get_json("/metrics").await.1;
        if metrics["profiles"]["fast"]["workers"][0]["turns_in_flight"] == 0 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "turns still in flight: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let worker = &metrics["profiles"]["fast"]["workers"][0];
    assert_eq!(worker["turns_served"], 1000);
    assert_eq!(worker["pid"], pid);
    // Finished threads are unsubscribed and unloaded a few seconds later: far fewer than 1000 stay.
    let loaded = worker["threads_loaded"].as_u64().unwrap();
    println!("threads still loaded right after the run: {loaded}");
    assert!(loaded < 400, "{loaded} threads still loaded");
    // What stays loaded is the worker's spare thread for the next such request, at most.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = app.get_json("/metrics").await.1;
        let worker = &metrics["profiles"]["fast"]["workers"][0];
        let loaded = worker["threads_loaded"].as_u64().unwrap();
        let spares = worker["spare_threads"].as_u64().unwrap();
        assert!(spares <= 1, "{worker}");
        if loaded <= spares {
            break;
        }
        assert!(Instant::now() < deadline, "{loaded} threads never unloaded");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The model request of `request` without what differs between any two turns: the ids of the thread
/// (the prompt-cache key), the turn and the input items, Codex's per-turn metadata, and the question.
fn turn_shape(request: &RecordedRequest) -> Value {
    let mut body = request.body.clone();
    let object = body.as_object_mut().unwrap();
    object.remove("prompt_cache_key");
    object.remove("client_metadata");
    for item in object["input"].as_array_mut().unwrap() {
        item.as_object_mut().unwrap().remove("id");
    }
    let last = request.last_user_text().unwrap();
    serde_json::from_str(&body.to_string().replace(&last, "QUESTION")).unwrap()
}

#[tokio::test]
async fn repeated_requests_run_on_spare_threads_identical_to_new_ones() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        app_server_config(&env, ""),
        env.profile(
            "nospare",
            "engine = \"app-server\"\nworkers = 1\nspare_threads = false\n"
        )
    );
    let app = App::start(&env, &config).await;
    wait_ready(&app).await;
    let ask = |model: &str, system: &str, question: &str| {
        json!({"model": model, "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ]})
    };
    let spare_figures = |metrics: &Value, profile: &str| {
        let worker = &metrics["profiles"][profile]["workers"][0];
        (
            worker["spare_threads"].as_u64().unwrap(),
            worker["spare_threads_used"].as_u64().unwrap(),
        )
    };
    // The first request starts its own thread; the second does too, and, its params having come
    // before, has a spare started for the next; the third and fourth run on spares.
    for question in [
        "question one",
        "question two",
        "question three",
        "question four",
    ] {
        let (status, body) = app
            .chat_json(&ask("fast", "Answer like a pirate.", question))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY);
    }
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(spare_figures(&metrics, "fast"), (1, 2), "{metrics}");
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 4);
    // A spare thread's model request is the one a new thread makes, but for the thread id and question.
    assert_eq!(turn_shape(&requests[3]), turn_shape(&requests[0]));
    assert_ne!(
        requests[3].body["prompt_cache_key"],
        requests[2].body["prompt_cache_key"]
    );

    // Other instructions never get the pirate's spare.
    let (status, _) = app
        .chat_json(&ask("fast", "Answer like a robot.", "question five"))
        .await;
    assert_eq!(status, 200);
    let texts = env.mock.requests()[4].input_texts();
    assert!(
        texts
            .iter()
            .any(|(role, text)| role == "developer" && text.contains("robot")),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|(_, text)| text.contains("pirate")),
        "{texts:?}"
    );
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(spare_figures(&metrics, "fast").1, 2, "{metrics}");

    // `spare_threads = false`: every request starts its own thread.
    for question in ["one", "two", "three"] {
        let (status, _) = app
            .chat_json(&ask("nospare", "Answer like a pirate.", question))
            .await;
        assert_eq!(status, 200);
    }
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(spare_figures(&metrics, "nospare"), (0, 0), "{metrics}");
}

/// One variable of a process's environment.
fn environ_value(pid: u64, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ.split(|byte| *byte == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        entry.strip_prefix(&format!("{name}=")).map(str::to_string)
    })
}

#[tokio::test]
async fn workers_trust_the_bundle_and_the_certificate_directory_from_one_file() {
    let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt")
        .expect("the system's CA bundle: install it with `apt-get install ca-certificates`");
    let blocks: Vec<String> = system
        .split("-----END CERTIFICATE-----")
        .filter_map(|part| {
            part.find("-----BEGIN CERTIFICATE-----")
                .map(|at| &part[at..])
        })
        .take(3)
        .map(|block| format!("{block}-----END CERTIFICATE-----\n"))
        .collect();
    assert_eq!(
        blocks.len(),
        3,
        "the system bundle has fewer than 3 certificates"
    );
    let env = TestEnv::new().await;
    let bundle = env.path().join("bundle.crt");
    let directory = env.path().join("certs");
    std::fs::create_dir(&directory).unwrap();
    std::fs::write(&bundle, format!("{}{}", blocks[0], blocks[1])).unwrap();
    std::fs::write(directory.join("first.pem"), &blocks[0]).unwrap();
    std::fs::write(directory.join("local.pem"), &blocks[2]).unwrap();
    let mut command = env.command();
    command
        .env("SSL_CERT_FILE", &bundle)
        .env("SSL_CERT_DIR", &directory)
        .args(["start", "--foreground", "--port", "0", "--config"])
        .arg(env.write_config(&app_server_config(&env, "")))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let app = App::spawn(command).await;
    wait_ready(&app).await;
    let (status, body) = app.chat_json(&chat_body("fast", "hello")).await;
    assert_eq!(status, 200, "{body}");
    let pid = worker_pids(&app).await[0];
    let file = environ_value(pid, "SSL_CERT_FILE").unwrap();
    assert!(file.ends_with("/trust/ca-certificates.pem"), "{file}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), blocks.concat());
    let empty = environ_value(pid, "SSL_CERT_DIR").unwrap();
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{empty}");
}

#[tokio::test]
async fn a_plain_answer_of_many_deltas_is_whole_and_a_stream_gets_every_delta() {
    let env = TestEnv::new().await;
    let app = App::start(&env, &app_server_config(&env, "")).await;
    wait_ready(&app).await;
    let reply = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(4);
    let prompt = format!("mock:reply={reply} mock:deltas=144");
    // The plain response takes the text from the end of the turn, not from the deltas.
    let (status, body) = app.chat_json(&chat_body("fast", &prompt)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], reply.as_str());
    let mut streamed = chat_body("fast", &prompt);
    streamed["stream"] = json!(true);
    let transcript = App::sse(app.chat(&streamed).await).await;
    assert!(transcript.done(), "{:?}", transcript.data);
    let pieces: Vec<String> = transcript
        .data
        .iter()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .filter(|piece| !piece.is_empty())
        .collect();
    assert_eq!(pieces.len(), 144, "{pieces:?}");
    assert_eq!(pieces.concat(), reply);
}
