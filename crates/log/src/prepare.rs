//! The next segment file, written full of zeros ahead of need.
//!
//! An append past the end of a file makes every `fdatasync` commit the file's new size
//! and extents through the filesystem's journal as well as the data. Into a file whose
//! blocks are already written (zeros), a direct write only replaces data, and its sync
//! is a write and a device cache flush (BENCHMARKS.md, Ingest: 11–12 % more throughput
//! with it here). So while a segment fills, a background thread writes the next one,
//! and the writer takes it when it rotates.
//!
//! The zeros are paced by the active segment's fill: the file is kept a quarter ahead
//! of it (done when the active segment is 80 % full), so the extra writes follow the
//! log's own rate. Every commit's cache flush also flushes the zeros written since the
//! last one; written in a burst instead, they held commits back by tens of milliseconds
//! (BENCHMARKS.md, Ingest, 2026-12-03). Recovery stops at the zeros (a zero length is
//! implausible) and a closed segment is cut to its exact length, as for direct-I/O
//! padding.
//!
//! The file is written as `next.prep.tmp` and renamed to `next.prep` once complete and
//! synced, so a file of that name is always whole. When none is ready at a rotation,
//! the segment is created empty as before. Logs written through the page cache (the
//! outbox) prepare theirs too: their syncs into a growing file commit the journal as
//! well, and the other logs' syncs wait behind those writes.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::segment::{empty_meta, header};
use crate::{segment_path, sync_dir, LogError, SegmentMeta};

const CHUNK: usize = 256 << 10;
/// Pause after each chunk: at most about 250 MiB/s of zeros, whatever the log's rate.
const PAUSE: Duration = Duration::from_micros(1000);
/// How often a preparation that is far enough ahead looks at the fill again.
const WAIT: Duration = Duration::from_millis(5);

const DONE: &str = "next.prep";
const TEMP: &str = "next.prep.tmp";

/// What the writer tells the preparing thread.
#[derive(Default)]
struct Pace {
    /// Bytes in the active segment.
    fill: AtomicU64,
    /// Set when the log closes: the thread gives up.
    stop: AtomicBool,
}

/// The preparation under way, if any.
#[derive(Default)]
pub(crate) struct Preparer {
    job: Option<JoinHandle<Result<PathBuf, LogError>>>,
    pace: Arc<Pace>,
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.pace.stop.store(true, Ordering::Relaxed);
    }
}

impl Preparer {
    /// Tells the preparation how full the active segment is.
    pub fn fill(&self, bytes: u64) {
        self.pace.fill.store(bytes, Ordering::Relaxed);
    }

    /// Starts preparing a file of `bytes` in `dir` unless one is under way.
    pub fn start(&mut self, dir: &Path, bytes: u64) {
        if self.job.is_some() {
            return;
        }
        let dir = dir.to_path_buf();
        let pace = self.pace.clone();
        self.job = std::thread::Builder::new()
            .name("niyet-log-prepare".into())
            .spawn(move || prepare(&dir, bytes, &pace))
            .ok();
    }

    /// The prepared file, if its preparation has finished (never waits).
    pub fn take(&mut self) -> Option<PathBuf> {
        if !self.job.as_ref()?.is_finished() {
            return None;
        }
        match self.job.take()?.join() {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not prepare the next log segment; creating it empty");
                None
            }
            Err(_) => None,
        }
    }
}

/// Writes `dir/next.prep`: `bytes` (rounded up to 4 KiB) of zeros, synced.
/// The zeros keep a quarter ahead of the active segment's fill, at least a chunk.
fn prepare(dir: &Path, bytes: u64, pace: &Pace) -> Result<PathBuf, LogError> {
    let done = dir.join(DONE);
    let bytes = bytes.div_ceil(4096) * 4096;
    if fs::metadata(&done).is_ok_and(|m| m.len() >= bytes) {
        return Ok(done);
    }
    let temp = dir.join(TEMP);
    let began = std::time::Instant::now();
    let ctx = |e: &std::io::Error| LogError::io(format!("preparing {}", temp.display()), e);
    let open = |flags| {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(&temp)
    };
    // Through the page cache where the filesystem has no direct I/O (tmpfs).
    let f = open(libc::O_DIRECT)
        .or_else(|_| open(0))
        .map_err(|e| ctx(&e))?;
    // Direct writes need memory aligned to the block size.
    let raw = vec![0u8; CHUNK + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let zeros = &raw[off..off + CHUNK];
    let mut pos = 0u64;
    while pos < bytes {
        if pace.stop.load(Ordering::Relaxed) {
            return Err(LogError::io(
                format!("preparing {}", temp.display()),
                &std::io::Error::other("the log closed"),
            ));
        }
        let fill = pace.fill.load(Ordering::Relaxed);
        if pos >= fill.saturating_add(fill / 4).saturating_add(CHUNK as u64) {
            std::thread::sleep(WAIT);
            continue;
        }
        let n = (bytes - pos).min(CHUNK as u64) as usize;
        f.write_all_at(&zeros[..n], pos).map_err(|e| ctx(&e))?;
        pos += n as u64;
        std::thread::sleep(PAUSE);
    }
    f.sync_all().map_err(|e| ctx(&e))?;
    drop(f);
    fs::rename(&temp, &done).map_err(|e| ctx(&e))?;
    sync_dir(dir)?;
    tracing::debug!(
        bytes,
        took_ms = began.elapsed().as_millis() as u64,
        "next log segment prepared"
    );
    Ok(done)
}

/// Makes the prepared file at `prep` the segment starting at `base`: header first (so a
/// segment file always has one), then the name, both durable.
pub(crate) fn install(prep: &Path, dir: &Path, base: u64) -> Result<SegmentMeta, LogError> {
    let path = segment_path(dir, base);
    let ctx = |e: &std::io::Error| LogError::io(format!("creating {}", path.display()), e);
    let f = OpenOptions::new()
        .write(true)
        .open(prep)
        .map_err(|e| ctx(&e))?;
    f.write_all_at(&header(base), 0).map_err(|e| ctx(&e))?;
    f.sync_data().map_err(|e| ctx(&e))?;
    drop(f);
    fs::rename(prep, &path).map_err(|e| ctx(&e))?;
    sync_dir(dir)?;
    Ok(empty_meta(base, path))
}
