//! Applying a changed config file while serving: read, validate, build the whole new snapshot, publish it
//! with one `store`, retire the pools that are no longer used. On any error nothing changes; the error is
//! recorded for `/ready` and `/metrics` and logged once.
//!
//! Entry point: [`reload`]. Reloads are serialised by a lock, and each one reads the file afresh, so a save
//! that lands during a reload is applied by the next one (the watcher always asks again after an event).

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{self, ConfigErrors};
use crate::snapshot::{ChangeSummary, CodexStatus, Snapshot};
use crate::state::AppState;

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

static RELOAD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Re-reads the config file and applies it if it is valid and different.
pub async fn reload(state: &AppState, trigger: &str) -> Result<ReloadOutcome, ReloadError> {
    let _serialised = RELOAD_LOCK.lock().await;
    let Some(path) = state.config_path().cloned() else {
        return Err(ReloadError::NoConfigFile);
    };
    let current = state.snapshot();
    let loaded = std::fs::read_to_string(&path)
        .map_err(|err| ConfigErrors {
            path: path.display().to_string(),
            problems: vec![config::Problem {
                line: None,
                profile: None,
                message: format!("cannot read the file: {err}"),
            }],
        })
        .and_then(|text| {
            let lookup = |name: &str| std::env::var(name).ok();
            let config = config::parse(&text, &path, state.overrides(), &lookup)?;
            let table = toml::from_str::<toml::Table>(&text).ok();
            Ok((config, table))
        });
    let (config, table) = match loaded {
        Ok(loaded) => loaded,
        Err(errors) => {
            let message = errors.to_string();
            let repeated = state.reload_status().last_error.as_deref() == Some(message.as_str());
            state.update_reload_status(|status| {
                status.reloads_failed += 1;
                status.last_reload_at = Some(SystemTime::now());
                status.last_error = Some(message.clone());
            });
            if !repeated {
                tracing::error!(
                    trigger,
                    "config reload rejected; still serving generation {}: {message}",
                    current.generation
                );
            }
            return Err(ReloadError::Invalid(errors));
        }
    };
    let mut restart_required = Vec::new();
    let running = &current.config.server;
    if config.server.host != running.host {
        restart_required.push(format!("host ({} → {})", running.host, config.server.host));
    }
    if config.server.port != running.port && state.overrides().port.is_none() {
        restart_required.push(format!("port ({} → {})", running.port, config.server.port));
    }
    if table.is_some() && table == current.source_table {
        state.update_reload_status(|status| {
            status.last_reload_at = Some(SystemTime::now());
            status.last_error = None;
        });
        return Ok(ReloadOutcome {
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
        });
    }
    let codex = CodexStatus::probe(&config.server.codex_bin).await;
    let (mut snapshot, changes) =
        Snapshot::build(config, current.generation + 1, codex, Some(&current));
    snapshot.source_table = table;
    for profile in &snapshot.config.profiles {
        let _ = crate::cwd::ensure_default_cwd(profile);
    }
    let snapshot = Arc::new(snapshot);
    state.publish(snapshot.clone());
    snapshot.retire_unused(&current);
    state.update_reload_status(|status| {
        status.reloads_ok += 1;
        status.last_reload_at = Some(SystemTime::now());
        status.last_error = None;
        status.restart_required = restart_required.clone();
    });
    tracing::info!(
        trigger,
        generation = snapshot.generation,
        added = ?changes.added,
        changed = ?changes.changed,
        removed = ?changes.removed,
        "config reloaded"
    );
    if !restart_required.is_empty() {
        tracing::warn!("restart required for: {}", restart_required.join(", "));
    }
    Ok(ReloadOutcome {
        generation: snapshot.generation,
        applied: true,
        changes,
        restart_required,
    })
}
