//! Noticing config file saves, however the editor saves: in place, write-to-temp + rename, or a
//! Kubernetes-style `..data` symlink swap.
//!
//! - A `notify` watcher on the file's *parent directory* (a rename-save replaces the inode, and a symlink
//!   swap never touches `config.toml` itself), plus the directory of the file the symlinks lead to when
//!   that is elsewhere. Only events that name the config file or a link on the way to it count; opening
//!   and reading files (the proxy's own reads included) never do.
//! - A debounce: after such an event, wait until [`DEBOUNCE`] passes without another and no writer
//!   that modified the file in place still has it open (no `IN_CLOSE_WRITE` yet), at most
//!   [`MAX_DEBOUNCE`]; then look at the file. So an in-place save is read once it is complete.
//! - A poll of the file's content every 2 s (`CODEX_PROXY_CONFIG_POLL_MS` sets the interval), for mounts
//!   where inotify sees nothing (NFS, some container volumes) and in case an event was missed.
//!
//! Every check compares the file's bytes with the last bytes seen, so only real changes reach
//! [`crate::reload::reload`]; events for other files, a deleted file (editors that delete, then write) and
//! a file recreated with the same content do nothing. A file that is half written when it is read is just a
//! rejected reload; the write that completes it is another change and is applied.
//!
//! `CODEX_PROXY_CONFIG_WATCH=poll` skips the notify watcher (polling only), for filesystems where
//! inotify is unreliable or watches are scarce. Dropping the [`WatchGuard`] stops it all.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::state::AppState;

/// Quiet time after the last relevant event before looking at the file.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// A steady stream of events, or a writer that keeps the file open, delays the look at the file at most
/// this long.
pub const MAX_DEBOUNCE: Duration = Duration::from_millis(1000);

/// Stops the watcher and its task when dropped.
pub struct WatchGuard {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        // The task owns the notify watcher; aborting it drops the watcher too.
        self.task.abort();
    }
}

/// How changes are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// notify watcher and the poll.
    Watch,
    /// The poll only (`CODEX_PROXY_CONFIG_WATCH=poll`).
    PollOnly,
}

fn mode() -> Mode {
    match std::env::var("CODEX_PROXY_CONFIG_WATCH").as_deref() {
        Ok("poll") => Mode::PollOnly,
        _ => Mode::Watch,
    }
}

fn poll_interval() -> Duration {
    std::env::var("CODEX_PROXY_CONFIG_POLL_MS")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(2))
}

