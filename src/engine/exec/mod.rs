//! The exec engine's shell: one `codex exec --json` process per request.
//!
//! Entry point: [`start`]. The run's task owns the process group: it writes the prompt to stdin, drains
//! stderr (keeping a tail for error messages), reads the JSONL lines and feeds them to the protocol core
//! ([`core::ExecTurn`]), which decides what they mean; `Done` is sent the moment the core sees
//! `turn.completed` (Codex needs ~50 ms more to exit; the client does not wait for that). The group is
//! killed on cancellation (the [`RunHandle`] was dropped: client gone), on `timeout_seconds`, and in any
//! case when the task ends. The admission permit is held until the process is gone.

pub mod core;

use std::ffi::OsString;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::core::{line_too_long, timed_out, ExecTurn, LineTiming, Step};
use crate::codex::env::ChildEnv;
use crate::codex::events::parse_exec_line;
use crate::codex::launch::{spawn_in_group, GroupKiller, ResolvedCodex, StderrTail};
use crate::codex::lines::{for_each_capped_line, read_line, Line, MAX_STDOUT_LINE};
use crate::codex::prompt::toml_string;
use crate::config::Profile;
use crate::engine::{ms, spawn_run, EngineError, FailureKind, Job, Phases, RunHandle, TurnEvent};
use crate::turn::image::{decode_data_url, ImageProblem};
use crate::turn::{Content, Item, OutputFormat};

/// The longest single argument Linux passes to a program (`MAX_ARG_STRLEN`, 32 pages, less its NUL);
/// a longer one fails the spawn with E2BIG.
pub const MAX_ARG_BYTES: usize = 32 * 4096 - 1;

/// The `developer_instructions=…` value of `-c` for the client's system text.
pub fn developer_instructions_arg(instructions: &str) -> String {
    format!("developer_instructions={}", toml_string(instructions))
}

/// The full argument list of one `codex exec` run (after the program name), for a request without
/// an output schema.
pub fn exec_args(profile: &Profile, job: &Job) -> Vec<OsString> {
    exec_args_with_files(profile, job, &RunFiles::default())
}

/// [`exec_args`] with the run's private files: the JSON schema (`--output-schema=FILE`) and the
/// images (`--image=FILE` each, one argument per option so no value is taken for another).
pub fn exec_args_with_files(profile: &Profile, job: &Job, files: &RunFiles) -> Vec<OsString> {
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
    if let Some(instructions) = job.request.developer_text() {
        args.push("-c".into());
        args.push(developer_instructions_arg(&instructions).into());
    }
    if let Some(file) = &files.schema {
        let mut arg = OsString::from("--output-schema=");
        arg.push(file.path());
        args.push(arg);
    }
    for file in &files.images {
        let mut arg = OsString::from("--image=");
        arg.push(file.path());
        args.push(arg);
    }
    if !profile.runtime.tools {
        args.extend(
            crate::codex::launch::NO_TOOLS_ARGS
                .iter()
                .map(OsString::from),
        );
    }
    // A request's reasoning effort replaces the profile's (`fast`, or one set in `codex_config`).
    let effort = job.request.reasoning_effort.as_deref();
    for item in profile.effective_codex_config() {
        if effort.is_some() && item.trim_start().starts_with("model_reasoning_effort") {
            continue;
        }
        args.push("-c".into());
        args.push(item.into());
    }
    if let Some(effort) = effort {
        args.push("-c".into());
        args.push(format!("model_reasoning_effort={}", toml_string(effort)).into());
    }
    args.push("-c".into());
    args.push(
        format!(
            "model_reasoning_summary={}",
            toml_string(profile.runtime.reasoning_summary.as_str())
        )
        .into(),
    );
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

/// Runs Codex to completion. `Ok` means `Done` was already sent (or the run was cancelled).
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
    // Removed when the run ends (dropped with this frame).
    let files = RunFiles {
        schema: write_output_schema(job)?,
        images: write_images(job)?,
    };
    let mut command = Command::new(&codex.program);
    command
        .args(exec_args_with_files(profile, job, &files))
        .current_dir(&job.cwd);
    child_env.apply(&mut command, &codex, profile.runtime.proxy.as_deref());
    phases.insert("codex_command_build", ms(build_started));

    let spawn_started = Instant::now();
    let (mut child, mut group) = spawn_in_group(&mut command, std::process::Stdio::piped())
        .map_err(|err| spawn_error(&codex, &err))?;
    phases.insert("codex_process_spawn", ms(spawn_started));
    let io_started = Instant::now();

    let stderr = StderrDrain::start(&mut child);
    let stdin_write_ms = write_stdin(&mut child, job);
    let stdout = child.stdout.take().ok_or_else(|| {
        EngineError::new(FailureKind::CodexFailed, "Codex stdout was not captured")
    })?;
    let mut turn = ExecTurn::new(phases, io_started)
        .with_limits(job.request.stop.clone(), job.request.max_output_tokens);
    let reader = Reader {
        deadline: tokio::time::Instant::from_std(job.received_at) + profile.runtime.timeout,
        timeout: profile.runtime.timeout,
        events,
        cancel,
        stdin_write_ms: &stdin_write_ms,
    };
    match reader.read(stdout, &mut turn).await {
        Ok(Ended::StdoutDone) => settle(child, group, stderr, turn, cancel).await,
        Ok(Ended::Cancelled) => {
            group.kill();
            Ok(())
        }
        Err(error) => {
            group.kill();
            Err(error)
        }
    }
}

