//! The daemon commands: background `start` with a readiness wait, `stop`, `status`, `restart`, `check`
//! and `reload`. Entry point: [`run_command`] (`start --foreground` goes straight to
//! [`crate::server::serve_foreground`]). This file owns the dispatch and the items the rest of the
//! crate uses ([`exposure_warning`], [`cors_warning`], [`with_secrets_from_stdin`]); each command lives in a file of its
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

use anyhow::Context;

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

/// What a background server reads on its stdin (`--secrets-stdin`): one line of JSON.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Secrets {
    #[serde(default)]
    pub(crate) api_key: Option<String>,
    /// The values of the `${VAR}`s the config file references ([`StartArgs::config_env`]).
    #[serde(default)]
    pub(crate) env: std::collections::BTreeMap<String, String>,
}

/// `start --foreground --secrets-stdin` (how `start` runs the background server): the settings with
/// the api key and the config's variables read from the first line of stdin. Other settings are
/// returned unchanged.
pub fn with_secrets_from_stdin(args: &StartArgs) -> anyhow::Result<StartArgs> {
    let mut args = args.clone();
    if args.secrets_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the settings the start command hands over on stdin")?;
        let secrets: Secrets = serde_json::from_str(line.trim_end_matches(['\r', '\n']))
            .context("--secrets-stdin: stdin held no JSON object on its first line")?;
        if let Some(key) = secrets.api_key.filter(|key| !key.is_empty()) {
            args.api_key = Some(key);
        }
        args.config_env.extend(secrets.env);
    }
    Ok(args)
}

/// The warning for `cors_origins = ["*"]`, or `None`.
pub fn cors_warning(origins: &[String]) -> Option<String> {
    origins.iter().any(|origin| origin == "*").then(|| {
        "WARNING: [server] cors_origins contains \"*\": any web page a browser opens may call this API \
         (with the browser's network position; with a key if the page has it). List the origins that \
         need it instead."
            .to_string()
    })
}

/// Prints the exposure and CORS warnings `config` deserves to stderr.
pub fn print_warnings(config: &crate::config::Config) {
    let server = &config.server;
    let warnings = [
        exposure_warning(&server.host, &server.api_keys),
        cors_warning(&server.cors_origins),
    ];
    for warning in warnings.into_iter().flatten() {
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
