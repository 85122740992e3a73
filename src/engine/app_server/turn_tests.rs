//! Unit tests of the turn core: message sequences recorded from Codex 0.169.0 against the mock model
//! (`fixtures/*.jsonl`, see `examples/record_app_server_fixtures.rs`) replayed into [`AppServerTurn`].

use serde_json::json;

use super::*;

const DEFAULT: &str = include_str!("fixtures/default.jsonl");
const DELTAS: &str = include_str!("fixtures/deltas.jsonl");
const TOOLS_ON: &str = include_str!("fixtures/tools_on.jsonl");
const STATUS_500: &str = include_str!("fixtures/status_500.jsonl");
const QUOTA: &str = include_str!("fixtures/quota.jsonl");
const CONTEXT: &str = include_str!("fixtures/context.jsonl");
const MODEL_MISSING: &str = include_str!("fixtures/model_missing.jsonl");
const FAILED: &str = include_str!("fixtures/failed.jsonl");
const CUT: &str = include_str!("fixtures/cut.jsonl");
const EOF: &str = include_str!("fixtures/eof.jsonl");
const INTERRUPT: &str = include_str!("fixtures/interrupt.jsonl");
/// A turn whose model called the dynamic tool `lookup` (recorded by `tests/it/tools.rs`,
/// `direct_dynamic_tool_call_round_trip`, with `RECORD_TOOL_FIXTURE`).
const TOOL_CALL: &str = include_str!("fixtures/tool_call.jsonl");

const MOCK_REPLY: &str = "Hello from the mock model.";

/// One recorded line as the connection hands it to a turn.
fn message(line: &Value) -> ThreadMessage {
    let method = line["method"].as_str().expect("a method").to_string();
    let params = RawValue::from_string(line["params"].to_string()).unwrap();
    match line.get("id") {
        Some(id) => ThreadMessage::Request {
            id: RawValue::from_string(id.to_string()).unwrap(),
            method,
            params,
        },
        None => ThreadMessage::Notification { method, params },
    }
}

