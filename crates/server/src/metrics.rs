//! Every metric Niyet exports, named in one place, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use niyet_log::LogStats;

/// Upper bounds (seconds) of the acknowledgement latency histogram.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// HTTP statuses counted separately; others are counted as `other`.
const STATUSES: [u16; 8] = [200, 400, 401, 404, 413, 415, 429, 503];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; STATUSES.len() + 1],
    /// Events durably accepted.
    pub events_accepted: AtomicU64,
    /// Events answered as duplicates.
    pub events_duplicate: AtomicU64,
    /// Events quarantined.
    pub events_quarantined: AtomicU64,
    /// Events rejected by a tracking plan.
    pub events_rejected: AtomicU64,
    /// Events dropped because they carry an erased (suppressed) identifier.
    pub events_suppressed: AtomicU64,
    /// Bytes of request bodies received (before decompression).
    pub bytes_received: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Counts a finished ingest request.
    pub fn request(&self, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the time from receiving a request to acknowledging it.
    pub fn ack_latency(&self, micros: u64) {
        let secs = micros as f64 / 1e6;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, log: &LogStats, quarantine_pending: usize, poisoned: bool) -> String {
        let mut o = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "# HELP niyet_ingest_requests_total Ingest requests by HTTP status."
        );
        let _ = writeln!(o, "# TYPE niyet_ingest_requests_total counter");
        for (i, s) in STATUSES.iter().enumerate() {
            let _ = writeln!(
                o,
                "niyet_ingest_requests_total{{status=\"{s}\"}} {}",
                get(&self.requests[i])
            );
        }
        let _ = writeln!(
            o,
            "niyet_ingest_requests_total{{status=\"other\"}} {}",
            get(&self.requests[STATUSES.len()])
        );
        let _ = writeln!(
            o,
            "# HELP niyet_ingest_events_total Messages received, by outcome."
        );
        let _ = writeln!(o, "# TYPE niyet_ingest_events_total counter");
        for (label, v) in [
            ("accepted", &self.events_accepted),
            ("duplicate", &self.events_duplicate),
            ("quarantined", &self.events_quarantined),
            ("rejected", &self.events_rejected),
            ("suppressed", &self.events_suppressed),
        ] {
            let _ = writeln!(
                o,
                "niyet_ingest_events_total{{outcome=\"{label}\"}} {}",
                get(v)
            );
        }
        let _ = writeln!(
            o,
            "# HELP niyet_ingest_bytes_total Request body bytes received."
        );
        let _ = writeln!(o, "# TYPE niyet_ingest_bytes_total counter");
        let _ = writeln!(o, "niyet_ingest_bytes_total {}", get(&self.bytes_received));
        let _ = writeln!(
            o,
            "# HELP niyet_ingest_ack_seconds Time from request to durable acknowledgement."
        );
        let _ = writeln!(o, "# TYPE niyet_ingest_ack_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += get(&self.latency_buckets[i]);
            let _ = writeln!(
                o,
                "niyet_ingest_ack_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(o, "niyet_ingest_ack_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "niyet_ingest_ack_seconds_sum {}",
            get(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(o, "niyet_ingest_ack_seconds_count {count}");
        for (name, help, kind, v) in [
            (
                "niyet_log_bytes",
                "Bytes of the event log's records (niyet_disk_bytes has what its files take on disk).",
                "gauge",
                log.total_bytes,
            ),
            (
                "niyet_log_segments",
                "Segment files in the event log.",
                "gauge",
                log.segments as u64,
            ),
            (
                "niyet_log_start_offset",
                "First offset held by the log.",
                "gauge",
                log.start_offset,
            ),
            (
                "niyet_log_end_offset",
                "Offset of the next event.",
                "gauge",
                log.end_offset,
            ),
            (
                "niyet_log_commits_total",
                "Group commits (fsyncs) since start.",
                "counter",
                log.commits,
            ),
            (
                "niyet_quarantine_pending",
                "Quarantined events not yet replayed.",
                "gauge",
                quarantine_pending as u64,
            ),
            (
                "niyet_log_poisoned",
                "1 when the log refuses writes after an I/O failure.",
                "gauge",
                u64::from(poisoned),
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        o
    }

    /// The data directory's use of the disk, by part, appended to [`Metrics::render`]'s
    /// output.
    pub fn render_disk(o: &mut String, parts: &[(String, u64)]) {
        let _ = writeln!(
            o,
            "# HELP niyet_disk_bytes Bytes the data directory takes on disk (allocated blocks: the log's segments with their zero-filled tails and the next segment written ahead included), by part.\n# TYPE niyet_disk_bytes gauge"
        );
        for (part, bytes) in parts {
            let part = part.replace(['\\', '"', '\n'], "_");
            let _ = writeln!(o, "niyet_disk_bytes{{part=\"{part}\"}} {bytes}");
        }
    }

    /// What each trigger decided, appended to [`Metrics::render`]'s output.
    pub fn render_decisions(o: &mut String, decisions: &[(String, niyet_delivery::Decisions)]) {
        if decisions.is_empty() {
            return;
        }
        let _ = writeln!(
            o,
            "# HELP niyet_trigger_decisions_total Firings of each trigger by outcome: send, holdout (control group), capped (frequency cap), not_in_segment (its `if`).\n# TYPE niyet_trigger_decisions_total counter"
        );
        for (name, d) in decisions {
            // Label values escaped as the text format asks.
            let name = name
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            for (outcome, n) in [
                ("send", d.send),
                ("holdout", d.holdout),
                ("capped", d.capped),
                ("not_in_segment", d.not_in_segment),
            ] {
                let _ = writeln!(
                    o,
                    "niyet_trigger_decisions_total{{trigger=\"{name}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
    }

    /// Profile pipeline gauges and counters, appended to [`Metrics::render`]'s output.
    pub fn render_pipeline(o: &mut String, p: &niyet_pipeline::PipelineStats) {
        for (name, help, kind, v) in [
            (
                "niyet_profiles",
                "Live customer profiles.",
                "gauge",
                p.profiles as u64,
            ),
            (
                "niyet_identifiers",
                "Identifiers held by the identity graph.",
                "gauge",
                p.identifiers as u64,
            ),
            (
                "niyet_pipeline_processed_offset",
                "Every log offset below this is reflected in profiles.",
                "gauge",
                p.processed_offset,
            ),
            (
                "niyet_pipeline_lag_events",
                "Log records not yet reflected in profiles.",
                "gauge",
                p.log_end_offset.saturating_sub(p.processed_offset),
            ),
            (
                "niyet_identity_merges_total",
                "Profile merges since start.",
                "counter",
                p.merges,
            ),
            (
                "niyet_identity_conflicts_total",
                "Merges refused by a merge-protection rule since start.",
                "counter",
                p.conflicts,
            ),
            (
                "niyet_identity_probable_merges_total",
                "Merges by probabilistic matching since start.",
                "counter",
                p.probable_merges,
            ),
            (
                "niyet_identity_suggestions_total",
                "Probable links kept as suggestions since start.",
                "counter",
                p.suggestions,
            ),
            (
                "niyet_pipeline_unreadable_total",
                "Log records profiles could not read (skipped) since start.",
                "counter",
                p.unreadable,
            ),
            (
                "niyet_pipeline_snapshots_total",
                "State snapshots written since start.",
                "counter",
                p.snapshots,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.ack_latency(300);
        m.ack_latency(1_500);
        m.ack_latency(20_000_000);
        m.request(200);
        m.request(418);
        let stats = LogStats {
            start_offset: 0,
            end_offset: 5,
            total_bytes: 10,
            segments: 1,
            duplicates: 0,
            commits: 2,
            direct_io: true,
        };
        let text = m.render(&stats, 3, false);
        assert!(text.contains("niyet_ingest_ack_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("niyet_ingest_ack_seconds_bucket{le=\"0.002\"} 2\n"));
        assert!(text.contains("niyet_ingest_ack_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("niyet_ingest_requests_total{status=\"other\"} 1\n"));
        assert!(text.contains("niyet_quarantine_pending 3\n"));
        assert!(text.contains("niyet_log_end_offset 5\n"));
    }
}
