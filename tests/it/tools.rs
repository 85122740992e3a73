//! Function calling through Codex app-server dynamic tools, against the real `codex app-server` and the
//! mock model (`mock:call=NAME:ARGS`).
//!
//! The `direct_` tests speak JSON-RPC to `codex app-server` without the proxy, to pin down what the
//! proxy's tool support builds on: a thread started with one `dynamicTools` entry offers the model
//! exactly that tool; the model's call arrives as the server request `item/tool/call` with the model's
//! own `call_id` and the parsed arguments; answering it continues the same turn to the final text; and a
//! finished round trip replayed with `thread/inject_items` (`function_call` + `function_call_output`)
//! continues from the tool output with an empty-input `turn/start`.
//!
//! The other tests go through the proxy (app-server profile `fast`, exec profile `slow`): the chat
//! `tools` of a request become the thread's dynamic tools, the model's calls come back as
//! `finish_reason:"tool_calls"` (plain and streamed); the request with the results continues the held
//! turn (the `tool_turns_*` counters of `/metrics` and Codex's `prompt_cache_key`, the thread id, show
//! which path ran), or, on another instance, after a restart, an edit or the hold's expiry, replays the
//! conversation; `tool_choice` required and named are enforced; legacy `functions` get `function_call`
//! answers; and the OpenAI Node and Python SDKs and a LangChain agent run their tool loops.
//!
//! Set `RECORD_TOOL_FIXTURE=DIR` to write the thread's messages of the direct round trip to
//! `DIR/tool_call.jsonl` (scratch paths replaced by `/workspace`, the mock's port by `PORT`).

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use codex_api_proxy::engine::app_server::protocol::{initialize_params, no_tools_config, refusal};
use codex_api_proxy::engine::app_server::worker::base_args;
use serde_json::{json, Value};
use support::app::{chat_body, App, TestEnv};
use support::mock_model::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// Upper bound for one app-server message (normally milliseconds).
const TIMEOUT: Duration = Duration::from_secs(30);

/// One `codex app-server` process spoken to line by line.
struct AppServer {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Every message received that was not the answer to one of our requests, in arrival order.
    seen: Vec<Value>,
}

impl AppServer {
    /// Starts the native Codex app-server the way a proxy worker does, pointed at the test's mock.
    async fn start(env: &TestEnv) -> AppServer {
        let mut command = tokio::process::Command::new(support::native_codex_bin());
        command.args(base_args());
        for value in env.mock.provider_overrides() {
            command.arg("-c").arg(value);
        }
        command
            .env("HOME", &env.home)
            .env("CODEX_HOME", &env.codex_home)
            .env("RUST_LOG", "off")
            .env_remove("OPENAI_API_KEY")
            .env_remove("CODEX_API_KEY")
            .current_dir(&env.workspace)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("codex app-server starts");
        let mut server = AppServer {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
            _child: child,
            next_id: 1,
            seen: Vec::new(),
        };
        server.request("initialize", initialize_params()).await;
        server.send(json!({"method": "initialized"})).await;
        server.seen.clear();
        server
    }

    async fn send(&mut self, message: Value) {
        let line = format!("{message}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next JSON message from stdout.
    async fn next(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(TIMEOUT, self.stdout.next_line())
                .await
                .expect("the app-server answers in time")
                .unwrap()
                .expect("the app-server is running");
            if let Ok(message) = serde_json::from_str(&line) {
                return message;
            }
        }
    }

    /// Sends a request and returns its result; messages arriving meanwhile are kept in `seen`.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"id": id, "method": method, "params": params}))
            .await;
        loop {
            let message = self.next().await;
            if message.get("method").is_none() && message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
            self.seen.push(message);
        }
    }

    /// An ephemeral thread without Codex's own tools or environment, offering `tools` as dynamic tools.
    async fn thread(&mut self, env: &TestEnv, tools: Value) -> String {
        let params = json!({
            "cwd": env.workspace.display().to_string(),
            "approvalPolicy": "never",
            "sandbox": "read-only",
            "ephemeral": true,
            "model": "mock-model",
            "config": no_tools_config(),
            "dynamicTools": tools,
            "environments": [],
        });
        let thread = self.request("thread/start", params).await;
        thread["thread"]["id"].as_str().unwrap().to_string()
    }

