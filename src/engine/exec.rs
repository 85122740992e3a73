//! The exec engine: one `codex exec --json` process per request.
//!
//! Entry point: [`start`]. The run's task owns the process group: it writes the prompt to stdin, drains
//! stderr (keeping a tail for error messages), reads the JSONL events, and reports `Done` the moment
//! `turn.completed` arrives (Codex needs ~50 ms more to exit; the client does not wait for that). The group
//! is killed on cancellation (the [`RunHandle`] was dropped: client gone), on `timeout_seconds`, and in any
//! case when the task ends. The admission permit is held until the process is gone.

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codex::env::ChildEnv;
use crate::codex::events::{classify_failure, parse_exec_line, summarize, ExecEvent};
use crate::codex::launch::{spawn_in_group, ResolvedCodex, StderrTail};
use crate::codex::lines::{for_each_capped_line, read_line, Line, MAX_STDOUT_LINE};
use crate::codex::prompt::toml_string;
use crate::config::Profile;
use crate::engine::{
    ms, spawn_run, Completion, EngineError, FailureKind, FinishReason, Job, Phases, RunHandle,
    TurnEvent,
};

/// The longest single argument Linux passes to a program (`MAX_ARG_STRLEN`, 32 pages, less its NUL);
/// a longer one fails the spawn with E2BIG.
pub const MAX_ARG_BYTES: usize = 32 * 4096 - 1;

/// The `developer_instructions=…` value of `-c` for the client's system text.
pub fn developer_instructions_arg(instructions: &str) -> String {
    format!("developer_instructions={}", toml_string(instructions))
}

/// The full argument list of one `codex exec` run (after the program name).
pub fn exec_args(profile: &Profile, job: &Job) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--ignore-user-config",
        "--ignore-rules",
        "--disable",
        "unbounded_connection_retries",
        "--sandbox",
        if profile.runtime.agent {
            "workspace-write"
        } else {
            "read-only"
        },
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push("--cd".into());
    args.push(job.cwd.clone().into_os_string());
    if let Some(model) = &job.model {
        // One `--model=VALUE` argument: a request's model name (`pass_model`) that starts with `-` stays a
        // value instead of being parsed as an option.
        args.push(format!("--model={model}").into());
    }
    if let Some(instructions) = &job.request.instructions {
        args.push("-c".into());
        args.push(developer_instructions_arg(instructions).into());
    }
    if !profile.runtime.tools {
        args.extend(
            crate::codex::launch::NO_TOOLS_ARGS
                .iter()
                .map(OsString::from),
        );
    }
    for item in profile.effective_codex_config() {
        args.push("-c".into());
        args.push(item.into());
    }
    if profile.runtime.ephemeral {
        args.push("--ephemeral".into());
    }
    // End of options: the prompt comes from stdin.
    args.push("-".into());
    args
}

/// Starts one exec run in its own task.
pub fn start(
    profile: Arc<Profile>,
    codex: Result<ResolvedCodex, String>,
    child_env: Arc<ChildEnv>,
    job: Job,
    permit: impl Send + 'static,
) -> RunHandle {
    spawn_run(permit, 8, |events, cancel| async move {
        run(&profile, codex, &child_env, &job, &events, &cancel).await
    })
}

