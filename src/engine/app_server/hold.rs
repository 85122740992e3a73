//! Held turns: a turn that returned client tool calls stays open on its worker, its `item/tool/call`
//! server requests unanswered, until the client's next request brings their results (the turn then
//! goes on: no replay, the model's prompt cache stays warm), or until `tool_call_timeout_seconds`.
//!
//! [`HeldTurns`] is one pool's registry of them, keyed by the turn's call ids. A request continues a
//! held turn when its trailing `tool` messages answer exactly the held calls and everything before them
//! is the held conversation plus the answer that returned the calls ([`Expected::outputs_of`], a pure
//! function). Whoever removes an entry from the registry owns its end: a continuation that takes it
//! hands the held turn its request ([`Resume`]); a held turn whose timeout passes, or whose worker
//! died, removes itself and ends. Anything that does not match is continued by replay.
//!
//! A held turn holds no admission permit: it gave its slot back when it returned the calls, and the
//! continuation is admitted like any request before it takes the turn over (and its permit with it).
//! So a held turn can never keep the client that must send its results from being admitted; the
//! number of held turns is bounded per profile by `max_held_turns` instead.

use std::collections::HashMap;
use std::path::PathBuf;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::engine::Job;
use crate::turn::{Item, OutputFormat, Role, Tool, ToolCall, ToolChoice, TurnEvent, TurnRequest};

/// What a request must repeat, before its tool results, to continue a held turn.
#[derive(Debug, Clone)]
pub struct Expected {
    instructions: Option<String>,
    tools: Vec<Tool>,
    tool_choice: ToolChoice,
    output: Option<OutputFormat>,
    reasoning_effort: Option<String>,
    model: Option<String>,
    cwd: PathBuf,
    /// The conversation that started the response, then the assistant's text and calls.
    items: Vec<Item>,
    /// The held calls' ids, in the model's order.
    call_ids: Vec<String>,
}

impl Expected {
    /// The conversation of `job` followed by the response that returned `calls` after `text`.
    pub fn new(job: &Job, text: &str, calls: &[ToolCall]) -> Expected {
        let request = &job.request;
        let mut items = request.items.clone();
        if !text.is_empty() {
            items.push(Item::text(Role::Assistant, text));
        }
        items.extend(calls.iter().map(|call| Item::ToolCall {
            call_id: call.call_id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        }));
        Expected {
            instructions: request.instructions.clone(),
            tools: request.tools.clone(),
            tool_choice: request.tool_choice.clone(),
            output: request.output.clone(),
            reasoning_effort: request.reasoning_effort.clone(),
            model: job.model.clone(),
            cwd: job.cwd.clone(),
            items,
            call_ids: calls.iter().map(|call| call.call_id.clone()).collect(),
        }
    }

    /// The registry key: the held call ids.
    fn key(&self) -> String {
        key_of(self.call_ids.iter().map(String::as_str))
    }

    /// The outputs for the held calls, in the held calls' order, when `job` continues this
    /// conversation; `None` when it does not (it is then replayed).
    ///
    /// Arguments are compared as JSON values when both parse (frameworks re-serialise them, with other
    /// spacing); everything else must be equal.
    pub fn outputs_of(&self, job: &Job) -> Option<Vec<String>> {
        let request = &job.request;
        let results = request.trailing_tool_results();
        let earlier = &request.items[..request.items.len() - results.len()];
        let same_setting = request.instructions == self.instructions
            && request.tools == self.tools
            && request.tool_choice == self.tool_choice
            && request.output == self.output
            && request.reasoning_effort == self.reasoning_effort
            && job.model == self.model
            && job.cwd == self.cwd;
        if !same_setting
            || results.len() != self.call_ids.len()
            || earlier.len() != self.items.len()
        {
            return None;
        }
        if !earlier
            .iter()
            .zip(&self.items)
            .all(|(sent, held)| same_item(sent, held))
        {
            return None;
        }
        let mut outputs: HashMap<&str, &str> = HashMap::new();
        for result in results {
            if let Item::ToolResult {
                call_id, output, ..
            } = result
            {
                if outputs.insert(call_id, output).is_some() {
                    return None;
                }
            }
        }
        self.call_ids
            .iter()
            .map(|id| outputs.get(id.as_str()).map(|output| output.to_string()))
            .collect()
    }
}

