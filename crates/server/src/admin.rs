//! The admin API (Bearer admin token), health, readiness, metrics and the status page.
//!
//! * `GET /v1/events?offset=&limit=&type=&event=` — events from the log by offset; without
//!   `offset`, the newest ones (tail).
//! * `GET /v1/quarantine?status=pending|replayed|discarded&from=&limit=` — quarantined
//!   messages with their reasons; `GET /v1/quarantine/{id}` — one of them.
//! * `POST /v1/quarantine/{id}/replay` — validate again (the body, if given, replaces the
//!   stored message: send the fixed one) and append to the log; `POST
//!   /v1/quarantine/{id}/discard` — drop it for good (the decision is recorded).
//! * `GET /healthz` (process up), `GET /readyz` (storage writable), `GET /metrics`.

use std::fmt::Write;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use niyet_ingest::{parse_envelope, Disposition, Endpoint, MessageType, NormalizeCtx, Outcome};
use niyet_log::{Appended, NewRecord, Record};
use niyet_model::time::format_rfc3339_millis;
use serde::Deserialize;

use crate::quarantine::{Item, Status};
use crate::{append, ApiError, AppState};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(status_page))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/metrics", get(metrics))
        .route("/v1/events", get(events))
        .route("/v1/quarantine", get(quarantine_list))
        .route("/v1/quarantine/{id}", get(quarantine_get))
        .route("/v1/quarantine/{id}/replay", post(quarantine_replay))
        .route("/v1/quarantine/{id}/discard", post(quarantine_discard))
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("task failed: {e}"),
        )
    })?
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    match st.log.poison_reason() {
        None => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Some(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            format!("the event log refuses writes: {why}"),
        )
        .into_response(),
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut text = st.metrics.render(
        &st.log.stats(),
        st.quarantine.pending(),
        st.log.poison_reason().is_some(),
    );
    crate::metrics::Metrics::render_pipeline(&mut text, &st.pipeline.stats());
    if let Some(d) = &st.delivery {
        text.push_str(&d.metrics());
    }
    if let Ok(decisions) = crate::actions::trigger_decisions(&st).await {
        crate::metrics::Metrics::render_decisions(&mut text, &decisions);
    }
    if let Some(dir) = st.log.dir().parent().map(std::path::Path::to_path_buf) {
        if let Ok(parts) = tokio::task::spawn_blocking(move || disk_bytes(&dir)).await {
            crate::metrics::Metrics::render_disk(&mut text, &parts);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Bytes each entry of the data directory takes on disk (allocated blocks, so the log's
/// zero-filled segment tails and the next segment written ahead count), by entry: a
/// folder (`events`, `quarantine`, `state`, `delivery`, …) by its name, the loose files
/// together as `other`.
fn disk_bytes(dir: &std::path::Path) -> Vec<(String, u64)> {
    fn walk(p: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        let own = m.blocks() * 512;
        if !m.is_dir() {
            return own;
        }
        let inner: u64 = std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| walk(&e.path())).sum())
            .unwrap_or(0);
        own + inner
    }
    let mut parts: Vec<(String, u64)> = Vec::new();
    let mut other = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            parts.push((e.file_name().to_string_lossy().into_owned(), walk(&path)));
        } else {
            other += walk(&path);
        }
    }
    parts.sort();
    parts.push(("other".into(), other));
    parts
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    offset: Option<u64>,
    limit: Option<usize>,
    #[serde(rename = "type")]
    kind: Option<String>,
    event: Option<String>,
}

#[derive(Deserialize)]
struct TypeAndName {
    #[serde(rename = "type")]
    kind: String,
    event: Option<String>,
}

/// Most records one `/v1/events` call looks at when filtering.
const SCAN_BUDGET: u64 = 100_000;

