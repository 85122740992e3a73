//! The command line: clap types for `start`, `stop`, `status`, `restart`, `check` and `reload`, and the
//! step that turns `start` flags into a validated [`Config`] (from `--config`, or the implicit
//! `codex-local` profile built from flags and `CODEX_PROXY_*` variables). Also the pieces `daemon` needs
//! to carry a start's settings over to the background server and to `restart`: making them
//! self-contained ([`StartArgs::resolve_for_daemon`]), writing them back as flags
//! ([`StartArgs::to_flags`]) and merging them ([`StartArgs::merged_over`]). No I/O beyond reading the
//! config file and the environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, config_env_lookup, limits, Config, EngineKind, ImplicitProfile, ServerOverrides,
};

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
    /// Start the proxy (in the background unless --foreground) and wait until it answers /health
    ///
    /// In the background: validates the settings (an invalid config fails here, listing every problem),
    /// starts the server detached from the terminal with its output appended to the log file, writes
    /// the pid file and waits up to 15 s for /health. Then prints the url, the settings (the api key as
    /// <redacted>), the profiles and the endpoints, and saves the settings in the state file for
    /// `restart`. If the server exits or never answers, prints why and the end of the log, and leaves
    /// nothing running. If it already runs, says so and exits 0.
    Start(StartArgs),
    /// Stop the background proxy: finish in-flight requests within the grace period, then exit
    ///
    /// Sends SIGTERM: the server stops accepting connections, lets in-flight requests finish for its
    /// grace period (`start --grace-seconds`), then ends the rest with an error and exits. Only if it is
    /// still alive after the grace period plus 5 s is its whole session (the server and its Codex
    /// processes) killed. A stale pid file (dead pid, or a pid reused by another program) is removed and
    /// the process it names is left alone.
    Stop(StopArgs),
    /// Show whether the proxy runs, where, with which config and profiles. Exit 0 running, 1 stopped
    ///
    /// Running means the pid file names a live codex-api-proxy process *and* /health at the saved
    /// address answers with that pid. Also reported: stale pid files, a server that does not answer,
    /// the config generation and last reload error, and each profile's engine, readiness and in-flight
    /// requests.
    Status(StatusArgs),
    /// Stop, then start again with the last successful start's settings plus any flags given now
    ///
    /// The settings come from the state file; a flag given now wins over the saved one (e.g.
    /// `restart --port 9000`, `restart --api-key NEW`). If the result is invalid the running server is
    /// left alone. Without a state file, starts with the flags given.
    Restart(StartArgs),
    /// Validate a config file without starting anything; show the profiles and how model names route
    ///
    /// Exit 0 when valid, 64 with every problem (file, line, profile) when not.
    Check(CheckArgs),
    /// Ask the running proxy to reload its config file now, and print what changed
    ///
    /// Prints the new generation and the profiles added, changed and removed. Exits 1 if the server
    /// rejects the file (it keeps serving the previous config) or was started without --config.
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

