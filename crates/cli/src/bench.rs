//! `niyet bench ingest`: an end-to-end ingest benchmark. The load comes from this process;
//! the server is a separate `niyet serve` process (started here unless `--url` is given),
//! talking over loopback, with fsync on every group commit as in production.
//!
//! Phases:
//! 1. **Throughput**: `--connections` clients send batches of `--batch` events in a closed
//!    loop; durable events/s is what the server acknowledged with 200.
//! 2. **Latency at half that rate**: once processing has caught up with the log (the
//!    closed loop outruns it; the time this takes is printed), batches are sent on a
//!    fixed schedule (open loop) at half the measured throughput; latency is measured
//!    from the scheduled send time, so a stall is not hidden by the client waiting (no
//!    coordinated omission).
//! 3. **Single events**: `/v1/track` with one event per request, closed loop.
//!
//! At the end the server's log end offset is checked against the acknowledged count.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::client::IngestClient;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable ingest throughput and acknowledgement latency over HTTP.
    Ingest(IngestBench),
    /// Ingest + identity + profile update throughput with a million profiles, lookup
    /// latency, memory per profile and restart time.
    Profiles(crate::bench_profiles::ProfilesBench),
    /// Segment evaluation: throughput with 50 segments against none, backfill of a new
    /// segment over a million profiles, event-to-membership-change latency.
    Segments(crate::bench_segments::SegmentsBench),
    /// Lifetime-value fits and attribution over a million customers and journeys, side by
    /// side with the Python reference packages when `--python` is given.
    Analytics(crate::bench_analytics::AnalyticsBench),
    /// Triggers and scores: throughput with 10 of each against none, event-to-webhook
    /// latency of a zero-wait trigger under load, how soon an action leaves after its
    /// wait.
    Actions(crate::bench_actions::ActionsBench),
    /// Erasure of one customer among a million while ingest goes on.
    Erase(crate::bench_erase::EraseBench),
}

#[derive(Debug, Args)]
pub struct IngestBench {
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Events per batch request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Runs of each phase (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Benchmark a running server instead of starting one (needs --write-key).
    #[arg(long)]
    url: Option<String>,
    /// Write key for --url.
    #[arg(long, env = "NIYET_WRITE_KEY")]
    write_key: Option<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize, Clone, Copy, Default)]
