//! The validated, immutable configuration: `[server]` settings and the named profiles.
//!
//! Entry points: [`load_file`] (read + [`parse`]) for `--config`, and [`Config::implicit`] for the single
//! `codex-local` profile built from command-line flags. Validation reports *every* problem at once, each with
//! the file line and profile name. This module does no I/O beyond reading the file and the environment; it
//! never starts processes (that is the engines' job).

pub mod raw;

#[cfg(test)]
mod proptests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use toml::Spanned;

use raw::{RawFile, SpannedTable};

/// Which Codex interface serves a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// One `codex exec --json` process per request.
    Exec,
    /// Long-lived `codex app-server` workers over JSON-RPC.
    AppServer,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Exec => "exec",
            EngineKind::AppServer => "app-server",
        }
    }
}

/// How much of the proxy's environment Codex processes inherit (`[server] codex_env`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodexEnv {
    /// Everything but the proxy's own variables (`CODEX_PROXY_*`, `RUST_LOG`) and every variable the
    /// config file references through `${VAR}`.
    #[default]
    Inherit,
    /// Only [`MINIMAL_ENV`] (and `LC_*`, `SSL_CERT_*`), the profile's proxy variables and `pass_env`.
    Minimal,
}

impl CodexEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            CodexEnv::Inherit => "inherit",
            CodexEnv::Minimal => "minimal",
        }
    }
}

/// The variables `codex_env = "minimal"` passes on (besides every `LC_*` and `SSL_CERT_*`).
pub const MINIMAL_ENV: &[&str] = &["PATH", "HOME", "CODEX_HOME", "LANG", "TZ", "TMPDIR", "USER"];

/// Upper bounds for numeric settings: anything above them is a typo, and some (concurrency, timeouts)
/// would overflow the runtime's types.
pub mod limits {
    /// 7 days.
    pub const MAX_SECONDS: u64 = 7 * 24 * 3600;
    pub const MAX_CONCURRENCY: u64 = 10_000;
    pub const MAX_WORKERS: u64 = 256;
    pub const MAX_QUEUE_SIZE: u64 = 1_000_000;
    /// 1 GiB.
    pub const MAX_REQUEST_BYTES: u64 = 1 << 30;
    /// 16 GiB.
    pub const MAX_INFLIGHT_BODY_BYTES: u64 = 16 << 30;
}

/// Server-wide settings (`[server]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Accepted bearer tokens; empty means no authentication.
    pub api_keys: Vec<String>,
    pub codex_bin: String,
    /// Where model names that match no profile go; `None` means 404.
    pub fallback_profile: Option<String>,
    pub max_request_bytes: usize,
    /// Bytes of request bodies being read and parsed at once, over all requests; `None` means
    /// [`ServerConfig::DEFAULT_INFLIGHT_FACTOR`] × `max_request_bytes`.
    pub max_inflight_body_bytes: Option<usize>,
    pub log_level: String,
    /// Extra `Host` header names accepted besides loopback names and the bind address.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`, or `*`) allowed to call the API; others get 403.
    pub cors_origins: Vec<String>,
    /// `/ready` and `/metrics` answer without a key even when keys are configured.
    pub public_metrics: bool,
    pub codex_env: CodexEnv,
    /// Variables passed to Codex by name in addition to what `codex_env` passes.
    pub pass_env: Vec<String>,
    /// Codex's own `RUST_LOG` filter; the proxy's `RUST_LOG` is never passed on.
    pub codex_log: String,
}

impl ServerConfig {
    /// The default of `max_inflight_body_bytes`, as a multiple of `max_request_bytes`.
    pub const DEFAULT_INFLIGHT_FACTOR: usize = 4;

    /// `max_inflight_body_bytes` with its default applied (never below `max_request_bytes`).
    pub fn inflight_body_limit(&self) -> usize {
        self.max_inflight_body_bytes
            .unwrap_or(
                self.max_request_bytes
                    .saturating_mul(Self::DEFAULT_INFLIGHT_FACTOR),
            )
            .max(self.max_request_bytes)
    }
}

/// One validated profile. Immutable; a reload builds new ones.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// Which model names select it.
    pub routing: Routing,
    /// Who may use it.
    pub access: Access,
    /// Everything that shapes its Codex processes and admission: equal settings can share one pool.
    pub runtime: RuntimeSettings,
}

/// The model names a profile answers to (besides its own name).
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub aliases: Vec<String>,
    /// Model names this regex matches select the profile.
    pub match_regex: Option<Regex>,
    pub description: String,
}

impl PartialEq for Routing {
    fn eq(&self, other: &Routing) -> bool {
        self.aliases == other.aliases
            && self.description == other.description
            && self.match_regex.as_ref().map(Regex::as_str)
                == other.match_regex.as_ref().map(Regex::as_str)
    }
}

/// Who may use a profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// If non-empty, only these bearer tokens may use the profile.
    pub api_keys: Vec<String>,
}