/// The settings of one `start`. Also the `restart` flags, and (serialised, with the api key) what the
/// state file keeps for the next `restart`.
#[derive(Debug, Clone, Args, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
    /// Require `Authorization: Bearer <key>` on API requests; kept in the state file for `restart`,
    /// printed only as <redacted> [env: CODEX_PROXY_API_KEY]
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Internal (the background server): read the api key and the values of the config's `${VAR}`s
    /// from the first line of stdin (one JSON object), so the key shows in neither a process listing
    /// nor the environment Codex inherits
    #[arg(long, hide = true, requires = "foreground")]
    #[serde(skip)]
    pub secrets_stdin: bool,
    /// The values of the variables the config file references through `${VAR}`, as the last start saw
    /// them: a background server expands the file with them (its own environment lacks
    /// `CODEX_PROXY_API_KEY`), and `restart` falls back to them for variables its own environment
    /// lacks. Never a flag; kept in the state file (mode 0600) like the api key.
    #[arg(skip)]
    pub config_env: BTreeMap<String, String>,
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
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_WORKERS))]
    pub workers: Option<usize>,
    /// Waiting requests beyond this get 429 (no --config) [env: CODEX_PROXY_MAX_QUEUE_SIZE] [default: 64]
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(0..=limits::MAX_QUEUE_SIZE))]
    pub max_queue_size: Option<usize>,
    /// Longest wait for a Codex slot before 429 (no --config) [env: CODEX_PROXY_QUEUE_TIMEOUT_SECONDS] [default: 30]
    #[arg(long, value_parser = RangedU64ValueParser::<u64>::new().range(1..=limits::MAX_SECONDS))]
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
    #[arg(long, value_parser = RangedU64ValueParser::<u64>::new().range(1..=limits::MAX_SECONDS))]
    pub timeout_seconds: Option<u64>,
    /// Simultaneous Codex runs (no --config) [env: CODEX_PROXY_MAX_CONCURRENCY] [default: 1 for exec, 4 per worker for app-server]
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_CONCURRENCY))]
    pub max_concurrency: Option<usize>,

    /// On stop (SIGTERM, Ctrl-C, `stop`): seconds in-flight requests get to finish before they are ended
    /// with an error [default: 10]
    #[arg(long, value_parser = RangedU64ValueParser::<u64>::new().range(0..=limits::MAX_SECONDS))]
    pub grace_seconds: Option<u64>,

    #[command(flatten)]
    #[serde(skip)]
    pub files: FileArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Seconds this command waits for the server to finish in-flight requests and exit before it kills
    /// the server's whole session (plus a 5 s margin). Only the waiting changes: the server ends
    /// requests after its own grace period, set by `start --grace-seconds` [default: the start setting, else 10]
    #[arg(long, value_parser = RangedU64ValueParser::<u64>::new().range(0..=limits::MAX_SECONDS))]
    pub grace_seconds: Option<u64>,
    #[command(flatten)]
    pub files: FileArgs,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Also show the saved start settings (api key redacted), the Codex binary and request counters
    #[arg(long)]
    pub verbose: bool,
    /// Print one JSON object instead (for scripts); the exit code is the same
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
    /// Also show where this model name routes; repeatable (always shown: each profile's name and aliases,
    /// `gpt-5` and `unknown-model`)
    #[arg(long = "model", value_name = "NAME")]
    pub models: Vec<String>,
}

/// `reload` finds the server through the state and pid files, and authenticates with the api key the
/// state file keeps.
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

