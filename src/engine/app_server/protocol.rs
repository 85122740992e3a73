//! The app-server messages the proxy sends and the few facts it reads back. Field names follow the
//! schema `codex app-server generate-json-schema --experimental --out DIR` prints for Codex 0.169.0
//! (`v2/ThreadStartParams.json`, `ServerNotification.json`, `ServerRequest.json`). Builders return
//! `serde_json::Value`; readers are lenient (unknown fields, missing `jsonrpc`).

use serde_json::{json, Value};

use crate::codex::events::classify_failure;
use crate::config::Profile;
use crate::turn::{Content, FailureKind, Item, OutputFormat, Role, ToolChoice, TurnRequest, Usage};

/// The `config` of `thread/start` that removes Codex's own tools and its environment, permissions and
/// skills blocks (the keys are Codex config keys, as `-c` takes them).
pub fn no_tools_config() -> Value {
    json!({
        "features": {"shell_tool": false, "view_image": false, "multi_agent": false, "goals": false},
        "web_search": "disabled",
        "tools": {"experimental_request_user_input": {"enabled": false}},
        "skills": {"include_instructions": false},
        "include_permissions_instructions": false,
        "include_environment_context": false,
    })
}

/// Notifications the proxy never reads, so Codex does not send them: a warm turn's thread otherwise
/// announces its status two or three times, its settings once and, when unloaded, its closing, and
/// Codex may add `warning`s, which the proxy does not report either. `turn/started` repeats the turn id
/// that every `turn/start` answer already carries, which is where the proxy takes it from. Against the
/// mock model that is 6 of the 20 lines (replies included) Codex wrote per tool-free turn, each of which
/// costs Codex a write and the proxy a wake-up.
pub const UNREAD_NOTIFICATIONS: &[&str] = &[
    "thread/started",
    "thread/status/changed",
    "thread/settings/updated",
    "thread/closed",
    "warning",
    "turn/started",
];

/// `initialize` params.
pub fn initialize_params() -> Value {
    json!({
        "clientInfo": {"name": "codex-api-proxy", "title": null, "version": env!("CARGO_PKG_VERSION")},
        "capabilities": {
            "experimentalApi": true,
            "optOutNotificationMethods": UNREAD_NOTIFICATIONS,
        },
    })
}

/// `thread/start` params for one request: an ephemeral thread that never asks for approval.
///
/// With Codex's tools off, the thread also gets `environments: []` ("empty disables environment access",
/// per the schema's `ThreadStartParams.environments`): Codex then prepares no shell environment for the
/// thread, which halved Codex's CPU per turn (105 to 46 ms at one turn at a time) and raised throughput
/// by 40–60 % against the mock model (`examples/bench_codex_direct.rs`, the `environments: []` rows
/// against `baseline`). Profiles with tools keep their environment, since the shell tool runs in it.
pub fn thread_start_params(
    profile: &Profile,
    cwd: &str,
    model: Option<&str>,
    developer_instructions: Option<&str>,
) -> Value {
    let mut params = json!({
        "cwd": cwd,
        "approvalPolicy": "never",
        "sandbox": if profile.runtime.agent { "workspace-write" } else { "read-only" },
        "ephemeral": true,
    });
    if let Some(model) = model {
        params["model"] = json!(model);
    }
    if let Some(instructions) = developer_instructions {
        params["developerInstructions"] = json!(instructions);
    }
    if !profile.runtime.tools {
        params["config"] = no_tools_config();
        params["dynamicTools"] = json!([]);
        params["environments"] = json!([]);
    }
    params
}

/// The `dynamicTools` of `thread/start`: the client's functions when the model may call them
/// (`tool_choice` is not `none`), else none; only the named one when `tool_choice` names a function.
/// Codex requires a description; an absent one is empty.
pub fn dynamic_tools(request: &TurnRequest) -> Value {
    if request.tool_choice == ToolChoice::None {
        return json!([]);
    }
    Value::Array(
        request
            .tools
            .iter()
            .filter(|tool| match &request.tool_choice {
                ToolChoice::Named(name) => &tool.name == name,
                _ => true,
            })
            .map(|tool| {
                json!({
                    "type": "function",
                    "name": tool.name,
                    "description": tool.description.as_deref().unwrap_or(""),
                    "inputSchema": tool.parameters,
                })
            })
            .collect(),
    )
}

