//! Derived state is a function of the log: live processing, a replay from offset 0 and a
//! run interrupted by restarts (snapshot + tail) give the same profiles.

use niyet_log::{Log, LogConfig, NewRecord};
use niyet_pipeline::{Pipeline, PipelineConfig};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Ev {
    user: Option<u8>,
    anon: Option<u8>,
    email: Option<u8>,
    kind: u8,
    time: i64,
    amount: u16,
}

fn stored(i: usize, e: &Ev) -> Vec<u8> {
    let mut m = json!({
        "messageId": format!("m{i}"),
        "timestamp": niyet_model::format_rfc3339_millis(1_700_000_000_000 + e.time * 60_000),
        "source": if i.is_multiple_of(3) { "web" } else { "app" },
        "context": {"traits": {}},
    });
    if let Some(u) = e.user {
        m["userId"] = json!(format!("u{u}"));
    }
    if let Some(a) = e.anon {
        m["anonymousId"] = json!(format!("a{a}"));
    }
    if let Some(x) = e.email {
        m["context"]["traits"]["email"] = json!(format!("E{x}@Example.com"));
    }
    match e.kind {
        0 => {
            m["type"] = json!("identify");
            m["traits"] = json!({"city": format!("c{}", e.amount % 3), "plan": e.amount % 2,
                "name": format!("Ay\"şe \\ {}\n", e.amount), "tags": ["a", {"b": null}]});
        }
        1 => {
            m["type"] = json!("track");
            m["event"] = json!("Order Completed");
            m["properties"] = json!({"revenue": f64::from(e.amount) / 100.0});
        }
        2 => {
            m["type"] = json!("page");
            m["context"]["userAgent"] = json!("Mozilla/5.0 (iPhone) Mobile");
        }
        3 => {
            m["type"] = json!("alias");
            m["previousId"] = json!(format!("a{}", e.amount % 4));
        }
        _ => {
            m["type"] = json!("track");
            m["event"] = json!("Product Viewed");
        }
    }
    serde_json::to_vec(&m).unwrap()
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        prop::option::weighted(0.4, 0..3u8),
        prop::option::weighted(0.8, 0..5u8),
        prop::option::weighted(0.3, 0..3u8),
        0..5u8,
        0..500i64,
        0..10_000u16,
    )
        .prop_map(|(user, anon, email, kind, time, amount)| Ev {
            user,
            anon: if user.is_none() && anon.is_none() {
                Some(0)
            } else {
                anon
            },
            email,
            kind,
            time,
            amount,
        })
}

fn open_log(dir: &Path) -> Arc<Log> {
    let mut c = LogConfig::new(dir);
    c.direct_io = false;
    Arc::new(Log::open(c, 0).unwrap())
}

fn cfg(dir: &Path, partitions: usize, every: u64) -> PipelineConfig {
    let mut c = PipelineConfig::new(dir);
    c.partitions = partitions;
    c.snapshot_every = every;
    // Segments whose memberships change with events, with traits and by time alone;
    // the clock stands still, so time moves only with the records' receive times.
    c.clock = niyet_pipeline::SharedClock(Arc::new(niyet_model::ManualClock::new(0)));
    c.segments = [
        ("Active", "count(Order Completed in 2h) >= 2"),
        (
            "Big",
            "sum(Order Completed.revenue in 1d) > 50 and avg(Order Completed.revenue in 1d) > 10",
        ),
        (
            "Browsing",
            "Product Viewed in 30m and no Order Completed in 30m",
        ),
        ("Fresh", "first_seen(Order Completed) > 3h ago"),
        (
            "City",
            "trait.city = \"c1\" or (trait.plan >= 1 and segment(\"Active\"))",
        ),
        ("Seq", "Page Viewed then Order Completed within 1h in 6h"),
    ]
    .iter()
    .map(|(n, r)| (n.to_string(), niyet_rules::parse(r).unwrap()))
    .collect();
    // Triggers started by events (with a wait an order cancels) and by segment entries.
    c.triggers = serde_json::from_value(json!([
        {"name": "Browse abandoned", "when": {"event": "Product Viewed"}, "wait": "30m",
         "unless": ["Order Completed"], "then": ["offers"], "holdout_percent": 30.0},
        {"name": "Now active", "when": {"segment_entered": "Active"}, "if": "City",
         "then": ["crm", "ads"], "cap": {"max": 1, "per": "1h"}},
        {"name": "Keen", "when": {"score_crossed": "Keen"}, "then": ["crm"]},
    ]))
    .unwrap();
    // A decaying score: crossings up with events, down with time alone.
    c.scores = serde_json::from_value(json!([
        {"name": "interest", "half_life": "20m",
         "signals": [{"event": "Product Viewed", "points": 10},
                     {"event": "Page Viewed", "points": 5, "nth": 2, "within": "1h"},
                     {"event": "Order Completed", "points": -8}],
         "thresholds": [{"name": "Keen", "at": 18, "hysteresis": 4}]},
    ]))
    .unwrap();
    c
}

