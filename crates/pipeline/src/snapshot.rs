//! Snapshot files of the derived state.
//!
//! ```text
//! file     := "NIYSNAP1" | version u32 LE | fingerprint u64 LE | offset u64 LE | body | trailer
//! body     := count u32 LE | section*            (count sections)
//! section  := len u64 LE | bytes                 (postcard encodings)
//! sections := graph | symbols | matcher | (API segments, catalogue) | profiles of partition 0 | …
//! trailer  := crc32(body) u32 LE | len(body) u64 LE
//! ```
//!
//! Sections are encoded in parallel (each partition's owner encodes its own profiles while
//! the router encodes the graph) and decoded in parallel on restore. A partition's
//! profiles are written to a file of their own as each piece fills, one piece buffer
//! reused throughout, and copied into the snapshot file at the end: a million profiles
//! (about 480 MB) never stand in memory, which would take that much fresh memory per
//! snapshot, each page faulted in and zeroed by the kernel while the work goes on.
//!
//! `offset` is the first log offset *not* reflected in the state. `fingerprint` hashes the
//! configuration that shapes derived state (merge rules, identifier settings); a snapshot
//! taken under another configuration is ignored and the state is rebuilt from the log, so
//! a changed rule applies to the whole history. Files are written to a temporary name,
//! synced and renamed; the newest valid file wins and older ones are removed.

use crate::{Partition, PipelineError};
use niyet_engine::{Profile, Symbols};
use niyet_identity::probable::Matcher;
use niyet_identity::{Graph, GraphSnapshot, Rules};
use niyet_model::walk::IdWalk;
use serde::Serialize;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"NIYSNAP1";
const VERSION: u32 = 6;
const HEADER: usize = 8 + 4 + 8 + 8;
const TRAILER: usize = 4 + 8;

/// A restored state.
pub(crate) struct Restored {
    pub offset: u64,
    pub graph: Graph,
    pub symbols: Symbols,
    pub matcher: Matcher,
    pub api_segments: Vec<crate::ApiSegment>,
    pub catalogue: crate::catalogue::Catalogue,
    pub partitions: Vec<Partition>,
    pub path: PathBuf,
}

/// A partition's section taken while its owner goes on working: the profiles as they
/// stood when it started, each encoded before it first changes (copy on write) or, if it
/// does not, a chunk at a time between batches of work. The bytes are a postcard
/// `Vec<(u64, Profile)>` of that moment.
///
/// The profiles of that moment are those with ids below the graph's next id of then: the
/// owner walks the partition's ids in that range ([`IdWalk`]).
pub(crate) struct PartitionEncoder {
    /// The partition's ids of that moment; those taken out of turn were encoded before a
    /// change, or found missing (made later).
    walk: IdWalk,
    /// Encoded `(id, profile)` items not yet spilled (whole items only).
    piece: Vec<u8>,
    /// Where full pieces go.
    spill: Option<Spill>,
    count: usize,
    failed: Option<String>,
    reply: std::sync::mpsc::SyncSender<Result<Section, PipelineError>>,
}

/// A section's bytes.
pub(crate) enum Section {
    /// In pieces written one after the other.
    Memory(Vec<Vec<u8>>),
    /// `head` (the item count) followed by the bytes of a file of their own.
    Spilled { head: Vec<u8>, spill: Spill },
}

/// The file a section is spilled to, as it is written; removed when dropped (copied into
/// a snapshot file by then, or given up).
pub(crate) struct Spill {
    file: fs::File,
    path: PathBuf,
    len: u64,
    crc: crc32fast::Hasher,
}