/// The settings that shape a profile's Codex processes and its admission. Two profiles with equal
/// settings (and the same Codex binary and environment) can share one pool, so a reload that leaves
/// them unchanged keeps the pool, its queue and its warm workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    pub engine: EngineKind,
    /// Passed to Codex as `--model`; `None` lets Codex choose.
    pub model: Option<String>,
    /// Pass the request's `model` to Codex instead of [`RuntimeSettings::model`].
    pub pass_model: bool,
    pub fast: bool,
    pub agent: bool,
    pub tools: bool,
    pub ephemeral: bool,
    pub proxy: Option<String>,
    pub default_cwd: PathBuf,
    pub allowed_roots: Vec<PathBuf>,
    pub codex_config: Vec<String>,
    pub timeout: Duration,
    pub max_concurrency: usize,
    pub max_queue_size: usize,
    pub queue_timeout: Duration,
    pub workers: usize,
    /// Private `CODEX_HOME` of app-server workers.
    pub codex_home: PathBuf,
}

impl Profile {
    /// The `-c` overrides Codex receives, with `fast` applied.
    pub fn effective_codex_config(&self) -> Vec<String> {
        let runtime = &self.runtime;
        let mut overrides = runtime.codex_config.clone();
        let sets_effort = overrides
            .iter()
            .any(|item| item.trim_start().starts_with("model_reasoning_effort"));
        if runtime.fast && !sets_effort {
            overrides.push("model_reasoning_effort=\"low\"".to_string());
        }
        overrides
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// In file order (regex matching follows it).
    pub profiles: Vec<Arc<Profile>>,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Every environment variable the file references through `${VAR}` (set or not), sorted. They
    /// hold secrets more often than not, so Codex processes never see them.
    pub env_refs: Vec<String>,
    /// The file's parsed table (from the same text that was validated): a reload whose file parses to
    /// the same table, in the same order, changes nothing.
    pub source_table: Option<toml::Table>,
}

impl Config {
    pub fn profile(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.iter().find(|profile| profile.name == name)
    }
}

/// One problem found while loading the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub profile: Option<String>,
    pub message: String,
}

/// Everything wrong with a config file, reported together.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    pub path: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "{} has {} problem{}:",
            self.path,
            count,
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  {}", self.describe(problem))?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// One problem as `file:line: profile `name`: message`.
    pub fn describe(&self, problem: &Problem) -> String {
        let mut out = self.path.clone();
        if let Some(line) = problem.line {
            out.push_str(&format!(":{line}"));
        }
        out.push_str(": ");
        if let Some(profile) = &problem.profile {
            out.push_str(&format!("profile `{profile}`: "));
        }
        out.push_str(&problem.message);
        out
    }
}

/// Server settings given on the command line; they win over `[server]`.
#[derive(Debug, Clone, Default)]
pub struct ServerOverrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub api_key: Option<String>,
    pub codex_bin: Option<String>,
    pub log_level: Option<String>,
}

impl ServerOverrides {
    fn apply(&self, server: &mut ServerConfig) {
        if let Some(host) = &self.host {
            server.host = host.clone();
        }
        if let Some(port) = self.port {
            server.port = port;
        }
        if let Some(key) = &self.api_key {
            server.api_keys = vec![key.clone()];
        }
        if let Some(bin) = &self.codex_bin {
            server.codex_bin = bin.clone();
        }
        if let Some(level) = &self.log_level {
            server.log_level = level.clone();
        }
    }
}

/// Profile settings of the implicit `codex-local` profile (no `--config`), from flags and environment.
#[derive(Debug, Clone)]
pub struct ImplicitProfile {
    pub model: Option<String>,
    pub engine: EngineKind,
    pub workers: usize,
    pub max_queue_size: usize,
    pub queue_timeout_seconds: u64,
    pub codex_home: Option<PathBuf>,
    pub codex_config: Vec<String>,
    pub ephemeral: bool,
    pub agent: bool,
    pub fast: bool,
    pub proxy: Option<String>,
    pub default_cwd: Option<PathBuf>,
    pub allowed_roots: Vec<PathBuf>,
    pub timeout_seconds: u64,
    pub max_concurrency: Option<usize>,
}

/// The name of the profile used when no config file is given.
pub const IMPLICIT_PROFILE: &str = "codex-local";

pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `~/.codex-api-proxy`, where state, logs, the default workspace and private Codex homes live.
pub fn state_dir() -> PathBuf {
    home_dir().join(".codex-api-proxy")
}

/// Expands a leading `~` and makes relative paths relative to `base`.
pub fn resolve_path(text: &str, base: Option<&Path>) -> PathBuf {
    let path = if text == "~" {
        home_dir()
    } else if let Some(rest) = text.strip_prefix("~/") {
        home_dir().join(rest)
    } else {
        PathBuf::from(text)
    };
    if path.is_relative() {
        match base {
            Some(base) => base.join(path),
            None => std::env::current_dir()
                .map(|dir| dir.join(&path))
                .unwrap_or(path),
        }
    } else {
        path
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        default_server()
    }
}

fn default_server() -> ServerConfig {
    ServerConfig {
        host: "127.0.0.1".into(),
        port: 8765,
        api_keys: Vec::new(),
        codex_bin: "codex".into(),
        fallback_profile: None,
        max_request_bytes: 10 * 1024 * 1024,
        max_inflight_body_bytes: None,
        log_level: "info".into(),
        allowed_hosts: Vec::new(),
        cors_origins: Vec::new(),
        public_metrics: false,
        codex_env: CodexEnv::Inherit,
        pass_env: Vec::new(),
        codex_log: "warn".into(),
    }
}

