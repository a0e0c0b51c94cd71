//! Consent, export and erasure over the admin API (the `privacy` scope).
//!
//! * `GET /v1/profiles/{id}/consent` — each purpose's status (`granted`, `denied`,
//!   `unknown`), the statement's time, source and proof (the event's offset), the default
//!   policy and whether actions needing it may leave; the full history; the actions
//!   blocked for want of consent.
//! * `POST /v1/profiles/{id}/consent` with `{"email": "granted", "sms": "denied"}` —
//!   written to the log as a `Consent Updated` event of the profile (source `admin`).
//! * `GET /v1/profiles/{id}/export`, `GET /v1/privacy/export?email=…` (any identifier) —
//!   everything held about the person as one JSON document.
//! * `POST /v1/privacy/erase` with `{"email": "…"}` (any one identifier type, or
//!   `"profile": "p_12"`; `"mode": "suppress"|"delete"`) — erases the person and answers
//!   once it is complete: the profile, its identifiers, its events in the log, the
//!   snapshot, quarantined messages carrying its identifiers, its dead letters and
//!   consent blocks; the request and its completion go to the audit log by request id,
//!   without personal data.
//! * `GET /v1/privacy/suppressions` — how many identifiers are suppressed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use niyet_identity::ProfileId;
use niyet_log::NewRecord;
use serde_json::{json, Map, Value};

use crate::admin::blocking;
use crate::config::{ConsentDefault, ErasureMode, PrivacySection};
use crate::profiles::{not_found, parse_id};
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/profiles/{id}/consent", get(consent).post(set_consent))
        .route("/v1/profiles/{id}/export", get(export_profile))
        .route("/v1/privacy/export", get(export_by_identifier))
        .route("/v1/privacy/erase", post(erase))
        .route("/v1/privacy/suppressions", get(suppressions))
}

/// Each purpose's state from a profile document (`consent` as the pipeline renders it),
/// with the default policy applied.
pub fn consent_state(profile: &Value, policy: &PrivacySection) -> Value {
    consent_states(profile["consent"].as_object(), policy)
}

/// [`consent_state`] of the stated consents alone (a profile's `consent` member), read
/// where they are: every purpose with a policy or a statement, in name order.
pub fn consent_states(stated: Option<&Map<String, Value>>, policy: &PrivacySection) -> Value {
    let mut purposes: Vec<&str> = policy.purposes().collect();
    purposes.extend(
        stated
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str)),
    );
    purposes.sort_unstable();
    purposes.dedup();
    let mut out = Map::new();
    for p in purposes {
        let default = policy.policy(p);
        let s = stated.and_then(|m| m.get(p));
        let status = s.and_then(|s| s["status"].as_str()).unwrap_or("unknown");
        let allowed = match status {
            "granted" => true,
            "denied" => false,
            _ => default == ConsentDefault::OptOut,
        };
        out.insert(
            p.to_string(),
            json!({
                "status": status,
                "time": s.map(|s| s["time"].clone()),
                "source": s.map(|s| s["source"].clone()),
                "default": match default {
                    ConsentDefault::OptIn => "opt_in",
                    ConsentDefault::OptOut => "opt_out",
                },
                "allowed": allowed,
            }),
        );
    }
    Value::Object(out)
}

fn bad(code: &'static str, m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, m)
}

fn pipeline_error(e: niyet_pipeline::PipelineError) -> ApiError {
    crate::profiles::pipeline_error(e)
}

/// The consent view of a profile: state, history with proofs, blocked actions.
fn consent_view(st: &AppState, id: ProfileId) -> Option<Value> {
    let q = st.pipeline.query();
    let id = q.canonical(id)?;
    let profile = q.profile(id)?;
    let mut state = consent_state(&profile, &st.privacy);
    let history = q.consent_history(id)?;
    // The proof of each current statement: the latest event that made it.
    if let (Some(o), Some(h)) = (state.as_object_mut(), history.as_array()) {
        for (p, s) in o.iter_mut() {
            s["proof"] = h
                .iter()
                .rev()
                .find(|e| e["purpose"] == p.as_str() && e["status"] == s["status"])
                .map_or(Value::Null, |e| json!({"offset": e["offset"]}));
        }
    }
    let blocked = st
        .delivery
        .as_ref()
        .map(|d| d.blocked(&id.to_string()))
        .unwrap_or_default();
    Some(json!({
        "profile": id.to_string(),
        "purposes": state,
        "history": history,
        "blocked": blocked,
    }))
}

async fn consent(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_id(&id)?;
    blocking(move || {
        consent_view(&st, pid)
            .map(Json)
            .ok_or_else(|| not_found(pid))
    })
    .await
}

