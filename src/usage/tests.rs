//! Tests of the usage ledger against real SQLite files in temporary directories: creation and
//! permissions, migrations, the writer's batching, drops and shutdown, pruning, and the summaries.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;

use super::store::migrate_to;
use super::*;

/// A ledger path two directories below a fresh temporary directory, so `open` must create both.
fn ledger_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state").join("proxy").join("usage.sqlite3")
}

fn at(unix_seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(unix_seconds)
}

fn sample(index: usize) -> Record {
    Record {
        at: SystemTime::now(),
        request_id: format!("req-{index}"),
        api: Api::Chat,
        profile: "default".into(),
        fallback_from: Vec::new(),
        key_name: Some("laptop".into()),
        model: "gpt-5".into(),
        engine: "exec".into(),
        stream: index % 2 == 0,
        status: 200,
        error_code: None,
        prompt_tokens: 10,
        completion_tokens: 20,
        cached_tokens: 0,
        reasoning_tokens: 0,
        latency: Duration::from_millis(100),
        first_token: Some(Duration::from_millis(10)),
        tool_calls: 0,
    }
}

fn row_count(path: &Path) -> i64 {
    let connection = Connection::open(path).unwrap();
    connection
        .query_row("SELECT count(*) FROM requests", [], |row| row.get(0))
        .unwrap()
}

/// Polls `condition` until it holds. The deadline only turns a hang into a failure; no test asserts
/// how fast anything is.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn quick_options(capacity: usize) -> WriterOptions {
    WriterOptions {
        flush_interval: Duration::from_millis(10),
        shutdown_grace: Duration::from_secs(30),
        ..WriterOptions::with_capacity(capacity)
    }
}

#[test]
fn open_creates_a_private_directory_and_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let ledger = Ledger::open(&path, 90).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), SCHEMA_VERSION);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(dir.path().join("state").as_path()), 0o700);
    assert_eq!(mode(&path), 0o600);
    let journal: String = ledger
        .connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "wal");

    // The WAL file inherits the main file's permissions once rows are written.
    let writer = ledger.spawn_writer(8).unwrap();
    writer.record(sample(0));
    wait_until("the row is written", || writer.written() == 1);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert_eq!(mode(&wal), 0o600);
}

#[test]
fn open_tightens_a_file_that_is_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.sqlite3");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Ledger::open(&path, 90).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn opening_an_old_version_migrates_it_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.sqlite3");
    {
        let connection = Connection::open(&path).unwrap();
        migrate_to(&connection, 1).unwrap();
        connection
            .execute(
                "INSERT INTO requests (at_ms, request_id, api, profile, model, engine, stream,
                    status, latency_ms) VALUES (1, 'old', 'chat', 'p', 'm', 'exec', 0, 200, 5)",
                [],
            )
            .unwrap();
    }
    // A reader does not migrate: it asks for the server to do it.
    let error = Reader::open(&path).unwrap_err();
    assert!(
        matches!(error, UsageError::OlderSchema { found: 1, .. }),
        "{error}"
    );

    let ledger = Ledger::open(&path, 0).unwrap();
    assert_eq!(ledger.schema_version().unwrap(), SCHEMA_VERSION);
    let index: i64 = ledger
        .connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'requests_at_ms'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(index, 1);
    let request_id: String = ledger
        .connection
        .query_row("SELECT request_id FROM requests", [], |row| row.get(0))
        .unwrap();
    assert_eq!(request_id, "old");
    drop(ledger);
    // Opening an up-to-date file again applies nothing.
    assert_eq!(
        Ledger::open(&path, 0).unwrap().schema_version().unwrap(),
        SCHEMA_VERSION
    );
}

