//! Records the `codex exec --json` outputs the exec protocol core is unit-tested with (not a test).
//!
//! For each case below it starts the pinned Codex CLI exactly as the exec engine would (the argv of
//! `engine::exec::exec_args` for a profile against the test suite's mock model, a fresh `HOME` and
//! `CODEX_HOME`, the prompt on stdin), and writes what Codex printed to
//! `src/engine/exec/fixtures/<case>.exit<CODE>.jsonl` (stdout, verbatim) and, when Codex wrote anything
//! there, `<case>.exit<CODE>.stderr`. `CODE` is the exit code, or `sig<N>` when Codex was killed by
//! signal N. Old recordings of a case are removed first.
//!
//! The mock always answers with a message, so Codex never completes a turn without one against it; the
//! `no_final_message` fixture is therefore derived: the `default` recording without its `agent_message`
//! line (what Codex prints when the model's answer has no output text).
//!
//! Run: `cargo run --example record_exec_fixtures` (needs `npm ci` for the pinned Codex CLI), then review
//! the diff of `src/engine/exec/fixtures/` and run `cargo test --lib engine::exec`.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use codex_api_proxy::codex::launch::{resolve, ResolvedCodex};
use codex_api_proxy::config::{parse, Profile, ServerOverrides};
use codex_api_proxy::engine::exec::exec_args;
use codex_api_proxy::engine::Job;
use codex_api_proxy::turn::{Role, TurnRequest};
use proxy_test_support::harness::{
    codex_bin, manifest_dir, profile_toml, server_toml, toml_string_list,
};
use proxy_test_support::mock_model::MockModel;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// One recording: its name, the prompt (mock directives), extra `-c` values, and whether Codex is killed
/// (SIGKILL to its group) as soon as the turn has started, as the engine does on timeout or cancellation.
struct Case {
    name: &'static str,
    prompt: &'static str,
    extra_config: &'static [&'static str],
    kill_after_turn_started: bool,
}

const fn case(name: &'static str, prompt: &'static str) -> Case {
    Case {
        name,
        prompt,
        extra_config: &[],
        kill_after_turn_started: false,
    }
}

const CASES: &[Case] = &[
    case("default", "Say hello"),
    case("reply", "mock:reply=Two_words mock:deltas=2"),
    case("status_429", "mock:status=429"),
    case("quota", "mock:status=429 mock:quota"),
    case("context", "mock:status=400 mock:context"),
    case("overloaded", "mock:status=503"),
    case("status_500", "mock:status=500"),
    case("failed", "mock:failed"),
    case("cut", "mock:cut"),
    case("eof", "mock:eof"),
    Case {
        name: "killed",
        prompt: "mock:hang",
        extra_config: &[],
        kill_after_turn_started: true,
    },
    Case {
        name: "bad_config",
        prompt: "Say hello",
        extra_config: &["model_provider=\"missing\""],
        kill_after_turn_started: false,
    },
];

/// What one run printed and how it ended.
struct Recording {
    stdout: String,
    stderr: String,
    code: String,
}

async fn record(
    codex: &ResolvedCodex,
    profile: &Profile,
    workspace: &Path,
    scratch: &Path,
    case: &Case,
) -> Recording {
    let home = scratch.join(case.name);
    std::fs::create_dir_all(home.join("codex-home")).unwrap();
    let job = Job {
        request_id: case.name.to_string(),
        request: TurnRequest::from_texts(None, [(Role::User, case.prompt.to_string())]),
        cwd: workspace.to_path_buf(),
        model: profile.runtime.model.clone(),
        received_at: Instant::now(),
        hold: Default::default(),
    };
    let mut args = exec_args(profile, &job);
    let stdin_marker = args.pop().expect("exec_args ends with `-`");
    for item in case.extra_config {
        args.extend([OsString::from("-c"), OsString::from(item)]);
    }
    args.push(stdin_marker);
    let mut child = tokio::process::Command::new(&codex.program)
        .args(args)
        .current_dir(workspace)
        .envs(codex.env.iter().map(|(k, v)| (k, v)))
        .env("HOME", &home)
        .env("CODEX_HOME", home.join("codex-home"))
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("codex starts");
    let pid = child.id().expect("codex is running") as i32;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(codex_api_proxy::codex::prompt::transcript(&job.request).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let mut stderr = child.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        stdout.push_str(&line);
        stdout.push('\n');
        if case.kill_after_turn_started && line.contains("\"turn.started\"") {
            codex_api_proxy::codex::launch::signal_group(pid, libc::SIGKILL);
        }
    }
    let status = child.wait().await.unwrap();
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("sig{signal}"),
        (None, None) => "unknown".to_string(),
    };
    Recording {
        stdout,
        stderr: stderr.await.unwrap(),
        code,
    }
}

/// Removes the earlier recordings of `name` from `dir`.
fn remove_old(dir: &Path, name: &str) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let file = entry.file_name().to_string_lossy().to_string();
        if file.starts_with(&format!("{name}.exit")) {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
}

#[tokio::main]
async fn main() {
    let mock = MockModel::start().await;
    let scratch = tempfile::Builder::new()
        .prefix("record-exec-")
        .tempdir_in(manifest_dir().join("target"))
        .unwrap();
    let workspace = std::fs::canonicalize(scratch.path()).unwrap();
    let config_text = format!(
        "{}\n{}",
        server_toml(&codex_bin()),
        profile_toml(
            "record",
            &workspace,
            &toml_string_list(&mock.provider_overrides())
        ),
    );
    let config = parse(
        &config_text,
        &workspace.join("config.toml"),
        &ServerOverrides::default(),
        &|_| None,
    )
    .expect("the recording config is valid");
    let profile = &config.profiles[0];
    let codex = resolve(&config.server.codex_bin).expect("the Codex CLI resolves");
    let out: PathBuf = manifest_dir().join("src/engine/exec/fixtures");
    std::fs::create_dir_all(&out).unwrap();
    for case in CASES {
        let recording = record(&codex, profile, &workspace, scratch.path(), case).await;
        remove_old(&out, case.name);
        let base = format!("{}.exit{}", case.name, recording.code);
        std::fs::write(out.join(format!("{base}.jsonl")), &recording.stdout).unwrap();
        if !recording.stderr.trim().is_empty() {
            std::fs::write(out.join(format!("{base}.stderr")), &recording.stderr).unwrap();
        }
        if case.name == "default" {
            let without_message: String = recording
                .stdout
                .lines()
                .filter(|line| !line.contains("\"agent_message\""))
                .map(|line| format!("{line}\n"))
                .collect();
            remove_old(&out, "no_final_message");
            let name = format!("no_final_message.exit{}.jsonl", recording.code);
            std::fs::write(out.join(name), without_message).unwrap();
        }
        println!(
            "{:<12} exit {:<5} {} stdout line(s), {} stderr byte(s)",
            case.name,
            recording.code,
            recording.stdout.lines().count(),
            recording.stderr.len()
        );
    }
}
