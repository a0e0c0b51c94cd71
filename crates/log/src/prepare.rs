//! The next segment file, written full of zeros ahead of need.
//!
//! An append past the end of a file makes every `fdatasync` commit the file's new size
//! and extents through the filesystem's journal as well as the data. Into a file whose
//! blocks are already written (zeros), a direct write only replaces data, and its sync
//! is a write and a device cache flush (BENCHMARKS.md, Ingest: 11–12 % more throughput
//! with it here). So while a segment fills past half, a background thread writes
//! the next one, paced so that it does not crowd the commits, and the writer takes it
//! when it rotates. Recovery stops at the zeros (a zero length is implausible) and a
//! closed segment is cut to its exact length, as for direct-I/O padding.
//!
//! The file is written as `next.prep.tmp` and renamed to `next.prep` once complete and
//! synced, so a file of that name is always whole. When none is ready at a rotation,
//! the segment is created empty as before; without direct I/O nothing is prepared.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::segment::{empty_meta, header};
use crate::{segment_path, sync_dir, LogError, SegmentMeta};

const CHUNK: usize = 1 << 20;
/// Pause after each chunk: at most about 250 MiB/s of zeros (a 128 MiB file in about
/// 0.5–0.7 s here), while the second half of a 128 MiB segment takes a log at 300,000
/// events/s about 0.7 s to fill; a file not ready in time is simply not used.
const PAUSE: Duration = Duration::from_millis(3);

const DONE: &str = "next.prep";
const TEMP: &str = "next.prep.tmp";

/// The preparation under way, if any.
#[derive(Default)]
pub(crate) struct Preparer {
    job: Option<JoinHandle<Result<PathBuf, LogError>>>,
}

impl Preparer {
    /// Starts preparing a file of `bytes` in `dir` unless one is under way.
    pub fn start(&mut self, dir: &Path, bytes: u64) {
        if self.job.is_some() {
            return;
        }
        let dir = dir.to_path_buf();
        self.job = std::thread::Builder::new()
            .name("niyet-log-prepare".into())
            .spawn(move || prepare(&dir, bytes))
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
fn prepare(dir: &Path, bytes: u64) -> Result<PathBuf, LogError> {
    let done = dir.join(DONE);
    let bytes = bytes.div_ceil(4096) * 4096;
    if fs::metadata(&done).is_ok_and(|m| m.len() >= bytes) {
        return Ok(done);
    }
    let temp = dir.join(TEMP);
    let ctx = |e: &std::io::Error| LogError::io(format!("preparing {}", temp.display()), e);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&temp)
        .map_err(|e| ctx(&e))?;
    // Direct writes need memory aligned to the block size.
    let raw = vec![0u8; CHUNK + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let zeros = &raw[off..off + CHUNK];
    let mut pos = 0u64;
    while pos < bytes {
        let n = (bytes - pos).min(CHUNK as u64) as usize;
        f.write_all_at(&zeros[..n], pos).map_err(|e| ctx(&e))?;
        pos += n as u64;
        std::thread::sleep(PAUSE);
    }
    f.sync_all().map_err(|e| ctx(&e))?;
    drop(f);
    fs::rename(&temp, &done).map_err(|e| ctx(&e))?;
    sync_dir(dir)?;
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
