//! `niyet bench actions`: what triggers and scores cost and how fast actions leave.
//!
//! Servers are separate `niyet serve` processes on loopback; the webhook receiver runs
//! in this process.
//!
//! 1. **Overhead**: the same load (typical shop customers) into a server with no scores
//!    or triggers and into one with 10 scores and 10 triggers (acting into a webhook),
//!    alternating; events/s until durable, reflected in profiles and every action the
//!    load caused delivered.
//! 2. **Latency**: with background load at half of the second throughput, single events
//!    that start a trigger with no wait; the time from sending each until its webhook
//!    request reaches the receiver (ingest, log commit, processing, outbox commit and the
//!    request included).
//! 3. **Waits**: events starting a trigger with a 2 s wait, one every 100 ms (so the
//!    waits overlap); how long after the wait elapsed (counted from when the event was
//!    sent) the request arrives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use niyet_model::Clock;
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::{latency, machine, own_cpu_seconds, start_server_with, Latency};
use crate::bench_segments::{load, load_events, Background, KEY};
use crate::client::IngestClient;

/// Arguments of `niyet bench actions`.
#[derive(Debug, Args)]
pub struct ActionsBench {
    /// Customers loaded in each overhead run.
    #[arg(long, default_value_t = 200_000)]
    customers: u64,
    /// Overhead runs per configuration (alternating; medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Latency probes (zero-wait, and as many with a 2 s wait).
    #[arg(long, default_value_t = 300)]
    probes: usize,
    /// Concurrent connections for loads.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Most actions one request to the webhook may carry (`batch_max` of the
    /// destination; 1: a request per action).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Only part of the scores and triggers in the loads with them (the report then
    /// compares that part against none).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    cores: usize,
    memory_gib: f64,
    customers: u64,
    without: Vec<f64>,
    with_10_scores_10_triggers: Vec<f64>,
    median_without: f64,
    median_with: f64,
    drop_percent: f64,
    actions_received: u64,
    /// Requests those actions came in (fewer than the actions with `--batch` above 1).
    requests_received: u64,
    batch_max: u32,
    /// Requests that came again with a key already seen in their load.
    resent_same_key: u64,
    background_events_per_s: f64,
    zero_wait: Latency,
    /// Of which: until the probe's write was acknowledged (durable in the log).
    zero_wait_ack: Latency,
    /// Each zero-wait probe in the order sent, µs: `(until its request arrived, until its
    /// ack)`.
    zero_wait_probes_us: Vec<(u64, u64)>,
    after_wait: Latency,
}

/// Part of the configuration with actions, to see what each costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    /// The 10 scores, no triggers but the probes' two.
    Scores,
    /// The five triggers that do not start on score crossings, no scores.
    Triggers,
}

fn config(receiver: &str, active: bool, batch: u32, only: Option<Only>) -> String {
    let mut t = String::from("[lifecycle]\nenabled = false\n[profiles]\ntimer_lag_ms = 20\n");
    if !active {
        return t;
    }
    t.push_str(&format!(
        r#"
[[destinations]]
name = "sink"
kind = "webhook"
url = "{receiver}/sink"
secret = "bench"
batch_max = {batch}

[[destinations]]
name = "probe"
kind = "webhook"
url = "{receiver}/probe"
"#
    ));
    let scores = only != Some(Only::Triggers);
    for k in 0..if scores { 10 } else { 0 } {
        t.push_str(&format!(
            r#"
[[scores]]
name = "s{k}"
half_life = "{h}d"
signals = [
  {{ event = "Product Viewed", points = {a} }},
  {{ event = "Product Added", points = {b} }},
  {{ event = "Product Viewed", where = {{ sku = "K-{k}" }}, points = 20, nth = 2, within = "7d" }},
  {{ event = "Order Completed", points = -{c} }},
]
thresholds = [{{ name = "t{k}", at = {at}, hysteresis = 5 }}]
"#,
            h = 1 + k,
            a = 3 + k,
            b = 10 + k,
            c = 5 + k,
            at = 30 + 5 * k
        ));
    }
    let triggers = [
        r#"when = { event = "Product Added" }
wait = "30m"
unless = ["Order Completed"]
then = ["sink"]"#
            .to_string(),
        r#"when = { event = "Order Completed" }
then = ["sink"]"#
            .to_string(),
        r#"when = { event = "Product Viewed" }
wait = "1h"
unless = ["Product Added", "Order Completed"]
then = ["sink"]
cap = { max = 1, per = "1d" }"#
            .to_string(),
        r#"when = { event = "Probe" }
then = ["probe"]"#
            .to_string(),
        r#"when = { event = "Probe Wait" }
wait = "2s"
unless = ["Order Completed"]
then = ["probe"]"#
            .to_string(),
    ]
    .into_iter()
    .chain((0..if scores { 5 } else { 0 }).map(|k| {
        format!("when = {{ score_crossed = \"t{k}\" }}\nthen = [\"sink\"]\nholdout_percent = 10")
    }));
    // The probes' triggers (3 and 4) stay for the latency measurements.
    let keep = |k: usize| only != Some(Only::Scores) || k == 3 || k == 4;
    for (k, body) in triggers.enumerate().filter(|(k, _)| keep(*k)) {
        t.push_str(&format!("\n[[triggers]]\nname = \"trigger {k}\"\n{body}\n"));
    }
    t
}