#[test]
fn a_file_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.sqlite3");
    {
        let connection = Connection::open(&path).unwrap();
        connection
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let error = Ledger::open(&path, 90).unwrap_err();
    assert!(matches!(error, UsageError::NewerSchema { .. }), "{error}");
    assert!(error.to_string().contains("upgrade codex-api-proxy"));
    let error = Reader::open(&path).unwrap_err();
    assert!(matches!(error, UsageError::NewerSchema { .. }), "{error}");
}

#[test]
fn a_missing_file_is_a_reader_error_that_says_how_it_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sqlite3");
    let error = Reader::open(&path).unwrap_err();
    assert!(error.to_string().contains("usage_db"), "{error}");
    assert!(!path.exists(), "a reader must not create the file");
}

#[test]
fn every_field_is_stored_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = Ledger::open(&path, 90).unwrap();
    let record = Record {
        at: at(1_704_196_800),
        api: Api::Messages,
        fallback_from: vec!["primary".into(), "second, with comma".into()],
        key_name: None,
        stream: true,
        status: 502,
        error_code: Some("upstream_failed".into()),
        cached_tokens: 7,
        reasoning_tokens: 9,
        first_token: None,
        tool_calls: 3,
        ..sample(1)
    };
    ledger.insert(std::slice::from_ref(&record)).unwrap();
    let stored = ledger
        .connection
        .query_row(
            "SELECT at_ms, request_id, api, profile, fallback_from, key_name, model, engine, stream,
                status, error_code, prompt_tokens, completion_tokens, cached_tokens,
                reasoning_tokens, latency_ms, first_token_ms, tool_calls FROM requests",
            [],
            |row| {
                Ok(format!(
                    "{:?}",
                    (0..18)
                        .map(|i| row.get::<_, rusqlite::types::Value>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()?
                ))
            },
        )
        .unwrap();
    let expected = concat!(
        r#"[Integer(1704196800000), Text("req-1"), Text("messages"), Text("default"), "#,
        r#"Text("[\"primary\",\"second, with comma\"]"), Null, Text("gpt-5"), Text("exec"), "#,
        r#"Integer(1), Integer(502), Text("upstream_failed"), Integer(10), Integer(20), "#,
        r#"Integer(7), Integer(9), Integer(100), Null, Integer(3)]"#
    );
    assert_eq!(stored, expected);
}

#[test]
fn rows_survive_a_restart_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let writer = Ledger::open(&path, 90).unwrap().spawn_writer(64).unwrap();
    for index in 0..10 {
        writer.record(sample(index));
    }
    // Dropping flushes what is queued without waiting for the batch timer.
    let stats = writer.close();
    assert_eq!(
        stats,
        WriterStats {
            written: 10,
            dropped: 0
        }
    );
    assert_eq!(row_count(&path), 10);

    let writer = Ledger::open(&path, 90).unwrap().spawn_writer(64).unwrap();
    writer.record(sample(10));
    drop(writer);
    assert_eq!(row_count(&path), 11);
}

#[test]
fn dropping_the_writer_flushes_a_batch_that_is_still_waiting_for_its_timer() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let options = WriterOptions {
        flush_interval: Duration::from_secs(3600),
        batch_rows: 10_000,
        shutdown_grace: Duration::from_secs(30),
        ..WriterOptions::with_capacity(1000)
    };
    let writer = Ledger::open(&path, 90)
        .unwrap()
        .spawn_writer_with(options)
        .unwrap();
    for index in 0..500 {
        writer.record(sample(index));
    }
    assert_eq!(
        writer.close(),
        WriterStats {
            written: 500,
            dropped: 0
        }
    );
    assert_eq!(row_count(&path), 500);
}

