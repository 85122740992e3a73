//! `codex exec --json` output lines → the few facts the proxy needs, and Codex failure messages →
//! [`FailureKind`]s. Parsing is lenient (`serde_json::Value`): Codex adds fields and even repeats keys
//! (`web_search` items), so strict structs would break on harmless changes.

use serde_json::Value;

use crate::turn::{FailureKind, Usage};

/// What one stdout line of `codex exec --json` means to the proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    ThreadStarted,
    /// A completed `agent_message` item with its text.
    AgentMessage(String),
    /// A completed `reasoning` item: the text of a reasoning summary.
    Reasoning(String),
    TurnCompleted(Usage),
    TurnFailed(String),
    /// A top-level `error` event; usually only a retry notice.
    Error(String),
    /// Any other well-formed event.
    Other,
    /// The line is not a JSON event.
    NotJson,
}

/// Parses one line of `codex exec --json` output.
pub fn parse_exec_line(line: &str) -> ExecEvent {
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return ExecEvent::NotJson;
    };
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return ExecEvent::NotJson;
    };
    match kind {
        "thread.started" => ExecEvent::ThreadStarted,
        "item.completed" => {
            let item = value.get("item").unwrap_or(&Value::Null);
            let text = || {
                item.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            match item.get("type").and_then(Value::as_str) {
                Some("agent_message") => ExecEvent::AgentMessage(text()),
                Some("reasoning") => ExecEvent::Reasoning(text()),
                _ => ExecEvent::Other,
            }
        }
        "turn.completed" => {
            ExecEvent::TurnCompleted(exec_usage(value.get("usage").unwrap_or(&Value::Null)))
        }
        "turn.failed" => ExecEvent::TurnFailed(
            value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("Codex reported a failed turn without a message")
                .to_string(),
        ),
        "error" => ExecEvent::Error(
            value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        _ => ExecEvent::Other,
    }
}

fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `turn.completed.usage` → OpenAI usage (input includes cached, output includes reasoning).
pub fn exec_usage(usage: &Value) -> Usage {
    let prompt_tokens = number(usage, "input_tokens");
    let completion_tokens = number(usage, "output_tokens");
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        cached_tokens: number(usage, "cached_input_tokens"),
        reasoning_tokens: number(usage, "reasoning_output_tokens"),
    }
}

/// Classifies a Codex failure message: exec reports only the text. The messages Codex 0.169.0 prints for
/// each upstream failure are listed in `tests/it/support/mock_model.rs` and recorded in
/// `src/engine/exec/fixtures/`.
pub fn classify_failure(message: &str) -> FailureKind {
    let lower = message.to_ascii_lowercase();
    if lower.contains("quota exceeded") || lower.contains("usage limit") {
        FailureKind::QuotaExceeded
    } else if lower.contains("429 too many requests") || lower.contains("rate limit") {
        FailureKind::UpstreamRateLimited
    } else if lower.contains("context window") || lower.contains("context_length_exceeded") {
        FailureKind::ContextLengthExceeded
    } else if lower.contains("at capacity") || lower.contains("server_is_overloaded") {
        FailureKind::UpstreamOverloaded
    } else if lower.contains("idle timeout") {
        FailureKind::UpstreamTimeout
    } else {
        FailureKind::CodexFailed
    }
}

/// Shortens a Codex message for clients: first line, bounded length.
pub fn summarize(message: &str) -> String {
    let first = message.trim().lines().next().unwrap_or("").trim();
    const LIMIT: usize = 600;
    if first.len() <= LIMIT {
        first.to_string()
    } else {
        let mut end = LIMIT;
        while !first.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &first[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_events_that_matter() {
        assert_eq!(
            parse_exec_line(r#"{"type":"thread.started","thread_id":"x"}"#),
            ExecEvent::ThreadStarted
        );
        assert_eq!(
            parse_exec_line(
                r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":"hi"}}"#
            ),
            ExecEvent::AgentMessage("hi".into())
        );
        assert_eq!(
            parse_exec_line(
                r#"{"type":"item.completed","item":{"id":"item_1","type":"web_search","id":"ws_1"}}"#
            ),
            ExecEvent::Other
        );
        assert_eq!(
            parse_exec_line(
                r#"{"type":"turn.completed","usage":{"input_tokens":120,"cached_input_tokens":20,"cache_write_input_tokens":0,"output_tokens":30,"reasoning_output_tokens":10}}"#
            ),
            ExecEvent::TurnCompleted(Usage {
                prompt_tokens: 120,
                completion_tokens: 30,
                total_tokens: 150,
                cached_tokens: 20,
                reasoning_tokens: 10
            })
        );
        assert_eq!(
            parse_exec_line(r#"{"type":"turn.failed","error":{"message":"boom"}}"#),
            ExecEvent::TurnFailed("boom".into())
        );
        assert_eq!(parse_exec_line("garbage"), ExecEvent::NotJson);
        assert_eq!(parse_exec_line("[1,2]"), ExecEvent::NotJson);
    }

    #[test]
    fn classifies_failure_messages() {
        use FailureKind::*;
        let cases = [
            (
                "Quota exceeded. Check your plan and billing details.",
                QuotaExceeded,
            ),
            (
                "exceeded retry limit, last status: 429 Too Many Requests",
                UpstreamRateLimited,
            ),
            (
                "Codex ran out of room in the model's context window. Start a new thread",
                ContextLengthExceeded,
            ),
            (
                "Selected model is at capacity. Please try a different model.",
                UpstreamOverloaded,
            ),
            (
                "stream disconnected before completion: idle timeout waiting for SSE",
                UpstreamTimeout,
            ),
            ("We’re currently experiencing high demand", CodexFailed),
            ("unexpected status 401 Unauthorized: bad key", CodexFailed),
        ];
        for (message, kind) in cases {
            assert_eq!(classify_failure(message), kind, "{message}");
        }
    }
}