/// A number of the implicit profile: the flag's value (clap checked its range), else the variable's,
/// which must lie in `min..=max` like the flag's, else `default`.
fn bounded(
    flag: Option<u64>,
    variable: &str,
    (min, max): (u64, u64),
    default: u64,
) -> Result<u64, String> {
    let value = match flag {
        Some(value) => value,
        None => env_number::<u64>(variable)?.unwrap_or(default),
    };
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        let flag = variable
            .trim_start_matches("CODEX_PROXY_")
            .to_ascii_lowercase()
            .replace('_', "-");
        Err(format!(
            "--{flag} (or {variable}) must be from {min} to {max}, found {value}"
        ))
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

    /// `--engine`, else `CODEX_PROXY_ENGINE`, else exec.
    fn implicit_engine(&self) -> Result<EngineKind, String> {
        let engine_text = self.engine.clone().or_else(|| env("CODEX_PROXY_ENGINE"));
        match engine_text.as_deref() {
            None | Some("exec") => Ok(EngineKind::Exec),
            Some("app-server") => Ok(EngineKind::AppServer),
            Some(other) => Err(format!(
                "unknown engine `{other}`: use --engine exec or --engine app-server"
            )),
        }
    }

    /// `--codex-config` items, else `CODEX_PROXY_CODEX_CONFIGS` (`;;`-separated), each `key=value`.
    fn implicit_codex_config(&self) -> Result<Vec<String>, String> {
        let codex_config: Vec<String> = if self.codex_config.is_empty() {
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
        Ok(codex_config)
    }

    /// `--allowed-root` paths, else `CODEX_PROXY_ALLOWED_ROOTS` (colon-separated), made absolute.
    fn implicit_allowed_roots(&self) -> Vec<PathBuf> {
        if self.allowed_root.is_empty() {
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
        }
    }

    /// The implicit profile's settings from flags, then `CODEX_PROXY_*` variables, then defaults.
    fn implicit_profile(&self) -> Result<ImplicitProfile, String> {
        let engine = self.implicit_engine()?;
        let codex_config = self.implicit_codex_config()?;
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
        let allowed_roots = self.implicit_allowed_roots();
        let default_cwd = self
            .default_cwd
            .as_ref()
            .map(|dir| dir.to_string_lossy().to_string())
            .or_else(|| env("CODEX_PROXY_DEFAULT_CWD"))
            .map(|dir| config::resolve_path(&dir, None));
        let workers = bounded(
            self.workers.map(|v| v as u64),
            "CODEX_PROXY_WORKERS",
            (1, limits::MAX_WORKERS),
            1,
        )? as usize;
        let max_concurrency = match self.max_concurrency {
            Some(value) => Some(value as u64),
            None => env_number::<u64>("CODEX_PROXY_MAX_CONCURRENCY")?,
        };
        let max_concurrency = match max_concurrency {
            Some(value) => Some(bounded(
                Some(value),
                "CODEX_PROXY_MAX_CONCURRENCY",
                (1, limits::MAX_CONCURRENCY),
                1,
            )? as usize),
            None => None,
        };
        let timeout_seconds = bounded(
            self.timeout_seconds,
            "CODEX_PROXY_TIMEOUT_SECONDS",
            (1, limits::MAX_SECONDS),
            300,
        )?;
        Ok(ImplicitProfile {
            model: self.model.clone().or_else(|| env("CODEX_PROXY_MODEL")),
            engine,
            workers,
            max_queue_size: bounded(
                self.max_queue_size.map(|v| v as u64),
                "CODEX_PROXY_MAX_QUEUE_SIZE",
                (0, limits::MAX_QUEUE_SIZE),
                64,
            )? as usize,
            queue_timeout_seconds: bounded(
                self.queue_timeout_seconds,
                "CODEX_PROXY_QUEUE_TIMEOUT_SECONDS",
                (1, limits::MAX_SECONDS),
                30,
            )?,
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

    /// The configuration this `start` describes, fully validated. `${VAR}`s in the file take their
    /// value from the environment, else from [`StartArgs::config_env`].
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
                let text = std::fs::read_to_string(&path).map_err(|err| config::ConfigErrors {
                    path: path.display().to_string(),
                    problems: vec![config::Problem {
                        line: None,
                        profile: None,
                        message: format!("cannot read the file: {err}"),
                    }],
                })?;
                let lookup = |name: &str| config_env_lookup(&self.config_env, name);
                Ok(config::parse(&text, &path, &overrides, &lookup)?)
            }
            None => {
                let settings = self.implicit_profile().map_err(anyhow::Error::msg)?;
                Ok(Config::implicit(&overrides, &settings))
            }
        }
    }

    /// Keeps in [`StartArgs::config_env`] the value of every variable `config` references, as
    /// [`StartArgs::load_config`] found it (what a background server and a later `restart` need).
    pub fn keep_config_env(&mut self, config: &Config) {
        self.config_env = config
            .env_refs
            .iter()
            .filter_map(|name| {
                config_env_lookup(&self.config_env, name).map(|value| (name.clone(), value))
            })
            .collect();
    }
}

/// What a background server reads on its stdin (`--secrets-stdin`): one line of JSON.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Secrets {
    #[serde(default)]
    pub api_key: Option<String>,
    /// The values of the `${VAR}`s the config file references ([`StartArgs::config_env`]).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl StartArgs {
    /// `start --foreground --secrets-stdin` (how `start` runs the background server): the settings
    /// with the api key and the config's variables read from the first line of stdin. Other settings
    /// are returned unchanged.
    pub fn with_secrets_from_stdin(&self) -> anyhow::Result<StartArgs> {
        use anyhow::Context;
        let mut args = self.clone();
        if args.secrets_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the settings the start command hands over on stdin")?;
            let secrets: Secrets = serde_json::from_str(line.trim_end_matches(['\r', '\n']))
                .context("--secrets-stdin: stdin held no JSON object on its first line")?;
            if let Some(key) = secrets.api_key.filter(|key| !key.is_empty()) {
                args.api_key = Some(key);
            }
            args.config_env.extend(secrets.env);
        }
        Ok(args)
    }
}

/// An absolute form of a path given on the command line (`~` expanded, relative to the current directory).
fn absolute(path: &std::path::Path) -> PathBuf {
    config::resolve_path(&path.to_string_lossy(), None)
}

