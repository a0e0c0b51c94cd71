//! Predictive intent over the API: a logistic regression of "ordered within N days" on
//! behaviour signals, trained on history on request and on a schedule; each score carries
//! the version of the model that gave it.
//!
//! Training looks back from the processing time: signals are computed as they stood N days
//! ago for every profile active before then, the label is whether it ordered in the N days
//! since. A quarter of the profiles (by a hash of the id) is held out to measure the AUC.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use niyet_analytics::intent::{auc, purchased, signal_names, signals, Logistic};
use niyet_model::format_rfc3339_millis;
use serde_json::{json, Value};

use crate::admin::blocking;
use crate::analytics::num;
use crate::profiles::{not_found, parse_id, pipeline_error};
use crate::{ApiError, AppState};

/// Event names that become signals (the most frequent ones).
const VOCABULARY: usize = 16;

/// A trained model and how it did.
#[derive(Debug)]
pub struct IntentModel {
    pub version: u64,
    pub trained_at_ms: i64,
    pub horizon_days: f64,
    pub vocabulary: Vec<String>,
    pub model: Logistic,
    pub examples: usize,
    pub positives: usize,
    pub held_out: usize,
    pub auc: Option<f64>,
}

impl IntentModel {
    fn json(&self, order: &str) -> Value {
        let mut signals: Vec<(String, f64)> = self
            .model
            .features
            .iter()
            .cloned()
            .zip(self.model.weights.iter().copied())
            .collect();
        signals.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        json!({
            "version": self.version,
            "trained_at": format_rfc3339_millis(self.trained_at_ms),
            "label": format!("{order} within {} days", self.horizon_days),
            "horizon_days": self.horizon_days,
            "examples": self.examples,
            "positives": self.positives,
            "held_out": self.held_out,
            "auc": self.auc,
            "intercept": self.model.intercept,
            "signals": signals.iter().map(|(s, w)| json!({"signal": s, "weight": w})).collect::<Vec<_>>(),
        })
    }
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/intent/train", post(train_now))
        .route("/v1/intent/model", get(model))
        .route("/v1/profiles/{id}/intent", get(profile_intent))
}

fn spread(id: u64) -> u64 {
    // splitmix64: a fixed, well-mixed hash for the held-out split.
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Trains a model on the history up to now and makes it the current one.
pub(crate) fn train(st: &AppState, horizon_days: f64) -> Result<Arc<IntentModel>, ApiError> {
    let now = st.clock.now_ms();
    let horizon = (horizon_days * 86_400_000.0) as i64;
    let cut = now - horizon;
    let order = &st.analytics.conversion_event;
    let (vocab, profiles) = st
        .pipeline
        .behaviour(order, VOCABULARY)
        .map_err(pipeline_error)?;
    let (mut xt, mut yt, mut xh, mut yh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, ev) in &profiles {
        let Some(x) = signals(ev, cut, vocab.len()) else {
            continue;
        };
        let y = purchased(ev, cut, horizon);
        if spread(id.0).is_multiple_of(4) {
            xh.push(x);
            yh.push(y);
        } else {
            xt.push(x);
            yt.push(y);
        }
    }
    let examples = xt.len() + xh.len();
    let positives = yt.iter().chain(&yh).filter(|y| **y).count();
    let model = Logistic::train(signal_names(&vocab), &xt, &yt, 1e-3).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_enough_data",
            format!(
                "no intent model from the history before {}: {e}",
                format_rfc3339_millis(cut)
            ),
        )
    })?;
    let scores: Vec<f64> = xh.iter().map(|x| model.score(x)).collect();
    let m = Arc::new(IntentModel {
        version: st.intent_versions.fetch_add(1, Ordering::SeqCst) + 1,
        trained_at_ms: now,
        horizon_days,
        vocabulary: vocab,
        model,
        examples,
        positives,
        held_out: xh.len(),
        auc: auc(&scores, &yh),
    });
    if let Ok(mut cur) = st.intent.lock() {
        *cur = Some(m.clone());
    }
    Ok(m)
}

