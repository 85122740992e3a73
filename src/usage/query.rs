//! Reading the ledger: a read-only connection that works while the writer writes, summaries grouped
//! by day, profile, key or model, and the `--since` / `--by` parsers the CLI and `/v1/usage` share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use super::store::SCHEMA_VERSION;
use super::{unix_ms, UsageError};

/// How long a read waits on a lock. WAL readers only meet one while the WAL is being recovered.
const READ_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// What a summary groups rows by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    /// The UTC calendar day, `YYYY-MM-DD`.
    Day,
    Profile,
    /// The key's configured name; `-` when auth was off.
    Key,
    Model,
}

impl By {
    /// The SQL expression of the group key.
    fn expression(self) -> &'static str {
        match self {
            By::Day => "strftime('%Y-%m-%d', at_ms / 1000, 'unixepoch')",
            By::Profile => "profile",
            By::Key => "COALESCE(key_name, '-')",
            By::Model => "model",
        }
    }

    /// The word used in `--by` and as the table's first header.
    pub fn as_str(self) -> &'static str {
        match self {
            By::Day => "day",
            By::Profile => "profile",
            By::Key => "key",
            By::Model => "model",
        }
    }
}

impl FromStr for By {
    type Err = UsageError;

    fn from_str(value: &str) -> Result<By, UsageError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "day" => Ok(By::Day),
            "profile" => Ok(By::Profile),
            "key" => Ok(By::Key),
            "model" => Ok(By::Model),
            _ => Err(UsageError::By {
                value: value.to_string(),
            }),
        }
    }
}

/// One group of a summary. The same struct is the table's row and the JSON's, so a renamed field
/// breaks both printers at compile time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// The day, profile, key name or model.
    pub group: String,
    pub requests: u64,
    /// Requests answered with a 4xx/5xx status or an in-band stream error.
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub tool_calls: u64,
    pub latency_avg_ms: u64,
    /// The nearest-rank median.
    pub latency_p50_ms: u64,
    /// The nearest-rank median over requests that produced a first token.
    pub first_token_p50_ms: Option<u64>,
}

/// The body of `GET /v1/usage` and the output of `codex-api-proxy usage --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The start of the window, in seconds since the Unix epoch.
    pub since: i64,
    pub by: By,
    pub rows: Vec<SummaryRow>,
}

/// A read-only connection to the ledger.
#[derive(Debug)]
pub struct Reader {
    connection: Connection,
    path: PathBuf,
}

impl Reader {
    /// Opens an existing ledger read-only. A missing file, or one of another schema version, is an
    /// error that says what to do.
    pub fn open(path: &Path) -> Result<Reader, UsageError> {
        if !path.is_file() {
            return Err(UsageError::Missing {
                path: path.to_path_buf(),
            });
        }
        let sqlite = |source| UsageError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        connection.busy_timeout(READ_BUSY_TIMEOUT).map_err(sqlite)?;
        let found: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite)?;
        if found > SCHEMA_VERSION {
            return Err(UsageError::NewerSchema {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(UsageError::OlderSchema {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(Reader {
            connection,
            path: path.to_path_buf(),
        })
    }

    /// Rows that arrived at or after `since`, grouped by `by`: days in calendar order, every other
    /// grouping busiest first.
    pub fn summary(&self, since: SystemTime, by: By) -> Result<Vec<SummaryRow>, UsageError> {
        let groups = self
            .accumulate(since, by)
            .map_err(|source| UsageError::Sqlite {
                path: self.path.clone(),
                source,
            })?;
        let mut rows: Vec<SummaryRow> = groups
            .into_iter()
            .map(|(group, totals)| totals.finish(group))
            .collect();
        if by != By::Day {
            rows.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.group.cmp(&b.group)));
        }
        Ok(rows)
    }

    /// [`Reader::summary`] wrapped with its window and grouping, ready to serialize.
    pub fn report(&self, since: SystemTime, by: By) -> Result<UsageReport, UsageError> {
        Ok(UsageReport {
            since: unix_ms(since) / 1000,
            by,
            rows: self.summary(since, by)?,
        })
    }

    fn accumulate(&self, since: SystemTime, by: By) -> rusqlite::Result<BTreeMap<String, Totals>> {
        let sql = format!(
            "SELECT {}, status, error_code IS NOT NULL, prompt_tokens, completion_tokens,
                cached_tokens, reasoning_tokens, tool_calls, latency_ms, first_token_ms
             FROM requests WHERE at_ms >= ?1",
            by.expression()
        );
        let mut statement = self.connection.prepare(&sql)?;
        let mut rows = statement.query(params![unix_ms(since)])?;
        let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
        while let Some(row) = rows.next()? {
            let group: String = row.get(0)?;
            let status: i64 = row.get(1)?;
            let in_band_error: bool = row.get(2)?;
            let totals = groups.entry(group).or_default();
            totals.requests += 1;
            totals.errors += u64::from(status >= 400 || in_band_error);
            totals.prompt_tokens += count(row.get(3)?);
            totals.completion_tokens += count(row.get(4)?);
            totals.cached_tokens += count(row.get(5)?);
            totals.reasoning_tokens += count(row.get(6)?);
            totals.tool_calls += count(row.get(7)?);
            totals.latencies_ms.push(count(row.get(8)?));
            if let Some(first_token) = row.get::<_, Option<i64>>(9)? {
                totals.first_tokens_ms.push(count(first_token));
            }
        }
        Ok(groups)
    }
}

/// Opens `path` read-only and summarizes it: the one call the CLI and `/v1/usage` need.
pub fn summary(path: &Path, since: SystemTime, by: By) -> Result<Vec<SummaryRow>, UsageError> {
    Reader::open(path)?.summary(since, by)
}

/// Parses a window like `30m`, `24h`, `7d` or `2w` into its length.
pub fn parse_since(value: &str) -> Result<Duration, UsageError> {
    let invalid = || UsageError::Since {
        value: value.to_string(),
    };
    let trimmed = value.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_seconds = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(unit_seconds)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

/// Sums of one group while rows stream in.
#[derive(Debug, Default)]
struct Totals {
    requests: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    reasoning_tokens: u64,
    tool_calls: u64,
    latencies_ms: Vec<u64>,
    first_tokens_ms: Vec<u64>,
}

impl Totals {
    fn finish(mut self, group: String) -> SummaryRow {
        let latency_sum: u64 = self.latencies_ms.iter().sum();
        SummaryRow {
            group,
            requests: self.requests,
            errors: self.errors,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
            reasoning_tokens: self.reasoning_tokens,
            tool_calls: self.tool_calls,
            latency_avg_ms: latency_sum / self.requests.max(1),
            latency_p50_ms: median(&mut self.latencies_ms).unwrap_or(0),
            first_token_p50_ms: median(&mut self.first_tokens_ms),
        }
    }
}

/// The nearest-rank median: the smallest value with at least half of the values at or below it.
pub(super) fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[values.len().div_ceil(2) - 1])
}

/// A stored count, read back as unsigned; the writer never stores negatives.
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
