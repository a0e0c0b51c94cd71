//! Admin API over segments: definitions with their sizes, members (JSON or CSV), a
//! profile's segments and history, and a rule checker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::time::Duration;

use crate::admin::blocking;
use crate::profiles::{bad, csv_response, export_of, parse_id, profile_view};
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/segments", get(list).post(create))
        .route("/v1/segments/{name}", get(one).put(replace).delete(remove))
        .route("/v1/segments/{name}/members", get(members))
        .route("/v1/profiles/{id}/segments", get(of_profile))
        .route("/v1/rules/check", post(check))
        .route("/v1/rules/preview", post(preview))
        .route("/v1/segments/{name}/compare/{other}", get(compare))
        .route("/v1/segments/{name}/sizes", get(sizes))
        .route("/v1/stream/segments", get(stream))
}

fn no_segment(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "segment_not_found",
        format!("no segment named '{name}'"),
    )
}

/// `GET /v1/segments`: every segment with its rule (text and JSON) and size.
async fn list(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    blocking(move || Ok(Json(json!({"segments": st.pipeline.query().segments()})))).await
}

/// A segment definition in a request: `{"name", "rule" | "rule_json", "description"}`.
fn definition(
    body: &[u8],
    name: Option<&str>,
) -> Result<(String, niyet_rules::Rule, String), ApiError> {
    let b: Value = serde_json::from_slice(body)
        .map_err(|e| bad("invalid_json", format!("expected a JSON object: {e}")))?;
    let name = match (name, b.get("name").and_then(Value::as_str)) {
        (Some(n), None) => n.to_string(),
        (Some(n), Some(m)) if n == m => n.to_string(),
        (Some(_), Some(_)) => {
            return Err(bad(
                "invalid_request",
                "the name in the body differs from the one in the path (to rename, create a new segment)",
            ))
        }
        (None, Some(m)) => m.to_string(),
        (None, None) => return Err(bad("invalid_request", "\"name\" is required")),
    };
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(bad(
            "invalid_request",
            "\"name\" must be 1 to 200 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(bad(
            "invalid_request",
            "\"name\" must not hold control characters",
        ));
    }
    let rule = rule_of(&b)?;
    let description = b
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok((name, rule, description))
}

/// A JSON request body and the rule in it.
fn rule_body(body: &[u8]) -> Result<(Value, niyet_rules::Rule), ApiError> {
    let b: Value = serde_json::from_slice(body)
        .map_err(|e| bad("invalid_json", format!("expected a JSON object: {e}")))?;
    let rule = rule_of(&b)?;
    Ok((b, rule))
}

/// The rule of a request body, from `rule` (text) or `rule_json`.
fn rule_of(b: &Value) -> Result<niyet_rules::Rule, ApiError> {
    match (b.get("rule"), b.get("rule_json")) {
        (Some(Value::String(text)), None) => niyet_rules::parse(text).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "rule_syntax", e.to_string()).with_details(
                json!({"line": e.line, "column": e.column, "expected": e.expected, "found": e.found}),
            )
        }),
        (None, Some(j)) => serde_json::from_value::<niyet_rules::Rule>(j.clone())
            .map_err(|e| bad("rule_json", format!("not a rule in JSON form: {e}"))),
        _ => Err(bad(
            "invalid_request",
            "give either \"rule\" (text) or \"rule_json\" (JSON form)",
        )),
    }
}

fn define_error(e: niyet_pipeline::PipelineError) -> ApiError {
    use niyet_pipeline::PipelineError::Invalid;
    match e {
        Invalid(m) if m.contains("configuration file") => {
            ApiError::new(StatusCode::CONFLICT, "segment_in_config", m)
        }
        Invalid(m) if m.starts_with("no segment named") => {
            ApiError::new(StatusCode::NOT_FOUND, "segment_not_found", m)
        }
        Invalid(m) => bad("rule_invalid", m),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
        ),
    }
}

