//! The shared handle every handler gets: the current [`Snapshot`] behind one `ArcSwap`, the metrics,
//! the reload status and lock, and the shutdown signal. Cheap to clone (`Arc<Inner>`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::ServerOverrides;
use crate::live::snapshot::Snapshot;
use crate::metrics::Metrics;
use crate::usage::Recorder;

/// Outcome bookkeeping of config reloads, shown by `/ready` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub last_reload_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// `[server]` settings that changed in the file but need a restart (host, port, log_level).
    pub restart_required: Vec<String>,
    /// How file changes are noticed (`notify+poll`, `poll`), once the watcher runs; `stopped: <reason>`
    /// while it does not.
    pub watch: Option<String>,
}

/// How long a request whose profile has fallbacks waits for the first event of its run before its
/// response starts on that profile, giving up the fallback: 15 s (`CODEX_PROXY_FALLBACK_WAIT_MS`
/// changes it). The failures that fall back come before that: an upstream 429 or 503 once Codex's own
/// retries are spent (seconds), a used-up quota at once. A model that is silent for
/// longer (one thinking before its first token) then gets its headers and keep-alives instead of
/// nothing.
pub const FALLBACK_WAIT: Duration = Duration::from_secs(15);

/// The `[server]` settings the process started with and cannot change while running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupServer {
    pub host: String,
    pub port: u16,
    pub log_level: String,
    /// The usage ledger's file and retention: the ledger is opened once, at start.
    pub usage_db: Option<PathBuf>,
    pub usage_retention_days: u32,
}

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// The published configuration. Requests `load_full()` it once and keep that `Arc` to their end;
    /// a reload replaces it with one `store`.
    snapshot: ArcSwap<Snapshot>,
    /// Counters; they live as long as the server, across reloads.
    metrics: Metrics,
    /// Written by the reload task, read by `/ready` and `/metrics`; never held across `.await`.
    reload: Mutex<ReloadStatus>,
    /// Serialises reloads: one reads, validates and publishes at a time; the next one re-reads the file.
    reload_lock: tokio::sync::Mutex<()>,
    /// Host, port, log level and usage ledger of the first snapshot: what a reload compares against to
    /// report "restart required" (the snapshot's own values follow the file).
    startup_server: StartupServer,
    /// The config file, when serving from one (reloads re-read it).
    config_path: Option<PathBuf>,
    /// Command-line overrides of `[server]`, re-applied on every reload.
    overrides: ServerOverrides,
    /// The values the config's `${VAR}`s had at start (handed over by `start` to a background server,
    /// whose environment lacks `CODEX_PROXY_API_KEY`); reloads fall back to them.
    config_env: OnceLock<BTreeMap<String, String>>,
    /// Cancelled when the server begins shutting down (stop accepting new work).
    shutdown: CancellationToken,
    /// Cancelled when the shutdown grace period is over: requests still running end with an error.
    abort: CancellationToken,
    /// How often streams send an SSE comment while Codex works.
    keep_alive: Duration,
    /// How long a client may take to send a request head, and then its body: slow or silent clients are
    /// disconnected (head) or answered 408 (body) instead of holding a connection forever.
    client_timeout: Duration,
    /// How long a request whose profile has fallbacks waits for its run's first event before the
    /// response starts on that profile anyway.
    fallback_wait: Duration,
    /// The usage ledger's writer and the dashboard's live figures; set once at start (before serving)
    /// by [`AppState::with_usage`], and off until then. Lives as long as the server.
    usage: OnceLock<Recorder>,
}

/// A duration in milliseconds from the environment variable `name`, if it holds a number.
fn env_millis(name: &str) -> Option<Duration> {
    let millis = std::env::var(name).ok()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(millis))
}