impl StartArgs {
    /// Makes these settings mean the same from any directory and environment, so the background server
    /// and a later `restart` see what this `start` saw: the `CODEX_PROXY_*` server settings (host, port,
    /// api key, codex binary, log level) are folded into the flags, and paths become absolute.
    pub fn resolve_for_daemon(&mut self) -> Result<(), String> {
        let overrides = self.server_overrides()?;
        self.host = overrides.host;
        self.port = overrides.port;
        self.api_key = overrides.api_key;
        self.codex_bin = overrides.codex_bin.map(|bin| {
            // A bare name is looked up in PATH; only a relative path needs anchoring.
            if bin.contains('/') {
                absolute(std::path::Path::new(&bin))
                    .to_string_lossy()
                    .to_string()
            } else {
                bin
            }
        });
        self.log_level = overrides.log_level;
        self.config = self.config.as_deref().map(absolute);
        self.default_cwd = self.default_cwd.as_deref().map(absolute);
        self.app_server_codex_home = self.app_server_codex_home.as_deref().map(absolute);
        self.allowed_root = self
            .allowed_root
            .iter()
            .map(|root| absolute(root))
            .collect();
        Ok(())
    }

    /// These settings as `start` flags (`--name=value`), for the background server's command line.
    /// Neither `--foreground`, the daemon file flags nor the api key are included: the key is handed
    /// over on stdin (`--secrets-stdin`) so it never shows in a process listing.
    pub fn to_flags(&self) -> Vec<OsString> {
        fn value(flags: &mut Vec<OsString>, name: &str, value: impl Into<OsString>) {
            let mut flag = OsString::from(format!("--{name}="));
            flag.push(value.into());
            flags.push(flag);
        }
        let mut flags = Vec::new();
        if let Some(path) = &self.config {
            value(&mut flags, "config", path);
        }
        let texts = [
            ("host", self.host.clone()),
            ("port", self.port.map(|v| v.to_string())),
            ("codex-bin", self.codex_bin.clone()),
            ("log-level", self.log_level.clone()),
            ("proxy", self.proxy.clone()),
            ("model", self.model.clone()),
            ("engine", self.engine.clone()),
            ("workers", self.workers.map(|v| v.to_string())),
            ("max-queue-size", self.max_queue_size.map(|v| v.to_string())),
            (
                "queue-timeout-seconds",
                self.queue_timeout_seconds.map(|v| v.to_string()),
            ),
            (
                "timeout-seconds",
                self.timeout_seconds.map(|v| v.to_string()),
            ),
            (
                "max-concurrency",
                self.max_concurrency.map(|v| v.to_string()),
            ),
            ("grace-seconds", self.grace_seconds.map(|v| v.to_string())),
        ];
        for (name, text) in texts {
            if let Some(text) = text {
                value(&mut flags, name, text);
            }
        }
        if let Some(path) = &self.app_server_codex_home {
            value(&mut flags, "app-server-codex-home", path);
        }
        if let Some(path) = &self.default_cwd {
            value(&mut flags, "default-cwd", path);
        }
        for root in &self.allowed_root {
            value(&mut flags, "allowed-root", root);
        }
        for item in &self.codex_config {
            value(&mut flags, "codex-config", item);
        }
        let switches = [
            ("--ephemeral", self.ephemeral && !self.no_ephemeral),
            ("--no-ephemeral", self.no_ephemeral),
            ("--agent", self.agent && !self.no_agent),
            ("--no-agent", self.no_agent),
            ("--fast", self.fast),
        ];
        for (flag, on) in switches {
            if on {
                flags.push(OsString::from(flag));
            }
        }
        flags
    }

