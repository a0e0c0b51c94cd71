//! Syncing written commits on threads of their own, so that one commit's `fdatasync`
//! overlaps the next commit's staging and write.
//!
//! The writer thread writes each group commit and hands it over as a [`Ticket`]. A sync
//! thread takes every ticket written so far and syncs the file once for all of them: a
//! flush issued after a write has returned covers that write, so a sync that started
//! later also covers every earlier ticket. Tickets are published strictly in order
//! (readers see the new end, then the appenders are answered), whichever sync finishes
//! first.
//!
//! With direct I/O two syncs may be in flight at once: a commit written while the
//! previous one is being synced need not wait for that sync to end before its own starts,
//! which takes up to a whole sync off an acknowledgement under load. Buffered files get
//! one sync thread: after a failed `fdatasync` of a page-cache write, a concurrent one
//! can report success for pages that were lost.
//!
//! The writer keeps at most [`MAX_UNSYNCED`] tickets unpublished; past that it waits, so
//! a slow disk makes commits larger instead of more numerous.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::{AppendCallback, Appended, LogError, Record, Shared};

/// Tickets written but not yet published before the writer waits.
pub(crate) const MAX_UNSYNCED: usize = 2;

/// One request of a group commit, waiting for the sync.
pub(crate) struct Pending {
    pub done: AppendCallback,
    pub results: Vec<Appended>,
}

/// What readers learn once a commit is durable.
pub(crate) struct Published {
    /// The segment written to (its base offset).
    pub base: u64,
    /// Records in the segment, its length and newest record time, after the commit.
    pub count: u64,
    pub len: u64,
    pub max_time_ms: i64,
    /// Sparse index entries added by the commit.
    pub index: Vec<(u64, u64)>,
    /// Bytes written.
    pub written: u64,
    /// The log's end after the commit.
    pub end_offset: u64,
}

/// A written group commit waiting for its sync.
pub(crate) struct Ticket {
    pub file: Arc<File>,
    pub what: Arc<str>,
    pub pending: Vec<Pending>,
    pub staged: Vec<Record>,
    /// `None` for a commit that wrote nothing (only duplicates): it is answered in its
    /// turn, after the commits before it, since a duplicate's first copy may be among them.
    pub published: Option<Published>,
}

#[derive(Default)]
struct Queue {
    /// Written, not yet published, oldest first, with their sequence numbers.
    tickets: VecDeque<(u64, Ticket)>,
    /// Sequence number of the newest ticket queued (0: none yet).
    written: u64,
    /// Highest sequence number a sync has started to cover.
    claimed: u64,
    stop: bool,
}

struct Inner {
    shared: Arc<Shared>,
    queue: Mutex<Queue>,
    /// Wakes the sync threads.
    work: Condvar,
    /// Signalled after each publication (the writer waits on it for room or a drain).
    settled: Condvar,
}

/// The sync threads of one log.
pub(crate) struct Syncer {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl Syncer {
    pub fn start(shared: Arc<Shared>, direct: bool) -> Result<Self, LogError> {
        let inner = Arc::new(Inner {
            shared,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            settled: Condvar::new(),
        });
        let mut threads = Vec::new();
        for i in 0..if direct { 2 } else { 1 } {
            let inner = inner.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("niyet-log-sync-{i}"))
                    .spawn(move || inner.run())
                    .map_err(|e| LogError::io("spawning a log sync thread", &e))?,
            );
        }
        Ok(Self { inner, threads })
    }

    fn lock(&self) -> Option<MutexGuard<'_, Queue>> {
        self.inner.queue.lock().ok()
    }

    /// Hands a written commit over to be synced and published.
    pub fn submit(&self, ticket: Ticket) {
        let Some(mut q) = self.lock() else {
            fail(ticket, &LogError::Poisoned("log sync queue lock".into()));
            return;
        };
        if ticket.published.is_none() && q.tickets.is_empty() {
            // Nothing before it is waiting: answered at once.
            drop(q);
            answer(ticket);
            return;
        }
        q.written += 1;
        let seq = q.written;
        q.tickets.push_back((seq, ticket));
        drop(q);
        self.inner.work.notify_one();
    }

    /// Waits until fewer than `n` tickets are unpublished (`n = 1`: all published).
    pub fn wait_below(&self, n: usize) {
        let Some(mut q) = self.lock() else { return };
        while q.tickets.len() >= n.max(1) {
            q = match self.inner.settled.wait(q) {
                Ok(q) => q,
                Err(_) => return,
            };
        }
    }

    /// Waits until every ticket submitted so far is published.
    pub fn drain(&self) {
        self.wait_below(1);
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.drain();
        if let Some(mut q) = self.lock() {
            q.stop = true;
        }
        self.inner.work.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn run(&self) {
        let Ok(mut q) = self.queue.lock() else { return };
        loop {
            while !q.stop && q.claimed >= q.written {
                q = match self.work.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if q.claimed >= q.written {
                return;
            }
            let target = q.written;
            q.claimed = target;
            // Every queued ticket's write has returned, and a sync of the newest ticket's
            // file covers them all (a rotation drains the queue before the file changes).
            let Some((file, what)) = q
                .tickets
                .back()
                .map(|(_, t)| (t.file.clone(), t.what.clone()))
            else {
                continue;
            };
            drop(q);
            let outcome = file
                .sync_data()
                .map_err(|e| LogError::io(format!("syncing {what}"), &e));
            q = match self.queue.lock() {
                Ok(q) => q,
                Err(_) => return,
            };
            if let Err(e) = &outcome {
                self.shared.poison(e.to_string());
            }
            // Published under the lock, so two syncs finishing together keep the order.
            while q.tickets.front().is_some_and(|(s, _)| *s <= target) {
                let Some((_, t)) = q.tickets.pop_front() else {
                    break;
                };
                match (&outcome, self.shared.is_poisoned.load(Ordering::SeqCst)) {
                    (Ok(()), false) => {
                        let mut t = t;
                        publish(&mut t, &self.shared);
                        answer(t);
                    }
                    (Err(e), _) => fail(t, e),
                    (Ok(()), true) => {
                        let why = self
                            .shared
                            .poisoned
                            .lock()
                            .ok()
                            .and_then(|p| p.clone())
                            .unwrap_or_default();
                        fail(t, &LogError::Poisoned(why));
                    }
                }
            }
            self.settled.notify_all();
        }
    }
}

/// Makes a durable commit visible to readers.
fn publish(t: &mut Ticket, shared: &Shared) {
    let Some(p) = &t.published else { return };
    let staged = std::mem::take(&mut t.staged);
    if let (Some(first), Ok(mut r)) = (staged.first().map(|r| r.offset), shared.recent.write()) {
        r.extend(first, staged);
    }
    shared.commits.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut segs) = shared.segments.write() {
        // Updated in place: a clone would copy the whole sparse index (thousands of
        // entries late in a segment) on every commit.
        if let Some(m) = segs.get_mut(&p.base) {
            m.count = p.count;
            m.len = p.len;
            m.max_time_ms = p.max_time_ms;
            m.index.extend_from_slice(&p.index);
        }
    }
    shared.total_bytes.fetch_add(p.written, Ordering::Relaxed);
    shared.end_offset.store(p.end_offset, Ordering::Release);
    let (lock, cv) = &shared.grown;
    drop(lock.lock());
    cv.notify_all();
}

/// Answers a published (or empty) commit's appenders.
fn answer(t: Ticket) {
    for p in t.pending {
        (p.done)(Ok(p.results));
    }
}

fn fail(t: Ticket, e: &LogError) {
    for p in t.pending {
        (p.done)(Err(e.clone()));
    }
}
