//! The single writer thread: group commit, rotation, retention.

use std::fs::{self, File};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use crate::dedup::DedupIndex;
use crate::file::AppendFile;
use crate::prepare::{self, Preparer};
use crate::segment::{self, INDEX_EVERY_BYTES, RECORD_OVERHEAD};
use crate::{
    AppendCallback, Appended, Command, LogConfig, LogError, NewRecord, RetentionReport,
    SegmentMeta, Shared,
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
    /// The next segment's file, written ahead.
    prep: Preparer,
}

/// One request of a group commit, waiting for the sync.
struct Pending {
    done: AppendCallback,
    results: Vec<Appended>,
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
                        let _ = done.send(self.retention(now_ms));
                    }
                    Command::Erase { offsets, done } => {
                        self.commit(&mut pending);
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

    /// Writes and syncs the staged buffer; publishes the new end to readers.
    fn flush(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.active.path.display().to_string();
        let staged = std::mem::take(&mut self.staged);
        let began = std::time::Instant::now();
        self.file.write_durable(&self.buf, self.active.len, &path)?;
        let took = began.elapsed();
        if took > std::time::Duration::from_millis(10) {
            tracing::debug!(
                bytes = self.buf.len(),
                took_ms = took.as_secs_f64() * 1e3,
                "slow log commit"
            );
        }
        if let (Some(first), Ok(mut r)) =
            (staged.first().map(|r| r.offset), self.shared.recent.write())
        {
            r.extend(first, staged);
        }
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        let written = self.buf.len() as u64;
        self.active.len += written;
        self.active.count = self.next_offset - self.active.base;
        self.buf.clear();
        // The next segment's file is prepared as this one fills (a log that stays small
        // never writes one), for buffered logs too: their `fdatasync` into a growing file
        // commits the filesystem's journal each time, whose writes the other logs' syncs
        // then wait behind.
        self.prep.fill(self.active.len);
        if self.active.len > self.cfg.segment_bytes / 8 {
            self.prep.start(&self.cfg.dir, self.cfg.segment_bytes);
        }
        if let Ok(mut segs) = self.shared.segments.write() {
            // Updated in place: a clone would copy the whole sparse index (thousands of
            // entries late in a segment) on every commit.
            match segs.get_mut(&self.active.base) {
                Some(m) => {
                    m.count = self.active.count;
                    m.len = self.active.len;
                    m.max_time_ms = self.active.max_time_ms;
                    let known = m.index.len().min(self.active.index.len());
                    m.index.extend_from_slice(&self.active.index[known..]);
                }
                None => {
                    segs.insert(self.active.base, self.active.clone());
                }
            }
        }
        self.shared
            .total_bytes
            .fetch_add(written, Ordering::Relaxed);
        self.shared
            .end_offset
            .store(self.next_offset, Ordering::Release);
        let (lock, cv) = &self.shared.grown;
        drop(lock.lock());
        cv.notify_all();
        Ok(())
    }

    /// Closes the active segment durably and starts the next one.
    fn rotate(&mut self) -> Result<(), LogError> {
        self.flush()?;
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
        Ok(())
    }

    fn commit(&mut self, pending: &mut Vec<Pending>) {
        let outcome = match self.poisoned() {
            Some(e) => Err(e),
            None => self.flush(),
        };
        if let Err(e) = &outcome {
            if !matches!(e, LogError::Poisoned(_)) {
                self.shared.poison(e.to_string());
            }
        }
        for p in pending.drain(..) {
            match &outcome {
                Ok(()) => (p.done)(Ok(p.results)),
                Err(e) => (p.done)(Err(e.clone())),
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
            let writes = segment::erase_in_segment(m, &offsets[lo..hi]);
            // Readers' kept bytes from before are stale now (also after a failure part
            // way through).
            self.shared.rewrites.fetch_add(1, Ordering::AcqRel);
            let writes = writes?;
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