impl Config {
    /// The configuration used without `--config`: one profile, `codex-local`, that every model routes to.
    pub fn implicit(overrides: &ServerOverrides, settings: &ImplicitProfile) -> Config {
        let mut server = default_server();
        overrides.apply(&mut server);
        server.fallback_profile = Some(IMPLICIT_PROFILE.to_string());
        let default_cwd = settings
            .default_cwd
            .clone()
            .unwrap_or_else(|| state_dir().join("workspace"));
        let allowed_roots = if settings.allowed_roots.is_empty() {
            vec![default_cwd.clone()]
        } else {
            settings.allowed_roots.clone()
        };
        let workers = settings.workers.max(1);
        let runtime = RuntimeSettings {
            engine: settings.engine,
            model: settings.model.clone(),
            pass_model: false,
            fast: settings.fast,
            agent: settings.agent,
            tools: true,
            ephemeral: settings.ephemeral,
            proxy: settings.proxy.clone(),
            default_cwd,
            allowed_roots,
            codex_config: settings.codex_config.clone(),
            timeout: Duration::from_secs(settings.timeout_seconds.max(1)),
            max_concurrency: settings
                .max_concurrency
                .unwrap_or(match settings.engine {
                    EngineKind::Exec => 1,
                    EngineKind::AppServer => 4 * workers,
                })
                .max(1),
            max_queue_size: settings.max_queue_size,
            queue_timeout: Duration::from_secs(settings.queue_timeout_seconds),
            workers,
            codex_home: settings
                .codex_home
                .clone()
                .unwrap_or_else(|| state_dir().join("codex-home").join(IMPLICIT_PROFILE)),
        };
        let profile = Profile {
            name: IMPLICIT_PROFILE.to_string(),
            routing: Routing {
                description: "Implicit profile built from command-line flags".to_string(),
                ..Routing::default()
            },
            access: Access::default(),
            runtime,
        };
        Config {
            server,
            profiles: vec![Arc::new(profile)],
            source: None,
            env_refs: Vec::new(),
            source_table: None,
        }
    }
}

/// Reads and validates a config file, expanding `${VAR}` from the environment.
pub fn load_file(path: &Path, overrides: &ServerOverrides) -> Result<Config, ConfigErrors> {
    let lookup = |name: &str| std::env::var(name).ok();
    load_file_with(path, overrides, &lookup)
}

/// Reads the file once and validates it, expanding `${VAR}` through `lookup`.
pub fn load_file_with(
    path: &Path,
    overrides: &ServerOverrides,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigErrors {
        path: path.display().to_string(),
        problems: vec![Problem {
            line: None,
            profile: None,
            message: format!("cannot read the file: {err}"),
        }],
    })?;
    parse(&text, path, overrides, lookup)
}

