//! Niyet's durable event log: the source of truth every later stage reads.
//!
//! # On-disk format (version 1)
//!
//! A log is a directory of segment files named `{base_offset:020}.seg`. Each segment
//! starts with a 16-byte header, the magic `NIYLOG01` followed by the base offset
//! (u64, little endian), then holds records back to back:
//!
//! ```text
//! record := len: u32 LE | crc: u32 LE | body (len bytes)
//! body   := offset: u64 LE | time_ms: i64 LE | key: u128 LE | payload
//! crc    := CRC-32 (IEEE) of body
//! ```
//!
//! `offset` numbers records densely from 0 over the whole log; `time_ms` is the receive
//! time given by the caller; `key` is the idempotency key (0 = none).
//!
//! # Guarantees
//!
//! * **Durable acknowledgement.** [`Log::append`] calls back only after the records are
//!   written and `fdatasync`ed. One writer thread drains every pending request into one
//!   write and one sync (group commit).
//! * **Crash recovery.** On open, the last segment is scanned and truncated after its last
//!   whole, checksum-valid record (a torn tail is the normal result of a crash). Damage in
//!   any earlier segment is reported as [`LogError::Corrupt`], never silently dropped.
//! * **Fail-stop on I/O errors.** A failed write or sync poisons the log: every later
//!   append fails with [`LogError::Poisoned`] rather than pretend (after a failed fsync
//!   the page cache can no longer be trusted).
//! * **Idempotent appends.** A record with a non-zero key that was already appended within
//!   the dedup window (by record time) is answered [`Appended::Duplicate`] and not written
//!   again. The key index is bounded ([`LogConfig::dedup_max_keys`]) and rebuilt from the
//!   segments on open, so it survives restarts.
//! * **Retention** by age and total size removes whole, closed segments, oldest first.
//! * **Erasure** ([`Log::erase`]) rewrites chosen records in place with a payload of the
//!   same length ([`ERASED`] and spaces) and a new checksum, so personal data leaves the
//!   files without moving any other record.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod dedup;
mod file;
mod prepare;
mod segment;
mod writer;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;

pub use segment::{RecordRef, ERASED, RECORD_OVERHEAD, SEGMENT_HEADER_LEN};

/// Errors of the log. Cloneable so that one failed group commit can answer every waiter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// An I/O operation failed.
    #[error("{context}: {message}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The operating system's error.
        message: String,
    },
    /// A closed segment is damaged; this needs an operator.
    #[error("segment {segment} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        segment: String,
        /// What is wrong.
        detail: String,
    },
    /// An earlier write or sync failed; the log accepts nothing more.
    #[error("the log is poisoned after an earlier I/O failure: {0}")]
    Poisoned(String),
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// The requested offset was removed by retention or erasure.
    #[error("offset {requested} is before the start of the log ({start})")]
    BeforeStart {
        /// The offset asked for.
        requested: u64,
        /// The first offset still held.
        start: u64,
    },
    /// A record is larger than the log accepts.
    #[error("record of {0} bytes exceeds the limit")]
    RecordTooLarge(usize),
}

impl LogError {
    fn io(context: impl Into<String>, e: &std::io::Error) -> Self {
        LogError::Io {
            context: context.into(),
            message: e.to_string(),
        }
    }
}

/// How the log is laid out and kept.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Upper bound of bytes written by one group commit.
    pub max_commit_bytes: usize,
    /// How long an idempotency key is remembered, by record time.
    pub dedup_window_ms: i64,
    /// At most this many keys are remembered (the oldest are forgotten first).
    pub dedup_max_keys: usize,
    /// Remove closed segments whose newest record is older than this.
    pub retention_max_age_ms: Option<i64>,
    /// Remove the oldest closed segments while the log is larger than this.
    pub retention_max_bytes: Option<u64>,
    /// Write with direct I/O where the filesystem allows it (see the `file` module).
    pub direct_io: bool,
}

