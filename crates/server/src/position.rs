//! Where processing stands, on every admin answer, and answers that wait for it.
//!
//! Everything the admin API reads (profiles, segments, scores, reports) is derived from
//! the event log by the processing pipeline, which runs a little behind the log: a few
//! milliseconds under load, longer while the log's tail is replayed after a restart. So
//! every admin answer says where processing stood when it was computed:
//!
//! * `Niyet-Processed-Offset: N`: every log record below `N` was applied;
//! * `Niyet-Log-End-Offset: M`: the log's end when the request arrived (every event
//!   acknowledged before the request is below it);
//! * `Niyet-Caught-Up: true` when `N ≥ M`, so the answer includes every event
//!   acknowledged before the request; `false` when it may miss some.
//!
//! A request with `Niyet-Consistent: true` is answered only once processing has caught
//! up with `M` (read your writes): after at most [`WAIT_LIMIT`] it gets 503
//! `processing_behind` with `Retry-After` instead.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use niyet_pipeline::PipelineError;

use crate::{ApiError, AppState};

/// The request header that asks for an answer including every acknowledged event.
pub const CONSISTENT: &str = "niyet-consistent";
/// How long such a request waits for processing at most.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// Processing's position for one request.
pub(crate) struct Position {
    /// The log's end when the request arrived.
    end: u64,
    /// Every record below this was applied before the handler ran.
    processed: u64,
}

/// Whether `req` asks to wait for processing (`Niyet-Consistent: true`).
pub(crate) fn wants_wait(req: &Request) -> Result<bool, ApiError> {
    match req.headers().get(CONSISTENT).map(HeaderValue::to_str) {
        None => Ok(false),
        Some(Ok(v)) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(Ok(v)) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "`Niyet-Consistent` is `true` or `false`",
        )),
    }
}

/// Reads the position as a request arrives and, if it asks for it, waits for
/// processing to reach the log's end.
pub(crate) async fn arrive(st: &Arc<AppState>, wait: bool) -> Result<Position, ApiError> {
    let end = st.log.end_offset();
    if wait && st.pipeline.processed_offset() < end {
        let p = st.pipeline.clone();
        let waited = tokio::task::spawn_blocking(move || p.wait_processed(end, WAIT_LIMIT))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("task failed: {e}"),
                )
            })?;
        match waited {
            Ok(()) => {}
            Err(PipelineError::Timeout(_)) => {
                let behind = end.saturating_sub(st.pipeline.processed_offset());
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "processing_behind",
                    format!(
                        "processing is {behind} records behind the events acknowledged before this request after waiting {} s; try again shortly",
                        WAIT_LIMIT.as_secs()
                    ),
                );
                e.retry_after = Some(1);
                return Err(e);
            }
            Err(other) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "processing_failed",
                    format!("processing has stopped: {other}"),
                ))
            }
        }
    }
    Ok(Position {
        end,
        processed: st.pipeline.processed_offset(),
    })
}

/// Puts the position on the answer.
pub(crate) fn stamp(resp: &mut Response, p: &Position) {
    let h = resp.headers_mut();
    h.insert("niyet-processed-offset", HeaderValue::from(p.processed));
    h.insert("niyet-log-end-offset", HeaderValue::from(p.end));
    h.insert(
        "niyet-caught-up",
        HeaderValue::from_static(if p.processed >= p.end {
            "true"
        } else {
            "false"
        }),
    );
}
