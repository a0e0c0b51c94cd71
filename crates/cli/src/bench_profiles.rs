//! `niyet bench profiles`: the profile pipeline under a million profiles, end to end.
//!
//! The server is a separate `niyet serve` process on loopback (as in `bench ingest`).
//!
//! 1. **Load**: `--profiles` typical shop customers, each an `identify` (user id,
//!    anonymous id, e-mail, phone, five traits) and four events (page, product viewed,
//!    product added, and for one in three an order), sent in batches of 100. Messages
//!    carry no `messageId`, so the dedup index stays empty and the memory figure is the
//!    profiles' own.
//! 2. **Memory per profile**: growth of the server's resident memory over the load,
//!    divided by the number of profiles (everything included: identity graph, indexes,
//!    profile state, allocator overhead).
//! 3. **Throughput with the profiles loaded**: `--duration` seconds of traffic on the
//!    existing customers (events by user id, new anonymous visitors, logins that merge an
//!    anonymous profile into a customer). events/s counts from the first request until the
//!    pipeline has processed the last acknowledged event: ingest + identity + profile
//!    update, durable.
//! 4. **Lookup latency**: sequential `GET /v1/profiles?email=…` and `?user_id=…` for
//!    random customers, measured at the client (HTTP included).
//! 5. **Restart**: after SIGTERM (snapshot at shutdown) and after SIGKILL (snapshot plus
//!    replay of the log tail), the time from process start until every event is
//!    reflected in profiles again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::bench::{
    latency, machine, proc_cpu_s, spawn_server_with, start_server_with, Latency, Spawned,
    BENCH_ADMIN,
};
use crate::client::IngestClient;

/// The server's configuration without the built-in segments.
const NO_SEGMENTS: &str = "[lifecycle]\nenabled = false\n";

/// Arguments of `niyet bench profiles`.
#[derive(Debug, Args)]
pub struct ProfilesBench {
    /// Customers to load.
    #[arg(long, default_value_t = 1_000_000)]
    profiles: u64,
    /// Seconds of traffic on the loaded profiles.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Runs of the traffic phase (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Lookups per identifier type.
    #[arg(long, default_value_t = 5_000)]
    lookups: usize,
    /// Keep the built-in lifecycle segments on (the default server configuration).
    /// Without this flag the server runs with `[lifecycle] enabled = false`, so the figures
    /// are those of ingest, identity and profiles alone; `niyet bench segments` measures
    /// what segments add.
    #[arg(long)]
    lifecycle: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    cores: usize,
    memory_gib: f64,
    profiles_loaded: u64,
    load_events: u64,
    load_events_per_s: f64,
    rss_before_mib: f64,
    rss_after_mib: f64,
    bytes_per_profile: f64,
    traffic_events: u64,
    traffic_events_per_s: f64,
    traffic_runs: Vec<f64>,
    traffic_server_cores: f64,
    traffic_client_cores: f64,
    traffic_merges: u64,
    events_after_shutdown_snapshot: u64,
    lookup_email: Latency,
    lookup_user_id: Latency,
    profiles_at_restart: u64,
    restart_after_sigterm_s: f64,
    restore_ms_after_sigterm: u64,
    restart_after_sigkill_s: f64,
    replayed_after_sigkill: u64,
}

const TRAITS_CITIES: [&str; 6] = ["İstanbul", "Ankara", "İzmir", "Bursa", "Antalya", "Konya"];

pub(crate) fn customer_batch(first: u64, n: u64, t0: i64) -> Vec<u8> {
    let mut out = String::with_capacity(n as usize * 1200);
    out.push_str("{\"batch\":[");
    for i in first..first + n {
        if i > first {
            out.push(',');
        }
        let ts = |k: i64| niyet_model::format_rfc3339_millis(t0 + (i as i64 % 86_400) * 1000 + k);
        let city = TRAITS_CITIES[(i % 6) as usize];
        let ctx =
            "\"context\":{\"userAgent\":\"Mozilla/5.0 (iPhone) Mobile\",\"page\":{\"path\":\"/\"}}";
        out.push_str(&format!(
            "{{\"type\":\"identify\",\"userId\":\"u{i}\",\"anonymousId\":\"a{i}\",\"timestamp\":\"{}\",\"traits\":{{\"email\":\"customer{i}@example.com\",\"phone\":\"+90532{:07}\",\"name\":\"Müşteri {i}\",\"city\":\"{city}\",\"gender\":\"{}\",\"birthYear\":{}}},{ctx}}},",
            ts(0),
            i % 10_000_000,
            if i % 2 == 0 { "f" } else { "m" },
            1960 + i % 45
        ));
        out.push_str(&format!(
            "{{\"type\":\"page\",\"anonymousId\":\"a{i}\",\"name\":\"Home\",\"timestamp\":\"{}\",{ctx}}},",
            ts(1000)
        ));
        out.push_str(&format!(
            "{{\"type\":\"track\",\"userId\":\"u{i}\",\"event\":\"Product Viewed\",\"timestamp\":\"{}\",\"properties\":{{\"sku\":\"K-{}\",\"price\":249.9}},{ctx}}},",
            ts(2000),
            i % 500
        ));
        out.push_str(&format!(
            "{{\"type\":\"track\",\"userId\":\"u{i}\",\"event\":\"Product Added\",\"timestamp\":\"{}\",\"properties\":{{\"sku\":\"K-{}\",\"price\":249.9}},{ctx}}}",
            ts(3000),
            i % 500
        ));
        if i % 3 == 0 {
            out.push_str(&format!(
                ",{{\"type\":\"track\",\"userId\":\"u{i}\",\"event\":\"Order Completed\",\"timestamp\":\"{}\",\"properties\":{{\"order_id\":\"O-{i}\",\"revenue\":249.9,\"currency\":\"TRY\"}},{ctx}}}",
                ts(4000)
            ));
        }
    }
    out.push_str("]}");
    out.into_bytes()
}