fn lines(fixture: &str) -> Vec<Value> {
    fixture
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn new_turn() -> AppServerTurn {
    AppServerTurn::new(None, Phases::new(), Duration::from_secs(7))
}

/// Feeds every line to a fresh turn and returns the steps.
fn replay(lines: &[Value]) -> (AppServerTurn, Vec<Step>) {
    let mut turn = new_turn();
    let steps = lines
        .iter()
        .filter_map(|line| turn.on_message(message(line)))
        .collect();
    (turn, steps)
}

fn deltas(steps: &[Step]) -> Vec<&str> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Emit(TurnEvent::TextDelta(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn completion(steps: &[Step]) -> &Completion {
    match steps.last() {
        Some(Step::Done(completion)) => completion,
        other => panic!("the turn did not end with Done: {other:?}"),
    }
}

fn failure(steps: &[Step]) -> &EngineError {
    match steps.last() {
        Some(Step::Fail(error)) => error,
        other => panic!("the turn did not end with Fail: {other:?}"),
    }
}

#[test]
fn a_plain_turn_streams_its_deltas_and_ends_with_text_and_usage() {
    let (_, steps) = replay(&lines(DEFAULT));
    assert_eq!(deltas(&steps).concat(), MOCK_REPLY);
    assert_eq!(steps.len(), 5, "{steps:?}");
    let done = completion(&steps);
    assert_eq!(done.text, MOCK_REPLY);
    assert_eq!(done.finish, FinishReason::Stop);
    assert_eq!(
        done.usage,
        Usage {
            prompt_tokens: 120,
            completion_tokens: 30,
            total_tokens: 150,
            cached_tokens: 20,
            reasoning_tokens: 10,
        }
    );
    assert!(done.phases.contains_key("app_server_first_delta"));
    assert!(done.phases.contains_key("app_server_turn"));
}

#[test]
fn every_delta_is_emitted_in_order() {
    let (_, steps) = replay(&lines(DELTAS));
    let deltas = deltas(&steps);
    assert_eq!(deltas.len(), 12);
    assert_eq!(deltas.concat(), MOCK_REPLY);
    assert_eq!(completion(&steps).text, MOCK_REPLY);
}

#[test]
fn a_thread_with_codex_tools_reads_the_same() {
    let (_, steps) = replay(&lines(TOOLS_ON));
    assert_eq!(completion(&steps).text, MOCK_REPLY);
}

#[test]
fn failed_turns_map_to_failure_kinds() {
    let cases = [
        (STATUS_500, FailureKind::CodexFailed, "high demand"),
        (QUOTA, FailureKind::QuotaExceeded, "Quota exceeded"),
        (
            CONTEXT,
            FailureKind::ContextLengthExceeded,
            "context window",
        ),
        (
            MODEL_MISSING,
            FailureKind::UpstreamBadRequest,
            "does not exist",
        ),
        (FAILED, FailureKind::CodexFailed, "mock model failed"),
    ];
    for (fixture, kind, text) in cases {
        let (_, steps) = replay(&lines(fixture));
        assert!(deltas(&steps).is_empty());
        let error = failure(&steps);
        assert_eq!(error.kind, kind, "{error:?}");
        assert!(error.message.contains(text), "{error:?}");
    }
}

#[test]
fn a_stream_cut_midway_fails_after_its_deltas() {
    let (_, steps) = replay(&lines(CUT));
    assert_eq!(deltas(&steps).len(), 2);
    let error = failure(&steps);
    assert_eq!(error.kind, FailureKind::CodexFailed);
    assert!(error.message.contains("stream disconnected"), "{error:?}");
}

#[test]
fn a_stream_without_response_completed_fails_even_with_a_full_message() {
    let (_, steps) = replay(&lines(EOF));
    assert_eq!(deltas(&steps).concat(), MOCK_REPLY);
    let error = failure(&steps);
    assert!(error.message.contains("response.completed"), "{error:?}");
}

#[test]
fn a_cancelled_turn_is_interrupted_and_ends_quietly() {
    let recorded = lines(INTERRUPT);
    let completed = recorded.len() - 1;
    let (mut turn, steps) = replay(&recorded[..completed]);
    assert!(steps.is_empty(), "{steps:?}");
    let turn_id = recorded[completed]["params"]["turn"]["id"]
        .as_str()
        .unwrap();
    assert_eq!(turn.turn_id(), Some(turn_id));
    let stop = turn.on_stop(Stop::Cancelled);
    assert!(
        matches!(&stop[..], [Step::Interrupt { turn_id: id }] if id == turn_id),
        "{stop:?}"
    );
    // What Codex then reports is a failed turn, should anyone still listen.
    let steps: Vec<Step> = turn
        .on_message(message(&recorded[completed]))
        .into_iter()
        .collect();
    assert!(failure(&steps).message.contains("`interrupted`"));
}

#[test]
fn a_timeout_or_a_slow_client_interrupts_and_fails() {
    let recorded = lines(INTERRUPT);
    let (mut turn, _) = replay(&recorded[..3]);
    match &turn.on_stop(Stop::TimedOut)[..] {
        [Step::Interrupt { .. }, Step::Fail(error)] => {
            assert_eq!(error.kind, FailureKind::Timeout);
            assert!(error.message.contains("timeout of 7 s"), "{error:?}");
        }
        other => panic!("{other:?}"),
    }
    match &turn.on_stop(Stop::SlowClient)[..] {
        [Step::Interrupt { .. }, Step::Fail(error)] => {
            assert_eq!(error.kind, FailureKind::Timeout);
            assert!(
                error.message.contains("did not read the stream"),
                "{error:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Before `turn/started` there is no turn id, so nothing to interrupt.
    let steps = new_turn().on_stop(Stop::TimedOut);
    assert!(matches!(&steps[..], [Step::Fail(_)]), "{steps:?}");
}

#[test]
fn without_a_final_message_the_answer_is_the_streamed_text() {
    let mut recorded = lines(DEFAULT);
    recorded.retain(|line| {
        !(line["method"] == "item/completed" && line["params"]["item"]["type"] == "agentMessage")
    });
    let last = recorded.last_mut().unwrap();
    assert_eq!(last["method"], "turn/completed");
    last["params"]["turn"]["items"] = json!([]);
    let (_, steps) = replay(&recorded);
    assert_eq!(completion(&steps).text, MOCK_REPLY);
}

#[test]
fn the_last_completed_message_wins_over_the_deltas_when_items_are_empty() {
    let mut recorded = lines(DEFAULT);
    for line in &mut recorded {
        if line["method"] == "item/completed" && line["params"]["item"]["type"] == "agentMessage" {
            line["params"]["item"]["text"] = json!("the final text");
        }
    }
    recorded.last_mut().unwrap()["params"]["turn"]["items"] = json!([]);
    let (_, steps) = replay(&recorded);
    assert_eq!(completion(&steps).text, "the final text");
}

#[test]
fn commentary_deltas_are_not_part_of_the_answer() {
    let mut recorded = lines(DEFAULT);
    for line in &mut recorded {
        if line["method"] == "item/started" && line["params"]["item"]["type"] == "agentMessage" {
            line["params"]["item"]["phase"] = json!("commentary");
        }
    }
    let (_, steps) = replay(&recorded);
    assert!(deltas(&steps).is_empty(), "{steps:?}");
}

#[test]
fn server_requests_are_answered_at_once() {
    // Shapes from `ServerRequest.json` of the schema: the mock model cannot make Codex ask.
    let recorded = lines(DEFAULT);
    let thread = recorded[0]["params"]["threadId"].clone();
    let requests = [
        json!({"id": 0, "method": "item/tool/call", "params": {"threadId": thread, "turnId": "t", "callId": "c", "tool": "f", "arguments": {}}}),
        json!({"id": 1, "method": "item/commandExecution/requestApproval", "params": {"threadId": thread, "turnId": "t", "itemId": "i"}}),
        json!({"id": "two", "method": "currentTime/read", "params": {"threadId": thread}}),
    ];
    let mut turn = new_turn();
    let answers: Vec<Step> = requests
        .iter()
        .filter_map(|request| turn.on_message(message(request)))
        .collect();
    match &answers[..] {
        [Step::Answer {
            id: a,
            reply: Ok(tool),
        }, Step::Answer {
            id: b,
            reply: Ok(approval),
        }, Step::Answer {
            id: c,
            reply: Err((code, _)),
        }] => {
            assert_eq!((a.get(), b.get(), c.get()), ("0", "1", "\"two\""));
            assert_eq!(tool["success"], false);
            assert_eq!(approval["decision"], "decline");
            assert_eq!(*code, -32601);
        }
        other => panic!("{other:?}"),
    }
    // The turn goes on as before.
    let steps: Vec<Step> = recorded
        .iter()
        .filter_map(|line| turn.on_message(message(line)))
        .collect();
    assert_eq!(completion(&steps).text, MOCK_REPLY);
}

#[test]
fn a_lost_worker_fails_the_turn_with_the_reason() {
    let error = new_turn().on_closed(Some("the worker broke".into()));
    assert_eq!(error.kind, FailureKind::CodexFailed);
    assert!(error
        .message
        .starts_with("the worker broke; the turn was lost"));
    let error = new_turn().on_closed(None);
    assert!(error.message.contains("exited during the turn"));
}

#[test]
fn malformed_params_are_ignored() {
    let mut turn = new_turn();
    for method in [
        "turn/started",
        "item/started",
        "item/agentMessage/delta",
        "thread/tokenUsage/updated",
    ] {
        let params = RawValue::from_string("[1, \"x\"]".to_string()).unwrap();
        assert!(turn.on_notification(method, &params).is_none(), "{method}");
    }
    assert_eq!(turn.turn_id(), None);
}

#[test]
fn a_client_tool_call_ends_the_turn_with_tool_calls() {
    let recorded = lines(TOOL_CALL);
    let at = recorded
        .iter()
        .position(|line| line["method"] == "item/tool/call")
        .expect("the fixture has a tool call");
    let mut turn = new_turn().with_client_tools(["lookup".to_string()]);
    let steps: Vec<Step> = recorded[..=at]
        .iter()
        .filter_map(|line| turn.on_message(message(line)))
        .collect();
    let turn_id = recorded[at]["params"]["turnId"].as_str().unwrap();
    match &steps[..] {
        [Step::ToolCall {
            call,
            interrupt,
            id,
            reply,
        }] => {
            assert_eq!(call.call_id, "call_mock_1_0");
            assert_eq!(call.name, "lookup");
            assert_eq!(call.arguments, r#"{"word":"otter"}"#);
            assert_eq!(interrupt.as_deref(), Some(turn_id));
            assert_eq!(id.get(), recorded[at]["id"].to_string());
            assert_eq!(reply["success"], false);
        }
        other => panic!("{other:?}"),
    }
    // A second call of the same turn is returned too, without a second interrupt.
    let mut second = recorded[at].clone();
    second["id"] = json!(77);
    second["params"]["callId"] = json!("call_two");
    match turn.on_message(message(&second)) {
        Some(Step::ToolCall {
            call, interrupt, ..
        }) => {
            assert_eq!(call.call_id, "call_two");
            assert!(interrupt.is_none());
        }
        other => panic!("{other:?}"),
    }
    // The interrupted turn completes as a tool-call answer, with the usage Codex reported.
    let usage = recorded
        .iter()
        .find(|line| line["method"] == "thread/tokenUsage/updated")
        .unwrap();
    assert!(turn.on_message(message(usage)).is_none());
    let mut completed = recorded.last().unwrap().clone();
    completed["params"]["turn"]["status"] = json!("interrupted");
    completed["params"]["turn"]["items"] = json!([]);
    let steps: Vec<Step> = turn.on_message(message(&completed)).into_iter().collect();
    let done = completion(&steps);
    assert_eq!(done.finish, FinishReason::ToolCalls);
    assert_eq!(done.tool_calls.len(), 2);
    assert_eq!(done.text, "");
    assert_eq!(done.usage.prompt_tokens, 120);
}

#[test]
fn a_call_of_an_undeclared_tool_is_refused() {
    let recorded = lines(TOOL_CALL);
    let call = recorded
        .iter()
        .find(|line| line["method"] == "item/tool/call")
        .unwrap();
    let mut turn = new_turn().with_client_tools(["other".to_string()]);
    match turn.on_message(message(call)) {
        Some(Step::Answer {
            reply: Ok(reply), ..
        }) => assert_eq!(reply["success"], false),
        other => panic!("{other:?}"),
    }
}

/// A notification or server request, as the connection hands it to a turn.
fn raw(method: &str, params: Value, id: Option<u64>) -> ThreadMessage {
    let params = RawValue::from_string(params.to_string()).unwrap();
    match id {
        Some(id) => ThreadMessage::Request {
            id: RawValue::from_string(id.to_string()).unwrap(),
            method: method.to_string(),
            params,
        },
        None => ThreadMessage::Notification {
            method: method.to_string(),
            params,
        },
    }
}

#[test]
fn parallel_calls_are_complete_when_every_raw_call_has_its_request() {
    let mut turn = AppServerTurn::new(Some("t".into()), Phases::new(), Duration::from_secs(7))
        .with_client_tools(["lookup".to_string(), "weather".to_string()]);
    let item = |call_id: &str, name: &str| json!({"item": {"type": "function_call", "call_id": call_id, "name": name, "arguments": "{}"}});
    let request = |call_id: &str, name: &str| json!({"threadId": "th", "turnId": "t", "callId": call_id, "tool": name, "arguments": {}});
    turn.on_message(raw("rawResponseItem/completed", item("c1", "lookup"), None));
    assert!(turn
        .on_message(raw("item/tool/call", request("c1", "lookup"), Some(1)))
        .is_some());
    turn.on_message(raw(
        "rawResponseItem/completed",
        item("c2", "weather"),
        None,
    ));
    let usage = json!({"usage": {"inputTokens": 120, "cachedInputTokens": 20, "outputTokens": 30,
                                 "reasoningOutputTokens": 10, "totalTokens": 150}});
    // The response ended, but the second call's request has not arrived yet.
    assert!(turn
        .on_message(raw("rawResponse/completed", usage, None))
        .is_none());
    assert!(!turn.calls_complete());
    turn.on_message(raw("item/tool/call", request("c2", "weather"), Some(2)));
    assert!(turn.calls_complete());
    let returned = turn.returned_calls();
    assert_eq!(returned.tool_calls.len(), 2);
    assert_eq!(returned.finish, FinishReason::ToolCalls);
    assert_eq!(returned.usage.prompt_tokens, 120);
    assert_eq!(returned.usage.total_tokens, 150);
    // Resumed: a new response, counted from zero.
    turn.resume(Phases::new());
    assert!(!turn.calls_complete());
    assert!(turn.tool_calls().is_empty());
}

#[test]
fn calls_are_returned_in_the_models_order_whatever_order_their_requests_come_in() {
    let mut turn = AppServerTurn::new(Some("t".into()), Phases::new(), Duration::from_secs(7))
        .with_client_tools(["lookup".to_string(), "weather".to_string()]);
    let item = |call_id: &str, name: &str| json!({"item": {"type": "function_call", "call_id": call_id, "name": name, "arguments": "{}"}});
    let request = |call_id: &str, name: &str| json!({"threadId": "th", "turnId": "t", "callId": call_id, "tool": name, "arguments": {}});
    turn.on_message(raw("rawResponseItem/completed", item("c1", "lookup"), None));
    turn.on_message(raw(
        "rawResponseItem/completed",
        item("c2", "weather"),
        None,
    ));
    turn.on_message(raw("item/tool/call", request("c2", "weather"), Some(1)));
    turn.on_message(raw("item/tool/call", request("c1", "lookup"), Some(2)));
    turn.on_message(raw("rawResponse/completed", json!({}), None));
    assert!(turn.calls_complete());
    let ids: Vec<String> = turn
        .returned_calls()
        .tool_calls
        .into_iter()
        .map(|call| call.call_id)
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
}

#[test]
fn a_stop_sequence_interrupts_the_turn_and_cuts_the_answer() {
    let mut turn = AppServerTurn::new(Some("t1".into()), Phases::new(), Duration::from_secs(7))
        .with_limits(&["END".to_string()], None);
    let delta = |text: &str| {
        json!({"method": "item/agentMessage/delta",
               "params": {"threadId": "th", "turnId": "t1", "itemId": "m1", "delta": text}})
    };
    let reasoning = json!({"method": "item/reasoning/summaryTextDelta",
        "params": {"threadId": "th", "turnId": "t1", "itemId": "r1", "delta": "Hmm", "summaryIndex": 0}});
    let mut steps: Vec<Step> = Vec::new();
    for line in [reasoning, delta("one E"), delta("ND two")] {
        steps.extend(turn.on_message(message(&line)));
        if turn.take_limit_interrupt().is_some() {
            assert_eq!(deltas(&steps).concat(), "one ", "{steps:?}");
        }
    }
    assert!(matches!(&steps[0], Step::Emit(TurnEvent::ReasoningDelta(text)) if text == "Hmm"));
    assert_eq!(deltas(&steps).concat(), "one ");
    assert_eq!(turn.take_limit_interrupt(), None, "asked once only");
    let completed = json!({"method": "turn/completed", "params": {"threadId": "th",
        "turn": {"id": "t1", "status": "interrupted", "error": null, "items": []}}});
    steps.extend(turn.on_message(message(&completed)));
    let done = completion(&steps);
    assert_eq!(done.text, "one ");
    assert_eq!(done.reasoning, "Hmm");
    assert_eq!(done.finish, FinishReason::StopSequence(0));
}
