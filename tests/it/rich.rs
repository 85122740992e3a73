//! End-to-end: the rest of the chat-completions request on both engines, with the real Codex CLI and
//! the mock model: `reasoning_effort` and reasoning summaries (`reasoning_content`), `stop` and
//! `max_tokens` / `max_completion_tokens`.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::app::{chat_body, App, TestEnv};

const ENGINES: [&str; 2] = ["exec", "app-server"];

/// A proxy with one profile `p` on `engine`, with `extra` profile lines.
async fn start(env: &TestEnv, engine: &str, extra: &str) -> App {
    App::start(
        env,
        &format!(
            "{}{}",
            env.server(""),
            env.profile("p", &format!("engine = \"{engine}\"\n{extra}"))
        ),
    )
    .await
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

#[tokio::test]
async fn reasoning_effort_reaches_the_model_and_overrides_fast() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "fast = true").await;
        let body = with(chat_body("p", "hi"), "reasoning_effort", json!("high"));
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 200, "{engine}: {answer}");
        let request = &env.mock.requests()[0].body;
        assert_eq!(
            request.pointer("/reasoning/effort").and_then(Value::as_str),
            Some("high"),
            "{engine}: {request}"
        );
        // Without it, the profile's `fast` applies.
        assert_eq!(app.chat_json(&chat_body("p", "hi")).await.0, 200);
        let request = &env.mock.requests()[1].body;
        assert_eq!(
            request.pointer("/reasoning/effort").and_then(Value::as_str),
            Some("low"),
            "{engine}: {request}"
        );
    }
}

#[tokio::test]
async fn an_unknown_reasoning_effort_is_a_400_naming_it() {
    let env = TestEnv::new().await;
    let app = start(&env, "exec", "").await;
    for effort in [json!("extreme\" -c x=1"), json!(3)] {
        let body = with(chat_body("p", "hi"), "reasoning_effort", effort);
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["param"], "reasoning_effort", "{answer}");
    }
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn reasoning_summaries_come_back_as_reasoning_content() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "reasoning_summary = \"concise\"").await;
        let prompt = "mock:reasoning=Thinking_it_over mock:reply=Done_thinking";
        let (status, answer) = app.chat_json(&chat_body("p", prompt)).await;
        assert_eq!(status, 200, "{engine}: {answer}");
        let message = &answer["choices"][0]["message"];
        assert_eq!(message["content"], "Done thinking", "{engine}: {answer}");
        assert_eq!(message["reasoning_content"], "Thinking it over", "{engine}");
        assert_eq!(
            answer["usage"]["completion_tokens_details"]["reasoning_tokens"],
            support::mock_model::USAGE_REASONING_TOKENS
        );
        let request = &env.mock.requests()[0].body;
        assert_eq!(
            request
                .pointer("/reasoning/summary")
                .and_then(Value::as_str),
            Some("concise"),
            "{engine}: {request}"
        );

        let body = with(chat_body("p", prompt), "stream", json!(true));
        let transcript = App::sse(app.chat(&body).await).await;
        let reasoning: Vec<String> = transcript
            .chunks()
            .iter()
            .filter_map(|chunk| {
                chunk
                    .pointer("/choices/0/delta/reasoning_content")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(reasoning.concat(), "Thinking it over", "{engine}");
        if engine == "app-server" {
            // The summary streams as the model writes it: in the mock's two deltas.
            assert_eq!(reasoning.len(), 2, "{reasoning:?}");
        }
        assert_eq!(transcript.content(), "Done thinking");
        assert!(transcript.done());
    }
}

#[tokio::test]
async fn the_default_profile_asks_for_no_summaries() {
    let env = TestEnv::new().await;
    let app = start(&env, "app-server", "").await;
    assert_eq!(app.chat_json(&chat_body("p", "hi")).await.0, 200);
    let request = &env.mock.requests()[0].body;
    assert_ne!(
        request
            .pointer("/reasoning/summary")
            .and_then(Value::as_str),
        Some("auto"),
        "{request}"
    );
}