type Taken = Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

/// Collects the actions a pipeline takes (each once: a replay after a restart takes
/// some again, with the same keys, and the outbox keeps one).
fn collect(c: &mut PipelineConfig, into: &Taken) {
    let into = into.clone();
    c.on_action = Some(niyet_pipeline::ActionHook {
        send: Arc::new(move |a: niyet_actions::Action, _live| {
            into.lock().unwrap().insert(format!(
                "{} {} {} {} {:?} {}",
                a.key, a.trigger, a.destination, a.profile, a.outcome, a.at_ms
            ));
        }),
        sync: Arc::new(|| {}),
    });
}

fn run(log: &Arc<Log>, c: PipelineConfig) -> (Value, niyet_pipeline::PipelineStats) {
    let p = Pipeline::start(log.clone(), c).unwrap();
    p.wait_processed(log.end_offset(), Duration::from_secs(20))
        .unwrap();
    let dump = p.query().dump();
    let stats = p.stats();
    p.close();
    (dump, stats)
}

/// Events `0..n`, each made by `each` from its number.
fn numbered(n: usize, each: impl Fn(usize) -> Ev) -> Vec<(usize, Ev)> {
    (0..n).map(|i| (i, each(i))).collect()
}

/// `n` events of every kind in turn, their users and visitors cycling through `users`
/// and `anons` of each, one a minute.
fn cycling(n: usize, users: usize, anons: usize, amount: u16) -> Vec<(usize, Ev)> {
    numbered(n, |i| Ev {
        user: Some((i % users) as u8),
        anon: Some((i % anons) as u8),
        email: None,
        kind: (i % 5) as u8,
        time: i as i64,
        amount,
    })
}

