//! The command line: clap types for `start`, `stop`, `status`, `restart`, `check`, `reload` and `usage`
//! (whose small [`UsageArgs::run`] reads the ledger file and prints), and the
//! step that turns `start` flags into a validated [`Config`] (from `--config`, or the implicit
//! `codex-local` profile built from flags and `CODEX_PROXY_*` variables). Also the pieces `daemon` needs
//! to carry a start's settings over to the background server and to `restart`: making them
//! self-contained ([`Settings::resolve_for_daemon`]), writing them back as flags
//! ([`Settings::to_flags`]) and merging them ([`StartArgs::merged_over`]). No I/O beyond reading the
//! config file, the environment and, for `usage`, the ledger file (read-only).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use std::collections::BTreeSet;

use clap::builder::{BoolishValueParser, RangedU64ValueParser};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{
    self, config_env_lookup, limits, Config, EngineKind, ImplicitProfile, ServerOverrides,
};
use crate::usage::{self, By};

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
    /// Summarize the usage ledger: requests, errors, tokens and latency by day, profile, key or model
    ///
    /// Reads the SQLite ledger the server writes (`[server] usage_db`, default
    /// ~/.codex-api-proxy/usage.sqlite3) read-only; the server may be running or not. `--json` prints
    /// the same document as `GET /v1/usage`.
    Usage(UsageArgs),
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

/// The `start` and `restart` command line: the [`Settings`], how to run, and which values came from
/// `CODEX_PROXY_*` variables rather than flags ([`Cli::parse_args`] records them).
#[derive(Debug, Clone, Args, Default)]
pub struct StartArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// Serve in this terminal instead of starting a background daemon (Ctrl-C stops gracefully)
    #[arg(long)]
    pub foreground: bool,
    /// Internal (the background server): read the api key and the values of the config's `${VAR}`s
    /// from the first line of stdin (one JSON object), so the key shows in neither a process listing
    /// nor the environment Codex inherits
    #[arg(long, hide = true, requires = "foreground")]
    pub secrets_stdin: bool,
    #[command(flatten)]
    pub files: FileArgs,
    /// The ids of the settings whose value came from a `CODEX_PROXY_*` variable.
    #[arg(skip)]
    pub from_env: BTreeSet<String>,
}