/// The finish reason of the last choice chunk.
fn finish_reason(chunks: &[Value]) -> Option<String> {
    chunks.iter().rev().find_map(|chunk| {
        chunk
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

#[tokio::test]
async fn stop_across_a_delta_boundary_is_never_sent_and_interrupts_the_turn() {
    let env = TestEnv::new().await;
    let app = start(&env, "app-server", "").await;
    // Ten deltas of two characters 150 ms apart: "ab", "cS", "TO", "Pd", …; the stop spans three.
    let prompt = "mock:reply=abcSTOPdefghijklmn mock:deltas=10 mock:delay_ms=150";
    let body = with(
        with(chat_body("p", prompt), "stream", json!(true)),
        "stop",
        json!(["STOP", "zz"]),
    );
    let transcript = App::sse(app.chat(&body).await).await;
    let chunks = transcript.chunks();
    assert_eq!(transcript.content(), "abc", "{:?}", transcript.data);
    for data in &transcript.data {
        assert!(!data.contains("\"content\":\"cS"), "{data}");
    }
    assert_eq!(finish_reason(&chunks).as_deref(), Some("stop"));
    assert!(transcript.done());
    // The turn was interrupted: Codex dropped the model stream before its end.
    assert!(env.mock.wait_for_idle(Duration::from_secs(10)).await);
    assert_eq!(env.mock.streams_cancelled(), 1);

    // A plain response, and exec (which cuts the whole answer).
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "").await;
        let body = with(
            chat_body("p", "mock:reply=one,two,three mock:deltas=3"),
            "stop",
            json!(","),
        );
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["choices"][0]["message"]["content"], "one");
        assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    }
}

#[tokio::test]
async fn bad_stop_values_are_400s() {
    let env = TestEnv::new().await;
    let app = start(&env, "exec", "").await;
    for (stop, param) in [
        (json!(["a", "b", "c", "d", "e"]), "stop"),
        (json!([1]), "stop[0]"),
        (json!({"s": 1}), "stop"),
    ] {
        let body = with(chat_body("p", "hi"), "stop", stop);
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
    }
    // An empty list asks for nothing.
    let body = with(chat_body("p", "hi"), "stop", json!([]));
    assert_eq!(app.chat_json(&body).await.0, 200);
}

#[tokio::test]
async fn max_tokens_cuts_the_answer_with_finish_reason_length() {
    let reply = "one_two_three_four_five_six_seven_eight_nine_ten";
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "").await;
        let prompt = format!("mock:reply={reply} mock:deltas=10");
        for limit in ["max_tokens", "max_completion_tokens"] {
            let body = with(chat_body("p", &prompt), limit, json!(3));
            let (status, answer) = app.chat_json(&body).await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(
                answer["choices"][0]["message"]["content"], "one two three",
                "{engine}"
            );
            assert_eq!(answer["choices"][0]["finish_reason"], "length");
        }
        let body = with(
            with(chat_body("p", &prompt), "stream", json!(true)),
            "max_tokens",
            json!(4),
        );
        let transcript = App::sse(app.chat(&body).await).await;
        assert_eq!(transcript.content(), "one two three four", "{engine}");
        assert_eq!(
            finish_reason(&transcript.chunks()).as_deref(),
            Some("length")
        );
        // A limit the answer stays within changes nothing.
        let body = with(chat_body("p", &prompt), "max_tokens", json!(100));
        let (_, answer) = app.chat_json(&body).await;
        assert_eq!(answer["choices"][0]["finish_reason"], "stop");
        let body = with(chat_body("p", "hi"), "max_tokens", json!(0));
        assert_eq!(app.chat_json(&body).await.0, 400);
    }
}

/// A `response_format` of type `json_schema` for a city and its temperature.
fn weather_format(strict: bool) -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": "weather",
            "strict": strict,
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
                "required": ["city", "temp"],
                "additionalProperties": false,
            },
        },
    })
}

#[tokio::test]
async fn a_json_schema_reaches_the_model_and_the_answer_round_trips() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "").await;
        let prompt = r#"mock:json={"city":"Paris","temp":21}"#;
        let body = with(
            chat_body("p", prompt),
            "response_format",
            weather_format(true),
        );
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 200, "{engine}: {answer}");
        let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
        let parsed: Value = serde_json::from_str(content).unwrap();
        assert_eq!(parsed, json!({"city": "Paris", "temp": 21}));
        let request = &env.mock.requests()[0].body;
        let format = request.pointer("/text/format").expect("a text format");
        assert_eq!(format["type"], "json_schema", "{engine}: {request}");
        assert_eq!(
            format["schema"],
            weather_format(true)["json_schema"]["schema"],
            "{engine}"
        );

        // Streamed: the checked answer arrives whole.
        let body = with(body, "stream", json!(true));
        let transcript = App::sse(app.chat(&body).await).await;
        assert_eq!(transcript.content(), content, "{engine}");
        assert!(transcript.done());
    }
}

