//! Hostile input and secrets, end to end against the real proxy binary.
//!
//! Chat requests here are either refused by validation or answered by the instant fake `codex` of
//! [`support::fake_codex::write_instant`], which prints one well-formed exec run at once: the properties
//! are about input handling, not Codex, so thousands of requests stay cheap. Only
//! `chat::pass_model_names_never_become_codex_options` runs the real Codex CLI (against the mock model),
//! a few times.
//!
//! Invariants for every answer: the status is below 500; a 4xx body is exactly
//! `{"error":{"message","type","param","code"}}`; a 200 is a valid `chat.completion` (or SSE stream).
//!
//! The suites: [`chat`] (request bodies, routes, argv-bound input), [`cwd`] (`metadata.cwd`),
//! [`connections`] (oversized bodies, slow and idle clients), [`secrets`] (keys on every route kind);
//! the generators of request bodies are in [`strategies`]. The properties of config files are unit
//! tests next to the parser, in `src/config/proptests.rs`.
//!
//! Property tests (proptest; the case counts are fixed here, the seed is fixed unless
//! `PROPTEST_RNG_SEED` is set; `--nocapture` prints one line per property):
//!
//! | property | cases |
//! |---|---|
//! | chat bodies of a random shape (wrong types for every field, unicode roles, random `metadata`) | 512 |
//! | valid chat bodies with random unicode everywhere, plain and streaming: always 200 | 256 |
//! | chat bodies that are arbitrary JSON values | 256 |
//! | chat bodies of raw bytes: random, invalid UTF-8 inside strings, byte edits of a valid body | 512 |
//! | chat bodies nested up to 12 000 deep in every position | 256 |
//! | `metadata.cwd` built from `..`, symlinks, files and missing names: 200 exactly when the filesystem says inside | 256 |
//! | random methods and paths on every route | 256 |

mod chat;
mod connections;
mod cwd;
mod secrets;
mod strategies;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::support;
use proxy_test_support::props::{check_property, short};
use support::app::{App, TestEnv};
use support::fake_codex::{self, INSTANT_REPLY};
use support::http::{send, Reply};
use support::toml_text::path_str;

/// A multi-threaded runtime for one test (the property runner itself is synchronous).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `[server]` with the fake Codex; `extra` goes inside the table.
fn server_section(fake: &Path, extra: &str) -> String {
    format!("[server]\ncodex_bin = {}\n{extra}\n", path_str(fake))
}

/// An exec profile that runs in `root` and may use only `root`; `extra` goes inside the table.
fn profile_section(name: &str, root: &Path, extra: &str) -> String {
    format!(
        "[profiles.{name}]\ndefault_cwd = {root}\nallowed_roots = [{root}]\n{extra}\n",
        root = path_str(root)
    )
}

/// A running proxy with the fake Codex, in a private test directory.
struct Proxy {
    app: App,
    env: TestEnv,
    config_path: PathBuf,
    client: reqwest::Client,
}

