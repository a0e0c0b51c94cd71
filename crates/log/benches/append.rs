//! Micro-benchmarks of the segment log: durable group-committed appends and sequential
//! reads. `cargo bench -p niyet-log --bench append`.
//!
//! With `--features compare-fjall` the same workload also runs against fjall (an embedded
//! LSM store), one keyspace partition with monotonically increasing keys and one
//! `persist(SyncData)` per batch — the alternative weighed in ARCHITECTURE.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use niyet_log::{Log, LogConfig, NewRecord};

const VALUE: usize = 256;

fn batch(n: usize, start: u64) -> Vec<NewRecord> {
    (0..n as u64)
        .map(|i| NewRecord {
            time_ms: 1_000,
            key: u128::from(start + i + 1),
            payload: vec![(i % 251) as u8; VALUE],
        })
        .collect()
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_append_256B");
    g.sample_size(20);
    for per_sync in [100usize, 500] {
        g.throughput(Throughput::Elements(per_sync as u64));
        let dir = tempfile::tempdir_in(".").expect("tempdir");
        let log = Log::open(LogConfig::new(dir.path()), 0).expect("open");
        let mut n = 0u64;
        g.bench_with_input(
            BenchmarkId::new("niyet-log", per_sync),
            &per_sync,
            |b, &k| {
                b.iter(|| {
                    log.append_blocking(batch(k, n)).expect("append");
                    n += k as u64;
                })
            },
        );
        #[cfg(feature = "compare-fjall")]
        {
            let fdir = tempfile::tempdir_in(".").expect("tempdir");
            let ks = fjall::Config::new(fdir.path()).open().expect("fjall");
            let part = ks
                .open_partition("events", fjall::PartitionCreateOptions::default())
                .expect("partition");
            let mut n = 0u64;
            g.bench_with_input(BenchmarkId::new("fjall", per_sync), &per_sync, |b, &k| {
                b.iter(|| {
                    let mut wb = ks.batch();
                    for r in batch(k, n) {
                        n += 1;
                        wb.insert(&part, n.to_be_bytes(), r.payload);
                    }
                    wb.commit().expect("commit");
                    ks.persist(fjall::PersistMode::SyncData).expect("persist");
                })
            });
        }
    }
    g.finish();
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").expect("tempdir");
    let log = Log::open(LogConfig::new(dir.path()), 0).expect("open");
    for i in 0..200u64 {
        log.append_blocking(batch(500, i * 500)).expect("append");
    }
    let mut g = c.benchmark_group("sequential_read_256B");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("niyet-log", |b| {
        let mut from = 0u64;
        b.iter(|| {
            let r = log.read(from, 1000).expect("read");
            from = (from + 1000) % 99_000;
            r.len()
        })
    });
    g.finish();
}

criterion_group!(benches, appends, reads);
criterion_main!(benches);
