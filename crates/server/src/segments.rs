//! Admin API over segments: definitions with their sizes, members (JSON or CSV), a
//! profile's segments and history, and a rule checker.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::admin::{authorize, blocking};
use crate::profiles::{bad, limit_of, parse_id, profile_view};
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/segments", get(list))
        .route("/v1/segments/{name}", get(one))
        .route("/v1/segments/{name}/members", get(members))
        .route("/v1/profiles/{id}/segments", get(of_profile))
        .route("/v1/rules/check", post(check))
}

fn no_segment(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "segment_not_found",
        format!("no segment named '{name}'"),
    )
}

/// `GET /v1/segments`: every segment with its rule (text and JSON) and size.
async fn list(State(st): State<Arc<AppState>>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&st, &h)?;
    blocking(move || Ok(Json(json!({"segments": st.pipeline.query().segments()})))).await
}

/// `GET /v1/segments/{name}`.
async fn one(
    State(st): State<Arc<AppState>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &h)?;
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
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    authorize(&st, &h)?;
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(bad(
                "invalid_parameter",
                format!("format: expected json or csv, not '{other}'"),
            ))
        }
    };
    // A CSV export holds every member unless a limit is given.
    let limit = if csv && !q.contains_key("limit") {
        usize::MAX
    } else {
        limit_of(&q, 100)?
    };
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
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
}

/// `GET /v1/profiles/{id}/segments`: the profile's segments with entry times, and its
/// latest entries and exits.
async fn of_profile(
    State(st): State<Arc<AppState>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_view(st, &h, &id, |q, id| q.profile_segments(id)).await
}

/// `POST /v1/rules/check` with `{"rule": "text"}` or `{"rule_json": {…}}`: the rule in
/// both forms, or where and why it does not parse.
async fn check(
    State(st): State<Arc<AppState>>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &h)?;
    let b: Value = serde_json::from_slice(&body)
        .map_err(|e| bad("invalid_json", format!("expected a JSON object: {e}")))?;
    let rule = match (b.get("rule"), b.get("rule_json")) {
        (Some(Value::String(text)), None) => niyet_rules::parse(text).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "rule_syntax", e.to_string()).with_details(
                json!({"line": e.line, "column": e.column, "expected": e.expected, "found": e.found}),
            )
        })?,
        (None, Some(j)) => serde_json::from_value::<niyet_rules::Rule>(j.clone())
            .map_err(|e| bad("rule_json", format!("not a rule in JSON form: {e}")))?,
        _ => {
            return Err(bad(
                "invalid_request",
                "give either \"rule\" (text) or \"rule_json\" (JSON form)",
            ))
        }
    };
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
