#![allow(dead_code)]
use niyet_log::{Log, LogConfig, NewRecord, Record};
use std::path::Path;

pub fn small_cfg(dir: &Path) -> LogConfig {
    let mut cfg = LogConfig::new(dir);
    cfg.segment_bytes = 4096;
    cfg
}

pub fn rec(i: u64, len: usize, key: u128) -> NewRecord {
    NewRecord {
        time_ms: 1_000 + i as i64,
        key,
        payload: (0..len).map(|j| (i as usize * 31 + j) as u8).collect(),
    }
}

pub fn read_all(log: &Log) -> Vec<Record> {
    let mut out = Vec::new();
    let mut from = log.stats().start_offset;
    loop {
        let batch = log.read(from, 37).expect("read");
        if batch.is_empty() {
            return out;
        }
        from = batch.last().expect("nonempty").offset + 1;
        out.extend(batch);
    }
}