/// The webhook receiver: counts `/sink` requests and the actions they carry (one, or
/// the documents of a batch), reports `/probe` arrivals.
async fn receiver() -> anyhow::Result<(
    String,
    Sink,
    Keys,
    tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
)> {
    let sink: Sink = Arc::default();
    let keys: Keys = Arc::default();
    let k = keys.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let s = sink.clone();
    let app = axum::Router::new()
        .route(
            "/sink",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (s, k) = (s.clone(), k.clone());
                    async move {
                        s.1.fetch_add(1, Ordering::Relaxed);
                        // A batch: each document's own key; otherwise the request's.
                        let keys: Vec<String> = if headers.contains_key("x-niyet-batch") {
                            // Only the keys are read (no tree of the documents built).
                            #[derive(serde::Deserialize)]
                            struct Doc {
                                id: String,
                            }
                            let docs: Vec<Doc> = serde_json::from_slice(&body).unwrap_or_default();
                            docs.into_iter().map(|d| d.id).collect()
                        } else {
                            headers
                                .get("idempotency-key")
                                .and_then(|v| v.to_str().ok())
                                .map(String::from)
                                .into_iter()
                                .collect()
                        };
                        s.0.fetch_add(keys.len() as u64, Ordering::Relaxed);
                        if let Ok(mut k) = k.lock() {
                            for key in keys {
                                if !k.0.insert(key) {
                                    k.1 += 1;
                                }
                            }
                        }
                        "ok"
                    }
                },
            ),
        )
        .route(
            "/probe",
            axum::routing::post(move |body: axum::body::Bytes| {
                let at = Instant::now();
                let tx = tx.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let user = v["event"]["userId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send((user, at));
                    "ok"
                }
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok((url, sink, keys, rx))
}

/// Actions and requests the receiver has had on `/sink`.
type Sink = Arc<(AtomicU64, AtomicU64)>;

/// Idempotency keys the receiver has seen on `/sink` in the current load, and how many
/// actions came again with a key already seen (resends of one action).
type Keys = Arc<std::sync::Mutex<(std::collections::HashSet<String>, u64)>>;

/// Waits until every destination's queue is empty (at once without destinations).
async fn delivered(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    // Twice empty in a row: actions handed over just before are in the outbox by then.
    let mut empty = 0;
    loop {
        let r = http
            .get(format!("{url}/v1/destinations"))
            .bearer_auth(crate::bench::BENCH_ADMIN)
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        let v: Value = r.json().await?;
        let waiting: u64 = v["destinations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d["queue_depth"].as_u64().unwrap_or(0))
            .sum();
        empty = if waiting == 0 { empty + 1 } else { 0 };
        if empty == 2 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{waiting} actions still queued for delivery after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tracks one probe event for `user`.
async fn send_probe(client: &IngestClient, user: &str, event: &str) -> anyhow::Result<()> {
    let body = json!({"userId": user, "event": event})
        .to_string()
        .into_bytes();
    let (status, b) = client.post("/v1/track", body).await?;
    if status != 200 {
        bail!(
            "probe refused: HTTP {status}: {}",
            String::from_utf8_lossy(&b.bytes)
        );
    }
    Ok(())
}

/// Sends `probes` events named `event` one at a time; the time (µs) from each send until
/// its request arrives, minus `wait`, and until the write was acknowledged.
async fn probe(
    client: &IngestClient,
    arrivals: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    event: &str,
    probes: usize,
    wait: Duration,
) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let mut us = Vec::with_capacity(probes);
    let mut acks = Vec::with_capacity(probes);
    for k in 0..probes {
        let user = format!("{event}-{k}");
        let t = Instant::now();
        send_probe(client, &user, event).await?;
        acks.push(t.elapsed().as_micros() as u64);
        let at = loop {
            let (who, at) = tokio::time::timeout(wait + Duration::from_secs(10), arrivals.recv())
                .await
                .context("no webhook request within 10 s")?
                .context("the receiver stopped")?;
            if who == user {
                break at;
            }
        };
        us.push(at.duration_since(t).saturating_sub(wait).as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((us, acks))
}

/// Sends `probes` events named `event`, one every `every` without waiting for answers
/// (so waits overlap); the time from each send until its request arrives, minus `wait`.
async fn probe_spaced(
    client: &IngestClient,
    arrivals: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    event: &str,
    probes: usize,
    every: Duration,
    wait: Duration,
) -> anyhow::Result<Vec<u64>> {
    let mut sent = std::collections::HashMap::with_capacity(probes);
    let mut got = Vec::with_capacity(probes);
    let start = tokio::time::Instant::now();
    let take = |who: String,
                at: Instant,
                sent: &mut std::collections::HashMap<String, Instant>,
                got: &mut Vec<u64>| {
        if let Some(t) = sent.remove(&who) {
            got.push(at.duration_since(t).saturating_sub(wait).as_micros() as u64);
        }
    };
    for k in 0..probes {
        tokio::time::sleep_until(start + every * k as u32).await;
        let user = format!("{event}-{k}");
        sent.insert(user.clone(), Instant::now());
        send_probe(client, &user, event).await?;
        while let Ok((who, at)) = arrivals.try_recv() {
            take(who, at, &mut sent, &mut got);
        }
    }
    while got.len() < probes {
        let (who, at) = tokio::time::timeout(wait + Duration::from_secs(10), arrivals.recv())
            .await
            .with_context(|| {
                format!(
                    "{} of {probes} webhook requests did not arrive within 10 s",
                    probes - got.len()
                )
            })?
            .context("the receiver stopped")?;
        take(who, at, &mut sent, &mut got);
    }
    Ok(got)
}

pub async fn run(a: ActionsBench) -> anyhow::Result<()> {
    let t0 = niyet_model::SystemClock.now_ms() - 10 * 86_400_000;
    let (rurl, sink, keys, mut arrivals) = receiver().await?;
    let (none, active) = (
        config(&rurl, false, a.batch, a.only),
        config(&rurl, true, a.batch, a.only),
    );

    // 1. Overhead.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for run in 0..a.runs.max(1) {
        for (cfg, out, what) in [
            (none.as_str(), &mut without, "no scores or triggers"),
            (active.as_str(), &mut with, "10 scores and 10 triggers"),
        ] {
            eprintln!(
                "load of {} customers with {what} ({}/{})…",
                a.customers,
                run + 1,
                a.runs.max(1)
            );
            let (url, server) = start_server_with(KEY, Some(cfg)).await?;
            let cpu0 = (server.cpu_seconds(), own_cpu_seconds());
            // Keys repeat from one load to the next (same customers, same triggers).
            if let Ok(mut k) = keys.lock() {
                k.0.clear();
            }
            let (events, started) = load_events(&url, a.customers, a.connections, t0).await?;
            let processed = started.elapsed();
            // The clock stops once every action the load caused has been delivered too.
            delivered(&url).await?;
            out.push(events as f64 / started.elapsed().as_secs_f64());
            let used = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => format!("{:.2} s", b - a),
                _ => "?".into(),
            };
            let peak =
                crate::bench::proc_kib(&format!("/proc/{}/status", server.child.id()), "VmHWM:")
                    .map_or(0.0, |kb| kb / 1024.0);
            eprintln!(
                "  {:.0} events/s (processed in {:.2} s, delivered {:.2} s later; processor time: server {}, bench {}; server peak memory {peak:.0} MiB)",
                out[out.len() - 1],
                processed.as_secs_f64(),
                (started.elapsed() - processed).as_secs_f64(),
                used(cpu0.0, server.cpu_seconds()),
                used(cpu0.1, own_cpu_seconds()),
            );
            if std::env::var_os("NIYET_BENCH_THREADS").is_some() {
                let m = reqwest::get(format!("{url}/metrics")).await?.text().await?;
                let statuses: Vec<&str> = m
                    .lines()
                    .filter(|l| l.starts_with("niyet_ingest_requests_total{") && !l.ends_with(" 0"))
                    .collect();
                eprintln!("  ingest requests: {}", statuses.join(" · "));
                let by = server.cpu_by_thread();
                let list: Vec<String> = by.iter().map(|(n, s)| format!("{n} {s:.2}")).collect();
                eprintln!("  server threads (s, since start): {}", list.join(" · "));
            }
        }
    }
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let (m0, m1) = (median(&without), median(&with));
    let actions = sink.0.load(Ordering::Relaxed);
    let requests = sink.1.load(Ordering::Relaxed);
    let resent = keys.lock().map(|k| k.1).unwrap_or(0);

    // 2 and 3. Latency under half of the throughput with triggers.
    let (url, server) = start_server_with(KEY, Some(&active)).await?;
    load(&url, a.customers / 4, a.connections, t0).await?;
    let rate = m1 / 2.0;
    let client = IngestClient::new(&url, KEY)?;
    let bg = Background::start(&client, rate, a.customers / 4, t0)?;
    let sent = bg.sent.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!(
        "latency: {} probes under {rate:.0} events/s of background load…",
        a.probes
    );
    let bg_started = Instant::now();
    let bg_before = sent.load(Ordering::Relaxed);
    let (zero, zero_acks) =
        probe(&client, &mut arrivals, "Probe", a.probes, Duration::ZERO).await?;
    let waited = probe_spaced(
        &client,
        &mut arrivals,
        "Probe Wait",
        a.probes,
        Duration::from_millis(100),
        Duration::from_secs(2),
    )
    .await?;
    let background =
        (sent.load(Ordering::Relaxed) - bg_before) as f64 / bg_started.elapsed().as_secs_f64();
    bg.stop().await;
    drop(server);

    let (cores, memory_gib) = machine();
    let r = Report {
        cores,
        memory_gib,
        customers: a.customers,
        median_without: m0,
        median_with: m1,
        drop_percent: (1.0 - m1 / m0) * 100.0,
        without,
        with_10_scores_10_triggers: with,
        actions_received: actions,
        requests_received: requests,
        batch_max: a.batch,
        resent_same_key: resent,
        background_events_per_s: background,
        zero_wait_probes_us: zero
            .iter()
            .copied()
            .zip(zero_acks.iter().copied())
            .collect(),
        zero_wait: latency(zero),
        zero_wait_ack: latency(zero_acks),
        after_wait: latency(waited),
    };
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    println!("niyet bench actions — {cores} cores, {memory_gib:.0} GiB");
    println!(
        "  load of {} customers: none {:.0} events/s ({}), 10 scores + 10 triggers {:.0} events/s ({}): {:.1} % lower; {} actions received in {} webhook requests (batch_max {}; {} again with a key already seen)",
        r.customers, m0, fmt(&r.without), m1, fmt(&r.with_10_scores_10_triggers), r.drop_percent, r.actions_received, r.requests_received, r.batch_max, r.resent_same_key
    );
    let (z, w) = (&r.zero_wait, &r.after_wait);
    println!(
        "  event sent → webhook request received, zero-wait trigger, {} probes under {:.0} events/s: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        a.probes, r.background_events_per_s, z.p50_ms, z.p90_ms, z.p99_ms, z.max_ms
    );
    let k = &r.zero_wait_ack;
    println!(
        "    of which until the write was acknowledged: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        k.p50_ms, k.p90_ms, k.p99_ms, k.max_ms
    );
    println!(
        "  2 s wait elapsed → webhook request received, {} probes (one every 100 ms): p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        a.probes, w.p50_ms, w.p90_ms, w.p99_ms, w.max_ms
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(())
}