/// Another process holding the write lock: SQLite's `BEGIN IMMEDIATE` on a second connection.
fn hold_write_lock(path: &Path) -> Connection {
    let holder = Connection::open(path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    holder
}

#[test]
fn a_locked_database_drops_rows_instead_of_blocking_and_recovers_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let ledger = Ledger::open(&path, 90).unwrap();
    let holder = hold_write_lock(&path);
    let writer = ledger.spawn_writer_with(quick_options(64)).unwrap();
    for index in 0..5 {
        writer.record(sample(index));
    }
    wait_until("the locked batches are dropped", || writer.dropped() == 5);
    assert_eq!(writer.written(), 0);

    holder.execute_batch("ROLLBACK").unwrap();
    for index in 5..10 {
        writer.record(sample(index));
    }
    wait_until("writing resumes", || writer.written() == 5);
    assert_eq!(
        writer.close(),
        WriterStats {
            written: 5,
            dropped: 5
        }
    );
    assert_eq!(row_count(&path), 5);
}

#[test]
fn a_full_queue_drops_new_rows_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let ledger = Ledger::open(&path, 90).unwrap();
    let holder = hold_write_lock(&path);
    // One row per batch, each failing only after the busy timeout: the queue of two fills at once.
    let options = WriterOptions {
        batch_rows: 1,
        ..quick_options(2)
    };
    let writer = ledger.spawn_writer_with(options).unwrap();
    let mut sent = 0_u64;
    while writer.dropped() == 0 {
        writer.record(sample(sent as usize));
        sent += 1;
        assert!(sent < 1_000_000, "the queue never filled");
    }
    holder.execute_batch("ROLLBACK").unwrap();
    let stats = writer.close();
    assert!(stats.dropped >= 1);
    // Every row is accounted for: written or counted as dropped.
    assert_eq!(stats.written + stats.dropped, sent);
    assert_eq!(row_count(&path), stats.written as i64);
}

#[test]
fn closing_while_the_database_stays_locked_finishes_and_counts_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let ledger = Ledger::open(&path, 90).unwrap();
    let _holder = hold_write_lock(&path);
    let writer = ledger.spawn_writer_with(quick_options(16)).unwrap();
    for index in 0..16 {
        writer.record(sample(index));
    }
    let stats = writer.close();
    assert_eq!(stats.written, 0);
    assert_eq!(stats.dropped, 16);
}

#[test]
fn the_writer_prunes_rows_past_retention_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = Ledger::open(&path, 30).unwrap();
    let old = Record {
        at: SystemTime::now() - Duration::from_secs(31 * 86_400),
        ..sample(0)
    };
    let recent = Record {
        at: SystemTime::now() - Duration::from_secs(29 * 86_400),
        ..sample(1)
    };
    ledger.insert(&[old, recent]).unwrap();
    let writer = ledger.spawn_writer(8).unwrap();
    writer.record(sample(2));
    drop(writer);
    let connection = Connection::open(&path).unwrap();
    let mut statement = connection
        .prepare("SELECT request_id FROM requests ORDER BY request_id")
        .unwrap();
    let ids: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(ids, ["req-1", "req-2"]);
}

#[test]
fn a_retention_of_zero_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let mut ledger = Ledger::open(&path, 0).unwrap();
    ledger
        .insert(&[Record {
            at: at(1),
            ..sample(0)
        }])
        .unwrap();
    assert_eq!(ledger.prune(SystemTime::now()).unwrap(), 0);
    assert_eq!(row_count(&path), 1);
}

#[test]
fn ten_thousand_rows_go_through_the_batcher_without_drops() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let writer = Ledger::open(&path, 90).unwrap().spawn_writer(1024).unwrap();
    let started = Instant::now();
    // Chunks of half the queue, each sent once the previous one is written: try_send never meets a
    // full queue, so any drop is a writer failure.
    for chunk in 0..20_u64 {
        for index in 0..500 {
            writer.record(sample((chunk * 500 + index) as usize));
        }
        wait_until("the chunk is written", || {
            writer.written() == (chunk + 1) * 500
        });
    }
    eprintln!("10000 rows written in {:?}", started.elapsed());
    assert_eq!(
        writer.close(),
        WriterStats {
            written: 10_000,
            dropped: 0
        }
    );
    assert_eq!(row_count(&path), 10_000);
}

