//! `/metrics` in the Prometheus text format (0.0.4) or OpenMetrics 1.0, for clients whose `Accept`
//! header asks for one of them (Prometheus's scraper does); JSON stays the default ([`negotiate`]).
//!
//! The exposition is encoded by `prometheus-client`: the series with history come from the
//! [`Recorder`]'s families, the rest (pools, workers, reloads, accounts) are read into a fresh registry
//! at each scrape from the [`Scrape`] figures `api::ops` gathers. Every series is documented in the
//! README; the names and labels are a contract with dashboards.

use axum::http::{header, HeaderMap};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::account::{Login, QuotaWindow};
use crate::metrics::Recorder;

/// The exposition formats `/metrics` speaks besides JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The format the `Accept` header prefers among OpenMetrics, Prometheus text and JSON (by `q`, then
/// by order); `None` for JSON, which is also the answer to `*/*` and to no header at all.
pub fn negotiate(headers: &HeaderMap) -> Option<Format> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let mut best: Option<(f32, Option<Format>)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut quality = 1.0f32;
        for parameter in parts {
            if let Some(value) = parameter
                .strip_prefix("q=")
                .or_else(|| parameter.strip_prefix("Q="))
            {
                quality = value.trim().parse().unwrap_or(0.0);
            }
        }
        let format = match media.as_str() {
            "application/openmetrics-text" => Some(Format::OpenMetrics),
            "text/plain" => Some(Format::Prometheus),
            "application/json" => None,
            _ => continue,
        };
        if quality > 0.0 && best.is_none_or(|(best_quality, _)| quality > best_quality) {
            best = Some((quality, format));
        }
    }
    best.and_then(|(_, format)| format)
}