/// The private temporary files of one run (mode 0600, deleted when dropped).
#[derive(Default)]
pub struct RunFiles {
    pub schema: Option<tempfile::NamedTempFile>,
    pub images: Vec<tempfile::NamedTempFile>,
}

/// The request's images (checked `data:` URLs), decoded into private temporary files, in order.
fn write_images(job: &Job) -> Result<Vec<tempfile::NamedTempFile>, EngineError> {
    let mut files = Vec::new();
    for item in &job.request.items {
        let Item::Message { content, .. } = item else {
            continue;
        };
        for part in content {
            let Content::Image { url, .. } = part else {
                continue;
            };
            let image = decode_data_url(url).map_err(|problem| {
                let reason = match problem {
                    ImageProblem::Invalid(reason) | ImageProblem::TooLarge(reason) => reason,
                };
                EngineError::new(
                    FailureKind::CodexFailed,
                    format!("cannot pass an image to Codex: {reason}"),
                )
            })?;
            let mut file = tempfile::Builder::new()
                .prefix("codex-proxy-image-")
                .suffix(&format!(".{}", image.extension))
                .tempfile()
                .map_err(|err| {
                    EngineError::new(
                        FailureKind::CodexFailed,
                        format!("cannot write an image file: {err}"),
                    )
                })?;
            std::io::Write::write_all(&mut file, &image.bytes).map_err(|err| {
                EngineError::new(
                    FailureKind::CodexFailed,
                    format!("cannot write an image file: {err}"),
                )
            })?;
            files.push(file);
        }
    }
    Ok(files)
}

/// The request's JSON schema in a private temporary file (mode 0600, deleted when dropped) for
/// `--output-schema`; `None` without one.
fn write_output_schema(job: &Job) -> Result<Option<tempfile::NamedTempFile>, EngineError> {
    let Some(OutputFormat::JsonSchema { schema, .. }) = &job.request.output else {
        return Ok(None);
    };
    let failed = |err: std::io::Error| {
        EngineError::new(
            FailureKind::CodexFailed,
            format!("cannot write the output schema file: {err}"),
        )
    };
    let mut file = tempfile::Builder::new()
        .prefix("codex-proxy-schema-")
        .suffix(".json")
        .tempfile()
        .map_err(failed)?;
    serde_json::to_writer(&mut file, schema).map_err(|err| failed(err.into()))?;
    Ok(Some(file))
}

/// The failure of a spawn that did not start Codex.
fn spawn_error(codex: &ResolvedCodex, err: &std::io::Error) -> EngineError {
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
}

/// Writes the transcript to Codex's stdin, then EOF, in its own task so a huge prompt cannot block
/// reading. The cell receives the write's duration once it is done.
fn write_stdin(child: &mut Child, job: &Job) -> Arc<OnceLock<f64>> {
    let stdin_started = Instant::now();
    let written: Arc<OnceLock<f64>> = Arc::default();
    let prompt = crate::codex::prompt::transcript(&job.request);
    if let Some(mut stdin) = child.stdin.take() {
        let written = written.clone();
        tokio::spawn(async move {
            if stdin.write_all(prompt.as_bytes()).await.is_ok() {
                drop(stdin);
                let _ = written.set(ms(stdin_started));
            }
        });
    }
    written
}

/// Codex's stderr, drained for the whole life of the process; its tail is kept for error messages.
struct StderrDrain {
    tail: Arc<Mutex<StderrTail>>,
    drained: Option<JoinHandle<()>>,
}

impl StderrDrain {
    fn start(child: &mut Child) -> StderrDrain {
        let tail = Arc::new(Mutex::new(StderrTail::default()));
        let drained = child.stderr.take().map(|stderr| {
            let tail = tail.clone();
            tokio::spawn(for_each_capped_line(stderr, move |line| {
                tail.lock().push(line)
            }))
        });
        StderrDrain { tail, drained }
    }