    /// Starts a turn and reads until `turn/completed`, answering every `item/tool/call` with
    /// `answer(params)` and any other server request with the proxy's refusal. Returns the tool call
    /// params in arrival order and the final agent message text.
    async fn turn(
        &mut self,
        thread_id: &str,
        input: Value,
        answer: impl Fn(&Value) -> Value,
    ) -> (Vec<Value>, String) {
        let params = json!({"threadId": thread_id, "input": input});
        self.request("turn/start", params).await;
        let mut calls = Vec::new();
        let mut from = 0;
        loop {
            while from < self.seen.len() {
                let message = self.seen[from].clone();
                from += 1;
                if let (Some(method), Some(id)) = (message["method"].as_str(), message.get("id")) {
                    let reply = if method == "item/tool/call" {
                        calls.push(message["params"].clone());
                        json!({"id": id, "result": answer(&message["params"])})
                    } else {
                        match refusal(method) {
                            Ok(result) => json!({"id": id, "result": result}),
                            Err((code, text)) => {
                                json!({"id": id, "error": {"code": code, "message": text}})
                            }
                        }
                    };
                    self.send(reply).await;
                }
                if message["method"] == "turn/completed"
                    && message["params"]["threadId"] == thread_id
                {
                    assert_eq!(
                        message["params"]["turn"]["status"], "completed",
                        "{message}"
                    );
                    return (calls, self.final_text(thread_id));
                }
            }
            let message = self.next().await;
            self.seen.push(message);
        }
    }

    /// The text of the last completed agent message of the thread.
    fn final_text(&self, thread_id: &str) -> String {
        self.seen
            .iter()
            .filter(|m| m["method"] == "item/completed" && m["params"]["threadId"] == thread_id)
            .filter(|m| m["params"]["item"]["type"] == "agentMessage")
            .filter_map(|m| m["params"]["item"]["text"].as_str())
            .next_back()
            .unwrap_or_default()
            .to_string()
    }
}

/// The one client tool of these tests, as a dynamic tool.
fn lookup_tool() -> Value {
    json!([{
        "type": "function",
        "name": "lookup",
        "description": "Look a word up.",
        "inputSchema": {
            "type": "object",
            "properties": {"word": {"type": "string"}},
            "required": ["word"],
        },
    }])
}

fn text_input(text: &str) -> Value {
    json!([{"type": "text", "text": text, "text_elements": []}])
}

/// A successful dynamic tool answer holding `text`.
fn tool_answer(text: &str) -> Value {
    json!({"contentItems": [{"type": "inputText", "text": text}], "success": true})
}

/// Writes the thread's messages as `DIR/tool_call.jsonl` when `RECORD_TOOL_FIXTURE=DIR` is set.
fn record_fixture(env: &TestEnv, messages: &[Value], thread_id: &str) {
    let Some(dir) = std::env::var_os("RECORD_TOOL_FIXTURE") else {
        return;
    };
    let port = env.mock.base_url().replace("/v1", "");
    let port = port.rsplit(':').next().unwrap();
    let scratch = env.path().display().to_string();
    let workspace = env.workspace.display().to_string();
    let mut text = String::new();
    for message in messages {
        if message["params"]["threadId"] != thread_id {
            continue;
        }
        let line = message
            .to_string()
            .replace(&workspace, "/workspace")
            .replace(&scratch, "/workspace")
            .replace(port, "PORT");
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(std::path::Path::new(&dir).join("tool_call.jsonl"), text).unwrap();
}

#[tokio::test]
async fn direct_dynamic_tool_call_round_trip() {
    let env = TestEnv::new().await;
    let mut server = AppServer::start(&env).await;
    let thread_id = server.thread(&env, lookup_tool()).await;
    let prompt = r#"look it up mock:call=lookup:{"word":"otter"}"#;
    let (calls, text) = server
        .turn(&thread_id, text_input(prompt), |_| {
            tool_answer("a river animal")
        })
        .await;

    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call["threadId"], thread_id.as_str());
    assert_eq!(call["tool"], "lookup");
    // The model's own call id, and the arguments parsed from the model's JSON text.
    assert_eq!(call["callId"], call_id(1, 0));
    assert_eq!(call["arguments"], json!({"word": "otter"}));
    assert!(call["turnId"].is_string(), "{call}");
    // The same turn went on to the model's answer to the tool output.
    assert_eq!(text, format!("{TOOL_REPLY_PREFIX}a river animal"));

    let requests = env.mock.requests();
    assert_eq!(requests.len(), 2);
    // Only the client's tool was offered.
    assert_eq!(requests[0].tool_names(), ["lookup"]);
    assert_eq!(requests[1].tool_names(), ["lookup"]);
    let sent_call = &requests[1].input_items("function_call")[0];
    assert_eq!(sent_call["call_id"], call_id(1, 0));
    assert_eq!(sent_call["name"], "lookup");
    assert_eq!(
        requests[1].input_items("function_call_output")[0]["call_id"],
        call_id(1, 0)
    );
    assert_eq!(requests[1].trailing_tool_outputs(), ["a river animal"]);
    record_fixture(&env, &server.seen, &thread_id);
}