/// Traffic on loaded customers: 100 messages, a mix of known customers' events, new
/// anonymous visitors and logins that merge a visitor into a customer.
pub(crate) fn traffic_batch(seq: u64, customers: u64, t0: i64) -> (Vec<u8>, u64) {
    let mut rng = crate::shop::Rng::new(seq.wrapping_mul(0x9E37_79B9) + 7);
    let mut out = String::with_capacity(100 * 300);
    let mut merges = 0;
    out.push_str("{\"batch\":[");
    for k in 0..100u64 {
        if k > 0 {
            out.push(',');
        }
        let ts = niyet_model::format_rfc3339_millis(t0 + 86_400_000 + (seq * 100 + k) as i64);
        let c = rng.next_u64() % customers;
        let visitor = format!("v{seq}-{}", k / 4);
        match k % 10 {
            0..=5 => out.push_str(&format!(
                "{{\"type\":\"track\",\"userId\":\"u{c}\",\"event\":\"Product Viewed\",\"timestamp\":\"{ts}\",\"properties\":{{\"sku\":\"K-{}\"}}}}",
                c % 500
            )),
            6 | 7 => out.push_str(&format!(
                "{{\"type\":\"page\",\"anonymousId\":\"{visitor}\",\"name\":\"Category\",\"timestamp\":\"{ts}\"}}"
            )),
            8 => {
                merges += 1;
                out.push_str(&format!(
                    "{{\"type\":\"identify\",\"userId\":\"u{c}\",\"anonymousId\":\"{visitor}\",\"timestamp\":\"{ts}\"}}"
                ))
            }
            _ => out.push_str(&format!(
                "{{\"type\":\"track\",\"userId\":\"u{c}\",\"event\":\"Order Completed\",\"timestamp\":\"{ts}\",\"properties\":{{\"revenue\":99.5}}}}"
            )),
        }
    }
    out.push_str("]}");
    (out.into_bytes(), merges)
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    crate::bench::proc_kib(&format!("/proc/{pid}/status"), "VmRSS:").map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) async fn pipeline(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(http
        .get(format!("{url}/v1/pipeline"))
        .bearer_auth(BENCH_ADMIN)
        .send()
        .await?
        .json()
        .await?)
}

/// Waits until the pipeline has processed everything in the log (and, if given, holds
/// `profiles` profiles).
pub(crate) async fn caught_up(
    http: &reqwest::Client,
    url: &str,
    profiles: Option<u64>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(v) = pipeline(http, url).await {
            let done = v["caught_up"] == true
                && profiles.is_none_or(|p| v["profiles"].as_u64() == Some(p));
            if done {
                return Ok(v);
            }
            if let Some(f) = v["failure"].as_str() {
                bail!("processing failed: {f}");
            }
        }
        if Instant::now() > deadline {
            bail!("the pipeline did not catch up within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Makes request body number `i` (and a count to add up), or None when done.
pub(crate) type BatchMaker = Arc<dyn Fn(u64) -> Option<(Vec<u8>, u64)> + Send + Sync>;

pub(crate) async fn send_all(
    client: &IngestClient,
    conns: usize,
    next: Arc<AtomicU64>,
    make: BatchMaker,
) -> anyhow::Result<(u64, u64)> {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, next, make) = (client.clone(), next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let (mut events, mut extra) = (0u64, 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, x)) = make(i) else { break };
                let answer = client
                    .batch_with_retry(body, 20)
                    .await?
                    .map_err(|e| anyhow::anyhow!("a batch was refused: {e}"))?;
                events += answer.accepted;
                extra += x;
            }
            Ok::<_, anyhow::Error>((events, extra))
        }));
    }
    let (mut events, mut extra) = (0, 0);
    for t in tasks {
        let (e, x) = t.await??;
        events += e;
        extra += x;
    }
    Ok((events, extra))
}

