//! One supervised `codex app-server` process: spawn it (native binary, own process group, private
//! `CODEX_HOME`), run the `initialize` handshake, publish the live [`Connection`], and respawn it with
//! capped exponential backoff whenever it exits. Stopping closes stdin, then SIGTERM, then SIGKILL.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::protocol::initialize_params;
use super::rpc::Connection;
use super::spare::SpareThreads;
use crate::codex::launch::{spawn_in_group, GroupKiller, ResolvedCodex};
use crate::codex::stderr_file::StderrFile;

/// How long finished threads stay loaded in the app-server (its default is 30 min: memory grows).
const THREAD_UNLOAD_DELAY_SECS: u32 = 5;
/// Longest wait for `initialize`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Grace between closing stdin, SIGTERM and SIGKILL when stopping.
const STOP_GRACE: Duration = Duration::from_secs(2);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often a ready worker is asked how many threads it has loaded (`thread/loaded/list`). `/metrics`
/// shows the last answer and never waits on a worker.
const LOADED_POLL: Duration = Duration::from_secs(1);

/// Everything needed to (re)start the processes of one pool.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub codex: ResolvedCodex,
    pub args: Vec<String>,
    /// The complete environment (see `codex::env`); `CODEX_HOME` is set on top.
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    pub codex_home: PathBuf,
    pub working_dir: PathBuf,
}

/// What a worker is doing.
#[derive(Clone)]
pub enum WorkerState {
    Starting,
    Ready(Arc<Connection>),
    /// Not running; why (with the stderr tail). A restart follows after the backoff.
    Down(String),
    Stopped,
}

impl WorkerState {
    pub fn name(&self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready(_) => "ready",
            WorkerState::Down(_) => "down",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// One worker's figures at one moment; `api::ops` turns them into the `/metrics` worker report.
#[derive(Clone)]
pub struct WorkerFigures {
    pub index: usize,
    /// The live process, if any.
    pub pid: Option<u32>,
    /// Its state; `Down` carries why.
    pub state: WorkerState,
    pub turns_in_flight: u64,
    pub turns_served: u64,
    pub restarts: u64,
    /// Threads loaded at the supervisor's last poll, `None` when unknown.
    pub threads_loaded: Option<u64>,
    /// Spare threads held now, and handed to requests so far (see [`super::spare`]).
    pub spare_threads: u64,
    pub spare_threads_used: u64,
}

/// One worker slot of a pool.
pub struct Worker {
    pub index: usize,
    state: Mutex<WorkerState>,
    /// Bumped on every state change, so requests can wait for a worker to come up.
    changed: watch::Sender<u64>,
    pub pid: AtomicU32,
    pub in_flight: AtomicUsize,
    pub served: AtomicU64,
    pub restarts: AtomicU64,
    /// Consecutive failed starts (0 once a process came up): a profile whose workers all fail to start
    /// answers 503 at once instead of making requests wait.
    pub start_failures: AtomicU32,
    /// Threads the current process had loaded at the last poll ([`LOADED_POLL`]); -1 when unknown.
    pub threads_loaded: AtomicI64,
    /// Cancelled by a request that saw the current process stop answering; the supervisor kills it.
    /// Replaced by a fresh token for every new process.
    kill_slot: Mutex<CancellationToken>,
    /// Threads started ahead for likely next requests (see [`super::spare`]).
    pub spares: SpareThreads,
}

impl Worker {
    pub fn new(index: usize) -> Arc<Worker> {
        Arc::new(Worker {
            index,
            state: Mutex::new(WorkerState::Starting),
            changed: watch::channel(0).0,
            pid: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            start_failures: AtomicU32::new(0),
            threads_loaded: AtomicI64::new(-1),
            kill_slot: Mutex::new(CancellationToken::new()),
            spares: SpareThreads::default(),
        })
    }

    pub fn state(&self) -> WorkerState {
        self.state.lock().clone()
    }

    pub fn set_state(&self, state: WorkerState) {
        *self.state.lock() = state;
        self.changed.send_modify(|generation| *generation += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Asks the supervisor to kill the current process (it stopped answering).
    pub fn request_kill(&self) {
        self.kill_slot.lock().cancel();
    }

    fn fresh_kill_token(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.kill_slot.lock() = token.clone();
        token
    }

    /// The worker's figures for `/metrics`, read from its atomics and state (never from the process).
    pub fn figures(&self) -> WorkerFigures {
        let state = self.state();
        let (spare_threads, spare_threads_used) = self.spares.figures();
        WorkerFigures {
            index: self.index,
            pid: match self.pid.load(Ordering::Relaxed) {
                0 => None,
                pid => Some(pid),
            },
            turns_in_flight: self.in_flight.load(Ordering::Relaxed) as u64,
            turns_served: self.served.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            threads_loaded: u64::try_from(self.threads_loaded.load(Ordering::Relaxed)).ok(),
            spare_threads,
            spare_threads_used,
            state,
        }
    }
}

/// The user's own `CODEX_HOME` (their login lives there).
fn user_codex_home() -> PathBuf {
    std::env::var_os("CODEX_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::config::home_dir().join(".codex"))
}

/// Prepares the private `CODEX_HOME`: the directory (and any missing parent) created 0700, an existing
/// one made 0700 too (it holds the login link and Codex's state), and a symlink to the user's `auth.json`.
pub fn prepare_codex_home(home: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)?;
    let mode = std::fs::metadata(home)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))?;
    }
    let source = user_codex_home().join("auth.json");
    let link = home.join("auth.json");
    if source.exists() && std::fs::canonicalize(&source).ok() != std::fs::canonicalize(&link).ok() {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&source, &link)?;
    }
    Ok(())
}

