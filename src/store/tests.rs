//! The store: migrations, the rollup's arithmetic, the writer's batches, and a database that
//! cannot be written (read-only, locked, not there): the rows wait, nothing panics.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::usage::{self, format_day, parse_time, query};
use super::*;

const DAY: i64 = 86_400;
/// 2024-12-04, 00:00 UTC.
const D0: i64 = 20_061 * DAY;
const BUSY: Duration = Duration::from_millis(200);

fn row(ts: i64, key: Option<&str>, model: &str, tokens: (u64, u64, u64)) -> UsageRow {
    UsageRow {
        ts,
        request_id: format!("req-{ts}"),
        key: key.map(Arc::from),
        route: "/v1/chat/completions".into(),
        model: model.into(),
        status: 200,
        prompt_tokens: tokens.0,
        cached_tokens: tokens.1,
        completion_tokens: tokens.2,
        duration_ms: 12.5,
        ttft_ms: Some(3.0),
        finish_reasons: "stop".into(),
    }
}

fn write_rows(store: &mut Store, rows: &[UsageRow]) {
    let tx = store.conn.transaction().unwrap();
    usage::insert(&tx, rows).unwrap();
    tx.commit().unwrap();
}

/// SQLite treats a file whose header has a write version above 2 (byte 18) as read-only, for
/// root too (whom `chmod 0444` does not stop).
fn set_write_version(db: &Path, v: u8) {
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.seek(SeekFrom::Start(18)).unwrap();
    f.write_all(&[v]).unwrap();
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn fast() -> WriterConfig {
    WriterConfig {
        flush_every: Duration::from_millis(20),
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(40),
        busy_timeout: Duration::from_millis(20),
        ..WriterConfig::default()
    }
}

#[test]
fn a_fresh_database_gets_the_schema_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(DB_FILE), BUSY).unwrap();
    assert_eq!(store.version().unwrap(), MIGRATIONS.len() as i64);
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = store
        .conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    drop(store);
    // Opening again applies nothing and keeps the version.
    let store = Store::open(&dir.path().join(DB_FILE), BUSY).unwrap();
    assert_eq!(store.version().unwrap(), MIGRATIONS.len() as i64);
}

#[test]
fn an_old_schema_is_migrated_a_failed_script_changes_nothing_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let v1 = "CREATE TABLE a (x INTEGER NOT NULL);";
    let v2 = "ALTER TABLE a ADD COLUMN y INTEGER NOT NULL DEFAULT 7; CREATE TABLE b (z);";
    let store = Store::open_with(&db, BUSY, &[v1]).unwrap();
    store
        .conn
        .execute("INSERT INTO a (x) VALUES (1)", [])
        .unwrap();
    assert_eq!(store.version().unwrap(), 1);
    drop(store);

    let store = Store::open_with(&db, BUSY, &[v1, v2]).unwrap();
    assert_eq!(store.version().unwrap(), 2);
    let (x, y): (i64, i64) = store
        .conn
        .query_row("SELECT x, y FROM a", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((x, y), (1, 7), "the old row is kept, migrated");
    drop(store);

    // A script that fails half-way leaves the database at its version, without its table.
    let bad = "CREATE TABLE c (x); INSERT INTO no_such_table VALUES (1);";
    let e = Store::open_with(&db, BUSY, &[v1, v2, bad]).unwrap_err();
    assert!(e.to_string().contains("no_such_table"), "{e}");
    let store = Store::open_with(&db, BUSY, &[v1, v2]).unwrap();
    assert_eq!(store.version().unwrap(), 2);
    let c: i64 = store
        .conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'c'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(c, 0);
    drop(store);

    // An older wick refuses a newer database rather than writing into it.
    let e = Store::open_with(&db, BUSY, &[v1]).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::TooNew {
                found: 2,
                known: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("newer"), "{e}");
}

