//! What several commands print the same way: keys as `<redacted>`, the start settings as flags, one
//! line per profile, the endpoint and file lists, urls, times, and the string lists of server answers.
//!
//! Formatting only: it reads no file, makes no request and judges nothing about the server; each
//! command decides what to print and in which order.

use serde_json::Value;

use crate::cli::Settings;
use crate::config::{Config, Profile};
use crate::report::{ProfileReadiness, Ready, UtcTime};

use super::files::DaemonFiles;

/// What is printed instead of a key.
pub(super) const REDACTED: &str = "<redacted>";

/// `text` with every key replaced by `<redacted>`.
pub(super) fn redact(text: &str, keys: &[String]) -> String {
    keys.iter()
        .filter(|key| !key.is_empty())
        .fold(text.to_string(), |text, key| {
            text.replace(key.as_str(), REDACTED)
        })
}

/// `--name=value` flags for display, with the api key redacted.
pub(super) fn display_flags(settings: &Settings) -> String {
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

pub(super) fn url_of(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

/// A pid a server answered with, or `unknown`.
pub(super) fn pid_or_unknown(pid: Option<u32>) -> String {
    pid.map_or("unknown".to_string(), |pid| pid.to_string())
}

/// The model a profile runs, for people.
pub(super) fn model_label(profile: &Profile) -> String {
    if profile.runtime.pass_model {
        "(the request's)".to_string()
    } else {
        profile
            .runtime
            .model
            .clone()
            .unwrap_or_else(|| "(Codex default)".to_string())
    }
}

/// The strings of a JSON array, `None` if `value` is not an array.
pub(super) fn string_items(value: &Value) -> Option<Vec<&str>> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
}

/// One line per profile (name, engine, model, aliases, readiness) with the profile's name, in the order
/// of `/v1/models` if given, else of `/ready`, else of the config.
pub(super) fn profile_lines(
    config: Option<&Config>,
    ready: Option<&Ready>,
    models: Option<&Value>,
) -> Vec<(String, String)> {
    let entries: &[Value] = models
        .and_then(|m| m.get("data"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let listed = entries
        .iter()
        .filter_map(|entry| entry.get("profile").and_then(Value::as_str))
        .map(str::to_string);
    let readied = ready.into_iter().flat_map(|r| r.profiles.keys().cloned());
    let mut names = super::unique_in_order(listed.chain(readied));
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
            let line = ProfileLine {
                entry: entries.iter().find(|e| e["profile"] == name.as_str()),
                readiness: ready.and_then(|r| r.profiles.get(&name)),
                profile: config.and_then(|c| c.profile(&name)).map(|p| &**p),
            }
            .render(&name, width);
            (name, line)
        })
        .collect()
}

/// What is known of one profile: its `/v1/models` entry, its `/ready` block, its config.
struct ProfileLine<'a> {
    entry: Option<&'a Value>,
    readiness: Option<&'a ProfileReadiness>,
    profile: Option<&'a Profile>,
}

impl ProfileLine<'_> {
    fn render(&self, name: &str, width: usize) -> String {
        let engine = self
            .entry
            .and_then(|e| e["engine"].as_str())
            .map(str::to_string)
            .or_else(|| self.readiness.map(|r| r.engine.clone()))
            .or_else(|| self.profile.map(|p| p.runtime.engine.as_str().to_string()))
            .unwrap_or_else(|| "?".to_string());
        let mut line = format!("{name:width$}  engine={engine}");
        if let Some(profile) = self.profile {
            line.push_str(&format!("  model={}", model_label(profile)));
        }
        let aliases: Vec<String> = match self.entry.and_then(|e| string_items(&e["aliases"])) {
            Some(list) => list.into_iter().map(str::to_string).collect(),
            None => self
                .profile
                .map(|p| p.routing.aliases.clone())
                .unwrap_or_default(),
        };
        if !aliases.is_empty() {
            line.push_str(&format!("  aliases={}", aliases.join(", ")));
        }
        match self.readiness {
            Some(block) if block.ready => line.push_str("  ready"),
            Some(block) => line.push_str(&format!(
                "  NOT READY: {}",
                block.reason.as_deref().unwrap_or("unknown reason")
            )),
            None => {}
        }
        line
    }
}

pub(super) fn print_endpoints(url: &str) {
    println!("endpoints:");
    println!("  POST {url}/v1/chat/completions");
    println!("  GET  {url}/v1/models");
    println!("  GET  {url}/health   {url}/ready   {url}/metrics   {url}/v1/quota");
    println!("  POST {url}/admin/reload   (or `codex-api-proxy reload`)");
}

pub(super) fn print_files(files: &DaemonFiles) {
    println!("  pid file:   {}", files.pid.display());
    println!("  state file: {}", files.state.display());
    println!("  log file:   {}", files.log.display());
}

/// `2025-01-31 12:00:00 UTC` for log headers.
pub(super) fn format_unix_time(seconds: u64) -> String {
    format!("{} UTC", UtcTime::from_unix(seconds).format(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn ipv6_hosts_are_bracketed_in_urls() {
        assert_eq!(url_of("::1", 8), "http://[::1]:8");
    }
}