impl LogConfig {
    /// Defaults: 128 MiB segments, 24 h / 4 M keys of dedup memory, no retention.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 128 << 20,
            max_commit_bytes: 8 << 20,
            dedup_window_ms: 24 * 3_600_000,
            dedup_max_keys: 4_000_000,
            retention_max_age_ms: None,
            retention_max_bytes: None,
            direct_io: true,
        }
    }
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Receive time in ms since the epoch (decides dedup window and retention).
    pub time_ms: i64,
    /// Idempotency key; 0 means none.
    pub key: u128,
    /// The bytes to keep.
    pub payload: Vec<u8>,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position in the log.
    pub offset: u64,
    /// Receive time in ms since the epoch.
    pub time_ms: i64,
    /// Idempotency key; 0 means none.
    pub key: u128,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// The fate of one appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Durably written at this offset.
    At(u64),
    /// Its key was already in the log within the dedup window; nothing written.
    Duplicate,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment files removed.
    pub segments_removed: usize,
    /// Records removed.
    pub records_removed: u64,
    /// Bytes removed.
    pub bytes_removed: u64,
}

/// Called once with the outcome of an append, after the data is durable (or not).
pub type AppendCallback = Box<dyn FnOnce(Result<Vec<Appended>, LogError>) + Send>;

/// One segment as readers see it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub base: u64,
    pub path: Arc<Path>,
    /// Records durably in the segment.
    pub count: u64,
    /// Durable length of the file.
    pub len: u64,
    /// Sparse index: (offset, file position) of some records, ascending.
    pub index: Vec<(u64, u64)>,
    pub max_time_ms: i64,
    /// The file opened for reading, once a reader needed it: shared by every reader of
    /// the segment (one `open` per segment, not per read). A segment removed by
    /// retention stays readable through it until its last reader is done.
    pub reader: Arc<OnceLock<fs::File>>,
}

pub(crate) struct Shared {
    pub segments: RwLock<BTreeMap<u64, SegmentMeta>>,
    pub poisoned: Mutex<Option<String>>,
    pub is_poisoned: AtomicBool,
    pub end_offset: AtomicU64,
    pub start_offset: AtomicU64,
    pub total_bytes: AtomicU64,
    pub duplicates: AtomicU64,
    pub commits: AtomicU64,
    pub direct_io: AtomicBool,
    /// Signalled after each commit that moved `end_offset`.
    pub grown: (Mutex<()>, Condvar),
    /// Where recent reads ended, `(segment base, offset, file position)`: a reader that
    /// goes on from where it stopped starts there instead of at the index entry before it
    /// (up to [`segment::INDEX_EVERY_BYTES`] earlier).
    pub read_hints: Mutex<[(u64, u64, u64); segment::READ_HINTS]>,
    /// The newest durable records, for readers that follow the log closely.
    pub recent: RwLock<Recent>,
    /// Tells this log from every other in the process (a reader's kept bytes belong to
    /// one log: see [`segment::visit`]).
    pub id: u64,
    /// Moves after every rewrite of bytes already durable (an erasure): bytes a reader
    /// kept from before it are read again.
    pub rewrites: AtomicU64,
}

/// The next [`Shared::id`].
static NEXT_LOG_ID: AtomicU64 = AtomicU64::new(0);

/// The newest durable records, in memory (see [`RECENT_BYTES`]): readers close behind
/// the writer copy from here instead of reading the file, which with direct I/O would
/// mean reading from the device.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    /// Offset of `records[0]`.
    pub first: u64,
    pub records: std::collections::VecDeque<Record>,
    /// Memory held: each record's payload allocation and its place in the queue.
    pub bytes: usize,
}

/// Memory for the newest records kept per log: at 300,000 events/s of typical shop
/// events, about the last 60 ms of them, enough for readers following the writer, and a
/// fixed cost small beside a million profiles.
pub(crate) const RECENT_BYTES: usize = 8 << 20;

/// What one record held in [`Recent`] costs.
fn recent_cost(r: &Record) -> usize {
    r.payload.capacity() + std::mem::size_of::<Record>()
}