#[test]
fn the_real_schema_migrates_a_version_zero_file_with_data_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('kept');")
        .unwrap();
    drop(c);
    let mut store = Store::open(&db, BUSY).unwrap();
    assert_eq!(store.version().unwrap(), MIGRATIONS.len() as i64);
    write_rows(&mut store, &[row(D0 + 5, Some("a"), "m", (1, 0, 1))]);
    let t: String = store
        .conn
        .query_row("SELECT t FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(t, "kept");
}

#[test]
fn the_daily_rollup_adds_up_the_rows_and_both_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join(DB_FILE), BUSY).unwrap();
    let rows = [
        row(D0 + 10, Some("team"), "smol", (10, 4, 5)),
        row(D0 + 20, Some("team"), "smol", (7, 0, 3)),
        row(D0 + 30, Some("ops"), "smol", (1, 0, 1)),
        row(D0 + DAY + 1, Some("team"), "big", (100, 50, 20)),
        row(D0 + DAY + 2, None, "smol", (2, 0, 2)),
        // Outside every range below.
        row(D0 - 1, Some("team"), "smol", (1000, 0, 1000)),
    ];
    write_rows(&mut store, &rows[..2]);
    write_rows(&mut store, &rows[2..]);
    let daily: Vec<(String, String, String, i64, i64, i64, i64)> = store
        .conn
        .prepare("SELECT * FROM usage_daily ORDER BY day, key, model")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let d = |s: &str| s.to_string();
    assert_eq!(
        daily,
        [
            (d("2024-12-03"), d("team"), d("smol"), 1, 1000, 0, 1000),
            (d("2024-12-04"), d("ops"), d("smol"), 1, 1, 0, 1),
            (d("2024-12-04"), d("team"), d("smol"), 2, 17, 4, 8),
            (d("2024-12-05"), d(""), d("smol"), 1, 2, 0, 2),
            (d("2024-12-05"), d("team"), d("big"), 1, 100, 50, 20),
        ]
    );

    let whole = Range {
        start: D0,
        end: D0 + 2 * DAY,
    };
    // Not whole days, the same rows: answered from usage_requests.
    let ragged = Range {
        start: D0,
        end: D0 + 2 * DAY + 1,
    };
    for group_by in [GroupBy::Key, GroupBy::Model, GroupBy::Day] {
        let a = query(&store, whole, group_by).unwrap();
        let b = query(&store, ragged, group_by).unwrap();
        assert_eq!(a.data, b.data, "{group_by}");
    }
    let by_key = query(&store, whole, GroupBy::Key).unwrap();
    let t = |group: Option<&str>, requests, p, c, g| UsageTotal {
        group: group.map(str::to_string),
        requests,
        prompt_tokens: p,
        cached_tokens: c,
        completion_tokens: g,
    };
    assert_eq!(
        by_key.data,
        [
            t(None, 1, 2, 0, 2),
            t(Some("ops"), 1, 1, 0, 1),
            t(Some("team"), 3, 117, 54, 28)
        ]
    );
    let by_day = query(&store, whole, GroupBy::Day).unwrap();
    assert_eq!(
        by_day.data,
        [
            t(Some("2024-12-04"), 3, 18, 4, 9),
            t(Some("2024-12-05"), 2, 102, 50, 22)
        ]
    );
    let json = by_day.to_json();
    assert_eq!(json["object"], "list");
    assert_eq!(json["group_by"], "day");
    assert_eq!(json["data"][1]["day"], "2024-12-05");
    assert_eq!(json["data"][1]["total_tokens"], 124);
    let json = by_key.to_json();
    assert!(json["data"][0]["key"].is_null(), "no key: null");
    // Half a day: the rows decide.
    let half = Range {
        start: D0 + 15,
        end: D0 + DAY,
    };
    let by_model = query(&store, half, GroupBy::Model).unwrap();
    assert_eq!(by_model.data, [t(Some("smol"), 2, 8, 0, 4)]);
    let table = by_key.table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("key") && lines[0].ends_with("total_tokens"));
    assert!(
        lines[3].starts_with("team") && lines[3].ends_with(" 145"),
        "{table}"
    );
}

