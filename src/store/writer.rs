//! The usage writer: the request path hands each [`UsageRow`] to a [`UsageLog`] (a bounded
//! queue; `push` never blocks, and a full queue drops the row and counts it), and one
//! `wick-usage` thread, owned by [`UsageWriter`], moves the rows into `wick.db` in batches:
//! one transaction per `batch_rows` rows or every `flush_every`, whichever comes first.
//!
//! The thread owns the writing connection and the rows not yet written. A database that is
//! locked, full, read-only or missing never reaches a request: the failed batch stays in
//! memory (up to `max_pending` rows, the oldest dropped and counted past it), the connection is
//! dropped and reopened at the next try (backing off from `retry_min` to `retry_max`), the
//! failure is counted and logged at most once a minute. [`UsageWriter::finish`] (the server's
//! exit) writes what is queued, one last try.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::usage::{insert, UsageRow};
use super::Store;

/// How the writer batches and retries.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Rows the request path may queue for the writer; past it rows are dropped (counted).
    pub queue: usize,
    /// Rows per transaction at most; a full batch is written at once.
    pub batch_rows: usize,
    /// How long a row may wait for its batch to fill.
    pub flush_every: Duration,
    /// Rows kept while the database cannot be written; past it the oldest are dropped.
    pub max_pending: usize,
    /// The first wait after a failed write; doubled per failure up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How long a write waits for another connection's lock before it counts as failed.
    pub busy_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue: 4096,
            batch_rows: 256,
            flush_every: Duration::from_millis(250),
            max_pending: 50_000,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(2),
        }
    }
}

/// The writer's counters, shared with every [`UsageLog`] (relaxed atomics).
#[derive(Debug, Default)]
pub(super) struct Counters {
    written: AtomicU64,
    batches: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    pending: AtomicU64,
}

/// A snapshot of the writer's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    /// Rows committed to the database.
    pub rows_written: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Rows lost: the queue was full, too many waited, or the last try at exit failed.
    pub rows_dropped: u64,
    /// Failed tries to open or write the database.
    pub write_errors: u64,
    /// Rows the writer holds, waiting for their batch or for the database.
    pub rows_pending: u64,
}

/// What the queue carries.
pub(super) enum Msg {
    Row(UsageRow),
    /// Look at the stop flag now (sent by [`UsageWriter::finish`]).
    Wake,
}

struct Shared {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    /// The database file (readers open their own connection to it).
    db: PathBuf,
}

/// The request path's end of the writer: cheap to clone, `push` never blocks.
#[derive(Clone)]
pub struct UsageLog(Arc<Shared>);

impl std::fmt::Debug for UsageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLog").field("db", &self.0.db).finish()
    }
}

impl UsageLog {
    pub(super) fn new(db: PathBuf, queue: usize) -> (Self, Receiver<Msg>, Arc<Counters>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue.max(1));
        let counters = Arc::new(Counters::default());
        let log = Self(Arc::new(Shared {
            tx,
            counters: counters.clone(),
            db,
        }));
        (log, rx, counters)
    }

    /// Queues `row` for the writer; a full queue (or a stopped writer) drops it and counts it.
    pub fn push(&self, row: UsageRow) {
        match self.0.tx.try_send(Msg::Row(row)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.0.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The database file.
    pub fn db(&self) -> &Path {
        &self.0.db
    }

    /// The counters as of now.
    pub fn counts(&self) -> UsageCounts {
        let c = &self.0.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UsageCounts {
            rows_written: get(&c.written),
            batches: get(&c.batches),
            rows_dropped: get(&c.dropped),
            write_errors: get(&c.write_errors),
            rows_pending: get(&c.pending),
        }
    }
}

/// Owns the `wick-usage` thread; [`UsageWriter::finish`] (or drop) flushes and joins it.
pub struct UsageWriter {
    stop: Arc<AtomicBool>,
    /// To wake the thread for the stop.
    wake: SyncSender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl UsageWriter {
    /// Starts the writer for the database `db` (created, and its schema brought up to date,
    /// by the thread; a failure there is logged and retried like a failed write).
    pub fn start(db: PathBuf, config: WriterConfig) -> std::io::Result<(UsageLog, Self)> {
        let (log, rx, counters) = UsageLog::new(db.clone(), config.queue);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let wake = log.0.tx.clone();
        let thread = std::thread::Builder::new()
            .name("wick-usage".into())
            .spawn(move || {
                let mut w = Writer::new(db, config, counters);
                w.run(&rx, &flag);
            })?;
        Ok((
            log,
            Self {
                stop,
                wake,
                thread: Some(thread),
            },
        ))
    }

    /// Writes what is queued (one last try) and waits for the thread to end.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        // A full queue needs no wake: the thread is busy taking rows and sees the flag.
        let _ = self.wake.try_send(Msg::Wake);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the usage writer thread panicked");
            }
        }
    }
}

impl Drop for UsageWriter {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The thread's state: the connection, the rows not yet written, the retry clock.
struct Writer {
    db: PathBuf,
    config: WriterConfig,
    counters: Arc<Counters>,
    store: Option<Store>,
    pending: VecDeque<UsageRow>,
    /// When the oldest pending row arrived (its batch is due `flush_every` later).
    oldest: Option<Instant>,
    /// No write before this (after a failure).
    next_try: Instant,
    backoff: Duration,
    /// The last warning, and the failures since (logged at most once a minute).
    warned: Option<Instant>,
    quiet_failures: u64,
}

/// Failures are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// The idle writer's sleep: any row, or the stop's wake, ends it sooner.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

impl Writer {
    fn new(db: PathBuf, config: WriterConfig, counters: Arc<Counters>) -> Self {
        let backoff = config.retry_min;
        Self {
            db,
            config,
            counters,
            store: None,
            pending: VecDeque::new(),
            oldest: None,
            next_try: Instant::now(),
            backoff,
            warned: None,
            quiet_failures: 0,
        }
    }