/// What the model is told when `tool_choice` requires a call: Codex always offers dynamic tools
/// with `tool_choice: "auto"`, so the requirement goes into the developer instructions (and the
/// engine checks the answer, see `app_server::enforce`).
pub fn tool_choice_instruction(choice: &ToolChoice) -> Option<String> {
    match choice {
        ToolChoice::Required => Some(
            "In this response you must call at least one of the provided functions; do not answer with text alone."
                .to_string(),
        ),
        ToolChoice::Named(name) => Some(format!(
            "In this response you must call the function `{name}`; do not answer with text alone."
        )),
        ToolChoice::Auto | ToolChoice::None => None,
    }
}

/// The firmer request sent as a new turn when the model answered without the required call.
pub fn tool_choice_reminder(choice: &ToolChoice) -> String {
    match choice {
        ToolChoice::Named(name) => format!(
            "You did not call `{name}`. Call the function `{name}` now; reply with the function call only."
        ),
        _ => "You did not call a function. Call one of the provided functions now; reply with the function call only.".to_string(),
    }
}

/// The developer instructions of a thread: the client's system text, then the `tool_choice`
/// requirement when there is one.
pub fn developer_instructions(request: &TurnRequest) -> Option<String> {
    let requirement = if request.tools.is_empty() {
        None
    } else {
        tool_choice_instruction(&request.tool_choice)
    };
    let instructions = request.developer_text();
    match (instructions.as_deref(), requirement) {
        (None, None) => None,
        (Some(text), None) => Some(text.to_string()),
        (None, Some(requirement)) => Some(requirement),
        (Some(text), Some(requirement)) => Some(format!("{text}\n\n{requirement}")),
    }
}

/// Adds the client's tools to `thread/start` params. On a profile with `agent = false` they are then
/// the only tools the model is offered (Codex's own tools and environment are off, as for `tools =
/// false`); on an `agent = true` profile they are offered beside Codex's.
pub fn add_client_tools(params: &mut Value, profile: &Profile, request: &TurnRequest) {
    let tools = dynamic_tools(request);
    if tools.as_array().is_none_or(|tools| tools.is_empty()) {
        return;
    }
    params["dynamicTools"] = tools;
    // `rawResponse/completed` says when the model's response ended (so every parallel call is
    // known) and what it cost, while the calls are still unanswered.
    params["experimentalRawEvents"] = json!(true);
    if !profile.runtime.agent {
        params["config"] = no_tools_config();
        params["environments"] = json!([]);
    }
}

/// A Responses API item for `thread/inject_items`. Text-only messages keep today's shape; `tool` and
/// `function` text messages are replayed as user text labelled with their role.
pub fn history_item(item: &Item) -> Value {
    match item {
        Item::Message { role, .. } => {
            let (_, text) = item.message_text().unwrap_or((*role, String::new()));
            match role {
                Role::Assistant => json!({
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text}],
                }),
                Role::User if has_images(item) => json!({
                    "type": "message",
                    "role": "user",
                    "content": user_content(item),
                }),
                Role::User => json!({
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                }),
                other => json!({
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": format!("[{}]\n{text}", other.as_str())}],
                }),
            }
        }
        Item::ToolCall {
            call_id,
            name,
            arguments,
        } => json!({
            "type": "function_call",
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }),
        Item::ToolResult {
            call_id, output, ..
        } => json!({
            "type": "function_call_output",
            "call_id": call_id,
            "output": output,
        }),
    }
}

fn has_images(item: &Item) -> bool {
    matches!(item, Item::Message { content, .. }
        if content.iter().any(|part| matches!(part, Content::Image { .. })))
}

/// A user message with images as Responses API content: `input_text` and `input_image` parts in
/// order.
fn user_content(item: &Item) -> Value {
    let Item::Message { content, .. } = item else {
        return json!([]);
    };
    content
        .iter()
        .map(|part| match part {
            Content::Text(text) => json!({"type": "input_text", "text": text}),
            Content::Image { url, detail } => json!({
                "type": "input_image",
                "image_url": url,
                "detail": detail.as_deref().unwrap_or("auto"),
            }),
        })
        .collect()
}

