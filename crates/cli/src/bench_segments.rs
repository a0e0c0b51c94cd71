//! `niyet bench segments`: what segments cost and how fast they follow events.
//!
//! Servers are separate `niyet serve` processes on loopback, as in the other benches.
//!
//! 1. **Overhead**: the same load (typical shop customers, as in `bench profiles`) into
//!    a fresh server with no segments and into one with 50 segments (the six built-in
//!    lifecycle segments and 44 more over the same events and traits), alternating; events/s
//!    until durable and reflected in profiles *and* segments.
//! 2. **Backfill**: with `--profiles` customers loaded, a new segment is created through
//!    the API; the answer comes once every profile is evaluated. Once with a rule needing
//!    new features (filled from the log), once with a rule over features already kept.
//! 3. **Latency**: with background load at half of the 50-segment throughput, single
//!    events that make a profile enter a segment; the time from sending each until the
//!    entry arrives on the live stream (`/v1/stream/segments`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use niyet_model::Clock;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::bench::{latency, machine, start_server_with, Latency, Spawned, BENCH_ADMIN};
use crate::bench_profiles::{
    caught_up, customer_batch, rss_mib, send_all, traffic_batch, BatchMaker,
};
use crate::client::IngestClient;

/// Arguments of `niyet bench segments`.
#[derive(Debug, Args)]
pub struct SegmentsBench {
    /// Customers loaded in each overhead run.
    #[arg(long, default_value_t = 200_000)]
    customers: u64,
    /// Overhead runs per configuration (alternating; medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Customers loaded before the backfill and latency measurements.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: u64,
    /// Latency probes.
    #[arg(long, default_value_t = 500)]
    probes: usize,
    /// Concurrent connections for loads.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Background load during the latency probes, events/s (default: half of the
    /// 50-segment throughput measured in this run); a fixed rate makes runs of two
    /// binaries comparable.
    #[arg(long)]
    rate: Option<f64>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    cores: usize,
    memory_gib: f64,
    customers: u64,
    without_segments: Vec<f64>,
    with_50_segments: Vec<f64>,
    median_without: f64,
    median_with: f64,
    drop_percent: f64,
    /// The server's processor time for each load (s): steadier than throughput on a
    /// shared machine, it shows what the segments cost per event.
    cpu_without_s: Vec<f64>,
    cpu_with_s: Vec<f64>,
    /// How much more processor time the load takes with 50 segments (medians).
    cpu_more_percent: f64,
    profiles: u64,
    /// The same rule's dry run (`POST /v1/rules/preview`) just before it is saved.
    dry_run_s: f64,
    backfill_new_features_s: f64,
    backfill_new_features_events: u64,
    backfill_shared_features_s: f64,
    background_events_per_s: f64,
    latency: Latency,
    /// Of which: until the probe's write was acknowledged (durable in the log).
    ack_latency: Latency,
    /// Each probe in the order sent, µs: `(until its entry arrived, until its ack)`. Shows
    /// whether slow probes come together (a pause) or apart (contention).
    probes_us: Vec<(u64, u64)>,
}

pub(crate) const KEY: &str = "bench-write-key";
const CITIES: [&str; 6] = ["İstanbul", "Ankara", "İzmir", "Bursa", "Antalya", "Konya"];

/// 44 segments over the bench's events and traits, besides the six built-ins.
fn fifty() -> String {
    let mut t = String::from("[lifecycle]\nenabled = true\n");
    for k in 0..44u32 {
        let city = CITIES[(k % 6) as usize];
        let rule = match k % 11 {
            0 => format!("count(Product Viewed in {}d) >= {}", 7 + k, 1 + k % 3),
            1 => format!("trait.city = \"{city}\" and count(Order Completed in 90d) >= 1"),
            2 => format!(
                "sum(Order Completed.revenue in {}d) > {}",
                30 + k,
                100 + 10 * k
            ),
            3 => format!("age between {} and {}", 18 + k % 40, 28 + k % 40),
            4 => format!("Product Viewed where sku = \"K-{k}\" in 30d"),
            5 => "Product Viewed then Product Added within 1h in 30d".to_string(),
            6 => format!("trait.gender = \"f\" and Product Added in {}d", 3 + k),
            7 => format!("last_seen(Order Completed) < {}d ago", 20 + k),
            8 => format!("distinct(Product Viewed.sku in {}d) >= 2", 60 + k),
            9 => format!("trait.city in [\"{city}\", \"Bursa\"] and not segment(\"VIP\")"),
            _ => format!(
                "Page Viewed in {}d and no Order Completed in {}d",
                1 + k,
                1 + k
            ),
        };
        t.push_str(&format!(
            "\n[[segments]]\nname = \"s{k}\"\nrule = '{rule}'\n"
        ));
    }
    t
}