    fn run(&mut self, rx: &Receiver<Msg>, stop: &AtomicBool) {
        // Open at once: the file and its schema exist from the start, and a bad directory is
        // logged now rather than at the first request.
        if let Err(e) = self.connect() {
            self.failed(&e);
        }
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let wait = if stopping {
                Duration::ZERO
            } else {
                self.wait()
            };
            match rx.recv_timeout(wait) {
                Ok(msg) => self.take(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if stopping => {}
                Err(RecvTimeoutError::Disconnected) => {
                    stop.store(true, Ordering::Release);
                }
            }
            // What else is queued, without waiting (bounded: producers may keep pushing).
            for _ in 0..self.config.batch_rows {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg),
                    Err(_) => break,
                }
            }
            if stopping {
                while let Ok(msg) = rx.try_recv() {
                    self.take(msg);
                }
                self.next_try = Instant::now();
                self.write_pending(true);
                self.give_up();
                return;
            }
            if let Some(all) = self.due() {
                self.write_pending(all);
            }
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Row(row) => self.add(row),
            Msg::Wake => {}
        }
    }

    /// How long to sleep on the queue: with rows pending, until the oldest one's batch is due
    /// or the next retry, at most `flush_every`; idle, until a row (or the stop's wake) comes.
    fn wait(&self) -> Duration {
        let Some(oldest) = self.oldest else {
            return IDLE_WAIT;
        };
        let now = Instant::now();
        let until = (now + self.config.flush_every)
            .min((oldest + self.config.flush_every).max(self.next_try));
        until.saturating_duration_since(now)
    }

    /// Whether to write now, unless a back-off holds it: `Some(true)` when the oldest row has
    /// waited `flush_every` (write everything), `Some(false)` when only full batches are
    /// ready.
    fn due(&self) -> Option<bool> {
        let now = Instant::now();
        if self.pending.is_empty() || now < self.next_try {
            return None;
        }
        let old = self
            .oldest
            .is_some_and(|t| now >= t + self.config.flush_every);
        (old || self.pending.len() >= self.batch_rows()).then_some(old)
    }

    fn batch_rows(&self) -> usize {
        self.config.batch_rows.max(1)
    }

    fn add(&mut self, row: UsageRow) {
        if self.pending.len() >= self.config.max_pending.max(1) {
            self.pending.pop_front();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.oldest.get_or_insert_with(Instant::now);
        self.pending.push_back(row);
        self.publish_pending();
    }

    fn publish_pending(&self) {
        self.counters
            .pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    fn connect(&mut self) -> Result<(), String> {
        if self.store.is_none() {
            let store =
                Store::open(&self.db, self.config.busy_timeout).map_err(|e| e.to_string())?;
            self.store = Some(store);
        }
        Ok(())
    }

    /// Writes the pending rows, a batch per transaction: the full batches, or with `all` the
    /// last partial one too, until one fails (which keeps them and starts the back-off).
    fn write_pending(&mut self, all: bool) {
        let full = self.batch_rows();
        while self.pending.len() >= full || (all && !self.pending.is_empty()) {
            let n = self.pending.len().min(full);
            match self.write_batch(n) {
                Ok(()) => {
                    self.pending.drain(..n);
                    self.counters.written.fetch_add(n as u64, Ordering::Relaxed);
                    self.counters.batches.fetch_add(1, Ordering::Relaxed);
                    self.recovered();
                }
                Err(e) => {
                    self.failed(&e);
                    break;
                }
            }
        }
        // The rows left wait for their batch at most another `flush_every`.
        self.oldest = (!self.pending.is_empty()).then(Instant::now);
        self.publish_pending();
    }

    fn write_batch(&mut self, n: usize) -> Result<(), String> {
        let rows = &self.pending.make_contiguous()[..n];
        // Borrow the rows and the store apart: take the store out for the transaction.
        let mut store = match self.store.take() {
            Some(s) => s,
            None => Store::open(&self.db, self.config.busy_timeout).map_err(|e| e.to_string())?,
        };
        let result = (|| {
            let tx = store.conn.transaction()?;
            insert(&tx, rows)?;
            tx.commit()
        })();
        match result {
            Ok(()) => {
                self.store = Some(store);
                Ok(())
            }
            // The connection goes with the failure: the next try opens afresh (a file made
            // writable again, replaced or remounted is seen).
            Err(e) => Err(format!("{}: {e}", self.db.display())),
        }
    }

    fn failed(&mut self, error: &str) {
        self.store = None;
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.next_try = now + self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.retry_max);
        if self
            .warned
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            tracing::warn!(
                %error,
                rows_waiting = self.pending.len(),
                failures_since_last_warning = self.quiet_failures,
                "usage statistics could not be written; the rows wait and are retried"
            );
            self.warned = Some(now);
            self.quiet_failures = 0;
        } else {
            self.quiet_failures += 1;
        }
    }

    fn recovered(&mut self) {
        self.backoff = self.config.retry_min;
        self.next_try = Instant::now();
        if self.warned.take().is_some() {
            tracing::info!(db = %self.db.display(), "usage statistics are written again");
        }
        self.quiet_failures = 0;
    }

    /// At exit: rows the last try could not write are lost; say how many.
    fn give_up(&mut self) {
        let lost = self.pending.len() as u64;
        if lost > 0 {
            self.counters.dropped.fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(
                rows = lost,
                db = %self.db.display(),
                "usage statistics lost at exit: the database could not be written"
            );
            self.pending.clear();
            self.publish_pending();
        }
    }
}
