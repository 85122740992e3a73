//! Noticing config file saves, however the editor saves: in place, write-to-temp + rename, or a
//! Kubernetes-style `..data` symlink swap.
//!
//! - A `notify` watcher on the file's *parent directory* (a rename-save replaces the inode, and a symlink
//!   swap never touches `config.toml` itself), plus the directory of every symlink met on the way to the
//!   real file and the real file's directory. What to watch is resolved again after every change, so a
//!   plain file that becomes a link into a ConfigMap volume elsewhere is followed there. Only events that
//!   name the config file or a link on the way to it count; opening and reading files (the proxy's own
//!   reads included) never do.
//! - A debounce: after such an event, wait until [`DEBOUNCE`] passes without another and no writer
//!   that modified the file in place still has it open (no `IN_CLOSE_WRITE` yet), at most
//!   [`MAX_DEBOUNCE`]; then look at the file. So an in-place save is read once it is complete.
//! - A poll of the file's content every 2 s (`CODEX_PROXY_CONFIG_POLL_MS` sets the interval), for mounts
//!   where inotify sees nothing (NFS, some container volumes) and in case an event was missed.
//!
//! Every check compares the file's bytes with the last bytes seen, so only real changes reach
//! [`crate::live::reload::reload`]; events for other files, a deleted file (editors that delete, then write) and
//! a file recreated with the same content do nothing. A file that is half written when it is read is just a
//! rejected reload; the write that completes it is another change and is applied.
//!
//! Each reload runs in a task of its own: a rejected file or even a panic inside a reload is one failed
//! reload, and the next save is still seen. Should the watcher itself ever end, `/ready` shows
//! `watch: stopped: <reason>` until it is started again, one poll interval later.
//!
//! `CODEX_PROXY_CONFIG_WATCH=poll` skips the notify watcher (polling only), for filesystems where
//! inotify is unreliable or watches are scarce. Dropping the [`WatchGuard`] stops it all.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::live::state::AppState;

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
    /// The parent directory and the config file's name; for every symlink met while resolving the
    /// path, component by component (`config.toml -> ..data/config.toml`, then `..data -> ..2026_x`,
    /// in whatever directories they are), its directory and name; and the real file's directory and
    /// name. Called again after every change, so a config that became a symlink into another
    /// directory, or a swapped `..data`, is followed.
    fn of(path: &Path) -> Targets {
        let mut targets = Targets::default();
        targets.directories.insert(parent_of(path));
        if let Some(name) = path.file_name() {
            targets.names.insert(name.to_os_string());
        }
        let start = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(path)
        };
        // The components still to resolve, last first: `/`, `..`, `.` or a name.
        let mut pending: Vec<OsString> = pieces(&start);
        let mut current = PathBuf::from("/");
        let mut links = 0;
        while let Some(piece) = pending.pop() {
            if piece == "/" {
                current = PathBuf::from("/");
            } else if piece == ".." {
                current.pop();
            } else if piece != "." {
                let candidate = current.join(&piece);
                match std::fs::read_link(&candidate) {
                    Ok(target) if links < MAX_LINKS => {
                        links += 1;
                        targets.directories.insert(current.clone());
                        targets.names.insert(piece);
                        // The target's components come next (an absolute one restarts at `/`).
                        pending.extend(pieces(&target));
                    }
                    _ => current = candidate,
                }
            }
        }
        if let Some(name) = current.file_name() {
            targets.names.insert(name.to_os_string());
        }
        targets.directories.insert(parent_of(&current));
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

/// Symlinks followed at most while resolving the config path (as the kernel's limit).
const MAX_LINKS: usize = 40;