const NONE: &str = "[lifecycle]\nenabled = false\n";

/// Loads `n` customers; events/s until everything is processed.
pub(crate) async fn load(url: &str, n: u64, conns: usize, t0: i64) -> anyhow::Result<f64> {
    let (events, started) = load_events(url, n, conns, t0).await?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// [`load`]'s events and when it started (for callers that wait for more afterwards).
pub(crate) async fn load_events(
    url: &str,
    n: u64,
    conns: usize,
    t0: i64,
) -> anyhow::Result<(u64, Instant)> {
    let client = IngestClient::new(url, KEY)?;
    let http = reqwest::Client::new();
    let per_batch = 20u64;
    let batches = n.div_ceil(per_batch);
    let bodies: Vec<Vec<u8>> = (0..batches)
        .rev()
        .map(|b| customer_batch(b * per_batch, per_batch.min(n - b * per_batch), t0))
        .collect();
    let pool = Arc::new(std::sync::Mutex::new(bodies));
    let started = Instant::now();
    let make: BatchMaker =
        Arc::new(move |_| pool.lock().ok().and_then(|mut p| p.pop()).map(|b| (b, 0)));
    let (events, _) = send_all(&client, conns, Arc::new(AtomicU64::new(0)), make).await?;
    caught_up(&http, url, Some(n)).await?;
    Ok((events, started))
}

async fn admin(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let r = http
        .request(method, url)
        .bearer_auth(BENCH_ADMIN)
        .json(&body)
        .timeout(Duration::from_secs(600))
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("{url}: HTTP {status}: {v}");
    }
    Ok(v)
}

/// Reads server-sent events of one segment's entries; sends their arrival times.
async fn listen(
    port: u16,
    segment: &str,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<Instant>> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    conn.set_nodelay(true)?;
    let q = segment.replace(' ', "%20");
    conn.write_all(
        format!(
            "GET /v1/stream/segments?segment={q} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {BENCH_ADMIN}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut lines = BufReader::new(conn).lines();
    // The stream is subscribed once its answer starts: no entry after this can be missed.
    let status = lines.next_line().await?.unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("the live stream answered {status:?}");
    }
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "event: segment entered" {
                let _ = tx.send(Instant::now());
            }
        }
    });
    Ok(rx)
}

/// Runs `job`'s future on a thread and runtime of its own, so that the bench's load
/// generator (tasks on the main runtime) never stands between a probe and its clock: the
/// measurement is then what a separate client process would see.
pub(crate) async fn on_own_thread<T, F, Fut>(job: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(job()));
            let _ = tx.send(out);
        })?;
    rx.await
        .context("the probe thread ended without an answer")?
}

