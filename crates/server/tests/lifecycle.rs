//! The built-in lifecycle segments in simulated time: memberships change at the exact
//! instant a purchase leaves a window, with no event arriving, driven by a manual clock.

use niyet_log::{Log, LogConfig, NewRecord};
use niyet_model::{Clock, ManualClock};
use niyet_pipeline::{Pipeline, SharedClock};
use niyet_server::Config;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01

struct World {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    log: Arc<Log>,
    pipeline: Pipeline,
    n: usize,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut lc = LogConfig::new(dir.path().join("events"));
        lc.direct_io = false;
        let log = Arc::new(Log::open(lc, T0).unwrap());
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let mut pc = cfg.pipeline();
        pc.clock = SharedClock(Arc::new(clock.clone()));
        pc.timer_lag_ms = 0;
        let pipeline = Pipeline::start(log.clone(), pc).unwrap();
        Self {
            _dir: dir,
            clock,
            log,
            pipeline,
            n: 0,
        }
    }

    /// Sends an event received now, with its own time `now` as well.
    fn send(&mut self, user: &str, event: &str, props: Value) {
        self.n += 1;
        let now = self.clock.now_ms();
        let payload = json!({
            "type": "track", "userId": user, "event": event, "properties": props,
            "messageId": format!("m{}", self.n),
            "timestamp": niyet_model::format_rfc3339_millis(now),
            "source": "test",
        });
        self.log
            .append_blocking(vec![NewRecord {
                time_ms: now,
                key: 0,
                payload: serde_json::to_vec(&payload).unwrap(),
            }])
            .unwrap();
        self.pipeline
            .wait_processed(self.log.end_offset(), Duration::from_secs(10))
            .unwrap();
    }

    /// Moves the clock to `t` and waits until timers due by then have fired.
    fn at(&self, t: i64) {
        self.clock.set(t);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.pipeline.time_reached() < t {
            assert!(
                std::time::Instant::now() < deadline,
                "timers did not reach {t}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn segments(&self, user: &str) -> Value {
        let q = self.pipeline.query();
        let id = q.find("user_id", user).unwrap().unwrap();
        q.profile_segments(id).unwrap()
    }

    fn names(&self, user: &str) -> Vec<String> {
        self.segments(user)["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["segment"].as_str().unwrap().to_string())
            .collect()
    }

    fn changes(&self, user: &str, segment: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self.segments(user)["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["segment"] == segment)
            .map(|h| {
                (
                    h["type"].as_str().unwrap().to_string(),
                    h["time"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.reverse();
        v
    }
}

fn iso(t: i64) -> String {
    niyet_model::format_rfc3339_millis(t)
}

#[test]
fn two_purchases_leave_active_exactly_when_the_older_falls_out_of_90_days() {
    let mut w = World::new();
    w.send("u1", "Order Completed", json!({"revenue": 120}));
    assert_eq!(w.names("u1"), vec!["New"], "one order: New only");
    w.at(T0 + 10 * DAY);
    w.send("u1", "Order Completed", json!({"revenue": 80}));
    assert_eq!(w.names("u1"), vec!["New", "Active"]);
    assert_eq!(
        w.changes("u1", "Active"),
        vec![("segment entered".into(), iso(T0 + 10 * DAY))]
    );

    // New ends 30 days after the first order, to the millisecond.
    w.at(T0 + 30 * DAY - 1);
    assert!(w.names("u1").contains(&"New".to_string()));
    w.at(T0 + 30 * DAY + 5_000);
    assert!(!w.names("u1").contains(&"New".to_string()));
    assert_eq!(
        w.changes("u1", "New"),
        vec![
            ("segment entered".into(), iso(T0)),
            ("segment exited".into(), iso(T0 + 30 * DAY)),
        ]
    );

    // Active ends when the first order is 90 days old, recorded at that instant even
    // though the clock is only looked at later.
    w.at(T0 + 95 * DAY);
    assert!(!w.names("u1").contains(&"Active".to_string()));
    assert_eq!(
        w.changes("u1", "Active"),
        vec![
            ("segment entered".into(), iso(T0 + 10 * DAY)),
            ("segment exited".into(), iso(T0 + 90 * DAY)),
        ]
    );
}

#[test]
fn a_regular_buyer_enters_at_risk_at_day_60_and_lost_at_day_180() {
    let mut w = World::new();
    for d in [0, 20, 40] {
        w.at(T0 + d * DAY);
        w.send("u2", "Order Completed", json!({"revenue": 50}));
    }
    assert!(!w.names("u2").contains(&"At-Risk".to_string()));
    let last = T0 + 40 * DAY;
    w.at(last + 60 * DAY - 1);
    assert!(
        !w.names("u2").contains(&"At-Risk".to_string()),
        "not a moment early"
    );
    w.at(last + 60 * DAY);
    assert!(
        w.names("u2").contains(&"At-Risk".to_string()),
        "exactly at day 60"
    );
    w.at(last + 200 * DAY);
    let names = w.names("u2");
    assert!(names.contains(&"Lost".to_string()));
    assert!(
        !names.contains(&"At-Risk".to_string()),
        "Lost replaces At-Risk"
    );
    assert_eq!(
        w.changes("u2", "At-Risk"),
        vec![
            ("segment entered".into(), iso(last + 60 * DAY)),
            ("segment exited".into(), iso(last + 180 * DAY)),
        ]
    );
    assert_eq!(
        w.changes("u2", "Lost"),
        vec![("segment entered".into(), iso(last + 180 * DAY))]
    );
    // A new order brings the customer back.
    w.send("u2", "Order Completed", json!({"revenue": 50}));
    assert!(!w.names("u2").contains(&"Lost".to_string()));
}

#[test]
fn vip_and_undecided() {
    let mut w = World::new();
    w.send("u3", "Order Completed", json!({"revenue": 6000}));
    assert!(
        !w.names("u3").contains(&"VIP".to_string()),
        "spend 6,000 ≤ 10,000"
    );
    w.send("u3", "Order Completed", json!({"revenue": 4500.5}));
    assert!(
        w.names("u3").contains(&"VIP".to_string()),
        "10,500.5 spent, average 5,250"
    );
    w.at(T0 + 365 * DAY);
    assert!(
        !w.names("u3").contains(&"VIP".to_string()),
        "a year later the spend is gone"
    );

    w.send("u4", "Product Viewed", json!({"sku": "K-1"}));
    w.send("u4", "Product Added", json!({"sku": "K-1"}));
    assert!(w.names("u4").contains(&"Undecided".to_string()));
    w.send("u4", "Order Completed", json!({"revenue": 10}));
    assert!(!w.names("u4").contains(&"Undecided".to_string()));
    let sizes = w.pipeline.query().segments();
    let size = |n: &str| {
        sizes
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()["size"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(size("Undecided"), 0);
    assert_eq!(size("New"), 1, "u4 only: u3's first order is a year old");
    assert_eq!(size("VIP"), 0);
}

#[test]
fn timers_keep_running_after_a_segment_is_defined() {
    let mut w = World::new();
    for d in [0, 20, 40] {
        w.at(T0 + d * DAY);
        w.send("u5", "Order Completed", json!({"revenue": 50}));
    }
    // A new segment is defined between the last order and day 60 after it.
    w.at(T0 + 50 * DAY);
    let rule = niyet_rules::parse("count(Order Completed) >= 3").unwrap();
    w.pipeline
        .put_segment("Three", &rule, "", T0 + 50 * DAY, Duration::from_secs(30))
        .unwrap();
    assert!(w.names("u5").contains(&"Three".to_string()));
    let last = T0 + 40 * DAY;
    w.at(last + 60 * DAY);
    assert!(
        w.names("u5").contains(&"At-Risk".to_string()),
        "the At-Risk timer set before the definition still fires"
    );
}