/// The settings of one `start`: what the state file keeps (with the api key) for the next `restart`,
/// what `restart` merges, and what the background server's command line is written from
/// ([`Settings::to_flags`]). Declared once, as the flags of [`StartArgs`].
#[derive(Debug, Clone, Args, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    /// TOML file declaring [server] settings and named [profiles.NAME]; saving it reloads the server live
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Bind host; a non-loopback host without --api-key prints a warning [default: 127.0.0.1]
    #[arg(long, env = "CODEX_PROXY_HOST", hide_env_values = true)]
    pub host: Option<String>,
    /// Bind port; 0 picks a free port (see the `listening on` line) [default: 8765]
    #[arg(long, env = "CODEX_PROXY_PORT", hide_env_values = true)]
    pub port: Option<u16>,
    /// Require `Authorization: Bearer <key>` on API requests; kept in the state file for `restart`,
    /// printed only as <redacted>
    #[arg(
        long,
        env = "CODEX_PROXY_API_KEY",
        hide_env_values = true,
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// The values of the variables the config file references through `${VAR}`, as the last start saw
    /// them: a background server expands the file with them (its own environment lacks
    /// `CODEX_PROXY_API_KEY`), and `restart` falls back to them for variables its own environment
    /// lacks. Never a flag; kept in the state file (mode 0600) like the api key.
    #[arg(skip)]
    pub config_env: BTreeMap<String, String>,
    /// Codex executable (an npm install's launcher is bypassed for its native binary) [default: codex]
    #[arg(
        long,
        env = "CODEX_PROXY_CODEX_BIN",
        hide_env_values = true,
        value_name = "PATH"
    )]
    pub codex_bin: Option<String>,
    /// Log level: debug, info, warning or error [default: info]
    #[arg(long, env = "CODEX_PROXY_LOG_LEVEL", hide_env_values = true)]
    pub log_level: Option<String>,

    /// Outbound proxy URL given to Codex as http_proxy/https_proxy (no --config)
    #[arg(long, env = "CODEX_PROXY_PROXY", hide_env_values = true)]
    pub proxy: Option<String>,
    /// Model passed to Codex as --model (no --config)
    #[arg(long, env = "CODEX_PROXY_MODEL", hide_env_values = true)]
    pub model: Option<String>,
    /// Engine: exec or app-server (no --config) [default: exec]
    #[arg(long, env = "CODEX_PROXY_ENGINE", hide_env_values = true)]
    pub engine: Option<String>,
    /// Long-lived app-server workers (no --config) [default: 1]
    #[arg(long, env = "CODEX_PROXY_WORKERS", hide_env_values = true, value_parser = RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_WORKERS))]
    pub workers: Option<usize>,
    /// Waiting requests beyond this get 429 (no --config) [default: 64]
    #[arg(long, env = "CODEX_PROXY_MAX_QUEUE_SIZE", hide_env_values = true, value_parser = RangedU64ValueParser::<usize>::new().range(0..=limits::MAX_QUEUE_SIZE))]
    pub max_queue_size: Option<usize>,
    /// Longest wait for a Codex slot before 429 (no --config) [default: 30]
    #[arg(long, env = "CODEX_PROXY_QUEUE_TIMEOUT_SECONDS", hide_env_values = true, value_parser = RangedU64ValueParser::<u64>::new().range(1..=limits::MAX_SECONDS))]
    pub queue_timeout_seconds: Option<u64>,
    /// Private CODEX_HOME of app-server workers (no --config) [default: ~/.codex-api-proxy/codex-home/codex-local]
    #[arg(
        long,
        env = "CODEX_PROXY_APP_SERVER_CODEX_HOME",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub app_server_codex_home: Option<PathBuf>,
    /// Codex config override passed as `-c key=value`; repeatable (no --config) [env: `;;`-separated]
    #[arg(
        long,
        env = "CODEX_PROXY_CODEX_CONFIGS",
        hide_env_values = true,
        value_name = "KEY=VALUE"
    )]
    pub codex_config: Vec<String>,
    /// Run `codex exec` with --ephemeral (no --config) [default: on]
    #[arg(long, env = "CODEX_PROXY_EPHEMERAL", hide_env_values = true, value_parser = BoolishValueParser::new(), overrides_with = "no_ephemeral")]
    pub ephemeral: bool,
    /// Run `codex exec` without --ephemeral (no --config)
    #[arg(long)]
    pub no_ephemeral: bool,
    /// Enable Codex agent tools and workspace writes, for trusted clients only (no --config) [default: off]
    #[arg(long, env = "CODEX_PROXY_AGENT", hide_env_values = true, value_parser = BoolishValueParser::new(), overrides_with = "no_agent")]
    pub agent: bool,
    /// Disable agent tools: read-only sandbox (no --config)
    #[arg(long)]
    pub no_agent: bool,
    /// Fast defaults: model_reasoning_effort="low" unless --codex-config sets it (no --config)
    #[arg(long)]
    pub fast: bool,
    /// Default Codex working directory (no --config) [default: ~/.codex-api-proxy/workspace]
    #[arg(
        long,
        env = "CODEX_PROXY_DEFAULT_CWD",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub default_cwd: Option<PathBuf>,
    /// Allowed root for metadata.cwd; repeatable (no --config) [env: colon-separated] [default: the default cwd]
    #[arg(
        long,
        env = "CODEX_PROXY_ALLOWED_ROOTS",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub allowed_root: Vec<PathBuf>,
    /// Per-request timeout in seconds (no --config) [default: 300]
    #[arg(long, env = "CODEX_PROXY_TIMEOUT_SECONDS", hide_env_values = true, value_parser = RangedU64ValueParser::<u64>::new().range(1..=limits::MAX_SECONDS))]
    pub timeout_seconds: Option<u64>,
    /// Simultaneous Codex runs (no --config) [default: 1 for exec, 4 per worker for app-server]
    #[arg(long, env = "CODEX_PROXY_MAX_CONCURRENCY", hide_env_values = true, value_parser = RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_CONCURRENCY))]
    pub max_concurrency: Option<usize>,

    /// On stop (SIGTERM, Ctrl-C, `stop`): seconds in-flight requests get to finish before they are ended
    /// with an error [default: 10]
    #[arg(long, value_parser = RangedU64ValueParser::<u64>::new().range(0..=limits::MAX_SECONDS))]
    pub grace_seconds: Option<u64>,
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

