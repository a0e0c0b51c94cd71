//! Admin API over profiles: lookup by any identifier, profile, identity explanation,
//! history, search by trait, un-merge, pipeline status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use niyet_identity::ProfileId;
use niyet_pipeline::PipelineError;
use serde::Deserialize;
use serde_json::Value;

use crate::admin::blocking;
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/profiles", get(find))
        .route("/v1/profiles/{id}", get(profile))
        .route("/v1/profiles/{id}/identity", get(identity))
        .route("/v1/profiles/{id}/events", get(history))
        .route("/v1/profiles/{id}/suggestions", get(suggestions))
        .route("/v1/profiles/{id}/unmerge", post(unmerge))
        .route("/v1/pipeline", get(status))
}

pub(crate) fn not_found(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "profile_not_found",
        format!("no profile for {what}"),
    )
}

pub(crate) fn bad(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, msg)
}

pub(crate) fn pipeline_error(e: PipelineError) -> ApiError {
    match e {
        PipelineError::Invalid(m) => bad("invalid_request", m),
        PipelineError::Timeout(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "processing_behind",
            format!("{e}; try again shortly"),
        ),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
        ),
    }
}

pub(crate) fn parse_id(raw: &str) -> Result<ProfileId, ApiError> {
    raw.parse().map_err(|_| {
        bad(
            "invalid_parameter",
            format!("'{raw}' is not a profile id (profile ids look like p_123)"),
        )
    })
}

/// `format=json|csv` and the page size of an export: a CSV holds every row unless a
/// `limit` is given. Returns (csv, limit).
pub(crate) fn export_of(
    q: &BTreeMap<String, String>,
    default: usize,
) -> Result<(bool, usize), ApiError> {
    let csv = one_of(q, "format", &["json", "csv"])? == Some("csv");
    let limit = if csv && !q.contains_key("limit") {
        usize::MAX
    } else {
        limit_of(q, default)?
    };
    Ok((csv, limit))
}

/// A CSV answer.
pub(crate) fn csv_response(body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The value of query parameter `key` when it is one of `allowed`; None when absent.
pub(crate) fn one_of<'a>(
    q: &'a BTreeMap<String, String>,
    key: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, ApiError> {
    match q.get(key).map(String::as_str) {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        Some(v) => {
            let list = match allowed {
                [] => String::new(),
                [one] => one.to_string(),
                [init @ .., last] => format!("{} or {last}", init.join(", ")),
            };
            Err(bad(
                "invalid_parameter",
                format!("{key}: expected {list}, not '{v}'"),
            ))
        }
    }
}

pub(crate) fn limit_of(q: &BTreeMap<String, String>, default: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                bad(
                    "invalid_parameter",
                    "limit: expected a number from 1 to 1000",
                )
            }),
    }
}

/// `GET /v1/profiles?email=…` (any identifier type: one answer), `?trait.city=İzmir`
/// (search), or no filter (all profiles, by id).
async fn find(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(&q, 50)?;
    let after = q.get("after").map(|a| parse_id(a)).transpose()?;
    let filters: Vec<(String, String)> = q
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "limit" | "after"))
        .collect();
    blocking(move || {
        let query = st.pipeline.query();
        match filters.as_slice() {
            [] => Ok(Json(query.list(after, limit))),
            [(k, v)] if k.starts_with("trait.") => {
                let key = &k["trait.".len()..];
                let value = (!v.is_empty()).then_some(v.as_str());
                Ok(Json(query.search(key, value, after, limit)))
            }
            [(k, v)] => {
                let id = query
                    .find(k, v)
                    .map_err(pipeline_error)?
                    .ok_or_else(|| not_found(format!("{k} '{v}'")))?;
                query.profile(id).map(Json).ok_or_else(|| not_found(id))
            }
            _ => Err(bad(
                "invalid_parameter",
                "give one identifier (email=…, user_id=…, anonymous_id=…, phone=…, device_id=… or an external id type) or one trait.NAME=VALUE",
            )),
        }
    })
    .await
}

/// Authorizes, parses the profile id and answers `view` of it (404 if there is none).
pub(crate) async fn profile_view(
    st: Arc<AppState>,
    id: &str,
    view: impl FnOnce(&niyet_pipeline::ProfileQuery<'_>, ProfileId) -> Option<Value> + Send + 'static,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(id)?;
    blocking(move || {
        view(&st.pipeline.query(), id)
            .map(Json)
            .ok_or_else(|| not_found(id))
    })
    .await
}

async fn profile(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let st2 = st.clone();
    profile_view(st, &id, move |q, id| {
        let mut v = q.profile(id)?;
        // Consent with the default policies applied, and what it held back.
        v["consent"] = crate::privacy::consent_state(&v, &st2.privacy);
        let pid = v["id"].as_str().unwrap_or_default().to_string();
        v["consent_blocks"] = st2
            .delivery
            .as_ref()
            .map_or(Value::Array(Vec::new()), |d| Value::Array(d.blocked(&pid)));
        Some(v)
    })
    .await
}

async fn identity(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_view(st, &id, |q, id| q.identity(id)).await
}

/// Likely links from probabilistic matching that were not merged.
async fn suggestions(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_view(st, &id, |q, id| q.suggestions(id)).await
}

async fn history(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(&q, 50)?;
    let before = match q.get("before") {
        None => None,
        Some(b) => Some(
            b.parse::<u64>()
                .map_err(|_| bad("invalid_parameter", "before: expected a log offset"))?,
        ),
    };
    profile_view(st, &id, move |q, id| q.events(id, before, limit)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnmergeBody {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

/// `POST /v1/profiles/{id}/unmerge {"type": "anonymous_id", "value": "…"}`.
async fn unmerge(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let b: UnmergeBody = serde_json::from_slice(&body).map_err(|e| {
        bad(
            "invalid_json",
            format!("expected {{\"type\": identifier type, \"value\": identifier}}: {e}"),
        )
    })?;
    blocking(move || {
        if st.pipeline.query().canonical(id).is_none() {
            return Err(not_found(id));
        }
        let now = st.clock.now_ms();
        st.pipeline
            .unmerge(id, &b.kind, &b.value, now, Duration::from_secs(30))
            .map(Json)
            .map_err(pipeline_error)
    })
    .await
}

async fn status(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let s = st.pipeline.stats();
    let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
    v["caught_up"] = Value::Bool(s.processed_offset >= s.log_end_offset);
    v["failure"] = serde_json::to_value(st.pipeline.failure()).unwrap_or(Value::Null);
    Ok(Json(v))
}