/// Runs Codex to completion. `Ok` means `Done` was already sent.
async fn run(
    profile: &Profile,
    codex: Result<ResolvedCodex, String>,
    child_env: &ChildEnv,
    job: &Job,
    events: &mpsc::Sender<TurnEvent>,
    cancel: &CancellationToken,
) -> Result<(), EngineError> {
    let codex =
        codex.map_err(|message| EngineError::new(FailureKind::CodexUnavailable, message))?;
    let mut phases = Phases::new();

    let build_started = Instant::now();
    let mut command = Command::new(&codex.program);
    command.args(exec_args(profile, job)).current_dir(&job.cwd);
    child_env.apply(&mut command, &codex, profile.runtime.proxy.as_deref());
    phases.insert("codex_command_build", ms(build_started));

    let spawn_started = Instant::now();
    let (mut child, mut group) = spawn_in_group(&mut command).map_err(|err| {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                FailureKind::CodexUnavailable
            }
            _ => FailureKind::CodexFailed,
        };
        EngineError::new(
            kind,
            format!("cannot start Codex ({}): {err}", codex.program.display()),
        )
    })?;
    phases.insert("codex_process_spawn", ms(spawn_started));
    let io_started = Instant::now();

    // stderr: drained for the whole life of the process, tail kept for error messages.
    let tail = Arc::new(Mutex::new(StderrTail::default()));
    let stderr_drained = child.stderr.take().map(|stderr| {
        let tail = tail.clone();
        tokio::spawn(for_each_capped_line(stderr, move |line| {
            tail.lock().unwrap_or_else(|e| e.into_inner()).push(line)
        }))
    });
    // stdin: the transcript, then EOF. Written in its own task so a huge prompt cannot block reading.
    let stdin_started = Instant::now();
    let prompt = crate::codex::prompt::transcript(&job.request);
    let stdin_write_ms: Arc<Mutex<Option<f64>>> = Arc::default();
    if let Some(mut stdin) = child.stdin.take() {
        let stdin_write_ms = stdin_write_ms.clone();
        tokio::spawn(async move {
            if stdin.write_all(prompt.as_bytes()).await.is_ok() {
                drop(stdin);
                *stdin_write_ms.lock().unwrap_or_else(|e| e.into_inner()) = Some(ms(stdin_started));
            }
        });
    }

    let stdout = child.stdout.take().ok_or_else(|| {
        EngineError::new(FailureKind::CodexFailed, "Codex stdout was not captured")
    })?;
    let mut stdout = BufReader::new(stdout);
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::from_std(job.received_at) + profile.runtime.timeout;

    let mut last_message: Option<String> = None;
    let mut failure: Option<String> = None;
    let mut last_error_event: Option<String> = None;
    let mut non_json_lines = 0usize;
    let mut first_non_json: Option<String> = None;
    let mut first_event = true;
    let mut first_assistant = true;
    let mut parse_time = Duration::ZERO;
    let mut completed = false;

    loop {
        let line = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                group.kill();
                return Ok(());
            }
            _ = tokio::time::sleep_until(deadline), if !completed => {
                group.kill();
                return Err(EngineError::new(
                    FailureKind::Timeout,
                    format!(
                        "Codex did not finish within the profile's timeout of {} s; the run was stopped",
                        profile.runtime.timeout.as_secs()
                    ),
                ));
            }
            line = read_line(&mut stdout, &mut buf, MAX_STDOUT_LINE) => line,
        };
        match line {
            Ok(Line::Complete) => {}
            Ok(Line::TooLong) => {
                group.kill();
                return Err(too_long_line());
            }
            Ok(Line::Eof) | Err(_) => break,
        }
        let line = String::from_utf8_lossy(&buf);
        if line.trim().is_empty() {
            continue;
        }
        if first_event {
            first_event = false;
            phases.insert("codex_first_stdout_event", ms(io_started));
        }
        let parse_started = Instant::now();
        let event = parse_exec_line(&line);
        parse_time += parse_started.elapsed();
        match event {
            ExecEvent::AgentMessage(text) => {
                if first_assistant {
                    first_assistant = false;
                    phases.insert("codex_first_assistant_event", ms(io_started));
                }
                last_message = Some(text);
            }
            ExecEvent::TurnCompleted(usage) if !completed => {
                completed = true;
                if let Some(written) = *stdin_write_ms.lock().unwrap_or_else(|e| e.into_inner()) {
                    phases.insert("codex_stdin_write", written);
                }
                phases.insert("codex_stdout_read", ms(io_started));
                phases.insert("codex_output_parse", parse_time.as_secs_f64() * 1000.0);
                phases.insert("codex_communicate", ms(io_started));
                let Some(text) = last_message.take() else {
                    failure = Some("Codex completed the turn without a final message".to_string());
                    break;
                };
                let _ = events
                    .send(TurnEvent::Done(Completion {
                        text,
                        tool_calls: Vec::new(),
                        usage,
                        finish: FinishReason::Stop,
                        phases: phases.clone(),
                    }))
                    .await;
                // Keep draining until Codex exits on its own (bounded below), holding the slot.
            }
            ExecEvent::TurnFailed(message) => failure = Some(message),
            ExecEvent::Error(message) => last_error_event = Some(message),
            ExecEvent::NotJson => {
                non_json_lines += 1;
                if first_non_json.is_none() {
                    first_non_json = Some(line.trim().chars().take(200).collect());
                }
            }
            _ => {}
        }
    }

    // stdout is closed: wait briefly for the exit status; the guard kills the group either way.
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        _ = tokio::time::sleep(Duration::from_secs(2)) => None,
        _ = cancel.cancelled() => None,
    };
    group.kill();
    if completed && failure.is_none() {
        return Ok(());
    }
    // The group is dead, so stderr reaches EOF: read what Codex wrote before it ended (bounded, in case
    // a process outside the group still holds the pipe).
    if let Some(drained) = stderr_drained {
        let _ = tokio::time::timeout(Duration::from_millis(500), drained).await;
    }
    let stderr_tail = tail.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let message = match failure.or(last_error_event) {
        Some(message) => message,
        None => {
            let code = status
                .map(|status| status.to_string())
                .unwrap_or_else(|| "did not exit".to_string());
            let detail = stderr_tail
                .last_meaningful()
                .unwrap_or_else(|| "no error output".to_string());
            if let Some(first) = first_non_json {
                format!(
                    "Codex printed {non_json_lines} unexpected non-JSON line(s) (first: {first:?}) and ended without a result ({code}): {detail}"
                )
            } else {
                format!("Codex ended without a result ({code}): {detail}")
            }
        }
    };
    Err(EngineError::new(
        classify_failure(&message),
        summarize(&message),
    ))
}