/// Sends `probes` single events, one at a time, that each make a new profile enter the
/// segment "Probe"; the times (µs) from each send until its entry arrived on the live
/// stream, and until the write was acknowledged.
async fn probe_entries(
    url: String,
    port: u16,
    probes: usize,
) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let mut entries = listen(port, "Probe").await?;
    let client = IngestClient::new(&url, KEY)?;
    let mut us = Vec::with_capacity(probes);
    let mut acks = Vec::with_capacity(probes);
    for k in 0..probes {
        let body = json!({"userId": format!("probe-{k}"), "event": "Product Added", "properties": {"sku": "probe"}})
            .to_string()
            .into_bytes();
        let t = Instant::now();
        let (status, b) = client.post("/v1/track", body).await?;
        acks.push(t.elapsed().as_micros() as u64);
        if status != 200 {
            bail!(
                "probe refused: HTTP {status}: {}",
                String::from_utf8_lossy(&b.bytes)
            );
        }
        let at = tokio::time::timeout(Duration::from_secs(10), entries.recv())
            .await
            .context("no segment entry within 10 s")?
            .context("the stream closed")?;
        us.push(at.duration_since(t).as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((us, acks))
}

/// Background traffic at about `rate` events/s (batches of 100 over 8 connections, spread
/// evenly over time) until stopped.
///
/// The traffic stands for clients on other machines, so it runs on a runtime of its own
/// whose threads run at a lower processor priority (nice 10): on a machine it shares with
/// the server and the probes, its bursts then wait for the server's work instead of
/// delaying it. The server does the same work either way; the load still arrives at
/// `rate` (the reports give the rate reached).
pub(crate) struct Background {
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Events accepted so far.
    pub(crate) sent: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
}

/// The processor priority (nice value) of the background load's threads.
const BACKGROUND_NICE: i32 = 10;

impl Background {
    pub(crate) fn start(
        client: &IngestClient,
        rate: f64,
        customers: u64,
        t0: i64,
    ) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-load")
            .on_thread_start(|| {
                // Linux sets the priority of the calling thread only.
                if let Err(e) = rustix::process::setpriority_process(None, BACKGROUND_NICE) {
                    tracing::warn!(error = %e, "the background load runs at normal priority");
                }
            })
            .enable_all()
            .build()
            .context("starting the background load's runtime")?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let conns = 8u64;
        let every = Duration::from_secs_f64(100.0 * conns as f64 / rate.max(1.0));
        let seq = Arc::new(AtomicU64::new(1_000_000));
        let start = tokio::time::Instant::now();
        for c in 0..conns {
            let (client, stop, sent, seq) =
                (client.clone(), stop.clone(), sent.clone(), seq.clone());
            // Clients do not send in step: each connection's ticks are offset by its
            // share of the period, so batches arrive evenly instead of eight at once.
            let first = start + every.mul_f64(c as f64 / conns as f64);
            tasks.push(runtime.spawn(async move {
                let mut tick = tokio::time::interval_at(first, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let (body, _) =
                        traffic_batch(seq.fetch_add(1, Ordering::Relaxed), customers, t0);
                    if let Ok(Ok(ans)) = client.batch_with_retry(body, 3).await {
                        sent.fetch_add(ans.accepted, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Background {
            stop,
            sent,
            tasks,
            runtime,
        })
    }

    pub(crate) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        // Dropping a runtime blocks, which an async context may not do.
        self.runtime.shutdown_background();
    }
}

pub async fn run(a: SegmentsBench) -> anyhow::Result<()> {
    let t0 = niyet_model::SystemClock.now_ms() - 10 * 86_400_000;
    let fifty = fifty();

    // 1. Overhead.
    // Events/s and the server's processor seconds of each load.
    let (mut without, mut with) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for run in 0..a.runs.max(1) {
        for (cfg, out, what) in [
            (NONE, &mut without, "no segments"),
            (fifty.as_str(), &mut with, "50 segments"),
        ] {
            eprintln!(
                "load of {} customers with {what} ({}/{})…",
                a.customers,
                run + 1,
                a.runs.max(1)
            );
            let (url, server) = start_server_with(KEY, Some(cfg)).await?;
            let before = rss_mib(server.child.id());
            let cpu_before = server.cpu_seconds();
            out.0
                .push(load(&url, a.customers, a.connections, t0).await?);
            let cpu = server.cpu_seconds().zip(cpu_before).map(|(b, a)| b - a);
            out.1.push(cpu.unwrap_or(f64::NAN));
            let per = (rss_mib(server.child.id()) - before) * 1_048_576.0 / a.customers as f64;
            eprintln!(
                "  {:.0} events/s, server processor time {:.2} s, {per:.0} bytes of memory per customer",
                out.0[out.0.len() - 1],
                out.1[out.1.len() - 1],
            );
        }
    }
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let (m0, m50) = (median(&without.0), median(&with.0));
    let (cpu0, cpu50) = (median(&without.1), median(&with.1));

    // 2. Backfill over `profiles` customers (default configuration: built-ins on).
    eprintln!("loading {} customers for the backfill…", a.profiles);
    let (url, server): (String, Spawned) = start_server_with(KEY, None).await?;
    load(&url, a.profiles, a.connections, t0).await?;
    let http = reqwest::Client::new();
    let segs = format!("{url}/v1/segments");
    let new_rule =
        "count(Product Viewed in 45d) >= 1 and sum(Order Completed.revenue in 200d) > 100";
    // A dry run of the rule first: what the preview before saving costs.
    let started = Instant::now();
    let v = admin(
        &http,
        reqwest::Method::POST,
        &format!("{url}/v1/rules/preview"),
        json!({ "rule": new_rule }),
    )
    .await?;
    let dry_run = started.elapsed().as_secs_f64();
    eprintln!(
        "  dry run: {dry_run:.2} s, {} would match",
        v["would_match"]
    );
    let started = Instant::now();
    let v = admin(
        &http,
        reqwest::Method::POST,
        &segs,
        json!({"name": "Browsers with orders", "rule": new_rule}),
    )
    .await?;
    let backfill_new = started.elapsed().as_secs_f64();
    let backfill_events = v["backfill"]["backfilled_events"].as_u64().unwrap_or(0);
    eprintln!(
        "  new features: {backfill_new:.2} s, {backfill_events} events read back, {} members",
        v["size"]
    );
    let started = Instant::now();
    let v = admin(
        &http,
        reqwest::Method::POST,
        &segs,
        json!({"name": "Active in İstanbul", "rule": "count(Order Completed in 90d) >= 1 and trait.city = \"İstanbul\""}),
    )
    .await?;
    let backfill_shared = started.elapsed().as_secs_f64();
    eprintln!(
        "  shared features: {backfill_shared:.2} s, {} members",
        v["size"]
    );

    // 3. Latency under half of the 50-segment throughput.
    admin(
        &http,
        reqwest::Method::POST,
        &segs,
        json!({"name": "Probe", "rule": "Product Added where sku = \"probe\" in 1h"}),
    )
    .await?;
    let rate = a.rate.unwrap_or(m50 / 2.0);
    let client = IngestClient::new(&url, KEY)?;
    let bg = Background::start(&client, rate, a.profiles, t0)?;
    let sent = bg.sent.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "latency: {} probes under {:.0} events/s of background load…",
        a.probes, rate
    );
    let bg_started = Instant::now();
    let bg_before = sent.load(Ordering::Relaxed);
    let (us, acks) = on_own_thread({
        let (url, port, probes) = (url.clone(), server.port, a.probes);
        move || probe_entries(url, port, probes)
    })
    .await?;
    let background =
        (sent.load(Ordering::Relaxed) - bg_before) as f64 / bg_started.elapsed().as_secs_f64();
    bg.stop().await;
    let probes_us = us.iter().copied().zip(acks.iter().copied()).collect();
    let lat = latency(us);
    let ack = latency(acks);
    drop(server);

    let (cores, memory_gib) = machine();
    let r = Report {
        cores,
        memory_gib,
        customers: a.customers,
        median_without: m0,
        median_with: m50,
        drop_percent: (1.0 - m50 / m0) * 100.0,
        without_segments: without.0,
        with_50_segments: with.0,
        cpu_without_s: without.1,
        cpu_with_s: with.1,
        cpu_more_percent: (cpu50 / cpu0 - 1.0) * 100.0,
        profiles: a.profiles,
        dry_run_s: dry_run,
        backfill_new_features_s: backfill_new,
        backfill_new_features_events: backfill_events,
        backfill_shared_features_s: backfill_shared,
        background_events_per_s: background,
        latency: lat,
        ack_latency: ack,
        probes_us,
    };
    let fmt = |v: &[f64], decimals: usize| {
        v.iter()
            .map(|x| format!("{x:.decimals$}"))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    println!("niyet bench segments — {cores} cores, {memory_gib:.0} GiB");
    println!(
        "  load of {} customers: no segments {:.0} events/s ({}), 50 segments {:.0} events/s ({}): {:.1} % lower",
        r.customers, m0, fmt(&r.without_segments, 0), m50, fmt(&r.with_50_segments, 0), r.drop_percent
    );
    println!(
        "    server processor time: no segments {cpu0:.2} s ({}), 50 segments {cpu50:.2} s ({}): {:.1} % more",
        fmt(&r.cpu_without_s, 2), fmt(&r.cpu_with_s, 2), r.cpu_more_percent
    );
    println!(
        "  backfill over {} profiles: new features {:.2} s ({} events read back from the log), shared features {:.2} s; dry run of the new rule {:.2} s",
        r.profiles, r.backfill_new_features_s, r.backfill_new_features_events, r.backfill_shared_features_s, r.dry_run_s
    );
    println!(
        "  event to segment entry on the live stream, {} probes under {:.0} events/s: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        a.probes, r.background_events_per_s, lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms
    );
    let ack = &r.ack_latency;
    println!(
        "    of which until the write was acknowledged: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ack.p50_ms, ack.p90_ms, ack.p99_ms, ack.max_ms
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(())
}
