//! The exec protocol core: what one `codex exec --json` run means, decided without any I/O.
//!
//! [`ExecTurn`] is fed what the shell (`engine/exec/mod.rs`) observes — each non-blank stdout line with
//! its parsed [`ExecEvent`] and the instants it was read and parsed, then, once stdout has closed, the
//! exit status and the last meaningful stderr line — and answers with [`Step`]s. It owns every decision
//! of the run: which `agent_message` is the answer, when the turn is done, what a `turn.failed`, a
//! top-level `error` event or non-JSON output means, and how a failure is worded and classified
//! (`codex::events::classify_failure`). Time is only ever passed in, so the same inputs give the same
//! steps; `fixtures/` holds recorded outputs of the real Codex CLI that the tests below replay.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::codex::events::{classify_failure, summarize, ExecEvent};
use crate::codex::lines::MAX_STDOUT_LINE;
use crate::turn::limit::AnswerLimit;
use crate::turn::{Completion, EngineError, FailureKind, FinishReason, Phases};

/// What the shell does after feeding one line.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Nothing yet: read the next line.
    None,
    /// The turn is done: send this completion now, then keep draining stdout until Codex exits on its
    /// own (the profile's timeout no longer applies).
    Done(Completion),
    /// The outcome is known and it is a failure: stop reading stdout, collect the exit, and ask
    /// [`ExecTurn::on_exit`] for the error.
    Settle,
}

/// When the shell read one stdout line and when it had parsed it.
#[derive(Debug, Clone, Copy)]
pub struct LineTiming {
    pub read_at: Instant,
    pub parsed_at: Instant,
}

/// The state of one exec turn: fed stdout events in order, then the process exit.
#[derive(Debug)]
pub struct ExecTurn {
    /// When stdin and stdout were first handed to the process; every phase below is measured from it.
    io_started: Instant,
    phases: Phases,
    /// The text of the latest completed `agent_message`: the answer, once `turn.completed` arrives.
    last_message: Option<String>,
    /// The reasoning summaries of the turn, joined by blank lines.
    reasoning: String,
    /// The request's `stop` sequences and token limit, applied to the final answer.
    stop: Vec<String>,
    max_tokens: Option<u64>,
    /// Why the turn failed (`turn.failed`, or a completion without a message).
    failure: Option<String>,
    /// The latest top-level `error` event: usually a retry notice, the reason only if nothing better.
    last_error_event: Option<String>,
    non_json_lines: usize,
    first_non_json: Option<String>,
    seen_event: bool,
    seen_assistant: bool,
    parse_time: Duration,
    completed: bool,
}

impl ExecTurn {
    /// A turn whose process got its pipes at `io_started`; `phases` holds what the shell measured before.
    pub fn new(phases: Phases, io_started: Instant) -> ExecTurn {
        ExecTurn {
            io_started,
            phases,
            last_message: None,
            reasoning: String::new(),
            stop: Vec::new(),
            max_tokens: None,
            failure: None,
            last_error_event: None,
            non_json_lines: 0,
            first_non_json: None,
            seen_event: false,
            seen_assistant: false,
            parse_time: Duration::ZERO,
            completed: false,
        }
    }

    /// The request's `stop` sequences and token limit: the answer is cut by them (exec delivers the
    /// answer whole at the end, so there is nothing to interrupt).
    pub fn with_limits(mut self, stop: Vec<String>, max_tokens: Option<u64>) -> ExecTurn {
        self.stop = stop;
        self.max_tokens = max_tokens;
        self
    }

    /// Whether `turn.completed` has arrived (the profile's timeout stops applying then).
    pub fn completed(&self) -> bool {
        self.completed
    }

