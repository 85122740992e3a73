//! The server's one handle on usage: the ledger's writer (when `[server] usage_db` is set and the file
//! opened) and the in-memory [`Activity`] the dashboard reads. Entry points: [`Recorder::start`] at
//! server start, [`Recorder::record`] once per finished request, [`Recorder::close`] at shutdown.
//!
//! Starting never fails the server: a ledger that cannot be opened is logged, reported by
//! [`Recorder::status`], and the proxy serves without it. Recording never waits (see [`Writer`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::activity::Activity;
use super::{By, Ledger, Reader, Record, SummaryRow, UsageError, Writer, WriterStats};

/// Rows the writer's queue holds before new rows are dropped: minutes of traffic at hundreds of
/// requests per second, a few MB at most.
pub const QUEUE_ROWS: usize = 16_384;

/// How long the dashboard's ledger summary is reused before the file is read again.
const SUMMARY_CACHE: Duration = Duration::from_secs(5);

/// The ledger's state for `/ui/data` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerStatus {
    /// Whether rows are being written.
    pub enabled: bool,
    /// The file, when configured.
    pub path: Option<String>,
    /// Why the configured file is not written, when it is not.
    pub error: Option<String>,
    pub written: u64,
    /// Rows lost to a full queue, a locked or full disk, or a failed write.
    pub dropped: u64,
}

/// Token and request totals from the ledger, grouped three ways, for the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSummary {
    /// The start of the window, in seconds since the Unix epoch.
    pub since: i64,
    pub by_profile: Vec<SummaryRow>,
    pub by_key: Vec<SummaryRow>,
    pub by_day: Vec<SummaryRow>,
}

/// See the module documentation. Lives in the server's state for the whole process.
#[derive(Debug, Default)]
pub struct Recorder {
    /// `None` when the ledger is off or closed. A read lock per request (never contended by another
    /// reader); the write lock is taken once, by [`Recorder::close`].
    writer: RwLock<Option<Writer>>,
    /// The configured file, kept for readers (`/v1/usage`, the dashboard).
    path: Option<PathBuf>,
    /// Why the configured file could not be opened.
    error: Option<String>,
    /// The live table and charts.
    activity: Activity,
    /// The last dashboard summary and when it was read, so a page polling every second reads the
    /// file at most every [`SUMMARY_CACHE`].
    summary_cache: Mutex<Option<(Instant, i64, LedgerSummary)>>,
}

impl Recorder {
    /// Opens the ledger at `path` (none: ledger off) and starts its writer thread. Blocks for the
    /// open and the migration; call it once at start, not on a runtime worker under load.
    pub fn start(path: Option<&Path>, retention_days: u32) -> Recorder {
        let Some(path) = path else {
            return Recorder::default();
        };
        let opened = Ledger::open(path, retention_days).and_then(|ledger| {
            ledger
                .spawn_writer(QUEUE_ROWS)
                .map_err(|source| UsageError::Prepare {
                    path: path.to_path_buf(),
                    source,
                })
        });
        match opened {
            Ok(writer) => {
                tracing::info!(path = %path.display(), retention_days, "usage ledger on");
                Recorder {
                    writer: RwLock::new(Some(writer)),
                    path: Some(path.to_path_buf()),
                    ..Recorder::default()
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "usage ledger off: serving without it");
                Recorder {
                    path: Some(path.to_path_buf()),
                    error: Some(error.to_string()),
                    ..Recorder::default()
                }
            }
        }
    }

    /// Adds one finished request to the live figures and queues its ledger row. Never waits.
    pub fn record(&self, record: Record) {
        self.activity.record(&record);
        if let Some(writer) = self.writer.read().as_ref() {
            writer.record(record);
        }
    }

    /// The live table and charts.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Rows lost so far; the figure `/metrics` shows as `usage_dropped`.
    pub fn dropped(&self) -> u64 {
        self.writer.read().as_ref().map_or(0, Writer::dropped)
    }

    /// The file readers open, when the ledger is on.
    pub fn readable_path(&self) -> Option<&Path> {
        self.error
            .is_none()
            .then_some(self.path.as_deref())
            .flatten()
    }

    pub fn status(&self) -> LedgerStatus {
        let writer = self.writer.read();
        LedgerStatus {
            enabled: writer.is_some(),
            path: self.path.as_ref().map(|path| path.display().to_string()),
            error: self.error.clone(),
            written: writer.as_ref().map_or(0, Writer::written),
            dropped: writer.as_ref().map_or(0, Writer::dropped),
        }
    }

    /// Totals by profile, key and day since `since`, read from the file at most every few seconds.
    /// Blocks on SQLite: call it from `spawn_blocking`. `None` when the ledger is off.
    pub fn summary(&self, since: SystemTime) -> Option<Result<LedgerSummary, UsageError>> {
        let path = self.readable_path()?;
        let since_s = super::unix_ms(since) / 1000;
        if let Some((at, cached_since, summary)) = self.summary_cache.lock().as_ref() {
            if at.elapsed() < SUMMARY_CACHE && *cached_since == since_s / 60 {
                return Some(Ok(summary.clone()));
            }
        }
        let read = || -> Result<LedgerSummary, UsageError> {
            let reader = Reader::open(path)?;
            Ok(LedgerSummary {
                since: since_s,
                by_profile: reader.summary(since, By::Profile)?,
                by_key: reader.summary(since, By::Key)?,
                by_day: reader.summary(since, By::Day)?,
            })
        };
        let result = read();
        if let Ok(summary) = &result {
            *self.summary_cache.lock() = Some((Instant::now(), since_s / 60, summary.clone()));
        }
        Some(result)
    }

    /// Stops the writer after flushing what is queued (bounded); returns its final counts.
    pub fn close(&self) -> Option<WriterStats> {
        let writer = self.writer.write().take()?;
        Some(writer.close())
    }
}