pub(crate) struct Latency {
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

pub(crate) fn latency(mut us: Vec<u64>) -> Latency {
    if us.is_empty() {
        return Latency::default();
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Latency {
        p50_ms: at(0.5),
        p90_ms: at(0.9),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

/// One run of one phase.
#[derive(Debug, Serialize, Clone, Copy)]
struct RunFigures {
    events_per_s: f64,
    requests_per_s: f64,
    latency: Latency,
    /// Requests acknowledged after more than 20 ms.
    over_20ms: u64,
    errors: u64,
}

impl RunFigures {
    fn of(r: &PhaseResult, late: u64) -> Self {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        Self {
            events_per_s: r.events as f64 / secs,
            requests_per_s: r.requests as f64 / secs,
            latency: latency(r.latencies_us.clone()),
            over_20ms: late,
            errors: r.errors,
        }
    }
}

/// The median of `f` over runs.
fn median(runs: &[RunFigures], f: impl Fn(&RunFigures) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[derive(Debug, Serialize)]
struct Summary {
    events_per_s: f64,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Summary {
    fn of(runs: &[RunFigures]) -> Self {
        Self {
            events_per_s: median(runs, |r| r.events_per_s),
            requests_per_s: median(runs, |r| r.requests_per_s),
            p50_ms: median(runs, |r| r.latency.p50_ms),
            p99_ms: median(runs, |r| r.latency.p99_ms),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    batch_size: usize,
    connections: usize,
    phase_seconds: u64,
    runs: usize,
    event_bytes: usize,
    /// Medians over runs.
    throughput: Summary,
    half_rate: Summary,
    single: Summary,
    throughput_runs: Vec<RunFigures>,
    half_rate_runs: Vec<RunFigures>,
    single_runs: Vec<RunFigures>,
    acknowledged_events: u64,
    log_end_offset: u64,
    errors: u64,
    cores: usize,
    memory_gib: f64,
}

/// A request body with a 16-character slot (`################`) in every messageId.
#[derive(Clone)]
struct Template {
    bytes: Vec<u8>,
    slots: Vec<usize>,
}

const SLOT: &[u8; 16] = b"################";

impl Template {
    fn new(batch: Option<usize>) -> Self {
        let event = |i: usize| {
            serde_json::json!({
                "type": "track", "event": "Product Viewed",
                "anonymousId": format!("anon-{:05}", i * 7919 % 100_000), "userId": format!("user-{:05}", i * 104_729 % 50_000),
                "messageId": format!("bench-################-{i:04}"),
                "timestamp": "2026-11-22T10:15:30.123Z",
                "properties": {"product_id": "SNK-220", "name": "Koşu Ayakkabısı", "category": "Ayakkabı", "price": 2349.0, "currency": "TRY"},
                "context": {"ip": "88.12.34.56", "library": {"name": "analytics-node", "version": "2.1.0"},
                    "page": {"path": "/urun/snk-220", "referrer": "https://www.google.com/"},
                    "campaign": {"source": "google", "medium": "cpc", "name": "kis-indirimi"}}
            })
        };
        let v = match batch {
            Some(n) => {
                serde_json::json!({"batch": (0..n).map(event).collect::<Vec<_>>(), "sentAt": "2026-11-22T10:15:30.500Z"})
            }
            None => event(0),
        };
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        let slots = bytes
            .windows(SLOT.len())
            .enumerate()
            .filter(|(_, w)| *w == SLOT)
            .map(|(i, _)| i)
            .collect();
        Self { bytes, slots }
    }

    fn render(&self, id: u64) -> Vec<u8> {
        let mut b = self.bytes.clone();
        let hex = format!("{id:016x}");
        for &s in &self.slots {
            b[s..s + 16].copy_from_slice(hex.as_bytes());
        }
        b
    }
}

/// A `niyet serve` child process on a data directory of its own.
pub(crate) struct Spawned {
    pub child: std::process::Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Spawned {
    /// Processor time the server has used so far, all threads, user and system (s).
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    /// Processor time the server's threads have used so far, summed by thread name
    /// (the runtime's threads all carry the program's name), most first.
    pub fn cpu_by_thread(&self) -> Vec<(String, f64)> {
        let mut by: std::collections::BTreeMap<String, f64> = Default::default();
        let dir = format!("/proc/{}/task", self.child.id());
        for t in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let stat = t.path().join("stat");
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if let Some(s) = cpu_seconds(&stat.to_string_lossy()) {
                *by.entry(name.trim().to_string()).or_default() += s;
            }
        }
        let mut v: Vec<(String, f64)> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }
}

/// Processor time of this process so far, all threads (s).
pub(crate) fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds("/proc/self/stat")
}

/// `utime + stime` of a `/proc/<pid>/stat` file, in seconds (Linux reports them in
/// ticks of 1/100 s on every architecture this runs on).
fn cpu_seconds(stat: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) const BENCH_ADMIN: &str = "bench-admin-token";

/// Starts `niyet serve` on a data directory, with a configuration file if given, and
/// waits until it answers.
pub(crate) async fn spawn_server_with(
    dir: &std::path::Path,
    port: u16,
    write_key: &str,
    config: Option<&std::path::Path>,
) -> anyhow::Result<std::process::Child> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("serve");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    // `NIYET_BENCH_LOG=info` (any level) shows the servers' logs on stderr.
    let log = std::env::var("NIYET_BENCH_LOG").ok();
    let mut child = cmd
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env("NIYET_WRITE_KEY", write_key)
        .env("NIYET_ADMIN_TOKEN", BENCH_ADMIN)
        .env("NIYET_LOG", log.as_deref().unwrap_or("warn"))
        .env_remove("NIYET_CONFIG")
        .stderr(if log.is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .context("starting niyet serve")?;
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(child);
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("niyet serve exited: {st}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    bail!("the server did not come up within 30 s")
}

pub(crate) async fn start_server(write_key: &str) -> anyhow::Result<(String, Spawned)> {
    start_server_with(write_key, None).await
}

/// [`start_server`] with a configuration file's text.
pub(crate) async fn start_server_with(
    write_key: &str,
    config: Option<&str>,
) -> anyhow::Result<(String, Spawned)> {
    let dir = tempfile::tempdir_in(".").or_else(|_| tempfile::tempdir())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let path = match config {
        Some(text) => {
            let p = dir.path().join("niyet.toml");
            std::fs::write(&p, text)?;
            Some(p)
        }
        None => None,
    };
    let child = spawn_server_with(dir.path(), port, write_key, path.as_deref()).await?;
    Ok((
        format!("http://127.0.0.1:{port}"),
        Spawned { child, dir, port },
    ))
}

#[derive(Default)]
struct PhaseResult {
    events: u64,
    requests: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

fn accepted_of(body: &[u8]) -> u64 {
    serde_json::from_slice::<crate::client::BatchAnswer>(body)
        .map(|a| a.accepted)
        .unwrap_or(0)
}

async fn closed_loop(
    client: &IngestClient,
    path: &'static str,
    tpl: Arc<Template>,
    conns: usize,
    dur: Duration,
    ids: Arc<std::sync::atomic::AtomicU64>,
) -> PhaseResult {
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let client = client.clone();
        let tpl = tpl.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = PhaseResult::default();
            while Instant::now() < deadline {
                let body = tpl.render(ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                let t0 = Instant::now();
                match client.post(path, body).await {
                    Ok((200, b)) => {
                        r.latencies_us.push(t0.elapsed().as_micros() as u64);
                        r.events += accepted_of(&b.bytes);
                        r.requests += 1;
                    }
                    _ => r.errors += 1,
                }
            }
            r
        }));
    }
    let mut total = PhaseResult::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.events += r.events;
            total.requests += r.requests;
            total.errors += r.errors;
            total.latencies_us.extend(r.latencies_us);
        }
    }
    total.elapsed = start.elapsed();
    total
}

async fn open_loop(
    client: &IngestClient,
    tpl: Arc<Template>,
    requests_per_s: f64,
    dur: Duration,
    ids: Arc<std::sync::atomic::AtomicU64>,
) -> (PhaseResult, u64) {
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / requests_per_s.max(1.0));
    let n = (dur.as_secs_f64() * requests_per_s) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for k in 0..n {
        let scheduled = start + interval * k as u32;
        tokio::time::sleep_until(scheduled).await;
        let client = client.clone();
        let body = tpl.render(ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let tx = tx.clone();
        tokio::spawn(async move {
            let res = client.post("/v1/batch", body).await;
            let lat = scheduled.elapsed().as_micros() as u64;
            let _ = tx.send(match res {
                Ok((200, b)) => Ok((lat, accepted_of(&b.bytes))),
                _ => Err(()),
            });
        });
    }
    drop(tx);
    let mut r = PhaseResult::default();
    let mut late = 0;
    while let Some(x) = rx.recv().await {
        match x {
            Ok((lat, ev)) => {
                if lat > 20_000 {
                    late += 1;
                }
                r.latencies_us.push(lat);
                r.events += ev;
                r.requests += 1;
            }
            Err(()) => r.errors += 1,
        }
    }
    r.elapsed = start.elapsed();
    (r, late)
}

/// A `Key: N kB` figure from a /proc file such as /proc/meminfo or /proc/PID/status.
pub(crate) fn proc_kib(path: &str, key: &str) -> Option<f64> {
    std::fs::read_to_string(path).ok().and_then(|m| {
        m.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<f64>().ok())
    })
}

/// CPU seconds (user + system) a process has used so far; `None` for "self".
pub(crate) fn proc_cpu_s(pid: Option<u32>) -> f64 {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_string(),
        |p| format!("/proc/{p}/stat"),
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) close with ')'.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

pub(crate) fn machine() -> (usize, f64) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = proc_kib("/proc/meminfo", "MemTotal:").map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    (cores, mem)
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let a = match cmd {
        BenchCommand::Ingest(a) => a,
        BenchCommand::Profiles(p) => return crate::bench_profiles::run(p).await,
        BenchCommand::Segments(p) => return crate::bench_segments::run(p).await,
        BenchCommand::Analytics(p) => return crate::bench_analytics::run(p).await,
        BenchCommand::Actions(p) => return crate::bench_actions::run(p).await,
        BenchCommand::Erase(p) => return crate::bench_erase::run(p).await,
    };
    let key = "bench-write-key";
    let (url, key, server) = match &a.url {
        Some(u) => {
            let k = a
                .write_key
                .clone()
                .context("--url needs --write-key (or NIYET_WRITE_KEY)")?;
            (u.clone(), k, None)
        }
        None => {
            let (u, s) = start_server(key).await?;
            (u, key.to_string(), Some(s))
        }
    };
    let client = IngestClient::new(&url, &key)?;
    let batch_tpl = Arc::new(Template::new(Some(a.batch)));
    let single_tpl = Arc::new(Template::new(None));
    let ids = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dur = Duration::from_secs(a.duration);
    let runs = a.runs.max(1);
    eprintln!("warming up…");
    closed_loop(
        &client,
        "/v1/batch",
        batch_tpl.clone(),
        a.connections,
        Duration::from_secs(2),
        ids.clone(),
    )
    .await;

    let mut acked = 0;
    let mut throughput_runs = Vec::new();
    for i in 0..runs {
        eprintln!(
            "throughput {}/{runs}: batches of {} on {} connections for {} s",
            i + 1,
            a.batch,
            a.connections,
            a.duration
        );
        let r = closed_loop(
            &client,
            "/v1/batch",
            batch_tpl.clone(),
            a.connections,
            dur,
            ids.clone(),
        )
        .await;
        acked += r.events;
        throughput_runs.push(RunFigures::of(&r, 0));
    }
    let half = median(&throughput_runs, |r| r.events_per_s) / 2.0;
    let mut half_rate_runs = Vec::new();
    let http = reqwest::Client::new();
    for i in 0..runs {
        // The closed loop outruns processing; latency at half rate is that of a server
        // keeping up with its load, so the backlog is worked off first (and timed). A
        // server given by `--url` has its own admin token: there, nothing is awaited.
        let drain = Instant::now();
        if server.is_some() {
            crate::bench_profiles::caught_up(&http, &url, None).await?;
        }
        eprintln!(
            "half rate {}/{runs}: fixed schedule of {half:.0} events/s \
             (processing caught up with the log in {:.1} s)",
            i + 1,
            drain.elapsed().as_secs_f64()
        );
        let (r, late) = open_loop(
            &client,
            batch_tpl.clone(),
            half / a.batch as f64,
            dur,
            ids.clone(),
        )
        .await;
        acked += r.events;
        half_rate_runs.push(RunFigures::of(&r, late));
    }
    let mut single_runs = Vec::new();
    for i in 0..runs {
        eprintln!(
            "single events {}/{runs}: {} connections",
            i + 1,
            a.connections
        );
        let r = closed_loop(
            &client,
            "/v1/track",
            single_tpl.clone(),
            a.connections,
            dur,
            ids.clone(),
        )
        .await;
        acked += r.events;
        single_runs.push(RunFigures::of(&r, 0));
    }

    let end = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?
        .lines()
        .find_map(|l| {
            l.strip_prefix("niyet_log_end_offset ")
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let (cores, memory_gib) = machine();
    let errors = throughput_runs
        .iter()
        .chain(&half_rate_runs)
        .chain(&single_runs)
        .map(|r| r.errors)
        .sum();
    let report = Report {
        batch_size: a.batch,
        connections: a.connections,
        phase_seconds: a.duration,
        runs,
        event_bytes: batch_tpl.bytes.len() / a.batch.max(1),
        throughput: Summary::of(&throughput_runs),
        half_rate: Summary::of(&half_rate_runs),
        single: Summary::of(&single_runs),
        throughput_runs,
        half_rate_runs,
        single_runs,
        acknowledged_events: acked,
        log_end_offset: end,
        errors,
        cores,
        memory_gib,
    };
    println!(
        "niyet bench ingest — {} cores, {:.0} GiB, batches of {}, {} connections, {} runs of {} s per phase (medians)",
        cores, memory_gib, a.batch, a.connections, runs, a.duration
    );
    let (t, h, s1) = (&report.throughput, &report.half_rate, &report.single);
    println!(
        "  batches, max throughput : {:>10.0} events/s   ack p50 {:>6.2} ms  p99 {:>6.2} ms",
        t.events_per_s, t.p50_ms, t.p99_ms
    );
    println!(
        "  batches, at half rate   : {:>10.0} events/s   ack p50 {:>6.2} ms  p99 {:>6.2} ms",
        h.events_per_s, h.p50_ms, h.p99_ms
    );
    println!(
        "  single events           : {:>10.0} requests/s ack p50 {:>6.2} ms  p99 {:>6.2} ms",
        s1.requests_per_s, s1.p50_ms, s1.p99_ms
    );
    for (name, rs) in [
        ("throughput", &report.throughput_runs),
        ("half rate", &report.half_rate_runs),
        ("single", &report.single_runs),
    ] {
        let each: Vec<String> = rs
            .iter()
            .map(|r| {
                format!(
                    "{:.0}/s p99 {:.1} ms",
                    if name == "single" {
                        r.requests_per_s
                    } else {
                        r.events_per_s
                    },
                    r.latency.p99_ms
                )
            })
            .collect();
        println!("    {name:<10} runs: {}", each.join(" · "));
    }
    println!(
        "  acknowledged events {} · log end offset {} · errors {}",
        report.acknowledged_events, report.log_end_offset, report.errors
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)?;
    }
    if a.url.is_none() && report.log_end_offset < report.acknowledged_events {
        bail!(
            "the log holds fewer events ({}) than were acknowledged ({})",
            report.log_end_offset,
            report.acknowledged_events
        );
    }
    Ok(())
}
