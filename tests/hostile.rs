//! Hostile input and secrets, end to end against the real proxy binary.
//!
//! Chat requests here are either refused by validation or answered by a fake `codex` script that prints
//! one well-formed exec run at once (see [`write_fake_codex`]): the properties are about input handling,
//! not Codex, so thousands of requests stay cheap. Only `pass_model_names_never_become_codex_options`
//! runs the real Codex CLI (against the mock model), a few times.
//!
//! Invariants for every answer: the status is below 500; a 4xx body is exactly
//! `{"error":{"message","type","param","code"}}`; a 200 is a valid `chat.completion` (or SSE stream).
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
//! | `config::parse` on random bytes | 512 |
//! | `config::parse` on byte edits and truncations of `config.example.toml` | 512 |
//! | `config::parse` on random tables, keys and value types | 512 |

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use codex_api_proxy::config::{parse, ServerOverrides};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, RngSeed, TestCaseError, TestError, TestRunner,
};
use serde_json::{json, Map, Value};
use support::app::{chat_body, App, TestEnv};

/// The server-level key of the secrets tests.
const SERVER_KEY: &str = "sk-test-SECRET";
/// The key of the `private` profile.
const PROFILE_KEY: &str = "sk-profile-PRIVATE";
/// The key of the `other` profile.
const OTHER_KEY: &str = "sk-other-OTHER";
/// What the fake Codex answers.
const FAKE_REPLY: &str = "ok";
/// The seed of every property unless `PROPTEST_RNG_SEED` is set.
const DEFAULT_SEED: u64 = 0x005E_ED0F_C0DE;

use codex_api_proxy::api::types::ROLES;

/// Every top-level request parameter the proxy knows, and a few it does not.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "seed",
    "n",
    "tools",
    "tool_choice",
    "response_format",
    "stop",
    "logprobs",
    "metadata",
    "functions",
    "function_call",
    "store",
];

/// Strings that have broken parsers, loggers and path handling before.
const SPECIAL_STRINGS: &[&str] = &[
    "",
    " ",
    "\u{0}",
    "a\u{0}b",
    "\u{202E}txt.exe",
    "\u{FEFF}user",
    "user\u{200B}",
    "USER",
    "🦀",
    "\u{10FFFF}",
    "\\",
    "\"",
    "\r\n\r\n",
    "%00",
    "../..",
    "/",
    "${HOME}",
    "{{",
    "<script>",
    "null",
    "[DONE]",
    "data: [DONE]\n\n",
    "fake:hang",
    "-x",
    "--help",
];

// ---------------------------------------------------------------------------------------------------
// The proxy under test

/// A multi-threaded runtime for one test (the property runner itself is synchronous).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Writes the instant fake `codex` into `dir`. It answers `--version`, reads the whole prompt, records
/// its physical working directory (`fake-codex.cwd`) and its arguments and environment
/// (`fake-codex.invocation`), then prints one successful exec run whose answer is [`FAKE_REPLY`].
fn write_fake_codex(dir: &Path) -> PathBuf {
    let path = dir.join("fake-codex");
    let script = r#"#!/bin/sh
if [ "$1" = "--version" ]; then
  echo "codex-cli 0.0.0-fake"
  exit 0
fi
here=$(dirname "$0")
cat > /dev/null
pwd -P > "$here/fake-codex.cwd"
{ for arg in "$@"; do printf '%s\n' "$arg"; done; env; } > "$here/fake-codex.invocation"
echo '{"type":"thread.started","thread_id":"t"}'
echo '{"type":"turn.started"}'
echo '{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"ok"}}'
echo '{"type":"turn.completed","usage":{"input_tokens":1,"cached_input_tokens":0,"output_tokens":1,"reasoning_output_tokens":0}}'
exit 0
"#;
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `text` as a TOML basic string.
fn toml_str(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(path: &Path) -> String {
    toml_str(&path.display().to_string())
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

/// One HTTP answer, read completely.
#[derive(Debug)]
struct Reply {
    status: u16,
    /// Header names (lower case) and values (lossy UTF-8).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, short(&self.text())))
    }

    /// Everything a client sees, for secret scans.
    fn everything(&self) -> String {
        let mut out = format!("{}\n", self.status);
        for (key, value) in &self.headers {
            out.push_str(&format!("{key}: {value}\n"));
        }
        out.push_str(&self.text());
        out
    }
}

/// The first 400 characters of `text`, for messages.
fn short(text: &str) -> String {
    let mut out: String = text.chars().take(400).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

async fn send(request: reqwest::RequestBuilder) -> Result<Reply, String> {
    let response = request
        .send()
        .await
        .map_err(|err| format!("the request failed (no HTTP answer): {err:?}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(key, value)| {
            (
                key.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .bytes()
        .await
        .map_err(|err| format!("the {status} body could not be read: {err:?}"))?
        .to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
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
        let fake = write_fake_codex(env.path());
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
        std::fs::read_to_string(self.env.path().join("fake-codex.cwd"))
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
        || choice["message"]["content"] != FAKE_REPLY
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
    if content != FAKE_REPLY || !stopped {
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

/// The model of a JSON request body, if it has a string one.
fn requested_model(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("model")?
        .as_str()
        .map(str::to_string)
}

/// Posts `body` and checks the invariants; a body that is not JSON must be a 400 without `param`.
fn chat_case(
    runtime: &tokio::runtime::Runtime,
    proxy: &Proxy,
    body: Vec<u8>,
) -> Result<(), TestCaseError> {
    let model = requested_model(&body);
    let malformed = serde_json::from_slice::<Value>(&body).is_err();
    let reply = runtime
        .block_on(proxy.post_bytes(body, None))
        .map_err(TestCaseError::fail)?;
    check_chat_reply(&reply, model.as_deref()).map_err(TestCaseError::fail)?;
    if malformed {
        prop_assert_eq!(
            reply.status,
            400,
            "malformed JSON: {}",
            short(&reply.text())
        );
        let error = openai_error(&reply).map_err(TestCaseError::fail)?;
        prop_assert!(error["param"].is_null(), "{:?}", error);
    }
    Ok(())
}

/// Runs `test` on `cases` values of `strategy`; panics with the shrunk input on failure.
fn check_property<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut config = ProptestConfig::default();
    let seed = match config.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => DEFAULT_SEED,
    };
    config.rng_seed = RngSeed::Fixed(seed);
    config.cases = cases;
    config.failure_persistence = None;
    config.max_shrink_iters = 256;
    let mut runner = TestRunner::new(config);
    match runner.run(&strategy, test) {
        Ok(()) => eprintln!("property `{name}`: {cases} cases passed (seed {seed})"),
        Err(TestError::Fail(reason, minimal)) => {
            let shown = short(&format!("{minimal:?}"));
            panic!("property `{name}` failed (seed {seed}): {reason}\nminimal input: {shown}")
        }
        Err(TestError::Abort(reason)) => panic!("property `{name}` aborted: {reason}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Generators

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 _./-]{0,16}",
        2 => any::<String>(),
        2 => prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => prop::sample::select(SPECIAL_STRINGS).prop_map(str::to_string),
    ]
    .boxed()
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(1.0),
            json!(2),
            json!(0.5)
        ]),
        text().prop_map(Value::String),
    ]
    .boxed()
}

fn json_key() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(FIELDS).prop_map(str::to_string),
        prop::sample::select(&["role", "content", "type", "text", "cwd", "include_usage"][..])
            .prop_map(str::to_string),
        text(),
    ]
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(4, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((json_key(), inner), 0..5)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
        .boxed()
}

/// A content part: valid text or image parts, parts with odd types, or anything.
fn content_part() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => text().prop_map(|text| json!({"type": "text", "text": text})),
        1 => text().prop_map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
        1 => (text(), json_value()).prop_map(|(kind, text)| json!({"type": kind, "text": text})),
        1 => json_value(),
    ]
    .boxed()
}

/// A message of any shape: known or random roles, string/parts/null/anything content, extra keys.
fn any_message() -> BoxedStrategy<Value> {
    let role = prop_oneof![
        6 => prop::sample::select(ROLES).prop_map(Value::from),
        2 => text().prop_map(Value::String),
        1 => json_value(),
    ];
    let content = prop_oneof![
        5 => text().prop_map(Value::String),
        2 => prop::collection::vec(content_part(), 0..4).prop_map(Value::Array),
        1 => Just(Value::Null),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.95, role),
        prop::option::weighted(0.9, content),
        prop::option::of((json_key(), json_value())),
    )
        .prop_map(|(role, content, extra)| {
            let mut message = Map::new();
            if let Some((key, value)) = extra {
                message.insert(key, value);
            }
            if let Some(role) = role {
                message.insert("role".into(), role);
            }
            if let Some(content) = content {
                message.insert("content".into(), content);
            }
            Value::Object(message)
        })
        .boxed()
}

