//! The daemon commands: background `start` with a readiness wait, `stop`, `status`, `restart`, `check`
//! and `reload`. Entry point: [`run_command`] (`start --foreground` goes straight to
//! [`crate::server::serve_foreground`]).
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
//! anything else is a stale pid file, reported and cleared but never signalled. `stop` ends the server
//! with SIGTERM (it drains for its grace period) and kills the server's whole session only if it
//! outlives the grace period plus a margin, then kills any process left in that session, so no Codex
//! process survives. `start`, `stop` and `restart` hold an advisory lock next to the pid file so two of
//! them never interleave.
//!
//! HTTP to the server is a minimal HTTP/1.1 exchange over a `TcpStream` (no client dependency). This
//! module serves nothing and never reads a request; keys are printed only as `<redacted>`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::ops::VERSION;
use crate::cli::{CheckArgs, Command, FileArgs, ReloadArgs, StartArgs, StatusArgs, StopArgs};
use crate::config::{self, Config, ServerOverrides};
use crate::routing::Router;

/// How long `start` waits for a new server to answer `/health` (its first snapshot runs
/// `codex --version`, which can be slow on a cold disk).
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The server's grace period when `start` was not given `--grace-seconds`.
const DEFAULT_GRACE_SECONDS: u64 = 10;
/// What `stop` waits beyond the grace period before killing: the server's own wind-down (ending the
/// remaining streams, stopping Codex processes, the runtime's shutdown).
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// How long a killed process may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long `start`, `stop` and `restart` wait for another one of them to finish.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Timeout of one health/status request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeout of `POST /admin/reload` (a reload probes the Codex binary again).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the log shown when a start fails.
const LOG_TAIL_LINES: usize = 20;
/// What is printed instead of a key.
const REDACTED: &str = "<redacted>";

/// Runs a non-foreground command and returns its exit code.
pub async fn run_command(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Start(args) if args.foreground => {
            crate::server::serve_foreground(&args).await.map(|_| 0)
        }
        Command::Start(args) => start(args).await,
        Command::Stop(args) => stop(&args).await,
        Command::Status(args) => status(&args).await,
        Command::Restart(args) => restart(args).await,
        Command::Check(args) => check(&args),
        Command::Reload(args) => reload(&args).await,
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

// ---------------------------------------------------------------------------------------------------
// Files

/// Where one daemon's pid, log and state files are. Absolute, so the state file can name them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DaemonFiles {
    pid: PathBuf,
    log: PathBuf,
    state: PathBuf,
}

impl DaemonFiles {
    fn new(args: &FileArgs) -> DaemonFiles {
        let absolute = |path: PathBuf| config::resolve_path(&path.to_string_lossy(), None);
        DaemonFiles {
            pid: absolute(args.pid_file()),
            log: absolute(args.log_file()),
            state: absolute(args.state_file()),
        }
    }

    /// `restart`: the files given now, else those of the saved start.
    fn merged(now: &FileArgs, saved: Option<&DaemonState>) -> DaemonFiles {
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
}

/// What the state file keeps about the last successful start.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DaemonState {
    /// The settings of that start, self-contained (`StartArgs::resolve_for_daemon`): `restart` starts
    /// from them. They include the api key, which is why the file is 0600.
    settings: StartArgs,
    /// The server-level keys the config file had then, so `reload` can authenticate when the key came
    /// from the file rather than a flag.
    #[serde(default)]
    server_keys: Vec<String>,
    pid: u32,
    /// The bind host as configured, and the real port (from the `listening on` line).
    host: String,
    port: u16,
    /// Where clients reach the server (`http://HOST:PORT`).
    url: String,
    /// Where this program connects (an unspecified bind address becomes loopback).
    address: SocketAddr,
    config: Option<PathBuf>,
    pid_file: PathBuf,
    log_file: PathBuf,
    /// Unix seconds.
    started_at: u64,
    version: String,
}

impl DaemonState {
    /// The saved state, `None` if there is none; an unreadable file is an error that names it.
    fn load(path: &Path) -> anyhow::Result<Option<DaemonState>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("the state file {} is not valid", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the state file with mode 0600 (temp file + rename, so a reader never sees half of it).
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_atomically(path, format!("{text}\n").as_bytes(), 0o600)
            .with_context(|| format!("cannot write the state file {}", path.display()))
    }

    /// Keys that may authenticate this program to the server, best first.
    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.settings.api_key.iter().cloned().collect();
        // The file may have changed since the start (a reload applies new keys).
        if let Some(path) = &self.config {
            if let Ok(config) = config::load_file(path, &ServerOverrides::default()) {
                keys.extend(config.server.api_keys);
            }
        }
        keys.extend(self.server_keys.iter().cloned());
        let mut unique = Vec::new();
        for key in keys {
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        unique
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    write_atomically(path, format!("{pid}\n").as_bytes(), 0o644)
        .with_context(|| format!("cannot write the pid file {}", path.display()))
}

/// Removes the pid file if it still names `pid` (another start may have replaced it).
fn remove_pid_file(path: &Path, pid: Option<u32>) {
    let names = std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().parse::<u32>().ok());
    if pid.is_none() || names == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// Serialises `start`, `stop` and `restart` on one set of files; released when dropped.
struct ManagementLock {
    _file: File,
}

async fn lock(files: &DaemonFiles) -> anyhow::Result<ManagementLock> {
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

/// The bytes appended to `path` after `offset`, as text.
fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).to_string()
}

/// The address of the first `listening on http://ADDR` line in `text`.
fn listening_address(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|line| {
        line.trim()
            .strip_prefix("listening on http://")?
            .trim()
            .parse()
            .ok()
    })
}

