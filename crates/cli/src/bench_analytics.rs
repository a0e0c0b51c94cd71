//! `niyet bench analytics`: model fitting and attribution speed, side by side with the
//! Python reference packages on the same data in the same run.
//!
//! The data are generated here (deterministic): customers drawn from the BG/NBD and
//! Gamma-Gamma models themselves, and journeys over eight channels. They are written as
//! CSV files, fitted and attributed in this process (median of `--runs`), and, when a
//! Python with `lifetimes`, `marketing-attribution-models` and `ChannelAttribution` is
//! given, by `scripts/reference/bench_analytics.py` on the same files. Only the model
//! computation is timed on both sides, never the reading of the files.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use niyet_analytics::attribution::{attribute, Journey, Model, Normalisation, Touch};
use niyet_analytics::clv::{simulate, BgNbd, GammaGamma, History};
use serde_json::{json, Value};

use crate::bench::machine;

/// Arguments of `niyet bench analytics`.
#[derive(Debug, Args)]
pub struct AnalyticsBench {
    /// Customers to fit BG/NBD and Gamma-Gamma on.
    #[arg(long, default_value_t = 1_000_000)]
    customers: usize,
    /// Journeys to attribute.
    #[arg(long, default_value_t = 1_000_000)]
    journeys: usize,
    /// Runs of each computation in this process (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// A Python interpreter with lifetimes, marketing-attribution-models and
    /// ChannelAttribution installed: runs the reference side too.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

const CHANNELS: [&str; 8] = [
    "direct",
    "email",
    "organic_search",
    "paid_search",
    "organic_social",
    "paid_social",
    "display",
    "referral",
];

/// Deterministic journeys: 1–8 touches, no channel twice in a row, conversion likelier
/// with some channels and longer journeys.
fn journeys(n: usize) -> Vec<Journey> {
    let mut s: u64 = 0x5DEE_CE66_D1CE_4E5B;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let len = 1 + (next() * next() * 8.0) as usize;
            let mut touches: Vec<Touch> = Vec::with_capacity(len);
            let mut p = 0.05;
            for _ in 0..len {
                let mut c = (next() * CHANNELS.len() as f64) as u32;
                if touches.last().is_some_and(|t| t.channel == c) {
                    c = (c + 1) % CHANNELS.len() as u32;
                }
                p += [0.0, 0.06, 0.03, 0.05, 0.01, 0.02, 0.005, 0.02][c as usize];
                touches.push(Touch {
                    channel: c,
                    hours_before: 0.0,
                });
            }
            let mut h = 0.0;
            for t in touches.iter_mut().rev() {
                t.hours_before = h;
                h += (next() * 4800.0).round() / 100.0;
            }
            let converted = next() < p;
            let value = if converted {
                (2000.0 + next() * 38000.0).round() / 100.0
            } else {
                0.0
            };
            Journey {
                touches,
                converted,
                value,
                count: 1.0,
            }
        })
        .collect()
}

fn median_of(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn write_customers(path: &std::path::Path, c: &[(History, f64)]) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "frequency,recency,T,monetary")?;
    for (h, m) in c {
        writeln!(w, "{},{},{},{}", h.frequency, h.recency, h.age, m)?;
    }
    w.flush()?;
    Ok(())
}

fn write_journeys(path: &std::path::Path, js: &[Journey]) -> anyhow::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "journey_id,path,hours,converted,value")?;
    for (i, j) in js.iter().enumerate() {
        let path: Vec<&str> = j
            .touches
            .iter()
            .map(|t| CHANNELS[t.channel as usize])
            .collect();
        let hours: Vec<String> = j
            .touches
            .iter()
            .map(|t| t.hours_before.to_string())
            .collect();
        writeln!(
            w,
            "j{i},{},{},{},{}",
            path.join(" > "),
            hours.join(" > "),
            u8::from(j.converted),
            j.value
        )?;
    }
    w.flush()?;
    Ok(())
}

