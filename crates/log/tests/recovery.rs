//! Crash recovery: a torn tail anywhere in the last segment recovers to the last whole
//! record; damage before the last segment is reported, never dropped.

mod common;
use common::*;
use niyet_log::{Log, LogConfig, LogError, NewRecord};
use proptest::prelude::*;
use std::fs::{self, OpenOptions};

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_truncation_of_the_last_segment_recovers_to_the_last_whole_record(
        sizes in prop::collection::vec(0usize..700, 1..40),
        cut_frac in 0.0f64..=1.0,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let written: Vec<NewRecord> = sizes.iter().enumerate().map(|(i, &n)| rec(i as u64, n, 0)).collect();
        {
            let log = Log::open(small_cfg(dir.path()), 0).expect("open");
            for chunk in written.chunks(3) {
                log.append_blocking(chunk.to_vec()).expect("append");
            }
        }
        let segs = segments(dir.path());
        let last = segs.last().expect("a segment");
        let base: u64 = last.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).expect("base");
        let len = fs::metadata(last).expect("meta").len();
        let cut = (len as f64 * cut_frac) as u64;
        OpenOptions::new().write(true).open(last).expect("open").set_len(cut).expect("truncate");

        // Which records of the last segment are whole below the cut.
        let mut pos = niyet_log::SEGMENT_HEADER_LEN;
        let mut whole = base;
        for r in &written[base as usize..] {
            pos += (niyet_log::RECORD_OVERHEAD + r.payload.len()) as u64;
            if pos <= cut { whole += 1 } else { break }
        }

        let log = Log::open(small_cfg(dir.path()), 0).expect("reopen");
        let got = read_all(&log);
        prop_assert_eq!(got.len() as u64, whole);
        for (g, w) in got.iter().zip(&written) {
            prop_assert_eq!(&g.payload, &w.payload);
            prop_assert_eq!(g.time_ms, w.time_ms);
        }
        // The log keeps working after recovery, at the next offset.
        let r = log.append_blocking(vec![rec(999, 10, 0)]).expect("append after recovery");
        prop_assert_eq!(r, vec![niyet_log::Appended::At(whole)]);
        drop(log);
        let log = Log::open(small_cfg(dir.path()), 0).expect("reopen twice");
        prop_assert_eq!(read_all(&log).len() as u64, whole + 1);
    }

    #[test]
    fn a_flipped_byte_in_the_tail_loses_only_records_from_there_on(
        sizes in prop::collection::vec(1usize..300, 2..12),
        flip_frac in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = LogConfig::new(dir.path());
        cfg.segment_bytes = 1 << 20;
        let written: Vec<NewRecord> = sizes.iter().enumerate().map(|(i, &n)| rec(i as u64, n, 0)).collect();
        {
            let log = Log::open(cfg.clone(), 0).expect("open");
            log.append_blocking(written.clone()).expect("append");
        }
        let seg = segments(dir.path()).pop().expect("segment");
        let mut bytes = fs::read(&seg).expect("read");
        let body_len = bytes.len() as u64 - niyet_log::SEGMENT_HEADER_LEN;
        let at = niyet_log::SEGMENT_HEADER_LEN + (body_len as f64 * flip_frac) as u64;
        bytes[at as usize] ^= 0x5a;
        fs::write(&seg, &bytes).expect("write");
        let mut pos = niyet_log::SEGMENT_HEADER_LEN;
        let mut intact = 0;
        for r in &written {
            let end = pos + (niyet_log::RECORD_OVERHEAD + r.payload.len()) as u64;
            if at < end { break }
            intact += 1;
            pos = end;
        }
        let log = Log::open(cfg, 0).expect("reopen");
        let got = read_all(&log);
        prop_assert_eq!(got.len(), intact);
    }
}

#[test]
fn damage_before_the_last_segment_is_an_error_not_a_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(small_cfg(dir.path()), 0).expect("open");
        for i in 0..40 {
            log.append_blocking(vec![rec(i, 400, 0)]).expect("append");
        }
    }
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "several segments: {}", segs.len());
    let mut bytes = fs::read(&segs[0]).expect("read");
    bytes[100] ^= 0xff;
    fs::write(&segs[0], &bytes).expect("write");
    match Log::open(small_cfg(dir.path()), 0) {
        Err(LogError::Corrupt { detail, .. }) => assert!(detail.contains("checksum"), "{detail}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a corrupt log"),
    }
}

#[test]
fn a_torn_header_of_a_fresh_segment_is_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(small_cfg(dir.path()), 0).expect("open");
        for i in 0..20 {
            log.append_blocking(vec![rec(i, 400, 0)]).expect("append");
        }
    }
    // A crash between creating the next segment and writing its header.
    let next = dir.path().join(format!("{:020}.seg", 20));
    fs::write(&next, b"NIY").expect("write");
    let log = Log::open(small_cfg(dir.path()), 0).expect("reopen");
    assert_eq!(read_all(&log).len(), 20);
    assert_eq!(
        log.append_blocking(vec![rec(20, 5, 0)]).expect("append"),
        vec![niyet_log::Appended::At(20)]
    );
}