async fn set_consent(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_id(&id)?;
    let given: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        bad(
            "invalid_json",
            format!("expected {{\"<purpose>\": \"granted\"|\"denied\", …}}: {e}"),
        )
    })?;
    let mut consents = Map::new();
    for (p, v) in &given {
        let Some(s) = niyet_engine::consent::status_of(v) else {
            return Err(bad(
                "invalid_consent",
                format!("{p}: expected granted or denied (or true/false), got {v}"),
            ));
        };
        consents.insert(p.clone(), json!(s));
    }
    if consents.is_empty() {
        return Err(bad("invalid_consent", "no purpose given"));
    }
    blocking(move || {
        let q = st.pipeline.query();
        let id = q.canonical(pid).ok_or_else(|| not_found(pid))?;
        let identity = q.identity(id).ok_or_else(|| not_found(pid))?;
        let mut event = json!({
            "type": "track",
            "event": niyet_engine::consent::EVENT,
            "properties": {"consents": consents},
            "context": {},
        });
        address(&mut event, &identity).ok_or_else(|| {
            bad(
                "no_identifier",
                "the profile has no identifier an event can carry",
            )
        })?;
        let now = st.clock.now_ms();
        let ts = niyet_model::format_rfc3339_millis(now);
        event["timestamp"] = json!(ts);
        event["receivedAt"] = json!(ts);
        event["source"] = json!("admin");
        event["messageId"] = json!(format!("consent-{id}-{now}"));
        let rec = NewRecord {
            time_ms: now,
            key: 0,
            payload: serde_json::to_vec(&event).unwrap_or_default(),
        };
        let at = match st.log.append_blocking(vec![rec]) {
            Ok(v) => match v.first() {
                Some(niyet_log::Appended::At(o)) => *o,
                _ => return Err(bad("not_written", "the consent change was not written")),
            },
            Err(e) => return Err(ApiError::from_log(&e)),
        };
        st.pipeline
            .wait_processed(at + 1, Duration::from_secs(30))
            .map_err(pipeline_error)?;
        consent_view(&st, id).map(Json).ok_or_else(|| not_found(id))
    })
    .await
}

/// Puts the profile's strongest identifier on an event, as ingest would store it.
fn address(event: &mut Value, identity: &Value) -> Option<()> {
    let ids = identity["identifiers"].as_array()?;
    let find = |kind: &str| {
        ids.iter()
            .map(|i| &i["identifier"])
            .find(|i| i["type"] == kind)
            .and_then(|i| i["value"].as_str())
            .map(str::to_string)
    };
    if let Some(u) = find("user_id") {
        event["userId"] = json!(u);
    } else if let Some(a) = find("anonymous_id") {
        event["anonymousId"] = json!(a);
    } else if let Some(e) = find("email") {
        event["context"]["traits"] = json!({"email": e});
    } else if let Some(p) = find("phone") {
        event["context"]["traits"] = json!({"phone": p});
    } else if let Some(d) = find("device_id") {
        event["context"]["device"] = json!({"id": d});
    } else {
        return None;
    }
    Some(())
}

/// Everything held about one profile.
fn export_doc(st: &AppState, id: ProfileId) -> Option<Value> {
    let q = st.pipeline.query();
    let id = q.canonical(id)?;
    let now = st.clock.now_ms();
    let actions: Vec<Value> = st
        .delivery
        .as_ref()
        .map(|d| {
            d.recent(Some(&id.to_string()), 10_000)
                .into_iter()
                .filter_map(|s| serde_json::to_value(s).ok())
                .collect()
        })
        .unwrap_or_default();
    Some(json!({
        "exported_at": niyet_model::format_rfc3339_millis(now),
        "profile": q.profile(id)?,
        "identity": q.identity(id)?,
        "consent": consent_view(st, id)?,
        "segments": q.profile_segments(id),
        "scores": q.profile_scores(id, now),
        "events": q.all_events(id)?,
        "actions": actions,
    }))
}

async fn export_profile(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pid = parse_id(&id)?;
    blocking(move || export_doc(&st, pid).map(Json).ok_or_else(|| not_found(pid))).await
}

/// The one identifier (`type=value`) or profile a request names.
fn one_identifier(q: &BTreeMap<String, String>) -> Result<(String, String), ApiError> {
    let named: Vec<(&String, &String)> = q
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "mode" | "limit"))
        .collect();
    match named.as_slice() {
        [(k, v)] => Ok(((*k).clone(), (*v).clone())),
        _ => Err(bad(
            "invalid_parameter",
            "name one identifier: email=…, user_id=…, anonymous_id=…, phone=…, device_id=…, an external id type, or profile=p_…",
        )),
    }
}

