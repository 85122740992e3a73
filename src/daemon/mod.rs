//! The daemon commands: background `start` with a readiness wait, `stop`, `status`, `restart`, `check`
//! and `reload`. Entry point: [`run_command`]; it returns [`Outcome::ServeForeground`] for
//! `start --foreground`, which `main` hands to `server::serve_foreground` (daemon and server never
//! import each other). This file owns the dispatch; each command lives in a file of its own, on top of
//! `files`, `process`, `http` and `display`.
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
//! The api key reaches the server on its stdin (`--secrets-stdin`), never on its command line or in
//! the environment its Codex processes inherit; so do the values of the `${VAR}`s the config file
//! references, which the server uses to expand the file at start and on every reload.
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

use crate::cli::{Command, StartArgs};

/// What the command line asks of the process after a daemon command ran.
pub enum Outcome {
    /// Exit with this code.
    Exit(i32),
    /// Serve in this process (`start --foreground`, `restart --foreground` once the old server is gone).
    ServeForeground(Box<StartArgs>),
}

/// Runs a command; serving in the foreground is left to the caller (`main`), so this module never
/// depends on the server.
pub async fn run_command(command: Command) -> anyhow::Result<Outcome> {
    let code = match command {
        Command::Start(args) if args.foreground => {
            return Ok(Outcome::ServeForeground(Box::new(args)))
        }
        Command::Start(args) => start::run(args).await?,
        Command::Stop(args) => stop::run(&args).await?,
        Command::Status(args) => status::run(&args).await?,
        Command::Restart(args) => return restart::run(args).await,
        Command::Check(args) => check::run(&args)?,
        Command::Reload(args) => reload::run(&args).await?,
        Command::Usage(args) => args.run()?,
    };
    Ok(Outcome::Exit(code))
}

/// Prints the exposure and CORS warnings `config` deserves to stderr.
pub fn print_warnings(config: &crate::config::Config) {
    for warning in config.warnings() {
        eprintln!("{warning}");
    }
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