#[tokio::test]
async fn direct_parallel_calls_each_get_a_server_request() {
    let env = TestEnv::new().await;
    let mut server = AppServer::start(&env).await;
    let thread_id = server.thread(&env, lookup_tool()).await;
    let prompt = r#"mock:call=lookup:{"word":"a"} mock:call=lookup:{"word":"b"}"#;
    let (calls, text) = server
        .turn(&thread_id, text_input(prompt), |params| {
            tool_answer(&format!("meaning of {}", params["arguments"]["word"]))
        })
        .await;

    let mut ids: Vec<&str> = calls.iter().filter_map(|c| c["callId"].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [call_id(1, 0), call_id(1, 1)]);
    // Both outputs went back to the model in one request, in the model's order.
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].trailing_tool_outputs(),
        [r#"meaning of "a""#, r#"meaning of "b""#]
    );
    assert_eq!(
        text,
        format!(r#"{TOOL_REPLY_PREFIX}meaning of "a" | meaning of "b""#)
    );
}

#[tokio::test]
async fn direct_replayed_round_trip_continues_from_the_tool_output() {
    let env = TestEnv::new().await;
    let mut server = AppServer::start(&env).await;
    let thread_id = server.thread(&env, lookup_tool()).await;
    let items = json!([
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": r#"mock:call=lookup:{"word":"otter"}"#}]},
        {"type": "function_call", "call_id": "call_earlier", "name": "lookup",
         "arguments": r#"{"word":"otter"}"#},
        {"type": "function_call_output", "call_id": "call_earlier", "output": "a river animal"},
    ]);
    server
        .request(
            "thread/inject_items",
            json!({"threadId": thread_id, "items": items}),
        )
        .await;
    let (calls, text) = server
        .turn(&thread_id, json!([]), |_| {
            panic!("no new tool call expected")
        })
        .await;

    assert!(calls.is_empty());
    assert_eq!(text, format!("{TOOL_REPLY_PREFIX}a river animal"));
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].tool_names(), ["lookup"]);
    assert_eq!(
        requests[0].input_items("function_call")[0]["call_id"],
        "call_earlier"
    );
    assert_eq!(requests[0].trailing_tool_outputs(), ["a river animal"]);
}

// ---------------------------------------------------------------------------
// Through the proxy

/// An app-server profile `fast` (Codex's own tools stay configured: `agent = false` turns them off for
/// requests with tools) and an exec profile `slow`.
async fn proxy(env: &TestEnv) -> App {
    let config = format!(
        "{}{}{}",
        env.server(""),
        env.profile("fast", "engine = \"app-server\"\nworkers = 1\n"),
        env.profile("slow", "engine = \"exec\"\n"),
    );
    App::start(env, &config).await
}

/// The chat `tools` of these tests: `lookup` and `weather`.
fn chat_tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "lookup", "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
        }},
        {"type": "function", "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": false,
        }},
    ])
}

fn tool_request(model: &str, text: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "tools": chat_tools(),
    })
}

#[tokio::test]
async fn a_call_ends_the_answer_with_tool_calls() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let request = tool_request("fast", r#"mock:call=lookup:{"word":"otter"}"#);
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(choice["message"]["content"], Value::Null, "{body}");
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": call_id(1, 0), "type": "function",
                "function": {"name": "lookup", "arguments": r#"{"word":"otter"}"#}}])
    );
    assert_eq!(body["usage"]["prompt_tokens"], USAGE_INPUT_TOKENS, "{body}");
    // Exactly the client's tools were offered, and the turn stopped at the call: one model request.
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].tool_names(), ["lookup", "weather"]);
}

