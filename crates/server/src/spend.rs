//! Marketing spend, for return on investment and cost per acquisition in attribution
//! reports: rows of (day, channel and/or campaign, cost), posted through the admin API
//! (`niyet import spend` reads a CSV file) and appended to `analytics/spend.ndjson` in the
//! data directory, synced before the answer.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use niyet_analytics::channel::Channel;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::admin::blocking;
use crate::profiles::bad;
use crate::{ApiError, AppState};

/// One day's cost of a channel or campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendRow {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub campaign: Option<String>,
    pub cost: f64,
}

impl SpendRow {
    /// Start of the row's day (ms).
    pub fn day_ms(&self) -> Option<i64> {
        niyet_model::parse_timestamp(&format!("{}T00:00:00Z", self.date)).ok()
    }

    fn check(&self) -> Result<(), String> {
        if self.date.len() != 10 || self.day_ms().is_none() {
            return Err(format!("date: expected YYYY-MM-DD, not '{}'", self.date));
        }
        if let Some(c) = &self.channel {
            if Channel::parse(c).is_none() {
                let names: Vec<&str> = Channel::ALL.iter().map(|c| c.name()).collect();
                return Err(format!(
                    "channel: no channel named '{c}'; channels: {}",
                    names.join(", ")
                ));
            }
        }
        if self.channel.is_none() && self.campaign.is_none() {
            return Err("a row needs a channel, a campaign or both".into());
        }
        if !(self.cost.is_finite() && self.cost >= 0.0) {
            return Err(format!("cost: expected a number ≥ 0, not {}", self.cost));
        }
        Ok(())
    }
}

/// The spend rows and their file.
#[derive(Debug)]
pub struct Spend {
    path: PathBuf,
    rows: Mutex<Vec<SpendRow>>,
}

impl Spend {
    /// Opens (reads) the file under `data_dir`; unreadable lines are skipped with a
    /// warning.
    pub fn open(data_dir: &std::path::Path) -> Spend {
        let path = data_dir.join("analytics").join("spend.ndjson");
        let mut rows = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for (i, line) in text.lines().enumerate() {
                match serde_json::from_str::<SpendRow>(line) {
                    Ok(r) => rows.push(r),
                    Err(e) => tracing::warn!(line = i + 1, error = %e, "skipping a spend line"),
                }
            }
        }
        Spend {
            path,
            rows: Mutex::new(rows),
        }
    }

    fn append(&self, new: &[SpendRow]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut buf = Vec::new();
        for r in new {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_data()?;
        if let Ok(mut rows) = self.rows.lock() {
            rows.extend_from_slice(new);
        }
        Ok(())
    }

    /// Total cost per channel (or per campaign) of the days from `since` (ms) to `until`.
    pub fn totals(
        &self,
        by_campaign: bool,
        since: i64,
        until: i64,
    ) -> std::collections::BTreeMap<String, f64> {
        let mut out = std::collections::BTreeMap::new();
        let Ok(rows) = self.rows.lock() else {
            return out;
        };
        for r in rows.iter() {
            let Some(day) = r.day_ms() else { continue };
            if day + 86_400_000 <= since || day > until {
                continue;
            }
            let key = if by_campaign { &r.campaign } else { &r.channel };
            if let Some(k) = key {
                *out.entry(k.clone()).or_insert(0.0) += r.cost;
            }
        }
        out
    }
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/spend", get(list).post(add))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    rows: Vec<SpendRow>,
}

/// `POST /v1/spend` with `{"rows": [{"date", "channel", "campaign", "cost"}]}`: all rows
/// are checked first; nothing is stored unless every row is valid.
async fn add(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: Body = serde_json::from_slice(&body)
        .map_err(|e| bad("invalid_json", format!("expected {{\"rows\": [...]}}: {e}")))?;
    for (i, r) in b.rows.iter().enumerate() {
        r.check()
            .map_err(|m| bad("invalid_row", format!("row {}: {m}", i + 1)))?;
    }
    blocking(move || {
        st.spend.append(&b.rows).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                format!("storing spend: {e}"),
            )
        })?;
        Ok(Json(json!({"stored": b.rows.len()})))
    })
    .await
}

/// `GET /v1/spend`: totals per channel and per campaign over all days.
async fn list(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let rows = st.spend.rows.lock().map(|r| r.len()).unwrap_or(0);
    Ok(Json(json!({
        "rows": rows,
        "by_channel": st.spend.totals(false, i64::MIN / 2, i64::MAX / 2),
        "by_campaign": st.spend.totals(true, i64::MIN / 2, i64::MAX / 2),
    })))
}