/// `usage`: which ledger file, which window, which grouping, which format.
#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// How far back to look: a whole number and m, h, d or w (30m, 24h, 7d, 2w)
    #[arg(long, default_value = "7d", value_name = "WINDOW", value_parser = parse_window)]
    pub since: std::time::Duration,
    /// Group rows by day (UTC), profile, key (its name, never the key) or model
    #[arg(long, default_value = "day", value_name = "GROUP", value_parser = parse_by)]
    pub by: By,
    /// Print JSON (the body of GET /v1/usage) instead of a table
    #[arg(long)]
    pub json: bool,
    /// Take the ledger's path from this config file's `[server] usage_db`
    #[arg(long, value_name = "FILE", conflicts_with = "db")]
    pub config: Option<PathBuf>,
    /// The ledger file itself [default: ~/.codex-api-proxy/usage.sqlite3]
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
}

fn parse_window(value: &str) -> Result<std::time::Duration, String> {
    usage::parse_since(value).map_err(|error| error.to_string())
}

fn parse_by(value: &str) -> Result<By, String> {
    value
        .parse()
        .map_err(|error: usage::UsageError| error.to_string())
}

impl UsageArgs {
    /// The ledger file: `--db`, else the config's `usage_db`, else the default.
    pub fn ledger_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.db {
            return Ok(config::resolve_path(&path.to_string_lossy(), None));
        }
        let Some(config_path) = &self.config else {
            return Ok(config::state_dir().join("usage.sqlite3"));
        };
        let config = config::load_file(config_path, &ServerOverrides::default())?;
        config.server.usage_db.ok_or_else(|| {
            anyhow::anyhow!(
                "the usage ledger is off in {} (usage_db = \"\"); there is nothing to summarize",
                config_path.display()
            )
        })
    }

    /// Prints the summary to stdout; exit code 0.
    pub fn run(&self) -> anyhow::Result<i32> {
        let path = self.ledger_path()?;
        let since = std::time::SystemTime::now()
            .checked_sub(self.since)
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        let report = usage::Reader::open(&path)?.report(since, self.by)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", usage::render_table(self.by, &report.rows));
        }
        Ok(0)
    }
}

impl Cli {
    /// Parses the command line and the `CODEX_PROXY_*` variables behind the `start` flags, noting which
    /// values came from a variable. A variable's invalid value is reported with its name and exit 1 (it
    /// is not a usage error of the command line); other errors are clap's, exit 2.
    pub fn parse_args() -> Cli {
        let matches = Cli::command()
            .try_get_matches()
            .unwrap_or_else(|err| exit_for(err));
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
        if let (Command::Start(args) | Command::Restart(args), Some((_, sub))) =
            (&mut cli.command, matches.subcommand())
        {
            args.from_env = sub
                .ids()
                .filter(|id| sub.value_source(id.as_str()) == Some(ValueSource::EnvVariable))
                .map(|id| id.to_string())
                .collect();
            // An empty variable counts as unset.
            for id in args.from_env.clone() {
                let empty = sub
                    .get_raw(&id)
                    .is_some_and(|mut values| values.all(|value| value.is_empty()));
                if empty {
                    args.settings.clear(&id);
                    args.from_env.remove(&id);
                }
            }
        }
        cli
    }
}

