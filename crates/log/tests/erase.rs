//! Erasure in place: erased records keep their offsets but lose their bytes, in closed and
//! active segments alike (with direct I/O, where the last block is kept in memory), across
//! later appends and a reopen.

use niyet_log::{Log, LogConfig, NewRecord, ERASED};

fn rec(i: u64, secret: bool) -> NewRecord {
    let text = if secret {
        format!("{{\"email\":\"secret-{i}@example.com\",\"n\":{i}}}")
    } else {
        format!(
            "{{\"n\":{i},\"pad\":\"{}\"}}",
            "x".repeat((i % 50) as usize)
        )
    };
    NewRecord {
        time_ms: i as i64,
        key: 0,
        payload: text.into_bytes(),
    }
}

/// The bytes of every file in `dir`. The next segment is written ahead on a thread of its
/// own (`next.prep.tmp`, renamed when done), so a file listed may be gone when it is read:
/// then the whole directory is read again.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    'again: loop {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("dir").flatten() {
            match std::fs::read(e.path()) {
                Ok(b) => out.extend(b),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue 'again,
                Err(err) => panic!("read {}: {err}", e.path().display()),
            }
        }
        return out;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn erased_records_leave_every_file_and_the_rest_stays() {
    // Under /work-like disk storage when possible: direct I/O is only refused by tmpfs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut cfg = LogConfig::new(dir.path());
    cfg.segment_bytes = 4096;
    let log = Log::open(cfg.clone(), 0).expect("open");
    let secret = |i: u64| i % 7 == 3;
    for chunk in (0..300u64).collect::<Vec<_>>().chunks(10) {
        log.append_blocking(chunk.iter().map(|&i| rec(i, secret(i))).collect())
            .expect("append");
    }
    assert!(log.stats().segments > 3, "several segments");
    let targets: Vec<u64> = (0..300).filter(|&i| secret(i)).collect();
    // Given out of order and with a repeat and an offset past the end.
    let mut given = targets.clone();
    given.reverse();
    given.push(targets[0]);
    given.push(10_000);
    assert_eq!(log.erase(given).expect("erase"), targets.len() as u64);
    // Appends after the erasure rewrite the active segment's last block: the erased
    // bytes must not come back.
    for i in 300..310 {
        log.append_blocking(vec![rec(i, false)]).expect("append");
    }
    let check = |log: &Log| {
        let all = log.read(0, 1000).expect("read");
        assert_eq!(all.len(), 310);
        for r in &all {
            if secret(r.offset) && r.offset < 300 {
                assert!(
                    r.payload.starts_with(ERASED),
                    "offset {} not erased",
                    r.offset
                );
                assert_eq!(r.payload.len(), rec(r.offset, true).payload.len());
            } else {
                assert_eq!(
                    r.payload,
                    rec(r.offset, false).payload,
                    "offset {}",
                    r.offset
                );
            }
            assert_eq!(r.time_ms, r.offset as i64);
        }
    };
    check(&log);
    log.close();
    drop(log);
    let bytes = all_bytes(dir.path());
    assert!(
        !contains(&bytes, b"secret-"),
        "erased bytes are still on disk"
    );
    let log = Log::open(cfg, 0).expect("reopen");
    check(&log);
}

/// One record read at a time, as a destination fetches each action's starting event:
/// each read after the first of a stretch is served from the bytes the reader kept, so
/// an erasure in between must make it read them again.
#[test]
fn single_reads_see_an_erasure_made_after_them() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let cfg = LogConfig::new(dir.path());
    let log = Log::open(cfg.clone(), 0).expect("open");
    let secret = |i: u64| i % 7 == 3;
    log.append_blocking((0..300u64).map(|i| rec(i, secret(i))).collect())
        .expect("append");
    log.close();
    drop(log);
    // Reopened: nothing is in memory, so reads go to the file.
    let log = Log::open(cfg, 0).expect("reopen");
    let one = |o: u64| {
        let r = log.read(o, 1).expect("read");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].offset, o);
        r[0].payload.clone()
    };
    // Forward a little apart, back, and the same one again: each as written.
    for o in [3, 10, 17, 24, 24, 5, 150, 149, 299, 0] {
        assert_eq!(one(o), rec(o, secret(o)).payload, "offset {o}");
    }
    // Kept from the reads just made (same thread), then erased.
    assert_eq!(one(24), rec(24, true).payload);
    assert_eq!(log.erase(vec![24, 31]).expect("erase"), 2);
    for o in [24, 31, 38] {
        let p = one(o);
        if o == 38 {
            assert_eq!(p, rec(o, true).payload, "not erased");
        } else {
            assert!(
                p.starts_with(ERASED),
                "offset {o} read as it was before the erasure"
            );
        }
    }
}
