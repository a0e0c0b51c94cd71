//! Snapshot files of the derived state.
//!
//! ```text
//! file    := "NIYSNAP1" | version u32 LE | fingerprint u64 LE | offset u64 LE | body | trailer
//! body    := postcard(graph, symbols, profiles)
//! trailer := crc32(body) u32 LE | len(body) u64 LE
//! ```
//!
//! `offset` is the first log offset *not* reflected in the state. `fingerprint` hashes the
//! configuration that shapes derived state (merge rules, identifier settings); a snapshot
//! taken under another configuration is ignored and the state is rebuilt from the log, so
//! a changed rule applies to the whole history. Files are written to a temporary name,
//! synced and renamed; the newest valid file wins and older ones are removed.

use crate::PipelineError;
use niyet_engine::Profile;
use niyet_identity::{GraphSnapshot, GraphView};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"NIYSNAP1";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 8;
const TRAILER: usize = 4 + 8;

#[derive(Serialize)]
pub(crate) struct BodyRef<'a> {
    pub graph: GraphView<'a>,
    pub symbols: &'a [Box<str>],
    pub profiles: Vec<(u64, &'a Profile)>,
}

#[derive(Deserialize)]
pub(crate) struct Body {
    pub graph: GraphSnapshot,
    pub symbols: Vec<Box<str>>,
    pub profiles: Vec<(u64, Profile)>,
}

pub(crate) struct Loaded {
    pub offset: u64,
    pub body: Body,
    pub path: PathBuf,
}

fn io(context: String, e: std::io::Error) -> PipelineError {
    PipelineError::Io(format!("{context}: {e}"))
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn file_name(offset: u64) -> String {
    format!("snapshot-{offset:020}.bin")
}

/// Writes a snapshot durably; returns its size in bytes.
pub(crate) fn write(
    dir: &Path,
    fingerprint: u64,
    offset: u64,
    body: &BodyRef<'_>,
) -> Result<u64, PipelineError> {
    fs::create_dir_all(dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(file_name(offset));
    let tmp = dir.join(format!("{}.tmp", file_name(offset)));
    let mut file =
        fs::File::create(&tmp).map_err(|e| io(format!("creating {}", tmp.display()), e))?;
    let mut head = Vec::with_capacity(HEADER);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&fingerprint.to_le_bytes());
    head.extend_from_slice(&offset.to_le_bytes());
    file.write_all(&head)
        .map_err(|e| io(format!("writing {}", tmp.display()), e))?;
    // The encoder writes many tiny pieces: buffer them before the checksum and the file
    // see them, so both work on 1 MiB chunks.
    let cw = CrcWriter {
        inner: file,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    let mut w = BufWriter::with_capacity(1 << 20, cw);
    postcard::to_io(body, &mut w)
        .map_err(|e| PipelineError::Io(format!("encoding snapshot: {e}")))?;
    let cw = w
        .into_inner()
        .map_err(|e| PipelineError::Io(format!("writing {}: {e}", tmp.display())))?;
    let (mut file, crc, len) = (cw.inner, cw.crc.finalize(), cw.len);
    file.write_all(&crc.to_le_bytes())
        .and_then(|_| file.write_all(&len.to_le_bytes()))
        .map_err(|e| io(format!("writing {}", tmp.display()), e))?;
    file.sync_all()
        .map_err(|e| io(format!("syncing {}", tmp.display()), e))?;
    fs::rename(&tmp, &path).map_err(|e| io(format!("renaming {}", tmp.display()), e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    // Keep only the newest file.
    for (off, p) in list(dir) {
        if off != offset {
            let _ = fs::remove_file(p);
        }
    }
    Ok(HEADER as u64 + len + TRAILER as u64)
}

fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix("snapshot-")
            .and_then(|r| r.strip_suffix(".bin"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((n, e.path()));
        } else if name.ends_with(".tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
    out.sort_unstable_by_key(|o| std::cmp::Reverse(o.0));
    out
}

/// Loads the newest valid snapshot taken under `fingerprint`. Unreadable or mismatching
/// files are reported through `skipped` and ignored.
pub(crate) fn load_latest(
    dir: &Path,
    fingerprint: u64,
    skipped: &mut Vec<String>,
) -> Option<Loaded> {
    for (_, path) in list(dir) {
        match load(&path, fingerprint) {
            Ok(l) => return Some(l),
            Err(why) => skipped.push(format!("{}: {why}", path.display())),
        }
    }
    None
}

fn load(path: &Path, fingerprint: u64) -> Result<Loaded, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < HEADER + TRAILER || &bytes[..8] != MAGIC {
        return Err("not a snapshot file".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
    if u32_at(8) != VERSION {
        return Err(format!("format version {} is not {VERSION}", u32_at(8)));
    }
    if u64_at(12) != fingerprint {
        return Err("taken under another identity/profile configuration".into());
    }
    let offset = u64_at(20);
    let t = bytes.len() - TRAILER;
    let (crc, len) = (u32_at(t), u64_at(t + 4));
    let body = &bytes[HEADER..t];
    if body.len() as u64 != len || crc32fast::hash(body) != crc {
        return Err("checksum mismatch (torn or damaged file)".into());
    }
    let body: Body = postcard::from_bytes(body).map_err(|e| format!("undecodable: {e}"))?;
    Ok(Loaded {
        offset,
        body,
        path: path.to_path_buf(),
    })
}