/// Runs the benchmark.
pub async fn run(a: AnalyticsBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    eprintln!(
        "generating {} customers and {} journeys…",
        a.customers, a.journeys
    );
    let customers = simulate(a.customers, 42);
    let js = journeys(a.journeys);
    let (cust_csv, jour_csv) = (
        dir.path().join("customers.csv"),
        dir.path().join("journeys.csv"),
    );
    write_customers(&cust_csv, &customers)?;
    write_journeys(&jour_csv, &js)?;
    let touches: usize = js.iter().map(|j| j.touches.len()).sum();
    let converted = js.iter().filter(|j| j.converted).count();

    eprintln!("fitting and attributing in Niyet ({} runs each)…", a.runs);
    let hist: Vec<History> = customers.iter().map(|c| c.0).collect();
    let rows: Vec<(u32, f64)> = customers.iter().map(|c| (c.0.frequency, c.1)).collect();
    let mut fitted = (None, None);
    let bgnbd_s = median_of(a.runs, || fitted.0 = BgNbd::fit(&hist).ok());
    let gg_s = median_of(a.runs, || fitted.1 = GammaGamma::fit(&rows).ok());
    let (bg, gg) = (
        fitted.0.context("BG/NBD did not fit")?,
        fitted.1.context("Gamma-Gamma did not fit")?,
    );
    let n = CHANNELS.len();
    let mut credit = Vec::new();
    let markov_global_s = median_of(a.runs, || {
        credit = attribute(&js, n, Model::Markov(Normalisation::Global));
    });
    let markov_per_s = median_of(a.runs, || {
        credit = attribute(&js, n, Model::Markov(Normalisation::PerJourney));
    });
    let shapley_s = median_of(a.runs, || credit = attribute(&js, n, Model::Shapley));

    let reference: Option<Value> = match &a.python {
        None => None,
        Some(py) => {
            eprintln!("running the Python reference on the same files…");
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../scripts/reference/bench_analytics.py");
            let out = std::process::Command::new(py)
                .arg(&script)
                .arg(&cust_csv)
                .arg(&jour_csv)
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("running {}", py.display()))?;
            anyhow::ensure!(
                out.status.success(),
                "the Python reference failed: {}",
                out.status
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let last = text.lines().last().unwrap_or("");
            Some(serde_json::from_str(last).context("the Python reference's JSON line")?)
        }
    };

    let (cores, mem) = machine();
    println!("niyet bench analytics — {cores} cores, {mem:.0} GiB");
    println!(
        "  BG/NBD fit, {} customers: {:.3} s (r {:.4}, α {:.4}, a {:.4}, b {:.4})",
        a.customers, bgnbd_s, bg.r, bg.alpha, bg.a, bg.b
    );
    println!(
        "  Gamma-Gamma fit, {} repeat customers: {:.3} s (p {:.4}, q {:.4}, v {:.4})",
        gg.customers, gg_s, gg.p, gg.q, gg.v
    );
    println!(
        "  Markov attribution, {} journeys ({touches} touches, {converted} converted): global {:.3} s, per journey {:.3} s",
        a.journeys, markov_global_s, markov_per_s
    );
    println!("  Shapley attribution: {shapley_s:.3} s");
    let mut report = json!({
        "cores": cores, "memory_gib": mem, "customers": a.customers, "journeys": a.journeys,
        "touches": touches, "converted": converted,
        "bgnbd_s": bgnbd_s, "gamma_gamma_s": gg_s, "bgnbd": bg, "gamma_gamma": gg,
        "markov_global_s": markov_global_s, "markov_per_journey_s": markov_per_s,
        "shapley_s": shapley_s,
    });
    if let Some(r) = reference {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let fit = f("lifetimes_bgnbd_s") + f("lifetimes_gamma_gamma_s");
        println!(
            "  lifetimes: BG/NBD {:.2} s + Gamma-Gamma {:.2} s = {:.2} s → Niyet {:.0}× faster (params r {:.4}, α {:.4}, a {:.4}, b {:.4})",
            f("lifetimes_bgnbd_s"),
            f("lifetimes_gamma_gamma_s"),
            fit,
            fit / (bgnbd_s + gg_s),
            r["bgnbd"]["r"].as_f64().unwrap_or(f64::NAN),
            r["bgnbd"]["alpha"].as_f64().unwrap_or(f64::NAN),
            r["bgnbd"]["a"].as_f64().unwrap_or(f64::NAN),
            r["bgnbd"]["b"].as_f64().unwrap_or(f64::NAN),
        );
        println!(
            "  marketing-attribution-models Markov: {:.2} s → Niyet per journey {:.0}× faster",
            f("mam_markov_s"),
            f("mam_markov_s") / markov_per_s
        );
        println!(
            "  ChannelAttribution Markov: {:.2} s → Niyet global {:.0}× faster",
            f("ca_markov_s"),
            f("ca_markov_s") / markov_global_s
        );
        report["reference"] = r;
    }
    if let Some(p) = a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
