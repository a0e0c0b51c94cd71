//! `niyet import FILE`: NDJSON or CSV (POS and CRM exports) into a running server, through
//! the same ingest API and validation as live traffic.
//!
//! Every imported message gets a deterministic `messageId` (from the line's content and
//! number) unless it has one, so importing the same file twice stores nothing twice.
//!
//! CSV columns are mapped to message fields with `--map FIELD=COLUMN` (repeatable) or a
//! mapping file:
//!
//! ```toml
//! type = "track"                 # identify, track, page, screen, group, alias
//! event = "Order Completed"      # event name for track rows (or map a column to `event`)
//! rest = "properties"            # where unmapped columns go: properties, traits or drop
//! [fields]
//! userId = "customer_no"
//! timestamp = "order_date"
//! "properties.revenue" = "total"
//! "traits.email" = "e_mail"
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client::{BatchAnswer, IngestClient};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Rest {
    /// Unmapped columns become event properties.
    #[default]
    Properties,
    /// Unmapped columns become traits.
    Traits,
    /// Unmapped columns are ignored.
    Drop,
}

/// Arguments of `niyet import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file to import.
    file: PathBuf,
    /// File format (default: from the extension).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Server URL.
    #[arg(long, env = "NIYET_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Write key of the source to import into.
    #[arg(long, env = "NIYET_WRITE_KEY")]
    write_key: String,
    /// Message type for rows/lines without one.
    #[arg(long = "type", default_value = "track")]
    kind: String,
    /// Event name for track rows without one.
    #[arg(long)]
    event: Option<String>,
    /// CSV: FIELD=COLUMN, e.g. userId=customer_no or properties.revenue=total.
    #[arg(long = "map", value_name = "FIELD=COLUMN")]
    maps: Vec<String>,
    /// CSV: a TOML mapping file (see `niyet import --help`).
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// CSV: where unmapped columns go.
    #[arg(long, value_enum)]
    rest: Option<Rest>,
    /// CSV: field delimiter.
    #[arg(long, default_value = ",")]
    delimiter: char,
    /// Messages per request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Don't draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    event: Option<String>,
    rest: Option<Rest>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

/// How CSV rows become messages.
#[derive(Debug, Clone)]
pub struct Mapping {
    kind: String,
    event: Option<String>,
    rest: Rest,
    /// (field path, column).
    fields: Vec<(Vec<String>, String)>,
}

impl Mapping {
    /// Turns one row into a message.
    pub fn row(&self, headers: &[String], row: &csv::StringRecord) -> Value {
        let mut msg = Map::new();
        msg.insert("type".into(), Value::String(self.kind.clone()));
        if let Some(e) = &self.event {
            msg.insert("event".into(), Value::String(e.clone()));
        }
        let mut used = vec![false; headers.len()];
        for (path, col) in &self.fields {
            if let Some(i) = headers.iter().position(|h| h == col) {
                used[i] = true;
                let raw = row.get(i).unwrap_or("").trim();
                if raw.is_empty() {
                    continue;
                }
                // Ids and times stay strings; other values are typed.
                let v = if path.len() == 1 {
                    Value::String(raw.to_string())
                } else {
                    typed(raw)
                };
                set_path(&mut msg, path, v);
            }
        }
        let rest_key = match self.rest {
            Rest::Properties => Some("properties"),
            Rest::Traits => Some("traits"),
            Rest::Drop => None,
        };
        if let Some(k) = rest_key {
            for (i, h) in headers.iter().enumerate() {
                let raw = row.get(i).unwrap_or("").trim();
                if !used[i] && !raw.is_empty() {
                    set_path(&mut msg, &[k.to_string(), h.clone()], typed(raw));
                }
            }
        }
        Value::Object(msg)
    }
}

fn set_path(msg: &mut Map<String, Value>, path: &[String], v: Value) {
    let mut cur = msg;
    for (i, p) in path.iter().enumerate() {
        if i + 1 == path.len() {
            cur.insert(p.clone(), v);
            return;
        }
        let next = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        match next {
            Value::Object(m) => cur = m,
            _ => return,
        }
    }
}

/// "12" → 12, "12.5" → 12.5, "true" → true; anything else stays a string.
fn typed(raw: &str) -> Value {
    let numeric = raw.strip_prefix('-').unwrap_or(raw).split_once('.').map_or(
        raw.strip_prefix('-')
            .unwrap_or(raw)
            .bytes()
            .all(|c| c.is_ascii_digit()),
        |(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        },
    );
    let leading_zero = raw.len() > 1 && raw.starts_with('0') && !raw.starts_with("0.");
    if numeric && !leading_zero && !raw.is_empty() && raw != "-" {
        if let Ok(n) = raw.parse::<i64>() {
            return Value::from(n);
        }
        if let Some(n) = raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(raw.to_string()),
    }
}