/// One traffic phase: events/s from the first request until the pipeline has processed
/// the last acknowledged event.
#[allow(clippy::too_many_arguments)]
async fn traffic(
    client: &IngestClient,
    http: &reqwest::Client,
    url: &str,
    conns: usize,
    secs: u64,
    seq: Arc<AtomicU64>,
    customers: u64,
    t0: i64,
    server_pid: u32,
) -> anyhow::Result<Traffic> {
    // Request bodies are made before the clock starts, so the load generator, which
    // shares this machine's cores with the server, spends its time sending. More than
    // can be sent in `secs` at 400,000 events/s; past that, bodies are made on the fly.
    let first = seq.load(Ordering::Relaxed);
    let ahead = secs * 4_000;
    let made: Vec<(Vec<u8>, u64)> = (first..first + ahead)
        .rev()
        .map(|s| traffic_batch(s, customers, t0))
        .collect();
    let pool = Arc::new(std::sync::Mutex::new(made));
    let (cpu_server, cpu_self) = (proc_cpu_s(Some(server_pid)), proc_cpu_s(None));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let make: BatchMaker = Arc::new(move |s| {
        (Instant::now() < deadline).then(|| {
            let pooled = pool.lock().map(|mut p| p.pop()).unwrap_or(None);
            pooled.unwrap_or_else(|| traffic_batch(s, customers, t0))
        })
    });
    let (events, merges) = send_all(client, conns, seq, make).await?;
    caught_up(http, url, None).await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(Traffic {
        events,
        merges,
        per_s: events as f64 / secs,
        server_cores: (proc_cpu_s(Some(server_pid)) - cpu_server) / secs,
        client_cores: (proc_cpu_s(None) - cpu_self) / secs,
    })
}

/// One traffic phase's result.
struct Traffic {
    events: u64,
    merges: u64,
    per_s: f64,
    /// CPU used by the server and by this load generator, in cores (CPU s ÷ wall s).
    server_cores: f64,
    client_cores: f64,
}

async fn lookups(
    http: &reqwest::Client,
    url: &str,
    n: usize,
    customers: u64,
    kind: &str,
) -> anyhow::Result<Latency> {
    let mut rng = crate::shop::Rng::new(42);
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.next_u64() % customers;
        let q = match kind {
            "email" => format!("email=customer{c}@example.com"),
            _ => format!("user_id=u{c}"),
        };
        let t = Instant::now();
        let r = http
            .get(format!("{url}/v1/profiles?{q}"))
            .bearer_auth(BENCH_ADMIN)
            .send()
            .await?;
        let status = r.status();
        let _ = r.bytes().await?;
        us.push(t.elapsed().as_micros() as u64);
        if !status.is_success() {
            bail!("lookup {q} answered {status}");
        }
    }
    Ok(latency(us))
}

async fn restart(
    server: &mut Spawned,
    url: &str,
    key: &str,
    signal: &str,
    profiles: u64,
) -> anyhow::Result<(f64, Value)> {
    let pid = server.child.id().to_string();
    std::process::Command::new("kill")
        .args([signal, &pid])
        .status()?;
    server.child.wait()?;
    let http = reqwest::Client::new();
    let t = Instant::now();
    let config = server.dir.path().join("niyet.toml");
    let config = config.exists().then_some(config);
    server.child =
        spawn_server_with(server.dir.path(), server.port, key, config.as_deref()).await?;
    let v = caught_up(&http, url, Some(profiles)).await?;
    Ok((t.elapsed().as_secs_f64(), v))
}