/// The `turn/start` input of a user message: its text, then its images (`image` inputs with their
/// `data:` URL).
fn turn_input(item: &Item) -> Value {
    let mut input = Vec::new();
    if let Some((_, text)) = item.message_text() {
        if !text.is_empty() || !has_images(item) {
            input.push(json!({"type": "text", "text": text, "text_elements": []}));
        }
    }
    if let Item::Message { content, .. } = item {
        for part in content {
            if let Content::Image { url, detail } = part {
                let mut image = json!({"type": "image", "url": url});
                if let Some(detail) = detail {
                    image["detail"] = json!(detail);
                }
                input.push(image);
            }
        }
    }
    Value::Array(input)
}

/// Splits a conversation into replayed history and the turn's `input`: the last item is the input
/// when it is a user message; otherwise everything is history, the input is empty and the turn
/// continues from the history.
pub fn split_conversation(request: &TurnRequest) -> (Vec<Value>, Value) {
    match request.items.split_last() {
        Some((
            last @ Item::Message {
                role: Role::User, ..
            },
            earlier,
        )) => (earlier.iter().map(history_item).collect(), turn_input(last)),
        _ => (request.items.iter().map(history_item).collect(), json!([])),
    }
}

/// `turn/start` params: the input, and the request's reasoning effort and the profile's reasoning
/// summary (both sticky on the thread, which serves this request only).
pub fn turn_start_params(
    profile: &Profile,
    request: &TurnRequest,
    thread_id: &str,
    input: Value,
) -> Value {
    let mut params = json!({
        "threadId": thread_id,
        "input": input,
        "summary": profile.runtime.reasoning_summary.as_str(),
    });
    if let Some(effort) = &request.reasoning_effort {
        params["effort"] = json!(effort);
    }
    if let Some(OutputFormat::JsonSchema { schema, .. }) = &request.output {
        params["outputSchema"] = schema.clone();
    }
    params
}

/// `thread/tokenUsage/updated` → usage (`total` is per thread; one thread per request).
pub fn token_usage(params: &Value) -> Option<Usage> {
    usage_breakdown(params.pointer("/tokenUsage/total")?)
}

/// A `TokenUsageBreakdown` (`thread/tokenUsage/updated`, `rawResponse/completed`) → usage.
pub fn usage_breakdown(total: &Value) -> Option<Usage> {
    if !total.is_object() {
        return None;
    }
    let number = |key: &str| total.get(key).and_then(Value::as_u64).unwrap_or(0);
    let prompt_tokens = number("inputTokens");
    let completion_tokens = number("outputTokens");
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: total
            .get("totalTokens")
            .and_then(Value::as_u64)
            .unwrap_or(prompt_tokens + completion_tokens),
        cached_tokens: number("cachedInputTokens"),
        reasoning_tokens: number("reasoningOutputTokens"),
    })
}

/// `turn.error` of a failed `turn/completed` → failure kind (from `codexErrorInfo`, else the message).
pub fn failure_kind(error: &Value) -> FailureKind {
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    let info = error.get("codexErrorInfo").unwrap_or(&Value::Null);
    let tag = match info {
        Value::String(tag) => tag.as_str(),
        Value::Object(map) => map.keys().next().map(String::as_str).unwrap_or(""),
        _ => "",
    };
    let status = info
        .as_object()
        .and_then(|map| map.values().next())
        .and_then(|inner| inner.get("httpStatusCode"))
        .and_then(Value::as_u64);
    match tag {
        "usageLimitExceeded" => FailureKind::QuotaExceeded,
        "contextWindowExceeded" => FailureKind::ContextLengthExceeded,
        "serverOverloaded" => FailureKind::UpstreamOverloaded,
        "responseTooManyFailedAttempts" if status == Some(429) => FailureKind::UpstreamRateLimited,
        "modelNotFound" => FailureKind::UpstreamBadRequest,
        "internalServerError" | "httpConnectionFailed" => FailureKind::CodexFailed,
        _ => classify_failure(message),
    }
}

