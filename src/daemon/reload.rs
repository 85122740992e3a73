//! `reload`: ask the running server to re-read its config (`POST /admin/reload`, authenticated with
//! the keys the state file and the config know), then print what changed: profiles added, changed,
//! removed and unchanged, and what only a restart applies.
//!
//! It builds no config itself (the server validates and swaps, or keeps the old snapshot on error) and
//! never signals the server; it requires the pid file and the state file to describe the same live pid.

use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::ReloadArgs;

use super::display::{redact, string_items};
use super::files::{DaemonFiles, DaemonState};
use super::http::{http, Method};
use super::process::PidFile;

/// Timeout of `POST /admin/reload` (a reload probes the Codex binary again).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn run(args: &ReloadArgs) -> anyhow::Result<i32> {
    let files = DaemonFiles::new(&args.files);
    let saved = DaemonState::load(&files.state)?;
    let pid = match PidFile::read(&files.pid) {
        PidFile::Ours(pid) => pid,
        other => bail!(
            "codex-api-proxy is not running ({}): nothing to reload",
            other
                .stale_reason(&files.pid)
                .unwrap_or_else(|| format!("no pid file at {}", files.pid.display()))
        ),
    };
    let Some(saved) = saved.filter(|saved| saved.pid == pid) else {
        bail!(
            "pid {pid} runs, but the state file {} does not describe it",
            files.state.display()
        );
    };
    let keys = saved.keys();
    let mut candidates: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
    if candidates.is_empty() {
        candidates.push(None);
    }
    let mut reply = None;
    for key in candidates {
        let answer = http(
            saved.address,
            Method::POST,
            "/admin/reload",
            key,
            RELOAD_TIMEOUT,
        )
        .await
        .with_context(|| format!("cannot reach {}", saved.url))?;
        let unauthorized = answer.status == 401;
        reply = Some(answer);
        if !unauthorized {
            break;
        }
    }
    let reply = reply.expect("at least one attempt");
    if reply.status != 200 {
        bail!(
            "reload rejected (HTTP {}): {}",
            reply.status,
            redact(&reply.error_message(), &keys)
        );
    }
    print_outcome(&reply.json()["reload"], saved.config.as_deref());
    Ok(0)
}

/// What the server says the reload changed, and what only a restart applies.
fn print_outcome(outcome: &serde_json::Value, config: Option<&std::path::Path>) {
    let list = |name: &str| -> String {
        let items = string_items(&outcome[name]).unwrap_or_default();
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(", ")
        }
    };
    let generation = outcome["generation"].as_u64().unwrap_or(0);
    let path = config.map(|p| p.display().to_string()).unwrap_or_default();
    if outcome["applied"] == true {
        println!("reloaded {path}: now serving generation {generation}");
        println!("  added:     {}", list("added"));
        println!("  changed:   {}", list("changed"));
        println!("  removed:   {}", list("removed"));
        println!("  unchanged: {}", list("unchanged"));
    } else {
        println!("{path} is already in service: generation {generation}, nothing changed");
    }
    if let Some(required) =
        string_items(&outcome["restart_required"]).filter(|items| !items.is_empty())
    {
        println!(
            "restart required for: {} (`codex-api-proxy restart` applies them)",
            required.join(", ")
        );
    }
}
