//! The command line: clap types for `start`, `stop`, `status`, `restart`, `check` and `reload`, and the
//! step that turns `start` flags into a validated [`Config`] (from `--config`, or the implicit
//! `codex-local` profile built from flags and `CODEX_PROXY_*` variables). No I/O beyond reading the
//! config file and the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, EngineKind, ImplicitProfile, ServerOverrides};

#[derive(Debug, Parser)]
#[command(
    name = "codex-api-proxy",
    version,
    about = "OpenAI-compatible HTTP proxy that answers chat completions with your local Codex CLI login",
    long_about = "OpenAI-compatible HTTP proxy that answers /v1/chat/completions with your local Codex CLI login.\n\n\
        Profiles (engine, model, sandbox, limits, keys) come from a TOML file given with --config; the request's \
        `model` picks the profile and saving the file reloads it live. Without --config, one profile named \
        `codex-local` is built from the flags below and every model name routes to it.\n\n\
        Quick start:  codex-api-proxy start --config config.toml   then   codex-api-proxy status"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the proxy (in the background unless --foreground) and wait until it answers /health.
    Start(StartArgs),
    /// Stop the background proxy: finish in-flight requests within the grace period, then exit.
    Stop(StopArgs),
    /// Show whether the proxy runs, where, with which config and profiles. Exit 0 running, 1 stopped.
    Status(StatusArgs),
    /// Stop, then start again with the last successful start's settings plus any overrides given.
    Restart(StartArgs),
    /// Validate a config file without starting anything; show the profiles and how model names route.
    Check(CheckArgs),
    /// Ask the running proxy to reload its config file now, and print what changed.
    Reload(ReloadArgs),
}

/// Where the daemon keeps its pid, state and log files.
#[derive(Debug, Clone, Args, Default)]
pub struct FileArgs {
    /// Daemon pid file [default: ~/.codex-api-proxy/codex-api-proxy.pid]
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Daemon log file, appended to by `start` [default: ~/.codex-api-proxy/codex-api-proxy.log]
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Daemon state file (mode 0600; `restart` reuses its settings) [default: ~/.codex-api-proxy/codex-api-proxy.state.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<PathBuf>,
}

impl FileArgs {
    pub fn pid_file(&self) -> PathBuf {
        self.pid_file
            .clone()
            .unwrap_or_else(|| config::state_dir().join("codex-api-proxy.pid"))
    }
    pub fn log_file(&self) -> PathBuf {
        self.log_file
            .clone()
            .unwrap_or_else(|| config::state_dir().join("codex-api-proxy.log"))
    }
    pub fn state_file(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| config::state_dir().join("codex-api-proxy.state.json"))
    }
}

#[derive(Debug, Clone, Args, Default, serde::Serialize, serde::Deserialize)]
pub struct StartArgs {
    /// TOML file declaring [server] settings and named [profiles.NAME]; saving it reloads the server live
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve in this terminal instead of starting a background daemon (Ctrl-C stops gracefully)
    #[arg(long)]
    #[serde(skip)]
    pub foreground: bool,