fn append(log: &Log, evs: &[(usize, Ev)]) {
    let recs = evs
        .iter()
        .map(|(i, e)| NewRecord {
            // Received in log order, a minute apart; event times are scattered around.
            time_ms: 1_700_000_000_000 + *i as i64 * 60_000 + 120 * 60_000,
            key: 0,
            payload: stored(*i, e),
        })
        .collect();
    log.append_blocking(recs).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn restart_and_replay_give_the_live_state(evs in prop::collection::vec(ev(), 1..80), cut_at in 0usize..80, parts in 1usize..4) {
        let tmp = tempfile::tempdir().unwrap();
        let evs: Vec<(usize, Ev)> = evs.into_iter().enumerate().collect();
        let cut = cut_at.min(evs.len());
        let log = open_log(&tmp.path().join("log"));

        // Live, with a restart (snapshot on close) at `cut`.
        let (live_acts, replay_acts) = (Taken::default(), Taken::default());
        append(&log, &evs[..cut]);
        let mut c = cfg(&tmp.path().join("live"), parts, 7);
        collect(&mut c, &live_acts);
        run(&log, c);
        append(&log, &evs[cut..]);
        let mut c = cfg(&tmp.path().join("live"), parts, 7);
        collect(&mut c, &live_acts);
        let (live, stats) = run(&log, c);
        if cut > 0 {
            // The close wrote a snapshot at `cut`; the second run started from it.
            prop_assert_eq!(stats.restored_from, Some(cut as u64));
        }

        // Replay from offset 0 in one go, with another partition count.
        let mut c = cfg(&tmp.path().join("replay"), 4 - parts, 1_000_000);
        collect(&mut c, &replay_acts);
        let (replayed, _) = run(&log, c);
        prop_assert_eq!(&live, &replayed);
        // The same actions, with the same keys, outcomes and times.
        prop_assert_eq!(&*live_acts.lock().unwrap(), &*replay_acts.lock().unwrap());
        prop_assert!(live.as_array().map(|a| !a.is_empty()).unwrap_or(false));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The profile an action's document carries, written straight to JSON text, is the
    /// profile the query API builds as values (plain traits), for every profile.
    #[test]
    fn profiles_written_as_text_equal_the_rendered_values(evs in prop::collection::vec(ev(), 1..60), parts in 1usize..4) {
        let tmp = tempfile::tempdir().unwrap();
        let evs: Vec<(usize, Ev)> = evs.into_iter().enumerate().collect();
        let log = open_log(&tmp.path().join("log"));
        append(&log, &evs);
        let p = Pipeline::start(log.clone(), cfg(&tmp.path().join("state"), parts, 1_000)).unwrap();
        p.wait_processed(log.end_offset(), Duration::from_secs(20)).unwrap();
        let q = p.query();
        let dump = q.dump();
        let all = dump.as_array().unwrap();
        prop_assert!(!all.is_empty());
        for entry in all {
            let id: niyet_identity::ProfileId = entry["profile"]["id"].as_str().unwrap().parse().unwrap();
            let text = q.profile_plain_json(id).unwrap();
            let parsed: Value = serde_json::from_slice(&text.json).unwrap();
            let want = q.profile_plain(id).unwrap();
            prop_assert_eq!(&parsed, &want);
            prop_assert_eq!(&text.consent, &want["consent"]);
        }
        p.close();
    }
}

/// The newest snapshot file in `dir` and the offset it stands at.
fn newest_snapshot(dir: &Path) -> Option<(u64, std::path::PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            let off = name
                .strip_prefix("snapshot-")?
                .strip_suffix(".bin")?
                .parse()
                .ok()?;
            Some((off, p))
        })
        .max()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Snapshots taken while records keep arriving (the graph and each partition encoded
    /// one node or profile at a time between pieces of work, each copied before it
    /// changes) hold the state at their offset: a pipeline started from one, replaying
    /// the rest, ends where a replay from offset 0 does.
    #[test]
    fn snapshots_taken_while_work_goes_on_hold_the_state_at_their_offset(
        evs in prop::collection::vec(ev(), 20..90), parts in 1usize..4, every in 4u64..12
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let evs: Vec<(usize, Ev)> = evs.into_iter().enumerate().collect();
        let log = open_log(&tmp.path().join("log"));
        let mut c = cfg(&tmp.path().join("live"), parts, every);
        c.snapshot_chunk = 1;
        c.snapshot_step = Duration::ZERO;
        c.snapshot_share = 1.0;
        let p = Pipeline::start(log.clone(), c).unwrap();
        // Small batches, each processed before the next, so snapshots start mid-stream
        // and their pieces interleave with later records.
        let mut mid = None;
        for chunk in evs.chunks(3) {
            append(&log, chunk);
            p.wait_processed(log.end_offset(), Duration::from_secs(20)).unwrap();
            if let Some((off, path)) = newest_snapshot(&tmp.path().join("live")) {
                if off < log.end_offset() && mid.as_ref().is_none_or(|(o, _)| *o != off) {
                    // Copied while the pipeline goes on (the file is complete once named).
                    if let Ok(bytes) = std::fs::read(&path) {
                        mid = Some((off, bytes));
                    }
                }
            }
        }
        p.close();
        drop(p);
        let Some((off, bytes)) = mid else {
            return Ok(());
        };
        let from_mid = tmp.path().join("mid");
        std::fs::create_dir_all(&from_mid).unwrap();
        std::fs::write(from_mid.join(format!("snapshot-{off:020}.bin")), bytes).unwrap();
        let (restarted, stats) = run(&log, cfg(&from_mid, parts, 1_000_000));
        prop_assert_eq!(stats.restored_from, Some(off));
        let (replayed, _) = run(&log, cfg(&tmp.path().join("replay"), 4 - parts, 1_000_000));
        prop_assert_eq!(&restarted, &replayed);
    }
}