/// Exits for a parse error: 1 naming the variable when a `CODEX_PROXY_*` value is invalid, else clap's.
fn exit_for(err: clap::Error) -> ! {
    if err.kind() == ErrorKind::ValueValidation {
        if let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) {
            let long = arg.split_whitespace().next().unwrap_or("");
            if let Some((name, value)) = env_behind(long) {
                let flag_given =
                    std::env::args().any(|a| a == long || a.starts_with(&format!("{long}=")));
                if !flag_given {
                    let why = std::error::Error::source(&err)
                        .map_or_else(|| "invalid value".to_string(), |cause| cause.to_string());
                    eprintln!("codex-api-proxy: {name}={value} (behind {long}): {why}");
                    std::process::exit(1);
                }
            }
        }
    }
    err.exit()
}

/// The variable behind the `start` flag `long` (`--timeout-seconds`) and its value, if it is set.
fn env_behind(long: &str) -> Option<(String, String)> {
    let command = Cli::command();
    let start = command.find_subcommand("start")?;
    let arg = start.get_arguments().find(|arg| {
        arg.get_long()
            .is_some_and(|name| format!("--{name}") == long)
    })?;
    let name = arg.get_env()?.to_string_lossy().to_string();
    let value = std::env::var(&name).ok()?;
    Some((name, value))
}

impl StartArgs {
    /// The settings of this command line alone: values that came from `CODEX_PROXY_*` variables are
    /// left out (`restart` merges them below the saved settings).
    fn given_on_command_line(&self) -> Settings {
        let mut settings = self.settings.clone();
        for id in &self.from_env {
            settings.clear(id);
        }
        settings
    }

    /// The values that came from `CODEX_PROXY_*` variables, lists split (`;;` for `--codex-config`,
    /// `:` for `--allowed-root`) and a false `CODEX_PROXY_EPHEMERAL` or `CODEX_PROXY_AGENT` turned
    /// into its `--no-…` switch. With `--config`, the profile variables do not apply and are dropped.
    fn variables(&self, with_config: bool) -> Settings {
        let mut env = Settings {
            config_env: BTreeMap::new(),
            config: None,
            fast: false,
            grace_seconds: None,
            ..self.settings.clone()
        };
        for id in Settings::SERVER_IDS {
            if !self.from_env.contains(*id) {
                env.clear(id);
            }
        }
        for id in Settings::PROFILE_IDS {
            if !self.from_env.contains(*id) || with_config {
                env.clear(id);
            }
        }
        env.codex_config = split_items(&env.codex_config, ";;");
        env.allowed_root = split_items(&env.allowed_root, ":");
        env.no_ephemeral = self.from_env.contains("ephemeral") && !env.ephemeral;
        env.no_agent = self.from_env.contains("agent") && !env.agent;
        env
    }

    /// `start`: the flags over the variables.
    pub fn into_settings(self) -> Settings {
        let with_config = self.settings.config.is_some();
        self.given_on_command_line()
            .merged_over(self.variables(with_config))
    }

    /// `restart`: the flags given now over `saved` (the last successful start), over the variables.
    pub fn merged_over(&self, saved: Settings) -> Settings {
        let merged = self.given_on_command_line().merged_over(saved);
        let with_config = merged.config.is_some();
        merged.merged_over(self.variables(with_config))
    }
}