fn resolve(st: &AppState, kind: &str, value: &str) -> Result<Option<ProfileId>, ApiError> {
    let q = st.pipeline.query();
    if kind == "profile" {
        return Ok(q.canonical(parse_id(value)?));
    }
    q.find(kind, value).map_err(pipeline_error)
}

async fn export_by_identifier(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (kind, value) = one_identifier(&q)?;
    blocking(move || {
        let id =
            resolve(&st, &kind, &value)?.ok_or_else(|| not_found(format!("{kind} {value}")))?;
        export_doc(&st, id).map(Json).ok_or_else(|| not_found(id))
    })
    .await
}

fn request_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    format!(
        "er_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

async fn erase(
    State(st): State<Arc<AppState>>,
    caller: Option<axum::Extension<crate::access::Caller>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let v: Map<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        bad(
            "invalid_json",
            format!(
                "expected {{\"email\": \"…\"}} (or another identifier type, or \"profile\"): {e}"
            ),
        )
    })?;
    let mut q = BTreeMap::new();
    for (k, val) in &v {
        let text = match val {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(bad(
                    "invalid_parameter",
                    format!("{k}: expected text, got {other}"),
                ))
            }
        };
        q.insert(k.clone(), text);
    }
    let mode = match q.get("mode").map(String::as_str) {
        None => st.privacy.erasure,
        Some("suppress") => ErasureMode::Suppress,
        Some("delete") => ErasureMode::Delete,
        Some(m) => {
            return Err(bad(
                "invalid_parameter",
                format!("mode: `{m}` is not suppress or delete"),
            ))
        }
    };
    let (kind, value) = one_identifier(&q)?;
    let caller = caller.map(|c| c.0.id.clone()).unwrap_or_default();
    blocking(move || erase_person(&st, &kind, &value, mode, &caller).map(Json)).await
}

/// Erases the person `kind`=`value` and everything held of them; the completion report.
fn erase_person(
    st: &AppState,
    kind: &str,
    value: &str,
    mode: ErasureMode,
    caller: &str,
) -> Result<Value, ApiError> {
    let started = Instant::now();
    let request = request_id();
    let query = st.pipeline.query();
    // The identifier named, normalised, whether or not a profile holds it: with
    // suppression on it is kept out from now on either way.
    let named = if kind == "profile" {
        None
    } else {
        Some(
            query
                .parse_identifier(kind, value)
                .map_err(pipeline_error)?,
        )
    };
    let profile = resolve(st, kind, value)?;
    let mut keys: Vec<(u128, String)> = profile
        .and_then(|p| query.identifier_keys(p))
        .unwrap_or_default();
    if let Some(i) = &named {
        keys.push((i.key(), i.value.to_string()));
    }
    if keys.is_empty() {
        return Err(not_found(format!("{kind} {value}")));
    }
    st.keys.audit(&json!({
        "time": niyet_model::format_rfc3339_millis(st.clock.now_ms()),
        "key": caller,
        "event": "erasure requested",
        "request": request,
        "identifier_type": kind,
        "mode": if mode == ErasureMode::Suppress { "suppress" } else { "delete" },
    }));
    let hashes: Vec<u128> = keys.iter().map(|(k, _)| *k).collect();
    let outcome = st
        .pipeline
        .erase(
            &hashes,
            mode == ErasureMode::Suppress,
            &request,
            st.clock.now_ms(),
            Duration::from_secs(120),
        )
        .map_err(pipeline_error)?;
    let profiles: Vec<String> = outcome["profiles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let values: Vec<String> = keys.into_iter().map(|(_, v)| v).collect();
    let quarantined = st
        .quarantine
        .erase_matching(&hashes, &values, &st.pipeline)
        .map_err(|e| ApiError::from_log(&e))?;
    let delivery = match &st.delivery {
        Some(d) => d.forget(&profiles).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "erasure_incomplete",
                format!("delivery records: {e}"),
            )
        })?,
        None => 0,
    };
    let took_ms = started.elapsed().as_millis() as u64;
    let done = json!({
        "request": request,
        "status": "complete",
        "profiles": profiles,
        "identifiers": outcome["identifiers"],
        "events_erased": outcome["events_erased"],
        "quarantine_erased": quarantined,
        "delivery_records_removed": delivery,
        "suppressed": outcome["suppressed"],
        "took_ms": took_ms,
    });
    let mut audit = done.clone();
    audit["time"] = json!(niyet_model::format_rfc3339_millis(st.clock.now_ms()));
    audit["key"] = json!(caller);
    audit["event"] = json!("erasure completed");
    st.keys.audit(&audit);
    Ok(done)
}

async fn suppressions(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"identifiers": st.pipeline.suppressed_count()}))
}
