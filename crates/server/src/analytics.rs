//! Admin API over customer analytics: the RFM table, customers by RFM group, one
//! profile's scores.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use niyet_analytics::rfm::Group;
use serde_json::Value;

use crate::admin::{authorize, blocking};
use crate::profiles::{bad, export_of, parse_id, profile_view};
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/rfm", get(table))
        .route("/v1/rfm/members", get(members))
        .route("/v1/profiles/{id}/rfm", get(of_profile))
}

/// `GET /v1/rfm`: the customer base, where each fifth begins on recency, frequency and
/// monetary value, and the size of every score and named group.
async fn table(State(st): State<Arc<AppState>>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&st, &h)?;
    blocking(move || {
        let now = st.clock.now_ms();
        Ok(Json(st.pipeline.query().rfm(now)))
    })
    .await
}

/// `GET /v1/rfm/members?group=Champions&after=p_…&limit=…&format=csv`: customers with
/// their scores, by profile id.
async fn members(
    State(st): State<Arc<AppState>>,
    h: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    authorize(&st, &h)?;
    let group = q
        .get("group")
        .map(|g| {
            Group::parse(g).ok_or_else(|| {
                let names: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
                bad(
                    "invalid_parameter",
                    format!(
                        "group: no RFM group named '{g}'; groups: {}",
                        names.join(", ")
                    ),
                )
            })
        })
        .transpose()?;
    let (csv, limit) = export_of(&q, 100)?;
    let after = q.get("after").map(|a| parse_id(a)).transpose()?;
    let v = blocking(move || {
        let now = st.clock.now_ms();
        Ok(st.pipeline.query().rfm_members(group, after, limit, now))
    })
    .await?;
    if !csv {
        return Ok(Json(v).into_response());
    }
    let mut out = String::from("profile,r,f,m,group,last_order,orders,monetary\n");
    for m in v["members"].as_array().into_iter().flatten() {
        let s = &m["scores"];
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            m["profile"].as_str().unwrap_or(""),
            s["r"],
            s["f"],
            s["m"],
            m["group"].as_str().unwrap_or(""),
            m["last_order"].as_str().unwrap_or(""),
            m["orders"],
            m["monetary"],
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
}

/// `GET /v1/profiles/{id}/rfm`: one profile's scores and group against the base now.
async fn of_profile(
    State(st): State<Arc<AppState>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let now = st.clock.now_ms();
    profile_view(st, &h, &id, move |q, id| q.profile_rfm(id, now)).await
}
