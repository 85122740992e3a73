//! The validated, immutable configuration: `[server]` settings and the named profiles.
//!
//! Entry points: [`load_file`] (read + [`parse`]) for `--config`, and [`Config::implicit`] for the single
//! `codex-local` profile built from command-line flags. Validation (`config/check.rs`) reports *every*
//! problem at once, each with the file line and profile name; `config/raw.rs` mirrors the TOML as written. This module does no I/O beyond reading the file and the environment; it
//! never starts processes (that is the engines' job).

mod check;
pub mod raw;

#[cfg(test)]
mod proptests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

pub use check::{parse, PROFILE_KEYS, SERVER_KEYS};

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

/// The reasoning summaries a profile asks Codex for (`reasoning_summary`): Codex's
/// `model_reasoning_summary`, sent to the model as `reasoning.summary`. Summaries are returned to
/// clients as `reasoning_content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReasoningSummary {
    /// No summaries (Codex would otherwise ask for `auto`).
    #[default]
    None,
    Auto,
    Concise,
    Detailed,
}

impl ReasoningSummary {
    /// The accepted spellings, as in the config file.
    pub const NAMES: &'static [&'static str] = &["none", "auto", "concise", "detailed"];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningSummary::None => "none",
            ReasoningSummary::Auto => "auto",
            ReasoningSummary::Concise => "concise",
            ReasoningSummary::Detailed => "detailed",
        }
    }

    pub fn parse(text: &str) -> Option<ReasoningSummary> {
        match text {
            "none" => Some(ReasoningSummary::None),
            "auto" => Some(ReasoningSummary::Auto),
            "concise" => Some(ReasoningSummary::Concise),
            "detailed" => Some(ReasoningSummary::Detailed),
            _ => None,
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
    /// The longest `usage_retention_days`.
    pub const MAX_RETENTION_DAYS: u64 = 36_500;
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
    /// The entries of `api_keys` written as tables: a name and limits for some of `api_keys`.
    pub named_keys: Vec<NamedKey>,
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
    /// The SQLite usage ledger; `None` (`usage_db = ""`) turns it off.
    pub usage_db: Option<PathBuf>,
    /// Ledger rows older than this many days are deleted.
    pub usage_retention_days: u32,
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
    /// How turns waiting on the client's tool results are held.
    pub hold: HoldSettings,
    /// Profiles tried in order when this one fails before anything was sent (`fallbacks`).
    pub fallbacks: Vec<String>,
    /// Add the models the account can use to `/v1/models` (`list_models`, `pass_model` profiles).
    pub list_models: bool,
}

/// How long, and how many, turns that returned tool calls wait for the client's results before they
/// are interrupted (the results then continue by replay). Not part of the pool's identity: changing
/// them keeps the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldSettings {
    /// `tool_call_timeout_seconds` (default 300; 0 turns holding off).
    pub timeout: Duration,
    /// `max_held_turns`: held turns of the profile at once (default `max_concurrency`).
    pub max_held: usize,
    /// `response_ttl_seconds` (default 600): how long an app-server profile keeps a stored response's
    /// thread for `previous_response_id`.
    pub response_ttl: Duration,
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
    /// The entries of `api_keys` written as tables.
    pub named_keys: Vec<NamedKey>,
}

/// An `api_keys` entry written as a table: `{ name, key, max_concurrency, requests_per_minute,
/// profiles }`. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedKey {
    /// What logs and metrics show for the key.
    pub name: String,
    pub key: String,
    /// Requests of this key running at once (across all profiles).
    pub max_concurrency: Option<usize>,
    /// Requests of this key started in any 60-second window.
    pub requests_per_minute: Option<u32>,
    /// When set, the key may use only these profiles (of those it otherwise opens).
    pub profiles: Option<Vec<String>>,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NamedKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("max_concurrency", &self.max_concurrency)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("profiles", &self.profiles)
            .finish()
    }
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
    /// `reasoning_summary`: the reasoning summaries asked of Codex (default none).
    pub reasoning_summary: ReasoningSummary,
    pub agent: bool,
    pub tools: bool,
    /// `spare_threads`: app-server workers start the thread of a likely next request ahead of it (see
    /// `engine::app_server::spare`).
    pub spare_threads: bool,
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
            server.named_keys.clear();
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
        named_keys: Vec::new(),
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
        usage_db: Some(state_dir().join("usage.sqlite3")),
        usage_retention_days: 90,
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
            reasoning_summary: ReasoningSummary::None,
            agent: settings.agent,
            // As in a file: Codex's own tools only for an agent.
            tools: settings.agent,
            spare_threads: true,
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
            hold: HoldSettings {
                timeout: Duration::from_secs(300),
                max_held: runtime.max_concurrency,
                response_ttl: Duration::from_secs(600),
            },
            runtime,
            fallbacks: Vec::new(),
            list_models: false,
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

/// Whether `host` (a bind address, or a `Host` name without port and brackets) is a loopback name or
/// address.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
        assert!(!profile.runtime.tools && profile.runtime.ephemeral && !profile.runtime.agent);
        assert_eq!(config.server.port, 8765);
    }

    #[test]
    fn tools_default_to_the_agent_setting() {
        let config = parse_text("[profiles.plain]\n[profiles.agentic]\nagent = true\n").unwrap();
        assert!(!config.profiles[0].runtime.tools);
        assert!(config.profiles[1].runtime.tools);
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
    fn reasoning_summary_is_none_unless_set_and_checked() {
        let config = parse(
            "[defaults]\nreasoning_summary = \"concise\"\n[profiles.a]\n[profiles.b]\nreasoning_summary = \"none\"\n",
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            config.profiles[0].runtime.reasoning_summary,
            ReasoningSummary::Concise
        );
        assert_eq!(
            config.profiles[1].runtime.reasoning_summary,
            ReasoningSummary::None
        );
        let errors = parse(
            "[profiles.a]\nreasoning_summary = \"loud\"\n",
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("unknown reasoning_summary `loud`"),
            "{errors}"
        );
        assert!(errors.contains("c.toml:2"), "{errors}");
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