fn current(st: &AppState) -> Result<Arc<IntentModel>, ApiError> {
    st.intent
        .lock()
        .ok()
        .and_then(|m| m.clone())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_model",
                "no intent model yet: POST /v1/intent/train, or wait for the scheduled training",
            )
        })
}

/// `POST /v1/intent/train?horizon_days=7`: trains now; answers with the model's report.
async fn train_now(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let horizon = num(
        &q,
        "horizon_days",
        f64::from(st.analytics.intent_horizon_days),
        1.0..=365.0,
    )?;
    blocking(move || {
        let m = train(&st, horizon)?;
        Ok(Json(m.json(&st.analytics.conversion_event)))
    })
    .await
}

/// `GET /v1/intent/model`: the current model's report.
async fn model(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let m = current(&st)?;
    Ok(Json(m.json(&st.analytics.conversion_event)))
}

/// `GET /v1/profiles/{id}/intent`: the probability that the profile orders within the
/// horizon, from its signals now, with each signal's part in the log-odds.
async fn profile_intent(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let m = current(&st)?;
    blocking(move || {
        let id = st
            .pipeline
            .query()
            .canonical(id)
            .ok_or_else(|| not_found(id))?;
        let ev = st
            .pipeline
            .behaviour_of(id, &st.analytics.conversion_event, &m.vocabulary)
            .map_err(pipeline_error)?;
        let now = st.clock.now_ms();
        let Some(x) = signals(&ev, now + 1, m.vocabulary.len()) else {
            return Ok(Json(
                json!({"profile": id.to_string(), "score": null, "model_version": m.version}),
            ));
        };
        let parts = m.model.contributions(&x);
        let mut why: Vec<Value> = m
            .model
            .features
            .iter()
            .zip(&parts)
            .zip(&x)
            .map(|((f, c), v)| json!({"signal": f, "value": v, "contribution": c}))
            .collect();
        why.sort_by(|a, b| {
            let k = |v: &Value| v["contribution"].as_f64().unwrap_or(0.0).abs();
            k(b).total_cmp(&k(a))
        });
        Ok(Json(json!({
            "profile": id.to_string(),
            "score": m.model.score(&x),
            "horizon_days": m.horizon_days,
            "model_version": m.version,
            "signals": why,
        })))
    })
    .await
}

/// Retrains on the configured schedule (never when it is 0).
pub(crate) async fn retrain_loop(state: Arc<AppState>) {
    let hours = state.analytics.intent_retrain_hours;
    let first = Duration::from_secs(u64::from(hours) * 3600);
    on_schedule(hours, first, move || {
        let horizon = f64::from(state.analytics.intent_horizon_days);
        train(&state, horizon)
            .map(|m| format!("intent model {} retrained (AUC {:?})", m.version, m.auc))
    })
    .await
}

/// Runs `job` on a blocking thread `first` after start and then every `hours` (never when
/// `hours` is 0), logging what it says or why it did nothing.
pub(crate) async fn on_schedule(
    hours: u32,
    first: Duration,
    job: impl Fn() -> Result<String, ApiError> + Send + Sync + 'static,
) {
    if hours == 0 {
        return;
    }
    let job = Arc::new(job);
    tokio::time::sleep(first).await;
    let mut tick = tokio::time::interval(Duration::from_secs(u64::from(hours) * 3600));
    loop {
        tick.tick().await;
        let j = job.clone();
        match tokio::task::spawn_blocking(move || j()).await {
            Ok(Ok(done)) => tracing::info!("{done}"),
            Ok(Err(e)) => tracing::info!(error = %e.message, "scheduled job did nothing"),
            Err(e) => tracing::warn!(error = %e, "scheduled job failed"),
        }
    }
}