/// The components of `path`, last first (so `pop` yields them in order).
fn pieces(path: &Path) -> Vec<OsString> {
    path.components()
        .rev()
        .map(|component| component.as_os_str().to_os_string())
        .collect()
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

/// What the watcher does about a changed file: [`crate::live::reload::reload`] in the server; tests pass
/// their own.
pub type ReloadFn =
    Arc<dyn Fn(AppState, &'static str) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How the watcher runs: from the environment in the server, chosen by tests.
#[derive(Debug, Clone, Copy)]
struct Settings {
    mode: Mode,
    poll: Duration,
}

/// Starts watching the config file of `state`, if it has one.
pub fn spawn(state: AppState) -> Option<WatchGuard> {
    let settings = Settings {
        mode: mode(),
        poll: poll_interval(),
    };
    let reload: ReloadFn = Arc::new(|state, trigger| {
        Box::pin(async move {
            let _ = crate::live::reload::reload(&state, trigger).await;
        })
    });
    spawn_with(state, settings, reload)
}

fn spawn_with(state: AppState, settings: Settings, reload: ReloadFn) -> Option<WatchGuard> {
    let path: PathBuf = state.config_path()?.clone();
    let task = tokio::spawn(supervise(state, path, settings, reload));
    Some(WatchGuard { task })
}

/// Aborts the task when dropped (so dropping the [`WatchGuard`] ends the watcher it supervises).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the watcher. Should it ever end (a panic in it), `/ready` says so (`watch: stopped: …`) and
/// it is started again after one poll interval.
async fn supervise(state: AppState, path: PathBuf, settings: Settings, reload: ReloadFn) {
    loop {
        let mut run = AbortOnDrop(tokio::spawn(watch_loop(
            state.clone(),
            path.clone(),
            settings,
            reload.clone(),
        )));
        let reason = match (&mut run.0).await {
            Ok(()) => "it ended".to_string(),
            Err(err) => crate::live::reload::panic_message(err),
        };
        tracing::error!(
            "the config file watcher stopped ({reason}); starting it again in {} ms",
            settings.poll.as_millis()
        );
        state.update_reload_status(|status| {
            status.watch = Some(format!(
                "stopped: {reason}; restarting in {} ms",
                settings.poll.as_millis()
            ))
        });
        tokio::time::sleep(settings.poll).await;
    }
}

/// The notify watcher on the directories of `targets`, unless polling only or it cannot start.
fn start_watch(
    settings: Settings,
    targets: &Targets,
    sender: mpsc::UnboundedSender<notify::Event>,
) -> Option<DirectoryWatch> {
    let interval = settings.poll;
    match settings.mode {
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
    }
}

/// The file's bytes if the served snapshot came from them; otherwise `None`, so the first check
/// reloads (the file changed between the first load and now).
fn served_bytes(state: &AppState, path: &Path) -> Option<Vec<u8>> {
    contents(path).filter(|bytes| {
        let served = state.snapshot();
        let parsed = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| toml::from_str::<toml::Table>(text).ok());
        match (&served.source_table, parsed) {
            (Some(served), Some(parsed)) => crate::live::snapshot::same_table(served, &parsed),
            _ => false,
        }
    })
}

/// Waits for changes and hands each one to `reload`, in a task of its own: whatever happens there (a
/// rejected file, a panic) the next change is still seen.
async fn watch_loop(state: AppState, path: PathBuf, settings: Settings, reload: ReloadFn) {
    let interval = settings.poll;
    let (sender, mut receiver) = mpsc::unbounded_channel::<notify::Event>();
    let mut targets = Targets::of(&path);
    let mut watch = start_watch(settings, &targets, sender);
    let description = match &watch {
        Some(_) => format!("notify+poll ({} ms)", interval.as_millis()),
        None => format!("poll ({} ms)", interval.as_millis()),
    };
    state.update_reload_status(|status| status.watch = Some(description));
    let mut last = served_bytes(&state, &path);
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
        // The symlink chain may have changed (a `..data` swap, a file that became a link into another
        // directory), or a directory been recreated: what to watch is resolved again every time.
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
        if let Err(err) = tokio::spawn(reload(state.clone(), trigger)).await {
            let reason = crate::live::reload::panic_message(err);
            tracing::error!("a config reload failed unexpectedly ({reason}); still watching");
            state.update_reload_status(|status| {
                status.reloads_failed += 1;
                status.last_error = Some(format!("the reload failed unexpectedly ({reason})"));
            });
        }
    }
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
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A private directory under `target/` (not /tmp, so it is on the same filesystem as the build).
    fn scratch(name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/test-envs")
            .join(format!("watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A config with one exec profile whose description is `version`.
    fn config_text(dir: &Path, version: &str) -> String {
        format!(
            "[server]\ncodex_bin = \"/nonexistent/codex\"\n[profiles.a]\ndescription = \"{version}\"\ndefault_cwd = {:?}\n",
            dir.join("work").display().to_string()
        )
    }

    /// A server state serving `path` (not listening anywhere).
    async fn state_for(path: &Path) -> AppState {
        let config = crate::config::load_file(path, &Default::default()).unwrap();
        let snapshot = crate::live::reload::first_snapshot(config).await;
        AppState::new(
            snapshot,
            Some(path.to_path_buf()),
            Default::default(),
            tokio_util::sync::CancellationToken::new(),
        )
    }

    /// Notify only: the poll comes once an hour, so only the watcher can see a change in time.
    const NOTIFY_ONLY: Settings = Settings {
        mode: Mode::Watch,
        poll: Duration::from_secs(3600),
    };

    /// Waits until `done` holds; a missed change fails the test after a minute (not a timing claim).
    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Saves `text` as `path` the way editors do: write a temp file, rename it over.
    fn save(path: &Path, text: &str) {
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, path).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_that_panics_does_not_stop_the_watcher() {
        let dir = scratch("panic");
        let path = dir.join("config.toml");
        std::fs::write(&path, config_text(&dir, "v1")).unwrap();
        let state = state_for(&path).await;
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let reload: ReloadFn = Arc::new(move |_, _| {
            let call = counted.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                assert!(call != 1, "the first reload fails in the worst way");
            })
        });
        let _guard = spawn_with(state.clone(), NOTIFY_ONLY, reload).unwrap();
        wait_until("the watcher runs", || state.reload_status().watch.is_some()).await;

        save(&path, &config_text(&dir, "v2"));
        wait_until("the first save is seen", || {
            calls.load(Ordering::SeqCst) == 1
        })
        .await;
        wait_until("the panic is recorded", || {
            state.reload_status().last_error.is_some()
        })
        .await;
        let status = state.reload_status();
        assert!(
            status.last_error.as_deref().unwrap().contains("panic"),
            "{status:?}"
        );
        assert!(status.watch.unwrap().starts_with("notify+poll"));

        save(&path, &config_text(&dir, "v3"));
        wait_until("a later save is still seen", || {
            calls.load(Ordering::SeqCst) == 2
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rejected_file_does_not_stop_the_watcher() {
        let dir = scratch("rejected");
        let path = dir.join("config.toml");
        std::fs::write(&path, config_text(&dir, "v1")).unwrap();
        let state = state_for(&path).await;
        let _guard = spawn_with(state.clone(), NOTIFY_ONLY, real_reload()).unwrap();
        save(
            &path,
            "[profiles.a]\nmax_concurrency = 9223372036854775807\n",
        );
        wait_until("the bad file is rejected", || {
            state.reload_status().reloads_failed == 1
        })
        .await;
        save(&path, &config_text(&dir, "v2"));
        wait_until("the good file is applied", || {
            state.snapshot().generation == 2
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn real_reload() -> ReloadFn {
        Arc::new(|state, trigger| {
            Box::pin(async move {
                let _ = crate::live::reload::reload(&state, trigger).await;
            })
        })
    }

    /// `dir/..data -> ..NAME` with `config.toml` of `version` in it, swapped in by renaming, as the
    /// kubelet updates a ConfigMap volume.
    fn swap_data(dir: &Path, name: &str, version: &str, work: &Path) {
        let data = dir.join(format!("..{name}"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("config.toml"), config_text(work, version)).unwrap();
        let temp = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&temp);
        std::os::unix::fs::symlink(format!("..{name}"), &temp).unwrap();
        std::fs::rename(&temp, dir.join("..data")).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follows_a_file_that_becomes_a_configmap_symlink_elsewhere() {
        let dir = scratch("configmap");
        let etc = dir.join("etc");
        let volume = dir.join("volume");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&volume).unwrap();
        let path = etc.join("config.toml");
        std::fs::write(&path, config_text(&dir, "v1")).unwrap();
        let state = state_for(&path).await;
        let _guard = spawn_with(state.clone(), NOTIFY_ONLY, real_reload()).unwrap();
        wait_until("the watcher runs", || state.reload_status().watch.is_some()).await;

        // The volume: config.toml -> ..data/config.toml, ..data -> ..2026_a.
        swap_data(&volume, "2026_a", "v2", &dir);
        std::os::unix::fs::symlink("..data/config.toml", volume.join("config.toml")).unwrap();
        // The plain file becomes a link into the volume.
        let link = etc.join("config.toml.new");
        std::os::unix::fs::symlink(volume.join("config.toml"), &link).unwrap();
        std::fs::rename(&link, &path).unwrap();
        wait_until("the switch to the volume", || {
            state.snapshot().generation == 2
        })
        .await;

        for (generation, name) in [(3, "2026_b"), (4, "2026_c")] {
            swap_data(&volume, name, &format!("v{generation}"), &dir);
            wait_until(&format!("the swap to ..{name}"), || {
                state.snapshot().generation == generation
            })
            .await;
        }
        let description = &state.snapshot().config.profiles[0].routing.description;
        assert_eq!(description, "v4");
        let _ = std::fs::remove_dir_all(&dir);
    }

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