/// The failure of a run whose Codex printed a stdout line over [`MAX_STDOUT_LINE`] (it was killed).
fn too_long_line() -> EngineError {
    EngineError::new(
        FailureKind::CodexFailed,
        format!(
            "Codex printed an output line longer than {} MiB, more than any valid event; the run was stopped. Check the Codex binary (codex_bin) and retry.",
            MAX_STDOUT_LINE >> 20
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codex::prompt::Conversation;
    use crate::config::{parse, ServerOverrides};
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn builds_the_reference_command_line() {
        let config = parse(
            "[profiles.a]\nmodel = \"gpt-x\"\ntools = false\nfast = true\ncodex_config = ['model_verbosity=\"low\"']\n",
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap();
        let job = Job {
            request_id: "r".into(),
            request: Conversation::from_messages(&[
                json!({"role": "system", "content": "Say \"hi\"\nplease"}),
                json!({"role": "user", "content": "x"}),
            ])
            .into(),
            cwd: "/work/dir".into(),
            model: Some("gpt-x".into()),
            received_at: Instant::now(),
        };
        let args: Vec<String> = exec_args(&config.profiles[0], &job)
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with(
            "exec --json --skip-git-repo-check --ignore-user-config --ignore-rules --disable unbounded_connection_retries --sandbox read-only --cd /work/dir --model=gpt-x"
        ), "{joined}");
        assert!(
            args.contains(&"developer_instructions=\"Say \\\"hi\\\"\\nplease\"".to_string()),
            "{joined}"
        );
        assert!(joined.contains("--disable shell_tool"), "{joined}");
        assert!(
            joined.contains("model_verbosity=\"low\" -c model_reasoning_effort=\"low\""),
            "{joined}"
        );
        assert!(joined.ends_with("--ephemeral -"), "{joined}");
    }
}
