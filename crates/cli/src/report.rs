//! `niyet report …`: the analytics reports of a running server as JSON or CSV, and
//! `niyet import spend FILE.csv`: marketing spend for ROI and cost per acquisition.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

/// Server and output options shared by every report.
#[derive(Debug, Args)]
pub struct Conn {
    /// Server URL.
    #[arg(long, env = "NIYET_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Admin token.
    #[arg(long, env = "NIYET_ADMIN_TOKEN")]
    admin_token: String,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Json,
    Csv,
}

/// A report.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Kind {
    /// Conversions and revenue by channel or campaign, per model (`GET /v1/attribution`).
    Attribution,
    /// Lifetime value: BG/NBD and Gamma-Gamma (`GET /v1/clv`).
    Clv,
    /// The RFM table (`GET /v1/rfm`); CSV lists the customers (`/v1/rfm/members`).
    Rfm,
    /// A funnel (`GET /v1/funnel`, needs `--set steps=A,B,C`).
    Funnel,
    /// Cohort retention (`GET /v1/retention`).
    Retention,
    /// Conversion rate over time (`GET /v1/conversion-rate`).
    ConversionRate,
    /// The intent model (`GET /v1/intent/model`).
    Intent,
}

/// Arguments of `niyet report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Which report.
    #[arg(value_enum)]
    kind: Kind,
    /// Query parameters of the report, e.g. `--set model=markov --set by=campaign`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    format: Output,
    #[command(flatten)]
    conn: Conn,
}

/// `niyet import spend`.
#[derive(Debug, Subcommand)]
pub enum ImportWhat {
    /// Marketing spend from a CSV file with the columns date (YYYY-MM-DD), channel and/or
    /// campaign, and cost.
    Spend {
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
}

async fn get(c: &Conn, path: &str, q: &[(String, String)]) -> anyhow::Result<reqwest::Response> {
    let url = format!("{}{}", c.url.trim_end_matches('/'), path);
    let r = reqwest::Client::new()
        .get(&url)
        .query(q)
        .bearer_auth(&c.admin_token)
        .send()
        .await
        .with_context(|| format!("requesting {url}"))?;
    if !r.status().is_success() {
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        bail!(
            "{status}: {}: {}",
            v["code"].as_str().unwrap_or("error"),
            v["message"].as_str().unwrap_or("request failed")
        );
    }
    Ok(r)
}

/// A cell of a generic CSV: scalars as they are, lists joined by `;`.
fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Rows of objects as CSV, columns from the first row.
fn table(rows: &[Value]) -> String {
    let Some(first) = rows.first().and_then(|r| r.as_object()) else {
        return String::new();
    };
    let cols: Vec<&String> = first.keys().collect();
    let mut out = cols
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for r in rows {
        out.push_str(
            &cols
                .iter()
                .map(|c| cell(&r[c.as_str()]))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}

/// Runs `niyet report`.
pub async fn run(a: ReportArgs) -> anyhow::Result<()> {
    let mut q: Vec<(String, String)> = Vec::new();
    for s in &a.set {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set {s}: expected KEY=VALUE"))?;
        q.push((k.to_string(), v.to_string()));
    }
    let csv = a.format == Output::Csv;
    let (path, native_csv, rows_key) = match a.kind {
        Kind::Attribution => ("/v1/attribution", true, None),
        Kind::Clv => ("/v1/clv", false, None),
        Kind::Rfm if csv => ("/v1/rfm/members", true, None),
        Kind::Rfm => ("/v1/rfm", false, None),
        Kind::Funnel => ("/v1/funnel", false, Some("funnel")),
        Kind::Retention => ("/v1/retention", false, Some("cohorts")),
        Kind::ConversionRate => ("/v1/conversion-rate", false, Some("periods")),
        Kind::Intent => ("/v1/intent/model", false, Some("signals")),
    };
    if csv && native_csv {
        q.push(("format".into(), "csv".into()));
        let text = get(&a.conn, path, &q).await?.text().await?;
        print!("{text}");
        return Ok(());
    }
    let v: Value = get(&a.conn, path, &q).await?.json().await?;
    if !csv {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let Some(key) = rows_key else {
        bail!("this report is a summary, not a table: use --format json");
    };
    let rows = v[key].as_array().cloned().unwrap_or_default();
    print!("{}", table(&rows));
    Ok(())
}

/// Runs `niyet import spend FILE`.
pub async fn import(w: ImportWhat) -> anyhow::Result<()> {
    let ImportWhat::Spend { file, conn } = w;
    let mut rdr =
        csv::Reader::from_path(&file).with_context(|| format!("reading {}", file.display()))?;
    let headers = rdr.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(date), Some(cost)) = (col("date"), col("cost")) else {
        bail!(
            "{}: needs the columns date and cost (and channel and/or campaign)",
            file.display()
        );
    };
    let (channel, campaign) = (col("channel"), col("campaign"));
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{}: row {}", file.display(), i + 2))?;
        let text = |c: Option<usize>| {
            c.and_then(|c| rec.get(c))
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let cost: f64 = text(Some(cost))
            .unwrap_or("")
            .parse()
            .with_context(|| format!("{}: row {}: cost is not a number", file.display(), i + 2))?;
        rows.push(json!({
            "date": text(Some(date)).unwrap_or(""),
            "channel": text(channel),
            "campaign": text(campaign),
            "cost": cost,
        }));
    }
    let url = format!("{}/v1/spend", conn.url.trim_end_matches('/'));
    let r = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&conn.admin_token)
        .json(&json!({"rows": rows}))
        .send()
        .await
        .with_context(|| format!("posting to {url}"))?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{status}: {}: {}",
            v["code"].as_str().unwrap_or("error"),
            v["message"].as_str().unwrap_or("request failed")
        );
    }
    println!("stored {} spend rows", v["stored"]);
    Ok(())
}