    /// Feeds one non-blank stdout `line` and its parsed `event`.
    pub fn on_line(&mut self, line: &str, event: ExecEvent, timing: LineTiming) -> Step {
        if !self.seen_event {
            self.seen_event = true;
            self.phase("codex_first_stdout_event", timing.read_at);
        }
        self.parse_time += timing.parsed_at.saturating_duration_since(timing.read_at);
        match event {
            ExecEvent::AgentMessage(text) => {
                if !self.seen_assistant {
                    self.seen_assistant = true;
                    self.phase("codex_first_assistant_event", timing.read_at);
                }
                self.last_message = Some(text);
            }
            ExecEvent::Reasoning(text) => {
                if !self.reasoning.is_empty() {
                    self.reasoning.push_str("\n\n");
                }
                self.reasoning.push_str(&text);
            }
            ExecEvent::TurnCompleted(usage) if !self.completed => {
                self.completed = true;
                self.phase("codex_stdout_read", timing.parsed_at);
                let parse_ms = self.parse_time.as_secs_f64() * 1000.0;
                self.phases.insert("codex_output_parse", parse_ms);
                self.phase("codex_communicate", timing.parsed_at);
                let Some(text) = self.last_message.take() else {
                    self.failure =
                        Some("Codex completed the turn without a final message".to_string());
                    return Step::Settle;
                };
                let (text, cut) = AnswerLimit::apply(&self.stop, self.max_tokens, &text);
                return Step::Done(Completion {
                    text,
                    reasoning: std::mem::take(&mut self.reasoning),
                    tool_calls: Vec::new(),
                    usage,
                    finish: cut.unwrap_or(FinishReason::Stop),
                    phases: self.phases.clone(),
                });
            }
            ExecEvent::TurnFailed(message) => self.failure = Some(message),
            ExecEvent::Error(message) => self.last_error_event = Some(message),
            ExecEvent::NotJson => {
                self.non_json_lines += 1;
                if self.first_non_json.is_none() {
                    self.first_non_json = Some(line.trim().chars().take(200).collect());
                }
            }
            _ => {}
        }
        Step::None
    }

    /// Whether the run has ended well: `Done` was sent and no failure followed. Otherwise the shell
    /// collects the stderr tail before calling [`ExecTurn::on_exit`].
    pub fn succeeded(&self) -> bool {
        self.completed && self.failure.is_none()
    }

    /// The end of the run once stdout has closed and the process is gone: `status` is `None` when
    /// Codex did not exit in time, `stderr` its last meaningful stderr line. `Ok` means `Done` was sent.
    pub fn on_exit(
        self,
        status: Option<ExitStatus>,
        stderr: Option<String>,
    ) -> Result<(), EngineError> {
        if self.succeeded() {
            return Ok(());
        }
        let message = match self.failure.or(self.last_error_event) {
            Some(message) => message,
            None => {
                let code = status
                    .map(|status| status.to_string())
                    .unwrap_or_else(|| "did not exit".to_string());
                let detail = stderr.unwrap_or_else(|| "no error output".to_string());
                match self.first_non_json {
                    Some(first) => format!(
                        "Codex printed {} unexpected non-JSON line(s) (first: {first:?}) and ended without a result ({code}): {detail}",
                        self.non_json_lines
                    ),
                    None => format!("Codex ended without a result ({code}): {detail}"),
                }
            }
        };
        Err(EngineError::new(
            classify_failure(&message),
            summarize(&message),
        ))
    }

    /// Records phase `name` as the milliseconds from `io_started` to `at`, rounded like `turn::ms`.
    fn phase(&mut self, name: &'static str, at: Instant) {
        let elapsed = at.saturating_duration_since(self.io_started);
        let ms = (elapsed.as_secs_f64() * 100_000.0).round() / 100.0;
        self.phases.insert(name, ms);
    }
}

/// The failure of a run whose Codex printed a stdout line over [`MAX_STDOUT_LINE`] (it was killed).
pub fn line_too_long() -> EngineError {
    EngineError::new(
        FailureKind::CodexFailed,
        format!(
            "Codex printed an output line longer than {} MiB, more than any valid event; the run was stopped. Check the Codex binary (codex_bin) and retry.",
            MAX_STDOUT_LINE >> 20
        ),
    )
}

