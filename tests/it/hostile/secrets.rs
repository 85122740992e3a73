//! Secrets and per-profile keys: every route kind enforces the server and profile keys, and no key
//! appears in any answer, in the proxy's output, or in what the Codex process is given.

use std::path::Path;

use serde_json::{json, Value};

use super::{check_chat_reply, openai_error, runtime, Proxy};
use super::{profile_section, server_section};
use crate::support;
use support::app::{chat_body, TestEnv};
use support::fake_codex;
use support::http::{send, short, Reply};
use support::toml_text::toml_str;

/// The server-level key of the secrets tests.
const SERVER_KEY: &str = "sk-test-SECRET";
/// The key of the `private` profile.
const PROFILE_KEY: &str = "sk-profile-PRIVATE";
/// The key of the `other` profile.
const OTHER_KEY: &str = "sk-other-OTHER";

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
        std::fs::read_to_string(proxy.env.path().join(fake_codex::INSTANT_INVOCATION_FILE))
            .unwrap();
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
