//! Processes by pid: the verdict on the pid a pid file names ([`PidFile`]: missing, garbled, dead,
//! reused by something else, or our live server), spawning the background server in a session of its
//! own ([`spawn_server`]), signals, and the server's session, whose leftovers are killed so no Codex
//! process outlives the server.
//!
//! "Ours" here means alive (not a zombie) and running this program's `start`; whether it answers
//! `/health` as that pid is for the commands to ask over `http`. This file writes none of the daemon's
//! files and never waits for readiness.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::Settings;

/// What the pid file says about the server.
#[derive(Debug)]
pub(super) enum PidFile {
    Missing,
    /// Not a pid.
    Garbled(String),
    /// The pid is not running.
    Dead(u32),
    /// The pid runs something else (it was reused).
    Foreign {
        pid: u32,
        command: String,
    },
    /// The pid runs this program.
    Ours(u32),
}

impl PidFile {
    pub(super) fn read(path: &Path) -> PidFile {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return PidFile::Missing,
            Err(err) => return PidFile::Garbled(err.to_string()),
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            return PidFile::Garbled(format!("{:?} is not a pid", text.trim()));
        };
        if pid <= 1 {
            return PidFile::Garbled(format!("{pid} is not a server's pid"));
        }
        if !process_alive(pid) {
            return PidFile::Dead(pid);
        }
        match process_arguments(pid) {
            Some(arguments) if !is_our_server(&arguments) => PidFile::Foreign {
                pid,
                command: arguments.join(" "),
            },
            _ => PidFile::Ours(pid),
        }
    }

    /// Why this pid file is stale, if it is.
    pub(super) fn stale_reason(&self, path: &Path) -> Option<String> {
        match self {
            PidFile::Missing | PidFile::Ours(_) => None,
            PidFile::Garbled(why) => Some(format!(
                "the pid file {} is unusable: {why}",
                path.display()
            )),
            PidFile::Dead(pid) => Some(format!(
                "stale pid file {}: pid {pid} is not running",
                path.display()
            )),
            PidFile::Foreign { pid, command } => Some(format!(
                "stale pid file {}: pid {pid} is `{}`, not codex-api-proxy (the pid was reused)",
                path.display(),
                shorten(command, 80)
            )),
        }
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// Runs this program as `start --foreground` with `args`, in a session of its own, stdout and stderr
/// appended to `log`. With an api key or config variables, the server's stdin is a pipe the caller
/// writes them to (`crate::cli::Secrets`).
pub(super) fn spawn_server(args: &Settings, log: File) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the path of this program")?;
    let mut command = std::process::Command::new(&exe);
    command
        .args(["start", "--foreground"])
        .args(args.to_flags())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // The key (folded in from the flag or the environment) and the config's `${VAR}` values are handed
    // over on stdin: the key shows neither in a process listing nor in the environment the server's
    // Codex processes inherit, and the server can still expand `${CODEX_PROXY_API_KEY}`.
    command.env_remove("CODEX_PROXY_API_KEY");
    if args.api_key.is_some() || !args.config_env.is_empty() {
        command.arg("--secrets-stdin").stdin(Stdio::piped());
    }
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))
}

/// The fields of `/proc/PID/stat` after the command (state, ppid, pgrp, session, …); `None` without
/// procfs or the process.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether the [`stat_fields`] of a process say it has ended (a zombie only waits to be reaped).
fn has_ended(fields: &[String]) -> bool {
    matches!(fields.first().map(String::as_str), Some("Z" | "X"))
}

/// Whether `pid` is a live process (zombies are dead: they only wait to be reaped).
fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 1 {
        return raw == 1;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(raw, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !stat_fields(pid).is_some_and(|fields| has_ended(&fields))
}

/// The arguments of `pid` (`/proc`, else `ps`, which cannot tell spaces inside arguments).
fn process_arguments(pid: u32) -> Option<Vec<String>> {
    if let Ok(bytes) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        let text = String::from_utf8_lossy(&bytes);
        return Some(
            text.split('\0')
                .filter(|arg| !arg.is_empty())
                .map(str::to_string)
                .collect(),
        );
    }
    let output = std::process::Command::new("ps")
        .args(["-o", "command=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let arguments: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    (!arguments.is_empty()).then_some(arguments)
}

/// Whether a command line is a server this program started: this program (by name) running `start`.
/// An editor that has `codex-api-proxy.toml` open does not count.
fn is_our_server(arguments: &[String]) -> bool {
    let own_name = std::env::current_exe().ok().and_then(|exe| {
        exe.file_name()
            .map(|name| name.to_string_lossy().to_string())
    });
    let Some(program) = arguments.first() else {
        return false;
    };
    let program = Path::new(program)
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default();
    let named = program.contains("codex-api-proxy") || own_name.is_some_and(|own| own == program);
    named && arguments.iter().any(|arg| arg == "start")
}

/// Live processes in session `sid` (the background server's session: the server and its Codex
/// processes, whatever their process group); `None` without `/proc`.
fn session_members(sid: u32) -> Option<Vec<u32>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let members = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| {
            let Some(fields) = stat_fields(pid) else {
                return false;
            };
            // State, ppid, pgrp, session.
            fields.get(3).and_then(|s| s.parse::<u32>().ok()) == Some(sid) && !has_ended(&fields)
        })
        .collect();
    Some(members)
}

/// `pid` as the argument of kill(2)/killpg(2), unless it would address more than one process or init.
fn signal_target(pid: u32) -> Option<i32> {
    i32::try_from(pid).ok().filter(|&pid| pid > 1)
}

pub(super) fn send_signal(pid: u32, signal: i32) {
    if let Some(pid) = signal_target(pid) {
        // SAFETY: kill(2) only sends a signal.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// SIGKILLs every process of session `sid`; without `/proc`, the process group of the same id (the
/// server's, which its Codex processes leave for groups of their own). Returns how many were signalled.
pub(super) fn kill_session(sid: u32) -> usize {
    match session_members(sid) {
        Some(members) => {
            for &pid in &members {
                send_signal(pid, libc::SIGKILL);
            }
            members.len()
        }
        None => {
            if let Some(group) = signal_target(sid) {
                // SAFETY: killpg only sends a signal; a finished group returns ESRCH.
                unsafe {
                    libc::killpg(group, libc::SIGKILL);
                }
            }
            0
        }
    }
}

/// Waits until `pid` is gone; false on timeout.
pub(super) async fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::files::write_pid_file;

    #[test]
    fn pid_files_of_dead_or_foreign_processes_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.pid");
        assert!(matches!(PidFile::read(&path), PidFile::Missing));
        std::fs::write(&path, "nonsense").unwrap();
        assert!(matches!(PidFile::read(&path), PidFile::Garbled(_)));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        write_pid_file(&path, dead).unwrap();
        assert!(matches!(PidFile::read(&path), PidFile::Dead(pid) if pid == dead));
        let mut sleeper = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        write_pid_file(&path, sleeper.id()).unwrap();
        let read = PidFile::read(&path);
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(matches!(read, PidFile::Foreign { .. }), "{read:?}");
    }

    #[test]
    fn only_our_server_counts_as_ours() {
        let args = |text: &str| text.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert!(is_our_server(&args(
            "/usr/bin/codex-api-proxy start --foreground --port=0"
        )));
        assert!(!is_our_server(&args("vim codex-api-proxy.toml")));
        assert!(!is_our_server(&args("sleep 30")));
        assert!(!is_our_server(&[]));
    }
}