#[test]
fn ranges_take_dates_or_unix_seconds_and_default_to_thirty_days() {
    assert_eq!(parse_time("1970-01-01"), Ok(0));
    assert_eq!(parse_time("2024-12-04"), Ok(D0));
    assert_eq!(parse_time("2024-02-29"), Ok(19_782 * DAY));
    assert_eq!(parse_time("1733270400"), Ok(1_733_270_400));
    for bad in [
        "2023-02-29",
        "2024-13-01",
        "2024-1-01",
        "yesterday",
        "",
        "-5",
        "1e9",
    ] {
        assert!(parse_time(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_day(0), "1970-01-01");
    assert_eq!(format_day(19_782), "2024-02-29");
    for days in [-719_000, -1, 0, 11_016, 11_017, 20_061, 2_900_000] {
        assert_eq!(parse_time(&format_day(days)), Ok(days * DAY), "{days}");
    }
    let now = D0 + 3600;
    let r = Range::resolve(None, None, now).unwrap();
    assert_eq!((r.start, r.end), (D0 + DAY - 30 * DAY, D0 + DAY));
    let r = Range::resolve(Some("2024-12-01"), None, now).unwrap();
    assert_eq!((r.start, r.end), (D0 - 3 * DAY, D0 + DAY));
    let r = Range::resolve(None, Some("100"), now);
    assert_eq!(r.map(|r| r.start), Ok(100 - 30 * DAY));
    let e = Range::resolve(Some("2024-12-05"), Some("2024-12-05"), now).unwrap_err();
    assert_eq!(e.param, "start");
    let e = Range::resolve(None, Some("soon"), now).unwrap_err();
    assert_eq!(e.param, "end");
    assert!(e.message.contains("YYYY-MM-DD"), "{e}");
    assert_eq!("day".parse(), Ok(GroupBy::Day));
    assert!("week"
        .parse::<GroupBy>()
        .unwrap_err()
        .contains("key, model or day"));
}

fn count_rows(db: &Path) -> i64 {
    let store = Store::open_existing(db, BUSY).unwrap();
    store
        .conn
        .query_row("SELECT COUNT(*) FROM usage_requests", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn the_writer_batches_by_size_and_flushes_the_rest_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let config = WriterConfig {
        batch_rows: 3,
        flush_every: Duration::from_secs(3600),
        ..fast()
    };
    let (log, writer) = UsageWriter::start(db.clone(), config).unwrap();
    for i in 0..7 {
        log.push(row(D0 + i, Some("k"), "m", (1, 0, 1)));
    }
    wait_until("two full batches", || log.counts().rows_written == 6);
    let c = log.counts();
    assert_eq!((c.batches, c.rows_pending), (2, 1), "{c:?}");
    writer.finish();
    let c = log.counts();
    assert_eq!(
        (c.rows_written, c.batches, c.rows_dropped),
        (7, 3, 0),
        "{c:?}"
    );
    assert_eq!(count_rows(&db), 7);
}

#[test]
fn the_writer_flushes_a_partial_batch_after_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    let (log, _writer) = UsageWriter::start(db.clone(), fast()).unwrap();
    log.push(row(D0, None, "m", (3, 0, 4)));
    log.push(row(D0 + 1, None, "m", (3, 0, 4)));
    wait_until("the flush", || log.counts().rows_written == 2);
    let r = usage::read(
        &db,
        Range {
            start: D0,
            end: D0 + DAY,
        },
        GroupBy::Model,
    )
    .unwrap();
    assert_eq!(r.data[0].requests, 2);
    assert_eq!(r.data[0].completion_tokens, 8);
}

#[test]
fn a_read_only_database_keeps_the_rows_waiting_until_it_is_writable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    drop(Store::open(&db, BUSY).unwrap());
    set_write_version(&db, 3);
    let (log, writer) = UsageWriter::start(db.clone(), fast()).unwrap();
    for i in 0..3 {
        log.push(row(D0 + i, Some("k"), "m", (1, 0, 1)));
    }
    wait_until("failed writes", || {
        let c = log.counts();
        c.write_errors >= 2 && c.rows_pending == 3
    });
    assert_eq!(log.counts().rows_written, 0);
    // Readers still read it.
    let r = usage::read(
        &db,
        Range {
            start: D0,
            end: D0 + DAY,
        },
        GroupBy::Key,
    )
    .unwrap();
    assert!(r.data.is_empty());
    set_write_version(&db, 2);
    wait_until("the retry", || log.counts().rows_written == 3);
    writer.finish();
    let c = log.counts();
    assert_eq!((c.rows_pending, c.rows_dropped), (0, 0), "{c:?}");
    assert_eq!(count_rows(&db), 3);
}

#[test]
fn a_locked_database_delays_only_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    drop(Store::open(&db, BUSY).unwrap());
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (log, writer) = UsageWriter::start(db.clone(), fast()).unwrap();
    log.push(row(D0, Some("k"), "m", (1, 0, 1)));
    wait_until("a busy write", || log.counts().write_errors >= 1);
    assert_eq!(log.counts().rows_pending, 1);
    blocker.execute_batch("ROLLBACK").unwrap();
    wait_until("the retry", || log.counts().rows_written == 1);
    writer.finish();
    assert_eq!(count_rows(&db), 1);
}

