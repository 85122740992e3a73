//! The daemon commands: background `start` with a readiness wait, `stop`, `status`, `restart`, `check`
//! and `reload`. Entry point: [`run_command`] (`start --foreground` goes straight to
//! [`crate::server::serve_foreground`]). This file owns the dispatch and the items the rest of the
//! crate uses ([`exposure_warning`], [`with_api_key_from_stdin`]); each command lives in a file of its
//! own, on top of `files`, `process`, `http` and `display`.
//!
//! A background server is this same binary re-run as `start --foreground …` in a session of its own
//! (`setsid`), with stdout and stderr appended to the log file. Three files describe it (by default in
//! `~/.codex-api-proxy`):
//! - the pid file: written atomically (temp file + rename) as soon as the server is spawned, removed by
//!   `stop` and by a `start` that failed, so it never outlives the server it names;
//! - the state file (mode 0600): the last *successful* start's settings, api key included (for
//!   `restart`, and to authenticate `reload`), and the real address, read from the server's
//!   `listening on` line (with `--port 0` nothing else knows the port);
//! - the log file: the server's output, appended to by every start.
//!
//! The api key reaches the server on its stdin (`--api-key-stdin`), never on its command line or in
//! the environment its Codex processes inherit.
//!
//! A pid only counts as our server if the process is alive (not a zombie), its command line names
//! this program, and — where it matters — `/health` at the saved address answers with the same pid;
//! anything else is a stale pid file, reported and cleared but never signalled. `start`, `stop` and
//! `restart` hold an advisory lock next to the pid file so two of them never interleave.
//!
//! This module serves nothing and never reads a request; keys are printed only as `<redacted>`.

mod check;
mod display;
mod files;
mod http;
mod process;
mod reload;
mod restart;
mod start;
mod status;
mod stop;

use anyhow::{bail, Context};

use crate::cli::{Command, StartArgs};

/// Runs a non-foreground command and returns its exit code.
pub async fn run_command(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Start(args) if args.foreground => {
            crate::server::serve_foreground(&args).await.map(|_| 0)
        }
        Command::Start(args) => start::run(args).await,
        Command::Stop(args) => stop::run(&args).await,
        Command::Status(args) => status::run(&args).await,
        Command::Restart(args) => restart::run(args).await,
        Command::Check(args) => check::run(&args),
        Command::Reload(args) => reload::run(&args).await,
    }
}

/// The warning the original tool printed for a non-loopback bind without an api key, or `None`.
pub fn exposure_warning(host: &str, api_keys: &[String]) -> Option<String> {
    (!crate::server::is_loopback(host) && api_keys.is_empty()).then(|| {
        format!(
            "WARNING: binding to non-loopback host {host} without an API key. Anyone who can reach this port \
             can spend your Codex quota and read files in the allowed roots. Set --api-key or [server] api_keys."
        )
    })
}

/// `start --foreground --api-key-stdin` (how `start` runs the background server): the settings with
/// the api key read from the first line of stdin. Other settings are returned unchanged.
pub fn with_api_key_from_stdin(args: &StartArgs) -> anyhow::Result<StartArgs> {
    let mut args = args.clone();
    if args.api_key_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the api key from stdin")?;
        let key = line.trim_end_matches(['\r', '\n']);
        if key.is_empty() {
            bail!("--api-key-stdin: stdin held no api key");
        }
        args.api_key = Some(key.to_string());
    }
    Ok(args)
}

/// `items` without repeats, each kept where it first appeared.
fn unique_in_order<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut unique = Vec::new();
    for item in items {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    unique
}
