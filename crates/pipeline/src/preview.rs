//! Dry runs: how many profiles a rule would hold now, without defining a segment.
//!
//! The rule is compiled next to the segments in force (so it shares their features and can
//! refer to them). Features the segments already keep are read as they are; features that
//! nothing keeps yet are filled from the log for this run only, exactly as a backfill
//! would. While the profiles are read, partition owners wait (readers of the API do not),
//! so the answer is the state at one moment; nothing is written anywhere.

use std::time::Instant;

use niyet_engine::segments::{SegEvent, Segments};
use niyet_engine::Profile;
use niyet_identity::ProfileId;
use niyet_model::format_rfc3339_millis;
use niyet_rules::{Membership, Rule};
use serde_json::{json, Value};

use crate::{event_owners, scan_in_parallel, Pipeline, PipelineError};

/// A dry run's thread that panicked.
fn failed(_: Box<dyn std::any::Any + Send>) -> PipelineError {
    PipelineError::Invalid("a dry-run thread failed".into())
}

/// The name the candidate rule goes by while it is evaluated (never a segment's name:
/// names given through the API or the configuration cannot hold a control character).
const CANDIDATE: &str = "\u{1}preview";

impl Pipeline {
    /// How many profiles `rule` holds at the current processing time, with up to `sample`
    /// of their ids (lowest first).
    pub fn preview(&self, rule: &Rule, sample: usize) -> Result<Value, PipelineError> {
        let sh = &self.shared;
        let started = Instant::now();
        let segs = sh
            .segments
            .read()
            .map_err(|_| PipelineError::Stopped)?
            .clone();
        let mut defs: Vec<(String, Rule)> = (0..segs.set.len())
            .map(|i| (segs.set.name(i).to_string(), segs.set.rule(i).clone()))
            .collect();
        defs.push((CANDIDATE.to_string(), rule.clone()));
        let (set, r) = segs
            .set
            .redefine(&defs)
            .map_err(|e| PipelineError::Invalid(e.to_string()))?;
        let candidate = set.len() - 1;
        // The candidate comes last, so every feature and segment in force keeps its id;
        // otherwise a profile's state is renumbered before it is read.
        let same_ids = r.features_kept && r.segments_kept;
        let cand = {
            let mut syms = sh
                .symbols
                .read()
                .map_err(|_| PipelineError::Stopped)?
                .clone();
            Segments::with_set(set, &mut syms)
        };
        // Processing time; before any timer has run, the clock less the timers' lag.
        let now = match self.time_reached() {
            i64::MIN => sh.cfg.clock.0.now_ms() - sh.cfg.timer_lag_ms,
            t => t,
        };

        let read_all = || -> Result<Vec<_>, PipelineError> {
            sh.partitions
                .iter()
                .map(|p| p.read().map_err(|_| PipelineError::Stopped))
                .collect()
        };

        // Past events of the new features, by the profile holding them. The log is read
        // with no partition locked, so processing goes on meanwhile; events appended since
        // the profiles were looked at are not in `owners` and are passed over.
        let parts_n = sh.partitions.len();
        let mut found: Vec<Vec<(u64, u64, i64, SegEvent)>> = vec![Vec::new(); parts_n];
        let mut backfilled = 0;
        if !r.new_features.is_empty() {
            // Which profile holds each event: one sorted index per partition, built side
            // by side.
            let (owners, end) = {
                let parts = read_all()?;
                let owners = std::thread::scope(|scope| {
                    let built: Vec<_> = parts
                        .iter()
                        .map(|part| {
                            scope.spawn(move || {
                                let mut o = event_owners(std::iter::once(&**part));
                                o.sort_unstable();
                                o
                            })
                        })
                        .collect();
                    built
                        .into_iter()
                        .map(|h| h.join().map_err(failed))
                        .collect::<Result<Vec<Vec<(u64, u64)>>, _>>()
                })?;
                (owners, sh.log.end_offset())
            };
            backfilled = scan_in_parallel(
                &sh.log,
                &cand,
                &r.new_features,
                sh.log.stats().start_offset,
                end,
                |chunk| {
                    for (offset, time, e) in chunk {
                        for (i, o) in owners.iter().enumerate() {
                            if let Ok(k) = o.binary_search_by_key(&offset, |x| x.0) {
                                found[i].push((o[k].1, offset, time, e));
                                break;
                            }
                        }
                    }
                },
            )
            .map_err(PipelineError::Invalid)?;
            for f in &mut found {
                f.sort_unstable_by_key(|e| (e.0, e.1));
            }
        }

        // Each partition evaluated on a thread of its own.
        let parts = read_all()?;
        let eval = |part: &crate::Partition, found: &[(u64, u64, i64, SegEvent)]| {
            // In id order (about the order the profiles were allocated in, so memory is
            // read forwards), which is also the order of `found`.
            let mut all: Vec<(u64, &Profile)> = part.iter().map(|(id, p)| (*id, &**p)).collect();
            all.sort_unstable_by_key(|e| e.0);
            let empty = Membership::default();
            let mut matching: Vec<u64> = Vec::new();
            let mut lo = 0;
            for (id, p) in all {
                while found.get(lo).is_some_and(|e| e.0 < id) {
                    lo += 1;
                }
                let mut hi = lo;
                while found.get(hi).is_some_and(|e| e.0 == id) {
                    hi += 1;
                }
                let held = p.segments.as_ref().map_or(&empty, |s| &s.m);
                let at = p.segments.as_ref().map_or(now, |s| s.at);
                let now = now.max(at);
                let traits = cand.traits(p);
                let holds = if lo == hi && same_ids {
                    cand.set.holds_segment(candidate, held, &traits, now)
                } else {
                    let mut m = held.clone();
                    if !same_ids {
                        cand.set.carry_over(&mut m, &r);
                    }
                    for (_, offset, time_ms, e) in &found[lo..hi] {
                        let ev = niyet_rules::Event {
                            id: *offset,
                            name: &e.name,
                            time_ms: *time_ms,
                            props: e,
                        };
                        m.features
                            .observe_only(cand.set.catalog(), &r.new_features, &ev, at);
                    }
                    cand.set.holds_segment(candidate, &m, &traits, now)
                };
                if holds {
                    matching.push(id);
                }
                lo = hi;
            }
            matching
        };
        let profiles: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut matching: Vec<u64> = std::thread::scope(|scope| {
            let eval = &eval;
            let running: Vec<_> = parts
                .iter()
                .zip(&found)
                .map(|(part, f)| scope.spawn(move || eval(part, f)))
                .collect();
            let mut all = Vec::new();
            for h in running {
                all.extend(h.join().map_err(failed)?);
            }
            Ok::<_, PipelineError>(all)
        })?;
        drop(parts);
        matching.sort_unstable();
        let n = matching.len();
        Ok(json!({
            "rule": rule.to_string(),
            "would_match": n,
            "profiles": profiles,
            "share": if profiles == 0 { 0.0 } else { n as f64 / profiles as f64 },
            "sample": matching.iter().take(sample).map(|id| ProfileId(*id).to_string()).collect::<Vec<_>>(),
            "at": format_rfc3339_millis(now),
            "new_features": r.new_features.len(),
            "backfilled_events": backfilled,
            "took_ms": started.elapsed().as_millis() as u64,
        }))
    }
}
