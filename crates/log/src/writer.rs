//! The single writer thread: group commit, rotation, retention.

use std::fs::{self, File};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use crate::dedup::DedupIndex;
use crate::file::AppendFile;
use crate::prepare::{self, Preparer};
use crate::segment::{self, INDEX_EVERY_BYTES, RECORD_OVERHEAD};
use crate::sync::{Pending, Published, Syncer, Ticket, MAX_UNSYNCED};
use crate::{
    Appended, Command, LogConfig, LogError, NewRecord, RetentionReport, SegmentMeta, Shared,
};

pub(crate) struct Writer {
    cfg: LogConfig,
    shared: Arc<Shared>,
    file: AppendFile,
    active: SegmentMeta,
    /// Position of the last sparse index entry in the active segment.
    last_indexed: Option<u64>,
    next_offset: u64,
    dedup: DedupIndex,
    buf: Vec<u8>,
    /// The records encoded in `buf`, for [`crate::Recent`] once they are durable.
    staged: Vec<crate::Record>,
    /// The next segment's file, written ahead (direct I/O only).
    prep: Preparer,
    /// Sparse index entries of the active segment already handed to the syncer.
    index_sent: usize,
    /// Syncs written commits and publishes them (dropped last: it drains).
    sync: Syncer,
}

impl Writer {
    pub fn new(
        cfg: LogConfig,
        shared: Arc<Shared>,
        active: (File, SegmentMeta),
        dedup: DedupIndex,
    ) -> Result<Self, LogError> {
        let (file, meta) = active;
        drop(file);
        let file = AppendFile::open(&meta.path, meta.len, cfg.direct_io)?;
        shared.direct_io.store(file.is_direct(), Ordering::Relaxed);
        let next_offset = meta.base + meta.count;
        let last_indexed = meta.index.last().map(|&(_, p)| p);
        if let Ok(mut segs) = shared.segments.write() {
            segs.entry(meta.base).or_insert_with(|| meta.clone());
        }
        let sync = Syncer::start(shared.clone(), file.is_direct())?;
        let index_sent = meta.index.len();
        Ok(Self {
            cfg,
            shared,
            file,
            active: meta,
            last_indexed,
            next_offset,
            dedup,
            buf: Vec::with_capacity(1 << 20),
            staged: Vec::new(),
            prep: Preparer::default(),
            index_sent,
            sync,
        })
    }

