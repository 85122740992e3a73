//! `count_tokens`: an estimate of a Messages request's input tokens with the `o200k_base` encoding
//! (the tokenizer of OpenAI's current models, which Codex runs), from `tiktoken-rs`.
//!
//! How it counts: the tokens of the instructions (`system`), of every message's text, of each tool call's
//! name and arguments and each tool result's output, and of each tool's name, description and JSON
//! Schema; plus 3 tokens per message or tool item and 3 for the reply's start (OpenAI's chat framing),
//! and a flat [`IMAGE_TOKENS`] per image. Codex adds its own instructions and tool definitions to every
//! turn, so the `input_tokens` a turn reports is higher than this count of what the client sent.

use crate::turn::{Content, Item, TurnRequest};

/// Tokens counted for each item's framing (role and separators).
const PER_ITEM: usize = 3;
/// Tokens counted for the start of the reply.
const REPLY_PRIMING: usize = 3;
/// Tokens counted for one image, whatever its size (OpenAI's cost of a 512×512 tile plus its base).
pub const IMAGE_TOKENS: usize = 255;

fn tokens(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_with_special_tokens(text)
        .len()
}

/// The estimated input tokens of `request`.
pub fn count(request: &TurnRequest) -> usize {
    let mut total = REPLY_PRIMING;
    if let Some(instructions) = &request.instructions {
        total += PER_ITEM + tokens(instructions);
    }
    for item in &request.items {
        total += PER_ITEM;
        total += match item {
            Item::Message { content, .. } => content
                .iter()
                .map(|part| match part {
                    Content::Text(text) => tokens(text),
                    Content::Image { .. } => IMAGE_TOKENS,
                })
                .sum(),
            Item::ToolCall {
                name, arguments, ..
            } => tokens(name) + tokens(arguments),
            Item::ToolResult { output, .. } => tokens(output),
        };
    }
    for tool in &request.tools {
        total += PER_ITEM + tokens(&tool.name) + tokens(&tool.parameters.to_string());
        total += tool.description.as_deref().map_or(0, tokens);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::Role;

    #[test]
    fn counts_text_with_o200k_base() {
        // "Hello, world!" is 4 tokens in o200k_base.
        assert_eq!(tokens("Hello, world!"), 4);
        let request = TurnRequest::from_texts(None, [(Role::User, "Hello, world!".to_string())]);
        assert_eq!(count(&request), REPLY_PRIMING + PER_ITEM + 4);
        let with_system = TurnRequest::from_texts(
            Some("Hello, world!".into()),
            [(Role::User, "Hello, world!".to_string())],
        );
        assert_eq!(count(&with_system), REPLY_PRIMING + 2 * (PER_ITEM + 4));
    }
}