impl Recent {
    /// Adds records just made durable (`first` is the offset of `recs[0]`).
    pub(crate) fn extend(&mut self, first: u64, recs: Vec<Record>) {
        if first != self.first + self.records.len() as u64 {
            self.records.clear();
            self.bytes = 0;
            self.first = first;
        }
        for r in recs {
            self.bytes += recent_cost(&r);
            self.records.push_back(r);
        }
        while self.bytes > RECENT_BYTES {
            let Some(r) = self.records.pop_front() else {
                break;
            };
            self.bytes -= recent_cost(&r);
            self.first += 1;
        }
    }
}

impl Shared {
    fn poison(&self, why: String) {
        if let Ok(mut p) = self.poisoned.lock() {
            p.get_or_insert(why);
        }
        self.is_poisoned.store(true, Ordering::SeqCst);
    }
}

pub(crate) enum Command {
    Append {
        records: Vec<NewRecord>,
        done: AppendCallback,
    },
    Retention {
        now_ms: i64,
        done: mpsc::Sender<Result<RetentionReport, LogError>>,
    },
    Erase {
        offsets: Vec<u64>,
        done: mpsc::Sender<Result<u64, LogError>>,
    },
    Shutdown,
}

/// The durable, append-only event log. Cheap to share behind an `Arc`.
pub struct Log {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

/// Counters for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// First offset still held.
    pub start_offset: u64,
    /// Offset the next record will get.
    pub end_offset: u64,
    /// Bytes of all segment files.
    pub total_bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Records refused as duplicates since open.
    pub duplicates: u64,
    /// Group commits (fsyncs) since open.
    pub commits: u64,
    /// Whether the active segment is written with direct I/O.
    pub direct_io: bool,
}

impl Log {
    /// Opens (or creates) the log in `cfg.dir`, recovering from a crash if needed.
    /// `now_ms` anchors the dedup window used to rebuild the key index.
    pub fn open(cfg: LogConfig, now_ms: i64) -> Result<Log, LogError> {
        let recovered = segment::recover(&cfg, now_ms)?;
        let total: u64 = recovered.segments.values().map(|s| s.len).sum();
        let start = recovered
            .segments
            .values()
            .next()
            .map(|s| s.base)
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            end_offset: AtomicU64::new(recovered.end_offset),
            start_offset: AtomicU64::new(start),
            total_bytes: AtomicU64::new(total),
            segments: RwLock::new(recovered.segments),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            duplicates: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            direct_io: AtomicBool::new(false),
            grown: (Mutex::new(()), Condvar::new()),
            read_hints: Mutex::new([(u64::MAX, 0, 0); segment::READ_HINTS]),
            recent: RwLock::new(Recent {
                first: recovered.end_offset,
                ..Recent::default()
            }),
            id: NEXT_LOG_ID.fetch_add(1, Ordering::Relaxed),
            rewrites: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let dir = cfg.dir.clone();
        let w = writer::Writer::new(cfg, shared.clone(), recovered.active, recovered.dedup)?;
        let thread = std::thread::Builder::new()
            .name("niyet-log-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| LogError::io("spawning the log writer", &e))?;
        Ok(Log {
            shared,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            dir,
        })
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, cmd: Command) -> Result<(), Command> {
        let guard = match self.tx.lock() {
            Ok(g) => g,
            Err(_) => return Err(cmd),
        };
        match guard.as_ref() {
            Some(tx) => tx.send(cmd).map_err(|e| e.0),
            None => Err(cmd),
        }
    }

    /// Appends `records` in order; `done` is called from the writer thread once they are
    /// durable, with one [`Appended`] per record.
    pub fn append(&self, records: Vec<NewRecord>, done: AppendCallback) {
        if let Some(why) = self.poison_reason() {
            done(Err(LogError::Poisoned(why)));
            return;
        }
        if let Some(big) = records
            .iter()
            .find(|r| r.payload.len() + RECORD_OVERHEAD > segment::MAX_BODY)
        {
            done(Err(LogError::RecordTooLarge(big.payload.len())));
            return;
        }
        if let Err(Command::Append { done, .. }) = self.send(Command::Append { records, done }) {
            done(Err(LogError::Closed));
        }
    }

    /// [`Log::append`], waiting for the outcome on the calling thread.
    pub fn append_blocking(&self, records: Vec<NewRecord>) -> Result<Vec<Appended>, LogError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append(
            records,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(LogError::Closed))
    }