/// The immediate answer to a server-initiated request: always a safe refusal, so nothing ever waits.
pub fn refusal(method: &str) -> Result<Value, (i64, String)> {
    match method {
        "item/commandExecution/requestApproval" | "item/fileChange/requestApproval" => {
            Ok(json!({"decision": "decline"}))
        }
        "item/permissions/requestApproval" => Ok(json!({"permissions": {}, "scope": "turn"})),
        "item/tool/requestUserInput" => Ok(json!({"answers": {}})),
        "mcpServer/elicitation/request" => {
            Ok(json!({"action": "decline", "content": null, "_meta": null}))
        }
        "applyPatchApproval" | "execCommandApproval" => Ok(json!({"decision": "denied"})),
        "item/tool/call" => Ok(json!({
            "contentItems": [{"type": "inputText", "text": "Tool calls are not available through this proxy."}],
            "success": false,
        })),
        other => Err((
            -32601,
            format!("{other} is not supported by codex-api-proxy"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_codex_error_info() {
        let cases = [
            (
                json!({"message": "x", "codexErrorInfo": "usageLimitExceeded"}),
                FailureKind::QuotaExceeded,
            ),
            (
                json!({"message": "x", "codexErrorInfo": "contextWindowExceeded"}),
                FailureKind::ContextLengthExceeded,
            ),
            (
                json!({"message": "x", "codexErrorInfo": "serverOverloaded"}),
                FailureKind::UpstreamOverloaded,
            ),
            (
                json!({"message": "x", "codexErrorInfo": {"responseTooManyFailedAttempts": {"httpStatusCode": 429}}}),
                FailureKind::UpstreamRateLimited,
            ),
            (
                json!({"message": "x", "codexErrorInfo": {"httpConnectionFailed": {"httpStatusCode": 401}}}),
                FailureKind::CodexFailed,
            ),
            (
                json!({"message": "x", "codexErrorInfo": "internalServerError"}),
                FailureKind::CodexFailed,
            ),
            (
                json!({"message": "stream disconnected before completion: idle timeout waiting for SSE", "codexErrorInfo": "other"}),
                FailureKind::UpstreamTimeout,
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(failure_kind(&error), kind, "{error}");
        }
    }

    #[test]
    fn the_last_user_message_is_the_input() {
        let request = TurnRequest::from_texts(
            None,
            [
                (Role::User, "a".to_string()),
                (Role::Assistant, "b".to_string()),
                (Role::User, "c".to_string()),
            ],
        );
        let (history, input) = split_conversation(&request);
        assert_eq!(history.len(), 2);
        assert_eq!(history[1]["content"][0]["type"], "output_text");
        assert_eq!(
            input,
            json!([{"type": "text", "text": "c", "text_elements": []}])
        );
    }

    #[test]
    fn every_request_kind_gets_an_answer() {
        assert!(refusal("item/commandExecution/requestApproval").is_ok());
        assert!(refusal("item/tool/call").is_ok());
        assert_eq!(refusal("currentTime/read").unwrap_err().0, -32601);
    }

    fn profile(tools: bool) -> std::sync::Arc<Profile> {
        let text = format!("[profiles.p]\nengine = \"app-server\"\ntools = {tools}\n");
        let config = crate::config::parse(
            &text,
            std::path::Path::new("config.toml"),
            &crate::config::ServerOverrides::default(),
            &|_| None,
        )
        .expect("a valid profile");
        config.profiles[0].clone()
    }

    #[test]
    fn client_tools_replace_codex_tools_unless_the_profile_is_an_agent() {
        let mut request = TurnRequest::from_texts(None, [(Role::User, "x".to_string())]);
        request.tools.push(crate::turn::Tool {
            name: "f".into(),
            description: None,
            parameters: json!({"type": "object"}),
            strict: false,
        });
        let mut params = thread_start_params(&profile(true), "/w", None, None);
        add_client_tools(&mut params, &profile(true), &request);
        assert_eq!(
            params["dynamicTools"],
            json!([{"type": "function", "name": "f", "description": "", "inputSchema": {"type": "object"}}])
        );
        assert_eq!(params["environments"], json!([]));
        assert_eq!(params["config"], no_tools_config());
        request.tool_choice = ToolChoice::None;
        let mut params = thread_start_params(&profile(true), "/w", None, None);
        add_client_tools(&mut params, &profile(true), &request);
        assert!(params.get("dynamicTools").is_none(), "{params}");
    }

    #[test]
    fn only_threads_without_codex_tools_drop_the_environment() {
        let off = thread_start_params(&profile(false), "/w", None, None);
        assert_eq!(off["environments"], json!([]));
        assert_eq!(off["dynamicTools"], json!([]));
        let on = thread_start_params(&profile(true), "/w", None, None);
        assert!(on.get("environments").is_none(), "{on}");
    }
}
