//! Noticing config file saves: a `notify` watcher on the file's *parent directory* (editors save by
//! rename, Kubernetes swaps a `..data` symlink), a ~200 ms debounce, and a poll of the file's content
//! every ~2 s for mounts where inotify sees nothing. Every trigger compares a fingerprint of the file's
//! bytes, so only real changes reach [`crate::reload::reload`]. Dropping the [`WatchGuard`] stops it all.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::state::AppState;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Stops the watcher and its task when dropped.
pub struct WatchGuard {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fingerprint of the file's bytes (following symlinks); `None` if unreadable.
fn fingerprint(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

fn poll_interval() -> Duration {
    std::env::var("CODEX_PROXY_CONFIG_POLL_MS")
        .ok()
        .and_then(|value| value.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(2))
}

/// Starts watching the config file of `state`, if it has one.
pub fn spawn(state: AppState) -> Option<WatchGuard> {
    let path: PathBuf = state.config_path()?.clone();
    let directory = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (events, mut receiver) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
        if result.is_ok() {
            let _ = events.send(());
        }
    })
    .and_then(|mut watcher| {
        watcher.watch(&directory, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    let watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(err) => {
            tracing::warn!(
                "cannot watch {}: {err}; polling every {:?} instead",
                directory.display(),
                poll_interval()
            );
            None
        }
    };
    let task = tokio::spawn(async move {
        let mut last = fingerprint(&path);
        let mut poll = tokio::time::interval(poll_interval());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let from_event = tokio::select! {
                event = receiver.recv() => {
                    if event.is_none() {
                        // No watcher: polling only.
                        std::future::pending::<()>().await;
                    }
                    true
                }
                _ = poll.tick() => false,
            };
            if from_event {
                // Debounce: wait until the directory has been quiet for DEBOUNCE.
                loop {
                    tokio::time::sleep(DEBOUNCE).await;
                    let mut more = false;
                    while receiver.try_recv().is_ok() {
                        more = true;
                    }
                    if !more {
                        break;
                    }
                }
            }
            let current = fingerprint(&path);
            if current.is_none() || current == last {
                continue;
            }
            last = current;
            let trigger = if from_event { "watch" } else { "poll" };
            let _ = crate::reload::reload(&state, trigger).await;
        }
    });
    Some(WatchGuard {
        _watcher: watcher,
        task,
    })
}