/// Builds the mapping from flags and an optional file (flags win).
pub fn build_mapping(
    kind: &str,
    event: Option<&str>,
    rest: Option<Rest>,
    maps: &[String],
    file: Option<&std::path::Path>,
) -> anyhow::Result<Mapping> {
    let mf: MappingFile = match file {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing mapping file {}", p.display()))?,
        None => MappingFile::default(),
    };
    let mut fields = mf.fields;
    for m in maps {
        let Some((f, c)) = m.split_once('=') else {
            bail!("--map '{m}': expected FIELD=COLUMN, e.g. userId=customer_no");
        };
        fields.insert(f.trim().to_string(), c.trim().to_string());
    }
    const TOP: &[&str] = &[
        "userId",
        "anonymousId",
        "messageId",
        "timestamp",
        "originalTimestamp",
        "event",
        "type",
        "name",
        "groupId",
        "previousUserId",
    ];
    let mut out = Vec::new();
    for (f, c) in fields {
        let path: Vec<String> = f.split('.').map(str::to_string).collect();
        let ok = match path.as_slice() {
            [one] => TOP.contains(&one.as_str()),
            [head, ..] => matches!(head.as_str(), "properties" | "traits" | "context"),
            [] => false,
        };
        if !ok {
            bail!(
                "mapping field '{f}': use one of {} or properties.X, traits.X, context.X",
                TOP.join(", ")
            );
        }
        out.push((path, c));
    }
    let kind = if kind == "track" {
        mf.kind.unwrap_or_else(|| kind.to_string())
    } else {
        kind.to_string()
    };
    Ok(Mapping {
        kind,
        event: event.map(str::to_string).or(mf.event),
        rest: rest.or(mf.rest).unwrap_or_default(),
        fields: out,
    })
}

/// A deterministic message id for an imported line.
fn import_id(line_no: u64, content: &[u8]) -> String {
    let h = xxhash_rust::xxh3::xxh3_128_with_seed(content, line_no);
    format!("import-{h:032x}")
}

#[derive(Debug, Default)]
struct Summary {
    lines: u64,
    unreadable: Vec<String>,
    answer: BatchAnswer,
    failed_requests: Vec<String>,
}

