//! The server's own database: one SQLite file, `wick.db`, under `--data-dir` (rusqlite with
//! its bundled SQLite: nothing to install). [`Store`] owns a connection and its set-up (WAL, a
//! busy timeout, foreign keys) and brings the schema up to date at open: [`MIGRATIONS`] is an
//! ordered list of SQL scripts, and `PRAGMA user_version` counts how many have been applied.
//! Usage statistics ([`usage`], written by the [`writer`] thread) are its first tables; stored
//! responses and conversations ([`responses`], [`conversations`], through a [`ResponseStore`])
//! the second migration's. Later features add theirs as further migrations, never by editing
//! one.
//!
//! A `Store` is used by one thread at a time: the usage writer's thread, a `spawn_blocking`
//! task answering `GET /v1/usage`, `wick usage` on the main thread, or a `spawn_blocking` task
//! holding the [`ResponseStore`]'s lock. Nothing here runs on an async thread.

pub mod conversations;
pub mod prune;
pub mod responses;
pub mod usage;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

pub use conversations::Conversation;
pub use prune::Pruner;
pub use responses::{ItemPage, Listing, Order, Pruned, ResponseStore, StoredResponse};
pub use usage::{GroupBy, Range, RangeError, UsageReport, UsageRow, UsageTotal};
pub use writer::{UsageCounts, UsageLog, UsageWriter, WriterConfig};

/// The database's file name inside the data directory.
pub const DB_FILE: &str = "wick.db";

/// The schema, one script per version: script `i` takes the database from version `i` to
/// `i + 1`. Append only: a released script is never edited.
pub const MIGRATIONS: &[&str] = &[
    // 1: usage statistics. One row per request, and a daily rollup per key and model kept in
    // step in the same transaction. `key` is '' when the server has no keys; `ts` is the
    // request's arrival in unix seconds, `day` its UTC date.
    "CREATE TABLE usage_requests (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        key TEXT NOT NULL,
        route TEXT NOT NULL,
        model TEXT NOT NULL,
        status INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        duration_ms REAL NOT NULL,
        ttft_ms REAL,
        finish_reasons TEXT NOT NULL
    );
    CREATE INDEX usage_requests_ts ON usage_requests (ts);
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        key TEXT NOT NULL,
        model TEXT NOT NULL,
        requests INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        PRIMARY KEY (day, key, model)
    ) WITHOUT ROWID;",
    // 2: stored responses and conversations (the Responses API). `owner` is the API key's
    // name ('' when the server has no keys); every read filters on it. JSON columns hold the
    // objects exactly as the API returns them. Items keep their order in `seq`; a response's
    // items are its turn's input (`kind` 0) and its output (`kind` 1). Deleting a response or
    // a conversation deletes its items (foreign keys are on for every connection). The
    // pruner deletes by `created_at` (responses) and `updated_at` (conversations).
    "CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        previous_response_id TEXT,
        conversation_id TEXT,
        response TEXT NOT NULL
    );
    CREATE INDEX responses_owner_id ON responses (owner, id);
    CREATE INDEX responses_created_at ON responses (created_at);
    CREATE TABLE response_items (
        response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
        kind INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        item TEXT NOT NULL,
        PRIMARY KEY (response_id, kind, seq)
    ) WITHOUT ROWID;
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        metadata TEXT NOT NULL
    );
    CREATE INDEX conversations_owner_id ON conversations (owner, id);
    CREATE INDEX conversations_updated_at ON conversations (updated_at);
    CREATE TABLE conversation_items (
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        item TEXT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX conversation_items_item_id ON conversation_items (conversation_id, item_id);",
];

/// A new object id: `prefix` (`resp_`, `msg_`, `fc_`, `conv_`, ...) and 48 random hex digits
/// (192 bits: unique without asking the database, unguessable by another key).
pub fn new_id(prefix: &str) -> String {
    let (a, b, c) = (
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>(),
    );
    format!("{prefix}{a:016x}{b:016x}{c:016x}")
}

/// Why the database could not be opened, migrated, written or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: the schema is version {found}, newer than this wick knows ({known}); use a newer wick")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("no usage database at {0} (`wick serve --data-dir` creates it)")]
    Missing(PathBuf),
}

/// One open connection to `wick.db`, its schema up to date.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating it if need be) the database at `path`, waiting up to `busy` for a lock,
    /// and applies the migrations it lacks.
    pub fn open(path: &Path, busy: Duration) -> Result<Self, StoreError> {
        Self::open_with(path, busy, MIGRATIONS)
    }

    /// [`Store::open`] for a reader: the file must exist already.
    pub fn open_existing(path: &Path, busy: Duration) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        Self::open(path, busy)
    }

    /// [`Store::open`] with the schema `migrations` (tests use shorter and longer lists).
    pub fn open_with(path: &Path, busy: Duration, migrations: &[&str]) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(busy).map_err(err)?;
        // WAL: readers (`GET /v1/usage`, `wick usage`) never block the writer, nor it them.
        // The mode is persistent; asking again on a read-only file is a no-op.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), %mode, "the database is not in WAL mode");
        }
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
            .map_err(err)?;
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate(migrations)?;
        Ok(store)
    }

    /// Applies the scripts past the database's version, each in its own transaction with the
    /// new version; refuses a database newer than `migrations`.
    fn migrate(&mut self, migrations: &[&str]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let too_new = |found| StoreError::TooNew {
            path: path.clone(),
            found,
            known: migrations.len(),
        };
        let found = self.version().map_err(err)?;
        if found > migrations.len() as i64 {
            return Err(too_new(found));
        }
        if found == migrations.len() as i64 {
            return Ok(());
        }
        // IMMEDIATE: a second process opening the same file at the same moment waits here,
        // then finds the work done.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > migrations.len() as i64 {
            return Err(too_new(version));
        }
        while (version as usize) < migrations.len() {
            tx.execute_batch(migrations[version as usize])
                .map_err(err)?;
            version += 1;
            tx.pragma_update(None, "user_version", version)
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        tracing::info!(path = %self.path.display(), version, "database schema up to date");
        Ok(())
    }

    /// The schema version (`PRAGMA user_version`): how many migrations are applied.
    pub fn version(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The default data directory: the platform's (`$XDG_DATA_HOME` or `~/.local/share` on Linux,
/// `~/Library/Application Support` on macOS) + `wick`; `None` when the platform has none.
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("wick"))
}

/// `dir`, or the default data directory; an error naming the flag when there is neither.
pub fn resolve_data_dir(dir: Option<&Path>) -> Result<PathBuf, String> {
    match dir {
        Some(d) => Ok(d.to_path_buf()),
        None => default_data_dir().ok_or_else(|| {
            "no data directory: this platform has none (no $HOME?); give --data-dir DIR \
             (or WICK_DATA_DIR)"
                .to_string()
        }),
    }
}

#[cfg(test)]
mod tests;
