//! `niyet bench erase`: how long erasing one person takes among a million, while ingest
//! goes on.
//!
//! A separate `niyet serve` process on loopback is loaded with `--customers` typical shop
//! customers (4 events each); background traffic then runs at `--rate` events/s while
//! `--runs` customers are erased one after another by e-mail over the admin API (the call
//! answers once everything is gone: profile, identity, events rewritten in the log, a new
//! snapshot, quarantine, delivery records). Reported: the wall time of each erasure
//! (median and maximum), events acknowledged while erasures ran, and a check that the
//! erased customers are no longer found.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use niyet_model::Clock;
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::{machine, start_server_with, BENCH_ADMIN};
use crate::bench_segments::{load, Background, KEY};
use crate::client::IngestClient;

/// Arguments of `niyet bench erase`.
#[derive(Debug, Args)]
pub struct EraseBench {
    /// Customers loaded.
    #[arg(long, default_value_t = 1_000_000)]
    customers: u64,
    /// Erasures (each of another customer).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Background ingest during the erasures (events/s).
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Concurrent connections for the load.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Report {
    cores: usize,
    memory_gib: f64,
    customers: u64,
    load_events_per_s: f64,
    erase_ms: Vec<f64>,
    median_ms: f64,
    max_ms: f64,
    events_erased: Vec<u64>,
    background_events_during_erasures: u64,
    background_events_per_s: f64,
}

pub async fn run(a: EraseBench) -> anyhow::Result<()> {
    let t0 = niyet_model::SystemClock.now_ms() - 10 * 86_400_000;
    eprintln!("loading {} customers…", a.customers);
    let (url, server) = start_server_with(KEY, None).await?;
    let rate = load(&url, a.customers, a.connections, t0).await?;
    eprintln!("  {rate:.0} events/s");
    let client = IngestClient::new(&url, KEY)?;
    let bg = Background::start(&client, a.rate, a.customers, t0)?;
    let sent = bg.sent.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let http = reqwest::Client::new();
    let (mut took, mut erased) = (Vec::new(), Vec::new());
    let before = sent.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    for k in 0..a.runs.max(1) {
        // Spread over the id space: early, middle and late customers.
        let i = (k as u64 * 7_919 + 1) * a.customers / (a.runs.max(1) as u64 * 7_919 + 2);
        let email = format!("customer{i}@example.com");
        let t = Instant::now();
        let r = http
            .post(format!("{url}/v1/privacy/erase"))
            .bearer_auth(BENCH_ADMIN)
            .json(&json!({ "email": email }))
            .timeout(Duration::from_secs(120))
            .send()
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() || v["status"] != "complete" {
            bail!("erasing {email}: HTTP {status}: {v}");
        }
        let gone = http
            .get(format!("{url}/v1/profiles?email={email}"))
            .bearer_auth(BENCH_ADMIN)
            .send()
            .await?
            .status();
        if gone.as_u16() != 404 {
            bail!("{email} is still found after its erasure ({gone})");
        }
        eprintln!(
            "  erased {email}: {ms:.0} ms, {} events",
            v["events_erased"]
        );
        took.push(ms);
        erased.push(v["events_erased"].as_u64().unwrap_or(0));
    }
    let during = sent.load(std::sync::atomic::Ordering::Relaxed) - before;
    let secs = started.elapsed().as_secs_f64();
    bg.stop().await;
    drop(server);
    let mut sorted = took.clone();
    sorted.sort_by(f64::total_cmp);
    let (cores, memory_gib) = machine();
    let r = Report {
        cores,
        memory_gib,
        customers: a.customers,
        load_events_per_s: rate,
        median_ms: sorted[sorted.len() / 2],
        max_ms: sorted[sorted.len() - 1],
        erase_ms: took,
        events_erased: erased,
        background_events_during_erasures: during,
        background_events_per_s: during as f64 / secs,
    };
    println!("niyet bench erase — {cores} cores, {memory_gib:.0} GiB");
    println!(
        "  erasure of one customer among {}: median {:.0} ms, max {:.0} ms ({} runs: {}); ingest meanwhile {} events acknowledged ({:.0} events/s)",
        r.customers,
        r.median_ms,
        r.max_ms,
        r.erase_ms.len(),
        r.erase_ms
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" · "),
        r.background_events_during_erasures,
        r.background_events_per_s
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(())
}