    /// The last meaningful line Codex wrote. Call it once the group is dead, so stderr reaches EOF; the
    /// wait is bounded in case a process outside the group still holds the pipe.
    async fn last_meaningful(self) -> Option<String> {
        if let Some(drained) = self.drained {
            let _ = tokio::time::timeout(Duration::from_millis(500), drained).await;
        }
        let tail = self.tail.lock();
        tail.last_meaningful()
    }
}

/// How reading stdout ended without an error.
enum Ended {
    /// Stdout closed, or the core has settled the outcome.
    StdoutDone,
    /// The run was cancelled (client gone).
    Cancelled,
}

/// What the stdout loop races against and reports to.
struct Reader<'a> {
    deadline: tokio::time::Instant,
    timeout: Duration,
    events: &'a mpsc::Sender<TurnEvent>,
    cancel: &'a CancellationToken,
    stdin_write_ms: &'a OnceLock<f64>,
}

impl Reader<'_> {
    /// Feeds every stdout line to `turn` until stdout closes, the core settles, the run is cancelled, the
    /// deadline passes (only until `turn.completed`) or a line exceeds [`MAX_STDOUT_LINE`].
    async fn read(&self, stdout: ChildStdout, turn: &mut ExecTurn) -> Result<Ended, EngineError> {
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            let line = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(Ended::Cancelled),
                _ = tokio::time::sleep_until(self.deadline), if !turn.completed() => {
                    return Err(timed_out(self.timeout));
                }
                line = read_line(&mut stdout, &mut buf, MAX_STDOUT_LINE) => line,
            };
            match line {
                Ok(Line::Complete) => {}
                Ok(Line::TooLong) => return Err(line_too_long()),
                Ok(Line::Eof) | Err(_) => return Ok(Ended::StdoutDone),
            }
            let line = String::from_utf8_lossy(&buf);
            if line.trim().is_empty() {
                continue;
            }
            let read_at = Instant::now();
            let event = parse_exec_line(&line);
            let timing = LineTiming {
                read_at,
                parsed_at: Instant::now(),
            };
            match turn.on_line(&line, event, timing) {
                Step::None => {}
                Step::Done(mut completion) => {
                    if let Some(written) = self.stdin_write_ms.get() {
                        completion.phases.insert("codex_stdin_write", *written);
                    }
                    // Keep draining until Codex exits on its own (bounded in `settle`), holding the slot.
                    let _ = self.events.send(TurnEvent::Done(completion)).await;
                }
                Step::Settle => return Ok(Ended::StdoutDone),
            }
        }
    }
}

/// Stdout is closed (or the outcome settled): waits briefly for the exit status, kills the group either
/// way, and lets the core decide the result.
async fn settle(
    mut child: Child,
    mut group: GroupKiller,
    stderr: StderrDrain,
    turn: ExecTurn,
    cancel: &CancellationToken,
) -> Result<(), EngineError> {
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        _ = tokio::time::sleep(Duration::from_secs(2)) => None,
        _ = cancel.cancelled() => None,
    };
    group.kill();
    if turn.succeeded() {
        return Ok(());
    }
    let detail = stderr.last_meaningful().await;
    turn.on_exit(status, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, ServerOverrides};
    use crate::turn::{Role, TurnRequest};
    use std::path::Path;

    #[test]
    fn the_output_schema_file_is_private_and_removed_after_the_run() {
        use std::os::unix::fs::PermissionsExt;
        let mut request = TurnRequest::from_texts(None, [(Role::User, "x".into())]);
        request.output = Some(OutputFormat::JsonSchema {
            name: "s".into(),
            schema: serde_json::json!({"type": "object"}),
            strict: true,
        });
        let job = Job {
            request_id: "r".into(),
            request,
            cwd: "/w".into(),
            model: None,
            received_at: Instant::now(),
            hold: Default::default(),
        };
        let file = write_output_schema(&job).unwrap().expect("a schema file");
        let path = file.path().to_path_buf();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"{"type":"object"}"#
        );
        let config = parse(
            "[profiles.a]\n",
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap();
        let files = RunFiles {
            schema: Some(file),
            images: Vec::new(),
        };
        let args = exec_args_with_files(&config.profiles[0], &job, &files);
        let flag = format!("--output-schema={}", path.display());
        assert!(args.iter().any(|arg| arg.to_str() == Some(flag.as_str())));
        assert_eq!(args.last().and_then(|arg| arg.to_str()), Some("-"));
        drop(files);
        assert!(!path.exists());
    }

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
            request: TurnRequest::from_texts(
                Some("Say \"hi\"\nplease".into()),
                [(Role::User, "x".into())],
            ),
            cwd: "/work/dir".into(),
            model: Some("gpt-x".into()),
            received_at: Instant::now(),
            hold: Default::default(),
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