/// The fixed arguments of every app-server process, before the profile's `-c` overrides.
pub fn base_args() -> Vec<String> {
    [
        "app-server",
        "--disable",
        "unbounded_connection_retries",
        "--disable",
        "apps",
        "--disable",
        "plugins",
        "--disable",
        "skill_mcp_dependency_install",
        "-c",
        "skills.include_instructions=false",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .chain([
        "-c".to_string(),
        format!("thread_unload_delay_secs={THREAD_UNLOAD_DELAY_SECS}"),
    ])
    .collect()
}

struct Running {
    child: Child,
    group: GroupKiller,
    connection: Arc<Connection>,
    stderr: Arc<StderrFile>,
}

async fn start_process(spec: &WorkerSpec) -> Result<Running, String> {
    prepare_codex_home(&spec.codex_home).map_err(|err| {
        format!(
            "cannot prepare the private CODEX_HOME {}: {err}",
            spec.codex_home.display()
        )
    })?;
    // Read once per process start, so that each turn does not read the whole certificate directory.
    let (mut env, home) = (spec.env.clone(), spec.codex_home.clone());
    let env = tokio::task::spawn_blocking(move || {
        crate::codex::trust::compact(&mut env, &home);
        env
    })
    .await
    .map_err(|err| format!("cannot prepare the certificates of a worker: {err}"))?;
    let mut command = Command::new(&spec.codex.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(env)
        .env("CODEX_HOME", &spec.codex_home)
        .current_dir(&spec.working_dir);
    let (stderr, child_stderr) = StderrFile::create(&spec.codex_home).map_err(|err| {
        format!(
            "cannot create the stderr file of a worker in {}: {err}",
            spec.codex_home.display()
        )
    })?;
    let stderr = Arc::new(stderr);
    let (mut child, group) = spawn_in_group(&mut command, child_stderr.into()).map_err(|err| {
        format!(
            "cannot start {} app-server: {err}",
            spec.codex.program.display()
        )
    })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the app-server's stdio was not captured".to_string());
    };
    let connection = Connection::start(stdin, stdout);
    let codex_home = spec.codex_home.clone();
    connection.on_unrouted_notification(move |method, params| {
        if method == crate::account::quota::RATE_LIMITS_UPDATED {
            crate::account::quota::record_rate_limits(&codex_home, params.get());
        }
    });
    let handshake = connection
        .request("initialize", initialize_params(), HANDSHAKE_TIMEOUT)
        .await;
    if let Err(err) = handshake {
        // Let the process end so the reason is in its stderr.
        let _ = tokio::time::timeout(Duration::from_millis(500), child.wait()).await;
        let detail = stderr
            .tail()
            .last_meaningful()
            .unwrap_or_else(|| "no error output".to_string());
        drop(group);
        return Err(format!("the app-server did not start ({err}): {detail}"));
    }
    connection
        .notify("initialized", None)
        .await
        .map_err(|err| format!("the app-server closed during the handshake: {err}"))?;
    Ok(Running {
        child,
        group,
        connection,
        stderr,
    })
}

/// Stops a running process: close stdin, wait, SIGTERM, wait, SIGKILL.
async fn stop_process(mut running: Running) {
    running.connection.close_stdin();
    if tokio::time::timeout(STOP_GRACE, running.child.wait())
        .await
        .is_err()
    {
        running.group.signal(libc::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, running.child.wait())
            .await
            .is_err()
        {
            running.group.kill();
        }
    }
    // Kill anything left in the group (grandchildren), then reap.
    running.group.kill();
    let _ = tokio::time::timeout(STOP_GRACE, running.child.wait()).await;
}

/// Keeps one worker alive until `stop` is cancelled.
pub async fn supervise(worker: Arc<Worker>, spec: Arc<WorkerSpec>, stop: CancellationToken) {
    let mut failures: u32 = 0;
    loop {
        if stop.is_cancelled() {
            break;
        }
        worker.set_state(WorkerState::Starting);
        let kill = worker.fresh_kill_token();
        let started = tokio::select! {
            started = start_process(&spec) => started,
            _ = stop.cancelled() => break,
        };
        match started {
            Ok(running) => {
                let up_since = Instant::now();
                let Some(reason) = serve(&worker, running, &kill, &stop).await else {
                    return;
                };
                worker.set_state(WorkerState::Down(reason));
                if up_since.elapsed() > Duration::from_secs(30) {
                    failures = 0;
                }
                failures += 1;
            }
            Err(reason) => {
                tracing::error!(worker = worker.index, "{reason}");
                worker.start_failures.fetch_add(1, Ordering::Relaxed);
                worker.set_state(WorkerState::Down(reason));
                failures += 1;
            }
        }
        worker.restarts.fetch_add(1, Ordering::Relaxed);
        let backoff = BACKOFF_START
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
            .min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => break,
        }
    }
    worker.set_state(WorkerState::Stopped);
}

