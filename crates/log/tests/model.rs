//! Model-based test: random appends, reads and reopenings against a `Vec` model.

mod common;
use common::*;
use niyet_log::{Appended, Log, NewRecord};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(usize, u8)>),
    Read(u64, usize),
    /// Reads on from where the last read ended (as the pipeline and destinations do).
    Follow(usize),
    /// Visits records in place (as backfills do).
    Scan(u64, usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0usize..900, 0u8..6), 1..8).prop_map(Op::Append),
        2 => (0u64..200, 1usize..50).prop_map(|(a, b)| Op::Read(a, b)),
        2 => (1usize..20).prop_map(Op::Follow),
        2 => (0u64..200, 1usize..50).prop_map(|(a, b)| Op::Scan(a, b)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn log_behaves_like_a_vec_with_idempotent_keys(ops in prop::collection::vec(op(), 1..40), direct in any::<bool>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = niyet_log::LogConfig { direct_io: direct, ..small_cfg(dir.path()) };
        let mut log = Log::open(cfg.clone(), 0).expect("open");
        let mut model: Vec<NewRecord> = Vec::new();
        let mut n = 0u64;
        let mut followed = 0u64;
        for op in ops {
            let op = match op {
                Op::Follow(max) => Op::Read(followed, max),
                op => op,
            };
            match op {
                Op::Append(items) => {
                    let recs: Vec<NewRecord> = items.iter().map(|&(len, key)| { n += 1; rec(n, len, u128::from(key)) }).collect();
                    let got = log.append_blocking(recs.clone()).expect("append");
                    for (r, g) in recs.into_iter().zip(got) {
                        let dup = r.key != 0 && model.iter().any(|m| m.key == r.key);
                        if dup {
                            prop_assert_eq!(g, Appended::Duplicate);
                        } else {
                            prop_assert_eq!(g, Appended::At(model.len() as u64));
                            model.push(r);
                        }
                    }
                }
                Op::Read(from, max) => {
                    let got = log.read(from, max).expect("read");
                    let want: Vec<_> = model.iter().skip(from as usize).take(max).collect();
                    followed = from + got.len() as u64;
                    prop_assert_eq!(got.len(), want.len());
                    for (i, (g, w)) in got.iter().zip(want).enumerate() {
                        prop_assert_eq!(g.offset, from + i as u64);
                        prop_assert_eq!(&g.payload, &w.payload);
                        prop_assert_eq!(g.key, w.key);
                    }
                }
                Op::Scan(from, max) => {
                    let mut got = Vec::new();
                    let n = log
                        .scan(from, max, |r| got.push((r.offset, r.key, r.payload.to_vec())))
                        .expect("scan");
                    let want: Vec<_> = model.iter().skip(from as usize).take(max).collect();
                    prop_assert_eq!(n, got.len());
                    prop_assert_eq!(got.len(), want.len());
                    for (i, (g, w)) in got.iter().zip(want).enumerate() {
                        prop_assert_eq!(g.0, from + i as u64);
                        prop_assert_eq!(g.1, w.key);
                        prop_assert_eq!(&g.2, &w.payload);
                    }
                }
                Op::Follow(_) => unreachable!("turned into a read above"),
                Op::Reopen => {
                    drop(log);
                    log = Log::open(cfg.clone(), 1_000).expect("reopen");
                }
            }
            prop_assert_eq!(log.end_offset(), model.len() as u64);
        }
    }
}

#[test]
fn dedup_survives_restart_and_expires_with_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = small_cfg(dir.path());
    cfg.dedup_window_ms = 10_000;
    let key = 0xfeed_u128;
    let at = |t: i64| NewRecord {
        time_ms: t,
        key,
        payload: b"x".to_vec(),
    };
    {
        let log = Log::open(cfg.clone(), 0).expect("open");
        assert_eq!(
            log.append_blocking(vec![at(1_000)]).expect("a"),
            vec![Appended::At(0)]
        );
        assert_eq!(
            log.append_blocking(vec![at(1_001), at(1_002)]).expect("b"),
            vec![Appended::Duplicate; 2]
        );
    }
    let log = Log::open(cfg.clone(), 5_000).expect("reopen inside the window");
    assert_eq!(
        log.append_blocking(vec![at(5_000)]).expect("c"),
        vec![Appended::Duplicate]
    );
    drop(log);
    let log = Log::open(cfg, 20_000).expect("reopen after the window");
    assert_eq!(
        log.append_blocking(vec![at(20_000)]).expect("d"),
        vec![Appended::At(1)]
    );
    assert_eq!(log.stats().duplicates, 0, "counter is per process");
}

