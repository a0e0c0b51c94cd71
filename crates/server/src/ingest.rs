//! The Segment Tracking API: `POST /v1/batch` (and `/v1/import`), `/v1/track`,
//! `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use niyet_ingest::{
    body, parse_envelope, Disposition, Endpoint, IngestError, MessageType, NormalizeCtx, Outcome,
};
use niyet_log::{Appended, NewRecord};
use niyet_model::time::format_rfc3339_millis;
use serde::Serialize;

use crate::quarantine::Entry;
use crate::{append, ApiError, AppState};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    let single = |t: MessageType| {
        post(move |s: State<Arc<AppState>>, h: HeaderMap, b: Body| {
            handle(s, h, b, Endpoint::Single(t))
        })
    };
    Router::new()
        .route(
            "/v1/batch",
            post(|s: State<Arc<AppState>>, h: HeaderMap, b: Body| handle(s, h, b, Endpoint::Batch)),
        )
        .route(
            "/v1/import",
            post(|s: State<Arc<AppState>>, h: HeaderMap, b: Body| handle(s, h, b, Endpoint::Batch)),
        )
        .route("/v1/track", single(MessageType::Track))
        .route("/v1/identify", single(MessageType::Identify))
        .route("/v1/page", single(MessageType::Page))
        .route("/v1/p", single(MessageType::Page))
        .route("/v1/screen", single(MessageType::Screen))
        .route("/v1/group", single(MessageType::Group))
        .route("/v1/alias", single(MessageType::Alias))
}

/// A message refused in a request that was otherwise accepted.
#[derive(Debug, Serialize)]
pub struct MessageError {
    /// Position in the batch.
    pub index: usize,
    /// Stable code.
    pub code: &'static str,
    /// Field and problem.
    pub message: String,
    /// `quarantined` (kept, replayable) or `rejected`.
    pub outcome: &'static str,
}

/// The answer to an ingest request. SDKs read only `success`; the counts serve
/// importers and operators.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// Always true on 200.
    pub success: bool,
    /// Messages durably written.
    pub accepted: usize,
    /// Messages already received earlier (same source and messageId).
    pub duplicates: usize,
    /// Messages kept in quarantine.
    pub quarantined: usize,
    /// Messages refused by a tracking plan.
    pub rejected: usize,
    /// What was wrong with the quarantined and rejected ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<MessageError>,
}

