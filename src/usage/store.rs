//! The ledger file: creating it with private permissions, versioned migrations, batched inserts and
//! pruning by age. Everything here blocks; [`crate::usage::Writer`] runs it on its own thread.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};

use super::{duration_ms, unix_ms, Record, UsageError};

/// How long a write waits for another connection's lock before failing. Small on purpose: a failed
/// batch is counted as dropped, and the writer's queue must keep moving.
pub(super) const WRITE_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// The schema, one step per version: step `i` takes `user_version` from `i` to `i + 1`. Steps are
/// only ever appended; a released step is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the requests table.
    "CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        api TEXT NOT NULL,
        profile TEXT NOT NULL,
        fallback_from TEXT NOT NULL DEFAULT '[]',
        key_name TEXT,
        model TEXT NOT NULL,
        engine TEXT NOT NULL,
        stream INTEGER NOT NULL,
        status INTEGER NOT NULL,
        error_code TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        latency_ms INTEGER NOT NULL,
        first_token_ms INTEGER,
        tool_calls INTEGER NOT NULL DEFAULT 0
    );",
    // 2: summaries and pruning both select by time.
    "CREATE INDEX requests_at_ms ON requests (at_ms);",
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// An open, migrated ledger file, not yet handed to a writer thread.
#[derive(Debug)]
pub struct Ledger {
    /// Owned by whoever writes; moves into the writer thread with the `Ledger`.
    pub(super) connection: Connection,
    /// Kept for error messages.
    pub(super) path: PathBuf,
    /// Rows older than this many days are deleted; 0 keeps everything.
    pub(super) retention_days: u32,
}

impl Ledger {
    /// Opens (creating when absent) the ledger at `path`: the parent directory is created 0700, the
    /// file 0600; the journal is WAL; the schema is migrated to [`SCHEMA_VERSION`].
    pub fn open(path: &Path, retention_days: u32) -> Result<Ledger, UsageError> {
        prepare_file(path)?;
        let sqlite = |source| UsageError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut connection = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        connection
            .busy_timeout(WRITE_BUSY_TIMEOUT)
            .map_err(sqlite)?;
        // WAL lets readers (the CLI, `/v1/usage`) run while the writer writes.
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sqlite)?;
        tracing::debug!(path = %path.display(), journal_mode = %mode, "usage ledger opened");
        // NORMAL is durable across process crashes in WAL mode; only a power loss can lose the last
        // commits, which a usage ledger can afford.
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        migrate(&mut connection, path)?;
        Ok(Ledger {
            connection,
            path: path.to_path_buf(),
            retention_days,
        })
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, UsageError> {
        user_version(&self.connection).map_err(|source| self.error(source))
    }

    /// Inserts `records` in one transaction: all of them or none.
    pub fn insert(&mut self, records: &[Record]) -> Result<(), UsageError> {
        insert_batch(&mut self.connection, records).map_err(|source| UsageError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Deletes rows older than the retention, measured back from `now`; returns how many went.
    pub fn prune(&self, now: SystemTime) -> Result<usize, UsageError> {
        if self.retention_days == 0 {
            return Ok(0);
        }
        let retention = Duration::from_secs(u64::from(self.retention_days) * 86_400);
        let cutoff = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        self.connection
            .execute(
                "DELETE FROM requests WHERE at_ms < ?1",
                params![unix_ms(cutoff)],
            )
            .map_err(|source| self.error(source))
    }

    fn error(&self, source: rusqlite::Error) -> UsageError {
        UsageError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

/// Creates the parent directory (0700) and the file (0600) before SQLite sees the path, so the file
/// is never readable by others, not even for a moment. SQLite gives its `-wal` and `-shm` files the
/// main file's permissions.
fn prepare_file(path: &Path) -> Result<(), UsageError> {
    let prepare = |source| UsageError::Prepare {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(prepare)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(prepare)?;
    // A file made by an older build or by hand may be wider; the ledger names keys and models.
    file.set_permissions(Permissions::from_mode(0o600))
        .map_err(prepare)
}

fn user_version(connection: &Connection) -> rusqlite::Result<i64> {
    connection.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Applies the missing steps of [`MIGRATIONS`] in one immediate transaction, so two processes opening
/// the same new file at once migrate it once.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), UsageError> {
    let sqlite = |source| UsageError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let found = user_version(&transaction).map_err(sqlite)?;
    if found > SCHEMA_VERSION {
        return Err(UsageError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    let applied = usize::try_from(found).unwrap_or(0);
    for (index, step) in MIGRATIONS.iter().enumerate().skip(applied) {
        transaction.execute_batch(step).map_err(sqlite)?;
        tracing::info!(path = %path.display(), version = index + 1, "usage ledger migrated");
    }
    transaction
        .pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    transaction.commit().map_err(sqlite)
}

/// Applies the first `version` migration steps to a fresh connection: how tests build an old file.
#[cfg(test)]
pub(super) fn migrate_to(connection: &Connection, version: usize) -> rusqlite::Result<()> {
    for step in &MIGRATIONS[..version] {
        connection.execute_batch(step)?;
    }
    connection.pragma_update(None, "user_version", version as i64)
}

fn insert_batch(connection: &mut Connection, records: &[Record]) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut statement = transaction.prepare(
            "INSERT INTO requests (at_ms, request_id, api, profile, fallback_from, key_name, model,
                engine, stream, status, error_code, prompt_tokens, completion_tokens, cached_tokens,
                reasoning_tokens, latency_ms, first_token_ms, tool_calls)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        for record in records {
            let fallback_from =
                serde_json::to_string(&record.fallback_from).unwrap_or_else(|_| "[]".into());
            statement.execute(params![
                unix_ms(record.at),
                record.request_id,
                record.api.as_str(),
                record.profile,
                fallback_from,
                record.key_name,
                record.model,
                record.engine,
                record.stream,
                record.status,
                record.error_code,
                saturating_i64(record.prompt_tokens),
                saturating_i64(record.completion_tokens),
                saturating_i64(record.cached_tokens),
                saturating_i64(record.reasoning_tokens),
                duration_ms(record.latency),
                record.first_token.map(duration_ms),
                record.tool_calls,
            ])?;
        }
    }
    transaction.commit()
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
