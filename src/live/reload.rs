//! Applying a changed config file while serving: read, validate, build the whole new snapshot, publish it
//! with one `store`. On any error nothing changes; the error is recorded for `/ready` and `/metrics` and
//! logged once (the same error again is only counted).
//!
//! Entry point: [`reload`], called by the file watcher ([`crate::live::watch`]), SIGHUP and
//! `POST /admin/reload`. `${VAR}`s are expanded from the environment, else from the values the server
//! was started with ([`AppState::config_var`]). A panic inside a reload is caught and recorded as a
//! failed reload. Reloads are serialised by [`AppState::reload_lock`] and each one reads the file
//! afresh, so a save that lands while a reload runs is applied by the next one (the watcher asks again
//! after every event; SIGHUP and the admin endpoint wait for the lock).
//!
//! A file that parses to the table already in service (same keys and values in the same order; only
//! comments or layout changed) is a no-op: same generation, no pool touched. Otherwise
//! [`Snapshot::build`] reuses the pool of every profile whose runtime settings are unchanged; the pools
//! of changed and removed profiles are retired once no snapshot holds them (see [`crate::live::snapshot`]).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::config::{self, Config, ConfigErrors, ServerConfig};
use crate::live::snapshot::{same_table, ChangeSummary, CodexStatus, Snapshot};
use crate::live::state::{AppState, StartupServer};

/// The result of one reload, as `/admin/reload` and the `reload` command report it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    pub generation: u64,
    /// False when the file parsed to the configuration already in service.
    pub applied: bool,
    #[serde(flatten)]
    pub changes: ChangeSummary,
    /// `[server]` settings that changed but only apply after a restart.
    pub restart_required: Vec<String>,
}

/// Why a reload was rejected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    #[error("the server was started without --config; there is no file to reload")]
    NoConfigFile,
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// The `[server]` settings that differ from what the process started with and cannot change live.
fn restart_required(started: &StartupServer, server: &ServerConfig) -> Vec<String> {
    let mut out = Vec::new();
    if server.host != started.host {
        out.push(format!("host ({} → {})", started.host, server.host));
    }
    if server.port != started.port {
        out.push(format!("port ({} → {})", started.port, server.port));
    }
    if server.log_level != started.log_level {
        out.push(format!(
            "log_level ({} → {})",
            started.log_level, server.log_level
        ));
    }
    if server.usage_db != started.usage_db {
        let shown = |path: &Option<std::path::PathBuf>| {
            path.as_ref()
                .map_or_else(|| "off".to_string(), |path| path.display().to_string())
        };
        out.push(format!(
            "usage_db ({} → {})",
            shown(&started.usage_db),
            shown(&server.usage_db)
        ));
    }
    if server.usage_retention_days != started.usage_retention_days {
        out.push(format!(
            "usage_retention_days ({} → {})",
            started.usage_retention_days, server.usage_retention_days
        ));
    }
    out
}

/// Re-reads the config file and applies it if it is valid and different.
///
/// The work runs in a task of its own, so that a panic inside it (a bug) is one failed reload —
/// recorded for `/ready` and `/metrics` like a rejected file — and never the end of the caller: the
/// file watcher, the SIGHUP handler or the admin request.
pub async fn reload(state: &AppState, trigger: &str) -> Result<ReloadOutcome, ReloadError> {
    let task = {
        let state = state.clone();
        let trigger = trigger.to_string();
        tokio::spawn(async move { reload_now(&state, &trigger).await })
    };
    match task.await {
        Ok(result) => result,
        Err(err) => {
            let path = state.config_path().cloned().unwrap_or_default();
            let errors = ConfigErrors {
                path: path.display().to_string(),
                problems: vec![config::Problem {
                    line: None,
                    profile: None,
                    message: format!(
                        "the reload failed unexpectedly ({}); the previous configuration is still \
                         serving: save the file again to retry, and report this with the server log",
                        panic_message(err)
                    ),
                }],
            };
            let current = state.snapshot();
            record_failure(state, trigger, current.generation, &errors);
            Err(ReloadError::Invalid(errors))
        }
    }
}

/// What a failed task said: its panic message, or that it was cancelled.
pub fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => match payload.downcast::<String>() {
            Ok(text) => format!("panic: {text}"),
            Err(payload) => match payload.downcast::<&'static str>() {
                Ok(text) => format!("panic: {text}"),
                Err(_) => "panic".to_string(),
            },
        },
        Err(_) => "cancelled".to_string(),
    }
}

/// Counts a rejected reload and logs it once (the same error again is only counted).
fn record_failure(state: &AppState, trigger: &str, generation: u64, errors: &ConfigErrors) {
    let message = errors.to_string();
    let mut repeated = false;
    state.update_reload_status(|status| {
        repeated = status.last_error.as_deref() == Some(message.as_str());
        status.reloads_failed += 1;
        status.last_reload_at = Some(SystemTime::now());
        status.last_error = Some(message.clone());
    });
    if !repeated {
        // One line per rejected file: `path:line: profile `name`: problem`, joined.
        let problems: Vec<String> = errors
            .problems
            .iter()
            .map(|problem| errors.describe(problem))
            .collect();
        tracing::error!(
            trigger,
            "config reload rejected; still serving generation {generation}: {}",
            problems.join("; ")
        );
    }
}