    /// Runs a retention pass now (removes closed segments past the configured limits).
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let (tx, rx) = mpsc::channel();
        if self.send(Command::Retention { now_ms, done: tx }).is_err() {
            return Err(LogError::Closed);
        }
        rx.recv().unwrap_or(Err(LogError::Closed))
    }

    /// Erases records in place: each payload becomes [`ERASED`] padded with spaces to its
    /// old length, with a new checksum, synced before this returns. Offsets, times and
    /// keys stay (nothing else moves); offsets already gone (retention) or not yet
    /// written are skipped. Returns how many records were rewritten.
    pub fn erase(&self, offsets: Vec<u64>) -> Result<u64, LogError> {
        if offsets.is_empty() {
            return Ok(0);
        }
        let (tx, rx) = mpsc::channel();
        if self.send(Command::Erase { offsets, done: tx }).is_err() {
            return Err(LogError::Closed);
        }
        rx.recv().unwrap_or(Err(LogError::Closed))
    }

    /// Reads up to `max` records starting at offset `from` (fewer at the end of the log).
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        segment::read(&self.shared, from, max)
    }

    /// Like [`Self::read`], but hands each record to `each` where it lies in the
    /// reader's buffer instead of copying it out; returns how many records were visited.
    /// For scans over much of the log (backfills); `each` must not read the log itself.
    pub fn scan(
        &self,
        from: u64,
        max: usize,
        mut each: impl FnMut(RecordRef<'_>),
    ) -> Result<usize, LogError> {
        segment::visit(&self.shared, from, max, &mut each)
    }

    /// Why the log is poisoned, if it is.
    pub fn poison_reason(&self) -> Option<String> {
        if !self.shared.is_poisoned.load(Ordering::Relaxed) {
            return None;
        }
        self.shared.poisoned.lock().ok().and_then(|p| p.clone())
    }

    /// Current counters.
    pub fn stats(&self) -> LogStats {
        let segments = self.shared.segments.read().map(|s| s.len()).unwrap_or(0);
        LogStats {
            start_offset: self.shared.start_offset.load(Ordering::Acquire),
            end_offset: self.shared.end_offset.load(Ordering::Acquire),
            total_bytes: self.shared.total_bytes.load(Ordering::Relaxed),
            segments,
            duplicates: self.shared.duplicates.load(Ordering::Relaxed),
            commits: self.shared.commits.load(Ordering::Relaxed),
            direct_io: self.shared.direct_io.load(Ordering::Relaxed),
        }
    }

    /// Offset the next record will get (every offset below it is durable).
    pub fn end_offset(&self) -> u64 {
        self.shared.end_offset.load(Ordering::Acquire)
    }

    /// Waits until the log holds a record at or past `offset` (that is, `end_offset() >
    /// offset`), or `timeout` passes; returns the end offset then.
    pub fn wait_for(&self, offset: u64, timeout: std::time::Duration) -> u64 {
        let (lock, cv) = &self.shared.grown;
        let Ok(mut guard) = lock.lock() else {
            return self.end_offset();
        };
        let mut left = timeout;
        loop {
            let end = self.end_offset();
            if end > offset || left.is_zero() {
                return end;
            }
            let start = std::time::Instant::now();
            guard = match cv.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(_) => return self.end_offset(),
            };
            left = left.saturating_sub(start.elapsed());
        }
    }

    /// Stops the writer after it has finished the requests already queued.
    pub fn close(&self) {
        let tx = self.tx.lock().ok().and_then(|mut t| t.take());
        if let Some(tx) = tx {
            let _ = tx.send(Command::Shutdown);
        }
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(format!("syncing directory {}", dir.display()), &e))
}