async fn events(
    State(st): State<Arc<AppState>>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    if let Some(t) = &q.kind {
        if MessageType::parse(t).is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("type: unknown message type '{t}'"),
            ));
        }
    }
    let body = blocking(move || {
        let stats = st.log.stats();
        let filtered = q.kind.is_some() || q.event.is_some();
        let keep = |r: &Record| {
            if !filtered {
                return true;
            }
            match serde_json::from_slice::<TypeAndName>(&r.payload) {
                Ok(te) => {
                    q.kind.as_ref().is_none_or(|k| *k == te.kind)
                        && q.event
                            .as_ref()
                            .is_none_or(|e| Some(e) == te.event.as_ref())
                }
                Err(_) => false,
            }
        };
        let (from, tail) = match q.offset {
            Some(o) => (o.max(stats.start_offset), false),
            None => {
                let window = if filtered { SCAN_BUDGET } else { limit as u64 };
                (
                    stats
                        .end_offset
                        .saturating_sub(window)
                        .max(stats.start_offset),
                    true,
                )
            }
        };
        let mut out: Vec<Record> = Vec::new();
        let mut next = from;
        let stop = from.saturating_add(SCAN_BUDGET).min(stats.end_offset);
        while next < stop && (tail || out.len() < limit) {
            let chunk = st
                .log
                .read(next, 1000.min((stop - next) as usize))
                .map_err(|e| ApiError::from_log(&e))?;
            let Some(last) = chunk.last() else { break };
            let last_offset = last.offset;
            for r in chunk {
                if !tail && out.len() >= limit {
                    break;
                }
                next = r.offset + 1;
                if keep(&r) {
                    out.push(r);
                }
            }
            if tail {
                next = last_offset + 1;
                if out.len() > limit {
                    out.drain(..out.len() - limit);
                }
            }
        }
        let mut body =
            Vec::with_capacity(out.iter().map(|r| r.payload.len() + 64).sum::<usize>() + 128);
        body.extend_from_slice(b"{\"events\":[");
        for (i, r) in out.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            let _ = write!(
                Sink(&mut body),
                "{{\"offset\":{},\"received_at\":\"{}\",\"event\":",
                r.offset,
                format_rfc3339_millis(r.time_ms)
            );
            body.extend_from_slice(&r.payload);
            body.push(b'}');
        }
        let _ = write!(
            Sink(&mut body),
            "],\"next_offset\":{next},\"start_offset\":{},\"end_offset\":{}}}",
            stats.start_offset,
            stats.end_offset
        );
        Ok(body)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

struct Sink<'a>(&'a mut Vec<u8>);
impl std::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct QuarantineQuery {
    status: Option<String>,
    from: Option<u64>,
    limit: Option<usize>,
}

fn parse_status(s: &str) -> Result<Option<Status>, ApiError> {
    Ok(Some(match s {
        "pending" => Status::Pending,
        "replayed" => Status::Replayed,
        "discarded" => Status::Discarded,
        "all" => return Ok(None),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("status: '{s}' is not one of pending, replayed, discarded, all"),
            ))
        }
    }))
}

async fn quarantine_list(
    State(st): State<Arc<AppState>>,
    Query(q): Query<QuarantineQuery>,
) -> Result<Response, ApiError> {
    let status = parse_status(q.status.as_deref().unwrap_or("pending"))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let from = q.from.unwrap_or(0);
    let items = blocking(move || {
        st.quarantine
            .list(from, limit, status)
            .map_err(|e| ApiError::from_log(&e))
    })
    .await?;
    let next = items.last().map(|i| i.id + 1);
    Ok(axum::Json(serde_json::json!({"items": items, "next_from": next})).into_response())
}

fn not_found(id: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no quarantined message with id {id}"),
    )
}

async fn quarantine_get(
    State(st): State<Arc<AppState>>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    let st2 = st.clone();
    let entry =
        blocking(move || st2.quarantine.get(id).map_err(|e| ApiError::from_log(&e))).await?;
    let (status, replayed_offset) = st.quarantine.status(id).ok_or_else(|| not_found(id))?;
    let entry = entry.ok_or_else(|| not_found(id))?;
    Ok(axum::Json(Item {
        id,
        status,
        replayed_offset,
        entry,
    })
    .into_response())
}

fn conflict_if_settled(st: &AppState, id: u64) -> Result<(), ApiError> {
    match st.quarantine.status(id) {
        None => Err(not_found(id)),
        Some((Status::Pending, _)) => Ok(()),
        Some((s, _)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_settled",
            format!(
                "quarantined message {id} is already {}",
                if s == Status::Replayed {
                    "replayed"
                } else {
                    "discarded"
                }
            ),
        )),
    }
}

