//! `stop`: SIGTERM to the server the pid file names (it drains for its grace period), SIGKILL to its
//! whole session only if it outlives that grace period plus a margin, then SIGKILL to anything left in
//! the session, so no Codex process survives; the pid file goes last. [`stop_locked`] is also
//! `restart`'s first half.
//!
//! A pid that is not ours (dead or reused) is never signalled: the stale pid file is reported and
//! removed, and only a server this state file started has its session's leftovers killed. It does not
//! touch the state file, which `restart` and `status` still read.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::cli::StopArgs;

use super::files::{lock, remove_pid_file, DaemonFiles, DaemonState, DEFAULT_GRACE_SECONDS};
use super::process::{kill_session, send_signal, wait_exit, PidFile};

/// What `stop` waits beyond the grace period before killing: the server's own wind-down (ending the
/// remaining streams, stopping Codex processes, the runtime's shutdown).
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// How long a killed process may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn run(args: &StopArgs) -> anyhow::Result<i32> {
    let files = DaemonFiles::new(&args.files);
    let _lock = lock(&files).await?;
    let state = DaemonState::load(&files.state).ok().flatten();
    stop_locked(&files, state.as_ref(), args.grace_seconds).await?;
    Ok(0)
}

/// Stops the server the pid file names, if it is ours. Stale pid files are removed; a pid that is not
/// ours is never signalled. The caller holds the management lock.
pub(super) async fn stop_locked(
    files: &DaemonFiles,
    state: Option<&DaemonState>,
    grace_seconds: Option<u64>,
) -> anyhow::Result<()> {
    let pid = match PidFile::read(&files.pid) {
        PidFile::Missing => {
            println!(
                "codex-api-proxy is not running (no pid file at {})",
                files.pid.display()
            );
            return Ok(());
        }
        PidFile::Ours(pid) => pid,
        stale => {
            let reason = stale.stale_reason(&files.pid).unwrap_or_default();
            let _ = std::fs::remove_file(&files.pid);
            println!("codex-api-proxy is not running: {reason}; removed it");
            if let PidFile::Dead(pid) = stale {
                // A server that died leaves its session's Codex processes, if any, behind.
                if state.is_some_and(|state| state.pid == pid) {
                    report_leftovers(kill_session(pid));
                }
            }
            return Ok(());
        }
    };
    // The server drains for the grace period it was started with; this command may wait otherwise.
    let server_grace = state
        .filter(|state| state.pid == pid)
        .map_or(DEFAULT_GRACE_SECONDS, DaemonState::grace_seconds);
    let wait = Duration::from_secs(grace_seconds.unwrap_or(server_grace)) + STOP_MARGIN;
    let started = Instant::now();
    send_signal(pid, libc::SIGTERM);
    println!(
        "stopping codex-api-proxy (pid {pid}): sent SIGTERM; in-flight requests get up to {server_grace} s \
         to finish (killing it if it still runs after {} s) ...",
        wait.as_secs()
    );
    let mut killed = false;
    if !wait_exit(pid, wait).await {
        let count = kill_session(pid);
        killed = true;
        println!(
            "pid {pid} was still running after {:.1} s: sent SIGKILL to its session ({count} process(es))",
            started.elapsed().as_secs_f64()
        );
        if !wait_exit(pid, KILL_WAIT).await {
            bail!(
                "pid {pid} is still running after SIGKILL; the pid file {} was kept",
                files.pid.display()
            );
        }
    }
    // The server ends its Codex processes itself; anything still in its session is a leftover.
    let leftovers = kill_session(pid);
    remove_pid_file(&files.pid, Some(pid));
    if !killed {
        println!(
            "stopped codex-api-proxy (pid {pid}) after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("stopped codex-api-proxy (pid {pid})");
    }
    report_leftovers(leftovers);
    println!("removed the pid file {}", files.pid.display());
    Ok(())
}

/// Says how many processes of a server's session were killed after it ended, if any.
fn report_leftovers(count: usize) {
    if count > 0 {
        println!("killed {count} leftover process(es) of its session");
    }
}