#[test]
fn changed_rules_rebuild_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(&tmp.path().join("log"));
    let e = |user, anon| Ev {
        user: Some(user),
        anon: Some(anon),
        email: None,
        kind: 4,
        time: 1,
        amount: 0,
    };
    append(&log, &[(0, e(1, 1)), (1, e(2, 1))]);
    let (dump, _) = run(&log, cfg(&tmp.path().join("s"), 2, 1));
    assert_eq!(
        dump.as_array().unwrap().len(),
        2,
        "user_id limit 1 keeps two profiles"
    );
    let mut c = cfg(&tmp.path().join("s"), 2, 1);
    c.rules.limits = vec![("user_id".into(), 2)];
    let p = Pipeline::start(log.clone(), c).unwrap();
    p.wait_processed(log.end_offset(), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        p.stats().restored_from,
        None,
        "snapshot of other rules is ignored"
    );
    assert_eq!(p.query().dump().as_array().unwrap().len(), 1);
}

#[test]
fn a_damaged_snapshot_is_ignored_and_the_state_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(&tmp.path().join("log"));
    let evs = cycling(30, 3, 5, 100);
    append(&log, &evs);
    let state = tmp.path().join("s");
    let (before, _) = run(&log, cfg(&state, 2, 1_000_000));
    let snap = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "bin"))
        .expect("a snapshot file");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&snap, bytes).unwrap();
    let (after, stats) = run(&log, cfg(&state, 2, 1_000_000));
    assert_eq!(
        stats.restored_from, None,
        "the damaged snapshot was not used"
    );
    assert_eq!(before, after);
}

fn members(dump: &Value) -> Vec<(String, Vec<String>)> {
    dump.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let segs = p["profile"]["segments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["segment"].as_str().unwrap().to_string())
                .collect();
            (p["profile"]["id"].as_str().unwrap().to_string(), segs)
        })
        .collect()
}

/// Defines a segment through the pipeline's API (as the admin API does).
fn define(p: &Pipeline, name: &str, rule: &str, now: i64) -> Value {
    p.put_segment(
        name,
        &niyet_rules::parse(rule).unwrap(),
        "",
        now,
        Duration::from_secs(20),
    )
    .unwrap()
}