#[tokio::test]
async fn a_strict_mismatch_is_a_502_quoting_the_validation_error() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "").await;
        let prompt = r#"mock:json={"city":"Paris","temp":"warm"}"#;
        let body = with(
            chat_body("p", prompt),
            "response_format",
            weather_format(true),
        );
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 502, "{engine}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_model_output");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("/temp"), "{message}");
        // Not strict: any JSON passes.
        let body = with(
            chat_body("p", prompt),
            "response_format",
            weather_format(false),
        );
        assert_eq!(app.chat_json(&body).await.0, 200, "{engine}");
        // Streamed: the error goes in-band and no content was sent.
        let body = with(
            with(
                chat_body("p", prompt),
                "response_format",
                weather_format(true),
            ),
            "stream",
            json!(true),
        );
        let transcript = App::sse(app.chat(&body).await).await;
        assert_eq!(transcript.content(), "");
        assert!(transcript
            .data
            .iter()
            .any(|data| data.contains("invalid_model_output")));
    }
}

#[tokio::test]
async fn json_object_asks_for_an_object_and_checks_it() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "").await;
        let format = json!({"type": "json_object"});
        let body = with(
            chat_body("p", r#"mock:json={"a":1}"#),
            "response_format",
            format.clone(),
        );
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 200, "{engine}: {answer}");
        assert_eq!(answer["choices"][0]["message"]["content"], r#"{"a":1}"#);
        let request = env.mock.requests()[0].text();
        assert!(request.contains("Answer with one JSON object"), "{engine}");
        for reply in ["mock:reply=plain_words", "mock:json=[1,2]"] {
            let body = with(chat_body("p", reply), "response_format", format.clone());
            let (status, answer) = app.chat_json(&body).await;
            assert_eq!(status, 502, "{engine} {reply}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_model_output");
        }
    }
}

#[tokio::test]
async fn schemas_strict_mode_cannot_carry_are_400s_naming_the_path() {
    let env = TestEnv::new().await;
    let app = start(&env, "app-server", "").await;
    let cases = [
        (
            json!({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}}),
            "response_format.json_schema.schema.properties.a.allOf",
        ),
        (
            json!({"type": "array"}),
            "response_format.json_schema.schema",
        ),
    ];
    for (schema, param) in cases {
        let format = json!({"type": "json_schema", "json_schema": {"name": "s", "schema": schema}});
        let body = with(chat_body("p", "hi"), "response_format", format);
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
    }
    // A schema that is only missing the strict details is adapted: optional becomes nullable.
    let format = json!({"type": "json_schema", "json_schema": {"name": "s", "schema":
        {"type": "object", "properties": {"a": {"type": "string"}}}}});
    let body = with(
        chat_body("p", r#"mock:json={"a":null}"#),
        "response_format",
        format,
    );
    let (status, answer) = app.chat_json(&body).await;
    assert_eq!(status, 200, "{answer}");
    let schema = &env.mock.requests()[0].body["text"]["format"]["schema"];
    assert_eq!(schema["additionalProperties"], json!(false), "{schema}");
    assert_eq!(schema["required"], json!(["a"]), "{schema}");
    assert_eq!(env.mock.request_count(), 1);
}

#[tokio::test]
async fn the_openai_python_sdk_parses_into_a_pydantic_model() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "").await;
        let stdout = support::run_python(
            "test_structured_openai.py",
            &[("PROXY_URL", app.url("/v1")), ("MODEL", "p".to_string())],
            Duration::from_secs(120),
        )
        .await;
        let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
        assert_eq!(
            report["parsed"],
            json!({"city": "Paris", "temp": 21}),
            "{engine}"
        );
        assert_eq!(report["streamed"], report["parsed"], "{engine}");
        assert_eq!(report["json_object"], json!({"ok": true}), "{engine}");
        // The SDK's strict schema of the Pydantic model reached the model as it was sent.
        let format = &env.mock.requests()[0].body["text"]["format"];
        assert_eq!(
            format["schema"]["required"],
            json!(["city", "temp"]),
            "{format}"
        );
    }
}

/// A 1×1 PNG.
const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

fn image_message(text: &str, url: &str) -> Value {
    json!({"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": url}},
    ]})
}

