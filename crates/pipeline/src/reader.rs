//! The reader: the stage ahead of the router that reads the log and parses each record.
//!
//! Parsing a stored event, reading its identifiers and preparing its [`Update`] (names
//! interned, score signals matched, what segment features read) need nothing the router
//! changes for events, so they run on a thread of their own while the router resolves
//! identities and hands updates to the partitions. The router keeps the identity graph,
//! the catalogue, suppression and everything a control record does.
//!
//! What keeps this exact: the reader goes through the log in order, as the router did,
//! so names are interned in the same order; and at a control record (`niyet.*`: a segment
//! definition changes what segment features read, an erasure what is suppressed, an
//! un-merge reads events back) it stops until the router has applied it, so every record
//! after it is read in the state it left. Names interned ahead of the router can end up in
//! a snapshot taken behind the reader; a replay from that snapshot interns them again in
//! the same order, so they keep their numbers.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use niyet_engine::extract::{self, Kind, PendingIds};
use niyet_engine::Update;
use niyet_identity::probable::Signals;
use niyet_identity::Ident;
use niyet_log::LogError;

use crate::Shared;

/// Records read per log read.
const READ: usize = 512;
/// Items handed over at a time: small enough that the router starts on the first events
/// of a large read while the rest are parsed.
const HAND_OVER: usize = 64;

/// An event read and prepared for the router.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Event time.
    pub time_ms: i64,
    pub ids: PendingIds,
    /// Whether the identifiers known without the graph are already suppressed (the
    /// update is then not prepared: an erased person's names are not interned).
    pub suppressed: bool,
    /// `None` when suppressed or when the event changes no profile.
    pub update: Option<Update>,
    /// Weak signals for probabilistic matching, when it is on.
    pub signals: Option<Signals>,
    /// The properties of a product event (see [`crate::catalogue`]).
    pub product: Option<serde_json::Value>,
}

/// One log record as the router receives it.
#[derive(Debug)]
pub(crate) enum What {
    /// An event for a profile.
    Event(Box<Prepared>),
    /// An admin action: the router parses and applies it, then lets the reader go on.
    Control(Vec<u8>),
    /// Nothing for profiles (another call type).
    Nothing,
    /// A record that could not be read as an event.
    Unreadable,
}

/// A log record read by the reader.
#[derive(Debug)]
pub(crate) struct Item {
    pub offset: u64,
    /// The record's receive time.
    pub time_ms: i64,
    pub what: What,
}

/// Items in log order, and the offset processing stands at once they are done (past
/// records retention removed before they were read, too).
#[derive(Debug)]
pub(crate) struct Chunk {
    pub items: Vec<Item>,
    pub next: u64,
}

/// The router's end of the reader.
pub(crate) struct Reader {
    pub chunks: Receiver<Chunk>,
    /// Tells the reader a control record is applied.
    pub applied: SyncSender<()>,
    pub thread: std::thread::JoinHandle<()>,
}

impl Reader {
    /// Starts reading from `from`.
    pub fn start(sh: Arc<Shared>, from: u64) -> std::io::Result<Reader> {
        // A few hand-overs of room: the reader stays a little ahead, never far.
        let (tx, chunks) = std::sync::mpsc::sync_channel(8);
        let (applied, wait_applied) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("niyet-reader".into())
            .spawn(move || {
                sh.priority.register();
                run(&sh, from, &tx, &wait_applied);
            })?;
        Ok(Reader {
            chunks,
            applied,
            thread,
        })
    }

    /// The next chunk if one is ready.
    pub fn try_next(&self) -> Result<Option<Chunk>, ()> {
        match self.chunks.try_recv() {
            Ok(c) => Ok(Some(c)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(()),
        }
    }

    /// Stops the reader and waits for its thread.
    pub fn stop(self) {
        drop(self.chunks);
        drop(self.applied);
        let _ = self.thread.join();
    }
}

fn run(sh: &Shared, mut next: u64, tx: &SyncSender<Chunk>, wait_applied: &Receiver<()>) {
    loop {
        let end = sh.log.end_offset();
        if next >= end {
            if sh.stop.load(Ordering::SeqCst) {
                return;
            }
            sh.log.wait_for(next, Duration::from_millis(100));
            continue;
        }
        let recs = match sh.log.read(next, READ) {
            Ok(r) => r,
            Err(LogError::BeforeStart { start, .. }) => {
                tracing::warn!(
                    from = next,
                    start,
                    "log records removed by retention were never processed"
                );
                next = start;
                if tx
                    .send(Chunk {
                        items: Vec::new(),
                        next,
                    })
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the log failed; processing stops");
                if let Ok(mut f) = sh.failed.lock() {
                    *f = Some(e.to_string());
                }
                return;
            }
        };
        let mut items = Vec::with_capacity(HAND_OVER.min(recs.len()));
        for r in recs {
            let what = read(sh, r.offset, &r.payload);
            let control = matches!(what, What::Control(_));
            items.push(Item {
                offset: r.offset,
                time_ms: r.time_ms,
                what,
            });
            next = r.offset + 1;
            if control || items.len() >= HAND_OVER {
                let chunk = Chunk {
                    items: std::mem::replace(&mut items, Vec::with_capacity(HAND_OVER)),
                    next,
                };
                if tx.send(chunk).is_err() {
                    return;
                }
                // The records after an admin action are read in the state it leaves.
                if control && wait_applied.recv().is_err() {
                    return;
                }
            }
        }
        if !items.is_empty() && tx.send(Chunk { items, next }).is_err() {
            return;
        }
    }
}

/// Reads one record.
fn read(sh: &Shared, offset: u64, payload: &[u8]) -> What {
    let view = match extract::parse(payload) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "record skipped by profiles");
            return What::Unreadable;
        }
    };
    match view.kind {
        Kind::Control => return What::Control(payload.to_vec()),
        Kind::Other => return What::Nothing,
        _ => {}
    }
    let cfg = &sh.cfg;
    let product = (view.kind == Kind::Track
        && view
            .name
            .as_deref()
            .is_some_and(|n| cfg.catalogue_events.iter().any(|e| e == n)))
    .then(|| {
        view.properties
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default()
    });
    let ids = view.pending_identifiers(&cfg.identity);
    let suppressed = sh.suppressed.any_of(ids.known().iter().map(Ident::key));
    let update = if suppressed {
        None
    } else {
        crate::update(sh, &view, offset)
    };
    let signals = (cfg.matching.enabled && !suppressed).then(|| view.signals());
    What::Event(Box::new(Prepared {
        time_ms: view.time_ms,
        ids,
        suppressed,
        update,
        signals,
        product,
    }))
}