#[test]
fn retention_removes_old_and_oversized_closed_segments_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = small_cfg(dir.path());
    cfg.retention_max_age_ms = Some(100_000);
    let log = Log::open(cfg.clone(), 0).expect("open");
    for i in 0..60u64 {
        let t = if i < 30 { 1_000 } else { 500_000 };
        log.append_blocking(vec![NewRecord {
            time_ms: t,
            key: 0,
            payload: vec![7; 300],
        }])
        .expect("append");
    }
    let before = log.stats();
    let report = log.enforce_retention(550_000).expect("retention");
    let after = log.stats();
    assert!(report.segments_removed > 0);
    assert!(
        after.start_offset > 0 && after.start_offset <= 30,
        "{after:?}"
    );
    assert_eq!(after.end_offset, before.end_offset);
    assert_eq!(after.total_bytes, before.total_bytes - report.bytes_removed);
    assert!(matches!(
        log.read(0, 1),
        Err(niyet_log::LogError::BeforeStart { .. })
    ));
    assert_eq!(read_all(&log).len() as u64, 60 - after.start_offset);
    drop(log);

    cfg.retention_max_age_ms = None;
    cfg.retention_max_bytes = Some(5_000);
    let log = Log::open(cfg, 0).expect("reopen");
    log.enforce_retention(550_000).expect("retention by size");
    let s = log.stats();
    assert!(s.total_bytes <= 5_000 + 4_096, "{s:?}");
    assert!(s.segments >= 1);
    assert_eq!(
        read_all(&log).last().map(|r| r.offset),
        Some(59),
        "the newest records stay"
    );
}

#[test]
fn concurrent_appenders_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        std::sync::Arc::new(Log::open(niyet_log::LogConfig::new(dir.path()), 0).expect("open"));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let key = u128::from(t * 1_000 + i + 1);
                    log.append_blocking(vec![rec(i, 64, key)]).expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join");
    }
    let all = read_all(&log);
    assert_eq!(all.len(), 1_600);
    let mut keys: Vec<u128> = all.iter().map(|r| r.key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 1_600);
    assert!(log.stats().commits <= 1_600);
}

#[test]
fn a_crash_with_direct_io_padding_in_the_file_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = niyet_log::LogConfig::new(dir.path());
    let log = Log::open(cfg.clone(), 0).expect("open");
    for i in 0..50u64 {
        log.append_blocking(vec![rec(i, 100 + i as usize, 0)])
            .expect("append");
    }
    let direct = log.stats().direct_io;
    // A crash: the writer never gets to cut the file to its exact length.
    std::mem::forget(log);
    let seg = dir.path().join(format!("{:020}.seg", 0));
    let len = std::fs::metadata(&seg).expect("meta").len();
    if direct {
        assert_eq!(len % 4096, 0, "direct writes end on a block boundary");
    }
    let log = Log::open(cfg, 0).expect("reopen");
    let all = read_all(&log);
    assert_eq!(all.len(), 50);
    assert_eq!(all[49].payload.len(), 149);
    assert_eq!(
        log.append_blocking(vec![rec(50, 10, 0)]).expect("append"),
        vec![Appended::At(50)]
    );
}

/// With direct I/O and through the page cache alike, the next segment's file is written
/// full of zeros ahead of need and taken at rotation; a crash inside such a segment loses
/// nothing, and its zero tail is not read as records.
#[test]
fn segments_from_prepared_files_lose_nothing_in_a_crash() {
    for direct in [true, false] {
        prepared_segments(direct);
    }
}