async fn save(
    st: Arc<AppState>,
    name: String,
    rule: niyet_rules::Rule,
    description: String,
) -> Result<Value, ApiError> {
    blocking(move || {
        let now = st.clock.now_ms();
        let out = st
            .pipeline
            .put_segment(&name, &rule, &description, now, Duration::from_secs(300))
            .map_err(define_error)?;
        let mut seg = st.pipeline.query().segment(&name).unwrap_or(Value::Null);
        seg["backfill"] = out;
        Ok(seg)
    })
    .await
}

/// `POST /v1/segments`: creates a segment and fills it from history before answering.
async fn create(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (name, rule, description) = definition(&body, None)?;
    if st.pipeline.query().segment(&name).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "segment_exists",
            format!("a segment named '{name}' exists; PUT /v1/segments/{{name}} changes it"),
        ));
    }
    let seg = save(st, name, rule, description).await?;
    Ok((StatusCode::CREATED, Json(seg)))
}

/// `PUT /v1/segments/{name}`: creates or changes a segment (filled again from history).
async fn replace(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (name, rule, description) = definition(&body, Some(&name))?;
    Ok(Json(save(st, name, rule, description).await?))
}

/// `DELETE /v1/segments/{name}`.
async fn remove(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || {
        let now = st.clock.now_ms();
        st.pipeline
            .delete_segment(&name, now, Duration::from_secs(300))
            .map_err(define_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `GET /v1/stream/segments[?segment=NAME]`: server-sent events, one per entry
/// (`segment entered`) or exit (`segment exited`) as it happens, with the profile, the
/// segment and the time. A listener too slow to keep up is told how many it missed.
async fn stream(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let only = q.get("segment").cloned();
    if let Some(n) = &only {
        if st.pipeline.query().segment(n).is_none() {
            return Err(no_segment(n));
        }
    }
    Ok(live(st.segment_changes.subscribe(), move |c| {
        if only.as_ref().is_some_and(|n| *n != c.segment) {
            return None;
        }
        Some(if c.entered {
            "segment entered"
        } else {
            "segment exited"
        })
    }))
}

/// A broadcast of live changes that knows without a lock whether anyone listens: the
/// partition owners ask before building each change (`receiver_count` would take the
/// channel's lock for every profile they work on).
pub struct Live<T> {
    tx: tokio::sync::broadcast::Sender<T>,
    listeners: Arc<AtomicUsize>,
}

/// One listener of a [`Live`] broadcast, counted while it lives.
pub(crate) struct Listener<T> {
    rx: tokio::sync::broadcast::Receiver<T>,
    listeners: Arc<AtomicUsize>,
}

impl<T> Drop for Listener<T> {
    fn drop(&mut self) {
        self.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T: Clone> Live<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: tokio::sync::broadcast::channel(capacity).0,
            listeners: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether anyone listens now.
    pub fn listening(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let n = self.listeners.clone();
        move || n.load(Ordering::Relaxed) > 0
    }

    /// Sends to whoever listens (a listener that just left is fine).
    pub fn sender(&self) -> impl Fn(T) + Send + Sync + 'static
    where
        T: Send + 'static,
    {
        let tx = self.tx.clone();
        move |c| {
            let _ = tx.send(c);
        }
    }

    pub(crate) fn subscribe(&self) -> Listener<T> {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Listener {
            rx: self.tx.subscribe(),
            listeners: self.listeners.clone(),
        }
    }
}

/// A live stream of server-sent events from a broadcast: `name` gives each message's event
/// name (`None`: not for this listener); a listener too slow to keep up gets a `lagged`
/// event with how many it missed.
pub(crate) fn live<T: serde::Serialize + Clone + Send + 'static>(
    rx: Listener<T>,
    name: impl Fn(&T) -> Option<&'static str> + Send + 'static,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let events = futures_util::stream::unfold((rx, name), |(mut l, name)| async move {
        let rx = &mut l.rx;
        loop {
            let ev = match rx.recv().await {
                Ok(c) => match name(&c) {
                    Some(n) => Event::default().event(n).json_data(&c).unwrap_or_default(),
                    None => continue,
                },
                Err(RecvError::Lagged(n)) => Event::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{n}}}")),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, std::convert::Infallible>(ev), (l, name)));
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /v1/segments/{name}`.
async fn one(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        st.pipeline
            .query()
            .segment(&name)
            .map(Json)
            .ok_or_else(|| no_segment(&name))
    })
    .await
}

/// `GET /v1/segments/{name}/members?after=p_…&limit=…&format=csv`: members by profile
/// id, with the time each entered.
async fn members(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let (csv, limit) = export_of(&q, 100)?;
    let after = q.get("after").map(|a| parse_id(a)).transpose()?;
    let v = blocking(move || {
        st.pipeline
            .query()
            .members(&name, after, limit)
            .ok_or_else(|| no_segment(&name))
    })
    .await?;
    if !csv {
        return Ok(Json(v).into_response());
    }
    let mut out = String::from("profile,since\n");
    for m in v["members"].as_array().into_iter().flatten() {
        out.push_str(m["profile"].as_str().unwrap_or(""));
        out.push(',');
        out.push_str(m["since"].as_str().unwrap_or(""));
        out.push('\n');
    }
    Ok(csv_response(out))
}

/// `GET /v1/profiles/{id}/segments`: the profile's segments with entry times, and its
/// latest entries and exits.
async fn of_profile(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_view(st, &id, |q, id| q.profile_segments(id)).await
}

/// `POST /v1/rules/check` with `{"rule": "text"}` or `{"rule_json": {…}}`: the rule in
/// both forms, or where and why it does not parse.
async fn check(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (_, rule) = rule_body(&body)?;
    let mut catalog = niyet_rules::Catalog::default();
    let known = st.pipeline.query().segment_names();
    catalog
        .compile(&rule, &|n| known.iter().position(|k| k == n))
        .map_err(|e| bad("rule_invalid", e.to_string()))?;
    Ok(Json(json!({
        "rule": rule.to_string(),
        "rule_json": serde_json::to_value(&rule).unwrap_or(Value::Null),
    })))
}

/// `POST /v1/rules/preview` with `{"rule": "text"}` or `{"rule_json": {…}}` and optionally
/// `"sample": n`: how many profiles the rule would hold now (a dry run before saving a
/// segment; nothing is stored).
async fn preview(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (b, rule) = rule_body(&body)?;
    let sample = match b.get("sample") {
        None => 10,
        Some(v) => v.as_u64().filter(|n| *n <= 1000).ok_or_else(|| {
            bad(
                "invalid_request",
                "\"sample\" must be a number from 0 to 1000",
            )
        })? as usize,
    };
    blocking(move || {
        st.pipeline
            .preview(&rule, sample)
            .map(Json)
            .map_err(define_error)
    })
    .await
}

/// `GET /v1/segments/{name}/compare/{other}`: two segments side by side (for example two
/// versions of one definition): sizes, overlap, and how many members of each ordered after
/// they entered.
async fn compare(
    State(st): State<Arc<AppState>>,
    Path((name, other)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let q = st.pipeline.query();
        let known = q.segment_names();
        if let Some(n) = [&name, &other].into_iter().find(|n| !known.contains(n)) {
            return Err(no_segment(n));
        }
        q.compare(&name, &other)
            .map(Json)
            .ok_or_else(|| no_segment(&name))
    })
    .await
}

/// `GET /v1/segments/{name}/sizes?since=…`: the segment's size over time (one point per
/// sampling interval of processing time).
async fn sizes(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let since = match q.get("since") {
        None => i64::MIN,
        Some(t) => niyet_model::parse_timestamp(t).map_err(|e| {
            bad(
                "invalid_parameter",
                format!("since: '{t}' is not an ISO-8601 time ({e})"),
            )
        })?,
    };
    blocking(move || {
        st.pipeline
            .query()
            .segment_sizes(&name, since)
            .map(Json)
            .ok_or_else(|| no_segment(&name))
    })
    .await
}