    /// `restart`: these flags (given now) over `saved` (the last successful start), field by field. A
    /// value given now wins; lists given now replace the saved lists; `--fast` cannot be taken back
    /// (there is no `--no-fast`). The daemon file flags are merged by the caller.
    pub fn merged_over(self, saved: StartArgs) -> StartArgs {
        let now = self;
        let (ephemeral, no_ephemeral) = if now.ephemeral || now.no_ephemeral {
            (now.ephemeral, now.no_ephemeral)
        } else {
            (saved.ephemeral, saved.no_ephemeral)
        };
        let (agent, no_agent) = if now.agent || now.no_agent {
            (now.agent, now.no_agent)
        } else {
            (saved.agent, saved.no_agent)
        };
        let list = |now: Vec<String>, saved: Vec<String>| if now.is_empty() { saved } else { now };
        StartArgs {
            config: now.config.or(saved.config),
            foreground: now.foreground,
            host: now.host.or(saved.host),
            port: now.port.or(saved.port),
            api_key: now.api_key.or(saved.api_key),
            secrets_stdin: now.secrets_stdin,
            config_env: {
                let mut env = saved.config_env;
                env.extend(now.config_env);
                env
            },
            codex_bin: now.codex_bin.or(saved.codex_bin),
            log_level: now.log_level.or(saved.log_level),
            proxy: now.proxy.or(saved.proxy),
            model: now.model.or(saved.model),
            engine: now.engine.or(saved.engine),
            workers: now.workers.or(saved.workers),
            max_queue_size: now.max_queue_size.or(saved.max_queue_size),
            queue_timeout_seconds: now.queue_timeout_seconds.or(saved.queue_timeout_seconds),
            app_server_codex_home: now.app_server_codex_home.or(saved.app_server_codex_home),
            codex_config: list(now.codex_config, saved.codex_config),
            ephemeral,
            no_ephemeral,
            agent,
            no_agent,
            fast: now.fast || saved.fast,
            default_cwd: now.default_cwd.or(saved.default_cwd),
            allowed_root: if now.allowed_root.is_empty() {
                saved.allowed_root
            } else {
                now.allowed_root
            },
            timeout_seconds: now.timeout_seconds.or(saved.timeout_seconds),
            max_concurrency: now.max_concurrency.or(saved.max_concurrency),
            grace_seconds: now.grace_seconds.or(saved.grace_seconds),
            files: now.files,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> StartArgs {
        let mut argv = vec!["codex-api-proxy", "start"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Start(args) => args,
            other => panic!("not start: {other:?}"),
        }
    }

    #[test]
    fn flags_round_trip_without_the_api_key() {
        let args = parse(&[
            "--config=/etc/c.toml",
            "--port",
            "0",
            "--api-key",
            "secret",
            "--proxy=-odd",
            "--codex-config",
            "a=1",
            "--codex-config",
            "b=2",
            "--no-ephemeral",
            "--fast",
            "--grace-seconds",
            "3",
        ]);
        let flags = args.to_flags();
        assert!(flags
            .iter()
            .all(|flag| !flag.to_string_lossy().contains("secret")));
        let text: Vec<String> = flags
            .iter()
            .map(|f| f.to_string_lossy().to_string())
            .collect();
        let again = parse(&text.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(again.config, args.config);
        assert_eq!(again.port, Some(0));
        assert_eq!(again.api_key, None);
        assert_eq!(again.proxy.as_deref(), Some("-odd"));
        assert_eq!(again.codex_config, vec!["a=1", "b=2"]);
        assert!(again.no_ephemeral && !again.ephemeral && again.fast);
        assert_eq!(again.grace_seconds, Some(3));
    }

    #[test]
    fn restart_flags_win_over_saved_settings() {
        let saved = parse(&[
            "--port",
            "8000",
            "--api-key",
            "old",
            "--agent",
            "--codex-config",
            "a=1",
        ]);
        let merged = parse(&["--port", "9000", "--no-agent"]).merged_over(saved.clone());
        assert_eq!(merged.port, Some(9000));
        assert_eq!(merged.api_key.as_deref(), Some("old"));
        assert!(merged.no_agent && !merged.agent);
        assert_eq!(merged.codex_config, vec!["a=1"]);
        let merged = parse(&["--api-key", "new"]).merged_over(saved);
        assert_eq!(merged.api_key.as_deref(), Some("new"));
        assert_eq!(merged.port, Some(8000));
        assert!(merged.agent);
    }

    #[test]
    fn saved_settings_survive_serialisation() {
        let args = parse(&["--port", "0", "--api-key", "k", "--allowed-root", "/a"]);
        let text = serde_json::to_string(&args).unwrap();
        let back: StartArgs = serde_json::from_str(&text).unwrap();
        assert_eq!(back.api_key.as_deref(), Some("k"));
        assert_eq!(back.allowed_root, vec![PathBuf::from("/a")]);
        // Older or hand-edited files may lack fields.
        let partial: StartArgs = serde_json::from_str(r#"{"port": 1}"#).unwrap();
        assert_eq!(partial.port, Some(1));
    }
}
