//! The files that describe one background server: where they are ([`DaemonFiles`]), the state file of
//! the last successful start ([`DaemonState`], mode 0600), the pid file, the log file, and the advisory
//! lock that keeps two `start`, `stop` or `restart` from interleaving ([`lock`]). Every write is atomic
//! (temp file + rename), so a reader never sees half of a file.
//!
//! It does not decide whether the pid a pid file names is our server (that is `process`), and it
//! never signals, spawns or connects to anything.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cli::{FileArgs, Settings};
use crate::config::{self, ServerOverrides};

/// The server's grace period when `start` was not given `--grace-seconds`.
pub(super) const DEFAULT_GRACE_SECONDS: u64 = 10;
/// How long `start`, `stop` and `restart` wait for another one of them to finish.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Where one daemon's pid, log and state files are. Absolute, so the state file can name them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DaemonFiles {
    pub(super) pid: PathBuf,
    pub(super) log: PathBuf,
    pub(super) state: PathBuf,
}

impl DaemonFiles {
    pub(super) fn new(args: &FileArgs) -> DaemonFiles {
        let absolute = |path: PathBuf| config::resolve_path(&path.to_string_lossy(), None);
        DaemonFiles {
            pid: absolute(args.pid_file()),
            log: absolute(args.log_file()),
            state: absolute(args.state_file()),
        }
    }

    /// `restart`: the files given now, else those of the saved start.
    pub(super) fn merged(now: &FileArgs, saved: Option<&DaemonState>) -> DaemonFiles {
        let mut files = DaemonFiles::new(now);
        if let Some(saved) = saved {
            if now.pid_file.is_none() {
                files.pid = saved.pid_file.clone();
            }
            if now.log_file.is_none() {
                files.log = saved.log_file.clone();
            }
        }
        files
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.pid.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Creates the directories above the pid, log and state files.
    pub(super) fn create_parents(&self) -> anyhow::Result<()> {
        for path in [&self.pid, &self.log, &self.state] {
            create_parent(path)?;
        }
        Ok(())
    }

    /// The log file, opened for appending (created with mode 0600).
    pub(super) fn open_log(&self) -> anyhow::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log)
            .with_context(|| format!("cannot open the log file {}", self.log.display()))
    }
}

/// What the state file keeps about the last successful start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DaemonState {
    /// The settings of that start, self-contained (`Settings::resolve_for_daemon`): `restart` starts
    /// from them. They include the api key, which is why the file is 0600.
    pub(super) settings: Settings,
    /// The server-level keys the config file had then, so `reload` can authenticate when the key came
    /// from the file rather than a flag.
    #[serde(default)]
    pub(super) server_keys: Vec<String>,
    pub(super) pid: u32,
    /// The bind host as configured, and the real port (from the `listening on` line).
    pub(super) host: String,
    pub(super) port: u16,
    /// Where clients reach the server (`http://HOST:PORT`).
    pub(super) url: String,
    /// Where this program connects (an unspecified bind address becomes loopback).
    pub(super) address: SocketAddr,
    pub(super) config: Option<PathBuf>,
    pub(super) pid_file: PathBuf,
    pub(super) log_file: PathBuf,
    /// Unix seconds.
    pub(super) started_at: u64,
    pub(super) version: String,
}

impl DaemonState {
    /// The saved state, `None` if there is none; an unreadable file is an error that names it.
    pub(super) fn load(path: &Path) -> anyhow::Result<Option<DaemonState>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("the state file {} is not valid", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state file with mode 0600 (temp file + rename, so a reader never sees half of it).
    pub(super) fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_atomically(path, format!("{text}\n").as_bytes(), 0o600)
            .with_context(|| format!("cannot write the state file {}", path.display()))
    }

    /// The grace period the server was started with.
    pub(super) fn grace_seconds(&self) -> u64 {
        self.settings.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS)
    }

    /// Keys that may authenticate this program to the server, best first.
    pub(super) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.settings.api_key.iter().cloned().collect();
        // The file may have changed since the start (a reload applies new keys).
        if let Some(path) = &self.config {
            if let Ok(config) = config::load_file(path, &ServerOverrides::default()) {
                keys.extend(config.server.api_keys);
            }
        }
        keys.extend(self.server_keys.iter().cloned());
        super::unique_in_order(keys)
    }
}

/// Creates the directories above `path` (new ones private to the user).
fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to a temp file next to `path` with `mode`, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    let temp = PathBuf::from(name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        // The mode of `open` only applies to new files (and is masked by the umask).
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

pub(super) fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    write_atomically(path, format!("{pid}\n").as_bytes(), 0o644)
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

/// Removes the pid file if it still names `pid` (another start may have replaced it).
pub(super) fn remove_pid_file(path: &Path, pid: Option<u32>) {
    let names = std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().parse::<u32>().ok());
    if pid.is_none() || names == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// The bytes appended to `path` after `offset`, as text.
pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).to_string()
}

/// Serialises `start`, `stop` and `restart` on one set of files; released when dropped.
pub(super) struct ManagementLock {
    _file: File,
}

/// Takes the management lock of `files`, waiting up to a minute for another command to release it.
pub(super) async fn lock(files: &DaemonFiles) -> anyhow::Result<ManagementLock> {
    let path = files.lock_path();
    create_parent(&path)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    let deadline = Instant::now() + LOCK_WAIT;
    let mut told = false;
    loop {
        // SAFETY: flock only operates on the descriptor, which `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(ManagementLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        if Instant::now() > deadline {
            bail!(
                "another start, stop or restart still holds {} after {} s",
                path.display(),
                LOCK_WAIT.as_secs()
            );
        }
        if !told {
            eprintln!("waiting for another start, stop or restart to finish ...");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"{}", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