    pub fn run(mut self, rx: Receiver<Command>) {
        let mut pending: Vec<Pending> = Vec::new();
        let mut carry: Option<Command> = None;
        loop {
            let first = match carry.take() {
                Some(c) => c,
                None => match rx.recv() {
                    Ok(c) => c,
                    Err(_) => return,
                },
            };
            // Room for one more commit in flight; what arrives meanwhile joins this one.
            self.sync.wait_below(MAX_UNSYNCED);
            let mut next = Some(first);
            let mut shutdown = false;
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append { records, done } => {
                        let results = self.stage(records);
                        pending.push(Pending { done, results });
                    }
                    Command::Retention { now_ms, done } => {
                        // Commit what is staged first, so retention sees a settled state.
                        self.commit(&mut pending);
                        self.sync.drain();
                        let _ = done.send(self.retention(now_ms));
                    }
                    Command::Erase { offsets, done } => {
                        self.commit(&mut pending);
                        self.sync.drain();
                        let _ = done.send(self.erase(offsets));
                    }
                    Command::Shutdown => shutdown = true,
                }
                if shutdown || self.buf.len() >= self.cfg.max_commit_bytes {
                    break;
                }
                next = rx.try_recv().ok();
            }
            self.commit(&mut pending);
            if shutdown {
                self.sync.drain();
                if self.poisoned().is_none() {
                    let what = self.active.path.display().to_string();
                    if let Err(e) = self.file.close_at(self.active.len, &what) {
                        self.shared.poison(e.to_string());
                    }
                }
                return;
            }
        }
    }

    fn poisoned(&self) -> Option<LogError> {
        if self.shared.is_poisoned.load(Ordering::Relaxed) {
            let why = self
                .shared
                .poisoned
                .lock()
                .ok()
                .and_then(|p| p.clone())
                .unwrap_or_default();
            Some(LogError::Poisoned(why))
        } else {
            None
        }
    }

    /// Encodes records into the commit buffer (rotating segments as needed).
    fn stage(&mut self, records: Vec<NewRecord>) -> Vec<Appended> {
        let mut results = Vec::with_capacity(records.len());
        for r in records {
            if self.poisoned().is_some() {
                break;
            }
            if self.dedup.contains(r.key) {
                self.shared.duplicates.fetch_add(1, Ordering::Relaxed);
                results.push(Appended::Duplicate);
                continue;
            }
            let rec_len = (RECORD_OVERHEAD + r.payload.len()) as u64;
            let staged_end = self.active.len + self.buf.len() as u64;
            if staged_end + rec_len > self.cfg.segment_bytes
                && staged_end > segment::SEGMENT_HEADER_LEN
            {
                if let Err(e) = self.rotate() {
                    self.shared.poison(e.to_string());
                    break;
                }
            }
            let pos = self.active.len + self.buf.len() as u64;
            if self
                .last_indexed
                .is_none_or(|p| pos - p >= INDEX_EVERY_BYTES)
            {
                self.active.index.push((self.next_offset, pos));
                self.last_indexed = Some(pos);
            }
            segment::encode(
                &mut self.buf,
                self.next_offset,
                r.time_ms,
                r.key,
                &r.payload,
            );
            self.dedup.insert(r.key, r.time_ms);
            self.active.max_time_ms = self.active.max_time_ms.max(r.time_ms);
            results.push(Appended::At(self.next_offset));
            self.staged.push(crate::Record {
                offset: self.next_offset,
                time_ms: r.time_ms,
                key: r.key,
                payload: r.payload,
            });
            self.next_offset += 1;
        }
        results
    }

    /// Writes the staged buffer and hands it, with the requests it answers, to the
    /// syncer, which publishes it to readers and answers them once it is durable.
    fn flush(&mut self, pending: Vec<Pending>) -> Result<(), LogError> {
        let what: Arc<str> = self.active.path.display().to_string().into();
        let file = self.file.sync_handle();
        if self.buf.is_empty() {
            self.sync.submit(Ticket {
                file,
                what,
                pending,
                staged: Vec::new(),
                published: None,
            });
            return Ok(());
        }
        if let Err(e) = self.file.write(&self.buf, self.active.len, &what) {
            for p in pending {
                (p.done)(Err(e.clone()));
            }
            return Err(e);
        }
        let staged = std::mem::take(&mut self.staged);
        let written = self.buf.len() as u64;
        self.active.len += written;
        self.active.count = self.next_offset - self.active.base;
        self.buf.clear();
        // The next segment's file is prepared as this one fills (a log that stays small
        // never writes one).
        self.prep.fill(self.active.len);
        if self.file.is_direct() && self.active.len > self.cfg.segment_bytes / 8 {
            self.prep.start(&self.cfg.dir, self.cfg.segment_bytes);
        }
        let index = self.active.index[self.index_sent.min(self.active.index.len())..].to_vec();
        self.index_sent = self.active.index.len();
        self.sync.submit(Ticket {
            file,
            what,
            pending,
            staged,
            published: Some(Published {
                base: self.active.base,
                count: self.active.count,
                len: self.active.len,
                max_time_ms: self.active.max_time_ms,
                index,
                written,
                end_offset: self.next_offset,
            }),
        });
        Ok(())
    }

    /// Closes the active segment durably and starts the next one.
    fn rotate(&mut self) -> Result<(), LogError> {
        self.flush(Vec::new())?;
        // Every commit to the closing file is durable and published before it changes.
        self.sync.drain();
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        let began = std::time::Instant::now();
        // The closed segment must end exactly after its last record.
        self.file
            .close_at(self.active.len, &self.active.path.display().to_string())?;
        let closed = began.elapsed();
        let prepared = self.prep.take().and_then(|p| {
            prepare::install(&p, &self.cfg.dir, self.next_offset)
                .inspect_err(|e| tracing::warn!(error = %e, "could not use the prepared log segment; creating it empty"))
                .ok()
        });
        let was_prepared = prepared.is_some();
        let meta = match prepared {
            Some(m) => m,
            None => segment::create_segment(&self.cfg.dir, self.next_offset)?,
        };
        let file = AppendFile::open(&meta.path, meta.len, self.cfg.direct_io)?;
        self.shared
            .direct_io
            .store(file.is_direct(), Ordering::Relaxed);
        self.shared
            .total_bytes
            .fetch_add(meta.len, Ordering::Relaxed);
        if let Ok(mut segs) = self.shared.segments.write() {
            segs.insert(meta.base, meta.clone());
        }
        tracing::debug!(
            close_ms = closed.as_secs_f64() * 1e3,
            took_ms = began.elapsed().as_secs_f64() * 1e3,
            prepared = was_prepared,
            "log segment rotated"
        );
        self.file = file;
        self.prep.fill(meta.len);
        self.active = meta;
        self.last_indexed = None;
        self.index_sent = self.active.index.len();
        Ok(())
    }

    /// Writes what is staged; `pending` is answered once it is durable.
    fn commit(&mut self, pending: &mut Vec<Pending>) {
        let pending = std::mem::take(pending);
        if let Some(e) = self.poisoned() {
            for p in pending {
                (p.done)(Err(e.clone()));
            }
            return;
        }
        if let Err(e) = self.flush(pending) {
            if !matches!(e, LogError::Poisoned(_)) {
                self.shared.poison(e.to_string());
            }
        }
    }

    fn erase(&mut self, mut offsets: Vec<u64>) -> Result<u64, LogError> {
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        offsets.sort_unstable();
        offsets.dedup();
        let metas: Vec<SegmentMeta> = {
            let segs = self
                .shared
                .segments
                .read()
                .map_err(|_| LogError::Poisoned("segment table lock".into()))?;
            segs.values().cloned().collect()
        };
        let mut n = 0;
        for m in &metas {
            let lo = offsets.partition_point(|&o| o < m.base);
            let hi = offsets.partition_point(|&o| o < m.base + m.count);
            if lo == hi {
                continue;
            }
            let writes = segment::erase_in_segment(m, &offsets[lo..hi])?;
            n += writes.len() as u64;
            if let Ok(mut r) = self.shared.recent.write() {
                let first = r.first;
                for &o in &offsets[lo..hi] {
                    if let Some(rec) = o
                        .checked_sub(first)
                        .and_then(|i| r.records.get_mut(i as usize))
                    {
                        segment::blank(&mut rec.payload);
                    }
                }
            }
            if m.base == self.active.base {
                for (pos, bytes) in &writes {
                    self.file.patched(*pos, bytes, self.active.len);
                }
            }
        }
        Ok(n)
    }

    fn retention(&mut self, now_ms: i64) -> Result<RetentionReport, LogError> {
        let mut report = RetentionReport::default();
        let max_age = self.cfg.retention_max_age_ms;
        let max_bytes = self.cfg.retention_max_bytes;
        if max_age.is_none() && max_bytes.is_none() {
            return Ok(report);
        }
        loop {
            let victim = {
                let segs = self
                    .shared
                    .segments
                    .read()
                    .map_err(|_| LogError::Poisoned("segment table lock".into()))?;
                let total = self.shared.total_bytes.load(Ordering::Relaxed);
                segs.values()
                    .next()
                    .filter(|m| m.base != self.active.base)
                    .filter(|m| {
                        max_age.is_some_and(|a| m.max_time_ms < now_ms.saturating_sub(a))
                            || max_bytes.is_some_and(|b| total > b)
                    })
                    .cloned()
            };
            let Some(v) = victim else { break };
            if let Ok(mut segs) = self.shared.segments.write() {
                segs.remove(&v.base);
                let start = segs.keys().next().copied().unwrap_or(self.next_offset);
                self.shared.start_offset.store(start, Ordering::Release);
            }
            fs::remove_file(&v.path)
                .map_err(|e| LogError::io(format!("removing {}", v.path.display()), &e))?;
            self.shared.total_bytes.fetch_sub(v.len, Ordering::Relaxed);
            report.segments_removed += 1;
            report.records_removed += v.count;
            report.bytes_removed += v.len;
        }
        if report.segments_removed > 0 {
            crate::sync_dir(&self.cfg.dir)?;
        }
        Ok(report)
    }
}
