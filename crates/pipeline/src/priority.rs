//! Processing yields the processor to ingest while it is far behind the log.
//!
//! Caught up, processing is what makes the product real-time (an event's segment change
//! or action follows within milliseconds), so it shares the processor evenly. Once it
//! has fallen far behind (the load is more than the machine can process), a few more
//! milliseconds cost it nothing, while acknowledgements starved of the processor hold
//! back every client: its threads then run `nice` steps lower until it has caught up
//! again (BENCHMARKS.md, Ingest, 2026-12-03). On Linux a nice value belongs to a thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rustix::process::{getpriority_process, setpriority_process, Pid};

/// Whether processing should run lowered, `behind` records behind the log: lowered at
/// `high` or more, back once at `low` or less (hysteresis, so it does not flap).
pub(crate) fn lowered(was: bool, behind: u64, high: u64, low: u64) -> bool {
    if was {
        behind > low
    } else {
        behind >= high
    }
}

/// The processing threads and whether they run lowered.
pub(crate) struct Priority {
    nice: i32,
    high: u64,
    low: u64,
    /// Each registered thread with the nice value it started with.
    threads: Mutex<Vec<(Pid, i32)>>,
    lowered: AtomicBool,
    /// Whether the warning that lowering cannot be undone was given (once per process).
    warned: AtomicBool,
}

impl Priority {
    pub fn new(nice: i32, (high, low): (u64, u64)) -> Self {
        Self {
            nice,
            high,
            low: low.min(high),
            threads: Mutex::new(Vec::new()),
            lowered: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        }
    }

    /// Registers the calling thread (at its start) as a processing thread.
    pub fn register(&self) {
        if self.nice <= 0 {
            return;
        }
        let tid = rustix::thread::gettid();
        let base = getpriority_process(Some(tid)).unwrap_or(0);
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nice).current;
        if !can_restore(base, rustix::process::geteuid().is_root(), limit) {
            // Lowered, the thread could never be raised back: processing would stay
            // behind ingest for the rest of the process.
            if self.warned.swap(true, Ordering::Relaxed) {
                return;
            }
            tracing::warn!(
                nice = base,
                "processing keeps its priority when behind: this process may not raise a thread's priority back (RLIMIT_NICE; run as root or raise the limit to use [profiles] nice)"
            );
            return;
        }
        if let Ok(mut t) = self.threads.lock() {
            t.push((tid, base));
            if self.lowered.load(Ordering::Relaxed) {
                set(tid, base + self.nice);
            }
        }
    }

    /// Called by the router with how far processing is behind the log.
    pub fn behind(&self, records: u64) {
        if self.nice <= 0 {
            return;
        }
        let was = self.lowered.load(Ordering::Relaxed);
        let now = lowered(was, records, self.high, self.low);
        if now == was {
            return;
        }
        self.lowered.store(now, Ordering::Relaxed);
        tracing::debug!(
            behind = records,
            lowered = now,
            "processing priority changed"
        );
        if let Ok(t) = self.threads.lock() {
            for &(tid, base) in t.iter() {
                set(tid, if now { base + self.nice } else { base });
            }
        }
    }
}

/// Whether a thread at nice `base` may be lowered and later raised back: root may always;
/// others only as far as `RLIMIT_NICE` allows (a soft limit of `n` permits nice values
/// down to `20 - n`; `None` is unlimited).
pub(crate) fn can_restore(base: i32, root: bool, limit: Option<u64>) -> bool {
    root || limit.is_none_or(|n| 20 - (n.min(40) as i32) <= base)
}

fn set(tid: Pid, nice: i32) {
    if let Err(e) = setpriority_process(Some(tid), nice.min(19)) {
        tracing::warn!(error = %e, nice, "could not change the processing threads' priority");
    }
}

#[cfg(test)]
mod tests {
    use super::{can_restore, lowered};

    #[test]
    fn lowering_is_used_only_where_it_can_be_undone() {
        // Root, or an unlimited RLIMIT_NICE: always.
        assert!(can_restore(0, true, Some(0)));
        assert!(can_restore(0, false, None));
        // The default soft limit 0 permits nothing below 20: a thread at 0 stays put.
        assert!(!can_restore(0, false, Some(0)));
        // A limit of 20 permits going back down to 0, not to -1.
        assert!(can_restore(0, false, Some(20)));
        assert!(!can_restore(-1, false, Some(20)));
        assert!(can_restore(5, false, Some(15)));
        assert!(!can_restore(5, false, Some(14)));
    }

    #[test]
    fn lowered_far_behind_and_back_once_caught_up() {
        let (high, low) = (50_000, 5_000);
        assert!(!lowered(false, 0, high, low));
        assert!(!lowered(false, 49_999, high, low));
        assert!(lowered(false, 50_000, high, low));
        // Between the two: stays as it was.
        assert!(lowered(true, 20_000, high, low));
        assert!(!lowered(false, 20_000, high, low));
        assert!(lowered(true, 5_001, high, low));
        assert!(!lowered(true, 5_000, high, low));
    }
}
