//! The bounded, windowed set of idempotency keys the writer consults before appending.

use niyet_model::hash::FastSet;
use std::collections::VecDeque;

/// Keys seen within `window_ms` of the newest record time, at most `max_keys` of them.
#[derive(Debug)]
pub(crate) struct DedupIndex {
    window_ms: i64,
    max_keys: usize,
    keys: FastSet<u128>,
    order: VecDeque<(i64, u128)>,
    newest_ms: i64,
}

impl DedupIndex {
    pub fn new(window_ms: i64, max_keys: usize) -> Self {
        Self {
            window_ms,
            max_keys,
            keys: FastSet::default(),
            order: VecDeque::new(),
            newest_ms: i64::MIN,
        }
    }

    /// Whether `key` was seen within the window.
    pub fn contains(&self, key: u128) -> bool {
        key != 0 && self.keys.contains(&key)
    }

    /// Remembers `key` at `time_ms`, forgetting what fell out of the window or the bound.
    pub fn insert(&mut self, key: u128, time_ms: i64) {
        if key == 0 || self.max_keys == 0 {
            return;
        }
        if self.keys.insert(key) {
            self.order.push_back((time_ms, key));
        }
        self.newest_ms = self.newest_ms.max(time_ms);
        let horizon = self.newest_ms.saturating_sub(self.window_ms);
        while let Some(&(t, k)) = self.order.front() {
            if t >= horizon && self.order.len() <= self.max_keys {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&k);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_by_window_and_bound() {
        let mut d = DedupIndex::new(1000, 3);
        d.insert(1, 0);
        d.insert(2, 500);
        assert!(d.contains(1) && d.contains(2));
        d.insert(3, 1200); // horizon 200: key 1 (t=0) leaves
        assert!(!d.contains(1) && d.contains(2) && d.contains(3));
        d.insert(4, 1300);
        d.insert(5, 1400); // bound 3: key 2 leaves
        assert!(!d.contains(2));
        assert_eq!(d.len(), 3);
        assert!(!d.contains(0), "0 means no key");
    }
}