/// Where to connect to a server bound to `bound` (an unspecified address is reached over loopback).
fn connect_address(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bound.port())
        }
        _ => bound,
    }
}

fn url_of(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

/// `text` with every key replaced by `<redacted>`.
fn redact(text: &str, keys: &[String]) -> String {
    keys.iter()
        .filter(|key| !key.is_empty())
        .fold(text.to_string(), |text, key| {
            text.replace(key.as_str(), REDACTED)
        })
}

// ---------------------------------------------------------------------------------------------------
// Processes

/// The one-letter state of a process from `/proc/PID/stat` (`None` without procfs).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Whether `pid` is a live process (zombies are dead: they only wait to be reaped).
fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 1 {
        return raw == 1;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(raw, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !matches!(process_state(pid), Some('Z' | 'X'))
}

/// The arguments of `pid` (`/proc`, else `ps`, which cannot tell spaces inside arguments).
fn process_arguments(pid: u32) -> Option<Vec<String>> {
    if let Ok(bytes) = std::fs::read(format!("/proc/{pid}/cmdline")) {
        let text = String::from_utf8_lossy(&bytes);
        return Some(
            text.split('\0')
                .filter(|arg| !arg.is_empty())
                .map(str::to_string)
                .collect(),
        );
    }
    let output = std::process::Command::new("ps")
        .args(["-o", "command=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let arguments: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    (!arguments.is_empty()).then_some(arguments)
}

/// Whether a command line is a server this program started: this program (by name) running `start`.
/// An editor that has `codex-api-proxy.toml` open does not count.
fn is_our_server(arguments: &[String]) -> bool {
    let own_name = std::env::current_exe().ok().and_then(|exe| {
        exe.file_name()
            .map(|name| name.to_string_lossy().to_string())
    });
    let Some(program) = arguments.first() else {
        return false;
    };
    let program = Path::new(program)
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default();
    let named = program.contains("codex-api-proxy") || own_name.is_some_and(|own| own == program);
    named && arguments.iter().any(|arg| arg == "start")
}

/// Live processes in session `sid` (the background server's session: the server and its Codex
/// processes, whatever their process group); `None` without `/proc`.
fn session_members(sid: u32) -> Option<Vec<u32>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let members = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            // After the command: state, ppid, pgrp, session.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.get(3).and_then(|s| s.parse::<u32>().ok()) == Some(sid)
                && !matches!(fields.first(), Some(&"Z" | &"X"))
        })
        .collect();
    Some(members)
}

fn send_signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 1 {
            // SAFETY: kill(2) only sends a signal.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// SIGKILLs every process of session `sid`; without `/proc`, the process group of the same id (the
/// server's, which its Codex processes leave for groups of their own). Returns how many were signalled.
fn kill_session(sid: u32) -> usize {
    match session_members(sid) {
        Some(members) => {
            for &pid in &members {
                send_signal(pid, libc::SIGKILL);
            }
            members.len()
        }
        None => {
            if let Ok(group) = i32::try_from(sid) {
                if group > 1 {
                    // SAFETY: killpg only sends a signal; a finished group returns ESRCH.
                    unsafe {
                        libc::killpg(group, libc::SIGKILL);
                    }
                }
            }
            0
        }
    }
}

/// Waits until `pid` is gone; false on timeout.
async fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// What the pid file says about the server.
#[derive(Debug)]
enum PidFile {
    Missing,
    /// Not a pid.
    Garbled(String),
    /// The pid is not running.
    Dead(u32),
    /// The pid runs something else (it was reused).
    Foreign {
        pid: u32,
        command: String,
    },
    /// The pid runs this program.
    Ours(u32),
}

impl PidFile {
    fn read(path: &Path) -> PidFile {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return PidFile::Missing,
            Err(err) => return PidFile::Garbled(err.to_string()),
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            return PidFile::Garbled(format!("{:?} is not a pid", text.trim()));
        };
        if pid <= 1 {
            return PidFile::Garbled(format!("{pid} is not a server's pid"));
        }
        if !process_alive(pid) {
            return PidFile::Dead(pid);
        }
        match process_arguments(pid) {
            Some(arguments) if !is_our_server(&arguments) => PidFile::Foreign {
                pid,
                command: arguments.join(" "),
            },
            _ => PidFile::Ours(pid),
        }
    }

    /// Why this pid file is stale, if it is.
    fn stale_reason(&self, path: &Path) -> Option<String> {
        match self {
            PidFile::Missing | PidFile::Ours(_) => None,
            PidFile::Garbled(why) => Some(format!(
                "the pid file {} is unusable: {why}",
                path.display()
            )),
            PidFile::Dead(pid) => Some(format!(
                "stale pid file {}: pid {pid} is not running",
                path.display()
            )),
            PidFile::Foreign { pid, command } => Some(format!(
                "stale pid file {}: pid {pid} is `{}`, not codex-api-proxy (the pid was reused)",
                path.display(),
                shorten(command, 80)
            )),
        }
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

// ---------------------------------------------------------------------------------------------------
// HTTP

/// One HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `error.message` of an OpenAI-shaped error body, else the body.
    fn error_message(&self) -> String {
        self.json()
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.body.trim().to_string())
    }
}

/// One HTTP/1.1 request with `Connection: close`.
async fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: codex-api-proxy/{VERSION}\r\n\
             Accept: application/json\r\nConnection: close\r\n"
        );
        if let Some(key) = key {
            request.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        if method != "GET" {
            request.push_str("Content-Length: 0\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow!("no answer within {} s", timeout.as_secs()))??;
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> anyhow::Result<Reply> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP response"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response"))?;
    let chunked = lines.any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        data = &data[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// A GET whose answer is JSON with status 200, else `None`.
async fn get_json(address: SocketAddr, path: &str, key: Option<&str>) -> Option<Value> {
    match http(address, "GET", path, key, PROBE_TIMEOUT).await {
        Ok(reply) if reply.status == 200 => Some(reply.json()),
        _ => None,
    }
}

/// `/ready` answers 503 while not ready, with the same body.
async fn get_ready(address: SocketAddr) -> Option<Value> {
    match http(address, "GET", "/ready", None, PROBE_TIMEOUT).await {
        Ok(reply) if reply.status == 200 || reply.status == 503 => Some(reply.json()),
        _ => None,
    }
}

/// `/v1/models` with the first key the server accepts.
async fn get_models(address: SocketAddr, keys: &[String]) -> Option<Value> {
    if keys.is_empty() {
        return get_json(address, "/v1/models", None).await;
    }
    for key in keys {
        if let Some(models) = get_json(address, "/v1/models", Some(key)).await {
            return Some(models);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------------
// start

async fn start(args: StartArgs) -> anyhow::Result<i32> {
    let files = DaemonFiles::new(&args.files);
    let _lock = lock(&files).await?;
    start_locked(args, &files).await
}

/// Why a new server did not come up.
struct StartFailure {
    reason: String,
}

async fn start_locked(mut args: StartArgs, files: &DaemonFiles) -> anyhow::Result<i32> {
    let pid_file = PidFile::read(&files.pid);
    if let PidFile::Ours(pid) = pid_file {
        let state = DaemonState::load(&files.state)
            .ok()
            .flatten()
            .filter(|state| state.pid == pid);
        match state {
            Some(state) => println!(
                "codex-api-proxy is already running (pid {pid}) at {}",
                state.url
            ),
            None => println!("codex-api-proxy is already running (pid {pid})"),
        }
        println!("To apply other settings use `codex-api-proxy restart [flags]`.");
        return Ok(0);
    }
    if let Some(reason) = pid_file.stale_reason(&files.pid) {
        println!("{reason}; removing it");
        let _ = std::fs::remove_file(&files.pid);
    }

    args.resolve_for_daemon().map_err(anyhow::Error::msg)?;
    // Every problem of the config is reported here, before anything starts.
    let config = args.load_config()?;
    if let Some(warning) = exposure_warning(&config.server.host, &config.server.api_keys) {
        eprintln!("{warning}");
    }
    let keys: Vec<String> = args
        .api_key
        .iter()
        .cloned()
        .chain(config.server.api_keys.iter().cloned())
        .collect();

    for path in [&files.pid, &files.log, &files.state] {
        create_parent(path)?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&files.log)
        .with_context(|| format!("cannot open the log file {}", files.log.display()))?;
    writeln!(
        log,
        "=== {} codex-api-proxy {VERSION}: starting in the background",
        format_unix_time(now_unix())
    )?;
    let offset = log.metadata().map(|m| m.len()).unwrap_or(0);

    let exe = std::env::current_exe().context("cannot find the path of this program")?;
    let mut command = std::process::Command::new(&exe);
    command
        .args(["start", "--foreground"])
        .args(args.to_flags())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // The key (folded in from the flag or the environment) is handed over on stdin: it shows neither in
    // a process listing nor in the environment the server's Codex processes inherit.
    command.env_remove("CODEX_PROXY_API_KEY");
    if args.api_key.is_some() {
        command.arg("--api-key-stdin").stdin(Stdio::piped());
    }
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let pid = child.id();
    if let (Some(mut stdin), Some(key)) = (child.stdin.take(), &args.api_key) {
        // A pipe holds far more than one line; dropping `stdin` closes it.
        if let Err(err) = stdin.write_all(format!("{key}\n").as_bytes()) {
            end_failed_start(&mut child, files).await;
            return Err(err).context("cannot hand the api key to the server");
        }
    }
    if let Err(err) = write_pid_file(&files.pid, pid) {
        end_failed_start(&mut child, files).await;
        return Err(err);
    }
    if config.server.port == 0 {
        println!("started pid {pid}; waiting for it to pick a port and answer /health ...");
    } else {
        println!(
            "started pid {pid}; waiting for {}/health ...",
            url_of(&config.server.host, config.server.port)
        );
    }

    let waited = tokio::select! {
        waited = wait_ready(&mut child, files, offset) => waited,
        _ = tokio::signal::ctrl_c() => Err(StartFailure {
            reason: "interrupted while waiting for /health".to_string(),
        }),
    };
    let address = match waited {
        Ok(address) => address,
        Err(failure) => {
            return Err(report_failed_start(&mut child, files, offset, failure, &keys).await)
        }
    };
    let connect = connect_address(address);
    let ready = get_ready(connect).await;
    if let Some(error) = ready
        .as_ref()
        .and_then(|ready| ready.pointer("/codex/error"))
        .and_then(Value::as_str)
    {
        let failure = StartFailure {
            reason: format!("Codex cannot run: {error}"),
        };
        return Err(report_failed_start(&mut child, files, offset, failure, &keys).await);
    }
    let models = get_models(connect, &keys).await;

    let state = DaemonState {
        server_keys: config.server.api_keys.clone(),
        pid,
        host: config.server.host.clone(),
        port: address.port(),
        url: url_of(&config.server.host, address.port()),
        address: connect,
        config: config.source.clone(),
        pid_file: files.pid.clone(),
        log_file: files.log.clone(),
        started_at: now_unix(),
        version: VERSION.to_string(),
        settings: args,
    };
    state.save(&files.state)?;
    print_started(&state, files, &config, ready.as_ref(), models.as_ref());
    Ok(0)
}

/// Waits until the child answers `/health` with its own pid; returns its bound address.
async fn wait_ready(
    child: &mut Child,
    files: &DaemonFiles,
    offset: u64,
) -> Result<SocketAddr, StartFailure> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let pid = child.id();
    let mut address = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartFailure {
                reason: format!("the server exited ({status}) before answering /health"),
            });
        }
        if address.is_none() {
            address = listening_address(&read_from(&files.log, offset));
        }
        if let Some(bound) = address {
            if let Ok(reply) = http(
                connect_address(bound),
                "GET",
                "/health",
                None,
                PROBE_TIMEOUT,
            )
            .await
            {
                let answered_by = reply.json().get("pid").and_then(Value::as_u64);
                if reply.status == 200 && answered_by == Some(u64::from(pid)) {
                    return Ok(bound);
                }
                if reply.status == 200 {
                    return Err(StartFailure {
                        reason: format!(
                            "{bound} is answered by another server (pid {})",
                            answered_by.map_or("unknown".to_string(), |p| p.to_string())
                        ),
                    });
                }
            }
        }
        if Instant::now() > deadline {
            return Err(StartFailure {
                reason: format!(
                    "the server did not answer /health within {} s",
                    READY_TIMEOUT.as_secs()
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends a server that did not start properly (its whole session) and removes its pid file.
async fn end_failed_start(child: &mut Child, files: &DaemonFiles) {
    let pid = child.id();
    if let Ok(None) = child.try_wait() {
        send_signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    kill_session(pid);
    let _ = child.wait();
    remove_pid_file(&files.pid, Some(pid));
}

/// Prints why a start failed and the log tail; returns the error `main` prints last.
async fn report_failed_start(
    child: &mut Child,
    files: &DaemonFiles,
    offset: u64,
    failure: StartFailure,
    keys: &[String],
) -> anyhow::Error {
    end_failed_start(child, files).await;
    let output = redact(&read_from(&files.log, offset), keys);
    // The server's own last word, printed by main as `codex-api-proxy: …`.
    let cause = output
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("codex-api-proxy: "))
        .map(str::to_string);
    let lines: Vec<&str> = output.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    if tail.is_empty() {
        eprintln!("(the server wrote nothing to {})", files.log.display());
    } else {
        eprintln!("last lines of {}:", files.log.display());
        for line in tail {
            eprintln!("  | {line}");
        }
    }
    let mut message = format!("the server did not start: {}", failure.reason);
    if let Some(cause) = cause {
        message.push_str(&format!(": {cause}"));
    }
    message.push_str("; nothing was left running");
    anyhow!(message)
}

/// `--name=value` flags for display, with the api key redacted.
fn display_flags(settings: &StartArgs) -> String {
    let mut shown = settings.clone();
    let mut flags: Vec<String> = Vec::new();
    if shown.api_key.take().is_some() {
        flags.push(format!("--api-key={REDACTED}"));
    }
    flags.extend(
        shown
            .to_flags()
            .iter()
            .map(|f| f.to_string_lossy().to_string()),
    );
    if flags.is_empty() {
        "(defaults)".to_string()
    } else {
        flags.join(" ")
    }
}

/// One line per profile (name, engine, model, aliases, readiness) with the profile's name, in the order
/// of `/v1/models` if given, else of `/ready`, else of the config.
fn profile_lines(
    config: Option<&Config>,
    ready: Option<&Value>,
    models: Option<&Value>,
) -> Vec<(String, String)> {
    let entries: &[Value] = models
        .and_then(|m| m.get("data"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut names: Vec<String> = entries
        .iter()
        .filter_map(|entry| entry.get("profile").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    for name in ready.map(profile_names).unwrap_or_default() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        if let Some(config) = config {
            names = config.profiles.iter().map(|p| p.name.clone()).collect();
        }
    }
    let width = names
        .iter()
        .map(|name| name.chars().count())
        .max()
        .unwrap_or(0);
    names
        .into_iter()
        .map(|name| {
            let entry = entries.iter().find(|e| e["profile"] == name.as_str());
            let readiness = ready
                .and_then(|r| r.get("profiles"))
                .and_then(|p| p.get(&name));
            let profile = config.and_then(|c| c.profile(&name));
            let engine = entry
                .and_then(|e| e["engine"].as_str())
                .or_else(|| readiness.and_then(|r| r["engine"].as_str()))
                .map(str::to_string)
                .or_else(|| profile.map(|p| p.engine.as_str().to_string()))
                .unwrap_or_else(|| "?".to_string());
            let mut line = format!("{name:width$}  engine={engine}");
            if let Some(profile) = profile {
                let model = if profile.pass_model {
                    "(the request's)".to_string()
                } else {
                    profile
                        .model
                        .clone()
                        .unwrap_or_else(|| "(Codex default)".to_string())
                };
                line.push_str(&format!("  model={model}"));
            }
            let aliases: Vec<String> = match entry.and_then(|e| e["aliases"].as_array()) {
                Some(list) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                None => profile.map(|p| p.aliases.clone()).unwrap_or_default(),
            };
            if !aliases.is_empty() {
                line.push_str(&format!("  aliases={}", aliases.join(", ")));
            }
            match readiness {
                Some(block) if block["ready"] == true => line.push_str("  ready"),
                Some(block) => line.push_str(&format!(
                    "  NOT READY: {}",
                    block["reason"].as_str().unwrap_or("unknown reason")
                )),
                None => {}
            }
            (name, line)
        })
        .collect()
}

fn print_endpoints(url: &str) {
    println!("endpoints:");
    println!("  POST {url}/v1/chat/completions");
    println!("  GET  {url}/v1/models");
    println!("  GET  {url}/health   {url}/ready   {url}/metrics");
    println!("  POST {url}/admin/reload   (or `codex-api-proxy reload`)");
}

fn print_started(
    state: &DaemonState,
    files: &DaemonFiles,
    config: &Config,
    ready: Option<&Value>,
    models: Option<&Value>,
) {
    println!("codex-api-proxy {VERSION} is running (pid {})", state.pid);
    println!("  url:        {}", state.url);
    match &state.config {
        Some(path) => println!("  config:     {}", path.display()),
        None => println!(
            "  config:     none (one `{}` profile from the flags; every model routes to it)",
            config::IMPLICIT_PROFILE
        ),
    }
    let server = &config.server;
    println!(
        "  server:     host={} port={} api_key={} codex_bin={} log_level={} grace_seconds={}",
        server.host,
        state.port,
        if server.api_keys.is_empty() {
            "none"
        } else {
            REDACTED
        },
        server.codex_bin,
        server.log_level,
        state
            .settings
            .grace_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS)
    );
    println!("  settings:   {}", display_flags(&state.settings));
    if let Some(codex) = ready.and_then(|r| r.get("codex")) {
        println!(
            "  codex:      {} ({})",
            codex["program"].as_str().unwrap_or("?"),
            codex["version"].as_str().unwrap_or("version unknown")
        );
    }
    println!("  pid file:   {}", files.pid.display());
    println!("  state file: {}", files.state.display());
    println!("  log file:   {}", files.log.display());
    println!("profiles:");
    for (_, line) in profile_lines(Some(config), ready, models) {
        println!("  {line}");
    }
    print_endpoints(&state.url);
}

/// `2025-01-31 12:00:00 UTC` for log headers.
fn format_unix_time(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

// ---------------------------------------------------------------------------------------------------
// stop

async fn stop(args: &StopArgs) -> anyhow::Result<i32> {
    let files = DaemonFiles::new(&args.files);
    let _lock = lock(&files).await?;
    let state = DaemonState::load(&files.state).ok().flatten();
    stop_locked(&files, state.as_ref(), args.grace_seconds).await?;
    Ok(0)
}

/// Stops the server the pid file names, if it is ours. Stale pid files are removed; a pid that is not
/// ours is never signalled.
async fn stop_locked(
    files: &DaemonFiles,
    state: Option<&DaemonState>,
    grace_seconds: Option<u64>,
) -> anyhow::Result<()> {
    let pid = match PidFile::read(&files.pid) {
        PidFile::Missing => {
            println!(
                "codex-api-proxy is not running (no pid file at {})",
                files.pid.display()
            );
            return Ok(());
        }
        PidFile::Ours(pid) => pid,
        stale => {
            let reason = stale.stale_reason(&files.pid).unwrap_or_default();
            let _ = std::fs::remove_file(&files.pid);
            println!("codex-api-proxy is not running: {reason}; removed it");
            if let PidFile::Dead(pid) = stale {
                // A server that died leaves its session's Codex processes, if any, behind.
                if state.is_some_and(|state| state.pid == pid) {
                    let left = kill_session(pid);
                    if left > 0 {
                        println!("killed {left} leftover process(es) of its session");
                    }
                }
            }
            return Ok(());
        }
    };
    // The server drains for the grace period it was started with; this command may wait otherwise.
    let server_grace = state
        .filter(|state| state.pid == pid)
        .and_then(|state| state.settings.grace_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    let wait = Duration::from_secs(grace_seconds.unwrap_or(server_grace)) + STOP_MARGIN;
    let started = Instant::now();
    send_signal(pid, libc::SIGTERM);
    println!(
        "stopping codex-api-proxy (pid {pid}): sent SIGTERM; in-flight requests get up to {server_grace} s \
         to finish (killing it if it still runs after {} s) ...",
        wait.as_secs()
    );
    let mut killed = false;
    if !wait_exit(pid, wait).await {
        let count = kill_session(pid);
        killed = true;
        println!(
            "pid {pid} was still running after {:.1} s: sent SIGKILL to its session ({count} process(es))",
            started.elapsed().as_secs_f64()
        );
        if !wait_exit(pid, KILL_WAIT).await {
            bail!(
                "pid {pid} is still running after SIGKILL; the pid file {} was kept",
                files.pid.display()
            );
        }
    }
    // The server ends its Codex processes itself; anything still in its session is a leftover.
    let leftovers = kill_session(pid);
    remove_pid_file(&files.pid, Some(pid));
    if !killed {
        println!(
            "stopped codex-api-proxy (pid {pid}) after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("stopped codex-api-proxy (pid {pid})");
    }
    if leftovers > 0 {
        println!("killed {leftovers} leftover process(es) of its session");
    }
    println!("removed the pid file {}", files.pid.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// status

/// What `status` found out.
struct Observation {
    /// `running`, `stopped`, `stale` (pid file names a dead or foreign pid) or `unresponsive` (our
    /// pid lives but the saved address does not answer as that pid).
    state: &'static str,
    pid: Option<u32>,
    reason: Option<String>,
    health: Option<Value>,
    ready: Option<Value>,
    metrics: Option<Value>,
}

async fn observe(files: &DaemonFiles, saved: Option<&DaemonState>) -> Observation {
    let mut observation = Observation {
        state: "stopped",
        pid: None,
        reason: None,
        health: None,
        ready: None,
        metrics: None,
    };
    let pid_file = PidFile::read(&files.pid);
    let pid = match pid_file {
        PidFile::Missing => {
            observation.reason = Some(format!("no pid file at {}", files.pid.display()));
            return observation;
        }
        PidFile::Ours(pid) => pid,
        PidFile::Dead(pid) | PidFile::Foreign { pid, .. } => {
            observation.state = "stale";
            observation.pid = Some(pid);
            observation.reason = pid_file.stale_reason(&files.pid);
            return observation;
        }
        PidFile::Garbled(_) => {
            observation.state = "stale";
            observation.reason = pid_file.stale_reason(&files.pid);
            return observation;
        }
    };
    observation.pid = Some(pid);
    let Some(saved) = saved else {
        observation.state = "unresponsive";
        observation.reason = Some(format!(
            "pid {pid} is alive, but there is no state file at {} saying where it listens",
            files.state.display()
        ));
        return observation;
    };
    match http(saved.address, "GET", "/health", None, PROBE_TIMEOUT).await {
        Ok(reply) if reply.status == 200 => {
            let health = reply.json();
            let answered_by = health.get("pid").and_then(Value::as_u64);
            if answered_by != Some(u64::from(pid)) {
                observation.state = "unresponsive";
                observation.reason = Some(format!(
                    "{} is answered by pid {}, not by pid {pid} of the pid file",
                    saved.url,
                    answered_by.map_or("unknown".to_string(), |p| p.to_string())
                ));
                return observation;
            }
            observation.state = "running";
            observation.health = Some(health);
        }
        Ok(reply) => {
            observation.state = "unresponsive";
            observation.reason = Some(format!(
                "pid {pid} is alive, but {}/health answered HTTP {}",
                saved.url, reply.status
            ));
            return observation;
        }
        Err(err) => {
            observation.state = "unresponsive";
            observation.reason = Some(format!(
                "pid {pid} is alive, but {}/health does not answer: {err:#}",
                saved.url
            ));
            return observation;
        }
    }
    observation.ready = get_ready(saved.address).await;
    observation.metrics = get_json(saved.address, "/metrics", None).await;
    observation
}

async fn status(args: &StatusArgs) -> anyhow::Result<i32> {
    let files = DaemonFiles::new(&args.files);
    let (saved, state_error) = match DaemonState::load(&files.state) {
        Ok(saved) => (saved, None),
        Err(err) => (None, Some(format!("{err:#}"))),
    };
    let observation = observe(&files, saved.as_ref()).await;
    let code = if observation.state == "running" { 0 } else { 1 };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status_json(
                &files,
                saved.as_ref(),
                &observation,
                state_error
            ))?
        );
        return Ok(code);
    }
    match observation.state {
        "running" => {
            let health = observation.health.as_ref().unwrap_or(&Value::Null);
            println!(
                "codex-api-proxy {} is running (pid {}, up {})",
                health["version"].as_str().unwrap_or("?"),
                observation.pid.unwrap_or(0),
                format_duration(health["uptime_seconds"].as_f64().unwrap_or(0.0))
            );
        }
        "unresponsive" => println!(
            "codex-api-proxy is not responding: {}",
            observation.reason.as_deref().unwrap_or("")
        ),
        _ => {
            println!(
                "codex-api-proxy is not running: {}",
                observation.reason.as_deref().unwrap_or("")
            );
            if observation.state == "stale" {
                println!("(`codex-api-proxy start` or `stop` removes the stale pid file)");
            }
        }
    }
    if let Some(error) = &state_error {
        println!("  state file: {error}");
    }
    let Some(saved) = saved.as_ref() else {
        return Ok(code);
    };
    if observation.state != "running" {
        if args.verbose {
            println!("last start ({}):", format_unix_time(saved.started_at));
            println!("  url:        {}", saved.url);
            println!("  settings:   {}", display_flags(&saved.settings));
            print_files(&files);
        }
        return Ok(code);
    }
    let ready = observation.ready.as_ref().unwrap_or(&Value::Null);
    let metrics = observation.metrics.as_ref().unwrap_or(&Value::Null);
    let config_block = if ready.get("config").is_some() {
        &ready["config"]
    } else {
        &metrics["config"]
    };
    println!("  url:        {}", saved.url);
    match config_block["path"].as_str() {
        Some(path) => {
            println!(
                "  config:     {path} (generation {})",
                config_block["generation"].as_u64().unwrap_or(0)
            );
            match config_block["last_error"].as_str() {
                Some(error) => {
                    println!("  last reload error (still serving the previous config):");
                    for line in error.lines() {
                        println!("    {line}");
                    }
                }
                None => println!("  last reload error: none"),
            }
        }
        None => println!(
            "  config:     none (one `{}` profile from flags)",
            config::IMPLICIT_PROFILE
        ),
    }
    if let Some(required) = config_block["restart_required"]
        .as_array()
        .filter(|r| !r.is_empty())
    {
        let items: Vec<&str> = required.iter().filter_map(Value::as_str).collect();
        println!("  restart required for: {}", items.join(", "));
    }
    if ready["status"] != "ready" {
        println!("  readiness:  NOT READY");
    }
    println!("profiles:");
    for (name, line) in profile_lines(None, Some(ready), None) {
        let block = &metrics["profiles"][&name];
        if block.is_object() {
            println!(
                "  {line}  in flight {}, queued {}, requests {}",
                block["in_flight"].as_u64().unwrap_or(0),
                block["queued"].as_u64().unwrap_or(0),
                block["requests"].as_u64().unwrap_or(0)
            );
        } else {
            println!("  {line}");
        }
    }
    print_endpoints(&saved.url);
    if args.verbose {
        println!("details:");
        println!("  settings:   {}", display_flags(&saved.settings));
        println!("  started:    {}", format_unix_time(saved.started_at));
        if let Some(codex) = ready.get("codex") {
            println!(
                "  codex:      {} ({})",
                codex["program"].as_str().unwrap_or("?"),
                codex["version"]
                    .as_str()
                    .or(codex["error"].as_str())
                    .unwrap_or("?")
            );
        }
        println!(
            "  requests:   {} total, {} ok, {} failed",
            metrics["requests_total"].as_u64().unwrap_or(0),
            metrics["requests_ok"].as_u64().unwrap_or(0),
            metrics["requests_error"].as_u64().unwrap_or(0)
        );
        println!(
            "  reloads:    {} applied, {} rejected",
            config_block["reloads_ok"].as_u64().unwrap_or(0),
            config_block["reloads_failed"].as_u64().unwrap_or(0)
        );
        print_files(&files);
    }
    Ok(code)
}

/// The profile names `/ready` lists.
fn profile_names(ready: &Value) -> Vec<String> {
    ready
        .get("profiles")
        .and_then(Value::as_object)
        .map(|profiles| profiles.keys().cloned().collect())
        .unwrap_or_default()
}

fn print_files(files: &DaemonFiles) {
    println!("  pid file:   {}", files.pid.display());
    println!("  state file: {}", files.state.display());
    println!("  log file:   {}", files.log.display());
}

fn format_duration(seconds: f64) -> String {
    let total = seconds.max(0.0) as u64;
    match total {
        0..=59 => format!("{total}s"),
        60..=3599 => format!("{}m {}s", total / 60, total % 60),
        _ => format!("{}h {}m", total / 3600, total / 60 % 60),
    }
}

fn status_json(
    files: &DaemonFiles,
    saved: Option<&DaemonState>,
    observation: &Observation,
    state_error: Option<String>,
) -> Value {
    let mut settings = saved.map(|s| serde_json::to_value(&s.settings).unwrap_or(Value::Null));
    if let Some(Value::Object(map)) = settings.as_mut() {
        if map.get("api_key").is_some_and(|key| !key.is_null()) {
            map.insert("api_key".to_string(), json!(REDACTED));
        }
    }
    let ready = observation.ready.as_ref();
    let metrics = observation.metrics.as_ref();
    let mut profiles = serde_json::Map::new();
    if let Some(ready) = ready {
        for name in profile_names(ready) {
            let readiness = &ready["profiles"][&name];
            let counters = metrics
                .map(|m| &m["profiles"][&name])
                .unwrap_or(&Value::Null);
            profiles.insert(
                name,
                json!({
                    "engine": readiness["engine"],
                    "ready": readiness["ready"],
                    "reason": readiness["reason"],
                    "in_flight": counters["in_flight"],
                    "queued": counters["queued"],
                    "running": counters["running"],
                    "requests": counters["requests"],
                }),
            );
        }
    }
    let running = observation.state == "running";
    json!({
        "running": running,
        "state": observation.state,
        "reason": observation.reason,
        "pid": observation.pid,
        "url": if running { saved.map(|s| s.url.clone()) } else { None },
        "version": observation.health.as_ref().map(|h| h["version"].clone()),
        "uptime_seconds": observation.health.as_ref().map(|h| h["uptime_seconds"].clone()),
        "ready": ready.map(|r| r["status"] == "ready"),
        "config": ready.map(|r| r["config"].clone()),
        "codex": ready.map(|r| r["codex"].clone()),
        "profiles": profiles,
        "requests": metrics.map(|m| json!({
            "total": m["requests_total"],
            "ok": m["requests_ok"],
            "error": m["requests_error"],
        })),
        "last_start": saved.map(|s| json!({
            "url": s.url,
            "pid": s.pid,
            "started_at": s.started_at,
            "config": s.config,
            "settings": settings,
        })),
        "state_file_error": state_error,
        "files": {
            "pid": files.pid,
            "state": files.state,
            "log": files.log,
        },
    })
}

// ---------------------------------------------------------------------------------------------------
// restart

async fn restart(args: StartArgs) -> anyhow::Result<i32> {
    let state_path = DaemonFiles::new(&args.files).state;
    let saved = DaemonState::load(&state_path)?;
    let files = DaemonFiles::merged(&args.files, saved.as_ref());
    let mut merged = match &saved {
        Some(saved) => args.merged_over(saved.settings.clone()),
        None => {
            println!(
                "no saved settings at {}: starting with the flags given",
                state_path.display()
            );
            args
        }
    };
    // An invalid result must not take the running server down.
    merged.resolve_for_daemon().map_err(anyhow::Error::msg)?;
    merged.load_config().context(
        "not restarting: the new settings are invalid (the running server was left alone)",
    )?;
    let lock_guard = lock(&files).await?;
    stop_locked(&files, saved.as_ref(), None).await?;
    if merged.foreground {
        drop(lock_guard);
        return crate::server::serve_foreground(&merged).await.map(|_| 0);
    }
    start_locked(merged, &files).await
}

// ---------------------------------------------------------------------------------------------------
// check

fn check(args: &CheckArgs) -> anyhow::Result<i32> {
    let path = config::resolve_path(&args.config.to_string_lossy(), None);
    let config = match config::load_file(&path, &ServerOverrides::default()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("codex-api-proxy: {errors}");
            return Ok(64);
        }
    };
    let server = &config.server;
    println!(
        "{}: OK, {} profile{}",
        path.display(),
        config.profiles.len(),
        if config.profiles.len() == 1 { "" } else { "s" }
    );
    println!(
        "server: {} api_keys={} codex_bin={} fallback_profile={} log_level={}",
        url_of(&server.host, server.port),
        if server.api_keys.is_empty() {
            "none".to_string()
        } else {
            format!("{} ({REDACTED})", server.api_keys.len())
        },
        server.codex_bin,
        server.fallback_profile.as_deref().unwrap_or("none"),
        server.log_level
    );
    if let Some(warning) = exposure_warning(&server.host, &server.api_keys) {
        println!("{warning}");
    }

    let mut rows = vec![[
        "PROFILE".to_string(),
        "ENGINE".to_string(),
        "MODEL".to_string(),
        "ALIASES".to_string(),
        "MATCH".to_string(),
    ]];
    for profile in &config.profiles {
        rows.push([
            profile.name.clone(),
            profile.engine.as_str().to_string(),
            if profile.pass_model {
                "(the request's)".to_string()
            } else {
                profile
                    .model
                    .clone()
                    .unwrap_or_else(|| "(Codex default)".to_string())
            },
            if profile.aliases.is_empty() {
                "-".to_string()
            } else {
                profile.aliases.join(", ")
            },
            profile
                .match_regex
                .as_ref()
                .map_or("-".to_string(), |regex| regex.as_str().to_string()),
        ]);
    }
    println!();
    print_table(&rows);

    let mut examples: Vec<String> = Vec::new();
    for profile in &config.profiles {
        examples.push(profile.name.clone());
        examples.extend(profile.aliases.iter().cloned());
    }
    examples.extend(args.models.iter().cloned());
    examples.extend(["gpt-5".to_string(), "unknown-model".to_string()]);
    let mut unique: Vec<String> = Vec::new();
    for name in examples {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    let router = Router::new(&config);
    let mut routes = vec![[
        "MODEL".to_string(),
        "ROUTES TO".to_string(),
        "BY".to_string(),
    ]];
    for model in unique {
        match router.route(&config, &model) {
            Some((index, kind)) => routes.push([
                model,
                config.profiles[index].name.clone(),
                kind.as_str().to_string(),
            ]),
            None => routes.push([model, "(no profile: 404)".to_string(), "-".to_string()]),
        }
    }
    println!();
    print_table(&routes);
    Ok(0)
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("  {}", line.join("  ").trim_end());
    }
}

// ---------------------------------------------------------------------------------------------------
// reload

async fn reload(args: &ReloadArgs) -> anyhow::Result<i32> {
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
        let answer = http(saved.address, "POST", "/admin/reload", key, RELOAD_TIMEOUT)
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
    let body = reply.json();
    let outcome = &body["reload"];
    let list = |name: &str| -> String {
        let items: Vec<&str> = outcome[name]
            .as_array()
            .map(|items| items.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(", ")
        }
    };
    let generation = outcome["generation"].as_u64().unwrap_or(0);
    let path = saved
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if outcome["applied"] == true {
        println!("reloaded {path}: now serving generation {generation}");
        println!("  added:     {}", list("added"));
        println!("  changed:   {}", list("changed"));
        println!("  removed:   {}", list("removed"));
        println!("  unchanged: {}", list("unchanged"));
    } else {
        println!("{path} is already in service: generation {generation}, nothing changed");
    }
    if let Some(required) = outcome["restart_required"]
        .as_array()
        .filter(|r| !r.is_empty())
    {
        let items: Vec<&str> = required.iter().filter_map(Value::as_str).collect();
        println!(
            "restart required for: {} (`codex-api-proxy restart` applies them)",
            items.join(", ")
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        let text = "2025 INFO something\nlistening on http://127.0.0.1:41234\n";
        assert_eq!(
            listening_address(text),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(
            listening_address("listening on http://[::1]:80\n"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(listening_address("listening on http://127.0.0.1:"), None);
    }

    #[test]
    fn unspecified_binds_are_reached_over_loopback() {
        assert_eq!(
            connect_address("0.0.0.0:5".parse().unwrap()),
            "127.0.0.1:5".parse().unwrap()
        );
        assert_eq!(
            connect_address("[::]:5".parse().unwrap()),
            "[::1]:5".parse().unwrap()
        );
        assert_eq!(url_of("::1", 8), "http://[::1]:8");
    }

    #[test]
    fn parses_plain_and_chunked_replies() {
        let reply = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (200, "{}"));
        let reply = parse_reply(
            b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((reply.status, reply.body.as_str()), (422, "abcde"));
        assert!(parse_reply(b"garbage").is_err());
    }

    #[test]
    fn formats_times_and_redacts() {
        assert_eq!(format_unix_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix_time(1_709_210_096), "2024-02-29 12:34:56 UTC");
        assert_eq!(
            redact("key=abc abc", &["abc".to_string()]),
            "key=<redacted> <redacted>"
        );
    }

    #[test]
    fn pid_files_of_dead_or_foreign_processes_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.pid");
        assert!(matches!(PidFile::read(&path), PidFile::Missing));
        std::fs::write(&path, "nonsense").unwrap();
        assert!(matches!(PidFile::read(&path), PidFile::Garbled(_)));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        write_pid_file(&path, dead).unwrap();
        assert!(matches!(PidFile::read(&path), PidFile::Dead(pid) if pid == dead));
        let mut sleeper = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        write_pid_file(&path, sleeper.id()).unwrap();
        let read = PidFile::read(&path);
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(matches!(read, PidFile::Foreign { .. }), "{read:?}");
    }

    #[test]
    fn only_our_server_counts_as_ours() {
        let args = |text: &str| text.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert!(is_our_server(&args(
            "/usr/bin/codex-api-proxy start --foreground --port=0"
        )));
        assert!(!is_our_server(&args("vim codex-api-proxy.toml")));
        assert!(!is_our_server(&args("sleep 30")));
        assert!(!is_our_server(&[]));
    }

    #[test]
    fn state_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"{}", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