fn bad(e: IngestError) -> ApiError {
    let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(status, e.kind.code(), e.message)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The write key from `Authorization: Basic base64(key:)`.
fn basic_user(h: &HeaderMap) -> Option<String> {
    let v = header_str(h, header::AUTHORIZATION)?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    Some(s.split_once(':').map_or(s.as_str(), |(u, _)| u).to_string())
}

async fn handle(
    State(st): State<Arc<AppState>>,
    h: HeaderMap,
    b: Body,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    let r = ingest(&st, &h, b, endpoint).await;
    let resp = match r {
        Ok(ok) => {
            st.metrics
                .ack_latency(started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64);
            axum::Json(ok).into_response()
        }
        Err(e) => e.into_response(),
    };
    st.metrics.request(resp.status().as_u16());
    resp
}

async fn ingest(
    st: &AppState,
    h: &HeaderMap,
    b: Body,
    endpoint: Endpoint,
) -> Result<IngestResponse, ApiError> {
    let limit = match endpoint {
        Endpoint::Batch => st.limits.max_batch_bytes,
        Endpoint::Single(_) => st.limits.max_message_bytes,
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = header_str(h, header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
    let deadline = Duration::from_millis(st.limits.body_timeout_ms.max(1));
    let read = tokio::time::timeout(deadline, read_limited(b, limit, declared)).await;
    let raw = match read {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    st.limits.body_timeout_ms
                ),
            ))
        }
        Ok(Ok(raw)) => raw,
        Ok(Err(None)) => return Err(too_large()),
        Ok(Err(Some(e))) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("request body could not be read: {e}"),
            ))
        }
    };
    st.metrics
        .bytes_received
        .fetch_add(raw.len() as u64, Ordering::Relaxed);
    let decoded = body::decode(
        header_str(h, header::CONTENT_ENCODING),
        header_str(h, header::CONTENT_TYPE),
        &raw,
        limit,
    )
    .map_err(bad)?;
    body::check_depth(&decoded).map_err(bad)?;
    let env = parse_envelope(endpoint, &decoded).map_err(bad)?;
    let key = basic_user(h).or_else(|| env.write_key.clone());
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_write_key",
            "no write key: send it as the HTTP Basic user name or as writeKey in the body",
        ));
    };
    let source = st
        .keys
        .find(&key)
        .filter(|k| k.kind == crate::access::KeyKind::Write)
        .and_then(|k| {
            let s = st.sources_by_name.get(k.source.as_deref()?)?;
            Some((k, s))
        });
    let Some((wk, source)) = source else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_write_key",
            "the write key is not known to this server (or was rotated or revoked)",
        ));
    };
    if let Err(wait) = st.keys.take(&wk, st.clock.now_ms()) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for write key `{}`; retry later", wk.id),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    let received_ms = st.clock.now_ms();
    let ctx = NormalizeCtx {
        received_ms,
        source: &source.name,
        plan: source.plan.as_deref(),
        request_seq: st.seq.fetch_add(1, Ordering::Relaxed),
    };
    let outcomes = env.normalize_all(&ctx);
    drop(env);

    let mut records = Vec::with_capacity(outcomes.len());
    let mut quarantine = Vec::new();
    let mut errors = Vec::new();
    let mut rejected = 0;
    let endpoint_type = match endpoint {
        Endpoint::Single(t) => Some(t.as_str().to_string()),
        Endpoint::Batch => None,
    };
    for mut o in outcomes {
        if let (Outcome::Valid(n), Some(m)) = (&mut o, &source.minimise) {
            n.payload = m.apply(std::mem::take(&mut n.payload));
        }
        match o {
            // Events of erased customers are dropped before they are stored (and
            // acknowledged like the rest, so the sender does not retry them).
            Outcome::Valid(n) if st.pipeline.suppressed(&n.payload) => {
                st.metrics.events_suppressed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Valid(n) => records.push(NewRecord {
                time_ms: received_ms,
                key: n.dedup_key,
                payload: n.payload,
            }),
            Outcome::Invalid(i) => {
                let outcome = match i.disposition {
                    Disposition::Quarantine => {
                        let e = Entry {
                            source: source.name.clone(),
                            code: i.code.to_string(),
                            reason: i.reason.clone(),
                            endpoint_type: endpoint_type.clone(),
                            index: i.index,
                            received_at: format_rfc3339_millis(received_ms),
                            raw: String::from_utf8_lossy(&i.raw).into_owned(),
                        };
                        // An erased customer's messages are not kept, valid or not.
                        if st.pipeline.suppressed_count() > 0
                            && st.pipeline.any_suppressed(&e.identifier_keys(&st.pipeline))
                        {
                            st.metrics.events_suppressed.fetch_add(1, Ordering::Relaxed);
                            "suppressed"
                        } else {
                            quarantine.push(e);
                            "quarantined"
                        }
                    }
                    Disposition::Reject => {
                        rejected += 1;
                        "rejected"
                    }
                };
                errors.push(MessageError {
                    index: i.index,
                    code: i.code,
                    message: i.reason,
                    outcome,
                });
            }
        }
    }

    let Ok(_permit) = st.pending.try_acquire() else {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            "too many requests are waiting for storage; retry after the given delay",
        );
        e.retry_after = Some(1);
        return Err(e);
    };
    let n_valid = records.len();
    let n_quarantined = quarantine.len();
    let events = async {
        if records.is_empty() {
            Ok(Vec::new())
        } else {
            append(&st.log, records).await
        }
    };
    let quarantined = async {
        if quarantine.is_empty() {
            Ok(Vec::new())
        } else {
            st.quarantine.add(quarantine, received_ms).await
        }
    };
    let (events, quarantined) = tokio::join!(events, quarantined);
    let events = events.map_err(|e| ApiError::from_log(&e))?;
    quarantined.map_err(|e| ApiError::from_log(&e))?;
    let duplicates = events
        .iter()
        .filter(|a| matches!(a, Appended::Duplicate))
        .count();
    let accepted = n_valid - duplicates;
    st.metrics
        .events_accepted
        .fetch_add(accepted as u64, Ordering::Relaxed);
    st.metrics
        .events_duplicate
        .fetch_add(duplicates as u64, Ordering::Relaxed);
    st.metrics
        .events_quarantined
        .fetch_add(n_quarantined as u64, Ordering::Relaxed);
    st.metrics
        .events_rejected
        .fetch_add(rejected as u64, Ordering::Relaxed);

    if n_valid == 0 {
        let first = errors
            .first()
            .map(|e| format!("message {}: {}", e.index, e.message))
            .unwrap_or_default();
        let kept = if n_quarantined > 0 {
            format!("; {n_quarantined} kept in quarantine")
        } else {
            String::new()
        };
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_messages",
            format!("no valid message in the request: {first}{kept}"),
        ));
    }
    Ok(IngestResponse {
        success: true,
        accepted,
        duplicates,
        quarantined: n_quarantined,
        rejected,
        errors,
    })
}

/// Whether reading the body stopped at the size limit.
/// Oversized bodies up to this size are read to the end and dropped before the 413 is
/// sent, so a client still writing sees the answer instead of a reset connection (and an
/// SDK does not take it for a network error and retry). Larger ones are cut off.
const DRAIN_MAX: usize = 8 * 1024 * 1024;

/// Reads a body of at most `limit` bytes. `Err(None)`: larger than the limit (declared or
/// seen); `Err(Some(e))`: the body could not be read.
async fn read_limited(
    b: Body,
    limit: usize,
    declared: Option<usize>,
) -> Result<Bytes, Option<axum::Error>> {
    use http_body_util::BodyExt;
    let mut body = b;
    // A body in one frame (the usual case) is kept as it is; more are joined.
    let mut first: Option<Bytes> = None;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    let over_declared = declared.is_some_and(|n| n > limit);
    if declared.is_some_and(|n| n > DRAIN_MAX) {
        return Err(None);
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Some)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > DRAIN_MAX {
            return Err(None);
        }
        if !over_declared && seen <= limit {
            match first.take() {
                None if buf.is_empty() => first = Some(data),
                None => buf.extend_from_slice(&data),
                Some(f) => {
                    buf.extend_from_slice(&f);
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    if over_declared || seen > limit {
        return Err(None);
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}