/// The value of `${name}` in a config file: the environment's, else the one in `saved` (what a
/// background server was handed at start).
pub fn config_env_lookup(
    saved: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> Option<String> {
    std::env::var(name)
        .ok()
        .or_else(|| saved.get(name).cloned())
}

/// Whether `host` is a loopback name or address.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The warning for a non-loopback bind without an api key, or `None`.
pub fn exposure_warning(host: &str, api_keys: &[String]) -> Option<String> {
    (!is_loopback(host) && api_keys.is_empty()).then(|| {
        format!(
            "WARNING: binding to non-loopback host {host} without an API key. Anyone who can reach this port \
             can spend your Codex quota and read files in the allowed roots. Set --api-key or [server] api_keys."
        )
    })
}

/// The warning for `cors_origins = ["*"]`, or `None`.
pub fn cors_warning(origins: &[String]) -> Option<String> {
    origins.iter().any(|origin| origin == "*").then(|| {
        "WARNING: [server] cors_origins contains \"*\": any web page a browser opens may call this API \
         (with the browser's network position; with a key if the page has it). List the origins that \
         need it instead."
            .to_string()
    })
}

impl Config {
    /// The exposure and CORS warnings this configuration deserves (printed by `start` and `check`).
    pub fn warnings(&self) -> Vec<String> {
        let server = &self.server;
        [
            exposure_warning(&server.host, &server.api_keys),
            cors_warning(&server.cors_origins),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Validates the text of a config file. Pure apart from `lookup` (the environment for `${VAR}`).
pub fn parse(
    text: &str,
    path: &Path,
    overrides: &ServerOverrides,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut checker = Checker {
        text,
        problems: Vec::new(),
        lookup,
        env_refs: Vec::new(),
    };
    let file: RawFile = match toml::from_str(text) {
        Ok(file) => file,
        Err(err) => {
            let line = err.span().map(|span| checker.line_of(span.start));
            return Err(ConfigErrors {
                path: path.display().to_string(),
                problems: vec![Problem {
                    line,
                    profile: None,
                    message: err.message().trim().to_string(),
                }],
            });
        }
    };
    let base = path.parent().map(Path::to_path_buf);
    let mut config = checker.build(&file, base.as_deref(), overrides, path);
    if checker.problems.is_empty() {
        // The text is valid TOML (it parsed above), so this only fails on a bug.
        config.source_table = toml::from_str::<toml::Table>(text).ok();
        Ok(config)
    } else {
        checker
            .problems
            .sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
        Err(ConfigErrors {
            path: path.display().to_string(),
            problems: checker.problems,
        })
    }
}

/// Accumulates problems while turning the raw file into a [`Config`].
struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Names of the `${VAR}`s seen so far.
    env_refs: Vec<String>,
}

/// The keys `[server]` accepts.
pub const SERVER_KEYS: &[&str] = &[
    "host",
    "port",
    "api_keys",
    "codex_bin",
    "fallback_profile",
    "max_request_bytes",
    "max_inflight_body_bytes",
    "log_level",
    "allowed_hosts",
    "cors_origins",
    "public_metrics",
    "codex_env",
    "pass_env",
    "codex_log",
];

const PROFILE_ONLY_KEYS: &[&str] = &["aliases", "match", "description"];

/// The keys a profile (and, but for `aliases`, `match` and `description`, `[defaults]`) accepts.
pub const PROFILE_KEYS: &[&str] = &[
    "engine",
    "model",
    "pass_model",
    "aliases",
    "match",
    "description",
    "fast",
    "agent",
    "tools",
    "ephemeral",
    "proxy",
    "default_cwd",
    "allowed_roots",
    "codex_config",
    "timeout_seconds",
    "max_concurrency",
    "max_queue_size",
    "queue_timeout_seconds",
    "workers",
    "api_keys",
    "codex_home",
];

/// A profile's entries after `[defaults]` were merged in: key → (value, line).
struct Entries {
    profile: Option<String>,
    values: Vec<(String, toml::Value, usize)>,
}

impl Entries {
    fn get(&self, key: &str) -> Option<&(String, toml::Value, usize)> {
        // Later entries (the profile's own) win over earlier ones (the defaults).
        self.values.iter().rev().find(|(name, _, _)| name == key)
    }
}

impl<'a> Checker<'a> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|byte| *byte == b'\n')
            .count()
            + 1
    }

    fn problem(&mut self, line: Option<usize>, profile: Option<&str>, message: String) {
        self.problems.push(Problem {
            line,
            profile: profile.map(str::to_string),
            message,
        });
    }

    /// Checks key names and expands `${VAR}`; returns the entries in file order.
    fn entries(
        &mut self,
        table: &SpannedTable,
        allowed: &[&str],
        section: &str,
        profile: Option<&str>,
    ) -> Vec<(String, toml::Value, usize)> {
        let mut out = Vec::new();
        for (key, value) in raw::ordered(table) {
            let line = self.line_of(key.span().start);
            if !allowed.contains(&key.get_ref().as_str()) {
                let mut known: Vec<&str> = allowed.to_vec();
                known.sort_unstable();
                self.problem(
                    Some(line),
                    profile,
                    format!(
                        "unknown key `{}` in {section} (known keys: {})",
                        key.get_ref(),
                        known.join(", ")
                    ),
                );
                continue;
            }
            let mut value = value.get_ref().clone();
            self.env_refs.extend(raw::referenced_vars(&value));
            let missing = raw::expand_env(&mut value, self.lookup);
            for name in missing {
                self.problem(
                    Some(line),
                    profile,
                    format!(
                        "`{}` uses ${{{name}}}, but the environment variable {name} is not set",
                        key.get_ref()
                    ),
                );
            }
            out.push((key.get_ref().clone(), value, line));
        }
        out
    }

    fn typed<T: serde::de::DeserializeOwned>(
        &mut self,
        entries: &Entries,
        key: &str,
        expected: &str,
    ) -> Option<T> {
        let (_, value, line) = entries.get(key)?;
        match value.clone().try_into::<T>() {
            Ok(typed) => Some(typed),
            Err(_) => {
                let line = *line;
                let profile = entries.profile.clone();
                self.problem(
                    Some(line),
                    profile.as_deref(),
                    format!("`{key}` must be {expected}, found {}", value.type_str()),
                );
                None
            }
        }
    }

    /// A whole number from 1 to `max`.
    fn positive(&mut self, entries: &Entries, key: &str, default: u64, max: u64) -> u64 {
        match self.typed::<i64>(entries, key, "a whole number") {
            Some(number) if number > 0 && number as u64 <= max => number as u64,
            Some(number) if number > 0 => {
                let line = entries.get(key).map(|(_, _, line)| *line);
                let profile = entries.profile.clone();
                self.problem(
                    line,
                    profile.as_deref(),
                    format!("`{key}` must be at most {max}, found {number}"),
                );
                default
            }
            Some(number) => {
                let line = entries.get(key).map(|(_, _, line)| *line);
                let profile = entries.profile.clone();
                self.problem(
                    line,
                    profile.as_deref(),
                    format!("`{key}` must be greater than zero, found {number}"),
                );
                default
            }
            None => default,
        }
    }

    fn build(
        &mut self,
        file: &RawFile,
        base: Option<&Path>,
        overrides: &ServerOverrides,
        path: &Path,
    ) -> Config {
        let mut server = default_server();
        if let Some(table) = &file.server {
            let values = self.entries(table.get_ref(), SERVER_KEYS, "[server]", None);
            let entries = Entries {
                profile: None,
                values,
            };
            if let Some(host) = self.typed::<String>(&entries, "host", "a string") {
                server.host = host;
            }
            if let Some(port) = self.typed::<i64>(&entries, "port", "a port number") {
                match u16::try_from(port) {
                    Ok(port) => server.port = port,
                    Err(_) => {
                        let line = entries.get("port").map(|entry| entry.2);
                        self.problem(line, None, format!("`port` {port} is not a valid port"));
                    }
                }
            }
            if let Some(keys) =
                self.typed::<Vec<String>>(&entries, "api_keys", "an array of strings")
            {
                server.api_keys = keys.into_iter().filter(|key| !key.is_empty()).collect();
            }
            if let Some(bin) = self.typed::<String>(&entries, "codex_bin", "a string") {
                server.codex_bin = bin;
            }
            server.fallback_profile =
                self.typed::<String>(&entries, "fallback_profile", "a string");
            if entries.get("max_request_bytes").is_some() {
                server.max_request_bytes = self.positive(
                    &entries,
                    "max_request_bytes",
                    server.max_request_bytes as u64,
                    limits::MAX_REQUEST_BYTES,
                ) as usize;
            }
            if entries.get("max_inflight_body_bytes").is_some() {
                server.max_inflight_body_bytes = Some(self.positive(
                    &entries,
                    "max_inflight_body_bytes",
                    server.inflight_body_limit() as u64,
                    limits::MAX_INFLIGHT_BODY_BYTES,
                ) as usize);
            }
            self.server_access(&entries, &mut server);
            self.server_codex_env(&entries, &mut server);
            if let Some(level) = self.typed::<String>(&entries, "log_level", "a string") {
                if !["trace", "debug", "info", "warning", "warn", "error"].contains(&level.as_str())
                {
                    let line = entries.get("log_level").map(|entry| entry.2);
                    self.problem(
                        line,
                        None,
                        format!(
                            "`log_level` must be debug, info, warning or error, found `{level}`"
                        ),
                    );
                }
                server.log_level = level;
            }
        }
        overrides.apply(&mut server);

        let allowed_defaults: Vec<&str> = PROFILE_KEYS
            .iter()
            .copied()
            .filter(|key| !PROFILE_ONLY_KEYS.contains(key))
            .collect();
        let defaults = match &file.defaults {
            Some(table) => self.entries(table.get_ref(), &allowed_defaults, "[defaults]", None),
            None => Vec::new(),
        };

        let mut profiles: Vec<Arc<Profile>> = Vec::new();
        // name or alias → (profile that claims it, line)
        let mut claimed: Vec<(String, String, usize)> = Vec::new();
        if let Some(raw_profiles) = &file.profiles {
            for (name, table) in raw::ordered_profiles(raw_profiles) {
                let line = self.line_of(name.span().start);
                let profile_name = name.get_ref().clone();
                if let Some(profile) =
                    self.build_profile(&profile_name, table, &defaults, &server, base)
                {
                    for (label, label_line) in std::iter::once((profile.name.clone(), line)).chain(
                        profile
                            .routing
                            .aliases
                            .iter()
                            .map(|alias| (alias.clone(), line)),
                    ) {
                        if let Some((_, owner, owner_line)) = claimed
                            .iter()
                            .find(|(claimed_name, _, _)| *claimed_name == label)
                        {
                            let message = if owner == &profile.name {
                                format!("the model name `{label}` is listed twice")
                            } else {
                                format!(
                                    "the model name `{label}` is already used by profile `{owner}` (line {owner_line})"
                                )
                            };
                            self.problem(Some(label_line), Some(&profile.name), message);
                        } else {
                            claimed.push((label, profile.name.clone(), label_line));
                        }
                    }
                    profiles.push(Arc::new(profile));
                }
            }
        }
        if profiles.is_empty() && file.profiles.as_ref().is_none_or(|p| p.is_empty()) {
            self.problem(
                None,
                None,
                "no profiles: add at least one `[profiles.NAME]` table".to_string(),
            );
        }
        if let Some(fallback) = &server.fallback_profile {
            let exists = file
                .profiles
                .as_ref()
                .is_some_and(|profiles| profiles.keys().any(|name| name.get_ref() == fallback));
            if !exists {
                let line = file.server.as_ref().and_then(|table| {
                    table
                        .get_ref()
                        .iter()
                        .find(|(key, _)| key.get_ref() == "fallback_profile")
                        .map(|(key, _)| key.span().start)
                });
                let line = line.map(|offset| self.line_of(offset));
                self.problem(
                    line,
                    None,
                    format!("`fallback_profile` names `{fallback}`, which is not a profile"),
                );
            }
        }
        let mut env_refs = std::mem::take(&mut self.env_refs);
        env_refs.sort();
        env_refs.dedup();
        Config {
            server,
            profiles,
            source: Some(path.to_path_buf()),
            env_refs,
            source_table: None,
        }
    }

    /// `allowed_hosts`, `cors_origins` and `public_metrics`.
    fn server_access(&mut self, entries: &Entries, server: &mut ServerConfig) {
        if let Some(hosts) =
            self.typed::<Vec<String>>(entries, "allowed_hosts", "an array of host names")
        {
            server.allowed_hosts = hosts
                .into_iter()
                .map(|host| host.trim().to_ascii_lowercase())
                .filter(|host| !host.is_empty())
                .collect();
        }
        if let Some(origins) = self.typed::<Vec<String>>(
            entries,
            "cors_origins",
            "an array of origins such as \"http://localhost:3000\"",
        ) {
            let line = entries.get("cors_origins").map(|entry| entry.2);
            for origin in &origins {
                let valid = origin == "*"
                    || ((origin.starts_with("http://") || origin.starts_with("https://"))
                        && !origin.trim_end_matches('/').ends_with(':')
                        && origin.split("://").nth(1).is_some_and(|rest| {
                            !rest.is_empty() && !rest.trim_end_matches('/').contains('/')
                        }));
                if !valid {
                    self.problem(
                        line,
                        None,
                        format!(
                            "`cors_origins` entry {origin:?} is not an origin: use \"*\" or scheme://host[:port], such as \"http://localhost:3000\""
                        ),
                    );
                }
            }
            server.cors_origins = origins
                .into_iter()
                .map(|origin| origin.trim_end_matches('/').to_ascii_lowercase())
                .collect();
        }
        if let Some(public) = self.typed::<bool>(entries, "public_metrics", "true or false") {
            server.public_metrics = public;
        }
    }

    /// `codex_env`, `pass_env` and `codex_log`.
    fn server_codex_env(&mut self, entries: &Entries, server: &mut ServerConfig) {
        match self
            .typed::<String>(entries, "codex_env", "a string")
            .as_deref()
        {
            None => {}
            Some("inherit") => server.codex_env = CodexEnv::Inherit,
            Some("minimal") => server.codex_env = CodexEnv::Minimal,
            Some(other) => {
                let line = entries.get("codex_env").map(|entry| entry.2);
                self.problem(
                    line,
                    None,
                    format!("`codex_env` must be \"inherit\" or \"minimal\", found `{other}`"),
                );
            }
        }
        if let Some(names) =
            self.typed::<Vec<String>>(entries, "pass_env", "an array of variable names")
        {
            let line = entries.get("pass_env").map(|entry| entry.2);
            for name in &names {
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    self.problem(
                        line,
                        None,
                        format!("`pass_env` entry {name:?} is not a variable name"),
                    );
                }
            }
            server.pass_env = names;
        }
        if let Some(level) = self.typed::<String>(entries, "codex_log", "a string") {
            let valid = !level.is_empty()
                && level
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | ',' | ':' | '-'));
            if !valid {
                let line = entries.get("codex_log").map(|entry| entry.2);
                self.problem(
                    line,
                    None,
                    format!(
                        "`codex_log` must be a log filter such as \"warn\" or \"error\", found {level:?}"
                    ),
                );
            }
            server.codex_log = level;
        }
    }

    fn build_profile(
        &mut self,
        name: &str,
        table: &Spanned<SpannedTable>,
        defaults: &[(String, toml::Value, usize)],
        server: &ServerConfig,
        base: Option<&Path>,
    ) -> Option<Profile> {
        let before = self.problems.len();
        let table_line = self.line_of(table.span().start);
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.problem(
                Some(table_line),
                Some(name),
                "a profile name must be non-empty and contain no spaces".to_string(),
            );
        }
        let own = self.entries(table.get_ref(), PROFILE_KEYS, "a profile", Some(name));
        let mut values = defaults.to_vec();
        values.extend(own);
        let entries = Entries {
            profile: Some(name.to_string()),
            values,
        };

        let engine = match self
            .typed::<String>(&entries, "engine", "a string")
            .as_deref()
        {
            None | Some("exec") => EngineKind::Exec,
            Some("app-server") => EngineKind::AppServer,
            Some(other) => {
                let line = entries.get("engine").map(|entry| entry.2);
                self.problem(
                    line,
                    Some(name),
                    format!("unknown engine `{other}` (use \"exec\" or \"app-server\")"),
                );
                EngineKind::Exec
            }
        };
        let model = self
            .typed::<String>(&entries, "model", "a string")
            .filter(|model| !model.is_empty());
        let pass_model = self
            .typed::<bool>(&entries, "pass_model", "true or false")
            .unwrap_or(false);
        let aliases = self
            .typed::<Vec<String>>(&entries, "aliases", "an array of strings")
            .unwrap_or_default();
        let match_regex = match self.typed::<String>(
            &entries,
            "match",
            "a regular expression string",
        ) {
            Some(pattern) => {
                match Regex::new(&pattern) {
                    Ok(regex) => Some(regex),
                    Err(err) => {
                        let line = entries.get("match").map(|entry| entry.2);
                        let first_line = err.to_string();
                        let summary = first_line.lines().last().unwrap_or("invalid").trim();
                        self.problem(
                        line,
                        Some(name),
                        format!("`match` is not a valid regular expression ({pattern:?}): {summary}"),
                    );
                        None
                    }
                }
            }
            None => None,
        };
        let description = self
            .typed::<String>(&entries, "description", "a string")
            .unwrap_or_default();
        let fast = self
            .typed::<bool>(&entries, "fast", "true or false")
            .unwrap_or(false);
        let agent = self
            .typed::<bool>(&entries, "agent", "true or false")
            .unwrap_or(false);
        let tools = self
            .typed::<bool>(&entries, "tools", "true or false")
            .unwrap_or(true);
        if agent && !tools {
            let line = entries.get("tools").map(|entry| entry.2);
            self.problem(
                line,
                Some(name),
                "`agent = true` needs Codex's tools; it cannot be combined with `tools = false`"
                    .to_string(),
            );
        }
        let ephemeral = self
            .typed::<bool>(&entries, "ephemeral", "true or false")
            .unwrap_or(true);
        let proxy = self
            .typed::<String>(&entries, "proxy", "a URL string")
            .filter(|proxy| !proxy.is_empty());
        let default_cwd = self
            .typed::<String>(&entries, "default_cwd", "a path string")
            .map(|text| resolve_path(&text, base))
            .unwrap_or_else(|| state_dir().join("workspace"));
        let allowed_roots = self
            .typed::<Vec<String>>(&entries, "allowed_roots", "an array of path strings")
            .map(|roots| {
                roots
                    .iter()
                    .map(|root| resolve_path(root, base))
                    .collect::<Vec<_>>()
            })
            .filter(|roots| !roots.is_empty())
            .unwrap_or_else(|| vec![default_cwd.clone()]);
        let codex_config = self
            .typed::<Vec<String>>(&entries, "codex_config", "an array of `key=value` strings")
            .unwrap_or_default();
        for item in &codex_config {
            if !item.contains('=') {
                let line = entries.get("codex_config").map(|entry| entry.2);
                self.problem(
                    line,
                    Some(name),
                    format!("`codex_config` entry {item:?} is not of the form key=value"),
                );
            }
        }
        let timeout = Duration::from_secs(self.positive(
            &entries,
            "timeout_seconds",
            300,
            limits::MAX_SECONDS,
        ));
        let workers = self.positive(&entries, "workers", 1, limits::MAX_WORKERS) as usize;
        let default_concurrency = match engine {
            EngineKind::Exec => 1,
            EngineKind::AppServer => 4 * workers as u64,
        };
        let max_concurrency = self.positive(
            &entries,
            "max_concurrency",
            default_concurrency.min(limits::MAX_CONCURRENCY),
            limits::MAX_CONCURRENCY,
        ) as usize;
        let max_queue_size = match self.typed::<i64>(&entries, "max_queue_size", "a whole number") {
            Some(size) if size >= 0 && size as u64 <= limits::MAX_QUEUE_SIZE => size as usize,
            Some(size) if size >= 0 => {
                let line = entries.get("max_queue_size").map(|entry| entry.2);
                self.problem(
                    line,
                    Some(name),
                    format!(
                        "`max_queue_size` must be at most {}, found {size}",
                        limits::MAX_QUEUE_SIZE
                    ),
                );
                64
            }
            Some(size) => {
                let line = entries.get("max_queue_size").map(|entry| entry.2);
                self.problem(
                    line,
                    Some(name),
                    format!("`max_queue_size` must be zero or more, found {size}"),
                );
                64
            }
            None => 64,
        };
        let queue_timeout = Duration::from_secs(self.positive(
            &entries,
            "queue_timeout_seconds",
            30,
            limits::MAX_SECONDS,
        ));
        let api_keys: Vec<String> = self
            .typed::<Vec<String>>(&entries, "api_keys", "an array of strings")
            .unwrap_or_default()
            .into_iter()
            .filter(|key| !key.is_empty())
            .collect();
        let codex_home = self
            .typed::<String>(&entries, "codex_home", "a path string")
            .map(|text| resolve_path(&text, base))
            .unwrap_or_else(|| state_dir().join("codex-home").join(name));
        let _ = server;

        if self.problems.len() > before {
            return None;
        }
        Some(Profile {
            name: name.to_string(),
            routing: Routing {
                aliases,
                match_regex,
                description,
            },
            access: Access { api_keys },
            runtime: RuntimeSettings {
                engine,
                model,
                pass_model,
                fast,
                agent,
                tools,
                ephemeral,
                proxy,
                default_cwd,
                allowed_roots,
                codex_config,
                timeout,
                max_concurrency,
                max_queue_size,
                queue_timeout,
                workers,
                codex_home,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Config, ConfigErrors> {
        let lookup = |name: &str| (name == "SET").then(|| "value".to_string());
        parse(
            text,
            Path::new("/etc/proxy/config.toml"),
            &ServerOverrides::default(),
            &lookup,
        )
    }

    #[test]
    fn minimal_profile_gets_defaults() {
        let config = parse_text("[profiles.default]\n").unwrap();
        let profile = &config.profiles[0];
        assert_eq!(profile.runtime.engine, EngineKind::Exec);
        assert_eq!(profile.runtime.max_concurrency, 1);
        assert_eq!(profile.runtime.max_queue_size, 64);
        assert_eq!(profile.runtime.timeout, Duration::from_secs(300));
        assert!(profile.runtime.tools && profile.runtime.ephemeral && !profile.runtime.agent);
        assert_eq!(config.server.port, 8765);
    }

    #[test]
    fn defaults_are_inherited_and_overridden() {
        let config = parse_text(
            "[defaults]\ntimeout_seconds = 10\nfast = true\n[profiles.a]\n[profiles.b]\ntimeout_seconds = 20\n",
        )
        .unwrap();
        assert_eq!(config.profiles[0].runtime.timeout, Duration::from_secs(10));
        assert_eq!(config.profiles[1].runtime.timeout, Duration::from_secs(20));
        assert!(config.profiles[1].runtime.fast);
    }

    #[test]
    fn reports_every_problem_with_line_and_profile() {
        let err = parse_text(
            "[server]\nfallback_profile = \"missing\"\n\n[profiles.a]\nbogus = 1\nmatch = \"(\"\nengine = \"warp\"\n\n[profiles.b]\naliases = [\"a\"]\nmax_concurrency = 0\nproxy = \"${UNSET}\"\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 6, "{text}");
        assert!(
            text.contains(":5: profile `a`: unknown key `bogus`"),
            "{text}"
        );
        assert!(
            text.contains(":6: profile `a`: `match` is not a valid regular expression"),
            "{text}"
        );
        assert!(
            text.contains(":7: profile `a`: unknown engine `warp`"),
            "{text}"
        );
        assert!(
            text.contains(":11: profile `b`: `max_concurrency` must be greater than zero"),
            "{text}"
        );
        assert!(
            text.contains("environment variable UNSET is not set"),
            "{text}"
        );
        assert!(
            text.contains(":2: `fallback_profile` names `missing`"),
            "{text}"
        );
        // `a` failed validation, so the alias clash is not reported; a clean duplicate is:
        let err = parse_text("[profiles.a]\n[profiles.b]\naliases = [\"a\"]\n").unwrap_err();
        assert!(
            err.to_string()
                .contains(":2: profile `b`: the model name `a` is already used by profile `a`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse_text("[profiles.a]\nmodel = \n").unwrap_err();
        assert_eq!(err.problems[0].line, Some(2), "{err}");
    }

    #[test]
    fn env_expansion_and_paths() {
        let config =
            parse_text("[server]\napi_keys = [\"${SET}\"]\n[profiles.a]\ndefault_cwd = \"work\"\n")
                .unwrap();
        assert_eq!(config.server.api_keys, vec!["value"]);
        assert_eq!(
            config.profiles[0].runtime.default_cwd,
            PathBuf::from("/etc/proxy/work")
        );
        assert_eq!(
            config.profiles[0].runtime.allowed_roots,
            vec![PathBuf::from("/etc/proxy/work")]
        );
    }

    #[test]
    fn numbers_out_of_range_are_reported_with_their_line() {
        let err = parse_text(
            "[profiles.a]\nmax_concurrency = 9223372036854775807\ntimeout_seconds = 9223372036854775807\nworkers = 100000\nmax_queue_size = 100000000000\nqueue_timeout_seconds = 99999999999\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 5, "{text}");
        assert!(
            text.contains(":2: profile `a`: `max_concurrency` must be at most 10000"),
            "{text}"
        );
        assert!(
            text.contains(":3: profile `a`: `timeout_seconds` must be at most 604800"),
            "{text}"
        );
        assert!(
            text.contains(":4: profile `a`: `workers` must be at most 256"),
            "{text}"
        );
        assert!(
            text.contains(":5: profile `a`: `max_queue_size` must be at most"),
            "{text}"
        );
        assert!(
            text.contains(":6: profile `a`: `queue_timeout_seconds` must be at most"),
            "{text}"
        );
        let err = parse_text("[server]\nmax_request_bytes = 9223372036854775807\n[profiles.a]\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(":2: `max_request_bytes` must be at most"),
            "{err}"
        );
    }

    #[test]
    fn security_settings_parse_and_default() {
        let config = parse_text("[profiles.a]\n").unwrap();
        let server = &config.server;
        assert!(server.allowed_hosts.is_empty() && server.cors_origins.is_empty());
        assert!(!server.public_metrics);
        assert_eq!(server.codex_env, CodexEnv::Inherit);
        assert_eq!(server.codex_log, "warn");
        assert_eq!(server.inflight_body_limit(), 4 * server.max_request_bytes);
        let config = parse_text(
            "[server]\nallowed_hosts = [\"Proxy.Example\"]\ncors_origins = [\"http://localhost:3000/\", \"*\"]\npublic_metrics = true\ncodex_env = \"minimal\"\npass_env = [\"MY_VAR\"]\ncodex_log = \"error\"\nmax_request_bytes = 100\nmax_inflight_body_bytes = 50\n[profiles.a]\n",
        )
        .unwrap();
        let server = &config.server;
        assert_eq!(server.allowed_hosts, vec!["proxy.example"]);
        assert_eq!(server.cors_origins, vec!["http://localhost:3000", "*"]);
        assert!(server.public_metrics);
        assert_eq!(server.codex_env, CodexEnv::Minimal);
        assert_eq!(server.pass_env, vec!["MY_VAR"]);
        assert_eq!(server.codex_log, "error");
        // Never below one body.
        assert_eq!(server.inflight_body_limit(), 100);
        let err = parse_text(
            "[server]\ncors_origins = [\"localhost:3000\"]\ncodex_env = \"none\"\npass_env = [\"A B\"]\ncodex_log = \"warn;rm\"\n[profiles.a]\n",
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
    }

    #[test]
    fn env_refs_lists_every_referenced_variable() {
        let config = parse_text(
            "[server]\napi_keys = [\"${SET}\"]\n[profiles.a]\nproxy = \"http://${SET}@h\"\n",
        )
        .unwrap();
        assert_eq!(config.env_refs, vec!["SET"]);
        let err = parse_text("[profiles.a]\nproxy = \"${UNSET}\"\n").unwrap_err();
        assert!(err.to_string().contains("UNSET"));
    }

    #[test]
    fn agent_without_tools_is_an_error() {
        let err = parse_text("[profiles.a]\nagent = true\ntools = false\n").unwrap_err();
        assert!(err.to_string().contains("cannot be combined"), "{err}");
    }

    #[test]
    fn fast_adds_low_effort_unless_set() {
        let config = parse_text(
            "[profiles.a]\nfast = true\n[profiles.b]\nfast = true\ncodex_config = ['model_reasoning_effort=\"high\"']\n",
        )
        .unwrap();
        assert_eq!(
            config.profiles[0].effective_codex_config(),
            vec!["model_reasoning_effort=\"low\""]
        );
        assert_eq!(
            config.profiles[1].effective_codex_config(),
            vec!["model_reasoning_effort=\"high\""]
        );
    }
}