#[tokio::test]
async fn a_streamed_call_comes_as_tool_call_deltas() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = tool_request(
        "fast",
        r#"mock:reply=Checking. mock:call=weather:{"city":"Oslo"}"#,
    );
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let transcript = App::sse(app.chat(&request).await).await;
    assert!(transcript.done(), "{:?}", transcript.data);
    assert_eq!(transcript.content(), "Checking.");
    let chunks = transcript.chunks();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta/tool_calls"))
        .collect();
    // OpenAI's shape: the id, type and name with empty arguments, then the arguments as a fragment.
    assert_eq!(
        calls,
        [
            &json!([{"index": 0, "id": call_id(1, 0), "type": "function",
                  "function": {"name": "weather", "arguments": ""}}]),
            &json!([{"index": 0, "function": {"arguments": r#"{"city":"Oslo"}"#}}]),
        ]
    );
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/finish_reason"))
        .filter(|reason| !reason.is_null())
        .collect();
    assert_eq!(finishes, [&json!("tool_calls")]);
    // The finish chunk, then the usage chunk, then [DONE].
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], USAGE_TOTAL_TOKENS);
}

#[tokio::test]
async fn parallel_calls_come_back_in_one_response_in_order() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let request = tool_request(
        "fast",
        r#"mock:call=lookup:{"word":"a"} mock:call=weather:{"city":"b"}"#,
    );
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    let calls = body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = calls
        .iter()
        .map(|call| call["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lookup", "weather"], "{body}");
    assert_eq!(calls[0]["id"], call_id(1, 0));
    assert_eq!(calls[1]["id"], call_id(1, 1));
}

/// The tool-turn counters of profile `name` in `/metrics`: held, continued, expired, replayed.
async fn hold_counters(app: &App, name: &str) -> [u64; 4] {
    let metrics = app.get_json("/metrics").await.1;
    let profile = &metrics["profiles"][name];
    ["held", "continued", "expired", "replayed"].map(|what| {
        profile[format!("tool_turns_{what}")]
            .as_u64()
            .unwrap_or(u64::MAX)
    })
}

/// The first request of a round trip (the model calls `lookup`) and the second, which carries the
/// assistant's call and the tool's output.
async fn round_trip_requests(app: &App) -> (Value, Value) {
    let first = tool_request("fast", r#"mock:call=lookup:{"word":"otter"}"#);
    let (status, body) = app.chat_json(&first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let message = body["choices"][0]["message"].clone();
    let call = &message["tool_calls"][0];
    let mut second = first.clone();
    let messages = second["messages"].as_array_mut().unwrap();
    messages.push(message.clone());
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "a river animal"}));
    (first, second)
}

/// Checks the answer to the second request of [`round_trip_requests`] and what the model received.
fn assert_continued_from_the_output(env: &TestEnv, body: &Value) {
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{TOOL_REPLY_PREFIX}a river animal")
    );
    assert_eq!(body["usage"]["prompt_tokens"], USAGE_INPUT_TOKENS, "{body}");
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 2);
    let continued = &requests[1];
    assert_eq!(continued.tool_names(), ["lookup", "weather"]);
    let calls = continued.input_items("function_call");
    assert_eq!(calls.len(), 1, "{}", continued.text());
    assert_eq!(calls[0]["call_id"], call_id(1, 0));
    assert_eq!(calls[0]["name"], "lookup");
    assert_eq!(continued.trailing_tool_outputs(), ["a river animal"]);
}

/// Codex's `prompt_cache_key` of a model request: its thread's id.
fn cache_key(request: &RecordedRequest) -> Value {
    request.body["prompt_cache_key"].clone()
}

#[tokio::test]
async fn a_round_trip_is_continued_by_the_held_turn() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let (_, second) = round_trip_requests(&app).await;
    assert_eq!(hold_counters(&app, "fast").await, [1, 0, 0, 0]);
    let (status, body) = app.chat_json(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_continued_from_the_output(&env, &body);
    assert_eq!(hold_counters(&app, "fast").await, [1, 1, 0, 0]);
    // The same thread went on: no new thread, no replayed history.
    let requests = env.mock.requests();
    assert!(!cache_key(&requests[0]).is_null(), "{}", requests[0].text());
    assert_eq!(cache_key(&requests[0]), cache_key(&requests[1]));
}

#[tokio::test]
async fn a_round_trip_sent_to_another_instance_is_continued_by_replay() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let other = proxy(&env).await;
    let (_, second) = round_trip_requests(&app).await;
    let (status, body) = other.chat_json(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_continued_from_the_output(&env, &body);
    assert_eq!(hold_counters(&other, "fast").await, [0, 0, 0, 1]);
    // The first instance still holds its turn (until its timeout).
    assert_eq!(hold_counters(&app, "fast").await, [1, 0, 0, 0]);
    let requests = env.mock.requests();
    assert_ne!(cache_key(&requests[0]), cache_key(&requests[1]));
}

