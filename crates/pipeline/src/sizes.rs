//! Segment sizes over time: one sample of every segment's size per interval of
//! processing time, kept in memory for the API and appended to
//! `state_dir/segment-sizes.ndjson` so the history outlives restarts.
//!
//! Each line of the file is `{"t": <ms>, "sizes": {"<segment>": <members>, …}}`. Samples
//! are taken at whole multiples of the interval of processing time, so a replay after a
//! crash takes them at the same instants; on load the last line for an instant wins and
//! the file is rewritten with the samples kept.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Map, Value};

/// One sample: processing time, the segment names in force then, their sizes.
type Sample = (i64, Arc<Vec<String>>, Vec<i64>);

/// The kept samples.
pub(crate) struct SizeHistory {
    interval_ms: i64,
    keep: usize,
    next_ms: i64,
    samples: VecDeque<Sample>,
    path: PathBuf,
    file: Option<File>,
    /// Lines in the file (it is compacted when it holds twice what is kept).
    lines: usize,
}

impl SizeHistory {
    /// Loads the history kept in `path` (a missing or unreadable file starts empty; a
    /// damaged line is skipped).
    pub(crate) fn open(path: PathBuf, interval_ms: i64, keep: usize) -> Self {
        let interval_ms = interval_ms.max(1_000);
        let keep = keep.max(1);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut samples: VecDeque<Sample> = VecDeque::new();
        if let Ok(f) = File::open(&path) {
            let mut names: Arc<Vec<String>> = Arc::new(Vec::new());
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let (Some(t), Some(sizes)) = (v["t"].as_i64(), v["sizes"].as_object()) else {
                    continue;
                };
                let these: Vec<String> = sizes.keys().cloned().collect();
                if *names != these {
                    names = Arc::new(these);
                }
                let n: Vec<i64> = sizes.values().map(|x| x.as_i64().unwrap_or(0)).collect();
                while samples.back().is_some_and(|s| s.0 >= t) {
                    samples.pop_back();
                }
                samples.push_back((t, names.clone(), n));
            }
        }
        while samples.len() > keep {
            samples.pop_front();
        }
        let next_ms = samples.back().map_or(i64::MIN, |s| s.0 + interval_ms);
        let mut h = Self {
            interval_ms,
            keep,
            next_ms,
            samples,
            path,
            file: None,
            lines: 0,
        };
        h.rewrite();
        h
    }

    fn line(s: &Sample) -> String {
        let sizes: Map<String, Value> =
            s.1.iter()
                .cloned()
                .zip(s.2.iter().map(|n| json!(n)))
                .collect();
        json!({"t": s.0, "sizes": sizes}).to_string()
    }

    /// Writes the kept samples as the whole file (through a temporary file).
    fn rewrite(&mut self) {
        let tmp = self.path.with_extension("ndjson.tmp");
        let written = (|| -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            for s in &self.samples {
                writeln!(f, "{}", Self::line(s))?;
            }
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "segment size history not written");
        }
        self.file = OpenOptions::new().append(true).open(&self.path).ok();
        self.lines = self.samples.len();
    }

    /// Whether a sample is due at processing time `now`.
    pub(crate) fn due(&self, now: i64) -> bool {
        now != i64::MIN && now >= self.next_ms
    }

    /// Records the sizes at processing time `now` (at the latest interval boundary).
    pub(crate) fn record(&mut self, now: i64, names: Arc<Vec<String>>, sizes: Vec<i64>) {
        let t = now - now.rem_euclid(self.interval_ms);
        self.next_ms = t + self.interval_ms;
        // A replay after a crash takes instants again: the newer sample replaces them.
        while self.samples.back().is_some_and(|x| x.0 >= t) {
            self.samples.pop_back();
        }
        let s = (t, names, sizes);
        if let Some(f) = &mut self.file {
            // Losing a sample on a write error costs a point of the chart, nothing else.
            let _ = writeln!(f, "{}", Self::line(&s));
            self.lines += 1;
        }
        self.samples.push_back(s);
        if self.samples.len() > self.keep {
            self.samples.pop_front();
        }
        if self.lines >= 2 * self.keep {
            self.rewrite();
        }
    }

    /// The samples of segment `name` from `since` on: `(time, size)`.
    pub(crate) fn of(&self, name: &str, since: i64) -> Vec<(i64, i64)> {
        let from = self.samples.partition_point(|s| s.0 < since);
        self.samples
            .range(from..)
            .filter_map(|s| {
                let i = s.1.iter().position(|n| n == name)?;
                Some((s.0, s.2[i]))
            })
            .collect()
    }

    /// The sampling interval.
    pub(crate) fn interval_ms(&self) -> i64 {
        self.interval_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_survive_reopening_and_a_replayed_instant_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment-sizes.ndjson");
        let names = Arc::new(vec!["VIP".to_string(), "New".to_string()]);
        let mut h = SizeHistory::open(path.clone(), 60_000, 100);
        assert!(h.due(0));
        h.record(61_000, names.clone(), vec![1, 2]);
        assert!(!h.due(119_999));
        assert!(h.due(120_000));
        h.record(125_000, names.clone(), vec![3, 4]);
        drop(h);
        // A replay takes the second sample again, with other sizes: the later one wins.
        let mut h = SizeHistory::open(path.clone(), 60_000, 100);
        assert_eq!(h.of("VIP", i64::MIN), vec![(60_000, 1), (120_000, 3)]);
        h.record(121_000, names.clone(), vec![5, 6]);
        drop(h);
        let h = SizeHistory::open(path, 60_000, 100);
        assert_eq!(h.of("VIP", i64::MIN), vec![(60_000, 1), (120_000, 5)]);
        assert_eq!(h.of("New", 100_000), vec![(120_000, 6)]);
        assert!(h.of("Nobody", i64::MIN).is_empty());
    }

    #[test]
    fn only_the_newest_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.ndjson");
        let names = Arc::new(vec!["A".to_string()]);
        let mut h = SizeHistory::open(path.clone(), 1_000, 3);
        for k in 0..10 {
            h.record(k * 1_000, names.clone(), vec![k]);
        }
        assert_eq!(
            h.of("A", i64::MIN),
            vec![(7_000, 7), (8_000, 8), (9_000, 9)]
        );
        drop(h);
        let h = SizeHistory::open(path, 1_000, 3);
        assert_eq!(h.of("A", i64::MIN).len(), 3);
    }
}