#[test]
fn segments_defined_through_the_api_are_backfilled_and_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(&tmp.path().join("log"));
    let evs = numbered(80, |i| Ev {
        user: Some((i % 7) as u8),
        anon: Some((i % 11) as u8),
        email: None,
        kind: [1, 4, 2, 4, 0][i % 5],
        time: (i * 3) as i64,
        amount: (i * 37 % 500) as u16,
    });
    append(&log, &evs);
    let buyers = "count(Order Completed) >= 2 and sum(Order Completed.revenue) > 3";
    let viewers = "Product Viewed where amount is null in 400d";

    // Live: the definitions arrive through the API after the events.
    let mut c = cfg(&tmp.path().join("live"), 2, 1_000_000);
    c.segments.clear();
    c.triggers.clear();
    let p = Pipeline::start(log.clone(), c).unwrap();
    p.wait_processed(log.end_offset(), Duration::from_secs(20))
        .unwrap();
    let now = 1_700_000_000_000 + 200 * 60_000 + 120 * 60_000;
    let out = define(&p, "Buyers", buyers, now);
    assert!(out["backfilled_events"].as_u64().unwrap() > 0, "{out}");
    define(&p, "Viewers", viewers, now + 1);
    let live = p.query().dump();
    p.close();

    // The same segments configured from the start give the same members.
    let mut c = cfg(&tmp.path().join("configured"), 3, 1_000_000);
    c.segments = vec![
        ("Buyers".into(), niyet_rules::parse(buyers).unwrap()),
        ("Viewers".into(), niyet_rules::parse(viewers).unwrap()),
    ];
    c.triggers.clear();
    c.scores.clear();
    let (configured, _) = run(&log, c);
    let m = members(&live);
    assert!(m.iter().any(|(_, s)| s.contains(&"Buyers".to_string())));
    assert!(m.iter().any(|(_, s)| !s.contains(&"Buyers".to_string())));
    assert_eq!(m, members(&configured));

    // A replay of the log (definitions included) gives the live state exactly.
    let mut c = cfg(&tmp.path().join("replay"), 1, 1_000_000);
    c.segments.clear();
    c.triggers.clear();
    let (replayed, _) = run(&log, c);
    assert_eq!(live, replayed);

    // Deleting a segment removes it from every profile; a configured one cannot be.
    let mut c = cfg(&tmp.path().join("replay"), 1, 1_000_000);
    c.segments.clear();
    c.triggers.clear();
    let p = Pipeline::start(log.clone(), c).unwrap();
    p.delete_segment("Buyers", now + 2, Duration::from_secs(20))
        .unwrap();
    assert!(members(&p.query().dump())
        .iter()
        .all(|(_, s)| !s.contains(&"Buyers".to_string())));
    assert!(p
        .delete_segment("Buyers", now + 3, Duration::from_secs(20))
        .is_err());
    p.close();
}

/// Events after a segment definition are read under it: a replay, which meets the
/// definition with every later record already in the log, gives what live processing
/// gave when they came after it (and what the segment configured from the start gives).
#[test]
fn events_after_a_definition_are_read_under_it_in_a_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(&tmp.path().join("log"));
    // Five customers, an order and a view each in turn: three orders each in the first
    // thirty events, six after sixty.
    let evs = numbered(60, |i| Ev {
        user: Some((i / 2 % 5) as u8),
        anon: Some((i / 2 % 5) as u8),
        email: None,
        kind: [1, 4][i % 2],
        time: i as i64,
        amount: 100 + i as u16,
    });
    append(&log, &evs[..30]);
    let rule = "count(Order Completed) >= 4";
    let bare = |dir: &str, parts: usize| {
        let mut c = cfg(&tmp.path().join(dir), parts, 1_000_000);
        c.segments.clear();
        c.triggers.clear();
        c.scores.clear();
        c
    };

    // Live: defined after the first thirty events, before the rest arrive.
    let p = Pipeline::start(log.clone(), bare("live", 2)).unwrap();
    p.wait_processed(log.end_offset(), Duration::from_secs(20))
        .unwrap();
    let now = 1_700_000_000_000 + 150 * 60_000 - 1;
    define(&p, "Loyal", rule, now);
    assert!(members(&p.query().dump())
        .iter()
        .all(|(_, s)| !s.contains(&"Loyal".to_string())));
    append(&log, &evs[30..]);
    p.wait_processed(log.end_offset(), Duration::from_secs(20))
        .unwrap();
    let live = p.query().dump();
    p.close();
    let m = members(&live);
    assert_eq!(
        m.iter()
            .filter(|(_, s)| s.contains(&"Loyal".to_string()))
            .count(),
        5,
        "{m:?}"
    );

    // A replay, every record already in the log when it starts, gives the same state.
    let (replayed, _) = run(&log, bare("replay", 2));
    assert_eq!(live, replayed);
    // And the same members as the segment configured from the start.
    let mut c = bare("configured", 1);
    c.segments = vec![("Loyal".into(), niyet_rules::parse(rule).unwrap())];
    let (configured, _) = run(&log, c);
    assert_eq!(m, members(&configured));
}