#[tokio::test]
async fn a_round_trip_after_a_restart_is_continued_by_replay() {
    let env = TestEnv::new().await;
    let mut app = proxy(&env).await;
    let (_, second) = round_trip_requests(&app).await;
    app.terminate(Duration::from_secs(10));
    let app = proxy(&env).await;
    let (status, body) = app.chat_json(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_continued_from_the_output(&env, &body);
    assert_eq!(hold_counters(&app, "fast").await, [0, 0, 0, 1]);
}

#[tokio::test]
async fn an_edited_history_is_continued_by_replay() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let (_, mut second) = round_trip_requests(&app).await;
    second["messages"][0]["content"] = json!(r#"edited mock:call=lookup:{"word":"otter"}"#);
    let (status, body) = app.chat_json(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{TOOL_REPLY_PREFIX}a river animal")
    );
    assert_eq!(hold_counters(&app, "fast").await, [1, 0, 0, 1]);
}

#[tokio::test]
async fn a_held_turn_expires_and_its_results_are_replayed() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(""),
        env.profile(
            "fast",
            "engine = \"app-server\"\nworkers = 1\ntool_call_timeout_seconds = 1\n"
        ),
    );
    let app = App::start(&env, &config).await;
    let (_, second) = round_trip_requests(&app).await;
    let expired = async {
        while hold_counters(&app, "fast").await[2] == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), expired)
        .await
        .expect("the hold expires after its 1 s timeout");
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["profiles"]["fast"]["running"], 0, "{metrics}");
    let (status, body) = app.chat_json(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_continued_from_the_output(&env, &body);
    assert_eq!(hold_counters(&app, "fast").await, [1, 0, 1, 1]);
}

#[tokio::test]
async fn with_holding_off_the_turn_ends_at_its_calls_and_results_are_replayed() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(""),
        env.profile(
            "fast",
            "engine = \"app-server\"\nworkers = 1\ntool_call_timeout_seconds = 0\n"
        ),
    );
    let app = App::start(&env, &config).await;
    let (_, second) = round_trip_requests(&app).await;
    let (status, body) = app.chat_json(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_continued_from_the_output(&env, &body);
    assert_eq!(hold_counters(&app, "fast").await, [0, 0, 0, 1]);
}

#[tokio::test]
async fn after_the_worker_of_a_held_turn_dies_the_results_are_replayed() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let (_, second) = round_trip_requests(&app).await;
    let metrics = app.get_json("/metrics").await.1;
    let pid = metrics["profiles"]["fast"]["workers"][0]["pid"]
        .as_u64()
        .expect("a worker pid");
    support::app::send_signal(pid as u32, libc::SIGKILL);
    // The next request waits for the restarted worker and replays the conversation.
    let (status, body) = app.chat_json(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_continued_from_the_output(&env, &body);
    assert_eq!(hold_counters(&app, "fast").await, [1, 0, 0, 1]);
}

#[tokio::test]
async fn past_max_held_turns_a_turn_ends_at_its_calls() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(""),
        env.profile(
            "fast",
            "engine = \"app-server\"\nworkers = 1\nmax_held_turns = 1\n"
        ),
    );
    let app = App::start(&env, &config).await;
    let (_, held) = round_trip_requests(&app).await;
    let other = tool_request("fast", r#"mock:call=weather:{"city":"Oslo"}"#);
    let (status, body) = app.chat_json(&other).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    // Only the first turn is held; the second was interrupted at its calls.
    assert_eq!(hold_counters(&app, "fast").await, [1, 0, 0, 0]);
    let mut second = other.clone();
    let message = body["choices"][0]["message"].clone();
    let id = message["tool_calls"][0]["id"].clone();
    let messages = second["messages"].as_array_mut().unwrap();
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "sunny"}));
    let (status, body) = app.chat_json(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{TOOL_REPLY_PREFIX}sunny")
    );
    let (status, _) = app.chat_json(&held).await;
    assert_eq!(status, 200);
    assert_eq!(hold_counters(&app, "fast").await, [1, 1, 0, 1]);
}