/// Each item split at `separator`, empty pieces dropped.
fn split_items<T: From<String> + AsRef<std::ffi::OsStr>>(items: &[T], separator: &str) -> Vec<T> {
    items
        .iter()
        .flat_map(|item| {
            let text = item.as_ref().to_string_lossy().to_string();
            text.split(separator)
                .map(str::trim)
                .filter(|piece| !piece.is_empty())
                .map(|piece| T::from(piece.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Settings {
    /// The ids of the server settings a `CODEX_PROXY_*` variable can give.
    const SERVER_IDS: &'static [&'static str] =
        &["host", "port", "api_key", "codex_bin", "log_level"];
    /// The ids of the settings of the implicit profile a variable can give (not used with `--config`).
    const PROFILE_IDS: &'static [&'static str] = &[
        "proxy",
        "model",
        "engine",
        "workers",
        "max_queue_size",
        "queue_timeout_seconds",
        "app_server_codex_home",
        "codex_config",
        "ephemeral",
        "agent",
        "default_cwd",
        "allowed_root",
        "timeout_seconds",
        "max_concurrency",
    ];

    /// Unsets the setting `id` (a clap argument id, the field's name).
    fn clear(&mut self, id: &str) {
        match id {
            "host" => self.host = None,
            "port" => self.port = None,
            "api_key" => self.api_key = None,
            "codex_bin" => self.codex_bin = None,
            "log_level" => self.log_level = None,
            "proxy" => self.proxy = None,
            "model" => self.model = None,
            "engine" => self.engine = None,
            "workers" => self.workers = None,
            "max_queue_size" => self.max_queue_size = None,
            "queue_timeout_seconds" => self.queue_timeout_seconds = None,
            "app_server_codex_home" => self.app_server_codex_home = None,
            "codex_config" => self.codex_config.clear(),
            "ephemeral" => self.ephemeral = false,
            "agent" => self.agent = false,
            "default_cwd" => self.default_cwd = None,
            "allowed_root" => self.allowed_root.clear(),
            "timeout_seconds" => self.timeout_seconds = None,
            "max_concurrency" => self.max_concurrency = None,
            _ => {}
        }
    }

    /// Server settings from the flags (and the variables folded into them).
    pub fn server_overrides(&self) -> Result<ServerOverrides, String> {
        Ok(ServerOverrides {
            host: self.host.clone(),
            port: self.port,
            api_key: self.api_key.clone().filter(|key| !key.is_empty()),
            codex_bin: self.codex_bin.clone(),
            log_level: self.log_level.clone(),
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

    /// `--engine` (or `CODEX_PROXY_ENGINE`), else exec.
    fn implicit_engine(&self) -> Result<EngineKind, String> {
        match self.engine.as_deref() {
            None | Some("exec") => Ok(EngineKind::Exec),
            Some("app-server") => Ok(EngineKind::AppServer),
            Some(other) => Err(format!(
                "unknown engine `{other}`: use --engine exec or --engine app-server"
            )),
        }
    }

    /// `--codex-config` items, each `key=value`.
    fn implicit_codex_config(&self) -> Result<Vec<String>, String> {
        for item in &self.codex_config {
            if !item.contains('=') {
                return Err(format!(
                    "--codex-config {item:?} is not of the form key=value"
                ));
            }
        }
        Ok(self.codex_config.clone())
    }

    /// The implicit profile's settings from the flags (the variables folded in, clap checked the
    /// ranges of `config::limits`), else the defaults.
    fn implicit_profile(&self) -> Result<ImplicitProfile, String> {
        let resolve = |dir: &PathBuf| config::resolve_path(&dir.to_string_lossy(), None);
        Ok(ImplicitProfile {
            model: self.model.clone(),
            engine: self.implicit_engine()?,
            workers: self.workers.unwrap_or(1),
            max_queue_size: self.max_queue_size.unwrap_or(64),
            queue_timeout_seconds: self.queue_timeout_seconds.unwrap_or(30),
            codex_home: self.app_server_codex_home.as_ref().map(resolve),
            codex_config: self.implicit_codex_config()?,
            ephemeral: !self.no_ephemeral,
            agent: self.agent && !self.no_agent,
            fast: self.fast,
            proxy: self.proxy.clone(),
            default_cwd: self.default_cwd.as_ref().map(resolve),
            allowed_roots: self.allowed_root.iter().map(resolve).collect(),
            timeout_seconds: self.timeout_seconds.unwrap_or(300),
            max_concurrency: self.max_concurrency,
        })
    }

    /// The configuration this `start` describes, fully validated. `${VAR}`s in the file take their
    /// value from the environment, else from [`Settings::config_env`].
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

    /// Keeps in [`Settings::config_env`] the value of every variable `config` references, as
    /// [`Settings::load_config`] found it (what a background server and a later `restart` need).
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
    /// The values of the `${VAR}`s the config file references ([`Settings::config_env`]).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl StartArgs {
    /// `start --foreground` (how `start` runs the background server, with `--secrets-stdin`): the
    /// settings, with the api key and the config's variables read from the first line of stdin.
    pub fn with_secrets_from_stdin(&self) -> anyhow::Result<Settings> {
        use anyhow::Context;
        let mut settings = self.clone().into_settings();
        if self.secrets_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the settings the start command hands over on stdin")?;
            let secrets: Secrets = serde_json::from_str(line.trim_end_matches(['\r', '\n']))
                .context("--secrets-stdin: stdin held no JSON object on its first line")?;
            if let Some(key) = secrets.api_key.filter(|key| !key.is_empty()) {
                settings.api_key = Some(key);
            }
            settings.config_env.extend(secrets.env);
        }
        Ok(settings)
    }
}

/// An absolute form of a path given on the command line (`~` expanded, relative to the current directory).
fn absolute(path: &std::path::Path) -> PathBuf {
    config::resolve_path(&path.to_string_lossy(), None)
}

impl Settings {
    /// Makes these settings mean the same from any directory and environment, so the background server
    /// and a later `restart` see what this `start` saw: the `CODEX_PROXY_*` values are already folded in
    /// ([`StartArgs::into_settings`]); an empty api key is dropped and paths become absolute.
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
    pub fn merged_over(self, saved: Settings) -> Settings {
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
        Settings {
            config: now.config.or(saved.config),
            host: now.host.or(saved.host),
            port: now.port.or(saved.port),
            api_key: now.api_key.or(saved.api_key),
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
        let args = args.settings;
        let flags = args.to_flags();
        assert!(flags
            .iter()
            .all(|flag| !flag.to_string_lossy().contains("secret")));
        let text: Vec<String> = flags
            .iter()
            .map(|f| f.to_string_lossy().to_string())
            .collect();
        let again = parse(&text.iter().map(String::as_str).collect::<Vec<_>>()).settings;
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
        ])
        .into_settings();
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
        let args =
            parse(&["--port", "0", "--api-key", "k", "--allowed-root", "/a"]).into_settings();
        let text = serde_json::to_string(&args).unwrap();
        let back: Settings = serde_json::from_str(&text).unwrap();
        assert_eq!(back.api_key.as_deref(), Some("k"));
        assert_eq!(back.allowed_root, vec![PathBuf::from("/a")]);
        // Older or hand-edited files may lack fields.
        let partial: Settings = serde_json::from_str(r#"{"port": 1}"#).unwrap();
        assert_eq!(partial.port, Some(1));
    }

    /// `args` as if the settings named in `from_env` had come from their variables.
    fn with_env(mut args: StartArgs, from_env: &[&str]) -> StartArgs {
        args.from_env = from_env.iter().map(|id| id.to_string()).collect();
        args
    }

    #[test]
    fn variables_rank_below_flags_and_saved_settings() {
        // CODEX_PROXY_PORT=7000 CODEX_PROXY_CODEX_CONFIGS="a=1;;b=2" CODEX_PROXY_EPHEMERAL=0
        let args = with_env(
            parse(&[
                "--port",
                "7000",
                "--codex-config",
                "a=1;;b=2",
                "--model",
                "m",
            ]),
            &["port", "codex_config"],
        );
        let mut args = args;
        args.from_env.insert("ephemeral".to_string());
        let settings = args.clone().into_settings();
        assert_eq!(settings.port, Some(7000));
        assert_eq!(settings.codex_config, vec!["a=1", "b=2"]);
        assert!(settings.no_ephemeral);
        assert_eq!(settings.model.as_deref(), Some("m"));
        // `restart`: the saved port wins over the variable, a flag given now over both.
        let saved = parse(&["--port", "8000"]).into_settings();
        assert_eq!(args.merged_over(saved.clone()).port, Some(8000));
        let now = with_env(parse(&["--port", "9000"]), &[]);
        assert_eq!(now.merged_over(saved).port, Some(9000));
    }

    #[test]
    fn profile_variables_do_not_apply_with_a_config_file() {
        let args = with_env(
            parse(&[
                "--config",
                "/etc/c.toml",
                "--model",
                "from-env",
                "--port",
                "1",
            ]),
            &["model", "port"],
        );
        let settings = args.into_settings();
        assert_eq!(settings.model, None);
        assert_eq!(settings.port, Some(1));
        assert!(settings.profile_flags_given().is_empty());
    }
}