impl Spill {
    fn create(path: PathBuf) -> Result<Self, String> {
        let file =
            fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Spill {
            file,
            path,
            len: 0,
            crc: crc32fast::Hasher::new(),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.file
            .write_all(bytes)
            .map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Where partition `part`'s section of the snapshot at `offset` is spilled to (removed
/// with the other temporary files if a crash leaves it behind).
pub(crate) fn spill_path(dir: &Path, offset: u64, part: usize) -> PathBuf {
    dir.join(format!("{}.part{part}.tmp", file_name(offset)))
}

/// Paces one thread's share of a snapshot taken while work goes on, so that it never
/// takes the processor from the work itself: the thread spends at most `share` of the
/// time since the snapshot began encoding, in steps of about `step` each, and answers
/// its queue between two steps. Pacing decides only when pieces are encoded, never what
/// they hold (that is the state at the snapshot's offset either way).
#[derive(Debug)]
pub(crate) struct Pacer {
    began: std::time::Instant,
    spent: std::time::Duration,
    share: f64,
    step: std::time::Duration,
}

impl Pacer {
    pub(crate) fn new(share: f64, step: std::time::Duration) -> Self {
        Pacer {
            began: std::time::Instant::now(),
            spent: std::time::Duration::ZERO,
            share: share.clamp(0.01, 1.0),
            step,
        }
    }

    /// How long until the next step is due (zero: now).
    pub(crate) fn wait(&self) -> std::time::Duration {
        let allowed = self.began.elapsed().mul_f64(self.share);
        self.spent
            .checked_sub(allowed)
            .map_or(std::time::Duration::ZERO, |ahead| ahead.div_f64(self.share))
    }

    /// One step: `piece` is called (it encodes a few items and says whether all are
    /// done) until the step's time is used up; true once all are done.
    pub(crate) fn step(&mut self, mut piece: impl FnMut() -> bool) -> bool {
        let t = std::time::Instant::now();
        let done = loop {
            if piece() {
                break true;
            }
            if t.elapsed() >= self.step {
                break false;
            }
        };
        self.spent += t.elapsed();
        done
    }
}

impl PartitionEncoder {
    /// Starts a section spilled to `spill` (see [`spill_path`]).
    /// `(index, count)` say which ids are the partition's (`id % count == index`).
    pub(crate) fn start(
        (index, count): (u64, u64),
        end: u64,
        spill: PathBuf,
        reply: std::sync::mpsc::SyncSender<Result<Section, PipelineError>>,
    ) -> Self {
        let (spill, failed) = match fs::create_dir_all(spill.parent().unwrap_or(Path::new(".")))
            .map_err(|e| e.to_string())
            .and_then(|()| Spill::create(spill))
        {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        PartitionEncoder {
            walk: IdWalk::new(index, count, end),
            piece: Vec::new(),
            spill,
            count: 0,
            failed,
            reply,
        }
    }

    fn add(&mut self, id: u64, p: &Profile) {
        self.count += 1;
        if self.failed.is_some() {
            return;
        }
        if self.piece.capacity() == 0 {
            self.piece
                .reserve(niyet_identity::PIECE + niyet_identity::PIECE / 4);
        }
        match postcard::to_extend(&(id, p), std::mem::take(&mut self.piece)) {
            Ok(v) => self.piece = v,
            Err(e) => self.failed = Some(e.to_string()),
        }
        if self.piece.len() >= niyet_identity::PIECE {
            self.spill_piece();
        }
    }

    /// Writes the piece to the spill file and empties it for reuse.
    fn spill_piece(&mut self) {
        if let Some(s) = self.spill.as_mut() {
            if let Err(e) = s.put(&self.piece) {
                self.failed = Some(e);
            }
        }
        self.piece.clear();
    }

    /// Profile `id` is about to change, go or be made: encodes it first as it stood.
    pub(crate) fn before_change(&mut self, part: &Partition, id: u64) {
        if !self.walk.owes(id) {
            return;
        }
        // Missing: not there at the start either (a removal takes the profile first).
        if let Some(p) = part.get(&id) {
            self.add(id, p);
        }
        self.walk.mark(id);
    }

    /// Walks up to `n` more ids, encoding the profiles still owed; true once every id is
    /// walked.
    pub(crate) fn step(&mut self, part: &Partition, n: usize) -> bool {
        // Ids of profiles merged away, or of other partitions' merges, are gaps.
        for _ in 0..n {
            if self.walk.done() {
                break;
            }
            if let Some(p) = self
                .walk
                .advance()
                .and_then(|id| Some((id, part.get(&id)?)))
            {
                self.add(p.0, p.1);
            }
        }
        self.walk.done()
    }

    /// Encodes what is left and hands the section over.
    pub(crate) fn finish(mut self, part: &Partition) {
        self.step(part, usize::MAX);
        self.spill_piece();
        let spill = self.spill.take();
        let out = match (self.failed.take(), spill) {
            (Some(e), _) => Err(PipelineError::Io(format!("encoding snapshot: {e}"))),
            (None, None) => Err(PipelineError::Io("encoding snapshot: no spill file".into())),
            (None, Some(mut s)) => postcard::to_allocvec(&self.count)
                .map_err(|e| PipelineError::Io(format!("encoding snapshot: {e}")))
                .and_then(|head| {
                    s.file
                        .flush()
                        .map_err(|e| io(format!("writing {}", s.path.display()), e))?;
                    Ok(Section::Spilled { head, spill: s })
                }),
        };
        let _ = self.reply.send(out);
    }
}

/// Encodes any serializable value as a section.
pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, PipelineError> {
    postcard::to_allocvec(v).map_err(|e| PipelineError::Io(format!("encoding snapshot: {e}")))
}

/// Bytes of a snapshot file written between two syncs.
const SYNC_STEP: u64 = 8 << 20;

/// A snapshot file written a step at a time: each `SYNC_STEP` bytes are synced before the
/// next are written, and the writer rests as long as the sync took. A file of hundreds of
/// megabytes synced at once fills the device with writes that the log's commits then
/// wait behind (acknowledgements stalled for over 150 ms); in steps, a commit waits for
/// one step at most, and the device is left half of the time.
struct Stepped {
    file: fs::File,
    unsynced: u64,
}

impl Stepped {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.file.write_all(b)?;
        self.wrote(b.len() as u64)
    }

    /// Copies the rest of `src` in, file to file inside the kernel (`copy_file_range`), a
    /// step at a time; returns how many bytes.
    fn copy_from(&mut self, src: &mut fs::File) -> std::io::Result<u64> {
        let mut total = 0;
        loop {
            let room = SYNC_STEP.saturating_sub(self.unsynced).max(1);
            let n = std::io::copy(&mut std::io::Read::take(&mut *src, room), &mut self.file)?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
            self.wrote(n)?;
        }
    }

    fn wrote(&mut self, n: u64) -> std::io::Result<()> {
        self.unsynced += n;
        if self.unsynced >= SYNC_STEP {
            let t = std::time::Instant::now();
            self.file.sync_data()?;
            self.unsynced = 0;
            std::thread::sleep(t.elapsed());
        }
        Ok(())
    }
}

fn io(context: String, e: std::io::Error) -> PipelineError {
    PipelineError::Io(format!("{context}: {e}"))
}

fn file_name(offset: u64) -> String {
    format!("snapshot-{offset:020}.bin")
}

/// Writes a snapshot of `sections` durably; returns its size in bytes.
pub(crate) fn write(
    dir: &Path,
    fingerprint: u64,
    offset: u64,
    sections: &[Section],
) -> Result<u64, PipelineError> {
    fs::create_dir_all(dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(file_name(offset));
    let tmp = dir.join(format!("{}.tmp", file_name(offset)));
    let mut file = Stepped {
        file: fs::File::create(&tmp).map_err(|e| io(format!("creating {}", tmp.display()), e))?,
        unsynced: 0,
    };
    let mut head = Vec::with_capacity(HEADER);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&fingerprint.to_le_bytes());
    head.extend_from_slice(&offset.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    let count = (sections.len() as u32).to_le_bytes();
    crc.update(&count);
    len += 4;
    let w = |file: &mut Stepped, b: &[u8]| {
        file.write_all(b)
            .map_err(|e| io(format!("writing {}", tmp.display()), e))
    };
    w(&mut file, &head)?;
    w(&mut file, &count)?;
    for sec in sections {
        match sec {
            Section::Memory(pieces) => {
                let n: u64 = pieces.iter().map(|p| p.len() as u64).sum();
                let l = n.to_le_bytes();
                crc.update(&l);
                w(&mut file, &l)?;
                for piece in pieces {
                    crc.update(piece);
                    w(&mut file, piece)?;
                }
                len += 8 + n;
            }
            Section::Spilled { head, spill: sp } => {
                let n = head.len() as u64 + sp.len;
                let l = n.to_le_bytes();
                crc.update(&l);
                w(&mut file, &l)?;
                crc.update(head);
                w(&mut file, head)?;
                crc.combine(&sp.crc);
                // File to file inside the kernel (`copy_file_range`): the bytes come from
                // the page cache, where the spill left them moments ago.
                let copied = fs::File::open(&sp.path)
                    .and_then(|mut src| file.copy_from(&mut src))
                    .map_err(|e| {
                        io(
                            format!("copying {} into {}", sp.path.display(), tmp.display()),
                            e,
                        )
                    })?;
                if copied != sp.len {
                    return Err(PipelineError::Io(format!(
                        "{} holds {copied} bytes, not the {} written",
                        sp.path.display(),
                        sp.len
                    )));
                }
                len += 8 + n;
            }
        }
    }
    w(&mut file, &crc.finalize().to_le_bytes())?;
    w(&mut file, &len.to_le_bytes())?;
    file.file
        .sync_all()
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

/// Restores the newest valid snapshot taken under `fingerprint` into `parts` partitions.
/// Unreadable or mismatching files are reported through `skipped` and ignored.
pub(crate) fn load_latest(
    dir: &Path,
    fingerprint: u64,
    rules: &Rules,
    parts: usize,
    skipped: &mut Vec<String>,
) -> Option<Restored> {
    for (_, path) in list(dir) {
        match load(&path, fingerprint, rules, parts) {
            Ok(r) => return Some(r),
            Err(why) => skipped.push(format!("{}: {why}", path.display())),
        }
    }
    None
}

fn load(path: &Path, fingerprint: u64, rules: &Rules, parts: usize) -> Result<Restored, String> {
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
    let mut sections: Vec<&[u8]> = Vec::new();
    let count = u32_at(HEADER) as usize;
    let mut pos = HEADER + 4;
    for _ in 0..count {
        let l = u64_at(pos) as usize;
        let sec = bytes
            .get(pos + 8..pos + 8 + l)
            .ok_or("a section runs past the end")?;
        sections.push(sec);
        pos += 8 + l;
    }
    let [graph_bytes, symbol_bytes, matcher_bytes, segment_bytes, profile_sections @ ..] =
        sections.as_slice()
    else {
        return Err("missing sections".into());
    };
    let undecodable = |e: postcard::Error| format!("undecodable: {e}");
    // Decode the graph and each section of profiles on threads of their own.
    std::thread::scope(|s| {
        let graph = s.spawn(|| {
            postcard::from_bytes::<GraphSnapshot>(graph_bytes)
                .map(|g| Graph::restore(rules.clone(), g))
                .map_err(undecodable)
        });
        let decoders: Vec<_> = profile_sections
            .iter()
            .map(|sec| {
                s.spawn(move || {
                    postcard::from_bytes::<Vec<(u64, Profile)>>(sec).map_err(undecodable)
                })
            })
            .collect();
        let symbols = postcard::from_bytes::<Vec<Box<str>>>(symbol_bytes).map_err(undecodable)?;
        let matcher = postcard::from_bytes::<Matcher>(matcher_bytes).map_err(undecodable)?;
        let (api_segments, catalogue) = postcard::from_bytes::<(
            Vec<crate::ApiSegment>,
            crate::catalogue::Catalogue,
        )>(segment_bytes)
        .map_err(undecodable)?;
        let mut partitions: Vec<Partition> = (0..parts).map(|_| Partition::default()).collect();
        for d in decoders {
            let profiles = d.join().map_err(|_| "a decoder panicked".to_string())??;
            for (id, p) in profiles {
                partitions[(id % parts as u64) as usize].insert(id, Box::new(p));
            }
        }
        let graph = graph
            .join()
            .map_err(|_| "a decoder panicked".to_string())??;
        Ok(Restored {
            offset,
            graph,
            symbols: Symbols::from_names(symbols),
            matcher,
            api_segments,
            catalogue,
            partitions,
            path: path.to_path_buf(),
        })
    })
}