#[test]
fn a_missing_directory_is_retried_and_rows_past_the_bound_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("later");
    let db = sub.join(DB_FILE);
    let config = WriterConfig {
        max_pending: 2,
        ..fast()
    };
    let (log, writer) = UsageWriter::start(db.clone(), config).unwrap();
    for i in 0..5 {
        log.push(row(D0 + i, None, "m", (1, 0, 1)));
    }
    wait_until("the bound", || {
        let c = log.counts();
        c.rows_pending == 2 && c.rows_dropped == 3 && c.write_errors >= 1
    });
    std::fs::create_dir(&sub).unwrap();
    wait_until("the retry", || log.counts().rows_written == 2);
    writer.finish();
    // The two newest were kept.
    let store = Store::open_existing(&db, BUSY).unwrap();
    let ts: Vec<i64> = store
        .conn
        .prepare("SELECT ts FROM usage_requests ORDER BY ts")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ts, [D0 + 3, D0 + 4]);
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    // No writer thread: nothing drains the queue.
    let (log, _rx, _) = writer::UsageLog::new(dir.path().join(DB_FILE), 2);
    for i in 0..5 {
        log.push(row(D0 + i, None, "m", (1, 0, 1)));
    }
    assert_eq!(log.counts().rows_dropped, 3);
}

#[test]
fn rows_that_cannot_be_written_at_exit_are_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    drop(Store::open(&db, BUSY).unwrap());
    set_write_version(&db, 3);
    let (log, writer) = UsageWriter::start(db.clone(), fast()).unwrap();
    log.push(row(D0, None, "m", (1, 0, 1)));
    writer.finish();
    let c = log.counts();
    assert_eq!((c.rows_written, c.rows_dropped, c.rows_pending), (0, 1, 0));
    // After the writer is gone, a push is dropped too (never blocks, never panics).
    log.push(row(D0, None, "m", (1, 0, 1)));
    assert_eq!(log.counts().rows_dropped, 2);
}

#[test]
fn the_data_dir_defaults_to_the_platforms() {
    assert_eq!(
        resolve_data_dir(Some(Path::new("/x"))),
        Ok(std::path::PathBuf::from("/x"))
    );
    match default_data_dir() {
        Some(d) => assert_eq!(resolve_data_dir(None), Ok(d)),
        None => assert!(resolve_data_dir(None).unwrap_err().contains("--data-dir")),
    }
    let e = usage::read(
        Path::new("/no/such/dir/wick.db"),
        Range { start: 0, end: 1 },
        GroupBy::Key,
    )
    .unwrap_err();
    assert!(matches!(e, StoreError::Missing(_)), "{e}");
}
