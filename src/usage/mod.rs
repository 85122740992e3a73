//! The usage ledger: one SQLite row per answered request, written off the request path, and the
//! summaries that `codex-api-proxy usage` and `GET /v1/usage` print.
//!
//! Entry points:
//! - [`Ledger::open`] creates or migrates the database file (parent directory 0700, file 0600, WAL).
//! - [`Ledger::spawn_writer`] moves the connection onto a dedicated thread and returns a [`Writer`];
//!   [`Writer::record`] never waits: a full queue or a failed write is counted in [`Writer::dropped`].
//! - [`Recorder`] is what the server holds: the writer (when on) plus the in-memory [`Activity`]
//!   (recent requests, per-minute series) the dashboard polls.
//! - [`Reader::open`] opens the file read-only; [`Reader::summary`] groups rows by [`By`];
//!   [`render_table`] and [`UsageReport`] (serde) are the text and JSON forms of the same rows.
//!
//! A row holds counts, names and timings only. It never holds message content or key secrets: the
//! `key_name` column is the configured name of the key, not the key.
//!
//! This module does not read the config, parse command-line flags or serve HTTP; callers pass a path, a
//! retention and a `since` instant.

mod activity;
mod query;
mod recorder;
mod store;
mod table;
mod writer;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use activity::{Activity, ActivityView, MinutePoint, RecentRequest};
pub use query::{parse_since, summary, By, Reader, SummaryRow, UsageReport};
pub use recorder::{LedgerStatus, LedgerSummary, Recorder, QUEUE_ROWS};
pub use store::{Ledger, SCHEMA_VERSION};
pub use table::render_table;
pub use writer::{Writer, WriterOptions, WriterStats};

/// Which client API a request came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses`.
    Responses,
    /// `POST /v1/messages` (Anthropic's shape).
    Messages,
}

impl Api {
    /// The text stored in the `api` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Responses => "responses",
            Api::Messages => "messages",
        }
    }
}

/// One request as the ledger stores it. Counts, names and timings only.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the request arrived.
    pub at: SystemTime,
    /// The `x-request-id` the proxy answered with.
    pub request_id: String,
    pub api: Api,
    /// The profile that produced the answer (or the last one tried, when all failed).
    pub profile: String,
    /// Profiles tried before `profile`, in order; empty when the first choice answered.
    pub fallback_from: Vec<String>,
    /// The configured name of the client key, never the key itself; `None` when auth is off.
    pub key_name: Option<String>,
    /// The model the client asked for.
    pub model: String,
    /// `exec` or `app-server`.
    pub engine: String,
    pub stream: bool,
    /// The HTTP status sent; a stream that failed after its headers keeps 200 and sets `error_code`.
    pub status: u16,
    /// The OpenAI error `code` (or `type` when the code is null) of a failed request.
    pub error_code: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    /// From arrival to the last byte of the answer.
    pub latency: Duration,
    /// From arrival to the first content delta; `None` when nothing was produced.
    pub first_token: Option<Duration>,
    /// How many tool calls the answer carried.
    pub tool_calls: u32,
}

/// Everything that can go wrong opening, writing or reading the ledger.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The parent directory or the file could not be created or restricted.
    #[error("cannot prepare the usage ledger at {path}: {source}; check that the directory is writable, or set [server] usage_db = \"\" to turn the ledger off")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite refused to open, migrate, write or read the file.
    #[error("usage ledger {path}: {source}; if the file is damaged, move it away and restart to start a new one")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The file was written by a newer version of the proxy.
    #[error("usage ledger {path} has schema version {found}, newer than the {known} this build knows; upgrade codex-api-proxy or point [server] usage_db at another file")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A reader met a file that the server has not migrated yet; readers never write.
    #[error("usage ledger {path} has schema version {found}, older than the {known} this build reads; start the server once with this build to migrate it")]
    OlderSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A reader was pointed at a file that does not exist.
    #[error("no usage ledger at {path}; it is created when the server starts with [server] usage_db set")]
    Missing { path: PathBuf },
    /// `--since` was not a number followed by a unit.
    #[error("invalid --since {value:?}: expected a whole number followed by m, h, d or w, like 30m, 24h or 7d")]
    Since { value: String },
    /// `--by` named no known grouping.
    #[error("invalid --by {value:?}: expected one of day, profile, key, model")]
    By { value: String },
}

/// Milliseconds since the Unix epoch, clamped to zero for instants before it.
fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