async fn reload_now(state: &AppState, trigger: &str) -> Result<ReloadOutcome, ReloadError> {
    let _serialised = state.reload_lock().lock().await;
    let started = Instant::now();
    let Some(path) = state.config_path().cloned() else {
        return Err(ReloadError::NoConfigFile);
    };
    let current = state.snapshot();
    let lookup = |name: &str| state.config_var(name);
    let config = match config::load_file_with(&path, state.overrides(), &lookup) {
        Ok(loaded) => loaded,
        Err(errors) => {
            record_failure(state, trigger, current.generation, &errors);
            return Err(ReloadError::Invalid(errors));
        }
    };
    let restart_required = restart_required(state.startup_server(), &config.server);
    let unchanged = current
        .source_table
        .as_ref()
        .zip(config.source_table.as_ref())
        .is_some_and(|(served, table)| same_table(served, table))
        // A Codex binary that did not run is probed again even for the same file.
        && current.codex.runnable().is_ok();
    if unchanged {
        return Ok(keep_current(state, trigger, &current, restart_required));
    }
    Ok(apply(state, trigger, config, current, restart_required, started).await)
}

/// The file parsed to the table already in service: clears a recorded error and changes nothing else.
fn keep_current(
    state: &AppState,
    trigger: &str,
    current: &Snapshot,
    restart_required: Vec<String>,
) -> ReloadOutcome {
    let mut cleared = false;
    let mut previous_restart = Vec::new();
    state.update_reload_status(|status| {
        cleared = status.last_error.take().is_some();
        status.last_reload_at = Some(SystemTime::now());
        previous_restart =
            std::mem::replace(&mut status.restart_required, restart_required.clone());
    });
    if cleared {
        tracing::info!(
            trigger,
            generation = current.generation,
            "config file is valid again and matches the configuration in service"
        );
    }
    warn_restart(&previous_restart, &restart_required);
    ReloadOutcome {
        generation: current.generation,
        applied: false,
        changes: ChangeSummary {
            unchanged: current
                .config
                .profiles
                .iter()
                .map(|p| p.name.clone())
                .collect(),
            ..ChangeSummary::default()
        },
        restart_required,
    }
}

/// Builds the next generation from `config` (reusing the pools of unchanged profiles) and publishes it.
async fn apply(
    state: &AppState,
    trigger: &str,
    config: Config,
    current: Arc<Snapshot>,
    restart_required: Vec<String>,
    started: Instant,
) -> ReloadOutcome {
    ensure_default_cwds(&config);
    let codex = current.codex.reprobe(&config.server.codex_bin).await;
    let (snapshot, changes) =
        Snapshot::build(config, current.generation + 1, codex, Some(&current));
    let generation = snapshot.generation;
    state.publish(Arc::new(snapshot));
    // The old snapshot's pools that the new one does not use retire once in-flight requests let go.
    drop(current);
    let mut previous_restart = Vec::new();
    state.update_reload_status(|status| {
        status.reloads_ok += 1;
        status.last_reload_at = Some(SystemTime::now());
        status.last_error = None;
        previous_restart =
            std::mem::replace(&mut status.restart_required, restart_required.clone());
    });
    tracing::info!(
        trigger,
        generation,
        added = ?changes.added,
        changed = ?changes.changed,
        removed = ?changes.removed,
        took_ms = (started.elapsed().as_secs_f64() * 100_000.0).round() / 100.0,
        "config reloaded"
    );
    warn_restart(&previous_restart, &restart_required);
    ReloadOutcome {
        generation,
        applied: true,
        changes,
        restart_required,
    }
}

/// Logs "restart required" when the set of such settings changed (not again on every reload).
fn warn_restart(before: &[String], now: &[String]) {
    if now != before && !now.is_empty() {
        tracing::warn!(
            "restart required for: {} (everything else in the file is applied)",
            now.join(", ")
        );
    }
}

/// Creates every profile's `default_cwd` that is missing (a failure is logged: requests naming a cwd
/// of their own still work).
pub fn ensure_default_cwds(config: &Config) {
    for profile in &config.profiles {
        if let Err(err) = crate::cwd::ensure_default_cwd(profile) {
            tracing::warn!(profile = %profile.name, "cannot create default_cwd {}: {err}", profile.runtime.default_cwd.display());
        }
    }
}

/// Builds generation 1 from a validated config (probing the Codex binary).
pub async fn first_snapshot(config: Config) -> Snapshot {
    let codex = CodexStatus::probe(&config.server.codex_bin).await;
    ensure_default_cwds(&config);
    Snapshot::build(config, 1, codex, None).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, port: u16, level: &str) -> ServerConfig {
        ServerConfig {
            host: host.into(),
            port,
            api_keys: Vec::new(),
            codex_bin: "codex".into(),
            fallback_profile: None,
            max_request_bytes: 1,
            log_level: level.into(),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn restart_is_required_only_for_host_port_log_level_and_the_usage_ledger() {
        let same = server("127.0.0.1", 8765, "info");
        let started = StartupServer {
            host: "127.0.0.1".into(),
            port: 8765,
            log_level: "info".into(),
            usage_db: same.usage_db.clone(),
            usage_retention_days: same.usage_retention_days,
        };
        assert!(restart_required(&started, &same).is_empty());
        let mut other = server("0.0.0.0", 9000, "debug");
        other.api_keys = vec!["k".into()];
        other.codex_bin = "/bin/codex".into();
        other.usage_db = None;
        other.usage_retention_days = 7;
        let required = restart_required(&started, &other);
        assert_eq!(required.len(), 5, "{required:?}");
        assert!(required[0].starts_with("host (127.0.0.1 → 0.0.0.0)"));
        assert!(required[1].starts_with("port (8765 → 9000)"));
        assert!(required[2].starts_with("log_level"));
        assert!(required[3].ends_with("→ off)"), "{}", required[3]);
        assert_eq!(required[4], "usage_retention_days (90 → 7)");
    }
}