/// Runs the benchmark.
pub async fn run(a: ProfilesBench) -> anyhow::Result<()> {
    let key = "bench-write-key";
    let config = (!a.lifecycle).then_some(NO_SEGMENTS);
    let (url, mut server) = start_server_with(key, config).await?;
    let http = reqwest::Client::new();
    let client = IngestClient::new(&url, key)?;
    let pid = server.child.id();
    let t0 = 1_767_225_600_000; // 2026-01-01
    let n = a.profiles.max(20);
    let per_batch = 20u64;
    let batches = n.div_ceil(per_batch);
    let rss_before = rss_mib(pid);

    eprintln!("loading {n} customers ({batches} batches)…");
    let started = Instant::now();
    let make: BatchMaker = Arc::new(move |b| {
        (b < batches).then(|| {
            (
                customer_batch(b * per_batch, per_batch.min(n - b * per_batch), t0),
                0,
            )
        })
    });
    let (load_events, _) =
        send_all(&client, a.connections, Arc::new(AtomicU64::new(0)), make).await?;
    caught_up(&http, &url, Some(n)).await?;
    let load_s = started.elapsed().as_secs_f64();
    let rss_after = rss_mib(pid);

    let seq = Arc::new(AtomicU64::new(0));
    let (mut runs, mut run_cpu) = (Vec::new(), Vec::new());
    let (mut traffic_events, mut merges) = (0, 0);
    for run in 0..a.runs.max(1) {
        eprintln!(
            "traffic on {n} customers for {} s ({}/{})…",
            a.duration,
            run + 1,
            a.runs.max(1)
        );
        let t = traffic(
            &client,
            &http,
            &url,
            a.connections,
            a.duration,
            seq.clone(),
            n,
            t0,
            pid,
        )
        .await?;
        traffic_events += t.events;
        merges += t.merges;
        runs.push(t.per_s);
        run_cpu.push((t.server_cores, t.client_cores));
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    let traffic_median = sorted[sorted.len() / 2];
    let median_run = runs.iter().position(|r| *r == traffic_median).unwrap_or(0);
    let (server_cores, client_cores) = run_cpu[median_run];
    let profiles_now = pipeline(&http, &url).await?["profiles"]
        .as_u64()
        .context("profiles")?;

    eprintln!("lookups…");
    let lookup_email = lookups(&http, &url, a.lookups, n, "email").await?;
    let lookup_user_id = lookups(&http, &url, a.lookups, n, "user_id").await?;

    eprintln!("restart after SIGTERM…");
    let (term_s, term) = restart(&mut server, &url, key, "-TERM", profiles_now).await?;
    // More traffic after the shutdown snapshot, so the restart after SIGKILL replays it.
    let more = traffic(
        &client,
        &http,
        &url,
        a.connections,
        3,
        seq.clone(),
        n,
        t0,
        pid,
    )
    .await?
    .events;
    let profiles_now = pipeline(&http, &url).await?["profiles"]
        .as_u64()
        .context("profiles")?;
    eprintln!("restart after SIGKILL…");
    let (kill_s, kill) = restart(&mut server, &url, key, "-KILL", profiles_now).await?;
    let replayed = kill["processed_offset"].as_u64().unwrap_or(0)
        - kill["restored_from"].as_u64().unwrap_or(0);

    let (cores, memory_gib) = machine();
    let r = Report {
        cores,
        memory_gib,
        profiles_loaded: n,
        load_events,
        load_events_per_s: load_events as f64 / load_s,
        rss_before_mib: rss_before,
        rss_after_mib: rss_after,
        bytes_per_profile: (rss_after - rss_before) * 1_048_576.0 / n as f64,
        traffic_events,
        traffic_events_per_s: traffic_median,
        traffic_runs: runs.clone(),
        traffic_server_cores: server_cores,
        traffic_client_cores: client_cores,
        traffic_merges: merges,
        events_after_shutdown_snapshot: more,
        lookup_email,
        lookup_user_id,
        profiles_at_restart: term["profiles"].as_u64().unwrap_or(0),
        restart_after_sigterm_s: term_s,
        restore_ms_after_sigterm: term["restore_ms"].as_u64().unwrap_or(0),
        restart_after_sigkill_s: kill_s,
        replayed_after_sigkill: replayed,
    };
    println!("niyet bench profiles — {cores} cores, {memory_gib:.0} GiB");
    println!(
        "  load: {} customers, {} events in {:.1} s = {:.0} events/s through ingest + identity + profiles",
        n, r.load_events, load_s, r.load_events_per_s
    );
    println!(
        "  memory: RSS {:.0} MiB → {:.0} MiB = {:.0} bytes per profile",
        r.rss_before_mib, r.rss_after_mib, r.bytes_per_profile
    );
    println!(
        "  traffic with {} profiles: median {:.0} events/s, durable and reflected in profiles (runs: {}; {} events, {} logins merging a visitor)",
        n,
        r.traffic_events_per_s,
        runs.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" · "),
        r.traffic_events,
        r.traffic_merges
    );
    println!(
        "  CPU in the median traffic run: server {:.2} cores, load generator {:.2} cores",
        r.traffic_server_cores, r.traffic_client_cores
    );
    println!(
        "  lookup by email:   p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        r.lookup_email.p50_ms, r.lookup_email.p99_ms, r.lookup_email.max_ms
    );
    println!(
        "  lookup by user_id: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        r.lookup_user_id.p50_ms, r.lookup_user_id.p99_ms, r.lookup_user_id.max_ms
    );
    println!(
        "  restart after SIGTERM with {} profiles: {:.2} s until caught up (snapshot restored in {} ms)",
        r.profiles_at_restart, r.restart_after_sigterm_s, r.restore_ms_after_sigterm
    );
    println!(
        "  restart after SIGKILL: {:.2} s until caught up ({} log records replayed after the snapshot)",
        r.restart_after_sigkill_s, r.replayed_after_sigkill
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(())
}