impl Proxy {
    /// Starts the proxy with the config `make_config(env, fake codex)` and `vars` in its environment.
    fn start(
        runtime: &tokio::runtime::Runtime,
        make_config: impl FnOnce(&TestEnv, &Path) -> String,
        vars: &[(&str, &str)],
    ) -> Proxy {
        let env = runtime.block_on(TestEnv::new());
        let fake = fake_codex::write_instant(env.path());
        std::fs::create_dir_all(env.workspace.join("sub")).unwrap();
        let config = make_config(&env, &fake);
        let config_path = env.write_config(&config);
        let mut command = env.command();
        command
            .args(["start", "--foreground", "--port", "0", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in vars {
            command.env(name, value);
        }
        let app = runtime.block_on(App::spawn(command));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Proxy {
            app,
            env,
            config_path,
            client,
        }
    }

    fn root(&self) -> &Path {
        &self.env.workspace
    }

    fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    async fn post_bytes(&self, body: Vec<u8>, key: Option<&str>) -> Result<Reply, String> {
        let mut request = self
            .client
            .post(self.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        send(request).await
    }

    async fn post(&self, body: &Value, key: Option<&str>) -> Result<Reply, String> {
        self.post_bytes(serde_json::to_vec(body).unwrap(), key)
            .await
    }

    async fn get(&self, path: &str, key: Option<&str>) -> Result<Reply, String> {
        let mut request = self.client.get(self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        send(request).await
    }

    /// The directory the fake Codex last ran in.
    fn last_codex_cwd(&self) -> String {
        std::fs::read_to_string(self.env.path().join(fake_codex::INSTANT_CWD_FILE))
            .unwrap_or_default()
            .trim_end()
            .to_string()
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.app.port)).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------------
// What every answer must look like

const ERROR_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "rate_limit_error",
    "server_error",
];

/// Checks `{"error":{"message","type","param","code"}}` (exactly those keys); returns the error object.
fn openai_error(reply: &Reply) -> Result<Map<String, Value>, String> {
    let body: Value = serde_json::from_slice(&reply.body).map_err(|_| {
        format!(
            "the {} body is not JSON: {:?}",
            reply.status,
            short(&reply.text())
        )
    })?;
    let Some(outer) = body.as_object().filter(|outer| outer.len() == 1) else {
        return Err(format!(
            "not an error body ({}): {}",
            reply.status,
            short(&body.to_string())
        ));
    };
    let Some(error) = outer.get("error").and_then(Value::as_object) else {
        return Err(format!(
            "no error object ({}): {}",
            reply.status,
            short(&body.to_string())
        ));
    };
    let keys: BTreeSet<&str> = error.keys().map(String::as_str).collect();
    if keys != BTreeSet::from(["code", "message", "param", "type"]) {
        return Err(format!(
            "error keys {keys:?} ({}): {}",
            reply.status,
            short(&body.to_string())
        ));
    }
    if !error["type"]
        .as_str()
        .is_some_and(|kind| ERROR_TYPES.contains(&kind))
    {
        return Err(format!("unknown error type: {}", short(&body.to_string())));
    }
    if error["message"]
        .as_str()
        .is_none_or(|message| message.trim().is_empty())
    {
        return Err(format!("empty error message: {}", short(&body.to_string())));
    }
    for key in ["param", "code"] {
        if !(error[key].is_null() || error[key].is_string()) {
            return Err(format!(
                "`{key}` is neither null nor a string: {}",
                short(&body.to_string())
            ));
        }
    }
    Ok(error.clone())
}

/// A plain 200: one `chat.completion` whose answer is the fake's.
fn check_completion(reply: &Reply, model: Option<&str>) -> Result<(), String> {
    let body: Value = serde_json::from_slice(&reply.body)
        .map_err(|_| format!("the 200 body is not JSON: {}", short(&reply.text())))?;
    let fail = |what: &str| Err(format!("{what}: {}", short(&body.to_string())));
    if body["object"] != "chat.completion" {
        return fail("not a chat.completion");
    }
    if !body["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("chatcmpl-"))
    {
        return fail("bad id");
    }
    if !body["created"].is_u64() {
        return fail("bad created");
    }
    if let Some(model) = model {
        if body["model"].as_str() != Some(model) {
            return fail("the model is not the requested one");
        }
    }
    let choice = &body["choices"][0];
    if body["choices"].as_array().map(Vec::len) != Some(1)
        || choice["index"] != 0
        || choice["message"]["role"] != "assistant"
        || choice["message"]["content"] != INSTANT_REPLY
        || choice["finish_reason"] != "stop"
    {
        return fail("bad choice");
    }
    let usage = &body["usage"];
    if usage["prompt_tokens"] != 1 || usage["completion_tokens"] != 1 || usage["total_tokens"] != 2
    {
        return fail("bad usage");
    }
    Ok(())
}

/// A streaming 200: chunks with the fake's answer, a `stop`, then `[DONE]`; no in-band error.
fn check_stream(reply: &Reply, model: Option<&str>) -> Result<(), String> {
    let text = String::from_utf8(reply.body.clone())
        .map_err(|_| "the SSE body is not UTF-8".to_string())?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    if data.last() != Some(&"[DONE]") {
        return Err(format!(
            "the stream does not end with [DONE]: {}",
            short(&text)
        ));
    }
    let mut content = String::new();
    let mut stopped = false;
    for payload in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(payload)
            .map_err(|_| format!("an SSE payload is not JSON: {}", short(payload)))?;
        if chunk.get("error").is_some() || chunk["object"] != "chat.completion.chunk" {
            return Err(format!("bad chunk: {}", short(payload)));
        }
        if let Some(model) = model {
            if chunk["model"].as_str() != Some(model) {
                return Err(format!("chunk for another model: {}", short(payload)));
            }
        }
        if let Some(delta) = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            content.push_str(delta);
        }
        stopped |= chunk.pointer("/choices/0/finish_reason") == Some(&json!("stop"));
    }
    if content != INSTANT_REPLY || !stopped {
        return Err(format!(
            "bad stream content {content:?} (stop: {stopped}): {}",
            short(&text)
        ));
    }
    Ok(())
}

/// The invariants of every chat answer. `model` is the requested model when the body had one.
fn check_chat_reply(reply: &Reply, model: Option<&str>) -> Result<(), String> {
    match reply.status {
        200 => {
            let streaming = reply
                .header("content-type")
                .is_some_and(|kind| kind.starts_with("text/event-stream"));
            if streaming {
                check_stream(reply, model)
            } else {
                check_completion(reply, model)
            }
        }
        400 | 404 | 413 => openai_error(reply).map(|_| ()),
        status => Err(format!(
            "unexpected status {status} for a chat request: {}",
            short(&reply.text())
        )),
    }
}

/// A proxy whose every model routes to an instant fake Codex: `fake` (also the fallback) and `m-…`.
fn fake_codex_proxy(runtime: &tokio::runtime::Runtime) -> Proxy {
    Proxy::start(
        runtime,
        |env, fake| {
            format!(
                "{}{}{}",
                server_section(fake, "fallback_profile = \"fake\""),
                profile_section("fake", &env.workspace, ""),
                profile_section("matched", &env.workspace, "match = \"^m-\""),
            )
        },
        &[],
    )
}
