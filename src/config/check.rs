//! Validation of a config file: [`parse`] turns the TOML text into a [`Config`], or into every problem
//! found, each with its line and profile. The [`Checker`] reads `[server]`, `[defaults]` and each
//! `[profiles.NAME]` table key by key; the types it fills live in `config/mod.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use toml::Spanned;

use super::raw::{self, RawFile, SpannedTable};
use super::{
    default_server, limits, resolve_path, state_dir, Access, CodexEnv, Config, ConfigErrors,
    EngineKind, HoldSettings, NamedKey, Problem, Profile, ReasoningSummary, Routing,
    RuntimeSettings, ServerConfig, ServerOverrides,
};

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
    "usage_db",
    "usage_retention_days",
];

const PROFILE_ONLY_KEYS: &[&str] = &["aliases", "match", "description", "fallbacks"];

/// The keys a profile (and, but for `aliases`, `match` and `description`, `[defaults]`) accepts.
pub const PROFILE_KEYS: &[&str] = &[
    "engine",
    "model",
    "pass_model",
    "aliases",
    "match",
    "description",
    "fast",
    "reasoning_summary",
    "agent",
    "tools",
    "spare_threads",
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
    "tool_call_timeout_seconds",
    "max_held_turns",
    "response_ttl_seconds",
    "fallbacks",
    "list_models",
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
        let mut server = self.server_of(file);
        overrides.apply(&mut server);
        let defaults = self.defaults_of(file);
        let profiles = self.profiles_of(file, &defaults, base);
        if profiles.is_empty() && file.profiles.as_ref().is_none_or(|p| p.is_empty()) {
            self.problem(
                None,
                None,
                "no profiles: add at least one `[profiles.NAME]` table".to_string(),
            );
        }
        self.check_fallback(file, &server);
        self.check_fallbacks(file, &profiles);
        self.check_named_keys(file, &server, &profiles);
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

    /// The `[server]` table over the defaults (command-line overrides are applied by the caller).
    fn server_of(&mut self, file: &RawFile) -> ServerConfig {
        let mut server = default_server();
        let Some(table) = &file.server else {
            return server;
        };
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
        if entries.get("api_keys").is_some() {
            (server.api_keys, server.named_keys) = self.api_keys_of(&entries);
        }
        if let Some(bin) = self.typed::<String>(&entries, "codex_bin", "a string") {
            server.codex_bin = bin;
        }
        server.fallback_profile = self.typed::<String>(&entries, "fallback_profile", "a string");
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
        self.server_log_level(&entries, &mut server);
        self.server_usage(&entries, &mut server);
        server
    }

    /// `usage_db` (`""` turns the ledger off) and `usage_retention_days`.
    fn server_usage(&mut self, entries: &Entries, server: &mut ServerConfig) {
        if let Some(path) = self.typed::<String>(entries, "usage_db", "a path string") {
            server.usage_db = (!path.is_empty()).then(|| resolve_path(&path, None));
        }
        if entries.get("usage_retention_days").is_some() {
            server.usage_retention_days = self.positive(
                entries,
                "usage_retention_days",
                server.usage_retention_days as u64,
                limits::MAX_RETENTION_DAYS,
            ) as u32;
        }
    }

    /// `log_level`.
    fn server_log_level(&mut self, entries: &Entries, server: &mut ServerConfig) {
        if let Some(level) = self.typed::<String>(entries, "log_level", "a string") {
            if !["trace", "debug", "info", "warning", "warn", "error"].contains(&level.as_str()) {
                let line = entries.get("log_level").map(|entry| entry.2);
                self.problem(
                    line,
                    None,
                    format!("`log_level` must be debug, info, warning or error, found `{level}`"),
                );
            }
            server.log_level = level;
        }
    }

    /// The `[defaults]` entries, checked against the keys a profile accepts but for the profile-only ones.
    fn defaults_of(&mut self, file: &RawFile) -> Vec<(String, toml::Value, usize)> {
        let allowed_defaults: Vec<&str> = PROFILE_KEYS
            .iter()
            .copied()
            .filter(|key| !PROFILE_ONLY_KEYS.contains(key))
            .collect();
        match &file.defaults {
            Some(table) => self.entries(table.get_ref(), &allowed_defaults, "[defaults]", None),
            None => Vec::new(),
        }
    }

    /// The valid profiles in file order; each one's name and aliases are claimed as model names.
    fn profiles_of(
        &mut self,
        file: &RawFile,
        defaults: &[(String, toml::Value, usize)],
        base: Option<&Path>,
    ) -> Vec<Arc<Profile>> {
        let mut profiles: Vec<Arc<Profile>> = Vec::new();
        // name or alias → (profile that claims it, line)
        let mut claimed: Vec<(String, String, usize)> = Vec::new();
        let Some(raw_profiles) = &file.profiles else {
            return profiles;
        };
        for (name, table) in raw::ordered_profiles(raw_profiles) {
            let line = self.line_of(name.span().start);
            if let Some(profile) = self.build_profile(name.get_ref(), table, defaults, base) {
                self.claim_names(&profile, line, &mut claimed);
                profiles.push(Arc::new(profile));
            }
        }
        profiles
    }

    /// Claims the profile's name and aliases (all at the profile's `line`), reporting each model name
    /// already claimed.
    fn claim_names(
        &mut self,
        profile: &Profile,
        line: usize,
        claimed: &mut Vec<(String, String, usize)>,
    ) {
        let labels = std::iter::once(&profile.name).chain(&profile.routing.aliases);
        for label in labels {
            if let Some((_, owner, owner_line)) = claimed
                .iter()
                .find(|(claimed_name, _, _)| claimed_name == label)
            {
                let message = if owner == &profile.name {
                    format!("the model name `{label}` is listed twice")
                } else {
                    format!(
                        "the model name `{label}` is already used by profile `{owner}` (line {owner_line})"
                    )
                };
                self.problem(Some(line), Some(&profile.name), message);
            } else {
                claimed.push((label.clone(), profile.name.clone(), line));
            }
        }
    }

    /// Reports a `fallback_profile` that names no `[profiles.NAME]` table (valid or not).
    fn check_fallback(&mut self, file: &RawFile, server: &ServerConfig) {
        let Some(fallback) = &server.fallback_profile else {
            return;
        };
        let exists = file
            .profiles
            .as_ref()
            .is_some_and(|profiles| profiles.keys().any(|name| name.get_ref() == fallback));
        if exists {
            return;
        }
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

    /// The line of `key` in profile `profile`'s table (or of the table itself).
    fn profile_key_line(&self, file: &RawFile, profile: &str, key: &str) -> Option<usize> {
        let (_, table) = file
            .profiles
            .as_ref()?
            .iter()
            .find(|(name, _)| name.get_ref() == profile)?;
        let offset = table
            .get_ref()
            .iter()
            .find(|(name, _)| name.get_ref() == key)
            .map_or(table.span().start, |(name, _)| name.span().start);
        Some(self.line_of(offset))
    }

    /// `fallbacks`: every name is another profile, and no chain comes back to where it started.
    fn check_fallbacks(&mut self, file: &RawFile, profiles: &[Arc<Profile>]) {
        for profile in profiles {
            for name in &profile.fallbacks {
                let problem = if *name == profile.name {
                    Some(format!("`fallbacks` names the profile itself (`{name}`)"))
                } else if !profiles.iter().any(|other| other.name == *name) {
                    Some(format!(
                        "`fallbacks` names `{name}`, which is not a profile"
                    ))
                } else {
                    None
                };
                if let Some(message) = problem {
                    let line = self.profile_key_line(file, &profile.name, "fallbacks");
                    self.problem(line, Some(&profile.name), message);
                }
            }
        }
        let graph: Vec<(String, Vec<String>)> = profiles
            .iter()
            .map(|profile| {
                let others = profile
                    .fallbacks
                    .iter()
                    .filter(|name| **name != profile.name)
                    .cloned()
                    .collect();
                (profile.name.clone(), others)
            })
            .collect();
        for cycle in fallback_cycles(&graph) {
            let line = self.profile_key_line(file, &cycle[0], "fallbacks");
            self.problem(
                line,
                Some(&cycle[0]),
                format!("`fallbacks` form a cycle: {}", cycle.join(" → ")),
            );
        }
    }

    /// Named keys: one name per key and one key per name, and `profiles` that exist.
    fn check_named_keys(
        &mut self,
        file: &RawFile,
        server: &ServerConfig,
        profiles: &[Arc<Profile>],
    ) {
        let mut all: Vec<(Option<&str>, &NamedKey)> =
            server.named_keys.iter().map(|key| (None, key)).collect();
        for profile in profiles {
            all.extend(
                profile
                    .access
                    .named_keys
                    .iter()
                    .map(|key| (Some(profile.name.as_str()), key)),
            );
        }
        let line_of = |checker: &Self, owner: Option<&str>| match owner {
            Some(profile) => checker.profile_key_line(file, profile, "api_keys"),
            None => file.server.as_ref().and_then(|table| {
                table
                    .get_ref()
                    .iter()
                    .find(|(key, _)| key.get_ref() == "api_keys")
                    .map(|(key, _)| checker.line_of(key.span().start))
            }),
        };
        let mut reported = Vec::new();
        for (index, (owner, key)) in all.iter().enumerate() {
            for (_, other) in &all[..index] {
                let clash = if other.name == key.name && other.key != key.key {
                    Some(format!(
                        "the key name `{}` is used for two different keys",
                        key.name
                    ))
                } else if other.key == key.key && other.name != key.name {
                    Some(format!(
                        "one key has two names, `{}` and `{}`",
                        other.name, key.name
                    ))
                } else {
                    None
                };
                if let Some(message) = clash.filter(|m| !reported.contains(m)) {
                    reported.push(message.clone());
                    let line = line_of(self, *owner);
                    self.problem(line, *owner, format!("`api_keys`: {message}"));
                }
            }
            for name in key.profiles.iter().flatten() {
                if !profiles.iter().any(|profile| profile.name == *name) {
                    let line = line_of(self, *owner);
                    self.problem(
                        line,
                        *owner,
                        format!(
                            "`api_keys`: key `{}` lists `{name}` in `profiles`, which is not a profile",
                            key.name
                        ),
                    );
                }
            }
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

    /// One `[profiles.NAME]` table over `[defaults]`, or `None` if it has problems (all reported).
    ///
    /// The keys are read in the order engine and model, routing, Codex's behaviour, admission, access,
    /// `codex_home`: problems on one line (an inline table) are reported in that order.
    fn build_profile(
        &mut self,
        name: &str,
        table: &Spanned<SpannedTable>,
        defaults: &[(String, toml::Value, usize)],
        base: Option<&Path>,
    ) -> Option<Profile> {
        let before = self.problems.len();
        let entries = self.profile_entries(name, table, defaults);
        let mut runtime = default_runtime(name);
        self.read_model(&entries, &mut runtime);
        let routing = self.routing_of(&entries);
        self.read_behaviour(&entries, base, &mut runtime);
        self.read_admission(&entries, &mut runtime);
        let access = self.access_of(&entries);
        let hold = self.hold_of(&entries, &runtime);
        let fallbacks = self
            .typed::<Vec<String>>(&entries, "fallbacks", "an array of profile names")
            .unwrap_or_default();
        let list_models = self.flag(&entries, "list_models", false);
        if let Some(text) = self.typed::<String>(&entries, "codex_home", "a path string") {
            runtime.codex_home = resolve_path(&text, base);
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Profile {
            name: name.to_string(),
            routing,
            access,
            runtime,
            hold,
            fallbacks,
            list_models,
        })
    }

    /// `tool_call_timeout_seconds` (0 turns holding off) and `max_held_turns`.
    fn hold_of(&mut self, entries: &Entries, runtime: &RuntimeSettings) -> HoldSettings {
        let timeout =
            match self.typed::<i64>(entries, "tool_call_timeout_seconds", "a whole number") {
                Some(seconds) if (0..=limits::MAX_SECONDS as i64).contains(&seconds) => {
                    seconds as u64
                }
                Some(seconds) => {
                    let line = entries
                        .get("tool_call_timeout_seconds")
                        .map(|entry| entry.2);
                    self.problem(
                        line,
                        entries.profile.as_deref(),
                        format!(
                            "`tool_call_timeout_seconds` must be between 0 and {}, found {seconds}",
                            limits::MAX_SECONDS
                        ),
                    );
                    300
                }
                None => 300,
            };
        let max_held = self.positive(
            entries,
            "max_held_turns",
            runtime.max_concurrency as u64,
            limits::MAX_CONCURRENCY,
        ) as usize;
        let response_ttl = self.positive(entries, "response_ttl_seconds", 600, limits::MAX_SECONDS);
        HoldSettings {
            timeout: Duration::from_secs(timeout),
            max_held,
            response_ttl: Duration::from_secs(response_ttl),
        }
    }

    /// Checks the profile's name and keys; its entries follow those of `[defaults]` (and win over them).
    fn profile_entries(
        &mut self,
        name: &str,
        table: &Spanned<SpannedTable>,
        defaults: &[(String, toml::Value, usize)],
    ) -> Entries {
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
        Entries {
            profile: Some(name.to_string()),
            values,
        }
    }

    /// `engine`, `model` and `pass_model`.
    fn read_model(&mut self, entries: &Entries, runtime: &mut RuntimeSettings) {
        runtime.engine = match self
            .typed::<String>(entries, "engine", "a string")
            .as_deref()
        {
            None | Some("exec") => EngineKind::Exec,
            Some("app-server") => EngineKind::AppServer,
            Some(other) => {
                let line = entries.get("engine").map(|entry| entry.2);
                self.problem(
                    line,
                    entries.profile.as_deref(),
                    format!("unknown engine `{other}` (use \"exec\" or \"app-server\")"),
                );
                EngineKind::Exec
            }
        };
        runtime.model = self
            .typed::<String>(entries, "model", "a string")
            .filter(|model| !model.is_empty());
        runtime.pass_model = self
            .typed::<bool>(entries, "pass_model", "true or false")
            .unwrap_or(false);
    }

    /// `aliases`, `match` and `description`: the model names that select the profile.
    fn routing_of(&mut self, entries: &Entries) -> Routing {
        let aliases = self
            .typed::<Vec<String>>(entries, "aliases", "an array of strings")
            .unwrap_or_default();
        let match_regex = self
            .typed::<String>(entries, "match", "a regular expression string")
            .and_then(|pattern| match Regex::new(&pattern) {
                Ok(regex) => Some(regex),
                Err(err) => {
                    let line = entries.get("match").map(|entry| entry.2);
                    let first_line = err.to_string();
                    let summary = first_line.lines().last().unwrap_or("invalid").trim();
                    self.problem(
                        line,
                        entries.profile.as_deref(),
                        format!(
                            "`match` is not a valid regular expression ({pattern:?}): {summary}"
                        ),
                    );
                    None
                }
            });
        let description = self
            .typed::<String>(entries, "description", "a string")
            .unwrap_or_default();
        Routing {
            aliases,
            match_regex,
            description,
        }
    }

    /// `fast`, `agent`, `tools`, `spare_threads`, `ephemeral`, `proxy`, `default_cwd`, `allowed_roots` and
    /// `codex_config`: how Codex behaves and where it may work.
    fn read_behaviour(
        &mut self,
        entries: &Entries,
        base: Option<&Path>,
        runtime: &mut RuntimeSettings,
    ) {
        let profile = entries.profile.as_deref();
        runtime.fast = self.flag(entries, "fast", false);
        if let Some(text) = self.typed::<String>(entries, "reasoning_summary", "a string") {
            match ReasoningSummary::parse(&text) {
                Some(summary) => runtime.reasoning_summary = summary,
                None => {
                    let line = entries.get("reasoning_summary").map(|entry| entry.2);
                    self.problem(
                        line,
                        profile,
                        format!(
                            "unknown reasoning_summary `{text}` (use one of: {})",
                            ReasoningSummary::NAMES.join(", ")
                        ),
                    );
                }
            }
        }
        runtime.agent = self.flag(entries, "agent", false);
        // A plain model call unless the profile is an agent: what clients of an OpenAI-compatible
        // endpoint expect, at half the model request and about half of Codex's CPU per turn (README,
        // "Performance"). `tools = true` gives Codex its own tools back.
        runtime.tools = self.flag(entries, "tools", runtime.agent);
        if runtime.agent && !runtime.tools {
            let line = entries.get("tools").map(|entry| entry.2);
            self.problem(
                line,
                profile,
                "`agent = true` needs Codex's tools; it cannot be combined with `tools = false`"
                    .to_string(),
            );
        }
        runtime.spare_threads = self.flag(entries, "spare_threads", true);
        runtime.ephemeral = self.flag(entries, "ephemeral", true);
        runtime.proxy = self
            .typed::<String>(entries, "proxy", "a URL string")
            .filter(|proxy| !proxy.is_empty());
        if let Some(text) = self.typed::<String>(entries, "default_cwd", "a path string") {
            runtime.default_cwd = resolve_path(&text, base);
        }
        runtime.allowed_roots = self
            .typed::<Vec<String>>(entries, "allowed_roots", "an array of path strings")
            .map(|roots| {
                roots
                    .iter()
                    .map(|root| resolve_path(root, base))
                    .collect::<Vec<_>>()
            })
            .filter(|roots| !roots.is_empty())
            .unwrap_or_else(|| vec![runtime.default_cwd.clone()]);
        runtime.codex_config = self
            .typed::<Vec<String>>(entries, "codex_config", "an array of `key=value` strings")
            .unwrap_or_default();
        for item in &runtime.codex_config {
            if !item.contains('=') {
                let line = entries.get("codex_config").map(|entry| entry.2);
                self.problem(
                    line,
                    profile,
                    format!("`codex_config` entry {item:?} is not of the form key=value"),
                );
            }
        }
    }

    /// A `true or false` setting.
    fn flag(&mut self, entries: &Entries, key: &str, default: bool) -> bool {
        self.typed::<bool>(entries, key, "true or false")
            .unwrap_or(default)
    }

    /// `timeout_seconds`, `workers`, `max_concurrency`, `max_queue_size` and `queue_timeout_seconds`:
    /// how long a request may run and how many run or wait at once.
    fn read_admission(&mut self, entries: &Entries, runtime: &mut RuntimeSettings) {
        runtime.timeout = Duration::from_secs(self.positive(
            entries,
            "timeout_seconds",
            300,
            limits::MAX_SECONDS,
        ));
        runtime.workers = self.positive(entries, "workers", 1, limits::MAX_WORKERS) as usize;
        let default_concurrency = match runtime.engine {
            EngineKind::Exec => 1,
            EngineKind::AppServer => 4 * runtime.workers as u64,
        };
        runtime.max_concurrency = self.positive(
            entries,
            "max_concurrency",
            default_concurrency.min(limits::MAX_CONCURRENCY),
            limits::MAX_CONCURRENCY,
        ) as usize;
        runtime.max_queue_size = self.queue_size(entries);
        runtime.queue_timeout = Duration::from_secs(self.positive(
            entries,
            "queue_timeout_seconds",
            30,
            limits::MAX_SECONDS,
        ));
    }

    /// `max_queue_size`: zero or more, 64 by default.
    fn queue_size(&mut self, entries: &Entries) -> usize {
        const DEFAULT: usize = 64;
        let profile = entries.profile.as_deref();
        match self.typed::<i64>(entries, "max_queue_size", "a whole number") {
            Some(size) if size >= 0 && size as u64 <= limits::MAX_QUEUE_SIZE => size as usize,
            Some(size) if size >= 0 => {
                let line = entries.get("max_queue_size").map(|entry| entry.2);
                self.problem(
                    line,
                    profile,
                    format!(
                        "`max_queue_size` must be at most {}, found {size}",
                        limits::MAX_QUEUE_SIZE
                    ),
                );
                DEFAULT
            }
            Some(size) => {
                let line = entries.get("max_queue_size").map(|entry| entry.2);
                self.problem(
                    line,
                    profile,
                    format!("`max_queue_size` must be zero or more, found {size}"),
                );
                DEFAULT
            }
            None => DEFAULT,
        }
    }

    /// `api_keys`: who may use the profile.
    fn access_of(&mut self, entries: &Entries) -> Access {
        let (api_keys, named_keys) = self.api_keys_of(entries);
        Access {
            api_keys,
            named_keys,
        }
    }

    /// An `api_keys` array: plain key strings (empty ones are skipped) and `{ name, key,
    /// max_concurrency, requests_per_minute, profiles }` tables. Returns every key, and the tables.
    fn api_keys_of(&mut self, entries: &Entries) -> (Vec<String>, Vec<NamedKey>) {
        let Some((_, value, line)) = entries.get("api_keys").cloned() else {
            return (Vec::new(), Vec::new());
        };
        let profile = entries.profile.clone();
        let expected = "an array of key strings or { name, key, max_concurrency, requests_per_minute, profiles } tables";
        let Some(items) = value.as_array() else {
            self.problem(
                Some(line),
                profile.as_deref(),
                format!("`api_keys` must be {expected}, found {}", value.type_str()),
            );
            return (Vec::new(), Vec::new());
        };
        let mut keys = Vec::new();
        let mut named = Vec::new();
        for item in items {
            match item {
                toml::Value::String(key) if key.is_empty() => {}
                toml::Value::String(key) => keys.push(key.clone()),
                toml::Value::Table(table) => match named_key(table) {
                    Ok(key) => {
                        keys.push(key.key.clone());
                        named.push(key);
                    }
                    Err(message) => self.problem(
                        Some(line),
                        profile.as_deref(),
                        format!("`api_keys`: {message}"),
                    ),
                },
                other => self.problem(
                    Some(line),
                    profile.as_deref(),
                    format!(
                        "`api_keys` must be {expected}, found an entry of type {}",
                        other.type_str()
                    ),
                ),
            }
        }
        (keys, named)
    }
}

/// The cycles among `fallbacks`, each as the list of names that form it (first name repeated last),
/// in file order of their first profile. Pure; [`Checker`] reports them.
pub fn fallback_cycles(profiles: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = Vec::new();
    for (start, _) in profiles {
        let mut path = vec![start.clone()];
        find_cycle(profiles, start, &mut path, &mut found);
    }
    found
}

fn find_cycle(
    profiles: &[(String, Vec<String>)],
    start: &str,
    path: &mut Vec<String>,
    found: &mut Vec<Vec<String>>,
) {
    let current = path.last().cloned().unwrap_or_default();
    let Some((_, next)) = profiles.iter().find(|(name, _)| *name == current) else {
        return;
    };
    for name in next {
        if name == start {
            let mut cycle = path.clone();
            cycle.push(start.to_string());
            // The same cycle found from another of its members is reported once.
            let mut members: Vec<&String> = cycle[..cycle.len() - 1].iter().collect();
            members.sort();
            let known = found.iter().any(|other| {
                let mut theirs: Vec<&String> = other[..other.len() - 1].iter().collect();
                theirs.sort();
                theirs == members
            });
            if !known {
                found.push(cycle);
            }
        } else if !path.contains(name) {
            path.push(name.clone());
            find_cycle(profiles, start, path, found);
            path.pop();
        }
    }
}

/// The keys an `api_keys` table accepts.
const NAMED_KEY_KEYS: &[&str] = &[
    "name",
    "key",
    "max_concurrency",
    "requests_per_minute",
    "profiles",
];

/// The highest `requests_per_minute`.
const MAX_REQUESTS_PER_MINUTE: i64 = 1_000_000;

/// One `api_keys` table, or what is wrong with it (never quoting the key).
fn named_key(table: &toml::Table) -> Result<NamedKey, String> {
    if let Some(unknown) = table
        .keys()
        .find(|key| !NAMED_KEY_KEYS.contains(&key.as_str()))
    {
        return Err(format!(
            "unknown key `{unknown}` in a key table (known: {})",
            NAMED_KEY_KEYS.join(", ")
        ));
    }
    let text = |field: &str| -> Result<String, String> {
        match table.get(field) {
            Some(toml::Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
            Some(_) => Err(format!(
                "`{field}` of a key table must be a non-empty string"
            )),
            None => Err(format!("a key table needs `{field}`")),
        }
    };
    let name = text("name")?;
    let key = text("key").map_err(|err| format!("{err} (key `{name}`)"))?;
    let number = |field: &str, max: i64| -> Result<Option<i64>, String> {
        match table.get(field) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if (1..=max).contains(n) => Ok(Some(*n)),
            Some(_) => Err(format!(
                "`{field}` of key `{name}` must be a whole number from 1 to {max}"
            )),
        }
    };
    let max_concurrency =
        number("max_concurrency", limits::MAX_CONCURRENCY as i64)?.map(|n| n as usize);
    let requests_per_minute =
        number("requests_per_minute", MAX_REQUESTS_PER_MINUTE)?.map(|n| n as u32);
    let profiles = match table.get("profiles") {
        None => None,
        Some(value) => Some(value.clone().try_into::<Vec<String>>().map_err(|_| {
            format!("`profiles` of key `{name}` must be an array of profile names")
        })?),
    };
    Ok(NamedKey {
        name,
        key,
        max_concurrency,
        requests_per_minute,
        profiles,
    })
}

/// A profile's runtime settings before its table is read: the defaults of every key.
fn default_runtime(name: &str) -> RuntimeSettings {
    let default_cwd = state_dir().join("workspace");
    RuntimeSettings {
        engine: EngineKind::Exec,
        model: None,
        pass_model: false,
        fast: false,
        reasoning_summary: ReasoningSummary::None,
        agent: false,
        tools: false,
        spare_threads: true,
        ephemeral: true,
        proxy: None,
        allowed_roots: vec![default_cwd.clone()],
        default_cwd,
        codex_config: Vec::new(),
        timeout: Duration::from_secs(300),
        max_concurrency: 1,
        max_queue_size: 64,
        queue_timeout: Duration::from_secs(30),
        workers: 1,
        codex_home: state_dir().join("codex-home").join(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_cycle_once() {
        let profiles = |pairs: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
            pairs
                .iter()
                .map(|(n, f)| (n.to_string(), f.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        let cyclic = profiles(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["d"])]);
        assert_eq!(
            fallback_cycles(&cyclic),
            vec![vec!["a", "b", "c", "a"], vec!["d", "d"]]
        );
        let acyclic = profiles(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])]);
        assert!(fallback_cycles(&acyclic).is_empty());
    }

    fn problems_of(text: &str) -> Vec<String> {
        let errors = parse(
            text,
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .expect_err("invalid");
        errors.problems.iter().map(|p| errors.describe(p)).collect()
    }

    fn valid(text: &str) -> Config {
        parse(
            text,
            Path::new("c.toml"),
            &ServerOverrides::default(),
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn api_keys_take_strings_and_named_tables() {
        let config = valid(
            "[server]\napi_keys = [\"sk-a\", { name = \"ci\", key = \"sk-b\", max_concurrency = 2, requests_per_minute = 30, profiles = [\"p\"] }]\n[profiles.p]\napi_keys = [{ name = \"own\", key = \"sk-c\" }]\n",
        );
        assert_eq!(config.server.api_keys, ["sk-a", "sk-b"]);
        let named = &config.server.named_keys[0];
        assert_eq!(named.name, "ci");
        assert_eq!(named.max_concurrency, Some(2));
        assert_eq!(named.requests_per_minute, Some(30));
        assert_eq!(named.profiles.as_deref(), Some(&["p".to_string()][..]));
        assert_eq!(config.profiles[0].access.api_keys, ["sk-c"]);
        assert!(!format!("{named:?}").contains("sk-b"));
    }

    #[test]
    fn bad_key_tables_are_reported_without_the_key() {
        let problems = problems_of(
            "[server]\napi_keys = [{ name = \"a\", key = \"sk-secret\", max_concurrency = 0 }, { key = \"sk-secret2\" }, { name = \"b\", key = \"sk-3\", color = 1 }, 7]\n[profiles.p]\n",
        );
        let text = problems.join("\n");
        assert!(text.contains("`max_concurrency` of key `a`"), "{text}");
        assert!(text.contains("a key table needs `name`"), "{text}");
        assert!(text.contains("unknown key `color`"), "{text}");
        assert!(text.contains("found an entry of type integer"), "{text}");
        assert!(!text.contains("sk-secret"), "{text}");
        assert!(text.contains("c.toml:2:"), "{text}");
    }

    #[test]
    fn key_names_are_unique_and_their_profiles_exist() {
        let problems = problems_of(
            "[server]\napi_keys = [{ name = \"a\", key = \"sk-1\" }, { name = \"a\", key = \"sk-2\" }, { name = \"b\", key = \"sk-1\", profiles = [\"nope\"] }]\n[profiles.p]\n",
        )
        .join("\n");
        assert!(
            problems.contains("the key name `a` is used for two different keys"),
            "{problems}"
        );
        assert!(
            problems.contains("one key has two names, `a` and `b`"),
            "{problems}"
        );
        assert!(
            problems.contains("lists `nope` in `profiles`"),
            "{problems}"
        );
        assert!(!problems.contains("sk-"), "{problems}");
    }

    #[test]
    fn fallbacks_must_name_other_profiles_without_cycles() {
        let problems = problems_of(
            "[profiles.a]\nfallbacks = [\"b\", \"ghost\"]\n[profiles.b]\nfallbacks = [\"a\"]\n[profiles.c]\nfallbacks = [\"c\"]\n",
        )
        .join("\n");
        assert!(
            problems.contains("`fallbacks` names `ghost`, which is not a profile"),
            "{problems}"
        );
        assert!(
            problems.contains("`fallbacks` form a cycle: a → b → a"),
            "{problems}"
        );
        assert!(
            problems.contains("names the profile itself (`c`)"),
            "{problems}"
        );
        assert!(problems.contains("c.toml:2:"), "{problems}");
        let config = valid("[profiles.a]\nfallbacks = [\"b\"]\n[profiles.b]\n");
        assert_eq!(config.profiles[0].fallbacks, ["b"]);
    }
}