#[tokio::test]
async fn a_held_turn_does_not_keep_its_slot() {
    // One slot: the client that must send the results is admitted while its turn is held.
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(""),
        env.profile(
            "fast",
            "engine = \"app-server\"\nworkers = 1\nmax_concurrency = 1\nmax_queue_size = 0\n"
        ),
    );
    let app = App::start(&env, &config).await;
    let (_, second) = round_trip_requests(&app).await;
    let metrics = app.get_json("/metrics").await.1;
    assert_eq!(metrics["profiles"]["fast"]["running"], 0, "{metrics}");
    // Another client is served meanwhile, then the results continue the held turn.
    let (status, body) = app.chat_json(&chat_body("fast", "mock:reply=other")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.chat_json(&second).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{TOOL_REPLY_PREFIX}a river animal")
    );
    assert_eq!(hold_counters(&app, "fast").await, [1, 1, 0, 0]);
}

#[tokio::test]
async fn a_streamed_round_trip_is_continued_by_the_held_turn() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let (_, mut second) = round_trip_requests(&app).await;
    second["stream"] = json!(true);
    second["stream_options"] = json!({"include_usage": true});
    let transcript = App::sse(app.chat(&second).await).await;
    assert!(transcript.done(), "{:?}", transcript.data);
    assert_eq!(
        transcript.content(),
        format!("{TOOL_REPLY_PREFIX}a river animal")
    );
    let chunks = transcript.chunks();
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["usage"]["prompt_tokens"], USAGE_INPUT_TOKENS);
    assert_eq!(hold_counters(&app, "fast").await, [1, 1, 0, 0]);
}

#[tokio::test]
async fn tool_choice_none_offers_no_tools() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = tool_request("fast", "mock:reply=plain");
    request["tool_choice"] = json!("none");
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "plain");
    let offered = env.mock.requests()[0].tool_names();
    assert!(
        !offered
            .iter()
            .any(|name| name == "lookup" || name == "weather"),
        "{offered:?}"
    );
}

/// The developer text of a model request (Codex's own base prompt and ours).
fn developer_text(request: &RecordedRequest) -> String {
    request
        .input_texts()
        .into_iter()
        .filter(|(role, _)| role == "developer")
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn tool_choice_required_tells_the_model_and_returns_its_call() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = tool_request("fast", r#"mock:call=lookup:{"word":"a"}"#);
    request["tool_choice"] = json!("required");
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        developer_text(&requests[0])
            .contains("you must call at least one of the provided functions"),
        "{}",
        requests[0].text()
    );
}

#[tokio::test]
async fn tool_choice_required_asks_again_once_when_the_model_answers_with_text() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = tool_request(
        "fast",
        r#"mock:min_users=2 mock:reply=Sure mock:call=lookup:{"word":"a"}"#,
    );
    request["tool_choice"] = json!("required");
    request["stream"] = json!(true);
    let transcript = App::sse(app.chat(&request).await).await;
    assert!(transcript.done(), "{:?}", transcript.data);
    // The first answer (text only) never reached the client; the second called the tool.
    assert_eq!(transcript.content(), "Sure");
    let chunks = transcript.chunks();
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/finish_reason"))
        .filter(|reason| !reason.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1]
            .last_user_text()
            .unwrap_or_default()
            .contains("You did not call a function"),
        "{}",
        requests[1].text()
    );
}

#[tokio::test]
async fn tool_choice_required_fails_clearly_when_the_model_never_calls() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = tool_request("fast", "mock:reply=no_way");
    request["tool_choice"] = json!("required");
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tool_choice") && message.contains("second time"),
        "{message}"
    );
    assert_eq!(env.mock.request_count(), 2);
}