fn prepared_segments(direct: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = niyet_log::LogConfig::new(dir.path());
    cfg.segment_bytes = 64 << 10;
    cfg.direct_io = direct;
    let log = Log::open(cfg.clone(), 0).expect("open");
    if direct && !log.stats().direct_io {
        eprintln!("no direct I/O on this filesystem");
        return;
    }
    let prep = dir.path().join("next.prep");
    let mut n = 0u64;
    for _ in 0..5 {
        // As the segment fills, the next one is prepared, long before it is needed.
        let segments = log.stats().segments;
        let mut k = 0;
        while !prep.exists() {
            log.append_blocking(vec![rec(n, 1_000, 0)]).expect("append");
            n += 1;
            k += 1;
            assert!(k < 60, "no prepared segment after {k} records");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // The preparing thread syncs the directory after the rename, then ends.
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Past the end of the segment: the rotation takes the prepared file.
        while log.stats().segments == segments {
            log.append_blocking(vec![rec(n, 1_000, 0)]).expect("append");
            n += 1;
        }
        assert!(!prep.exists(), "the rotation took the prepared file");
    }
    assert!(log.stats().segments >= 5);
    // The active segment is a prepared file: longer than its records, zeros after them.
    let active = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .expect("a segment");
    let file_len = std::fs::metadata(&active).expect("meta").len();
    assert_eq!(file_len, 64 << 10, "the active segment was prepared");
    std::mem::forget(log);
    let log = Log::open(cfg, 0).expect("reopen");
    let all = read_all(&log);
    assert_eq!(all.len() as u64, n);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.payload, rec(i as u64, 1_000, 0).payload, "record {i}");
    }
    assert_eq!(
        log.append_blocking(vec![rec(n, 10, 0)]).expect("append"),
        vec![Appended::At(n)]
    );
}

/// Every appender is answered only once its records are readable, in commit order, and a
/// duplicate never before its first copy (which may still be in the commit being synced
/// when the duplicate arrives).
#[test]
fn answers_follow_durability_in_commit_order() {
    for direct in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = niyet_log::LogConfig {
            direct_io: direct,
            segment_bytes: 32 << 10,
            ..niyet_log::LogConfig::new(dir.path())
        };
        let log = std::sync::Arc::new(Log::open(cfg, 0).expect("open"));
        let (tx, rx) = std::sync::mpsc::channel::<(u128, Appended, bool)>();
        let per_thread = 200u64;
        let dups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (log, tx, dups) = (log.clone(), tx.clone(), dups.clone());
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        // Each key once, then again as duplicates until the first copy is
                        // answered, so that some duplicates come in a commit of their own
                        // while the first copy's sync is still running.
                        let key = u128::from(t * 10_000 + i + 1);
                        let answered =
                            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                        for n in 0..40 {
                            if n > 0 && answered.load(std::sync::atomic::Ordering::SeqCst) {
                                break;
                            }
                            if n > 0 {
                                dups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            let (l, tx, answered) = (log.clone(), tx.clone(), answered.clone());
                            log.append(
                                vec![rec(i, 40 + (i as usize % 300), key)],
                                Box::new(move |r| {
                                    let a = r.expect("append")[0];
                                    let readable = match a {
                                        Appended::At(off) => l.end_offset() > off,
                                        Appended::Duplicate => true,
                                    };
                                    let _ = tx.send((key, a, readable));
                                    if n == 0 {
                                        answered.store(true, std::sync::atomic::Ordering::SeqCst);
                                    }
                                }),
                            );
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for t in threads {
            t.join().expect("join");
        }
        let answers: Vec<_> = rx.iter().collect();
        let dups = dups.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(answers.len(), 4 * per_thread as usize + dups);
        let mut first_at = std::collections::HashMap::new();
        let mut last_offset = None;
        for (k, a, readable) in &answers {
            match a {
                Appended::At(off) => {
                    assert!(readable, "answered before readable (direct: {direct})");
                    assert!(
                        last_offset.is_none_or(|l| *off > l),
                        "answers out of commit order"
                    );
                    last_offset = Some(*off);
                    assert!(first_at.insert(*k, *off).is_none(), "a key stored twice");
                }
                Appended::Duplicate => assert!(
                    first_at.contains_key(k),
                    "a duplicate answered before its first copy (direct: {direct})"
                ),
            }
        }
        assert_eq!(first_at.len(), 4 * per_thread as usize);
        let all = read_all(&log);
        assert_eq!(all.len(), 4 * per_thread as usize);
        assert!(log.stats().segments > 1, "the load crossed rotations");
    }
}