/// One profile's figures at scrape time.
pub struct ProfileScrape {
    pub name: String,
    pub in_flight: u64,
    pub queued: u64,
    /// Tool turns by outcome (`held`, `continued`, `expired`, `replayed`).
    pub tool_turns: [(&'static str, u64); 4],
    /// App-server workers: `(state, restarts)` each.
    pub workers: Vec<(&'static str, u64)>,
}

/// One Codex home's figures at scrape time.
pub struct AccountScrape {
    pub codex_home: String,
    pub login: Login,
    pub windows: Vec<QuotaWindow>,
}

/// Everything a scrape shows besides the [`Recorder`]'s series.
pub struct Scrape {
    pub profiles: Vec<ProfileScrape>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub generation: u64,
    pub uptime_seconds: f64,
    /// Usage-ledger rows lost (the writer's queue was full or its file failed).
    pub usage_dropped: u64,
    pub accounts: Vec<AccountScrape>,
    /// Per-key limit refusals: `(key name, limit, count)`, limit `max_concurrency` or
    /// `requests_per_minute`.
    pub key_refusals: Vec<(String, &'static str, u64)>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabel {
    profile: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    profile: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolTurnLabels {
    profile: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLimitLabels {
    key: String,
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    codex_home: String,
    window: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    codex_home: String,
    method: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The whole exposition in `format`.
pub fn encode(recorder: &Recorder, scrape: &Scrape, format: Format) -> String {
    let registry = registry(recorder, scrape);
    let mut text = String::new();
    // Writing into a `String` cannot fail.
    let _ = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry),
    };
    text
}

fn registry(recorder: &Recorder, scrape: &Scrape) -> Registry {
    let series = recorder.series();
    let mut registry = Registry::with_prefix("codex_proxy");
    registry.register(
        "requests",
        "Requests that reached a profile's engine, by profile, API, HTTP status and key name",
        series.requests.clone(),
    );
    registry.register(
        "errors",
        "Failed requests by profile (empty before routing) and HTTP status",
        series.errors.clone(),
    );
    registry.register(
        "tokens",
        "Tokens served by profile, key name and kind (prompt, completion, cached, reasoning)",
        series.tokens.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from a request's arrival to the end of its response, per profile",
        series.request_duration.clone(),
    );
    registry.register(
        "time_to_first_token_seconds",
        "Time from a streamed request's arrival to its first token, per profile",
        series.time_to_first_token.clone(),
    );
    registry.register(
        "queue_wait_seconds",
        "Time a request waited for admission, per profile",
        series.queue_wait.clone(),
    );
    registry.register(
        "fallbacks",
        "Requests moved from one profile to the next of its fallback chain",
        series.fallbacks.clone(),
    );

    let in_flight = Family::<ProfileLabel, Gauge>::default();
    let queued = Family::<ProfileLabel, Gauge>::default();
    let workers = Family::<WorkerLabels, Gauge>::default();
    let restarts = Family::<ProfileLabel, Counter>::default();
    let tool_turns = Family::<ToolTurnLabels, Counter>::default();
    for profile in &scrape.profiles {
        let label = ProfileLabel {
            profile: profile.name.clone(),
        };
        for (outcome, count) in profile.tool_turns {
            tool_turns
                .get_or_create(&ToolTurnLabels {
                    profile: profile.name.clone(),
                    outcome: outcome.to_string(),
                })
                .inc_by(count);
        }
        in_flight
            .get_or_create(&label)
            .set(clamp(profile.in_flight));
        queued.get_or_create(&label).set(clamp(profile.queued));
        if !profile.workers.is_empty() {
            for state in ["starting", "ready", "down", "stopped"] {
                let count = profile.workers.iter().filter(|(s, _)| *s == state).count();
                workers
                    .get_or_create(&WorkerLabels {
                        profile: profile.name.clone(),
                        state: state.to_string(),
                    })
                    .set(count as i64);
            }
            let total: u64 = profile.workers.iter().map(|(_, r)| r).sum();
            restarts.get_or_create(&label).inc_by(total);
        }
    }
    registry.register("in_flight", "Requests in flight per profile", in_flight);
    registry.register(
        "tool_turns",
        "Turns that returned client tool calls, per profile and outcome (held, continued, expired, replayed)",
        tool_turns,
    );
    registry.register(
        "queued",
        "Requests waiting for admission per profile",
        queued,
    );
    registry.register(
        "workers",
        "App-server workers per profile and state",
        workers,
    );
    registry.register(
        "worker_restarts",
        "App-server worker restarts per profile (of its current pool)",
        restarts,
    );

    let reloads = Family::<ResultLabel, Counter>::default();
    reloads
        .get_or_create(&ResultLabel {
            result: "ok".to_string(),
        })
        .inc_by(scrape.reloads_ok);
    reloads
        .get_or_create(&ResultLabel {
            result: "failed".to_string(),
        })
        .inc_by(scrape.reloads_failed);
    registry.register("config_reloads", "Config reloads by result", reloads);
    let generation = Gauge::<i64>::default();
    generation.set(clamp(scrape.generation));
    registry.register(
        "config_generation",
        "The generation of the config being served (1 at start, +1 per applied reload)",
        generation,
    );
    let uptime = FloatGauge::default();
    uptime.set(scrape.uptime_seconds);
    registry.register("uptime_seconds", "Seconds since the server started", uptime);
    let usage_dropped = Counter::<u64>::default();
    usage_dropped.inc_by(scrape.usage_dropped);
    registry.register(
        "usage_dropped",
        "Usage-ledger rows lost because the ledger's writer could not keep up or its file failed",
        usage_dropped,
    );

    let refusals = Family::<KeyLimitLabels, Counter>::default();
    for (key, limit, count) in &scrape.key_refusals {
        refusals
            .get_or_create(&KeyLimitLabels {
                key: key.clone(),
                limit: limit.to_string(),
            })
            .inc_by(*count);
    }
    registry.register(
        "key_limit_refusals",
        "Requests refused by a named key's limit (max_concurrency, requests_per_minute), by key name",
        refusals,
    );

    let used = Family::<WindowLabels, FloatGauge>::default();
    let resets = Family::<WindowLabels, Gauge>::default();
    let logged_in = Family::<LoginLabels, Gauge>::default();
    for account in &scrape.accounts {
        for window in &account.windows {
            let labels = WindowLabels {
                codex_home: account.codex_home.clone(),
                window: window.id.clone(),
            };
            used.get_or_create(&labels).set(window.used_percent / 100.0);
            if let Some(at) = window.resets_at {
                resets.get_or_create(&labels).set(clamp(at));
            }
        }
        let (value, method) = match account.login {
            Login::LoggedIn(method) => (1, method.map_or("unknown", |m| m.as_str())),
            Login::NotLoggedIn => (0, "none"),
            Login::Unknown => continue,
        };
        logged_in
            .get_or_create(&LoginLabels {
                codex_home: account.codex_home.clone(),
                method: method.to_string(),
            })
            .set(value);
    }
    registry.register(
        "quota_used_ratio",
        "Used share (0 to 1) of each Codex rate-limit window, per account (CODEX_HOME)",
        used,
    );
    registry.register(
        "quota_resets_at_seconds",
        "When each Codex rate-limit window resets (unix seconds), per account",
        resets,
    );
    registry.register(
        "logged_in",
        "1 when the account (CODEX_HOME) is logged in, 0 when not, by login method",
        logged_in,
    );
    registry
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(value: &'static str) -> Option<Format> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        negotiate(&headers)
    }

    #[test]
    fn negotiates_like_prometheus_asks() {
        assert_eq!(negotiate(&HeaderMap::new()), None);
        assert_eq!(accept("*/*"), None);
        assert_eq!(accept("application/json"), None);
        assert_eq!(accept("text/plain"), Some(Format::Prometheus));
        assert_eq!(
            accept("application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"),
            Some(Format::OpenMetrics)
        );
        assert_eq!(
            accept("text/plain;version=0.0.4;q=0.3,*/*;q=0.2"),
            Some(Format::Prometheus)
        );
        assert_eq!(accept("application/json, text/plain;q=0.5"), None);
        assert_eq!(accept("text/plain;q=0"), None);
    }

    #[test]
    fn encodes_both_formats() {
        let recorder = Recorder::default();
        recorder.first_token("p", std::time::Duration::from_millis(30));
        let scrape = Scrape {
            profiles: vec![ProfileScrape {
                name: "p".into(),
                in_flight: 1,
                queued: 0,
                tool_turns: [
                    ("held", 5),
                    ("continued", 4),
                    ("expired", 1),
                    ("replayed", 0),
                ],
                workers: vec![("ready", 2)],
            }],
            reloads_ok: 3,
            reloads_failed: 1,
            generation: 4,
            uptime_seconds: 1.5,
            usage_dropped: 7,
            accounts: vec![AccountScrape {
                codex_home: "/h".into(),
                login: Login::NotLoggedIn,
                windows: vec![QuotaWindow {
                    id: "primary".into(),
                    used_percent: 42.0,
                    window_minutes: Some(300),
                    resets_at: Some(1_767_225_600),
                }],
            }],
            key_refusals: vec![("ci".into(), "requests_per_minute", 2)],
        };
        let text = encode(&recorder, &scrape, Format::Prometheus);
        assert!(
            text.contains("codex_proxy_config_reloads_total{result=\"ok\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "codex_proxy_quota_used_ratio{codex_home=\"/h\",window=\"primary\"} 0.42"
            ),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains("codex_proxy_tool_turns_total{profile=\"p\",outcome=\"held\"} 5"),
            "{text}"
        );
        assert!(text.contains("codex_proxy_usage_dropped_total 7"), "{text}");
        assert!(
            text.contains(
                "codex_proxy_key_limit_refusals_total{key=\"ci\",limit=\"requests_per_minute\"} 2"
            ),
            "{text}"
        );
        let open = encode(&recorder, &scrape, Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.contains("codex_proxy_time_to_first_token_seconds_count{profile=\"p\"} 1"),
            "{open}"
        );
    }
}
