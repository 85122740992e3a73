//! The typed bodies of `/health`, `/ready` and `/metrics`: built by `api::ops`, read back by the daemon
//! commands (`status`, `start`). One definition for both sides, so a renamed or missing field is a
//! compile error or a parse error, never a silent zero. Depends only on serde.
//!
//! [`UtcTime`] turns the unix times of these bodies into calendar dates for both sides.
//!
//! Field names and shapes are the HTTP contract (tests in `tests/it/` read them); change them only
//! together with those tests and the README.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The proxy's version, as `/health` reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `/health` for callers with ops access (others get only `status` and `pid`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<usize>,
}

/// `status` of `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

/// The body of `/ready` (HTTP 200 when `status` is `ready`, else 503).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub status: ReadyStatus,
    pub codex: CodexReport,
    pub profiles: BTreeMap<String, ProfileReadiness>,
    pub config: ConfigReport,
}

/// The Codex binary the server resolved, and its `--version` (or why it did not answer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodexReport {
    pub codex_bin: String,
    pub program: Option<String>,
    pub npm_launcher_bypassed: Option<String>,
    pub version: Option<String>,
    pub error: Option<String>,
}

/// One profile in `/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileReadiness {
    pub ready: bool,
    pub engine: String,
    pub reason: Option<String>,
}

/// The config file and its reload history (in both `/ready` and `/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    pub path: Option<String>,
    pub generation: u64,
    /// Unix seconds of the last reload attempt.
    pub last_reload_at: Option<u64>,
    pub last_error: Option<String>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub restart_required: Vec<String>,
    /// How file changes are noticed (`notify+poll`, `poll`), or `stopped: <reason>`.
    pub watch: Option<String>,
}

/// The body of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(flatten)]
    pub counters: GlobalCounters,
    pub profiles: BTreeMap<String, ProfileMetrics>,
    pub config: ConfigReport,
    /// Usage-ledger rows lost because the ledger's writer could not keep up (or its file failed).
    #[serde(default)]
    pub usage_dropped: u64,
}

/// The server-wide counters of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GlobalCounters {
    pub requests_total: u64,
    pub requests_ok: u64,
    pub requests_error: u64,
    /// HTTP status → count.
    pub errors_by_status: BTreeMap<String, u64>,
    pub uptime_seconds: f64,
}

/// A profile's request counters (they outlive reloads, unlike its pool).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileCounters {
    pub requests: u64,
    pub ok: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    pub in_flight: u64,
    pub tokens: Tokens,
    /// Turns that returned client tool calls and were held for their results.
    #[serde(default)]
    pub tool_turns_held: u64,
    /// Held turns continued by the request that brought the results.
    #[serde(default)]
    pub tool_turns_continued: u64,
    /// Held turns interrupted after `tool_call_timeout_seconds`.
    #[serde(default)]
    pub tool_turns_expired: u64,
    /// Requests with tool results that matched no held turn (continued by replay).
    #[serde(default)]
    pub tool_turns_replayed: u64,
}

/// One profile in `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileMetrics {
    #[serde(flatten)]
    pub counters: ProfileCounters,
    pub engine: String,
    pub queued: usize,
    pub running: usize,
    pub max_concurrency: usize,
    pub pool: PoolId,
    /// App-server profiles only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<WorkerReport>>,
}

/// Token counts a profile has served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

/// The identity of a profile's pool: it stays the same across reloads that keep the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolId {
    pub id: u64,
}

/// The state of an app-server worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStateName {
    Starting,
    Ready,
    Down,
    Stopped,
}

/// One app-server worker in `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub index: usize,
    pub pid: Option<u32>,
    pub state: WorkerStateName,
    pub turns_in_flight: u64,
    pub turns_served: u64,
    pub restarts: u64,
    pub threads_loaded: Option<u64>,
    /// Spare threads the worker holds now (started ahead for likely next requests).
    #[serde(default)]
    pub spare_threads: u64,
    /// Spare threads handed to requests so far.
    #[serde(default)]
    pub spare_threads_used: u64,
    /// Why the worker is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The body of `GET /v1/quota`: one entry per distinct Codex home of the config's profiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    /// Always `quota`.
    pub object: String,
    pub accounts: Vec<AccountQuota>,
}

/// One Codex home (one account) in `/v1/quota`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountQuota {
    pub codex_home: String,
    /// The profiles that run under it, in config order.
    pub profiles: Vec<String>,
    pub login: LoginReport,
    /// The rate-limit windows Codex last reported (`primary`, `secondary`); empty until a report.
    pub windows: Vec<QuotaWindowReport>,
    /// Unix seconds of the last quota report, `null` before the first.
    pub updated_at: Option<u64>,
}

/// The login state of an account. `logged_in` is `null` when it is not known: not checked yet, or
/// only profiles that need no login use the home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginReport {
    pub logged_in: Option<bool>,
    /// `chatgpt` or `api_key` when logged in and Codex said how.
    pub method: Option<String>,
}

/// One rate-limit window in `/v1/quota`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaWindowReport {
    /// `primary` (5 hours) or `secondary` (weekly).
    pub id: String,
    pub used_percent: f64,
    pub window_minutes: Option<u64>,
    /// Unix seconds.
    pub resets_at: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_status_and_worker_states_are_snake_case() {
        let text = serde_json::to_string(&ReadyStatus::NotReady).unwrap();
        assert_eq!(text, "\"not_ready\"");
        let worker: WorkerReport = serde_json::from_str(
            r#"{"index":0,"pid":null,"state":"down","turns_in_flight":0,"turns_served":2,
                "restarts":1,"threads_loaded":null,"error":"exited"}"#,
        )
        .unwrap();
        assert_eq!(worker.state, WorkerStateName::Down);
        assert_eq!(worker.error.as_deref(), Some("exited"));
    }

    #[test]
    fn a_missing_field_is_an_error_not_a_zero() {
        let parsed = serde_json::from_str::<Metrics>(r#"{"requests_total":1}"#);
        assert!(parsed.is_err());
    }
}

/// A unix time as a UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
}

impl UtcTime {
    /// The civil date of `seconds` since 1970-01-01 UTC (Howard Hinnant's days-to-civil algorithm).
    pub fn from_unix(seconds: u64) -> UtcTime {
        let days = (seconds / 86_400) as i64;
        let rest = seconds % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_index + 2) / 5 + 1;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        };
        UtcTime {
            year: year_of_era + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
        }
    }

    /// `2025-01-31`, then `separator`, then `12:00:00`.
    pub fn format(&self, separator: char) -> String {
        let UtcTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        } = self;
        format!("{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}")
    }
}
