//! A walk over the ids handed out before a moment, for snapshots taken while work goes on.
//!
//! Profile ids are handed out in turn, so the profiles (or identity nodes) of a moment are
//! those with ids below the next id of then. A snapshot walks that range a few ids at a
//! time instead of listing what exists when it starts (a pass over a million entries and
//! a set sized for them, a pause of whatever holds the state); an entry about to change
//! before the walk reaches it is taken out of turn and marked, one bit per id.

/// The ids `start, start + stride, …` below `end`, walked in order, and those ahead of the
/// walk already taken out of turn.
#[derive(Debug, Clone, Default)]
pub struct IdWalk {
    next: u64,
    stride: u64,
    end: u64,
    /// One bit per id of the walk (by `id / stride`).
    ahead: Vec<u64>,
}

impl IdWalk {
    /// A walk over `start, start + stride, …` below `end`.
    pub fn new(start: u64, stride: u64, end: u64) -> Self {
        let stride = stride.max(1);
        IdWalk {
            next: start,
            stride,
            end,
            ahead: vec![0; end.div_ceil(stride).div_ceil(64) as usize],
        }
    }

    /// Whether `id` (one of the walk's) is still owed: below the end, not walked yet, not
    /// taken out of turn.
    pub fn owes(&self, id: u64) -> bool {
        let k = id / self.stride;
        id >= self.next && id < self.end && self.ahead[(k / 64) as usize] & (1 << (k % 64)) == 0
    }

    /// `id` (owed) is taken out of turn: the walk passes over it.
    pub fn mark(&mut self, id: u64) {
        let k = id / self.stride;
        self.ahead[(k / 64) as usize] |= 1 << (k % 64);
    }

    /// Moves on by one id: that id if it is still owed.
    pub fn advance(&mut self) -> Option<u64> {
        if self.done() {
            return None;
        }
        let id = self.next;
        let owed = self.owes(id);
        self.next += self.stride;
        owed.then_some(id)
    }

    /// Whether every id is walked.
    pub fn done(&self) -> bool {
        self.next >= self.end
    }
}

#[cfg(test)]
mod tests {
    use super::IdWalk;

    #[test]
    fn a_walk_passes_over_ids_taken_out_of_turn() {
        let mut w = IdWalk::new(1, 2, 12);
        assert!(w.owes(7) && !w.owes(12) && !w.owes(13));
        w.mark(7);
        assert!(!w.owes(7));
        let mut got = Vec::new();
        while !w.done() {
            got.extend(w.advance());
        }
        assert_eq!(got, vec![1, 3, 5, 9, 11]);
        assert!(!w.owes(3), "walked");
        assert_eq!(w.advance(), None);
    }
}