    /// Bind host; a non-loopback host without --api-key prints a warning [env: CODEX_PROXY_HOST] [default: 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// Bind port; 0 picks a free port (printed as `listening on http://HOST:PORT`) [env: CODEX_PROXY_PORT] [default: 8765]
    #[arg(long)]
    pub port: Option<u16>,
    /// Require `Authorization: Bearer <key>` on API requests [env: CODEX_PROXY_API_KEY]
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Codex executable (an npm install's launcher is bypassed for its native binary) [env: CODEX_PROXY_CODEX_BIN] [default: codex]
    #[arg(long, value_name = "PATH")]
    pub codex_bin: Option<String>,
    /// Log level: debug, info, warning or error [env: CODEX_PROXY_LOG_LEVEL] [default: info]
    #[arg(long)]
    pub log_level: Option<String>,

    /// Outbound proxy URL given to Codex as http_proxy/https_proxy (no --config) [env: CODEX_PROXY_PROXY]
    #[arg(long)]
    pub proxy: Option<String>,
    /// Model passed to Codex as --model (no --config) [env: CODEX_PROXY_MODEL]
    #[arg(long)]
    pub model: Option<String>,
    /// Engine: exec or app-server (no --config) [env: CODEX_PROXY_ENGINE] [default: exec]
    #[arg(long)]
    pub engine: Option<String>,
    /// Long-lived app-server workers (no --config) [env: CODEX_PROXY_WORKERS] [default: 1]
    #[arg(long)]
    pub workers: Option<usize>,
    /// Waiting requests beyond this get 429 (no --config) [env: CODEX_PROXY_MAX_QUEUE_SIZE] [default: 64]
    #[arg(long)]
    pub max_queue_size: Option<usize>,
    /// Longest wait for a Codex slot before 429 (no --config) [env: CODEX_PROXY_QUEUE_TIMEOUT_SECONDS] [default: 30]
    #[arg(long)]
    pub queue_timeout_seconds: Option<u64>,
    /// Private CODEX_HOME of app-server workers (no --config) [env: CODEX_PROXY_APP_SERVER_CODEX_HOME] [default: ~/.codex-api-proxy/codex-home/codex-local]
    #[arg(long, value_name = "DIR")]
    pub app_server_codex_home: Option<PathBuf>,
    /// Codex config override passed as `-c key=value`; repeatable (no --config) [env: CODEX_PROXY_CODEX_CONFIGS, `;;`-separated]
    #[arg(long, value_name = "KEY=VALUE")]
    pub codex_config: Vec<String>,
    /// Run `codex exec` with --ephemeral (no --config) [env: CODEX_PROXY_EPHEMERAL] [default: on]
    #[arg(long, overrides_with = "no_ephemeral")]
    pub ephemeral: bool,
    /// Run `codex exec` without --ephemeral (no --config)
    #[arg(long)]
    pub no_ephemeral: bool,
    /// Enable Codex agent tools and workspace writes, for trusted clients only (no --config) [env: CODEX_PROXY_AGENT] [default: off]
    #[arg(long, overrides_with = "no_agent")]
    pub agent: bool,
    /// Disable agent tools: read-only sandbox (no --config)
    #[arg(long)]
    pub no_agent: bool,
    /// Fast defaults: model_reasoning_effort="low" unless --codex-config sets it (no --config)
    #[arg(long)]
    pub fast: bool,
    /// Default Codex working directory (no --config) [env: CODEX_PROXY_DEFAULT_CWD] [default: ~/.codex-api-proxy/workspace]
    #[arg(long, value_name = "DIR")]
    pub default_cwd: Option<PathBuf>,
    /// Allowed root for metadata.cwd; repeatable (no --config) [env: CODEX_PROXY_ALLOWED_ROOTS, colon-separated] [default: the default cwd]
    #[arg(long, value_name = "DIR")]
    pub allowed_root: Vec<PathBuf>,
    /// Per-request timeout in seconds (no --config) [env: CODEX_PROXY_TIMEOUT_SECONDS] [default: 300]
    #[arg(long)]
    pub timeout_seconds: Option<u64>,
    /// Simultaneous Codex runs (no --config) [env: CODEX_PROXY_MAX_CONCURRENCY] [default: 1 for exec, 4 per worker for app-server]
    #[arg(long)]
    pub max_concurrency: Option<usize>,

    /// Seconds `stop` lets in-flight requests finish before ending them [default: 10]
    #[arg(long)]
    pub grace_seconds: Option<u64>,

    #[command(flatten)]
    #[serde(skip)]
    pub files: FileArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Seconds to let in-flight requests finish before they are ended [default: the start setting, else 10]
    #[arg(long)]
    pub grace_seconds: Option<u64>,
    #[command(flatten)]
    pub files: FileArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Also show the saved start settings, profiles and counters
    #[arg(long)]
    pub verbose: bool,
    /// Print one JSON object (for scripts)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub files: FileArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The config file to validate
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Model names to show the routing of (default: each profile's name and aliases, plus a few examples)
    #[arg(long = "model", value_name = "NAME")]
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub files: FileArgs,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn env_bool(name: &str) -> Option<bool> {
    env(name).map(|value| {
        matches!(
            value.to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

fn env_number<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    match env(name) {
        None => Ok(None),
        Some(value) => value
            .parse()
            .map(Some)
            .map_err(|_| format!("{name}={value} is not a valid number")),
    }
}

impl StartArgs {
    /// Server settings from flags, then `CODEX_PROXY_*` variables.
    pub fn server_overrides(&self) -> Result<ServerOverrides, String> {
        Ok(ServerOverrides {
            host: self.host.clone().or_else(|| env("CODEX_PROXY_HOST")),
            port: match self.port {
                Some(port) => Some(port),
                None => env_number("CODEX_PROXY_PORT")?,
            },
            api_key: self
                .api_key
                .clone()
                .filter(|key| !key.is_empty())
                .or_else(|| env("CODEX_PROXY_API_KEY")),
            codex_bin: self
                .codex_bin
                .clone()
                .or_else(|| env("CODEX_PROXY_CODEX_BIN")),
            log_level: self
                .log_level
                .clone()
                .or_else(|| env("CODEX_PROXY_LOG_LEVEL")),
        })
    }

    /// Profile flags given on the command line (an error together with --config).
    pub fn profile_flags_given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let checks: [(&'static str, bool); 17] = [
            ("--proxy", self.proxy.is_some()),
            ("--model", self.model.is_some()),
            ("--engine", self.engine.is_some()),
            ("--workers", self.workers.is_some()),
            ("--max-queue-size", self.max_queue_size.is_some()),
            (
                "--queue-timeout-seconds",
                self.queue_timeout_seconds.is_some(),
            ),
            (
                "--app-server-codex-home",
                self.app_server_codex_home.is_some(),
            ),
            ("--codex-config", !self.codex_config.is_empty()),
            ("--ephemeral", self.ephemeral),
            ("--no-ephemeral", self.no_ephemeral),
            ("--agent", self.agent),
            ("--no-agent", self.no_agent),
            ("--fast", self.fast),
            ("--default-cwd", self.default_cwd.is_some()),
            ("--allowed-root", !self.allowed_root.is_empty()),
            ("--timeout-seconds", self.timeout_seconds.is_some()),
            ("--max-concurrency", self.max_concurrency.is_some()),
        ];
        for (flag, present) in checks {
            if present {
                given.push(flag);
            }
        }
        given
    }

    /// The implicit profile's settings from flags, then `CODEX_PROXY_*` variables, then defaults.
    fn implicit_profile(&self) -> Result<ImplicitProfile, String> {
        let engine_text = self.engine.clone().or_else(|| env("CODEX_PROXY_ENGINE"));
        let engine = match engine_text.as_deref() {
            None | Some("exec") => EngineKind::Exec,
            Some("app-server") => EngineKind::AppServer,
            Some(other) => {
                return Err(format!(
                    "unknown engine `{other}`: use --engine exec or --engine app-server"
                ))
            }
        };
        let codex_config = if self.codex_config.is_empty() {
            env("CODEX_PROXY_CODEX_CONFIGS")
                .map(|value| {
                    value
                        .split(";;")
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        } else {
            self.codex_config.clone()
        };
        for item in &codex_config {
            if !item.contains('=') {
                return Err(format!(
                    "--codex-config {item:?} is not of the form key=value"
                ));
            }
        }
        let ephemeral = if self.no_ephemeral {
            false
        } else if self.ephemeral {
            true
        } else {
            env_bool("CODEX_PROXY_EPHEMERAL").unwrap_or(true)
        };
        let agent = if self.no_agent {
            false
        } else if self.agent {
            true
        } else {
            env_bool("CODEX_PROXY_AGENT").unwrap_or(false)
        };
        let allowed_roots = if self.allowed_root.is_empty() {
            env("CODEX_PROXY_ALLOWED_ROOTS")
                .map(|value| {
                    value
                        .split(':')
                        .filter(|item| !item.is_empty())
                        .map(|item| config::resolve_path(item, None))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            self.allowed_root
                .iter()
                .map(|root| config::resolve_path(&root.to_string_lossy(), None))
                .collect()
        };
        let default_cwd = self
            .default_cwd
            .as_ref()
            .map(|dir| dir.to_string_lossy().to_string())
            .or_else(|| env("CODEX_PROXY_DEFAULT_CWD"))
            .map(|dir| config::resolve_path(&dir, None));
        let workers = match self.workers {
            Some(workers) => workers,
            None => env_number("CODEX_PROXY_WORKERS")?.unwrap_or(1),
        };
        if workers == 0 {
            return Err("--workers must be at least 1".to_string());
        }
        let max_concurrency = match self.max_concurrency {
            Some(value) => Some(value),
            None => env_number("CODEX_PROXY_MAX_CONCURRENCY")?,
        };
        if max_concurrency == Some(0) {
            return Err("--max-concurrency must be at least 1".to_string());
        }
        let timeout_seconds = match self.timeout_seconds {
            Some(value) => value,
            None => env_number("CODEX_PROXY_TIMEOUT_SECONDS")?.unwrap_or(300),
        };
        if timeout_seconds == 0 {
            return Err("--timeout-seconds must be at least 1".to_string());
        }
        Ok(ImplicitProfile {
            model: self.model.clone().or_else(|| env("CODEX_PROXY_MODEL")),
            engine,
            workers,
            max_queue_size: match self.max_queue_size {
                Some(value) => value,
                None => env_number("CODEX_PROXY_MAX_QUEUE_SIZE")?.unwrap_or(64),
            },
            queue_timeout_seconds: match self.queue_timeout_seconds {
                Some(value) => value,
                None => env_number("CODEX_PROXY_QUEUE_TIMEOUT_SECONDS")?.unwrap_or(30),
            },
            codex_home: self
                .app_server_codex_home
                .clone()
                .or_else(|| env("CODEX_PROXY_APP_SERVER_CODEX_HOME").map(PathBuf::from))
                .map(|dir| config::resolve_path(&dir.to_string_lossy(), None)),
            codex_config,
            ephemeral,
            agent,
            fast: self.fast,
            proxy: self.proxy.clone().or_else(|| env("CODEX_PROXY_PROXY")),
            default_cwd,
            allowed_roots,
            timeout_seconds,
            max_concurrency,
        })
    }

    /// The configuration this `start` describes, fully validated.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let overrides = self.server_overrides().map_err(anyhow::Error::msg)?;
        match &self.config {
            Some(path) => {
                let given = self.profile_flags_given();
                if !given.is_empty() {
                    anyhow::bail!(
                        "{} cannot be combined with --config: set {} in the profiles of {} instead",
                        given.join(", "),
                        if given.len() == 1 { "it" } else { "them" },
                        path.display()
                    );
                }
                let path = config::resolve_path(&path.to_string_lossy(), None);
                Ok(config::load_file(&path, &overrides)?)
            }
            None => {
                let settings = self.implicit_profile().map_err(anyhow::Error::msg)?;
                Ok(Config::implicit(&overrides, &settings))
            }
        }
    }
}
