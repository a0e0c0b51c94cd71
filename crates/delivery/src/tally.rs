//! What each trigger decided, counted from the outbox.
//!
//! Every decision of a trigger (sent, held out for the control group, capped, not in the
//! `if` segment) is an outbox record, one per destination of the trigger. The tally reads
//! the records appended since it last looked, so asking again costs only what is new.
//! Records queued again from a dead-letter list carry no key and are not decisions; they
//! are skipped.

use std::borrow::Cow;
use std::collections::BTreeMap;

use niyet_actions::Outcome;
use niyet_log::{Log, LogError};
use serde::{Deserialize, Serialize};

/// Decisions of one trigger for one destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Decisions {
    /// Sent (or to be sent) to the destination.
    pub send: u64,
    /// In the control group: recorded, not sent.
    pub holdout: u64,
    /// Over the trigger's frequency cap.
    pub capped: u64,
    /// The profile was not in the trigger's `if` segment.
    pub not_in_segment: u64,
}

impl Decisions {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Send => self.send += 1,
            Outcome::Holdout => self.holdout += 1,
            Outcome::Capped => self.capped += 1,
            Outcome::NotInSegment => self.not_in_segment += 1,
        }
    }

    /// Every decision.
    pub fn total(&self) -> u64 {
        self.send + self.holdout + self.capped + self.not_in_segment
    }
}

/// The part of an outbox record the tally reads.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    trigger: Cow<'a, str>,
    #[serde(borrow)]
    destination: Cow<'a, str>,
    outcome: Outcome,
}

/// Counts per (trigger, destination), and how far the outbox was read.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    next: u64,
    counts: BTreeMap<(String, String), Decisions>,
}

impl Tally {
    /// Reads the records appended since the last call; the counts so far.
    pub fn update(
        &mut self,
        log: &Log,
    ) -> Result<&BTreeMap<(String, String), Decisions>, LogError> {
        let end = log.end_offset();
        while self.next < end {
            let recs = match log.read(self.next, 4_096) {
                Ok(r) => r,
                // Removed by retention before it was read: counted from what is left.
                Err(LogError::BeforeStart { start, .. }) => {
                    self.next = start;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(last) = recs.last() else { break };
            self.next = last.offset + 1;
            for r in recs.iter().filter(|r| r.key != 0) {
                if let Ok(h) = serde_json::from_slice::<Head>(&r.payload) {
                    let k = (h.trigger.into_owned(), h.destination.into_owned());
                    self.counts.entry(k).or_default().add(h.outcome);
                }
            }
        }
        Ok(&self.counts)
    }
}