impl AppState {
    pub fn new(
        snapshot: Snapshot,
        config_path: Option<PathBuf>,
        overrides: ServerOverrides,
        shutdown: CancellationToken,
    ) -> AppState {
        let keep_alive =
            env_millis("CODEX_PROXY_SSE_KEEPALIVE_MS").unwrap_or(Duration::from_secs(10));
        let client_timeout = env_millis("CODEX_PROXY_CLIENT_TIMEOUT_MS")
            .filter(|timeout| !timeout.is_zero())
            .unwrap_or(Duration::from_secs(30));
        let fallback_wait = env_millis("CODEX_PROXY_FALLBACK_WAIT_MS")
            .filter(|wait| !wait.is_zero())
            .unwrap_or(FALLBACK_WAIT);
        let server = &snapshot.config.server;
        let startup_server = StartupServer {
            host: server.host.clone(),
            port: server.port,
            log_level: server.log_level.clone(),
            usage_db: server.usage_db.clone(),
            usage_retention_days: server.usage_retention_days,
        };
        AppState {
            inner: Arc::new(Inner {
                snapshot: ArcSwap::from_pointee(snapshot),
                metrics: Metrics::default(),
                reload: Mutex::new(ReloadStatus::default()),
                reload_lock: tokio::sync::Mutex::new(()),
                startup_server,
                config_path,
                overrides,
                config_env: OnceLock::new(),
                shutdown,
                abort: CancellationToken::new(),
                keep_alive,
                client_timeout,
                fallback_wait,
                usage: OnceLock::new(),
            }),
        }
    }

    /// The current snapshot; call once per request and keep it.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    /// Publishes a new snapshot (one atomic store). Only [`crate::live::reload`] calls it, holding
    /// [`AppState::reload_lock`].
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        self.inner.snapshot.store(snapshot);
    }

    /// Held for the whole of one reload.
    pub fn reload_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.reload_lock
    }

    /// The `[server]` settings the process started with.
    pub fn startup_server(&self) -> &StartupServer {
        &self.inner.startup_server
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.inner.reload.lock().clone()
    }

    pub fn update_reload_status(&self, update: impl FnOnce(&mut ReloadStatus)) {
        update(&mut self.inner.reload.lock());
    }

    pub fn config_path(&self) -> Option<&PathBuf> {
        self.inner.config_path.as_ref()
    }

    pub fn overrides(&self) -> &ServerOverrides {
        &self.inner.overrides
    }

    /// Sets the `${VAR}` values reloads fall back to (once; see [`crate::cli::StartArgs::config_env`]).
    pub fn with_config_env(self, env: BTreeMap<String, String>) -> AppState {
        if self.inner.config_env.set(env).is_err() {
            tracing::warn!("the config variables were already set; keeping the first ones");
        }
        self
    }

    /// The value of `${name}` for a reload: the environment's, else the one saved at start.
    pub fn config_var(&self, name: &str) -> Option<String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        crate::config::config_env_lookup(self.inner.config_env.get().unwrap_or(&EMPTY), name)
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Cancelled when remaining requests must end (grace period over).
    pub fn abort(&self) -> &CancellationToken {
        &self.inner.abort
    }

    pub fn abort_streams(&self) {
        self.inner.abort.cancel();
    }

    pub fn keep_alive(&self) -> Duration {
        self.inner.keep_alive
    }

    /// The longest a client may take to send a request head, and then its body.
    pub fn client_timeout(&self) -> Duration {
        self.inner.client_timeout
    }

    /// How long a request that could still fall back waits for its run's first event (see
    /// [`FALLBACK_WAIT`]).
    pub fn fallback_wait(&self) -> Duration {
        self.inner.fallback_wait
    }

    /// Installs the usage recorder (once, before serving; a second call is ignored with a warning).
    pub fn with_usage(self, recorder: Recorder) -> AppState {
        if self.inner.usage.set(recorder).is_err() {
            tracing::warn!("the usage recorder was already set; keeping the first one");
        }
        self
    }

    /// The usage ledger and live request figures (an inert recorder when none was installed).
    pub fn usage(&self) -> &Recorder {
        static OFF: OnceLock<Recorder> = OnceLock::new();
        self.inner
            .usage
            .get()
            .unwrap_or_else(|| OFF.get_or_init(Recorder::default))
    }
}