/// A `metadata` value: anything, or an object whose `cwd` is a path near the root, random text or
/// anything, with other random keys.
fn metadata(root: String) -> BoxedStrategy<Value> {
    let near_root = prop::collection::vec(
        prop::sample::select(&["..", ".", "sub", "", "missing", "x\u{0}y", "🦀"][..]),
        0..4,
    )
    .prop_map(move |parts| Value::String(format!("{root}/{}", parts.join("/"))));
    let cwd = prop_oneof![near_root, text().prop_map(Value::String), json_value()];
    prop_oneof![
        json_value(),
        (cwd, prop::collection::vec((text(), json_value()), 0..3)).prop_map(|(cwd, extra)| {
            let mut metadata: Map<String, Value> = extra.into_iter().collect();
            metadata.insert("cwd".into(), cwd);
            Value::Object(metadata)
        }),
    ]
    .boxed()
}

/// A value for a top-level parameter: anything, or something close to what the parameter takes.
fn field_value(root: String) -> BoxedStrategy<Value> {
    prop_oneof![
        3 => json_value(),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => prop::sample::select(vec![
            json!({"include_usage": true}),
            json!({"type": "text"}),
            json!({"type": "json_object"}),
            json!([]),
            json!([{"type": "function"}]),
            json!("auto"),
            json!("none"),
            json!(1),
            json!(0.7),
            json!(null),
        ]),
        2 => metadata(root),
    ]
    .boxed()
}

/// A chat body of any shape, routed (when its model is a string) to a fake-Codex profile.
fn any_chat_body(root: String) -> BoxedStrategy<Value> {
    let model = prop_oneof![
        4 => prop::sample::select(&["fake", "m-match"][..]).prop_map(Value::from),
        3 => text().prop_map(Value::String),
        1 => json_value(),
    ];
    let messages = prop_oneof![
        8 => prop::collection::vec(any_message(), 1..5).prop_map(Value::Array),
        1 => Just(json!([])),
        1 => json_value(),
    ];
    (
        prop::option::weighted(0.95, model),
        prop::option::weighted(0.95, messages),
        prop::option::of(any::<bool>()),
        prop::collection::vec((prop::sample::select(FIELDS), field_value(root)), 0..4),
    )
        .prop_map(|(model, messages, stream, fields)| {
            let mut body = Map::new();
            if let Some(model) = model {
                body.insert("model".into(), model);
            }
            if let Some(messages) = messages {
                body.insert("messages".into(), messages);
            }
            if let Some(stream) = stream {
                body.insert("stream".into(), Value::Bool(stream));
            }
            for (field, value) in fields {
                body.insert(field.to_string(), value);
            }
            Value::Object(body)
        })
        .boxed()
}

/// A valid chat body: any non-blank model (the fallback profile takes it), known roles, random
/// unicode content in strings and parts, every optional parameter with a valid value or absent,
/// unknown extra keys, a `metadata.cwd` inside the root or none.
fn valid_chat_body(root: String) -> BoxedStrategy<Value> {
    let content = prop_oneof![
        3 => text().prop_map(Value::String),
        1 => prop::collection::vec(
            prop_oneof![
                text().prop_map(|text| json!({"type": "text", "text": text})),
                text().prop_map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
                Just(json!({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}})),
            ],
            0..4,
        )
        .prop_map(Value::Array),
    ];
    let message = (
        prop::sample::select(ROLES),
        content,
        prop::option::of(text()),
    )
        .prop_map(|(role, content, name)| {
            let mut message = json!({"role": role, "content": content});
            if let Some(name) = name {
                message["name"] = Value::String(name);
            }
            message
        });
    let options = prop::collection::vec(
        prop_oneof![
            any::<bool>().prop_map(|stream| ("stream", json!(stream))),
            any::<bool>().prop_map(|usage| ("stream_options", json!({"include_usage": usage}))),
            (0.0f64..2.0).prop_map(|t| ("temperature", json!(t))),
            (0.0f64..1.0).prop_map(|p| ("top_p", json!(p))),
            any::<u32>().prop_map(|n| ("max_tokens", json!(n))),
            any::<u32>().prop_map(|n| ("max_completion_tokens", json!(n))),
            (-2.0f64..2.0).prop_map(|p| ("presence_penalty", json!(p))),
            (-2.0f64..2.0).prop_map(|p| ("frequency_penalty", json!(p))),
            text().prop_map(|user| ("user", json!(user))),
            any::<i64>().prop_map(|seed| ("seed", json!(seed))),
            Just(("n", json!(1))),
            Just(("tools", json!([]))),
            prop::sample::select(&["none", "auto"][..]).prop_map(|c| ("tool_choice", json!(c))),
            Just(("response_format", json!({"type": "text"}))),
            Just(("stop", json!([]))),
            Just(("logprobs", json!(false))),
        ],
        0..6,
    );
    let cwd = prop::option::of(prop::sample::select(vec![
        root.clone(),
        format!("{root}/sub"),
        format!("{root}/./sub/.."),
        format!("{root}//sub/"),
    ]));
    (
        text().prop_filter("a model must not be blank", |model| {
            !model.trim().is_empty()
        }),
        prop::collection::vec(message, 0..4),
        text(),
        options,
        cwd,
        prop::collection::vec((text(), json_value()), 0..3),
        prop::collection::vec((text(), json_value()), 0..2),
    )
        .prop_map(
            |(model, mut messages, last, options, cwd, metadata, extra)| {
                messages.push(json!({"role": "user", "content": last}));
                let mut body = Map::new();
                for (key, value) in extra {
                    if !FIELDS.contains(&key.as_str()) {
                        body.insert(key, value);
                    }
                }
                for (key, value) in options {
                    body.insert(key.to_string(), value);
                }
                let mut metadata: Map<String, Value> = metadata.into_iter().collect();
                metadata.remove("cwd");
                if let Some(cwd) = cwd {
                    metadata.insert("cwd".into(), Value::String(cwd));
                }
                body.insert("metadata".into(), Value::Object(metadata));
                body.insert("model".into(), Value::String(model));
                body.insert("messages".into(), Value::Array(messages));
                Value::Object(body)
            },
        )
        .boxed()
}

/// Raw request bodies: random bytes, random bytes inside the strings of a valid body (invalid UTF-8
/// most of the time), and byte edits of a valid body.
fn raw_chat_body() -> BoxedStrategy<Vec<u8>> {
    const VALID: &[u8] =
        br#"{"model":"fake","messages":[{"role":"user","content":"hello"}],"metadata":{"k":"v"}}"#;
    let splice = |at: &'static str| {
        move |bytes: Vec<u8>| {
            let text = std::str::from_utf8(VALID).unwrap();
            let index = text.find(at).unwrap() + at.len();
            [&VALID[..index], &bytes[..], &VALID[index..]].concat()
        }
    };
    let invalid_utf8 = prop::sample::select(vec![
        b"\xff".to_vec(),
        b"\xc0\xaf".to_vec(),
        b"\xed\xa0\x80".to_vec(),
        b"\xf4\x90\x80\x80".to_vec(),
        b"\x80".to_vec(),
        b"\xe2\x82".to_vec(),
        b"\\ud800".to_vec(),
        b"\\udc00\\ud800".to_vec(),
        b"\x00".to_vec(),
    ]);
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0..3u8);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(splice("\"content\":\"")),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(splice("\"role\":\"")),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(splice("\"model\":\"")),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(splice("\"k\":\"")),
        invalid_utf8.clone().prop_map(splice("\"content\":\"")),
        invalid_utf8.prop_map(splice("\"model\":\"")),
        prop::collection::vec(edit, 1..6).prop_map(|edits| {
            let mut bytes = VALID.to_vec();
            for (index, byte, kind) in edits {
                let at = index.index(bytes.len());
                match kind {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            bytes
        }),
    ]
    .boxed()
}

/// `depth` nested arrays, objects or both around `1`.
fn nested(depth: usize, kind: u8) -> String {
    let mut out = String::with_capacity(depth * 6);
    for level in 0..depth {
        let array = match kind {
            0 => true,
            1 => false,
            _ => level % 2 == 0,
        };
        out.push_str(if array { "[" } else { "{\"a\":" });
    }
    out.push('1');
    for level in (0..depth).rev() {
        let array = match kind {
            0 => true,
            1 => false,
            _ => level % 2 == 0,
        };
        out.push(if array { ']' } else { '}' });
    }
    out
}

