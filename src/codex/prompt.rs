//! What shapes Codex input from a [`TurnRequest`].
//!
//! The request's instructions go to Codex as *developer instructions* (never Codex's base instructions,
//! which the ChatGPT backend refuses to see replaced), as a TOML string ([`toml_string`]). For
//! `codex exec`, the conversation items become one [`transcript`]: `[role]\ncontent` blocks separated by
//! a blank line, ending in a newline. Input is assumed validated by the API adapter; nothing here fails.

use crate::turn::{Item, TurnRequest};

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
    use crate::turn::Role;

    #[test]
    fn builds_the_transcript() {
        let mut request = TurnRequest::from_texts(
            Some("Be terse.".to_string()),
            [
                (Role::User, "Hi".to_string()),
                (Role::Assistant, "Hello".to_string()),
                (Role::Tool, "42".to_string()),
            ],
        );
        request.items.push(Item::ToolCall {
            call_id: "c1".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
        });
        request.items.push(Item::ToolResult {
            call_id: "c1".into(),
            output: "found".into(),
            is_error: false,
        });
        assert_eq!(
            transcript(&request),
            "[user]\nHi\n\n[assistant]\nHello\n\n[tool]\n42\n\n[assistant called lookup]\n{}\n\n[tool result]\nfound\n"
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