#[test]
fn readers_work_while_the_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let writer = Ledger::open(&path, 90)
        .unwrap()
        .spawn_writer_with(quick_options(4096))
        .unwrap();
    writer.record(sample(0));
    wait_until("the first row is written", || writer.written() == 1);
    let since = SystemTime::now() - Duration::from_secs(3600);
    let reader_path = path.clone();
    let reading = std::thread::spawn(move || {
        let reader = Reader::open(&reader_path).unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "the reader never saw every row: {:?}",
                seen.last()
            );
            let rows = reader.summary(since, By::Profile).unwrap();
            let requests = rows.first().map_or(0, |row| row.requests);
            seen.push(requests);
            if requests == 2000 {
                return seen;
            }
        }
    });
    for index in 1..2000 {
        writer.record(sample(index));
        if index % 200 == 0 {
            wait_until("the writer keeps up", || {
                writer.written() == index as u64 + 1
            });
        }
    }
    let seen = reading.join().unwrap();
    assert!(
        seen.windows(2).all(|pair| pair[0] <= pair[1]),
        "counts went backwards"
    );
    assert_eq!(writer.close().dropped, 0);
    // A reader also opens the file after the writer has closed it.
    assert_eq!(summary(&path, since, By::Model).unwrap()[0].requests, 2000);
}

/// Three requests on 2024-01-02/03 (UTC) and one before the window.
fn summary_fixture(dir: &tempfile::TempDir) -> PathBuf {
    let path = ledger_path(dir);
    let mut ledger = Ledger::open(&path, 0).unwrap();
    let first = Record {
        at: at(1_704_196_800), // 2024-01-02 12:00
        profile: "a".into(),
        key_name: Some("k1".into()),
        model: "m1".into(),
        prompt_tokens: 10,
        completion_tokens: 20,
        cached_tokens: 5,
        reasoning_tokens: 3,
        tool_calls: 1,
        latency: Duration::from_millis(100),
        first_token: Some(Duration::from_millis(10)),
        ..sample(1)
    };
    let failed = Record {
        at: at(1_704_200_400), // 2024-01-02 13:00
        profile: "a".into(),
        key_name: None,
        model: "m2".into(),
        status: 500,
        error_code: Some("engine_failed".into()),
        prompt_tokens: 0,
        completion_tokens: 0,
        latency: Duration::from_millis(300),
        first_token: None,
        ..sample(2)
    };
    let in_band_error = Record {
        at: at(1_704_243_600), // 2024-01-03 01:00
        profile: "b".into(),
        key_name: Some("k1".into()),
        model: "m1".into(),
        error_code: Some("stream_error".into()),
        prompt_tokens: 1,
        completion_tokens: 2,
        latency: Duration::from_millis(200),
        first_token: Some(Duration::from_millis(30)),
        ..sample(3)
    };
    let before = Record {
        at: at(1_704_000_000), // 2023-12-31
        ..sample(4)
    };
    ledger
        .insert(&[first, failed, in_band_error, before])
        .unwrap();
    path
}

const WINDOW_START: u64 = 1_704_067_200; // 2024-01-01 00:00 UTC

#[test]
fn summary_by_day_counts_errors_tokens_and_latencies() {
    let dir = tempfile::tempdir().unwrap();
    let path = summary_fixture(&dir);
    let rows = summary(&path, at(WINDOW_START), By::Day).unwrap();
    let expected = vec![
        SummaryRow {
            group: "2024-01-02".into(),
            requests: 2,
            errors: 1,
            prompt_tokens: 10,
            completion_tokens: 20,
            cached_tokens: 5,
            reasoning_tokens: 3,
            tool_calls: 1,
            latency_avg_ms: 200,
            latency_p50_ms: 100,
            first_token_p50_ms: Some(10),
        },
        SummaryRow {
            group: "2024-01-03".into(),
            requests: 1,
            errors: 1,
            prompt_tokens: 1,
            completion_tokens: 2,
            cached_tokens: 0,
            reasoning_tokens: 0,
            tool_calls: 0,
            latency_avg_ms: 200,
            latency_p50_ms: 200,
            first_token_p50_ms: Some(30),
        },
    ];
    assert_eq!(rows, expected);
}

