//! Segment files: encoding, recovery scan, reads.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::dedup::DedupIndex;
use crate::{segment_path, sync_dir, LogConfig, LogError, Record, SegmentMeta, Shared};

/// Magic at the start of every segment file.
pub const MAGIC: &[u8; 8] = b"NIYLOG01";
/// Bytes of the segment header.
pub const SEGMENT_HEADER_LEN: u64 = 16;
/// Bytes a record takes besides its payload.
pub const RECORD_OVERHEAD: usize = 8 + BODY_FIXED;
const BODY_FIXED: usize = 8 + 8 + 16;
/// Largest body accepted when scanning; anything larger is a torn or damaged length.
pub(crate) const MAX_BODY: usize = 64 << 20;
/// A sparse index entry is kept at least every this many bytes.
/// (16 KiB: a read of one record, as each action does for its starting event, walks at
/// most this far; a gigabyte of log costs about 1 MiB of index.)
pub(crate) const INDEX_EVERY_BYTES: u64 = 16 << 10;

/// Appends the encoded record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, time_ms: i64, key: u128, payload: &[u8]) {
    let body_len = BODY_FIXED + payload.len();
    buf.reserve(8 + body_len);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    let crc_at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let body_at = buf.len();
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&time_ms.to_le_bytes());
    buf.extend_from_slice(&key.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[body_at..]);
    buf[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
}

pub(crate) fn header(base: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&base.to_le_bytes());
    h
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Why a scan stopped before the end of the file.
enum Stop {
    Clean,
    Damaged(String),
}

struct Scanned {
    meta: SegmentMeta,
    stop: Stop,
}

