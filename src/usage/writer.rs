//! The writer thread: a bounded queue that the request path feeds without ever waiting, drained by one
//! dedicated OS thread that inserts rows in batches and prunes old ones.
//!
//! SQLite calls block, so they never run on a tokio worker. A slow, locked or full database costs
//! rows, not requests: a full queue drops the new row, a failed batch drops the batch, and both are
//! counted in [`Writer::dropped`]. Dropping the [`Writer`] flushes what is queued, waiting at most
//! [`WriterOptions::shutdown_grace`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::store::Ledger;
use super::Record;

/// How the writer batches, prunes and stops.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Rows the queue holds before new ones are dropped.
    pub capacity: usize,
    /// Rows written in one transaction at most.
    pub batch_rows: usize,
    /// How long the first row of a batch waits for company before the batch is written.
    pub flush_interval: Duration,
    /// How often rows older than the retention are deleted (also once at start).
    pub prune_interval: Duration,
    /// How long dropping the [`Writer`] waits for the queue to be flushed.
    pub shutdown_grace: Duration,
}

impl WriterOptions {
    /// The defaults: 256-row batches, a 200 ms flush, hourly pruning, a 2 s flush at shutdown.
    pub fn with_capacity(capacity: usize) -> WriterOptions {
        WriterOptions {
            capacity: capacity.max(1),
            batch_rows: 256,
            flush_interval: Duration::from_millis(200),
            prune_interval: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Counters shared by the [`Writer`] handle and its thread.
#[derive(Debug, Default)]
struct Counters {
    /// Rows committed to the file.
    written: AtomicU64,
    /// Rows lost to a full queue, a failed write or a stopped thread.
    dropped: AtomicU64,
}

/// The request path's handle on the ledger. Share it behind an `Arc`; dropping the last one stops the
/// thread after a bounded flush.
#[derive(Debug)]
pub struct Writer {
    /// `None` only during `drop`, which closes the queue to tell the thread to finish.
    sender: Option<SyncSender<Record>>,
    /// Read by `/metrics`; written by both sides, so atomics.
    counters: Arc<Counters>,
    /// Signals the end of the thread's final flush; dropping the `Writer` waits on it, bounded. In a
    /// mutex only so that the handle is `Sync` (it is locked once, at the end).
    finished: Mutex<Receiver<()>>,
    shutdown_grace: Duration,
}

impl Ledger {
    /// Moves the ledger onto its own thread with a queue of `capacity` rows and default batching.
    pub fn spawn_writer(self, capacity: usize) -> std::io::Result<Writer> {
        self.spawn_writer_with(WriterOptions::with_capacity(capacity))
    }

    /// Like [`Ledger::spawn_writer`] with every knob given.
    pub fn spawn_writer_with(self, options: WriterOptions) -> std::io::Result<Writer> {
        let (sender, receiver) = mpsc::sync_channel(options.capacity.max(1));
        let (finished_sender, finished) = mpsc::sync_channel(1);
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let shutdown_grace = options.shutdown_grace;
        thread::Builder::new()
            .name("usage-ledger".into())
            .spawn(move || {
                run(self, &receiver, &thread_counters, &options);
                let _ = finished_sender.send(());
            })?;
        Ok(Writer {
            sender: Some(sender),
            counters,
            finished: Mutex::new(finished),
            shutdown_grace,
        })
    }
}

impl Writer {
    /// Queues one row. Never waits: when the queue is full or the thread is gone, the row is counted
    /// as dropped and the call returns.
    pub fn record(&self, record: Record) {
        let Some(sender) = &self.sender else { return };
        match sender.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Rows lost so far (a full queue, a failed write, a stopped thread), for `/metrics`.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Rows committed so far, for `/metrics`.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Stops the thread like `drop` does and returns the final counts, for a shutdown log line.
    pub fn close(mut self) -> WriterStats {
        self.finish();
        WriterStats {
            written: self.written(),
            dropped: self.dropped(),
        }
    }

    /// Closes the queue so the thread drains what is left, writes it and ends; waits for that at most
    /// `shutdown_grace`. Does nothing the second time.
    fn finish(&mut self) {
        if self.sender.take().is_none() {
            return;
        }
        let finished = self
            .finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if finished.recv_timeout(self.shutdown_grace).is_err() {
            tracing::warn!(
                grace_ms = self.shutdown_grace.as_millis() as u64,
                "usage ledger did not finish flushing in time; the rows still queued are lost"
            );
        }
    }
}

/// The counts a [`Writer`] ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub written: u64,
    pub dropped: u64,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The longest the thread sleeps while rows wait, so that it sees a closed queue soon.
const NAP: Duration = Duration::from_millis(100);

/// The thread's loop: gather rows into a batch, write it when full or when its first row has waited
/// `flush_interval`, prune on schedule, and flush once more when the queue closes.
fn run(
    mut ledger: Ledger,
    receiver: &Receiver<Record>,
    counters: &Counters,
    options: &WriterOptions,
) {
    let mut batch = Batch::new(options.batch_rows.max(1));
    prune(&ledger);
    let mut next_prune = Instant::now() + options.prune_interval;
    loop {
        if let Some(deadline) = batch.deadline {
            // Rows are waiting: sleep until they are due (in slices of at most `NAP`, so a closed
            // queue is seen soon) instead of waking for every new row, so a request that hands over
            // a row never wakes this thread; then take what came meanwhile.
            let wake_at = deadline.min(next_prune);
            let now = Instant::now();
            if wake_at > now {
                thread::sleep((wake_at - now).min(NAP));
            }
            loop {
                match receiver.try_recv() {
                    Ok(record) => {
                        batch.push(record, options.flush_interval);
                        if batch.is_full() {
                            batch.flush(&mut ledger, counters);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        batch.flush(&mut ledger, counters);
                        return;
                    }
                }
            }
            if batch
                .deadline
                .is_some_and(|deadline| deadline <= Instant::now())
            {
                batch.flush(&mut ledger, counters);
            }
        } else {
            let wait = next_prune.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(wait) {
                Ok(record) => {
                    batch.push(record, options.flush_interval);
                    if batch.is_full() {
                        batch.flush(&mut ledger, counters);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    batch.flush(&mut ledger, counters);
                    return;
                }
            }
        }
        if Instant::now() >= next_prune {
            prune(&ledger);
            next_prune = Instant::now() + options.prune_interval;
        }
    }
}

/// Rows waiting to be written together.
struct Batch {
    rows: Vec<Record>,
    limit: usize,
    /// When the oldest row in `rows` must be written; `None` while empty.
    deadline: Option<Instant>,
    /// Whether the last write failed, so a long outage logs once, not once per batch.
    failing: bool,
}

impl Batch {
    fn new(limit: usize) -> Batch {
        Batch {
            rows: Vec::with_capacity(limit),
            limit,
            deadline: None,
            failing: false,
        }
    }

    fn push(&mut self, record: Record, flush_interval: Duration) {
        if self.rows.is_empty() {
            self.deadline = Some(Instant::now() + flush_interval);
        }
        self.rows.push(record);
    }

    fn is_full(&self) -> bool {
        self.rows.len() >= self.limit
    }

    /// Writes the rows in one transaction; on failure they are counted as dropped, never retried, so
    /// a locked file cannot grow the backlog.
    fn flush(&mut self, ledger: &mut Ledger, counters: &Counters) {
        self.deadline = None;
        if self.rows.is_empty() {
            return;
        }
        let rows = self.rows.len() as u64;
        match ledger.insert(&self.rows) {
            Ok(()) => {
                counters.written.fetch_add(rows, Ordering::Relaxed);
                if self.failing {
                    tracing::info!("usage ledger writes resumed");
                }
                self.failing = false;
            }
            Err(error) => {
                counters.dropped.fetch_add(rows, Ordering::Relaxed);
                if !self.failing {
                    tracing::warn!(error = %error, rows, "usage ledger write failed; rows dropped until it recovers");
                }
                self.failing = true;
            }
        }
        self.rows.clear();
    }
}

fn prune(ledger: &Ledger) {
    match ledger.prune(SystemTime::now()) {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "usage ledger pruned rows past retention"),
        Err(error) => tracing::warn!(error = %error, "usage ledger pruning failed; will retry"),
    }
}