async fn quarantine_replay(
    State(st): State<Arc<AppState>>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    conflict_if_settled(&st, id)?;
    let st2 = st.clone();
    let entry = blocking(move || st2.quarantine.get(id).map_err(|e| ApiError::from_log(&e)))
        .await?
        .ok_or_else(|| not_found(id))?;
    let message: Vec<u8> = if body.iter().all(|c| c.is_ascii_whitespace()) {
        entry.raw.clone().into_bytes()
    } else {
        body.to_vec()
    };
    niyet_ingest::body::check_depth(&message)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.kind.code(), e.message))?;
    let endpoint = match entry.endpoint_type.as_deref().and_then(MessageType::parse) {
        Some(t) => Endpoint::Single(t),
        None => Endpoint::Batch,
    };
    // A batch endpoint needs the envelope around the single message.
    let wrapped;
    let bytes: &[u8] = match endpoint {
        Endpoint::Batch => {
            let mut w = b"{\"batch\":[".to_vec();
            w.extend_from_slice(&message);
            w.extend_from_slice(b"]}");
            wrapped = w;
            &wrapped
        }
        Endpoint::Single(_) => &message,
    };
    let env = parse_envelope(endpoint, bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.kind.code(), e.message))?;
    let source = st.sources_by_name.get(&entry.source);
    let now = st.clock.now_ms();
    let ctx = NormalizeCtx {
        received_ms: now,
        source: &entry.source,
        plan: source.and_then(|s| s.plan.as_deref()),
        request_seq: st.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    };
    let outcome = env.normalize_all(&ctx).into_iter().next();
    let normalized = match outcome {
        Some(Outcome::Valid(n)) => n,
        Some(Outcome::Invalid(i)) => {
            let what = if i.disposition == Disposition::Reject {
                "rejected by the tracking plan"
            } else {
                "still invalid"
            };
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "still_invalid",
                format!("the message is {what}: {}", i.reason),
            ));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "no message to replay",
            ))
        }
    };
    let appended = append(
        &st.log,
        vec![NewRecord {
            time_ms: now,
            key: normalized.dedup_key,
            payload: match source.and_then(|s| s.minimise.as_ref()) {
                Some(m) => m.apply(normalized.payload),
                None => normalized.payload,
            },
        }],
    )
    .await
    .map_err(|e| ApiError::from_log(&e))?;
    let offset = match appended.first() {
        Some(Appended::At(o)) => Some(*o),
        _ => None,
    };
    st.quarantine
        .settle(id, Status::Replayed, offset, now)
        .await
        .map_err(|e| ApiError::from_log(&e))?;
    Ok(axum::Json(serde_json::json!({
        "replayed": true, "id": id, "offset": offset, "duplicate": offset.is_none(),
        "messageId": normalized.message_id,
    }))
    .into_response())
}

async fn quarantine_discard(
    State(st): State<Arc<AppState>>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    conflict_if_settled(&st, id)?;
    st.quarantine
        .settle(id, Status::Discarded, None, st.clock.now_ms())
        .await
        .map_err(|e| ApiError::from_log(&e))?;
    Ok(axum::Json(serde_json::json!({"discarded": true, "id": id})).into_response())
}