#[tokio::test]
async fn a_named_tool_choice_offers_only_that_function() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = tool_request("fast", r#"mock:call=weather:{"city":"Oslo"}"#);
    request["tool_choice"] = json!({"type": "function", "function": {"name": "weather"}});
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    let calls = &body["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["function"]["name"], "weather", "{body}");
    let requests = env.mock.requests();
    assert_eq!(requests[0].tool_names(), ["weather"]);
    assert!(
        developer_text(&requests[0]).contains("you must call the function `weather`"),
        "{}",
        requests[0].text()
    );
}

/// A request with the legacy `functions` (`lookup`).
fn legacy_request(text: &str) -> Value {
    json!({
        "model": "fast",
        "messages": [{"role": "user", "content": text}],
        "functions": [{"name": "lookup", "description": "Look a word up.",
                       "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}],
    })
}

#[tokio::test]
async fn legacy_functions_get_a_function_call_and_continue_by_replay() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = legacy_request(r#"mock:call=lookup:{"word":"otter"}"#);
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "function_call", "{body}");
    assert_eq!(
        choice["message"]["function_call"],
        json!({"name": "lookup", "arguments": r#"{"word":"otter"}"#})
    );
    assert!(choice["message"].get("tool_calls").is_none(), "{body}");
    assert_eq!(env.mock.requests()[0].tool_names(), ["lookup"]);
    // Legacy calls have no ids to match a held turn by: nothing is held.
    assert_eq!(hold_counters(&app, "fast").await, [0, 0, 0, 0]);

    let messages = request["messages"].as_array_mut().unwrap();
    messages.push(choice["message"].clone());
    messages.push(json!({"role": "function", "name": "lookup", "content": "a river animal"}));
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{TOOL_REPLY_PREFIX}a river animal")
    );
    let replayed = &env.mock.requests()[1];
    assert_eq!(replayed.input_items("function_call")[0]["name"], "lookup");
    assert_eq!(replayed.trailing_tool_outputs(), ["a river animal"]);
    assert_eq!(hold_counters(&app, "fast").await, [0, 0, 0, 1]);
}

#[tokio::test]
async fn a_streamed_legacy_function_call_comes_as_function_call_deltas() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = legacy_request(r#"mock:call=lookup:{"word":"otter"}"#);
    request["stream"] = json!(true);
    request["function_call"] = json!({"name": "lookup"});
    let transcript = App::sse(app.chat(&request).await).await;
    assert!(transcript.done(), "{:?}", transcript.data);
    let chunks = transcript.chunks();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/delta/function_call"))
        .collect();
    assert_eq!(
        calls,
        [
            &json!({"name": "lookup", "arguments": ""}),
            &json!({"arguments": r#"{"word":"otter"}"#}),
        ]
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.pointer("/choices/0/finish_reason"))
        .filter(|reason| !reason.is_null())
        .collect();
    assert_eq!(finish, [&json!("function_call")]);
}

#[tokio::test]
async fn an_exec_profile_refuses_tools_and_names_the_app_server_profile() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let (status, body) = app.chat_json(&tool_request("slow", "hello")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_by_engine", "{body}");
    assert_eq!(body["error"]["param"], "tools", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("client tools") && message.contains("fast"),
        "{message}"
    );
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn tool_requests_that_cannot_be_served_get_a_400_naming_the_parameter() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let tool = |name: &str| json!({"type": "function", "function": {"name": name}});
    let cases = [
        (
            json!({"tools": [tool("has space")]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [tool("f"), tool("f")]}),
            "tools[1].function.name",
        ),
        (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
        (
            json!({"tools": [tool("f")], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice.function.name",
        ),
        (
            json!({"tools": [], "tool_choice": "required"}),
            "tool_choice",
        ),
        (json!({"tool_choice": "always"}), "tool_choice"),
        (json!({"functions": [{"name": "f"}]}), "functions"),
        (json!({"parallel_tool_calls": "yes"}), "parallel_tool_calls"),
        (
            json!({"messages": [
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "call_nowhere", "content": "1"},
            ]}),
            "messages[1].tool_call_id",
        ),
        (
            json!({"messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": 5}}]},
            ]}),
            "messages[1].tool_calls",
        ),
    ];
    for (patch, param) in cases {
        let mut request = tool_request("fast", "hello");
        for (key, value) in patch.as_object().unwrap() {
            request[key] = value.clone();
        }
        let (status, body) = app.chat_json(&request).await;
        assert_eq!(status, 400, "{patch}: {body}");
        assert_eq!(body["error"]["param"], param, "{patch}: {body}");
    }
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn an_agent_loop_of_two_tool_rounds_ends_with_the_answer() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = tool_request("fast", r#"mock:steps=2 mock:call=lookup:{"word":"a"}"#);
    for (round, output) in ["one", "two"].into_iter().enumerate() {
        let (status, body) = app.chat_json(&request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
        let message = body["choices"][0]["message"].clone();
        let id = message["tool_calls"][0]["id"].clone();
        assert_eq!(id, call_id(round + 1, 0));
        let messages = request["messages"].as_array_mut().unwrap();
        messages.push(message);
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
    }
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{TOOL_REPLY_PREFIX}two")
    );
    // The last model request carried both rounds, in order.
    let last = env.mock.requests().pop().unwrap();
    let ids: Vec<Value> = last
        .input_items("function_call_output")
        .iter()
        .map(|item| item["call_id"].clone())
        .collect();
    assert_eq!(ids, [json!(call_id(1, 0)), json!(call_id(2, 0))]);
    // Each round's results continued the held turn: one thread throughout.
    assert_eq!(hold_counters(&app, "fast").await, [2, 2, 0, 0]);
    let keys: Vec<Value> = env.mock.requests().iter().map(cache_key).collect();
    assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");
}

#[tokio::test]
async fn parallel_calls_are_continued_together_by_the_held_turn() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let mut request = tool_request(
        "fast",
        r#"mock:call=lookup:{"word":"a"} mock:call=weather:{"city":"b"}"#,
    );
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    let message = body["choices"][0]["message"].clone();
    let messages = request["messages"].as_array_mut().unwrap();
    messages.push(message.clone());
    // The results in the other order: matched by id.
    messages.push(json!({"role": "tool", "tool_call_id": call_id(1, 1), "content": "rain"}));
    messages.push(json!({"role": "tool", "tool_call_id": call_id(1, 0), "content": "letter"}));
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("{TOOL_REPLY_PREFIX}letter | rain")
    );
    assert_eq!(hold_counters(&app, "fast").await, [1, 1, 0, 0]);
}

#[tokio::test]
async fn the_openai_node_sdk_completes_a_streamed_tool_round_trip() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = tokio::process::Command::new("node");
    command
        .arg(root.join("tests/it/sdk_tools.mjs"))
        .arg(app.url("/v1"))
        .arg("fast")
        .current_dir(root)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the SDK client finishes within 120 s")
        .expect("node runs (`npm ci` installs the pinned openai SDK)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        report["first"],
        json!({
            "finish_reason": "tool_calls",
            "content": null,
            "tool_calls": [{"id": call_id(1, 0), "type": "function", "name": "lookup",
                            "arguments": r#"{"word":"otter"}"#}],
            "total_tokens": USAGE_TOTAL_TOKENS,
        })
    );
    assert_eq!(
        report["second"],
        json!({"finish_reason": "stop", "content": format!("{TOOL_REPLY_PREFIX}a river animal")})
    );
}

#[tokio::test]
async fn an_agent_profile_offers_client_tools_beside_codex_tools() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server(""),
        env.profile(
            "agent",
            "engine = \"app-server\"\nworkers = 1\nagent = true\n"
        ),
    );
    let app = App::start(&env, &config).await;
    let request = tool_request("agent", r#"mock:call=lookup:{"word":"otter"}"#);
    let (status, body) = app.chat_json(&request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let offered = env.mock.requests()[0].tool_names();
    assert!(
        offered.iter().any(|name| name == "lookup") && offered.iter().any(|name| name == "weather"),
        "{offered:?}"
    );
    assert!(offered.len() > 2, "Codex's own tools stay: {offered:?}");
}

#[tokio::test]
async fn the_openai_python_sdk_completes_tool_round_trips_plain_and_streamed() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let stdout = support::run_python(
        "test_tools_openai.py",
        &[("PROXY_URL", app.url("/v1")), ("MODEL", "fast".to_string())],
        Duration::from_secs(120),
    )
    .await;
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        report["plain"],
        json!({
            "finish_reason": "tool_calls",
            "calls": [[call_id(1, 0), "lookup", r#"{"word":"otter"}"#]],
            "answer": format!("{TOOL_REPLY_PREFIX}otter: a river animal"),
            "answer_finish_reason": "stop",
        })
    );
    assert_eq!(
        report["streamed"],
        json!({
            "finish_reason": "tool_calls",
            "calls": [[call_id(3, 0), "lookup", r#"{"word":"heron"}"#]],
            "answer": format!("{TOOL_REPLY_PREFIX}heron: a river animal"),
        })
    );
    // Both round trips continued their held turns.
    assert_eq!(hold_counters(&app, "fast").await, [2, 2, 0, 0]);
}

#[tokio::test]
async fn a_langchain_bind_tools_agent_loop_runs_to_the_answer() {
    let env = TestEnv::new().await;
    let app = proxy(&env).await;
    let stdout = support::run_python(
        "langchain_tools_agent.py",
        &[("PROXY_URL", app.url("/v1")), ("MODEL", "fast".to_string())],
        Duration::from_secs(120),
    )
    .await;
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        report,
        json!({"rounds": 2, "answer": format!("{TOOL_REPLY_PREFIX}otter: a river animal")})
    );
    // LangChain re-serialises the arguments; the held turns were still continued.
    assert_eq!(hold_counters(&app, "fast").await, [2, 2, 0, 0]);
}