/// The nice value of each of this process's threads named `name`.
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        out.extend(nice_in(&stat));
    }
    out
}

/// The nice value in a thread's `stat`: after the name (which closes with ')') the
/// fields go on from the third; nice is the 19th.
fn nice_in(stat: &str) -> Option<i64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(16)?.parse().ok()
}

fn own_nice() -> i64 {
    nice_in(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()).unwrap()
}

/// Waits until one of the threads named `name` has nice value `want`.
fn await_nice(name: &str, want: i64, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let found = nice_of_threads(name);
        if found.contains(&want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: nice values {found:?}, expected one at {want}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn processing_far_behind_runs_lowered_and_returns_once_caught_up() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(&tmp.path().join("log"));
    let evs = cycling(40_000, 200, 211, 10);
    for part in evs.chunks(5_000) {
        append(&log, part);
    }
    let mut c = cfg(&tmp.path().join("s"), 2, 1_000_000);
    c.nice = 3;
    c.nice_behind = (1_000, 100);
    let base = own_nice();
    let lowered = (base + 3).min(19);
    let p = Pipeline::start(log.clone(), c).unwrap();
    // 40,000 records behind at the start: lowered.
    await_nice("niyet-part-0", lowered, Duration::from_secs(20));
    p.wait_processed(log.end_offset(), Duration::from_secs(120))
        .unwrap();
    // Caught up: every processing thread is back where it started.
    for name in ["niyet-router", "niyet-part-0", "niyet-part-1"] {
        await_nice(name, base, Duration::from_secs(5));
    }
    drop(p);
}

/// A snapshot whose partitions each hold several pieces (over `niyet_identity::PIECE`, so
/// each section is spilled to a file of its own and copied into the snapshot) restores the
/// state a replay builds, and leaves no temporary file behind.
#[test]
fn a_snapshot_of_many_pieces_restores_what_a_replay_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(&tmp.path().join("log"));
    let bio = "ç".repeat(200);
    for chunk in (0..12_000usize).collect::<Vec<_>>().chunks(2_000) {
        let recs = chunk
            .iter()
            .map(|&i| NewRecord {
                time_ms: 1_700_000_000_000 + i as i64,
                key: 0,
                payload: json!({
                    "type": "identify",
                    "messageId": format!("m{i}"),
                    "userId": format!("u{i}"),
                    "timestamp": niyet_model::format_rfc3339_millis(1_700_000_000_000 + i as i64),
                    "traits": {"city": format!("c{}", i % 7), "bio": bio},
                })
                .to_string()
                .into_bytes(),
            })
            .collect();
        log.append_blocking(recs).unwrap();
    }
    let live = tmp.path().join("live");
    // A snapshot only at the end (on close), of every profile.
    let (before, _) = run(&log, cfg(&live, 2, 1_000_000_000));
    let names: Vec<String> = std::fs::read_dir(&live)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("snapshot-"))
        .collect();
    assert_eq!(names.len(), 1, "only the snapshot stays: {names:?}");
    let (off, path) = newest_snapshot(&live).unwrap();
    assert_eq!(off, log.end_offset());
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        size > 4 * niyet_identity::PIECE as u64,
        "{size} bytes: each of the two partitions spans several pieces"
    );
    let (restored, stats) = run(&log, cfg(&live, 2, 1_000_000_000));
    assert_eq!(stats.restored_from, Some(off));
    assert_eq!(restored.as_array().unwrap().len(), 12_000);
    assert_eq!(restored, before);
    let (replayed, _) = run(&log, cfg(&tmp.path().join("replay"), 3, 1_000_000_000));
    assert_eq!(replayed, before);
}