/// A page a person can look at: live counters, no personal data, refreshed every 2 s.
async fn status_page(State(st): State<Arc<AppState>>) -> Html<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = st.log.stats();
    let m = &st.metrics;
    let ready = st
        .log
        .poison_reason()
        .map_or("ready".to_string(), |w| format!("NOT READY: {w}"));
    let mut html = String::with_capacity(4096);
    let _ = write!(
        html,
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Niyet</title><style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#1d2430;background:#f6f7f9}}
h1{{margin:0 0 .2rem}} .sub{{color:#5b6575;margin-bottom:1.5rem}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:1rem}}
.card{{background:#fff;border-radius:10px;padding:1rem;box-shadow:0 1px 3px #0002}}
.n{{font-size:1.8rem;font-weight:600}} .l{{color:#5b6575;font-size:.9rem}}
code{{background:#eef0f3;padding:.1rem .3rem;border-radius:4px}}
</style></head><body><h1>Niyet</h1><div class="sub">real-time customer data platform · storage {ready}</div>
<div class="grid">"#
    );
    for (label, v) in [
        ("events stored", s.end_offset - s.start_offset),
        ("accepted since start", m.events_accepted.load(Relaxed)),
        ("duplicates dropped", m.events_duplicate.load(Relaxed)),
        ("quarantined (pending)", st.quarantine.pending() as u64),
        ("rejected by plans", m.events_rejected.load(Relaxed)),
        ("log size (KiB)", s.total_bytes / 1024),
        ("log segments", s.segments as u64),
        ("group commits", s.commits),
    ] {
        let _ = write!(
            html,
            r#"<div class="card"><div class="n">{v}</div><div class="l">{label}</div></div>"#
        );
    }
    // Segment sizes as a bar chart (aggregates only; names are escaped: API users choose them).
    let p = st.pipeline.stats();
    let segs = st.pipeline.query().segments();
    let rows: Vec<(String, i64)> = segs
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or("").to_string(),
                v["size"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let _ = write!(
        html,
        r#"</div><h2>Segments</h2><div class="sub">{} profiles · memberships change as events arrive and as time passes</div>"#,
        p.profiles
    );
    if !rows.is_empty() {
        let top = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
        let h = 26 * rows.len() + 4;
        let _ = write!(
            html,
            r#"<svg width="720" height="{h}" role="img" aria-label="segment sizes" style="background:#fff;border-radius:10px;box-shadow:0 1px 3px #0002">"#
        );
        for (k, (name, n)) in rows.iter().enumerate() {
            let y = 4 + 26 * k;
            let w = (*n as f64 / top * 420.0).round() as i64;
            let _ = write!(
                html,
                r##"<text x="10" y="{ty}" font-size="13" fill="#1d2430">{}</text><rect x="200" y="{y}" width="{w}" height="20" rx="3" fill="#3b6fd8"/><text x="{tx}" y="{ty}" font-size="13" fill="#5b6575">{n}</text>"##,
                escape(name),
                ty = y + 15,
                tx = 206 + w,
            );
        }
        html.push_str("</svg>");
    }
    // Delivery, per destination (counts only).
    if let Some(d) = &st.delivery {
        let stats = d.stats();
        html.push_str(r#"<h2>Actions</h2><div class="sub">triggers act through the durable outbox; each destination has its own queue</div><table style="background:#fff;border-radius:10px;box-shadow:0 1px 3px #0002;border-collapse:collapse"><tr>"#);
        let cols = [
            ("destination", "name"),
            ("kind", "kind"),
            ("sent", "sent"),
            ("queued", "queue_depth"),
            ("retries", "retries"),
            ("dead letters", "dead_letters_waiting"),
            ("no consent", "blocked_by_consent"),
            ("control group", "held_out"),
        ];
        for (label, _) in cols {
            let _ = write!(
                html,
                r#"<th style="text-align:left;padding:.4rem .8rem">{label}</th>"#
            );
        }
        html.push_str("</tr>");
        for dest in stats["destinations"].as_array().into_iter().flatten() {
            html.push_str("<tr>");
            for (_, key) in cols {
                let v = match &dest[key] {
                    serde_json::Value::String(t) => escape(t),
                    other => other.to_string(),
                };
                let _ = write!(html, r#"<td style="padding:.4rem .8rem">{v}</td>"#);
            }
            html.push_str("</tr>");
        }
        html.push_str("</table>");
    }
    // What each trigger decided.
    let decisions = crate::actions::trigger_decisions(&st)
        .await
        .unwrap_or_default();
    if !decisions.is_empty() {
        html.push_str(r#"<h2>Triggers</h2><div class="sub">each firing once: sent, kept back as the control group, over the frequency cap, or not in the trigger's <code>if</code> segment</div><table style="background:#fff;border-radius:10px;box-shadow:0 1px 3px #0002;border-collapse:collapse"><tr>"#);
        for label in [
            "trigger",
            "when",
            "wait",
            "sent",
            "control group",
            "capped",
            "not in segment",
        ] {
            let _ = write!(
                html,
                r#"<th style="text-align:left;padding:.4rem .8rem">{label}</th>"#
            );
        }
        html.push_str("</tr>");
        for (t, (_, d)) in st.triggers.iter().zip(&decisions) {
            let when = match &t.when {
                niyet_actions::When::Event(e) => format!("event {e}"),
                niyet_actions::When::SegmentEntered(s) => format!("enters {s}"),
                niyet_actions::When::ScoreCrossed(s) => format!("crosses {s}"),
            };
            html.push_str("<tr>");
            for v in [
                escape(&t.name),
                escape(&when),
                escape(t.wait.as_deref().unwrap_or("—")),
                d.send.to_string(),
                d.holdout.to_string(),
                d.capped.to_string(),
                d.not_in_segment.to_string(),
            ] {
                let _ = write!(html, r#"<td style="padding:.4rem .8rem">{v}</td>"#);
            }
            html.push_str("</tr>");
        }
        html.push_str("</table>");
    }
    html.push_str(
        r#"<p>Admin API (with <code>Authorization: Bearer &lt;admin token&gt;</code>):
<code>GET /v1/events</code> · <code>GET /v1/segments</code> · <code>GET /v1/rfm</code> · <code>GET /v1/quarantine</code> · metrics at <a href="/metrics">/metrics</a> ·
<a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></p></body></html>"#,
    );
    Html(html)
}

/// Text for HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