/// Reads a segment record by record from after its header, calling `each` for every whole,
/// checksum-valid record, and stops at the first damage.
fn scan(path: &Path, base: u64, mut each: impl FnMut(u64, i64, u128)) -> Result<Scanned, LogError> {
    let file =
        File::open(path).map_err(|e| LogError::io(format!("opening {}", path.display()), &e))?;
    let file_len = file
        .metadata()
        .map_err(|e| LogError::io(format!("reading {}", path.display()), &e))?
        .len();
    let mut meta = SegmentMeta {
        base,
        path: path.into(),
        count: 0,
        len: SEGMENT_HEADER_LEN,
        index: Vec::new(),
        max_time_ms: i64::MIN,
        reader: Default::default(),
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut head = [0u8; 16];
    if file_len < SEGMENT_HEADER_LEN || r.read_exact(&mut head).is_err() {
        meta.len = 0;
        return Ok(Scanned {
            meta,
            stop: Stop::Damaged("header is incomplete".into()),
        });
    }
    if &head[..8] != MAGIC || le_u64(&head[8..]) != base {
        meta.len = 0;
        return Ok(Scanned {
            meta,
            stop: Stop::Damaged("header does not match its file name".into()),
        });
    }
    let mut pos = SEGMENT_HEADER_LEN;
    let mut last_indexed: Option<u64> = None;
    let mut body = Vec::new();
    loop {
        if pos == file_len {
            return Ok(Scanned {
                meta,
                stop: Stop::Clean,
            });
        }
        let mut lh = [0u8; 8];
        if pos + 8 > file_len || r.read_exact(&mut lh).is_err() {
            return Ok(damaged(meta, pos, "record header is cut short"));
        }
        let len = u32::from_le_bytes([lh[0], lh[1], lh[2], lh[3]]) as usize;
        let crc = u32::from_le_bytes([lh[4], lh[5], lh[6], lh[7]]);
        if !(BODY_FIXED..=MAX_BODY).contains(&len) {
            return Ok(damaged(meta, pos, "record length is implausible"));
        }
        if pos + 8 + len as u64 > file_len {
            return Ok(damaged(meta, pos, "record body is cut short"));
        }
        body.resize(len, 0);
        if r.read_exact(&mut body).is_err() {
            return Ok(damaged(meta, pos, "record body is cut short"));
        }
        if crc32fast::hash(&body) != crc {
            return Ok(damaged(meta, pos, "record checksum mismatch"));
        }
        let offset = le_u64(&body[0..]);
        if offset != base + meta.count {
            return Ok(damaged(meta, pos, "record offset out of sequence"));
        }
        let time_ms = le_u64(&body[8..]) as i64;
        let mut k = [0u8; 16];
        k.copy_from_slice(&body[16..32]);
        let key = u128::from_le_bytes(k);
        if last_indexed.is_none_or(|p| pos - p >= INDEX_EVERY_BYTES) {
            meta.index.push((offset, pos));
            last_indexed = Some(pos);
        }
        each(offset, time_ms, key);
        meta.count += 1;
        meta.max_time_ms = meta.max_time_ms.max(time_ms);
        pos += 8 + len as u64;
        meta.len = pos;
    }
}

fn damaged(meta: SegmentMeta, pos: u64, what: &str) -> Scanned {
    Scanned {
        meta,
        stop: Stop::Damaged(format!("{what} at byte {pos}")),
    }
}

pub(crate) struct Recovered {
    pub segments: BTreeMap<u64, SegmentMeta>,
    pub end_offset: u64,
    /// The last segment, open for appending at its durable end.
    pub active: (File, SegmentMeta),
    pub dedup: DedupIndex,
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let entries =
        fs::read_dir(dir).map_err(|e| LogError::io(format!("listing {}", dir.display()), &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(format!("listing {}", dir.display()), &e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if let Ok(base) = stem.parse::<u64>() {
            out.push((base, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Opens the directory, scans every segment, repairs a torn tail in the last one, and
/// rebuilds the dedup index from the records inside the window.
pub(crate) fn recover(cfg: &LogConfig, now_ms: i64) -> Result<Recovered, LogError> {
    fs::create_dir_all(&cfg.dir)
        .map_err(|e| LogError::io(format!("creating {}", cfg.dir.display()), &e))?;
    let files = list_segments(&cfg.dir)?;
    let mut dedup = DedupIndex::new(cfg.dedup_window_ms, cfg.dedup_max_keys);
    let horizon = now_ms.saturating_sub(cfg.dedup_window_ms);
    let mut segments = BTreeMap::new();
    let mut expected_base: Option<u64> = None;
    let n = files.len();
    for (i, (base, path)) in files.into_iter().enumerate() {
        let last = i + 1 == n;
        if let Some(exp) = expected_base {
            if base != exp {
                return Err(LogError::Corrupt {
                    segment: path.display().to_string(),
                    detail: format!("starts at offset {base}, but the previous one ends at {exp}"),
                });
            }
        }
        let scanned = scan(&path, base, |_, t, k| {
            if t >= horizon {
                dedup.insert(k, t);
            }
        })?;
        let mut meta = scanned.meta;
        if let Stop::Damaged(detail) = scanned.stop {
            if !last {
                return Err(LogError::Corrupt {
                    segment: path.display().to_string(),
                    detail,
                });
            }
            repair_tail(&path, base, &mut meta)?;
        }
        expected_base = Some(base + meta.count);
        segments.insert(base, meta);
    }
    if segments.is_empty() {
        let meta = create_segment(&cfg.dir, 0)?;
        segments.insert(0, meta);
    }
    let (_, last) = segments
        .iter()
        .next_back()
        .ok_or_else(|| LogError::Corrupt {
            segment: cfg.dir.display().to_string(),
            detail: "no segment".into(),
        })?;
    let last = last.clone();
    let end_offset = last.base + last.count;
    let file = OpenOptions::new()
        .append(true)
        .open(&last.path)
        .map_err(|e| LogError::io(format!("opening {}", last.path.display()), &e))?;
    Ok(Recovered {
        segments,
        end_offset,
        active: (file, last),
        dedup,
    })
}

/// Cuts the last segment after its last whole record (rewriting a torn header).
fn repair_tail(path: &Path, base: u64, meta: &mut SegmentMeta) -> Result<(), LogError> {
    let ctx = |e: &std::io::Error| LogError::io(format!("repairing {}", path.display()), e);
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| ctx(&e))?;
    if meta.len < SEGMENT_HEADER_LEN {
        f.set_len(0).map_err(|e| ctx(&e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| ctx(&e))?;
        std::io::Write::write_all(&mut f, &header(base)).map_err(|e| ctx(&e))?;
        meta.len = SEGMENT_HEADER_LEN;
        meta.count = 0;
        meta.index.clear();
    } else {
        f.set_len(meta.len).map_err(|e| ctx(&e))?;
    }
    f.sync_all().map_err(|e| ctx(&e))
}

/// Creates an empty segment starting at `base`, durably (file and directory entry).
pub(crate) fn create_segment(dir: &Path, base: u64) -> Result<SegmentMeta, LogError> {
    let path = segment_path(dir, base);
    let ctx = |e: &std::io::Error| LogError::io(format!("creating {}", path.display()), e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| ctx(&e))?;
    std::io::Write::write_all(&mut f, &header(base)).map_err(|e| ctx(&e))?;
    f.sync_all().map_err(|e| ctx(&e))?;
    sync_dir(dir)?;
    Ok(empty_meta(base, path))
}

/// The metadata of a segment at `path` that holds only its header.
pub(crate) fn empty_meta(base: u64, path: PathBuf) -> SegmentMeta {
    SegmentMeta {
        base,
        path: path.into(),
        count: 0,
        len: SEGMENT_HEADER_LEN,
        index: Vec::new(),
        max_time_ms: i64::MIN,
        reader: Default::default(),
    }
}

/// Reads durable records from `from` on.
pub(crate) fn read(shared: &Shared, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
    let mut out = Vec::new();
    visit(shared, from, max, &mut |r: RecordRef<'_>| {
        out.push(Record {
            offset: r.offset,
            time_ms: r.time_ms,
            key: r.key,
            payload: r.payload.to_vec(),
        })
    })?;
    Ok(out)
}

/// A durable record, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub time_ms: i64,
    pub key: u128,
    pub payload: &'a [u8],
}

/// Hands up to `max` durable records from `from` on to `each`, in order, without copying
/// them; returns how many.
pub(crate) fn visit(
    shared: &Shared,
    from: u64,
    max: usize,
    each: &mut dyn FnMut(RecordRef<'_>),
) -> Result<usize, LogError> {
    let mut seen = 0usize;
    let mut next = from;
    let start = shared.start_offset.load(Ordering::Acquire);
    if from < start {
        return Err(LogError::BeforeStart {
            requested: from,
            start,
        });
    }
    if let Ok(r) = shared.recent.read() {
        if from >= r.first && from < r.first + r.records.len() as u64 {
            // Newest records, kept in memory by the writer after their commit.
            let skip = (from - r.first) as usize;
            for rec in r.records.iter().skip(skip).take(max) {
                each(RecordRef {
                    offset: rec.offset,
                    time_ms: rec.time_ms,
                    key: rec.key,
                    payload: &rec.payload,
                });
                seen += 1;
            }
            return Ok(seen);
        }
    }
    // Read before the bytes are: an erasure meanwhile makes what is kept stale.
    let rewrites = shared.rewrites.load(Ordering::Acquire);
    while seen < max {
        let seg = {
            let segs = shared
                .segments
                .read()
                .map_err(|_| LogError::Poisoned("segment table lock".into()))?;
            segs.range(..=next)
                .next_back()
                .map(|(_, m)| m)
                .filter(|m| next < m.base + m.count)
                .map(|m| {
                    let (seek_off, seek_pos) = match m.index.partition_point(|&(o, _)| o <= next) {
                        0 => (m.base, SEGMENT_HEADER_LEN),
                        i => m.index[i - 1],
                    };
                    (
                        m.path.clone(),
                        m.reader.clone(),
                        m.base,
                        m.base + m.count,
                        m.len,
                        seek_off,
                        seek_pos,
                    )
                })
        };
        let Some((path, reader, base, seg_end, len, mut seek_off, mut seek_pos)) = seg else {
            break;
        };
        let f = match reader.get() {
            Some(f) => f,
            None => {
                let f = File::open(&path)
                    .map_err(|e| LogError::io(format!("reading {}", path.display()), &e))?;
                // Two first readers may race: one handle is kept, the other dropped.
                let _ = reader.set(f);
                reader
                    .get()
                    .ok_or_else(|| LogError::Poisoned("segment reader".into()))?
            }
        };
        if let Ok(h) = shared.read_hints.lock() {
            if let Some(&(_, o, p)) = h
                .iter()
                .filter(|&&(b, o, _)| b == base && o <= next && o > seek_off)
                .max_by_key(|&&(_, o, _)| o)
            {
                (seek_off, seek_pos) = (o, p);
            }
        }
        let key = (shared.id, base, rewrites);
        let (end_off, end_pos) = read_segment(
            f, &path, key, seek_off, seek_pos, len, next, seg_end, max, &mut seen, each,
        )?;
        if let Ok(mut h) = shared.read_hints.lock() {
            // The oldest hint, or the one this read went on from, makes way.
            let slot = h
                .iter()
                .position(|&(b, o, _)| b == base && o == next)
                .unwrap_or_else(|| {
                    h.iter()
                        .enumerate()
                        .min_by_key(|(_, &(_, o, _))| o)
                        .map_or(0, |(i, _)| i)
                });
            h[slot] = (base, end_off, end_pos);
        }
        next = seg_end;
    }
    Ok(seen)
}

/// The payload an erased record keeps: the same length (so no other record moves),
/// this text and then spaces.
pub const ERASED: &[u8] = br#"{"type":"niyet.erased"}"#;

/// Turns an erased record's payload into [`ERASED`] and spaces, in place.
pub(crate) fn blank(payload: &mut [u8]) {
    payload.fill(b' ');
    if payload.len() >= ERASED.len() {
        payload[..ERASED.len()].copy_from_slice(ERASED);
    }
}

/// Overwrites the payloads of records `targets` (ascending, all in this segment) with
/// [`ERASED`] and fixes their checksums, in place; returns `(file position, bytes)` of
/// every write, for a caller that keeps some of the file in memory.
pub(crate) fn erase_in_segment(
    meta: &SegmentMeta,
    targets: &[u64],
) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
    use std::os::unix::fs::FileExt;
    let ctx = |e: &std::io::Error| LogError::io(format!("erasing in {}", meta.path.display()), e);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&meta.path)
        .map_err(|e| ctx(&e))?;
    let corrupt = |detail: String| LogError::Corrupt {
        segment: meta.path.display().to_string(),
        detail,
    };
    let mut writes = Vec::with_capacity(targets.len());
    let (mut offset, mut pos) = (meta.base, SEGMENT_HEADER_LEN);
    for &t in targets {
        if t < offset {
            // Targets come sorted; a repeat is already done.
            continue;
        }
        // Jump with the sparse index where it gets closer, then walk record headers.
        let i = meta.index.partition_point(|&(o, _)| o <= t);
        if i > 0 && meta.index[i - 1].0 > offset {
            (offset, pos) = meta.index[i - 1];
        }
        let mut head = [0u8; 8];
        loop {
            if pos + 8 > meta.len {
                return Err(corrupt(format!("offset {t} is not in the segment")));
            }
            f.read_exact_at(&mut head, pos).map_err(|e| ctx(&e))?;
            let blen = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if !(BODY_FIXED..=MAX_BODY).contains(&blen) {
                return Err(corrupt(format!("implausible length at offset {offset}")));
            }
            if offset == t {
                let mut body = vec![0u8; blen];
                f.read_exact_at(&mut body, pos + 8).map_err(|e| ctx(&e))?;
                if le_u64(&body) != t {
                    return Err(corrupt(format!("found another offset where {t} belongs")));
                }
                let payload = &mut body[BODY_FIXED..];
                blank(payload);
                let mut rec = Vec::with_capacity(8 + blen);
                rec.extend_from_slice(&head[..4]);
                rec.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
                rec.extend_from_slice(&body);
                f.write_all_at(&rec, pos).map_err(|e| ctx(&e))?;
                writes.push((pos, rec));
                pos += 8 + blen as u64;
                offset += 1;
                break;
            }
            pos += 8 + blen as u64;
            offset += 1;
        }
    }
    if !writes.is_empty() {
        f.sync_data().map_err(|e| ctx(&e))?;
    }
    Ok(writes)
}

/// Bytes read from a segment file at a time.
const READ_CHUNK: usize = 256 << 10;

/// Read positions remembered (see `Shared::read_hints`): one per reader that follows
/// the log (pipeline, destinations), with room to spare.
pub(crate) const READ_HINTS: usize = 8;

/// A reading thread's chunk buffer, kept between reads (a fresh one per call costs the
/// kernel a page clear for every 4 KiB of it), with the bytes of its last read.
///
/// A reader that fetches single records a little apart (a destination fetching each
/// action's starting event) finds the next one in the bytes it already has instead of
/// reading a chunk from the file for each. The bytes kept are durable ones, which never
/// change but for an erasure, which moves [`Shared::rewrites`] so that they are read again.
struct ReadBuf {
    buf: Vec<u8>,
    /// Whose bytes `buf[..filled]` are: `(log id, segment base, rewrites)`.
    kept: Option<(u64, u64, u64)>,
    /// File position of `buf[0]`.
    pos0: u64,
    filled: usize,
}

thread_local! {
    static READ_BUF: std::cell::RefCell<ReadBuf> = const {
        std::cell::RefCell::new(ReadBuf { buf: Vec::new(), kept: None, pos0: 0, filled: 0 })
    };
}

#[allow(clippy::too_many_arguments)]
fn read_segment(
    f: &File,
    path: &Path,
    key: (u64, u64, u64),
    mut offset: u64,
    pos: u64,
    len: u64,
    from: u64,
    seg_end: u64,
    max: usize,
    seen: &mut usize,
    each: &mut dyn FnMut(RecordRef<'_>),
) -> Result<(u64, u64), LogError> {
    use std::os::unix::fs::FileExt;
    let ctx = |e: &std::io::Error| LogError::io(format!("reading {}", path.display()), e);
    let corrupt = |detail: String| LogError::Corrupt {
        segment: path.display().to_string(),
        detail,
    };
    READ_BUF.with(|cell| {
        let mut rb = cell.borrow_mut();
        let ReadBuf {
            buf,
            kept,
            pos0,
            filled: kept_filled,
        } = &mut *rb;
        if buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        // `buf[at..filled]` holds file bytes from `file_pos - (filled - at)` on: those
        // kept from the last read when they reach `pos`.
        let (mut at, mut filled, mut file_pos) = match *kept {
            Some(k) if k == key && *pos0 <= pos && pos < *pos0 + *kept_filled as u64 => (
                (pos - *pos0) as usize,
                *kept_filled,
                *pos0 + *kept_filled as u64,
            ),
            _ => (0usize, 0usize, pos),
        };
        // Nothing is kept if this read fails part way.
        *kept = None;
        // A read of a few records (an action's starting event) reads 64 KiB, not a whole
        // chunk: enough for the next reads of a reader going forward a few records at a
        // time to find their records in what it keeps (a destination's send thread spent
        // 15 % less time with 64 KiB than with 16 KiB).
        let want = if max <= 16 { 64 << 10 } else { READ_CHUNK };
        // Makes at least `need` bytes available at `at` (fewer only at the end of file).
        let mut fill = |buf: &mut Vec<u8>, at: &mut usize, filled: &mut usize, need: usize| {
            if *filled - *at >= need {
                return Ok(());
            }
            buf.copy_within(*at..*filled, 0);
            *filled -= *at;
            *at = 0;
            if buf.len() < need {
                buf.resize(need, 0);
            }
            while *filled < need && file_pos < len {
                let room = (buf.len() - *filled)
                    .min((len - file_pos) as usize)
                    .min(want.max(need - *filled));
                let n = f
                    .read_at(&mut buf[*filled..*filled + room], file_pos)
                    .map_err(|e| ctx(&e))?;
                if n == 0 {
                    break;
                }
                *filled += n;
                file_pos += n as u64;
            }
            if *filled < need {
                return Err(ctx(&std::io::Error::from(
                    std::io::ErrorKind::UnexpectedEof,
                )));
            }
            Ok(())
        };
        while offset < seg_end && *seen < max {
            fill(buf, &mut at, &mut filled, 8)?;
            let lh = &buf[at..at + 8];
            let blen = u32::from_le_bytes([lh[0], lh[1], lh[2], lh[3]]) as usize;
            let crc = u32::from_le_bytes([lh[4], lh[5], lh[6], lh[7]]);
            if !(BODY_FIXED..=MAX_BODY).contains(&blen) {
                return Err(corrupt(format!("implausible length at offset {offset}")));
            }
            fill(buf, &mut at, &mut filled, 8 + blen)?;
            let body = &buf[at + 8..at + 8 + blen];
            at += 8 + blen;
            if offset < from {
                // Skipped without checking: only records returned are verified.
                offset += 1;
                continue;
            }
            if crc32fast::hash(body) != crc {
                return Err(corrupt(format!("checksum mismatch at offset {offset}")));
            }
            let rec_off = le_u64(body);
            if rec_off != offset {
                return Err(corrupt(format!(
                    "found offset {rec_off} where {offset} belongs"
                )));
            }
            let mut k = [0u8; 16];
            k.copy_from_slice(&body[16..32]);
            each(RecordRef {
                offset,
                time_ms: le_u64(&body[8..]) as i64,
                key: u128::from_le_bytes(k),
                payload: &body[BODY_FIXED..],
            });
            *seen += 1;
            offset += 1;
        }
        (*kept, *pos0, *kept_filled) = (Some(key), file_pos - filled as u64, filled);
        // Where the next record starts: `buf[at..]` holds the bytes from there on.
        Ok((offset, file_pos - (filled - at) as u64))
    })
}