#[test]
fn summary_groups_by_profile_key_and_model_busiest_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = summary_fixture(&dir);
    let reader = Reader::open(&path).unwrap();
    let groups = |by| -> Vec<(String, u64)> {
        reader
            .summary(at(WINDOW_START), by)
            .unwrap()
            .into_iter()
            .map(|row| (row.group, row.requests))
            .collect()
    };
    let pairs = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
        list.iter().map(|(g, n)| (g.to_string(), *n)).collect()
    };
    assert_eq!(groups(By::Profile), pairs(&[("a", 2), ("b", 1)]));
    assert_eq!(groups(By::Key), pairs(&[("k1", 2), ("-", 1)]));
    assert_eq!(groups(By::Model), pairs(&[("m1", 2), ("m2", 1)]));
    // The window includes the row before 2024 only when it starts earlier.
    let all: u64 = reader
        .summary(at(0), By::Day)
        .unwrap()
        .iter()
        .map(|row| row.requests)
        .sum();
    assert_eq!(all, 4);
    assert!(reader
        .summary(SystemTime::now(), By::Day)
        .unwrap()
        .is_empty());
}

#[test]
fn the_report_serializes_with_its_window_and_grouping() {
    let dir = tempfile::tempdir().unwrap();
    let path = summary_fixture(&dir);
    let report = Reader::open(&path)
        .unwrap()
        .report(at(WINDOW_START), By::Profile)
        .unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["since"], WINDOW_START);
    assert_eq!(json["by"], "profile");
    assert_eq!(json["rows"][0]["group"], "a");
    assert_eq!(json["rows"][0]["latency_p50_ms"], 100);
    assert_eq!(json["rows"][1]["first_token_p50_ms"], 30);
    let back: UsageReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn the_table_aligns_its_columns_and_ends_with_a_total() {
    let dir = tempfile::tempdir().unwrap();
    let path = summary_fixture(&dir);
    let rows = summary(&path, at(WINDOW_START), By::Day).unwrap();
    let table = render_table(By::Day, &rows);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("day "), "{table}");
    assert!(lines[1].starts_with("2024-01-02 "), "{table}");
    assert!(lines[3].starts_with("total "), "{table}");
    // Right-aligned numbers end in the same column on every line.
    assert!(
        lines.iter().all(|line| line.len() == lines[0].len()),
        "{table}"
    );
    let requests_end = lines[0].find("requests").unwrap() + "requests".len();
    assert_eq!(&lines[1][requests_end - 1..requests_end], "2");
    assert_eq!(&lines[3][requests_end - 1..requests_end], "3");
    assert!(
        lines[3].contains(" 200 "),
        "weighted average latency: {table}"
    );
}

#[test]
fn an_empty_table_says_there_were_no_requests() {
    let table = render_table(By::Key, &[]);
    assert!(table.starts_with("key "), "{table}");
    assert!(table.contains("(no requests in this window)"), "{table}");
}

#[test]
fn since_accepts_minutes_hours_days_and_weeks() {
    assert_eq!(parse_since("30m").unwrap(), Duration::from_secs(1800));
    assert_eq!(parse_since("24h").unwrap(), Duration::from_secs(86_400));
    assert_eq!(
        parse_since(" 7d ").unwrap(),
        Duration::from_secs(7 * 86_400)
    );
    assert_eq!(parse_since("2w").unwrap(), Duration::from_secs(14 * 86_400));
    for invalid in [
        "",
        "7",
        "d",
        "7x",
        "-1d",
        "1.5h",
        "7 d",
        "99999999999999999999d",
    ] {
        let error = parse_since(invalid).unwrap_err();
        assert!(
            error.to_string().contains("like 30m"),
            "{invalid:?}: {error}"
        );
    }
}

