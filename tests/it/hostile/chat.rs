//! Chat request properties: bodies of any shape, valid bodies with random unicode, arbitrary JSON, raw
//! bytes, deep nesting, huge values, random methods and paths on every route, and input that ends up in
//! Codex's argv.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use super::strategies::{
    any_chat_body, json_value, nested, nested_chat_body, raw_chat_body, valid_chat_body,
};
use super::{check_chat_reply, check_property, fake_codex_proxy, openai_error, runtime, Proxy};
use super::{profile_section, server_section};
use crate::support;
use support::app::{chat_body, App, TestEnv};
use support::http::{send, short, Reply};

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