/// The file's bytes (following symlinks); `None` if it cannot be read (e.g. between delete and create).
fn contents(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// What to watch for one config path: the directories and the file names in them that matter.
#[derive(Debug, Default, PartialEq, Eq)]
struct Targets {
    directories: BTreeSet<PathBuf>,
    names: BTreeSet<OsString>,
}

impl Targets {
    /// The parent directory and the config file's name; for each symlink on the way to the real file,
    /// the first component of its target (`..data` of `config.toml -> ..data/config.toml`); and the real
    /// file's directory and name.
    fn of(path: &Path) -> Targets {
        let mut targets = Targets::default();
        let parent = parent_of(path);
        targets.directories.insert(parent.clone());
        if let Some(name) = path.file_name() {
            targets.names.insert(name.to_os_string());
        }
        let mut link = path.to_path_buf();
        for _ in 0..8 {
            let Ok(target) = std::fs::read_link(&link) else {
                break;
            };
            let here = parent_of(&link);
            let resolved = here.join(&target);
            if let Some(Component::Normal(first)) = resolved
                .strip_prefix(&here)
                .ok()
                .and_then(|rest| rest.components().next())
            {
                targets.names.insert(first.to_os_string());
            }
            link = resolved;
        }
        if let Ok(real) = std::fs::canonicalize(path) {
            if let Some(name) = real.file_name() {
                targets.names.insert(name.to_os_string());
            }
            targets.directories.insert(parent_of(&real));
        }
        targets
    }

    /// Whether `event` is an in-place write to the file: `Some(true)` when data changed (a writer has
    /// it open), `Some(false)` when a writer closed it.
    fn write_state(&self, event: &notify::Event) -> Option<bool> {
        let names_file = event.paths.iter().any(|path| {
            path.file_name()
                .is_some_and(|name| self.names.contains(name))
        });
        if !names_file {
            return None;
        }
        match event.kind {
            EventKind::Modify(ModifyKind::Data(_)) | EventKind::Modify(ModifyKind::Any) => {
                Some(true)
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(false),
            _ => None,
        }
    }

    /// Whether `event` may have changed what `path` reads as.
    fn relevant(&self, event: &notify::Event) -> bool {
        match event.kind {
            // Opening and reading change nothing (and the proxy's own reads produce them).
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false,
            _ => {}
        }
        event.need_rescan()
            || event.paths.is_empty()
            || event.paths.iter().any(|path| {
                path.file_name()
                    .is_some_and(|name| self.names.contains(name))
            })
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The notify watcher and the directories it watches, with their inode (a directory that was deleted
/// and recreated is watched again).
struct DirectoryWatch {
    watcher: notify::RecommendedWatcher,
    watched: Vec<(PathBuf, Option<(u64, u64)>)>,
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

impl DirectoryWatch {
    fn start(events: mpsc::UnboundedSender<notify::Event>) -> notify::Result<DirectoryWatch> {
        let watcher = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
            match result {
                Ok(event) => {
                    let _ = events.send(event);
                }
                // Lost events (queue overflow): ask for a look at the file.
                Err(_) => {
                    let _ = events.send(
                        notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan),
                    );
                }
            }
        })?;
        Ok(DirectoryWatch {
            watcher,
            watched: Vec::new(),
        })
    }

    /// Watches exactly `directories` (re-watching any that were recreated). Returns the first error.
    fn update(&mut self, directories: &BTreeSet<PathBuf>) -> notify::Result<()> {
        let mut first_error = None;
        let mut kept = Vec::new();
        for (path, id) in std::mem::take(&mut self.watched) {
            if directories.contains(&path) && identity(&path) == id {
                kept.push((path, id));
            } else {
                let _ = self.watcher.unwatch(&path);
            }
        }
        for directory in directories {
            if kept.iter().any(|(path, _)| path == directory) {
                continue;
            }
            match self.watcher.watch(directory, RecursiveMode::NonRecursive) {
                Ok(()) => kept.push((directory.clone(), identity(directory))),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        self.watched = kept;
        first_error.map_or(Ok(()), Err)
    }
}

/// Starts watching the config file of `state`, if it has one.
pub fn spawn(state: AppState) -> Option<WatchGuard> {
    let path: PathBuf = state.config_path()?.clone();
    let interval = poll_interval();
    let (sender, mut receiver) = mpsc::unbounded_channel::<notify::Event>();
    let mut targets = Targets::of(&path);
    let mut watch = match mode() {
        Mode::PollOnly => None,
        Mode::Watch => match DirectoryWatch::start(sender) {
            Ok(mut watch) => {
                if let Err(err) = watch.update(&targets.directories) {
                    tracing::warn!(
                        "cannot watch {:?}: {err}; relying on polling every {interval:?}",
                        targets.directories
                    );
                }
                Some(watch)
            }
            Err(err) => {
                tracing::warn!("cannot start a file watcher: {err}; polling every {interval:?}");
                None
            }
        },
    };
    let description = match &watch {
        Some(_) => format!("notify+poll ({} ms)", interval.as_millis()),
        None => format!("poll ({} ms)", interval.as_millis()),
    };
    state.update_reload_status(|status| status.watch = Some(description));

    // The bytes the served snapshot came from, if the file still holds them; otherwise the first check
    // reloads (the file changed between the first load and now).
    let mut last = contents(&path).filter(|bytes| {
        let served = state.snapshot();
        let parsed = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| toml::from_str::<toml::Table>(text).ok());
        match (&served.source_table, parsed) {
            (Some(served), Some(parsed)) => crate::snapshot::same_table(served, &parsed),
            _ => false,
        }
    });

    let task = tokio::spawn(async move {
        let mut poll = tokio::time::interval_at(Instant::now() + interval, interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A file that changed between the first load and now is checked at once.
        let mut first = last.is_none();
        loop {
            let trigger = if std::mem::take(&mut first) {
                "start"
            } else {
                tokio::select! {
                    // Pending events first: an in-place write in progress is waited for, not polled.
                    biased;
                    Some(event) = receiver.recv(), if watch.is_some() => {
                        if !targets.relevant(&event) {
                            continue;
                        }
                        debounce(&mut receiver, &targets, &event).await;
                        "watch"
                    }
                    _ = poll.tick() => "poll",
                }
            };
            // The symlink chain may have changed (a `..data` swap), or a directory been recreated.
            targets = Targets::of(&path);
            if let Some(watch) = &mut watch {
                if let Err(err) = watch.update(&targets.directories) {
                    tracing::debug!("cannot watch {:?}: {err}", targets.directories);
                }
            }
            let current = contents(&path);
            if current.is_none() || current == last {
                continue;
            }
            last = current;
            let _ = crate::reload::reload(&state, trigger).await;
        }
    });
    Some(WatchGuard { task })
}

/// Returns once no relevant event came for [`DEBOUNCE`] and no in-place writer has the file open, or
/// [`MAX_DEBOUNCE`] after `first` arrived.
async fn debounce(
    receiver: &mut mpsc::UnboundedReceiver<notify::Event>,
    targets: &Targets,
    first: &notify::Event,
) {
    let give_up = Instant::now() + MAX_DEBOUNCE;
    let mut quiet_until = Instant::now() + DEBOUNCE;
    let mut writing = targets.write_state(first).unwrap_or(false);
    loop {
        let deadline = if writing {
            give_up
        } else {
            quiet_until.min(give_up)
        };
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(event)) => {
                if targets.relevant(&event) {
                    quiet_until = Instant::now() + DEBOUNCE;
                    if let Some(state) = targets.write_state(&event) {
                        writing = state;
                    }
                }
                // Irrelevant events keep coming: the deadlines still hold.
                let now = Instant::now();
                if now >= give_up || (!writing && now >= quiet_until) {
                    return;
                }
            }
            // Deadline reached, or the watcher is gone.
            Ok(None) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RenameMode};

    fn event(kind: EventKind, path: &Path) -> notify::Event {
        notify::Event::new(kind).add_path(path.to_path_buf())
    }

    #[test]
    fn only_events_naming_the_file_or_its_links_count() {
        let dir = std::env::temp_dir().join(format!("watch-targets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..2026_a")).unwrap();
        std::fs::write(dir.join("..2026_a/config.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_a", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.toml", dir.join("config.toml")).unwrap();
        let targets = Targets::of(&dir.join("config.toml"));
        assert!(targets.directories.contains(&dir));
        assert!(targets.names.contains(&OsString::from("config.toml")));
        assert!(targets.names.contains(&OsString::from("..data")));

        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(targets.relevant(&event(rename, &dir.join("..data"))));
        assert!(targets.relevant(&event(
            EventKind::Modify(ModifyKind::Any),
            &dir.join("config.toml")
        )));
        assert!(targets.relevant(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &dir.join("config.toml")
        )));
        assert!(!targets.relevant(&event(
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            &dir.join("config.toml")
        )));
        assert!(!targets.relevant(&event(
            EventKind::Create(CreateKind::File),
            &dir.join("other.log")
        )));
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        assert_eq!(
            targets.write_state(&event(data, &dir.join("config.toml"))),
            Some(true)
        );
        assert_eq!(
            targets.write_state(&event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &dir.join("config.toml")
            )),
            Some(false)
        );
        assert_eq!(
            targets.write_state(&event(data, &dir.join("other.log"))),
            None
        );
        let rescan = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(targets.relevant(&rescan));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