#[test]
fn by_parses_the_four_groupings() {
    assert_eq!("day".parse::<By>().unwrap(), By::Day);
    assert_eq!("Profile".parse::<By>().unwrap(), By::Profile);
    assert_eq!("key".parse::<By>().unwrap(), By::Key);
    assert_eq!("model".parse::<By>().unwrap(), By::Model);
    let error = "week".parse::<By>().unwrap_err();
    assert!(error.to_string().contains("day, profile, key, model"));
}

#[test]
fn the_median_is_the_nearest_rank() {
    assert_eq!(query::median(&mut []), None);
    assert_eq!(query::median(&mut [5]), Some(5));
    assert_eq!(query::median(&mut [300, 100]), Some(100));
    assert_eq!(query::median(&mut [3, 1, 2]), Some(2));
}

#[test]
fn a_full_database_drops_rows_counts_them_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let ledger = Ledger::open(&path, 90).unwrap();
    // Cap the file at its current size: the next insert finds the disk "full" (SQLITE_FULL).
    let pages: i64 = ledger
        .connection
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap();
    ledger
        .connection
        .pragma_update(None, "max_page_count", pages)
        .unwrap();
    let writer = ledger.spawn_writer_with(quick_options(4096)).unwrap();
    for index in 0..2_000 {
        writer.record(sample(index));
    }
    wait_until("the batches failed", || writer.dropped() == 2_000);
    assert_eq!(writer.written(), 0);
    assert_eq!(
        writer.close(),
        WriterStats {
            written: 0,
            dropped: 2_000
        }
    );
    // The file is still a valid ledger; a new writer without the cap writes again.
    let writer = Ledger::open(&path, 90).unwrap().spawn_writer(16).unwrap();
    writer.record(sample(0));
    assert_eq!(
        writer.close(),
        WriterStats {
            written: 1,
            dropped: 0
        }
    );
    assert_eq!(row_count(&path), 1);
}

#[test]
fn a_recorder_without_a_file_keeps_live_figures_only() {
    let recorder = Recorder::start(None, 90);
    recorder.record(sample(0));
    let status = recorder.status();
    assert!(!status.enabled && status.path.is_none() && status.error.is_none());
    assert_eq!(recorder.activity().view(SystemTime::now()).recorded, 1);
    assert!(recorder.summary(SystemTime::UNIX_EPOCH).is_none());
    assert!(recorder.close().is_none());
}

#[test]
fn a_recorder_whose_file_cannot_open_says_why_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let recorder = Recorder::start(Some(&blocker.join("usage.sqlite3")), 90);
    recorder.record(sample(0));
    let status = recorder.status();
    assert!(!status.enabled);
    assert!(status.error.unwrap().contains("usage_db"));
    assert!(recorder.readable_path().is_none());
    assert_eq!(recorder.dropped(), 0);
}

#[test]
fn a_recorder_writes_rows_and_summarizes_them_by_profile_key_and_day() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger_path(&dir);
    let recorder = Recorder::start(Some(&path), 90);
    for index in 0..3 {
        recorder.record(sample(index));
    }
    wait_until("the rows are written", || recorder.status().written == 3);
    let summary = recorder
        .summary(SystemTime::now() - Duration::from_secs(3600))
        .unwrap()
        .unwrap();
    assert_eq!(summary.by_profile[0].group, "default");
    assert_eq!(summary.by_profile[0].requests, 3);
    assert_eq!(summary.by_key[0].group, "laptop");
    assert_eq!(summary.by_day.len(), 1);
    assert_eq!(
        recorder.close(),
        Some(WriterStats {
            written: 3,
            dropped: 0
        })
    );
}