/// The `image_url`s of the `input_image` parts of a model request.
fn input_images(body: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for item in body["input"].as_array().into_iter().flatten() {
        for part in item["content"].as_array().into_iter().flatten() {
            if part["type"] == "input_image" {
                found.push(part["image_url"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn a_data_url_image_reaches_the_model_on_both_engines() {
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "").await;
        // An image in the history and one in the last message.
        let body = json!({"model": "p", "messages": [
            image_message("first picture", PNG),
            {"role": "assistant", "content": "A dot."},
            image_message("and this one?", PNG),
        ]});
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 200, "{engine}: {answer}");
        let request = &env.mock.requests()[0].body;
        let images = input_images(request);
        assert_eq!(images.len(), 2, "{engine}: {request}");
        for image in images {
            assert!(image.starts_with("data:image/"), "{engine}: {image}");
        }
        assert!(env.mock.requests()[0].text().contains("and this one?"));
    }
}

#[tokio::test]
async fn remote_and_private_address_image_urls_are_refused_unfetched() {
    let env = TestEnv::new().await;
    let app = start(&env, "app-server", "").await;
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:1/x.png",
        "https://10.0.0.1/x.png",
        "file:///etc/passwd",
        "data:image/svg+xml;base64,PHN2Zz4=",
    ] {
        let body = json!({"model": "p", "messages": [image_message("look", url)]});
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 400, "{url}: {answer}");
        assert_eq!(
            answer["error"]["param"], "messages[0].content[1].image_url.url",
            "{answer}"
        );
    }
    let many: Vec<Value> = (0..17)
        .map(|_| json!({"type": "image_url", "image_url": {"url": PNG}}))
        .collect();
    let body = json!({"model": "p", "messages": [{"role": "user", "content": many}]});
    let (status, answer) = app.chat_json(&body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 16"));
    assert_eq!(env.mock.request_count(), 0);
}

#[tokio::test]
async fn n_choices_run_in_parallel_plain_and_streamed() {
    use support::mock_model::{USAGE_INPUT_TOKENS, USAGE_OUTPUT_TOKENS};
    for engine in ENGINES {
        let env = TestEnv::new().await;
        let app = start(&env, engine, "max_concurrency = 3").await;
        let body = with(chat_body("p", "mock:reply=Same_answer"), "n", json!(3));
        let (status, answer) = app.chat_json(&body).await;
        assert_eq!(status, 200, "{engine}: {answer}");
        let choices = answer["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3, "{answer}");
        for (index, choice) in choices.iter().enumerate() {
            assert_eq!(choice["index"], index);
            assert_eq!(choice["message"]["content"], "Same answer");
            assert_eq!(choice["finish_reason"], "stop");
        }
        assert_eq!(answer["usage"]["prompt_tokens"], 3 * USAGE_INPUT_TOKENS);
        assert_eq!(
            answer["usage"]["completion_tokens"],
            3 * USAGE_OUTPUT_TOKENS
        );
        assert_eq!(env.mock.request_count(), 3);

        let mut body = with(body, "stream", json!(true));
        body["stream_options"] = json!({"include_usage": true});
        let transcript = App::sse(app.chat(&body).await).await;
        assert!(transcript.done());
        let chunks = transcript.chunks();
        let id = chunks[0]["id"].clone();
        let mut content = [String::new(), String::new(), String::new()];
        let mut finished = 0;
        for chunk in &chunks {
            assert_eq!(chunk["id"], id);
            let Some(choice) = chunk["choices"].get(0) else {
                continue;
            };
            let index = choice["index"].as_u64().unwrap() as usize;
            if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
                content[index].push_str(text);
            }
            if choice["finish_reason"] == "stop" {
                finished += 1;
            }
        }
        assert_eq!(
            content,
            ["Same answer", "Same answer", "Same answer"],
            "{engine}"
        );
        assert_eq!(finished, 3);
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(
            usage["completion_tokens"],
            3 * USAGE_OUTPUT_TOKENS,
            "{usage}"
        );
    }
}

#[tokio::test]
async fn n_beyond_what_the_profile_can_ever_admit_is_a_400() {
    let env = TestEnv::new().await;
    let app = start(
        &env,
        "app-server",
        "max_concurrency = 1\nmax_queue_size = 1",
    )
    .await;
    let body = with(chat_body("p", "hi"), "n", json!(3));
    let (status, answer) = app.chat_json(&body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["param"], "n");
    assert_eq!(env.mock.request_count(), 0);
    // Two fit: one runs, one waits in the queue.
    let body = with(chat_body("p", "hi"), "n", json!(2));
    let (status, answer) = app.chat_json(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"].as_array().unwrap().len(), 2);
}