/// Whether a sent item is the held one (arguments compared as JSON when both parse).
fn same_item(sent: &Item, held: &Item) -> bool {
    match (sent, held) {
        (
            Item::ToolCall {
                call_id,
                name,
                arguments,
            },
            Item::ToolCall {
                call_id: held_id,
                name: held_name,
                arguments: held_arguments,
            },
        ) => {
            call_id == held_id
                && name == held_name
                && (arguments == held_arguments
                    || matches!(
                        (
                            serde_json::from_str::<Value>(arguments),
                            serde_json::from_str::<Value>(held_arguments),
                        ),
                        (Ok(a), Ok(b)) if a == b
                    ))
        }
        _ => sent == held,
    }
}

/// The registry key of a set of call ids (order does not matter).
fn key_of<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let mut ids: Vec<&str> = ids.collect();
    ids.sort_unstable();
    ids.join("\n")
}

/// What a continuation hands the held turn: its request, where its events go, when it is cancelled,
/// and its admission permit (released when this part of the turn ends).
pub struct Resume {
    pub job: Job,
    /// The outputs of the held calls, in the held calls' order.
    pub outputs: Vec<String>,
    pub events: mpsc::Sender<TurnEvent>,
    pub cancel: CancellationToken,
    pub permit: Box<dyn Send + Sync>,
}

struct Waiting {
    expected: Expected,
    resume: oneshot::Sender<Resume>,
    /// The held turn's connection: cancelled when its worker is gone, and the turn with it.
    closed: CancellationToken,
}

/// One pool's held turns.
#[derive(Default)]
pub struct HeldTurns {
    /// Call-id key → the held turn. A `parking_lot` mutex, never held across an `.await`.
    waiting: Mutex<HashMap<String, Waiting>>,
}

impl HeldTurns {
    /// Registers a held turn, unless `max_held` turns are already held (or its calls are, which a
    /// model never repeats). Returns its key and where its continuation will arrive.
    pub fn hold(
        &self,
        expected: Expected,
        max_held: usize,
        closed: CancellationToken,
    ) -> Option<(String, oneshot::Receiver<Resume>)> {
        let key = expected.key();
        let mut waiting = self.waiting.lock();
        waiting.retain(|_, held| !held.closed.is_cancelled());
        if waiting.len() >= max_held || waiting.contains_key(&key) || key.is_empty() {
            return None;
        }
        let (resume, receiver) = oneshot::channel();
        waiting.insert(
            key.clone(),
            Waiting {
                expected,
                resume,
                closed,
            },
        );
        Some((key, receiver))
    }