pub async fn run(a: ImportArgs) -> anyhow::Result<()> {
    let format = match a.format {
        Some(f) => f,
        None => match a
            .file
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") | Some("tsv") => Format::Csv,
            Some("ndjson") | Some("jsonl") | Some("json") => Format::Ndjson,
            _ => bail!(
                "cannot tell the format of {} from its extension; pass --format ndjson|csv",
                a.file.display()
            ),
        },
    };
    if a.batch_size == 0 || a.batch_size > 1000 {
        bail!("--batch-size must be between 1 and 1000");
    }
    let file =
        std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = if a.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let client = IngestClient::new(&a.url, &a.write_key)?;
    let mut summary = Summary::default();
    let mut batch: Vec<Value> = Vec::with_capacity(a.batch_size);
    let reader = BufReader::new(bar.wrap_read(file));
    match format {
        Format::Ndjson => {
            for (i, line) in reader.lines().enumerate() {
                let line = line.with_context(|| format!("reading line {}", i + 1))?;
                if line.trim().is_empty() {
                    continue;
                }
                summary.lines += 1;
                match serde_json::from_str::<Value>(&line) {
                    Ok(Value::Object(mut m)) => {
                        m.entry("type")
                            .or_insert_with(|| Value::String(a.kind.clone()));
                        if let Some(e) = &a.event {
                            m.entry("event").or_insert_with(|| Value::String(e.clone()));
                        }
                        m.entry("messageId")
                            .or_insert_with(|| Value::String(import_id(i as u64, line.as_bytes())));
                        batch.push(Value::Object(m));
                    }
                    Ok(_) => summary
                        .unreadable
                        .push(format!("line {}: not a JSON object", i + 1)),
                    Err(e) => summary.unreadable.push(format!("line {}: {e}", i + 1)),
                }
                if batch.len() >= a.batch_size {
                    send(&client, &mut batch, &mut summary, &bar).await?;
                }
            }
        }
        Format::Csv => {
            let mapping = build_mapping(
                &a.kind,
                a.event.as_deref(),
                a.rest,
                &a.maps,
                a.mapping.as_deref(),
            )?;
            let mut rdr = csv::ReaderBuilder::new()
                .delimiter(
                    u8::try_from(a.delimiter).context("--delimiter must be one ASCII character")?,
                )
                .flexible(true)
                .from_reader(reader);
            let headers: Vec<String> = rdr
                .headers()?
                .iter()
                .map(|h| h.trim().to_string())
                .collect();
            if let Some(missing) = mapping
                .fields
                .iter()
                .map(|(_, c)| c)
                .find(|c| !headers.contains(c))
            {
                bail!(
                    "mapped column '{missing}' is not in the file (columns: {})",
                    headers.join(", ")
                );
            }
            for (i, row) in rdr.records().enumerate() {
                summary.lines += 1;
                match row {
                    Ok(row) => {
                        let mut msg = mapping.row(&headers, &row);
                        if let Value::Object(m) = &mut msg {
                            let content = row.iter().collect::<Vec<_>>().join("\u{1f}");
                            m.entry("messageId").or_insert_with(|| {
                                Value::String(import_id(i as u64, content.as_bytes()))
                            });
                        }
                        batch.push(msg);
                    }
                    Err(e) => summary.unreadable.push(format!("row {}: {e}", i + 2)),
                }
                if batch.len() >= a.batch_size {
                    send(&client, &mut batch, &mut summary, &bar).await?;
                }
            }
        }
    }
    send(&client, &mut batch, &mut summary, &bar).await?;
    bar.finish_and_clear();
    let s = &summary;
    println!(
        "{}: {} lines read · {} imported · {} duplicates · {} quarantined · {} rejected · {} unreadable · {} failed requests",
        a.file.display(),
        s.lines,
        s.answer.accepted,
        s.answer.duplicates,
        s.answer.quarantined,
        s.answer.rejected,
        s.unreadable.len(),
        s.failed_requests.len()
    );
    for u in s.unreadable.iter().take(10) {
        println!("  unreadable {u}");
    }
    for f in s.failed_requests.iter().take(10) {
        println!("  failed request: {f}");
    }
    if s.answer.quarantined > 0 {
        println!(
            "  quarantined messages and their reasons: GET {}/v1/quarantine",
            a.url.trim_end_matches('/')
        );
    }
    if !s.failed_requests.is_empty() {
        bail!("{} requests failed", s.failed_requests.len());
    }
    Ok(())
}

async fn send(
    client: &IngestClient,
    batch: &mut Vec<Value>,
    s: &mut Summary,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let n = batch.len();
    let body = serde_json::to_vec(&serde_json::json!({ "batch": batch }))?;
    batch.clear();
    match client.batch_with_retry(body, 8).await? {
        Ok(ans) => {
            s.answer.accepted += ans.accepted;
            s.answer.duplicates += ans.duplicates;
            s.answer.quarantined += ans.quarantined;
            s.answer.rejected += ans.rejected;
        }
        Err(e) => {
            // 400 with every message invalid: they are in quarantine (or rejected).
            if e.contains("invalid_messages") {
                if e.contains("kept in quarantine") {
                    s.answer.quarantined += n as u64;
                } else {
                    s.answer.rejected += n as u64;
                }
            } else {
                s.failed_requests.push(e);
            }
        }
    }
    bar.set_message(format!("{} imported", s.answer.accepted));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values() {
        assert_eq!(typed("12"), Value::from(12));
        assert_eq!(typed("-3.5"), Value::from(-3.5));
        assert_eq!(typed("true"), Value::Bool(true));
        assert_eq!(
            typed("0532"),
            Value::from("0532"),
            "leading zeros stay text (phone numbers)"
        );
        assert_eq!(typed("1.2.3"), Value::from("1.2.3"));
        assert_eq!(typed("abc"), Value::from("abc"));
    }

    #[test]
    fn csv_rows_map_to_messages() {
        let m = build_mapping(
            "track",
            Some("Order Completed"),
            None,
            &[
                "userId=customer".into(),
                "properties.revenue=total".into(),
                "timestamp=date".into(),
            ],
            None,
        )
        .expect("mapping");
        let headers: Vec<String> = ["customer", "total", "date", "store"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let row = csv::StringRecord::from(vec!["c-1", "149.90", "2025-03-01 14:22", "Kadıköy"]);
        let msg = m.row(&headers, &row);
        assert_eq!(msg["userId"], "c-1");
        assert_eq!(msg["event"], "Order Completed");
        assert_eq!(msg["properties"]["revenue"], 149.9);
        assert_eq!(msg["properties"]["store"], "Kadıköy");
        assert_eq!(msg["timestamp"], "2025-03-01 14:22");
        assert!(build_mapping("track", None, None, &["bogus=x".into()], None).is_err());
    }
}