/// The failure of a run stopped at the profile's `timeout`.
pub fn timed_out(timeout: Duration) -> EngineError {
    EngineError::new(
        FailureKind::Timeout,
        format!(
            "Codex did not finish within the profile's timeout of {} s; the run was stopped",
            timeout.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    //! Replays of `codex exec --json` outputs recorded from Codex 0.169.0 against the mock model
    //! (`tests/it/support/mock_model.rs`) by `examples/record_exec_fixtures.rs`; the file names carry
    //! the exit code.

    use std::os::unix::process::ExitStatusExt;

    use super::*;
    use crate::codex::events::parse_exec_line;
    use crate::codex::launch::StderrTail;
    use crate::turn::Usage;

    const DEFAULT: &str = include_str!("fixtures/default.exit0.jsonl");
    const REPLY: &str = include_str!("fixtures/reply.exit0.jsonl");
    const NO_FINAL_MESSAGE: &str = include_str!("fixtures/no_final_message.exit0.jsonl");
    const STATUS_429: &str = include_str!("fixtures/status_429.exit1.jsonl");
    const QUOTA: &str = include_str!("fixtures/quota.exit1.jsonl");
    const CONTEXT: &str = include_str!("fixtures/context.exit1.jsonl");
    const OVERLOADED: &str = include_str!("fixtures/overloaded.exit1.jsonl");
    const STATUS_500: &str = include_str!("fixtures/status_500.exit1.jsonl");
    const FAILED: &str = include_str!("fixtures/failed.exit1.jsonl");
    const CUT: &str = include_str!("fixtures/cut.exit1.jsonl");
    const EOF: &str = include_str!("fixtures/eof.exit1.jsonl");
    const KILLED: &str = include_str!("fixtures/killed.exitsig9.jsonl");
    const BAD_CONFIG: &str = include_str!("fixtures/bad_config.exit1.jsonl");
    const BAD_CONFIG_STDERR: &str = include_str!("fixtures/bad_config.exit1.stderr");

    /// The usage of every completed mock turn.
    const MOCK_USAGE: Usage = Usage {
        prompt_tokens: 120,
        completion_tokens: 30,
        total_tokens: 150,
        cached_tokens: 20,
        reasoning_tokens: 10,
    };

    fn exited(code: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(code << 8))
    }

    fn killed_by(signal: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(signal))
    }

    /// Feeds `stdout` to a fresh turn as the shell does (blank lines skipped). Line `i` (from 1) is read
    /// `i` ms after the pipes opened and parsed 0.25 ms later.
    fn replay(stdout: &str) -> (ExecTurn, Vec<Step>) {
        let io_started = Instant::now();
        let mut turn = ExecTurn::new(Phases::new(), io_started);
        let mut steps = Vec::new();
        for (index, line) in stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .enumerate()
        {
            let read_at = io_started + Duration::from_millis(index as u64 + 1);
            let timing = LineTiming {
                read_at,
                parsed_at: read_at + Duration::from_micros(250),
            };
            steps.push(turn.on_line(line, parse_exec_line(line), timing));
        }
        (turn, steps)
    }

    /// The error a replayed run ends with when Codex exited with `status` and wrote `stderr`.
    fn failure_of(stdout: &str, status: Option<ExitStatus>, stderr: &str) -> EngineError {
        let (turn, steps) = replay(stdout);
        assert!(
            !steps.iter().any(|step| matches!(step, Step::Done(_))),
            "{steps:?}"
        );
        assert!(!turn.succeeded());
        let mut tail = StderrTail::default();
        stderr.lines().for_each(|line| tail.push(line));
        turn.on_exit(status, tail.last_meaningful()).unwrap_err()
    }

    #[test]
    fn a_completed_turn_is_done_with_the_last_message_and_usage() {
        let (turn, mut steps) = replay(DEFAULT);
        let Some(Step::Done(completion)) = steps.pop() else {
            panic!("the last step is not Done: {steps:?}");
        };
        assert!(steps.iter().all(|step| *step == Step::None), "{steps:?}");
        assert_eq!(completion.text, "Hello from the mock model.");
        assert_eq!(completion.usage, MOCK_USAGE);
        assert_eq!(completion.finish, FinishReason::Stop);
        assert!(completion.tool_calls.is_empty());
        // Five lines, one per ms: the message is line 4, `turn.completed` line 5, each parsed in 0.25 ms.
        let phases: Vec<(&str, f64)> = completion.phases.into_iter().collect();
        assert_eq!(
            phases,
            [
                ("codex_communicate", 5.25),
                ("codex_first_assistant_event", 4.0),
                ("codex_first_stdout_event", 1.0),
                ("codex_output_parse", 1.25),
                ("codex_stdout_read", 5.25),
            ]
        );
        assert!(turn.completed() && turn.succeeded());
        assert_eq!(turn.on_exit(exited(0), None), Ok(()));
    }

    #[test]
    fn exec_sends_no_deltas_only_the_final_message() {
        // The mock streamed two deltas; `codex exec --json` reports only the completed message.
        let (_, steps) = replay(REPLY);
        assert_eq!(steps.len(), 5, "{steps:?}");
        assert!(
            matches!(&steps[4], Step::Done(c) if c.text == "Two words"),
            "{steps:?}"
        );
    }

    #[test]
    fn earlier_phases_are_kept_and_the_latest_message_wins() {
        let mut phases = Phases::new();
        phases.insert("codex_process_spawn", 3.5);
        let at = Instant::now();
        let timing = LineTiming {
            read_at: at,
            parsed_at: at,
        };
        let mut turn = ExecTurn::new(phases, at);
        for text in ["first", "second"] {
            let event = ExecEvent::AgentMessage(text.to_string());
            assert_eq!(turn.on_line("", event, timing), Step::None);
        }
        let done = turn.on_line("", ExecEvent::TurnCompleted(Usage::default()), timing);
        let Step::Done(completion) = done else {
            panic!("{done:?}");
        };
        assert_eq!(completion.text, "second");
        assert_eq!(completion.phases["codex_process_spawn"], 3.5);
    }

    #[test]
    fn turn_failed_messages_are_classified() {
        use FailureKind::*;
        let disconnected = "stream disconnected before completion";
        let cases = [
            (STATUS_429, UpstreamRateLimited, "exceeded retry limit, last status: 429 Too Many Requests".to_string()),
            (QUOTA, QuotaExceeded, "Quota exceeded. Check your plan and billing details.".to_string()),
            (CONTEXT, ContextLengthExceeded, "Codex ran out of room in the model's context window. Start a new thread or clear earlier history before retrying.".to_string()),
            (OVERLOADED, UpstreamOverloaded, "Selected model is at capacity. Please try a different model.".to_string()),
            (STATUS_500, CodexFailed, "We’re currently experiencing high demand, which may cause temporary errors.".to_string()),
            (FAILED, CodexFailed, format!("{disconnected}: The mock model failed this response.")),
            (CUT, CodexFailed, format!("{disconnected}: Transport error: network error: error decoding response body")),
        ];
        for (stdout, kind, message) in cases {
            assert_eq!(
                failure_of(stdout, exited(1), ""),
                EngineError::new(kind, message)
            );
        }
    }

    #[test]
    fn a_message_followed_by_turn_failed_is_a_failure() {
        let (_, steps) = replay(EOF);
        assert!(steps.iter().all(|step| *step == Step::None), "{steps:?}");
        assert_eq!(
            failure_of(EOF, exited(1), ""),
            EngineError::new(
                FailureKind::CodexFailed,
                "stream disconnected before completion: stream closed before response.completed"
            )
        );
    }

    #[test]
    fn a_completion_without_a_message_settles_as_a_failure() {
        let (turn, steps) = replay(NO_FINAL_MESSAGE);
        assert_eq!(steps.last(), Some(&Step::Settle));
        assert!(turn.completed() && !turn.succeeded());
        assert_eq!(
            turn.on_exit(exited(0), None),
            Err(EngineError::new(
                FailureKind::CodexFailed,
                "Codex completed the turn without a final message"
            ))
        );
    }

    #[test]
    fn an_error_event_is_the_reason_only_without_turn_failed() {
        // The 429 run without its `turn.failed` line: the top-level `error` event is all there is.
        let without_turn_failed: String = STATUS_429
            .lines()
            .filter(|line| !line.contains("turn.failed"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(
            failure_of(&without_turn_failed, exited(1), "ignored"),
            EngineError::new(
                FailureKind::UpstreamRateLimited,
                "exceeded retry limit, last status: 429 Too Many Requests"
            )
        );
        // A retry notice before a completed turn changes nothing.
        let retried =
            format!("{{\"type\":\"error\",\"message\":\"Reconnecting... 1/5\"}}\n{DEFAULT}");
        let (turn, steps) = replay(&retried);
        assert!(matches!(steps.last(), Some(Step::Done(_))), "{steps:?}");
        assert_eq!(turn.on_exit(exited(0), None), Ok(()));
    }

    #[test]
    fn an_exit_without_events_reports_the_status_and_stderr() {
        assert!(BAD_CONFIG.trim().is_empty());
        assert_eq!(
            failure_of(BAD_CONFIG, exited(1), BAD_CONFIG_STDERR),
            EngineError::new(
                FailureKind::CodexFailed,
                "Codex ended without a result (exit status: 1): Error: Model provider `missing` not found"
            )
        );
        let signal = killed_by(libc::SIGKILL);
        assert_eq!(
            failure_of(KILLED, signal, "").message,
            format!(
                "Codex ended without a result ({}): no error output",
                signal.unwrap()
            )
        );
        assert_eq!(
            failure_of(KILLED, None, "").message,
            "Codex ended without a result (did not exit): no error output"
        );
    }

    #[test]
    fn non_json_lines_are_counted_and_the_first_quoted() {
        let long = "x".repeat(300);
        let stdout = format!("  not json  \n\n[1,2]\n{long}\n");
        let error = failure_of(&stdout, exited(2), "boom");
        assert_eq!(
            error,
            EngineError::new(
                FailureKind::CodexFailed,
                "Codex printed 3 unexpected non-JSON line(s) (first: \"not json\") and ended without a result (exit status: 2): boom"
            )
        );
        let (turn, _) = replay(&format!("{long}\n"));
        let message = turn.on_exit(exited(1), None).unwrap_err().message;
        assert!(
            message.contains(&format!("(first: \"{}\")", "x".repeat(200))),
            "{message}"
        );
        // Noise next to a completed turn is ignored.
        let (turn, steps) = replay(&format!("garbage\n{DEFAULT}"));
        assert!(matches!(steps.last(), Some(Step::Done(_))), "{steps:?}");
        assert!(turn.succeeded());
    }

    #[test]
    fn only_the_first_completion_counts_and_a_later_failure_still_fails() {
        let repeated = format!(
            "{DEFAULT}{}\n{{\"type\":\"turn.failed\",\"error\":{{\"message\":\"late\\nsecond line\"}}}}\n",
            DEFAULT.lines().last().unwrap()
        );
        let (turn, steps) = replay(&repeated);
        let done = steps
            .iter()
            .filter(|step| matches!(step, Step::Done(_)))
            .count();
        assert_eq!(done, 1, "{steps:?}");
        assert!(turn.completed() && !turn.succeeded());
        assert_eq!(
            turn.on_exit(exited(0), None),
            Err(EngineError::new(FailureKind::CodexFailed, "late"))
        );
    }

    #[test]
    fn stopped_runs_say_why_and_what_to_do() {
        let error = timed_out(Duration::from_secs(90));
        assert_eq!(error.kind, FailureKind::Timeout);
        assert!(error.message.contains("timeout of 90 s"), "{error}");
        let error = line_too_long();
        assert_eq!(error.kind, FailureKind::CodexFailed);
        assert!(error.message.contains("longer than 16 MiB"), "{error}");
        assert!(error.message.contains("Check the Codex binary"), "{error}");
    }
}
