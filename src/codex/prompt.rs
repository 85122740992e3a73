//! OpenAI chat `messages` → what Codex receives.
//!
//! `system`/`developer` messages become Codex *developer instructions* (never Codex's base instructions,
//! which the ChatGPT backend refuses to see replaced). For `codex exec`, the other messages become one
//! transcript: `[role]\ncontent` blocks separated by a blank line, ending in a newline. For the app-server,
//! [`Conversation`] keeps them as separate turns so they can be replayed as real message items.
//! Input is assumed validated by `api::types`; this module never fails.

use serde_json::Value;

use crate::turn::{Item, Role, TurnRequest};

/// One message reduced to its role and plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: String,
    pub text: String,
}

/// The request's messages, split the way Codex needs them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conversation {
    /// System and developer text, joined by blank lines; `None` when there is none.
    pub developer_instructions: Option<String>,
    /// Every other message, in order.
    pub turns: Vec<Turn>,
}

impl Conversation {
    /// Builds the conversation from validated OpenAI `messages`.
    pub fn from_messages(messages: &[Value]) -> Conversation {
        let mut instructions: Vec<String> = Vec::new();
        let mut turns = Vec::new();
        for message in messages {
            let role = message
                .get("role")
                .and_then(Value::as_str)
                .unwrap_or("user")
                .to_string();
            let text = content_text(message.get("content").unwrap_or(&Value::Null));
            if role == "system" || role == "developer" {
                if !text.is_empty() {
                    instructions.push(text);
                }
            } else {
                turns.push(Turn { role, text });
            }
        }
        Conversation {
            developer_instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")),
            turns,
        }
    }

    /// The exec prompt: `[role]\ncontent` blocks, a blank line between, a trailing newline.
    pub fn transcript(&self) -> String {
        let mut out = String::new();
        for (index, turn) in self.turns.iter().enumerate() {
            if index > 0 {
                out.push_str("\n\n");
            }
            out.push('[');
            out.push_str(&turn.role);
            out.push_str("]\n");
            out.push_str(&turn.text);
        }
        out.push('\n');
        out
    }
}

impl From<Conversation> for TurnRequest {
    /// Plain text messages: `user` and `assistant` keep their roles, `tool` and `function` text stays
    /// text (labelled by its role in the transcript), any other role counts as the user's.
    fn from(conversation: Conversation) -> TurnRequest {
        TurnRequest::from_texts(
            conversation.developer_instructions,
            conversation.turns.into_iter().map(|turn| {
                let role = match turn.role.as_str() {
                    "assistant" => Role::Assistant,
                    "tool" => Role::Tool,
                    "function" => Role::Function,
                    _ => Role::User,
                };
                (role, turn.text)
            }),
        )
    }
}

/// The exec prompt of a request: `[role]\ncontent` blocks, a blank line between, a trailing newline.
/// Tool calls and results of the conversation appear as `[assistant called NAME]` and `[tool result]`
/// blocks.
pub fn transcript(request: &TurnRequest) -> String {
    let mut out = String::new();
    for (index, item) in request.items.iter().enumerate() {
        if index > 0 {
            out.push_str("\n\n");
        }
        match item {
            Item::Message { role, .. } => {
                let (_, text) = item.message_text().unwrap_or((*role, String::new()));
                out.push('[');
                out.push_str(role.as_str());
                out.push_str("]\n");
                out.push_str(&text);
            }
            Item::ToolCall {
                name, arguments, ..
            } => {
                out.push_str(&format!("[assistant called {name}]\n{arguments}"));
            }
            Item::ToolResult { output, .. } => {
                out.push_str("[tool result]\n");
                out.push_str(output);
            }
        }
    }
    out.push('\n');
    out
}

/// The text of a message's `content`: a string as is; text parts joined with newlines; any other part
/// replaced by a placeholder naming its type.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|part| {
                let kind = part
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                match (kind, part.get("text").and_then(Value::as_str)) {
                    ("text" | "input_text", Some(text)) => text.to_string(),
                    _ => format!("[{kind} content omitted: not supported by this proxy]"),
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A TOML basic string holding `text`, safe to pass as the value of `-c key=VALUE`.
pub fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splits_instructions_and_builds_the_transcript() {
        let messages = vec![
            json!({"role": "system", "content": "Be terse."}),
            json!({"role": "user", "content": "Hi"}),
            json!({"role": "assistant", "content": "Hello"}),
            json!({"role": "developer", "content": "Use metric."}),
            json!({"role": "user", "content": [
                {"type": "text", "text": "What is"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
                {"type": "text", "text": "this?"}
            ]}),
        ];
        let conversation = Conversation::from_messages(&messages);
        assert_eq!(
            conversation.developer_instructions.as_deref(),
            Some("Be terse.\n\nUse metric.")
        );
        assert_eq!(
            transcript(&TurnRequest::from(conversation.clone())),
            conversation.transcript()
        );
        assert_eq!(
            conversation.transcript(),
            "[user]\nHi\n\n[assistant]\nHello\n\n[user]\nWhat is\n[image_url content omitted: not supported by this proxy]\nthis?\n"
        );
    }

    #[test]
    fn toml_strings_round_trip() {
        for text in [
            "plain",
            "quote \" and \\ back",
            "line\nbreak\ttab\u{1}",
            "ünïcödé ✓",
        ] {
            let quoted = toml_string(text);
            let parsed: toml::Table = toml::from_str(&format!("v = {quoted}")).unwrap();
            assert_eq!(parsed["v"].as_str(), Some(text));
        }
    }
}
