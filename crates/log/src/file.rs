//! Durable appends to the active segment file, with direct I/O where the filesystem
//! allows it.
//!
//! With direct I/O (`O_DIRECT`) a commit goes from an aligned buffer to the device without
//! being copied into (and zeroed in) the page cache, which is most of the kernel time of a
//! buffered append. Direct writes must cover whole 4 KiB blocks, so the last partial block
//! is kept in memory and rewritten, followed by the new bytes and zero padding; the file
//! may therefore end in zeros past the last record. Recovery already stops at the first
//! record whose length is implausible (a zero length is), and a segment is cut to its
//! exact length when it is closed. Where `O_DIRECT` is refused (e.g. tmpfs), ordinary
//! buffered writes are used.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::LogError;

const BLOCK: u64 = 4096;

pub(crate) struct AppendFile {
    file: File,
    direct: bool,
    /// Bytes of the last partial block already in the file (direct mode).
    tail: Vec<u8>,
    /// Aligned staging memory (direct mode).
    scratch: Vec<u8>,
    scratch_off: usize,
    scratch_cap: usize,
}

fn aligned(cap: usize) -> (Vec<u8>, usize) {
    let v = vec![0u8; cap + BLOCK as usize];
    let off = v.as_ptr().align_offset(BLOCK as usize);
    (v, off)
}

impl AppendFile {
    /// Opens `path` for appending at `len` (the durable end of its records).
    pub fn open(path: &Path, len: u64, want_direct: bool) -> Result<Self, LogError> {
        let ctx = |e: &std::io::Error| LogError::io(format!("opening {}", path.display()), e);
        let direct_file = if want_direct {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        } else {
            None
        };
        let direct = direct_file.is_some();
        let file = match direct_file {
            Some(f) => f,
            None => OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| ctx(&e))?,
        };
        let mut tail = Vec::new();
        if direct {
            let start = len - len % BLOCK;
            tail = vec![0u8; (len - start) as usize];
            File::open(path)
                .and_then(|f| f.read_exact_at(&mut tail, start))
                .map_err(|e| ctx(&e))?;
        }
        let (scratch, scratch_off) = if direct {
            aligned(1 << 20)
        } else {
            (Vec::new(), 0)
        };
        Ok(Self {
            file,
            direct,
            tail,
            scratch_cap: if direct { 1 << 20 } else { 0 },
            scratch,
            scratch_off,
        })
    }

    /// Writes `data` at `pos` (the current durable end) and syncs it.
    pub fn write_durable(&mut self, data: &[u8], pos: u64, what: &str) -> Result<(), LogError> {
        let werr = |e: &std::io::Error| LogError::io(format!("writing {what}"), e);
        if !self.direct {
            self.file.write_all_at(data, pos).map_err(|e| werr(&e))?;
        } else {
            let start = pos - pos % BLOCK;
            let tail = self.tail.len();
            debug_assert_eq!(start + tail as u64, pos);
            let total = tail + data.len();
            let padded = total.div_ceil(BLOCK as usize) * BLOCK as usize;
            if padded > self.scratch_cap {
                let cap = padded.next_power_of_two();
                let (v, off) = aligned(cap);
                self.scratch = v;
                self.scratch_off = off;
                self.scratch_cap = cap;
            }
            let region = &mut self.scratch[self.scratch_off..self.scratch_off + padded];
            region[..tail].copy_from_slice(&self.tail);
            region[tail..total].copy_from_slice(data);
            region[total..].fill(0);
            self.file
                .write_all_at(region, start)
                .map_err(|e| werr(&e))?;
            let end = pos + data.len() as u64;
            let keep_from = (end - end % BLOCK - start) as usize;
            self.tail.clear();
            self.tail.extend_from_slice(&region[keep_from..total]);
        }
        self.file
            .sync_data()
            .map_err(|e| LogError::io(format!("syncing {what}"), &e))
    }

    /// Cuts the file to exactly `len` bytes (drops direct-I/O padding) and syncs it.
    pub fn close_at(&self, len: u64, what: &str) -> Result<(), LogError> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| LogError::io(format!("closing {what}"), &e))
    }

    /// Bytes at `pos` of a file whose durable end is `len` were rewritten in place (by
    /// another handle): the copy of the last partial block kept for the next direct write
    /// takes them too, or that write would put the old bytes back.
    pub fn patched(&mut self, pos: u64, bytes: &[u8], len: u64) {
        if !self.direct || self.tail.is_empty() {
            return;
        }
        let tail_start = len - self.tail.len() as u64;
        let end = pos + bytes.len() as u64;
        if end <= tail_start || pos >= len {
            return;
        }
        let from = pos.max(tail_start);
        let to = end.min(len);
        let src = &bytes[(from - pos) as usize..(to - pos) as usize];
        self.tail[(from - tail_start) as usize..(to - tail_start) as usize].copy_from_slice(src);
    }

    /// Whether direct I/O is in use.
    pub fn is_direct(&self) -> bool {
        self.direct
    }
}