/// A body with deep nesting at the top, in a message, in `metadata`, in an unknown key, as
/// `messages` or as `model`.
fn nested_chat_body() -> BoxedStrategy<Vec<u8>> {
    (1usize..12_000, 0..3u8, 0..6u8)
        .prop_map(|(depth, kind, position)| {
            let value = nested(depth, kind);
            let user = r#"[{"role":"user","content":"hi"}]"#;
            let body = match position {
                0 => value,
                1 => format!(
                    r#"{{"model":"fake","messages":[{{"role":"user","content":{value}}}]}}"#
                ),
                2 => format!(r#"{{"model":"fake","messages":{user},"metadata":{value}}}"#),
                3 => format!(r#"{{"model":"fake","messages":{user},"extra":{value}}}"#),
                4 => format!(r#"{{"model":"fake","messages":{value}}}"#),
                _ => format!(r#"{{"model":{value},"messages":{user}}}"#),
            };
            body.into_bytes()
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------------
// Chat request properties

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

#[test]
fn chat_bodies_of_random_shape_never_fail_the_server() {
    let runtime = runtime();
    let proxy = fake_codex_proxy(&runtime);
    let root = proxy.root().display().to_string();
    check_property(
        "random-shape chat bodies",
        512,
        any_chat_body(root),
        |body| chat_case(&runtime, &proxy, serde_json::to_vec(&body).unwrap()),
    );
    assert!(runtime.block_on(proxy.get("/health", None)).unwrap().status == 200);
}

#[test]
fn valid_chat_bodies_with_random_unicode_always_answer() {
    let runtime = runtime();
    let proxy = fake_codex_proxy(&runtime);
    let root = proxy.root().display().to_string();
    check_property("valid chat bodies", 256, valid_chat_body(root), |body| {
        let reply = runtime
            .block_on(proxy.post(&body, None))
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(reply.status, 200, "{}", short(&reply.text()));
        check_chat_reply(&reply, body["model"].as_str()).map_err(TestCaseError::fail)
    });
}

#[test]
fn chat_bodies_that_are_arbitrary_json_are_refused_cleanly() {
    let runtime = runtime();
    let proxy = fake_codex_proxy(&runtime);
    check_property("arbitrary JSON chat bodies", 256, json_value(), |body| {
        chat_case(&runtime, &proxy, serde_json::to_vec(&body).unwrap())
    });
}

#[test]
fn chat_bodies_of_raw_bytes_are_refused_cleanly() {
    let runtime = runtime();
    let proxy = fake_codex_proxy(&runtime);
    check_property("raw-byte chat bodies", 512, raw_chat_body(), |body| {
        chat_case(&runtime, &proxy, body)
    });
}

#[test]
fn deeply_nested_chat_bodies_are_400_not_a_stack_overflow() {
    let runtime = runtime();
    let proxy = fake_codex_proxy(&runtime);
    check_property(
        "deeply nested chat bodies",
        256,
        nested_chat_body(),
        |body| chat_case(&runtime, &proxy, body),
    );
    // The fixed worst cases: 10 000 levels and 100 000 levels, every kind, at the top.
    for depth in [10_000, 100_000] {
        for kind in 0..3 {
            let reply = runtime
                .block_on(proxy.post_bytes(nested(depth, kind).into_bytes(), None))
                .unwrap();
            assert_eq!(reply.status, 400, "depth {depth}: {}", short(&reply.text()));
            openai_error(&reply).unwrap();
        }
    }
    assert_eq!(
        runtime.block_on(proxy.get("/health", None)).unwrap().status,
        200
    );
}

#[test]
fn huge_and_numerous_values_are_handled() {
    let runtime = runtime();
    let proxy = fake_codex_proxy(&runtime);
    let root = proxy.root().display().to_string();
    let user = |text: String| json!([{"role": "user", "content": text}]);
    let mib = 1024 * 1024;

    // Under the 10 MiB limit: a huge prompt, model name, `user` and unknown key are answered.
    let cases = [
        json!({"model": "fake", "messages": user("x".repeat(8 * mib))}),
        json!({"model": "m-".to_string() + &"y".repeat(mib), "messages": user("hi".into())}),
        json!({"model": "fake", "messages": user("\u{0}\u{1}\u{202E}🦀".repeat(mib / 16))}),
        json!({"model": "fake", "messages": user("hi".into()), "user": "u".repeat(mib)}),
        json!({"model": "fake", "messages": user("hi".into()), "z".repeat(mib): 1}),
        json!({
            "model": "fake",
            "messages": (0..50_000).map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "m"})).collect::<Vec<_>>(),
        }),
        json!({
            "model": "fake",
            "messages": user("hi".into()),
            "metadata": (0..100_000).map(|i| (format!("k{i}"), json!(i))).collect::<Map<_, _>>(),
        }),
    ];
    for body in &cases {
        let reply = runtime.block_on(proxy.post(body, None)).unwrap();
        assert_eq!(reply.status, 200, "{}", short(&reply.text()));
        check_chat_reply(&reply, body["model"].as_str()).unwrap();
    }

    // Refused with the parameter named, and without echoing a megabyte back.
    let refused = [
        (
            json!({"model": "fake", "messages": [{"role": "r".repeat(mib), "content": "hi"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "fake", "messages": user("hi".into()), "metadata": {"cwd": format!("{root}/{}", "a".repeat(mib))}}),
            "metadata.cwd",
        ),
        (
            json!({"model": "fake", "messages": user("hi".into()), "temperature": "9".repeat(mib)}),
            "temperature",
        ),
    ];
    for (body, param) in &refused {
        let reply = runtime.block_on(proxy.post(body, None)).unwrap();
        assert_eq!(reply.status, 400, "{}", short(&reply.text()));
        let error = openai_error(&reply).unwrap();
        assert_eq!(error["param"], *param, "{error:?}");
    }
    let role_error = runtime.block_on(proxy.post(&refused[0].0, None)).unwrap();
    assert!(
        role_error.body.len() < 2_000,
        "{} bytes",
        role_error.body.len()
    );

    // A number with a million digits is not a number serde can hold.
    let digits = format!(
        r#"{{"model":"fake","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{}}}"#,
        "9".repeat(mib)
    );
    let reply = runtime
        .block_on(proxy.post_bytes(digits.into_bytes(), None))
        .unwrap();
    assert_eq!(reply.status, 400, "{}", short(&reply.text()));
    openai_error(&reply).unwrap();
}

#[test]
fn other_routes_answer_random_methods_and_paths_in_the_openai_shape() {
    let runtime = runtime();
    let proxy = fake_codex_proxy(&runtime);
    let segment = prop_oneof![
        prop::sample::select(
            &[
                "v1",
                "models",
                "chat",
                "completions",
                "health",
                "ready",
                "metrics",
                "admin",
                "reload",
                "fake",
                "m-x",
                "..",
                ".",
                "%2e%2e",
                "%FF",
                "%C0%AF",
                "%00",
                "%",
                "%zz",
                "a%20b",
                "%F0%9F%A6%80",
                "🦀",
                "",
                "%2F",
            ][..]
        )
        .prop_map(str::to_string),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(|bytes| {
            bytes
                .iter()
                .map(|byte| format!("%{byte:02X}"))
                .collect::<String>()
        }),
        "[a-zA-Z0-9._~-]{0,8}",
    ];
    let path = (
        prop::sample::select(&["", "/v1", "/v1/models", "/v1/chat"][..]),
        prop::collection::vec(segment, 0..4),
        prop::option::of("[a-z=&%0-9]{0,12}"),
    )
        .prop_map(|(prefix, segments, query)| {
            let mut path = format!("{prefix}/{}", segments.join("/"));
            if let Some(query) = query {
                path.push('?');
                path.push_str(&query);
            }
            path
        });
    let method = prop::sample::select(
        &[
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PURGE",
        ][..],
    );
    check_property(
        "random methods and paths",
        256,
        (method, path),
        |(method, path)| {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let is_head = method == reqwest::Method::HEAD;
            let request = proxy.client.request(method, proxy.url(&path));
            let reply = runtime
                .block_on(send(request))
                .map_err(TestCaseError::fail)?;
            prop_assert!(
                reply.status < 500,
                "{} {}: {}",
                reply.status,
                path,
                short(&reply.text())
            );
            if (400..500).contains(&reply.status) && !is_head {
                openai_error(&reply)
                    .map_err(|err| TestCaseError::fail(format!("{path}: {err}")))?;
            }
            Ok(())
        },
    );
}

/// Model names that reach Codex's argv (`pass_model`) and system text that becomes one argument
/// (`-c developer_instructions=…`) must not turn into 5xx: a NUL byte cannot be in an argument, one
/// argument is at most 128 KiB on Linux, and a value starting with `-` is parsed as an option.
#[test]
fn argv_bound_input_is_refused_or_passed_never_a_5xx() {
    let runtime = runtime();
    let proxy = Proxy::start(
        &runtime,
        |env, fake| {
            format!(
                "{}{}{}",
                server_section(fake, "fallback_profile = \"fake\""),
                profile_section("fake", &env.workspace, ""),
                profile_section(
                    "pass",
                    &env.workspace,
                    "pass_model = true\nmatch = \"^pass\""
                ),
            )
        },
        &[],
    );
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            "200 KiB of system text (exec passes it as one argument)",
            json!({"model": "fake", "messages": [{"role": "system", "content": "s".repeat(200 * 1024)}, {"role": "user", "content": "hi"}]}),
        ),
        (
            "64 KiB of control characters as developer text (each quoted as 6 bytes)",
            json!({"model": "fake", "messages": [{"role": "developer", "content": "\u{1}".repeat(64 * 1024)}, {"role": "user", "content": "hi"}]}),
        ),
        (
            "a pass_model name with a NUL byte",
            json!({"model": "pass\u{0}model", "messages": user}),
        ),
        (
            "a pass_model name of 200 KiB",
            json!({"model": "pass".to_string() + &"m".repeat(200 * 1024), "messages": user}),
        ),
    ];
    let mut failures = Vec::new();
    for (what, body) in &cases {
        let reply = runtime.block_on(proxy.post(body, None)).unwrap();
        if let Err(problem) = check_chat_reply(&reply, body["model"].as_str()) {
            failures.push(format!("{what}: {problem}"));
        }
    }
    // System text that fits in one argument still works.
    let fits = json!({"model": "fake", "messages": [{"role": "system", "content": "s".repeat(100 * 1024)}, {"role": "user", "content": "hi"}]});
    let reply = runtime.block_on(proxy.post(&fits, None)).unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
    assert!(
        failures.is_empty(),
        "input turned into server errors:\n{}",
        failures.join("\n")
    );
}

/// With the real Codex CLI: a `pass_model` name that looks like an option must reach the model as a
/// model name (or be refused with a 400), never make Codex fail on its command line.
#[tokio::test]
async fn pass_model_names_never_become_codex_options() {
    let env = TestEnv::new().await;
    let config = format!(
        "{}{}",
        env.server("fallback_profile = \"pass\""),
        env.profile("pass", "pass_model = true")
    );
    let app = App::start(&env, &config).await;
    let mut failures = Vec::new();
    for model in ["-x", "--help", "--dangerously-bypass-approvals-and-sandbox"] {
        let response = app.chat(&chat_body(model, "hi")).await;
        let reply = Reply {
            status: response.status().as_u16(),
            headers: Vec::new(),
            body: response.bytes().await.unwrap().to_vec(),
        };
        match reply.status {
            200 => {
                let seen = env
                    .mock
                    .requests()
                    .last()
                    .and_then(|request| request.model());
                if seen.as_deref() != Some(model) {
                    failures.push(format!("{model}: the model received {seen:?}"));
                }
            }
            400..=499 => {
                if let Err(problem) = openai_error(&reply) {
                    failures.push(format!("{model}: {problem}"));
                }
            }
            status => failures.push(format!("{model}: {status} {}", short(&reply.text()))),
        }
    }
    assert!(
        failures.is_empty(),
        "option-like model names:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------------
// metadata.cwd

/// The directory tree of the cwd tests, under the test directory `base`:
///
/// ```text
/// root/ sub/deep/  ünïcödé/  file.txt  link-in -> sub  link-in-abs -> /…/root/sub  link-out -> ../outside
///       link-up -> ..  link-slash -> /  dangling -> missing  loop -> loop
/// root-link -> root      outside/      root-evil/   (a sibling whose name starts with "root")
/// ```
fn cwd_tree(base: &Path) -> PathBuf {
    use std::os::unix::fs::symlink;
    let root = base.join("root");
    std::fs::create_dir_all(root.join("sub").join("deep")).unwrap();
    std::fs::create_dir_all(root.join("ünïcödé")).unwrap();
    std::fs::create_dir_all(base.join("outside")).unwrap();
    std::fs::create_dir_all(base.join("root-evil")).unwrap();
    std::fs::write(root.join("file.txt"), "x").unwrap();
    symlink("sub", root.join("link-in")).unwrap();
    symlink(root.join("sub"), root.join("link-in-abs")).unwrap();
    symlink("../outside", root.join("link-out")).unwrap();
    symlink("..", root.join("link-up")).unwrap();
    symlink("/", root.join("link-slash")).unwrap();
    symlink("missing", root.join("dangling")).unwrap();
    symlink("loop", root.join("loop")).unwrap();
    symlink("root", base.join("root-link")).unwrap();
    std::fs::canonicalize(&root).unwrap()
}

/// Profiles `plain` (root `root/`) and `linked` (root `root-link`, a symlink to `root/`).
fn cwd_proxy(runtime: &tokio::runtime::Runtime) -> (Proxy, PathBuf) {
    let proxy = Proxy::start(
        runtime,
        |env, fake| {
            let root = cwd_tree(env.path());
            let link = env.path().join("root-link");
            format!(
                "{}{}{}",
                server_section(fake, ""),
                profile_section("plain", &root, ""),
                profile_section("linked", &link, ""),
            )
        },
        &[],
    );
    let root = std::fs::canonicalize(proxy.env.path().join("root")).unwrap();
    (proxy, root)
}

fn cwd_body(model: &str, cwd: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "metadata": {"cwd": cwd}})
}

#[test]
fn metadata_cwd_escapes_are_400_and_inside_paths_run_there() {
    let runtime = runtime();
    let (proxy, root) = cwd_proxy(&runtime);
    let base = proxy.env.path().to_path_buf();
    let r = root.display().to_string();
    let b = base.display().to_string();

    // (profile, requested cwd, where Codex must run)
    let inside = [
        ("plain", r.clone(), r.clone()),
        ("plain", format!("{r}/sub"), format!("{r}/sub")),
        ("plain", format!("{r}/sub/"), format!("{r}/sub")),
        ("plain", format!("{r}//sub"), format!("{r}/sub")),
        ("plain", format!("{r}/./sub"), format!("{r}/sub")),
        ("plain", format!("{r}/sub/../sub"), format!("{r}/sub")),
        ("plain", format!("{r}/sub/deep/../.."), r.clone()),
        ("plain", format!("{r}/link-in"), format!("{r}/sub")),
        ("plain", format!("{r}/link-in-abs"), format!("{r}/sub")),
        (
            "plain",
            format!("{r}/link-in/deep"),
            format!("{r}/sub/deep"),
        ),
        ("plain", format!("{r}/ünïcödé"), format!("{r}/ünïcödé")),
        ("plain", format!("{b}/root-link/sub"), format!("{r}/sub")),
        ("linked", format!("{b}/root-link"), r.clone()),
        ("linked", format!("{b}/root-link/sub"), format!("{r}/sub")),
        ("linked", format!("{r}/sub"), format!("{r}/sub")),
        (
            "linked",
            format!("{b}/root-link/link-in"),
            format!("{r}/sub"),
        ),
    ];
    for (model, cwd, expected) in &inside {
        let reply = runtime
            .block_on(proxy.post(&cwd_body(model, cwd), None))
            .unwrap();
        assert_eq!(
            reply.status,
            200,
            "{model} {cwd:?}: {}",
            short(&reply.text())
        );
        check_chat_reply(&reply, Some(model)).unwrap();
        assert_eq!(proxy.last_codex_cwd(), *expected, "{model} {cwd:?}");
    }
    // Without metadata.cwd, each profile runs in its (canonical) default_cwd.
    for model in ["plain", "linked"] {
        let reply = runtime
            .block_on(proxy.post(&chat_body(model, "hi"), None))
            .unwrap();
        assert_eq!(reply.status, 200, "{}", short(&reply.text()));
        assert_eq!(proxy.last_codex_cwd(), r);
    }

    let long_name = format!("{r}/{}", "a".repeat(300));
    let long_path = format!("{r}/{}", "sub/..".repeat(1_000));
    let outside = [
        ("plain", format!("{r}/..")),
        ("plain", format!("{r}/../outside")),
        ("plain", format!("{r}/sub/../../outside")),
        ("plain", format!("{r}/link-out")),
        ("plain", format!("{r}/link-out/..")),
        ("plain", format!("{r}/link-up")),
        ("plain", format!("{r}/link-slash")),
        ("plain", format!("{r}/link-slash/etc")),
        ("plain", format!("{r}/dangling")),
        ("plain", format!("{r}/loop")),
        ("plain", format!("{r}/file.txt")),
        ("plain", format!("{r}/file.txt/..")),
        ("plain", format!("{r}/missing")),
        ("plain", format!("{b}/root-evil")),
        ("plain", format!("{b}/outside")),
        ("plain", "/".to_string()),
        ("plain", "/dev/null".to_string()),
        ("plain", "/proc/self/cwd".to_string()),
        ("plain", "relative/path".to_string()),
        ("plain", "sub".to_string()),
        ("plain", "./sub".to_string()),
        ("plain", "../root".to_string()),
        ("plain", "~".to_string()),
        ("plain", "~/x".to_string()),
        ("plain", format!(" {r}")),
        ("plain", format!("file://{r}")),
        ("plain", format!("{r}\u{0}")),
        ("plain", format!("{r}/sub\u{0}/deep")),
        ("plain", format!("{r}/sub\n")),
        ("plain", long_name),
        ("plain", long_path),
        ("linked", format!("{b}/root-link/..")),
        ("linked", format!("{b}/root-link/../outside")),
        ("linked", format!("{b}/root-link/link-out")),
        ("linked", format!("{b}/root-evil")),
    ];
    for (model, cwd) in &outside {
        let reply = runtime
            .block_on(proxy.post(&cwd_body(model, cwd), None))
            .unwrap();
        assert_eq!(
            reply.status,
            400,
            "{model} {cwd:?}: {}",
            short(&reply.text())
        );
        let error = openai_error(&reply).unwrap();
        assert_eq!(error["param"], "metadata.cwd", "{model} {cwd:?}: {error:?}");
        assert_eq!(error["type"], "invalid_request_error");
    }
}

#[test]
fn metadata_cwd_paths_resolve_like_the_filesystem() {
    let runtime = runtime();
    let (proxy, root) = cwd_proxy(&runtime);
    let base = proxy.env.path().to_path_buf();
    let start = prop::sample::select(vec![
        root.display().to_string(),
        base.join("root-link").display().to_string(),
        base.join("root").display().to_string(),
        base.join("outside").display().to_string(),
        base.display().to_string(),
        String::new(),
        "/".to_string(),
    ]);
    let part = prop::sample::select(
        &[
            "..",
            ".",
            "",
            "sub",
            "deep",
            "link-in",
            "link-in-abs",
            "link-out",
            "link-up",
            "link-slash",
            "file.txt",
            "missing",
            "ünïcödé",
            "loop",
            "dangling",
            "root",
            "root-link",
            "root-evil",
            "outside",
        ][..],
    );
    let case = (
        prop::sample::select(&["plain", "linked"][..]),
        start,
        prop::collection::vec(part, 0..5),
    );
    check_property("metadata.cwd paths", 256, case, |(model, start, parts)| {
        let cwd = if parts.is_empty() {
            start
        } else {
            format!("{start}/{}", parts.join("/"))
        };
        let profile_root = std::fs::canonicalize(if model == "plain" {
            base.join("root")
        } else {
            base.join("root-link")
        })
        .unwrap();
        let expected = Path::new(&cwd)
            .is_absolute()
            .then(|| std::fs::canonicalize(&cwd).ok())
            .flatten()
            .filter(|path| path.is_dir() && path.starts_with(&profile_root));
        let reply = runtime
            .block_on(proxy.post(&cwd_body(model, &cwd), None))
            .map_err(TestCaseError::fail)?;
        match expected {
            Some(directory) => {
                prop_assert_eq!(reply.status, 200, "{:?}: {}", cwd, short(&reply.text()));
                check_chat_reply(&reply, Some(model)).map_err(TestCaseError::fail)?;
                prop_assert_eq!(proxy.last_codex_cwd(), directory.display().to_string());
            }
            None => {
                prop_assert_eq!(reply.status, 400, "{:?}: {}", cwd, short(&reply.text()));
                let error = openai_error(&reply).map_err(TestCaseError::fail)?;
                prop_assert_eq!(&error["param"], "metadata.cwd");
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------
// Connections: oversized bodies, slow and idle clients

/// One response read from a raw socket: the head and a `Content-Length` body.
fn parse_response(buffer: &[u8]) -> Option<Reply> {
    let end = buffer.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buffer[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(key, _)| key == "content-length")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let body = &buffer[end + 4..];
    (body.len() >= length).then(|| Reply {
        status,
        headers,
        body: body[..length].to_vec(),
    })
}

/// Writes `request` on a fresh connection and reads one response, for at most `wait`.
fn raw_exchange(proxy: &Proxy, request: &[u8], wait: Duration) -> Result<Reply, String> {
    let mut stream = proxy.connect();
    stream
        .write_all(request)
        .map_err(|err| format!("write: {err}"))?;
    read_response(&mut stream, wait)
}

fn read_response(stream: &mut TcpStream, wait: Duration) -> Result<Reply, String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut buffer = Vec::new();
    loop {
        if let Some(reply) = parse_response(&buffer) {
            return Ok(reply);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no complete response within {wait:?}; received {:?}",
                short(&String::from_utf8_lossy(&buffer))
            ));
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "the connection closed; received {:?}",
                    short(&String::from_utf8_lossy(&buffer))
                ))
            }
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(err) => return Err(format!("read: {err}")),
        }
    }
}

fn post_head(extra_headers: &str) -> String {
    format!("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra_headers}\r\n")
}

/// A valid chat body of exactly `size` bytes (padded with spaces).
fn padded_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"model":"fake","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    assert!(body.len() <= size);
    body.resize(size, b' ');
    body
}

fn chunked(body: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(chunk_size) {
        out.extend_from_slice(format!("{:X}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn expect_too_large(what: &str, reply: Result<Reply, String>) {
    let reply = reply.unwrap_or_else(|err| panic!("{what}: {err}"));
    assert_eq!(reply.status, 413, "{what}: {}", short(&reply.text()));
    let error = openai_error(&reply).unwrap_or_else(|err| panic!("{what}: {err}"));
    assert_eq!(error["code"], "request_too_large", "{what}");
    assert_eq!(error["type"], "invalid_request_error", "{what}");
}

#[test]
fn oversized_bodies_are_413_with_and_without_content_length() {
    let runtime = runtime();
    let limit = 4096;
    let proxy = Proxy::start(
        &runtime,
        |env, fake| {
            format!(
                "{}{}",
                server_section(fake, &format!("max_request_bytes = {limit}")),
                profile_section("fake", &env.workspace, ""),
            )
        },
        &[],
    );
    let wait = Duration::from_secs(10);

    // The boundary: exactly the limit is served, one byte more is not (declared and chunked).
    let reply = runtime
        .block_on(proxy.post_bytes(padded_body(limit), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
    let over = padded_body(limit + 1);
    let mut request = post_head(&format!("Content-Length: {}\r\n", over.len())).into_bytes();
    request.extend_from_slice(&over);
    expect_too_large(
        "Content-Length: limit + 1",
        raw_exchange(&proxy, &request, wait),
    );

    let mut request = post_head("Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(&chunked(&padded_body(limit), 1000));
    request.extend_from_slice(b"0\r\n\r\n");
    let reply = raw_exchange(&proxy, &request, wait).unwrap();
    assert_eq!(
        reply.status,
        200,
        "chunked, exactly the limit: {}",
        short(&reply.text())
    );

    let mut request = post_head("Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(&chunked(&over, 1000));
    request.extend_from_slice(b"0\r\n\r\n");
    expect_too_large("chunked, limit + 1", raw_exchange(&proxy, &request, wait));

    // A huge declared length is refused at once, before any body byte is sent.
    let request = post_head("Content-Length: 1000000000000\r\n");
    expect_too_large(
        "Content-Length 10^12 without a body",
        raw_exchange(&proxy, request.as_bytes(), wait),
    );
    let request = post_head("Content-Length: 1000000000\r\nExpect: 100-continue\r\n");
    expect_too_large(
        "Expect: 100-continue with 10^9 declared",
        raw_exchange(&proxy, request.as_bytes(), wait),
    );

    // Chunked without an end: refused as soon as the limit is passed.
    let mut request = post_head("Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(&chunked(&vec![b' '; 3 * 2000], 2000));
    expect_too_large(
        "chunked, unterminated",
        raw_exchange(&proxy, &request, wait),
    );
    let mut request = post_head("Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(b"FFFFFFFFFF\r\n");
    request.extend_from_slice(&[b' '; 5000]);
    expect_too_large(
        "one chunk declared 1 TiB",
        raw_exchange(&proxy, &request, wait),
    );

    // reqwest's streamed (chunked) body, the way SDKs upload.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        over.chunks(512).map(|chunk| Ok(chunk.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let request = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    expect_too_large("reqwest stream body", runtime.block_on(send(request)));

    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
}

/// Whether the server closed (or reset) a raw connection; bytes it sent meanwhile go to `received`.
fn closed(stream: &mut TcpStream, received: &mut Vec<u8>) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(read) => received.extend_from_slice(&chunk[..read]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// The client timeout the proxy is started with in the connection tests (the proposed knob).
const CLIENT_TIMEOUT_MS: &str = "1000";
/// How long the connection tests wait for the server to give up on a client.
const GIVE_UP_WAIT: Duration = Duration::from_secs(10);

#[test]
fn slow_and_idle_clients_do_not_block_others_and_are_disconnected() {
    let runtime = runtime();
    let proxy = Proxy::start(
        &runtime,
        |env, fake| {
            format!(
                "{}{}",
                server_section(fake, ""),
                profile_section("fake", &env.workspace, "")
            )
        },
        &[("CODEX_PROXY_CLIENT_TIMEOUT_MS", CLIENT_TIMEOUT_MS)],
    );
    // A slow-loris client: a partial request head, then one byte at a time.
    let mut slow = proxy.connect();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    // A client that connects and says nothing.
    let mut idle = proxy.connect();
    for _ in 0..5 {
        slow.write_all(b"a").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }

    // Others are served meanwhile.
    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
    check_chat_reply(&reply, Some("fake")).unwrap();
    assert_eq!(
        runtime.block_on(proxy.get("/health", None)).unwrap().status,
        200
    );

    // Does the server ever give up on them? Keep trickling and watch for the close.
    let started = Instant::now();
    let (mut slow_closed, mut idle_closed) = (false, false);
    let (mut slow_received, mut idle_received) = (Vec::new(), Vec::new());
    while started.elapsed() < GIVE_UP_WAIT && !(slow_closed && idle_closed) {
        if !slow_closed {
            slow_closed = slow.write_all(b"a").is_err() || closed(&mut slow, &mut slow_received);
        }
        if !idle_closed {
            idle_closed = closed(&mut idle, &mut idle_received);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        slow_closed,
        "a client trickling its request head was still connected after {GIVE_UP_WAIT:?} \
         (CODEX_PROXY_CLIENT_TIMEOUT_MS={CLIENT_TIMEOUT_MS}): the server has no header read timeout"
    );
    assert!(
        idle_closed,
        "a client that sent nothing was still connected after {GIVE_UP_WAIT:?} \
         (CODEX_PROXY_CLIENT_TIMEOUT_MS={CLIENT_TIMEOUT_MS})"
    );
    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
}

#[test]
fn a_client_that_stalls_in_its_body_gets_408_in_the_openai_shape() {
    let runtime = runtime();
    let proxy = Proxy::start(
        &runtime,
        |env, fake| {
            format!(
                "{}{}",
                server_section(fake, ""),
                profile_section("fake", &env.workspace, "")
            )
        },
        &[("CODEX_PROXY_CLIENT_TIMEOUT_MS", CLIENT_TIMEOUT_MS)],
    );
    // Complete headers, then 9 of the 100 declared body bytes, then nothing.
    let mut stalled = proxy.connect();
    stalled
        .write_all(format!("{}{{\"model\":", post_head("Content-Length: 100\r\n")).as_bytes())
        .unwrap();
    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(
        reply.status,
        200,
        "others are served meanwhile: {}",
        short(&reply.text())
    );

    let reply = read_response(&mut stalled, GIVE_UP_WAIT).unwrap_or_else(|err| {
        panic!(
            "a request whose body stalls got no answer (CODEX_PROXY_CLIENT_TIMEOUT_MS={CLIENT_TIMEOUT_MS}): {err}"
        )
    });
    assert_eq!(reply.status, 408, "{}", short(&reply.text()));
    openai_error(&reply).unwrap();
}

/// Raises this process's open-file limit (the proxy inherits it) to `wanted` or the hard limit.
fn raise_open_file_limit(wanted: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    limit.rlim_cur
}

#[test]
fn a_thousand_idle_connections_do_not_starve_a_normal_request() {
    let available = raise_open_file_limit(4096);
    assert!(available >= 2200, "the open-file limit is only {available}");
    let runtime = runtime();
    let proxy = fake_codex_proxy(&runtime);
    let mut connections = Vec::with_capacity(1000);
    for index in 0..1000 {
        let mut stream = proxy.connect();
        if index % 2 == 1 {
            stream.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
        }
        connections.push(stream);
    }
    let reply = runtime
        .block_on(proxy.post(&chat_body("fake", "hi"), None))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", short(&reply.text()));
    check_chat_reply(&reply, Some("fake")).unwrap();
    for path in ["/health", "/v1/models", "/metrics"] {
        assert_eq!(
            runtime.block_on(proxy.get(path, None)).unwrap().status,
            200,
            "{path}"
        );
    }
    // One of the half-sent requests can still be completed.
    let mut last = connections.pop().unwrap();
    last.write_all(b"st: 127.0.0.1\r\n\r\n").unwrap();
    let reply = read_response(&mut last, Duration::from_secs(10)).unwrap();
    assert_eq!(reply.status, 200);
    drop(connections);
}

// ---------------------------------------------------------------------------------------------------
// Secrets and per-profile keys

/// Profiles: `open` (no keys), `private` (its own key; alias `private-alias`, `match = "^priv-"`, and
/// the fallback when `fallback` is set) and `other` (its own key).
fn keyed_profiles(env: &TestEnv, fake: &Path, fallback: bool) -> String {
    let server_extra = format!(
        "log_level = \"debug\"\n{}",
        if fallback {
            "fallback_profile = \"private\""
        } else {
            ""
        }
    );
    format!(
        "{}{}{}{}",
        server_section(fake, &server_extra),
        profile_section("open", &env.workspace, ""),
        profile_section(
            "private",
            &env.workspace,
            &format!(
                "aliases = [\"private-alias\"]\nmatch = \"^priv-\"\napi_keys = [{}]",
                toml_str(PROFILE_KEY)
            )
        ),
        profile_section(
            "other",
            &env.workspace,
            &format!("api_keys = [{}]", toml_str(OTHER_KEY))
        ),
    )
}

/// Collects everything the clients were sent, to search it for keys at the end.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn keep(&mut self, reply: Reply) -> Reply {
        self.0.push(reply.everything());
        reply
    }

    fn assert_no_secret(&self, where_: &str, extra: &[String]) {
        for text in self.0.iter().chain(extra) {
            for secret in [SERVER_KEY, PROFILE_KEY, OTHER_KEY] {
                assert!(
                    !text.contains(secret),
                    "{secret} appears in {where_}: {}",
                    short(text)
                );
            }
        }
    }
}

fn model_ids(reply: &Reply) -> Vec<String> {
    reply.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn keys_are_enforced_on_every_route_kind_and_never_shown() {
    let runtime = runtime();
    let proxy = Proxy::start(
        &runtime,
        |env, fake| keyed_profiles(env, fake, true),
        &[("CODEX_PROXY_API_KEY", SERVER_KEY)],
    );
    let mut seen = Transcript::default();
    let post = |body: &Value, key: Option<&str>| runtime.block_on(proxy.post(body, key)).unwrap();
    let get = |path: &str, key: Option<&str>| runtime.block_on(proxy.get(path, key)).unwrap();

    // Every way a model name reaches `private`: name, alias, match, fallback (also odd spellings).
    for model in [
        "private",
        "private-alias",
        "priv-x",
        "unknown-model",
        "PRIVATE",
        "private ",
    ] {
        let body = chat_body(model, "hi");
        for (key, status) in [
            (None, 401),
            (Some("sk-wrong"), 401),
            (Some("sk-test-SECRETX"), 401),
            (Some(SERVER_KEY), 403),
            (Some(OTHER_KEY), 403),
        ] {
            let reply = seen.keep(post(&body, key));
            assert_eq!(
                reply.status,
                status,
                "{model:?} with {key:?}: {}",
                reply.text()
            );
            let error = openai_error(&reply).unwrap();
            let kind = if status == 401 {
                "authentication_error"
            } else {
                "permission_error"
            };
            assert_eq!(error["type"], kind, "{model:?} with {key:?}");
        }
        let reply = seen.keep(post(&body, Some(PROFILE_KEY)));
        assert_eq!(reply.status, 200, "{model:?}: {}", reply.text());
        check_chat_reply(&reply, Some(model)).unwrap();

        // GET /v1/models/{model} shows it only to the keys that may use it.
        let path = format!("/v1/models/{}", model.trim_end());
        for key in [SERVER_KEY, OTHER_KEY] {
            let reply = seen.keep(get(&path, Some(key)));
            assert_eq!(reply.status, 404, "{path} with {key}: {}", reply.text());
            openai_error(&reply).unwrap();
        }
        let reply = seen.keep(get(&path, Some(PROFILE_KEY)));
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    // `open` takes the server key; a profile key opens only the profiles that list it.
    let reply = seen.keep(post(&chat_body("open", "hi"), Some(SERVER_KEY)));
    assert_eq!(reply.status, 200, "{SERVER_KEY}: {}", reply.text());
    for key in [PROFILE_KEY, OTHER_KEY] {
        let reply = seen.keep(post(&chat_body("open", "hi"), Some(key)));
        assert_eq!(reply.status, 403, "{key}: {}", reply.text());
        openai_error(&reply).unwrap();
    }
    // The codex process never sees a key in its arguments or environment.
    let invocation =
        std::fs::read_to_string(proxy.env.path().join("fake-codex.invocation")).unwrap();
    assert!(invocation.contains("exec"), "{invocation}");
    seen.assert_no_secret("the fake codex's argv or environment", &[invocation]);

    // Keys in the body are not credentials, and are not echoed.
    let mut body = chat_body("open", SERVER_KEY);
    body["user"] = json!(PROFILE_KEY);
    body["metadata"] =
        json!({"api_key": OTHER_KEY, "authorization": format!("Bearer {SERVER_KEY}")});
    body["api_key"] = json!(SERVER_KEY);
    let reply = seen.keep(post(&body, None));
    assert_eq!(reply.status, 401, "{}", reply.text());
    let reply = seen.keep(post(&body, Some(SERVER_KEY)));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut private_body = body.clone();
    private_body["model"] = json!("private");
    let reply = seen.keep(post(&private_body, Some(SERVER_KEY)));
    assert_eq!(reply.status, 403, "{}", reply.text());

    // Other spellings of the header.
    for header in [
        format!("Basic {SERVER_KEY}"),
        format!("Bearer{SERVER_KEY}"),
        format!("Token {SERVER_KEY}"),
        SERVER_KEY.to_string(),
    ] {
        let request = proxy
            .client
            .post(proxy.url("/v1/chat/completions"))
            .header("authorization", header.as_str())
            .json(&chat_body("open", "hi"));
        let reply = seen.keep(runtime.block_on(send(request)).unwrap());
        assert_eq!(reply.status, 401, "{header:?}: {}", reply.text());
    }
    let request = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xffsk").unwrap(),
        )
        .json(&chat_body("open", "hi"));
    let reply = seen.keep(runtime.block_on(send(request)).unwrap());
    assert_eq!(reply.status, 401, "{}", reply.text());
    let request = proxy
        .client
        .post(proxy.url("/v1/chat/completions"))
        .header("authorization", format!("bearer   {PROFILE_KEY}  "))
        .json(&chat_body("private", "hi"));
    let reply = seen.keep(runtime.block_on(send(request)).unwrap());
    assert_eq!(reply.status, 200, "{}", reply.text());

    // /v1/models lists only what the key may use: a profile key, only its own profiles.
    let reply = seen.keep(get("/v1/models", None));
    assert_eq!(reply.status, 401);
    for (key, expected) in [
        (SERVER_KEY, vec!["open"]),
        (PROFILE_KEY, vec!["private"]),
        (OTHER_KEY, vec!["other"]),
    ] {
        let reply = seen.keep(get("/v1/models", Some(key)));
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(model_ids(&reply), expected, "{key}");
    }

    // /admin/reload takes only the server key.
    for key in [None, Some(PROFILE_KEY), Some(OTHER_KEY), Some("sk-wrong")] {
        let mut request = proxy.client.post(proxy.url("/admin/reload"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let reply = seen.keep(runtime.block_on(send(request)).unwrap());
        assert_eq!(reply.status, 401, "{key:?}: {}", reply.text());
        openai_error(&reply).unwrap();
    }

    // Broken config files that hold keys: the errors are shown, the keys are not.
    let valid = std::fs::read_to_string(&proxy.config_path).unwrap();
    let private_keys = format!("api_keys = [{}]", toml_str(PROFILE_KEY));
    for broken in [
        valid.replace(&private_keys, &format!("api_keys = [{PROFILE_KEY}]")),
        valid.replace(
            &private_keys,
            &format!("api_keys = {}", toml_str(PROFILE_KEY)),
        ),
        valid.replace(
            &private_keys,
            &format!("api_key = [{}]", toml_str(PROFILE_KEY)),
        ),
        valid.replace(
            &private_keys,
            &format!("api_keys = [{}, 5]", toml_str(PROFILE_KEY)),
        ),
        valid.replace(&private_keys, &format!("api_keys = [\"{PROFILE_KEY}")),
        format!("{valid}\n[server]\napi_keys = [{}]\n", toml_str(SERVER_KEY)),
        format!("{valid}\napi_keys = [{}]\n", toml_str(SERVER_KEY)),
    ] {
        assert_ne!(broken, valid);
        std::fs::write(&proxy.config_path, &broken).unwrap();
        let request = proxy
            .client
            .post(proxy.url("/admin/reload"))
            .bearer_auth(SERVER_KEY);
        let reply = seen.keep(runtime.block_on(send(request)).unwrap());
        assert_eq!(reply.status, 422, "{}", reply.text());
        openai_error(&reply).unwrap();
        // With keys configured, /ready and /metrics need a server key.
        let ready = seen.keep(get("/ready", Some(SERVER_KEY)));
        assert!(
            ready.json()["config"]["last_error"].is_string(),
            "{}",
            ready.text()
        );
        seen.keep(get("/metrics", Some(SERVER_KEY)));
    }
    std::fs::write(&proxy.config_path, &valid).unwrap();
    for path in ["/health", "/ready", "/metrics"] {
        for key in [None, Some(SERVER_KEY)] {
            seen.keep(get(path, key));
        }
    }
    seen.assert_no_secret("a response", &[]);
    seen.assert_no_secret("the proxy's output", &[proxy.app.output()]);
}

#[test]
fn profile_keys_without_server_keys_guard_every_route_kind() {
    let runtime = runtime();
    let proxy = Proxy::start(&runtime, |env, fake| keyed_profiles(env, fake, false), &[]);
    let mut seen = Transcript::default();
    let post = |body: &Value, key: Option<&str>| runtime.block_on(proxy.post(body, key)).unwrap();
    let get = |path: &str, key: Option<&str>| runtime.block_on(proxy.get(path, key)).unwrap();

    for model in ["private", "private-alias", "priv-x"] {
        let body = chat_body(model, "hi");
        for (key, status) in [
            (None, 401),
            (Some("sk-wrong"), 403),
            (Some(OTHER_KEY), 403),
            (Some(PROFILE_KEY), 200),
        ] {
            let reply = seen.keep(post(&body, key));
            assert_eq!(
                reply.status,
                status,
                "{model} with {key:?}: {}",
                reply.text()
            );
            if status == 200 {
                check_chat_reply(&reply, Some(model)).unwrap();
            } else {
                openai_error(&reply).unwrap();
            }
        }
        let path = format!("/v1/models/{model}");
        assert_eq!(seen.keep(get(&path, None)).status, 404, "{path}");
        assert_eq!(seen.keep(get(&path, Some(OTHER_KEY))).status, 404, "{path}");
        assert_eq!(
            seen.keep(get(&path, Some(PROFILE_KEY))).status,
            200,
            "{path}"
        );
    }
    // No fallback: an unknown name is 404, and the list of models names only what the key may use.
    let reply = seen.keep(post(&chat_body("unknown-model", "hi"), None));
    assert_eq!(reply.status, 404, "{}", reply.text());
    let message = openai_error(&reply).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("open"), "{message}");
    for hidden in ["private", "other"] {
        assert!(
            !message.contains(hidden),
            "{hidden} listed for an anonymous client: {message}"
        );
    }
    let reply = seen.keep(post(&chat_body("unknown-model", "hi"), Some(PROFILE_KEY)));
    let message = openai_error(&reply).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("private-alias") && !message.contains("other"),
        "{message}"
    );

    let reply = seen.keep(get("/v1/models", None));
    assert_eq!(model_ids(&reply), ["open"]);
    let reply = seen.keep(get("/v1/models", Some("sk-wrong")));
    assert_eq!(model_ids(&reply), ["open"]);
    let reply = seen.keep(get("/v1/models", Some(PROFILE_KEY)));
    assert_eq!(model_ids(&reply), ["open", "private"]);
    for path in ["/health", "/ready", "/metrics"] {
        seen.keep(get(path, Some(PROFILE_KEY)));
    }
    seen.assert_no_secret("a response", &[proxy.app.output()]);
}

// ---------------------------------------------------------------------------------------------------
// Config files

/// Checks what `parse` promises: no panic; an error carries problems, each with a message; a config
/// has profiles, each reachable by its own name.
fn parse_case(text: &str) -> Result<(), TestCaseError> {
    let lookup = |name: &str| (name == "SET").then(|| "value-of-set".to_string());
    match parse(
        text,
        Path::new("/hostile/config.toml"),
        &ServerOverrides::default(),
        &lookup,
    ) {
        Ok(config) => {
            prop_assert!(!config.profiles.is_empty());
            let router = codex_api_proxy::routing::Router::new(&config);
            for (index, profile) in config.profiles.iter().enumerate() {
                prop_assert!(profile.max_concurrency >= 1 && profile.workers >= 1);
                prop_assert_eq!(
                    router.route(&config, &profile.name).map(|(found, _)| found),
                    Some(index)
                );
            }
        }
        Err(errors) => {
            prop_assert!(!errors.problems.is_empty(), "an error without problems");
            for problem in &errors.problems {
                prop_assert!(!problem.message.trim().is_empty(), "{:?}", problem);
                prop_assert!(!errors.describe(problem).is_empty());
            }
            prop_assert!(!errors.to_string().is_empty());
        }
    }
    Ok(())
}

const EXAMPLE: &str = include_str!("../config.example.toml");

/// Every key the config file knows: `[server]`'s and the profiles'.
fn config_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = codex_api_proxy::config::SERVER_KEYS
        .iter()
        .chain(codex_api_proxy::config::PROFILE_KEYS)
        .copied()
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

fn toml_key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(config_keys()).prop_map(str::to_string),
        1 => "[a-z_]{1,8}",
        1 => text().prop_map(|key| toml_str(&key)),
    ]
    .boxed()
}

fn toml_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        2 => text().prop_map(|text| toml_str(&text)),
        1 => "[a-z${}~/._ -]{0,12}".prop_map(|text| format!("'{text}'")),
        1 => any::<i64>().prop_map(|number| number.to_string()),
        3 => prop::sample::select(
            &[
                "0", "-1", "1", "65536", "99999999999999999999", "1e3", "3.5", "-0.0", "inf",
                "nan", "true", "false", "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27",
                "\"exec\"", "\"app-server\"", "\"^gpt-\"", "\"(\"", "\"[\"",
                "\"a{1000}{1000}{1000}\"", "\"${SET}\"", "\"${UNSET}\"", "\"${\"", "\"~\"",
                "\"~/x\"", "\"\"", "\"relative/dir\"", "\"/\"", "\"debug\"", "\"default\"",
                "\"model_reasoning_effort=\\\"low\\\"\"",
            ][..]
        )
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec((toml_key(), inner), 0..3).prop_map(|entries| {
                let entries: Vec<String> = entries
                    .into_iter()
                    .map(|(key, value)| format!("{key} = {value}"))
                    .collect();
                format!("{{ {} }}", entries.join(", "))
            }),
        ]
    })
    .boxed()
}

/// A file of random sections (`[server]`, `[defaults]`, `[profiles.NAME]`, unknown ones) holding random
/// keys with values of random types.
fn random_config() -> BoxedStrategy<String> {
    let header = prop_oneof![
        2 => Just("[server]".to_string()),
        2 => Just("[defaults]".to_string()),
        6 => prop_oneof!["[a-z]{1,6}", text().prop_map(|name| toml_str(&name))]
            .prop_map(|name| format!("[profiles.{name}]")),
        1 => toml_key().prop_map(|key| format!("[{key}]")),
        1 => Just("[[profiles]]".to_string()),
        1 => Just("[profiles]".to_string()),
    ];
    let section = (
        header,
        prop::collection::vec((toml_key(), toml_value()), 0..6),
    )
        .prop_map(|(header, entries)| {
            let lines: Vec<String> = entries
                .into_iter()
                .map(|(key, value)| format!("{key} = {value}"))
                .collect();
            format!("{header}\n{}\n", lines.join("\n"))
        });
    prop::collection::vec(section, 0..5)
        .prop_map(|sections| sections.concat())
        .boxed()
}

#[test]
fn config_parse_survives_random_bytes() {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(any::<u8>(), 0..256)
            .prop_map(|bytes| { [b"[profiles.a]\n".as_slice(), &bytes].concat() }),
    ];
    check_property("config::parse on random bytes", 512, bytes, |bytes| {
        parse_case(&String::from_utf8_lossy(&bytes))
    });
}

#[test]
fn config_parse_survives_edits_of_the_example() {
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0..4u8);
    let edits = (
        prop::collection::vec(edit, 1..5),
        prop::option::of(any::<prop::sample::Index>()),
    );
    check_property(
        "config::parse on edited examples",
        512,
        edits,
        |(edits, truncate)| {
            let mut bytes = EXAMPLE.as_bytes().to_vec();
            for (index, byte, kind) in edits {
                if bytes.is_empty() {
                    break;
                }
                let at = index.index(bytes.len());
                match kind {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    2 => {
                        bytes.remove(at);
                    }
                    _ => {
                        // Duplicate a whole line somewhere else.
                        let start = bytes[..at]
                            .iter()
                            .rposition(|b| *b == b'\n')
                            .map_or(0, |i| i + 1);
                        let end = bytes[at..]
                            .iter()
                            .position(|b| *b == b'\n')
                            .map_or(bytes.len(), |i| at + i + 1);
                        let line = bytes[start..end].to_vec();
                        let to = (byte as usize * bytes.len()) / 256;
                        bytes.splice(to..to, line);
                    }
                }
            }
            if let Some(truncate) = truncate {
                bytes.truncate(truncate.index(bytes.len() + 1));
            }
            parse_case(&String::from_utf8_lossy(&bytes))
        },
    );
    // Every prefix of the example, cut at each line.
    let mut prefix = String::new();
    for line in EXAMPLE.split_inclusive('\n') {
        prefix.push_str(line);
        parse_case(&prefix).unwrap();
    }
}

#[test]
fn config_parse_survives_random_tables_keys_and_types() {
    check_property(
        "config::parse on random tables",
        512,
        random_config(),
        |text| parse_case(&text),
    );
}

/// The messages of config errors show the value of `fallback_profile` or `log_level`, but never the
/// keys of `api_keys`.
#[test]
fn config_errors_do_not_show_api_keys() {
    let base = format!(
        "[server]\napi_keys = [{}]\n[profiles.a]\n",
        toml_str(SERVER_KEY)
    );
    let broken = [
        format!("[server]\napi_keys = [{SERVER_KEY}]\n[profiles.a]\n"),
        format!(
            "[server]\napi_keys = {}\n[profiles.a]\n",
            toml_str(SERVER_KEY)
        ),
        format!(
            "[server]\napi_keys = [{}, 1]\n[profiles.a]\n",
            toml_str(SERVER_KEY)
        ),
        format!("[server]\napi_keys = [\"{SERVER_KEY}\n[profiles.a]\n"),
        format!("[server]\napi_keys = ['{SERVER_KEY}\n[profiles.a]\n"),
        format!("[server]\napi_keys = [\"\"\"{SERVER_KEY}]\n[profiles.a]\n"),
        format!("{base}api_keys = [{}]\nworkers = 0\n", toml_str(SERVER_KEY)),
        format!("{base}api_keys = {{ key = {} }}\n", toml_str(SERVER_KEY)),
        format!(
            "{base}api_keys = [{}]\napi_keys = []\n",
            toml_str(SERVER_KEY)
        ),
        format!(
            "[defaults]\napi_keys = {}\n[profiles.a]\n",
            toml_str(SERVER_KEY)
        ),
    ];
    let mut leaks = Vec::new();
    for text in &broken {
        let errors = parse(
            text,
            Path::new("/hostile/config.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .expect_err(text);
        let shown = errors.to_string();
        if shown.contains(SERVER_KEY) {
            leaks.push(format!("{text:?}\n  → {shown}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "config errors that show a key:\n{}",
        leaks.join("\n")
    );
}
