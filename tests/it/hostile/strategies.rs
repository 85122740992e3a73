//! Generators of hostile request bodies: random text with the strings that broke parsers before, JSON
//! values of any shape, messages, `metadata`, chat bodies of any shape or valid ones, raw bytes and deep
//! nesting.

use proptest::prelude::*;
use proxy_test_support::props::text;
use serde_json::{json, Map, Value};

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

pub(super) fn json_value() -> BoxedStrategy<Value> {
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
pub(super) fn any_chat_body(root: String) -> BoxedStrategy<Value> {
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

/// A 1×1 PNG: image parts of valid bodies carry a `data:` image the proxy accepts.
const PNG_DATA_URL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// A valid chat body: any non-blank model (the fallback profile takes it), known roles, random
/// unicode content in strings and parts, every optional parameter with a valid value or absent,
/// unknown extra keys, a `metadata.cwd` inside the root or none.
pub(super) fn valid_chat_body(root: String) -> BoxedStrategy<Value> {
    let content = prop_oneof![
        3 => text().prop_map(Value::String),
        1 => prop::collection::vec(
            prop_oneof![
                text().prop_map(|text| json!({"type": "text", "text": text})),
                Just(json!({"type": "image_url", "image_url": {"url": PNG_DATA_URL}})),
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
            (1u32..).prop_map(|n| ("max_tokens", json!(n))),
            (1u32..).prop_map(|n| ("max_completion_tokens", json!(n))),
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
pub(super) fn raw_chat_body() -> BoxedStrategy<Vec<u8>> {
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
pub(super) fn nested(depth: usize, kind: u8) -> String {
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
pub(super) fn nested_chat_body() -> BoxedStrategy<Vec<u8>> {
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