    /// Takes the held turn `job` continues, with the outputs for its calls.
    pub fn take(&self, job: &Job) -> Option<(oneshot::Sender<Resume>, Vec<String>)> {
        let results = job.request.trailing_tool_results();
        if results.is_empty() {
            return None;
        }
        let key = key_of(results.iter().filter_map(|item| match item {
            Item::ToolResult { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        }));
        let mut waiting = self.waiting.lock();
        let held = waiting.get(&key)?;
        if held.closed.is_cancelled() {
            // Its worker died: the turn is gone (it removes itself too, maybe a moment later).
            waiting.remove(&key);
            return None;
        }
        let outputs = held.expected.outputs_of(job)?;
        let entry = waiting.remove(&key)?;
        Some((entry.resume, outputs))
    }

    /// Removes a held turn; `true` when it was still there (nobody took it).
    pub fn release(&self, key: &str) -> bool {
        self.waiting.lock().remove(key).is_some()
    }

    /// How many turns are held now.
    pub fn len(&self) -> usize {
        self.waiting.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a request's conversation ends with tool results (a continuation after tool calls).
pub fn continues_tool_calls(request: &TurnRequest) -> bool {
    !request.trailing_tool_results().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn job(items: Vec<Item>) -> Job {
        Job {
            request_id: "r".into(),
            request: TurnRequest {
                items,
                tools: vec![Tool {
                    name: "lookup".into(),
                    description: None,
                    parameters: serde_json::json!({"type": "object"}),
                    strict: false,
                }],
                ..TurnRequest::default()
            },
            cwd: "/w".into(),
            model: None,
            received_at: Instant::now(),
            hold: Default::default(),
        }
    }

    fn call(id: &str, arguments: &str) -> ToolCall {
        ToolCall {
            call_id: id.into(),
            name: "lookup".into(),
            arguments: arguments.into(),
        }
    }

    fn result(id: &str, output: &str) -> Item {
        Item::ToolResult {
            call_id: id.into(),
            output: output.into(),
            is_error: false,
        }
    }

    fn call_item(id: &str, arguments: &str) -> Item {
        Item::ToolCall {
            call_id: id.into(),
            name: "lookup".into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn the_results_of_exactly_the_held_calls_continue_the_turn() {
        let first = job(vec![Item::text(Role::User, "hi")]);
        let calls = [call("a", r#"{"word":"x"}"#), call("b", "{}")];
        let expected = Expected::new(&first, "Checking.", &calls);
        let turns = HeldTurns::default();
        let (key, _resume) = turns
            .hold(expected.clone(), 4, CancellationToken::new())
            .expect("held");
        assert_eq!(turns.len(), 1);

        let base = vec![
            Item::text(Role::User, "hi"),
            Item::text(Role::Assistant, "Checking."),
            // Re-serialised with other spacing: still the same call.
            call_item("a", r#"{"word": "x"}"#),
            call_item("b", "{}"),
        ];
        // Results in another order: outputs come back in the calls' order.
        let mut items = base.clone();
        items.extend([result("b", "2"), result("a", "1")]);
        assert_eq!(
            expected.outputs_of(&job(items.clone())),
            Some(vec!["1".to_string(), "2".to_string()])
        );
        // One result missing, an edited history, another tool list: no match.
        let mut partial = base.clone();
        partial.push(result("a", "1"));
        assert_eq!(expected.outputs_of(&job(partial.clone())), None);
        let mut edited = items.clone();
        edited[0] = Item::text(Role::User, "hello");
        assert_eq!(expected.outputs_of(&job(edited)), None);
        let mut other_tools = job(items.clone());
        other_tools.request.tools.clear();
        assert_eq!(expected.outputs_of(&other_tools), None);

        assert!(turns.take(&job(partial)).is_none());
        assert!(turns.take(&job(items)).is_some());
        assert!(
            !turns.release(&key),
            "taken: the held turn no longer owns its end"
        );
    }

    #[test]
    fn holding_is_bounded() {
        let turns = HeldTurns::default();
        let first = job(vec![Item::text(Role::User, "hi")]);
        let one = Expected::new(&first, "", &[call("a", "{}")]);
        let two = Expected::new(&first, "", &[call("b", "{}")]);
        let (key, _a) = turns.hold(one, 1, CancellationToken::new()).unwrap();
        assert!(turns
            .hold(two.clone(), 1, CancellationToken::new())
            .is_none());
        assert!(turns.release(&key));
        assert!(turns.hold(two, 1, CancellationToken::new()).is_some());
    }

    #[test]
    fn a_turn_whose_worker_died_is_not_continued() {
        let turns = HeldTurns::default();
        let first = job(vec![Item::text(Role::User, "hi")]);
        let closed = CancellationToken::new();
        let expected = Expected::new(&first, "", &[call("a", "{}")]);
        let (_key, _resume) = turns.hold(expected, 4, closed.clone()).unwrap();
        closed.cancel();
        let items = vec![
            Item::text(Role::User, "hi"),
            call_item("a", "{}"),
            result("a", "1"),
        ];
        assert!(turns.take(&job(items)).is_none());
        assert!(turns.is_empty());
    }
}