/// Publishes a started process and waits for it to end: it exits, a request asks to `kill` it (it
/// stopped answering), or its connection breaks (stdin stalled, an overlong line). Returns why it ended,
/// or `None` when `stop` stopped it.
async fn serve(
    worker: &Arc<Worker>,
    mut running: Running,
    kill: &CancellationToken,
    stop: &CancellationToken,
) -> Option<String> {
    let pid = running.child.id().unwrap_or(0);
    worker.pid.store(pid, Ordering::Relaxed);
    worker.start_failures.store(0, Ordering::Relaxed);
    worker.set_state(WorkerState::Ready(running.connection.clone()));
    tracing::info!(worker = worker.index, pid, "app-server worker ready");
    let connection = running.connection.clone();
    let _poller = spawn_loaded_poller(worker, &connection, &running.stderr);
    tokio::select! {
        _ = connection.closed().cancelled() => {}
        _ = kill.cancelled() => {
            tracing::warn!(worker = worker.index, pid, "app-server worker stopped answering: killing it");
        }
        _ = connection.broken().cancelled() => {}
        _ = stop.cancelled() => {
            worker.set_state(WorkerState::Stopped);
            stop_process(running).await;
            worker.pid.store(0, Ordering::Relaxed);
            worker.set_state(WorkerState::Stopped);
            return None;
        }
    }
    running.group.kill();
    worker.threads_loaded.store(-1, Ordering::Relaxed);
    let status = tokio::time::timeout(Duration::from_secs(2), running.child.wait())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|status| status.to_string())
        .unwrap_or_else(|| "unknown status".to_string());
    let detail = connection
        .failure()
        .unwrap_or_else(|| running.stderr.tail().last_meaningful().unwrap_or_default());
    let reason = format!("the app-server worker exited ({status}) {detail}")
        .trim()
        .to_string();
    tracing::warn!(worker = worker.index, pid, "{reason}");
    worker.pid.store(0, Ordering::Relaxed);
    Some(reason)
}

/// Asks the process every [`LOADED_POLL`] how many threads it has loaded and stores the answer in
/// [`Worker::threads_loaded`], and keeps its stderr file under its limit, until the returned guard is
/// dropped.
fn spawn_loaded_poller(
    worker: &Arc<Worker>,
    connection: &Arc<Connection>,
    stderr: &Arc<StderrFile>,
) -> AbortOnDrop {
    let connection = connection.clone();
    let worker = worker.clone();
    let stderr = stderr.clone();
    AbortOnDrop(tokio::spawn(async move {
        loop {
            if let Err(err) = stderr.trim() {
                tracing::debug!(
                    worker = worker.index,
                    "cannot trim the worker's stderr file: {err}"
                );
            }
            let loaded = connection
                .request("thread/loaded/list", json!({}), LOADED_POLL)
                .await
                .ok()
                .and_then(|result| result.get("data").and_then(Value::as_array).map(Vec::len));
            let loaded = loaded.map_or(-1, |count| count as i64);
            worker.threads_loaded.store(loaded, Ordering::Relaxed);
            tokio::time::sleep(LOADED_POLL).await;
        }
    }))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
