//! Admin API over customer analytics: the RFM table, customers by RFM group, one
//! profile's scores; attribution of conversions to channels and campaigns; lifetime
//! value (BG/NBD and Gamma-Gamma) of the customer base and of one profile.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use niyet_analytics::attribution::{attribute, markov, Model, Normalisation};
use niyet_analytics::channel::Channel;
use niyet_analytics::clv::{BgNbd, Distribution, FitError, GammaGamma, History};
use niyet_analytics::funnel::{conversion_over_time, funnel, retention, Period, Step};
use niyet_analytics::recommend::Links;
use niyet_analytics::rfm::Group;
use niyet_identity::ProfileId;
use niyet_model::{format_rfc3339_millis, parse_timestamp};
use niyet_pipeline::{JourneyQuery, JourneyTable};
use serde_json::json;
use serde_json::Value;

use crate::admin::blocking;
use crate::profiles::{
    bad, csv_response, export_of, limit_of, not_found, one_of, parse_id, pipeline_error,
    profile_view,
};
use crate::{ApiError, AppState};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/rfm", get(table))
        .route("/v1/rfm/members", get(members))
        .route("/v1/profiles/{id}/rfm", get(of_profile))
        .route("/v1/attribution", get(attribution))
        .route("/v1/clv", get(clv))
        .route("/v1/clv/model", get(clv_model).post(publish_clv))
        .route("/v1/funnel", get(funnel_report))
        .route("/v1/retention", get(retention_report))
        .route("/v1/conversion-rate", get(conversion_rate))
        .route(
            "/v1/recommendations/items/{item}",
            get(item_recommendations),
        )
        .route(
            "/v1/profiles/{id}/recommendations",
            get(profile_recommendations),
        )
        .route("/v1/profiles/{id}/clv", get(profile_clv))
}

/// A numeric query parameter within `range`, else `default`.
pub(crate) fn num(
    q: &BTreeMap<String, String>,
    key: &str,
    default: f64,
    range: std::ops::RangeInclusive<f64>,
) -> Result<f64, ApiError> {
    let Some(raw) = q.get(key) else {
        return Ok(default);
    };
    match raw.parse::<f64>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(bad(
            "invalid_parameter",
            format!(
                "{key}: expected a number from {} to {}, not '{raw}'",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// The conversion event: `conversion=` or the configured one.
fn conversion_of(st: &AppState, q: &BTreeMap<String, String>) -> String {
    q.get("conversion")
        .cloned()
        .unwrap_or_else(|| st.analytics.conversion_event.clone())
}

/// The attribution models, by the names the API uses.
fn models(half_life_hours: f64, direct: u32) -> Vec<(&'static str, Model)> {
    vec![
        ("first_touch", Model::FirstTouch),
        ("last_touch", Model::LastTouch),
        ("last_non_direct", Model::LastNonDirect { direct }),
        ("linear", Model::Linear),
        ("time_decay", Model::TimeDecay { half_life_hours }),
        ("position_based", Model::PositionBased),
        ("markov", Model::Markov(Normalisation::Global)),
        (
            "markov_per_journey",
            Model::Markov(Normalisation::PerJourney),
        ),
        ("shapley", Model::Shapley),
    ]
}

/// `GET /v1/attribution?model=&by=channel|campaign&lookback_days=&session_gap_minutes=
/// &half_life_hours=&conversion=&since=&format=csv`: conversions and revenue credited to
/// each channel (or campaign) by every model, or by the one named.
async fn attribution(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let a = &st.analytics;
    let lookback_days = num(
        &q,
        "lookback_days",
        f64::from(a.lookback_days),
        0.0..=3650.0,
    )?;
    let gap = num(
        &q,
        "session_gap_minutes",
        f64::from(a.session_gap_minutes),
        1.0..=10_080.0,
    )?;
    let half_life = num(
        &q,
        "half_life_hours",
        a.time_decay_half_life_hours,
        0.01..=87_600.0,
    )?;
    let by_campaign = one_of(&q, "by", &["channel", "campaign"])? == Some("campaign");
    let all = models(half_life, 0);
    let only = match q.get("model") {
        None => None,
        Some(m) if all.iter().any(|(n, _)| n == m) => Some(m.clone()),
        Some(m) => {
            let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
            return Err(bad(
                "invalid_parameter",
                format!("model: no model named '{m}'; models: {}", names.join(", ")),
            ));
        }
    };
    let since_ms = match q.get("since") {
        None => i64::MIN,
        Some(t) => {
            parse_timestamp(t).map_err(|e| bad("invalid_parameter", format!("since: {e}")))?
        }
    };
    let (csv, _) = export_of(&q, usize::MAX)?;
    let query = JourneyQuery {
        conversion: conversion_of(&st, &q),
        lookback_ms: (lookback_days * 86_400_000.0) as i64,
        session_gap_ms: (gap * 60_000.0) as i64,
        rules: a.channel_rules.clone(),
        by_campaign,
        since_ms,
    };
    let v = blocking(move || {
        let t = st.pipeline.journeys(&query).map_err(pipeline_error)?;
        let spend = st
            .spend
            .totals(query.by_campaign, query.since_ms, st.clock.now_ms());
        let mut v = attribution_report(&t, &query, lookback_days, gap, half_life, only.as_deref());
        add_spend(&mut v, &spend);
        Ok(v)
    })
    .await?;
    if !csv {
        return Ok(Json(v).into_response());
    }
    let dim = if by_campaign { "campaign" } else { "channel" };
    let mut out = format!("model,{dim},conversions,revenue,share,spend,roi,cpa\n");
    for (model, rows) in v["models"].as_object().into_iter().flatten() {
        for r in rows.as_array().into_iter().flatten() {
            let opt = |k: &str| {
                if r[k].is_null() {
                    String::new()
                } else {
                    r[k].to_string()
                }
            };
            out.push_str(&format!(
                "{model},{},{},{},{},{},{},{}\n",
                csv_field(r[dim].as_str().unwrap_or("")),
                r["conversions"],
                r["revenue"],
                r["share"],
                opt("spend"),
                opt("roi"),
                opt("cpa"),
            ));
        }
    }
    Ok(csv_response(out))
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn attribution_report(
    t: &JourneyTable,
    q: &JourneyQuery,
    lookback_days: f64,
    gap: f64,
    half_life: f64,
    only: Option<&str>,
) -> Value {
    let n = t.names.len();
    let dim = if q.by_campaign { "campaign" } else { "channel" };
    let direct = if q.by_campaign {
        0
    } else {
        Channel::Direct.index() as u32
    };
    let mut touched = vec![false; n];
    for j in &t.journeys {
        for x in &j.touches {
            touched[x.channel as usize] = true;
        }
    }
    let converted: Vec<_> = t.journeys.iter().filter(|j| j.converted).collect();
    let conversions = converted.len();
    let revenue: f64 = converted.iter().map(|j| j.value).sum();
    let mut out = serde_json::Map::new();
    for (name, model) in models(half_life, direct) {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let credit = attribute(&t.journeys, n, model);
        let mut rows: Vec<(usize, f64, f64)> = credit
            .iter()
            .enumerate()
            .filter(|(i, c)| touched[*i] || c.conversions > 0.0)
            .map(|(i, c)| (i, c.conversions, c.value))
            .collect();
        rows.sort_by(|a, b| {
            b.2.total_cmp(&a.2)
                .then(b.1.total_cmp(&a.1))
                .then(a.0.cmp(&b.0))
        });
        let list: Vec<Value> = rows
            .into_iter()
            .map(|(i, c, v)| {
                json!({dim: t.names[i], "conversions": round6(c), "revenue": round6(v),
                       "share": if revenue > 0.0 { round6(v / revenue) } else { 0.0 }})
            })
            .collect();
        out.insert(name.to_string(), Value::Array(list));
    }
    let m = markov(&t.journeys, n);
    let removal: serde_json::Map<String, Value> = m
        .removal_effects
        .iter()
        .enumerate()
        .filter(|(i, _)| touched[*i])
        .map(|(i, re)| (t.names[i].clone(), json!(round6(*re))))
        .collect();
    json!({
        "by": dim,
        "conversion": q.conversion,
        "lookback_days": lookback_days,
        "session_gap_minutes": gap,
        "half_life_hours": half_life,
        "profiles": t.profiles,
        "events_read": t.events_read,
        "touchpoints": t.touchpoints,
        "journeys": t.journeys.len(),
        "conversions": conversions,
        "conversions_without_touchpoints": converted.iter().filter(|j| j.touches.is_empty()).count(),
        "revenue": round6(revenue),
        "markov": {"conversion_probability": round6(m.conversion_probability), "removal_effects": removal},
        "models": out,
    })
}

/// Adds cost, return on investment ((revenue − cost) / cost) and cost per acquisition to
/// every row with spend.
fn add_spend(v: &mut Value, spend: &BTreeMap<String, f64>) {
    if spend.is_empty() {
        return;
    }
    let dim = if v["by"] == "campaign" {
        "campaign"
    } else {
        "channel"
    };
    if let Some(models) = v["models"].as_object_mut() {
        for rows in models.values_mut() {
            for r in rows.as_array_mut().into_iter().flatten() {
                let Some(cost) = r[dim].as_str().and_then(|k| spend.get(k)).copied() else {
                    continue;
                };
                let revenue = r["revenue"].as_f64().unwrap_or(0.0);
                let conv = r["conversions"].as_f64().unwrap_or(0.0);
                r["spend"] = json!(round6(cost));
                r["roi"] = if cost > 0.0 {
                    json!(round6((revenue - cost) / cost))
                } else {
                    Value::Null
                };
                r["cpa"] = if conv > 0.0 {
                    json!(round6(cost / conv))
                } else {
                    Value::Null
                };
            }
        }
    }
    v["spend"] = json!(spend);
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Fewer customers than this leave the lifetime-value models unfitted.
const MIN_CUSTOMERS: usize = 10;

/// Fitted lifetime-value models over the customer base.
struct ClvModels {
    histories: Vec<(ProfileId, History, f64)>,
    bgnbd: BgNbd,
    gamma_gamma: Result<GammaGamma, FitError>,
}

fn fit_clv(histories: Vec<(ProfileId, History, f64)>) -> Result<ClvModels, ApiError> {
    let h: Vec<History> = histories.iter().map(|c| c.1).collect();
    let repeat = h.iter().filter(|h| h.frequency > 0).count();
    if h.len() < MIN_CUSTOMERS || repeat == 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_enough_data",
            format!(
                "lifetime value needs at least {MIN_CUSTOMERS} customers, some with repeat orders (there are {} customers, {repeat} with repeat orders)",
                h.len()
            ),
        ));
    }
    let bgnbd = BgNbd::fit(&h).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_enough_data",
            format!(
                "the BG/NBD model cannot be fitted on {} customers: {e}",
                h.len()
            ),
        )
    })?;
    let rows: Vec<(u32, f64)> = histories.iter().map(|c| (c.1.frequency, c.2)).collect();
    let gamma_gamma = GammaGamma::fit(&rows);
    Ok(ClvModels {
        histories,
        bgnbd,
        gamma_gamma,
    })
}

impl ClvModels {
    /// (P(alive), expected purchases, expected order value, predicted value) of one
    /// customer over `horizon` days; the value parts are None without a usable spend
    /// model (q ≤ 1 has no finite mean).
    fn predict(
        &self,
        h: &History,
        mean: f64,
        horizon: f64,
    ) -> (f64, f64, Option<f64>, Option<f64>) {
        let alive = self.bgnbd.p_alive(h);
        let purchases = self.bgnbd.expected_purchases(h, horizon);
        let value = match &self.gamma_gamma {
            Ok(g) if g.q > 1.0 => Some(g.expected_value(h.frequency, mean)),
            _ => None,
        };
        (alive, purchases, value, value.map(|v| v * purchases))
    }

    fn models_json(&self) -> Value {
        json!({
            "bgnbd": self.bgnbd,
            "gamma_gamma": match &self.gamma_gamma {
                Ok(g) => json!(g),
                Err(e) => json!({"error": e.to_string()}),
            },
            "time_unit": "day",
        })
    }
}

/// Fits the lifetime-value models on every customer now and publishes them for rules
/// (`clv > 500`, `p_alive < 0.3`); returns what was published.
pub(crate) fn publish_clv_model(st: &AppState, horizon: f64) -> Result<Value, ApiError> {
    let now = st.clock.now_ms();
    let m = fit_clv(st.pipeline.purchase_histories(now))?;
    let model = niyet_engine::segments::ClvModel {
        version: st.pipeline.clv_model().map_or(1, |m| m.version + 1),
        horizon_days: horizon,
        bgnbd: m.bgnbd,
        gamma_gamma: m.gamma_gamma.ok(),
    };
    st.pipeline
        .publish_clv(&model, now, std::time::Duration::from_secs(300))
        .map_err(crate::profiles::pipeline_error)?;
    Ok(json!({
        "published_at": format_rfc3339_millis(now),
        "customers": m.histories.len(),
        "model": model,
    }))
}

/// `horizon_days` of a lifetime-value request (default `analytics.clv_horizon_days`).
fn clv_horizon(st: &AppState, q: &BTreeMap<String, String>) -> Result<f64, ApiError> {
    num(
        q,
        "horizon_days",
        f64::from(st.analytics.clv_horizon_days),
        1.0..=3650.0,
    )
}

/// `POST /v1/clv/model?horizon_days=365`: fit and publish the model rules read.
async fn publish_clv(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let horizon = clv_horizon(&st, &q)?;
    blocking(move || publish_clv_model(&st, horizon).map(Json)).await
}

/// `GET /v1/clv/model`: the model rules read now (404 before the first publication).
async fn clv_model(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    st.pipeline
        .clv_model()
        .map(|m| Json(json!(*m)))
        .ok_or_else(|| {
            crate::profiles::not_found("lifetime-value model (POST /v1/clv/model publishes one)")
        })
}

/// Refits and publishes the model rules read on the `clv_refit_hours` schedule, the first
/// time a minute after start, while something reads it (a segment rule with `clv` or
/// `p_alive`, or a trigger with an offer); otherwise the round is skipped (the fit reads
/// every profile and takes a core for a while) and `POST /v1/clv/model` still publishes
/// one on request.
pub(crate) async fn refit_loop(state: Arc<AppState>) {
    let hours = state.analytics.clv_refit_hours;
    let first = std::time::Duration::from_secs(60);
    crate::intent::on_schedule(hours, first, move || {
        let offers = state.triggers.iter().any(|t| t.offer);
        if !offers && !state.pipeline.segments_read_lifetime_value() {
            return Err(ApiError::new(
                StatusCode::OK,
                "not_needed",
                "nothing reads the lifetime-value model (no clv or p_alive rule, no offer)",
            ));
        }
        let horizon = f64::from(state.analytics.clv_horizon_days);
        publish_clv_model(&state, horizon)
            .map(|v| format!("lifetime-value model {} published", v["model"]["version"]))
    })
    .await
}

/// `GET /v1/clv?horizon_days=365`: the fitted models and the distribution of P(alive),
/// expected purchases and predicted value over the horizon, and of historical value.
async fn clv(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let horizon = clv_horizon(&st, &q)?;
    blocking(move || {
        let now = st.clock.now_ms();
        let m = fit_clv(st.pipeline.purchase_histories(now))?;
        let (mut alive, mut purchases, mut value, mut historical) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (_, h, mean) in &m.histories {
            let (a, p, _, v) = m.predict(h, *mean, horizon);
            alive.push(a);
            purchases.push(p);
            if let Some(v) = v {
                value.push(v);
            }
            historical.push(mean * f64::from(h.frequency + 1));
        }
        let total: f64 = value.iter().sum();
        Ok(Json(json!({
            "at": format_rfc3339_millis(now),
            "customers": m.histories.len(),
            "repeat_customers": m.histories.iter().filter(|c| c.1.frequency > 0).count(),
            "horizon_days": horizon,
            "models": m.models_json(),
            "p_alive": Distribution::of(alive),
            "expected_purchases": Distribution::of(purchases),
            "predicted_value": Distribution::of(value),
            "predicted_value_total": round6(total),
            "historical_value": Distribution::of(historical),
        })))
    })
    .await
}

/// `GET /v1/profiles/{id}/clv?horizon_days=365`: one customer's history and predictions
/// under the models fitted on the whole base.
async fn profile_clv(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let horizon = clv_horizon(&st, &q)?;
    blocking(move || {
        let now = st.clock.now_ms();
        let id = st
            .pipeline
            .query()
            .canonical(id)
            .ok_or_else(|| not_found(id))?;
        let m = fit_clv(st.pipeline.purchase_histories(now))?;
        let Some((_, hist, mean)) = m.histories.iter().find(|c| c.0 == id).copied() else {
            return Ok(Json(json!({
                "profile": id.to_string(), "customer": false, "horizon_days": horizon,
                "p_alive": null, "expected_purchases": null, "predicted_value": null,
                "models": m.models_json(),
            })));
        };
        let (alive, purchases, value, predicted) = m.predict(&hist, mean, horizon);
        Ok(Json(json!({
            "profile": id.to_string(),
            "customer": true,
            "horizon_days": horizon,
            "history": {"repeat_purchases": hist.frequency, "recency_days": hist.recency,
                        "age_days": hist.age, "mean_order_value": mean,
                        "historical_value": mean * f64::from(hist.frequency + 1)},
            "p_alive": alive,
            "expected_purchases": purchases,
            "expected_order_value": value,
            "predicted_value": predicted,
            "models": m.models_json(),
        })))
    })
    .await
}

/// `GET /v1/rfm`: the customer base, where each fifth begins on recency, frequency and
/// monetary value, and the size of every score and named group.
async fn table(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
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
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
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
    Ok(csv_response(out))
}

/// `GET /v1/profiles/{id}/rfm`: one profile's scores and group against the base now.
async fn of_profile(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let now = st.clock.now_ms();
    profile_view(st, &id, move |q, id| q.profile_rfm(id, now)).await
}

fn period_of(q: &BTreeMap<String, String>, default: Period) -> Result<Period, ApiError> {
    Ok(match one_of(q, "period", &["day", "week", "month"])? {
        None => default,
        Some("day") => Period::Day,
        Some("week") => Period::Week,
        _ => Period::Month,
    })
}

fn steps_json(names: &[String], steps: &[Step]) -> Vec<Value> {
    names
        .iter()
        .zip(steps)
        .map(|(n, s)| {
            let mut v = json!(s);
            v["step"] = json!(n);
            v
        })
        .collect()
}

/// `GET /v1/funnel?steps=Product Viewed,Product Added,Order Completed&window_hours=24
/// &breakdown=channel|trait.NAME`: profiles reaching each step in order within the
/// window, the drop-off and the median time between steps; by the channel of the
/// profile's first event, or by a trait's value (the 50 largest groups), when asked.
async fn funnel_report(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let steps: Vec<String> = q
        .get("steps")
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !(2..=20).contains(&steps.len()) {
        return Err(bad(
            "invalid_parameter",
            "steps: give 2 to 20 event names separated by commas, e.g. steps=Product Viewed,Order Completed",
        ));
    }
    let window_h = num(&q, "window_hours", 24.0, 0.01..=8760.0)?;
    // None, Some(None): by channel, Some(Some(key)): by trait.
    let breakdown: Option<Option<String>> = match q.get("breakdown").map(String::as_str) {
        None => None,
        Some("channel") => Some(None),
        Some(t) if t.starts_with("trait.") && t.len() > 6 => Some(Some(t[6..].to_string())),
        Some(o) => {
            return Err(bad(
                "invalid_parameter",
                format!("breakdown: expected channel or trait.NAME, not '{o}'"),
            ))
        }
    };
    let rules = st.analytics.channel_rules.clone();
    blocking(move || {
        let tls = st
            .pipeline
            .funnel_timelines(&steps, &rules)
            .map_err(pipeline_error)?;
        let window = (window_h * 3_600_000.0) as i64;
        let all = funnel(tls.iter().map(|t| &t.2[..]), steps.len(), window);
        let mut v = json!({
            "steps": steps,
            "window_hours": window_h,
            "profiles": tls.len(),
            "funnel": steps_json(&steps, &all),
        });
        match breakdown {
            None => {}
            Some(None) => {
                let mut per = serde_json::Map::new();
                for c in Channel::ALL {
                    let of: Vec<&[(i64, usize)]> =
                        tls.iter().filter(|t| t.1 == c).map(|t| &t.2[..]).collect();
                    let f = funnel(of, steps.len(), window);
                    if f[0].profiles > 0 {
                        per.insert(c.name().to_string(), json!(steps_json(&steps, &f)));
                    }
                }
                v["breakdown"] = json!({"by": "channel", "groups": per});
            }
            Some(Some(key)) => {
                let values = st.pipeline.trait_values(&key);
                let mut groups: BTreeMap<&str, Vec<&niyet_pipeline::Timeline>> = BTreeMap::new();
                for t in &tls {
                    let g = values.get(&t.0).map_or("(none)", String::as_str);
                    groups.entry(g).or_default().push(&t.2);
                }
                // The 50 largest groups.
                let mut list: Vec<_> = groups.into_iter().collect();
                list.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
                list.truncate(50);
                let mut per = serde_json::Map::new();
                for (g, of) in list {
                    let f = funnel(of.iter().map(|t| &t[..]), steps.len(), window);
                    if f[0].profiles > 0 {
                        per.insert(g.to_string(), json!(steps_json(&steps, &f)));
                    }
                }
                v["breakdown"] = json!({"by": format!("trait.{key}"), "groups": per});
            }
        }
        Ok(Json(v))
    })
    .await
}

/// `GET /v1/retention?cohort=first_seen|first_purchase&activity=any|purchase
/// &period=week|month`: cohorts by the period of their first event (or first purchase)
/// and how many of each were active in each later period.
async fn retention_report(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let period = period_of(&q, Period::Week)?;
    let by_purchase =
        one_of(&q, "cohort", &["first_seen", "first_purchase"])? == Some("first_purchase");
    let purchases_only = one_of(&q, "activity", &["any", "purchase"])? == Some("purchase");
    let conversion = conversion_of(&st, &q);
    blocking(move || {
        let now = st.clock.now_ms();
        let acts = st.pipeline.activity(&conversion).map_err(pipeline_error)?;
        let rows = retention(
            acts.iter().filter_map(|a| {
                let start = if by_purchase {
                    *a.conversions.first()?
                } else {
                    *a.events.first()?
                };
                let active = if purchases_only { &a.conversions } else { &a.events };
                Some((start, &active[..]))
            }),
            period,
            now,
        );
        let cohorts: Vec<Value> = rows
            .iter()
            .map(|c| {
                json!({
                    "cohort": format_rfc3339_millis(c.start_ms),
                    "size": c.size,
                    "retained": c.retained,
                    "rates": c.retained.iter().map(|r| round6(*r as f64 / c.size.max(1) as f64)).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(Json(json!({
            "period": period,
            "cohort": if by_purchase { "first_purchase" } else { "first_seen" },
            "activity": if purchases_only { "purchase" } else { "any" },
            "cohorts": cohorts,
        })))
    })
    .await
}

/// `GET /v1/conversion-rate?period=day|week|month`: per period, the profiles active and
/// the share of them that converted.
async fn conversion_rate(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let period = period_of(&q, Period::Day)?;
    let conversion = conversion_of(&st, &q);
    blocking(move || {
        let acts = st.pipeline.activity(&conversion).map_err(pipeline_error)?;
        let rates = conversion_over_time(
            acts.iter().map(|a| (&a.events[..], &a.conversions[..])),
            period,
        );
        let list: Vec<Value> = rates
            .iter()
            .map(|r| {
                json!({"start": format_rfc3339_millis(r.start_ms), "active": r.active,
                       "converted": r.converted, "rate": round6(r.rate)})
            })
            .collect();
        Ok(Json(
            json!({"period": period, "conversion": conversion, "periods": list}),
        ))
    })
    .await
}

/// Views count towards "viewed then bought" for a week.
const VIEW_WINDOW_MS: i64 = 7 * 86_400_000;

/// Every profile's item history and the item links learnt from it.
fn item_links(st: &AppState) -> Result<(niyet_pipeline::ItemHistory, Links), ApiError> {
    let hist = st
        .pipeline
        .item_history(&st.analytics.conversion_event)
        .map_err(pipeline_error)?;
    let links = Links::learn(hist.profiles.iter().map(|p| &p.1[..]), VIEW_WINDOW_MS);
    Ok((hist, links))
}

/// `GET /v1/recommendations/items/{item}?limit=10`: items bought together with this one
/// and items bought after viewing it, each with its count and confidence.
async fn item_recommendations(
    State(st): State<Arc<AppState>>,
    Path(item): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(&q, 10)?;
    blocking(move || {
        let (hist, links) = item_links(&st)?;
        let take = |l: &[niyet_analytics::recommend::Linked]| -> Vec<Value> {
            l.iter().take(limit).map(|x| json!(x)).collect()
        };
        Ok(Json(json!({
            "item": item,
            "stock": hist.stock.get(&item),
            "bought_together": take(links.bought_together(&item)),
            "viewed_then_bought": take(links.viewed_then_bought(&item)),
        })))
    })
    .await
}

/// `GET /v1/profiles/{id}/recommendations?limit=10`: items for this profile from what it
/// viewed and bought, without what it bought and without items out of stock.
async fn profile_recommendations(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let limit = limit_of(&q, 10)?;
    blocking(move || {
        let id = st.pipeline.query().canonical(id).ok_or_else(|| not_found(id))?;
        let (hist, links) = item_links(&st)?;
        let mine = hist
            .profiles
            .iter()
            .find(|p| p.0 == id)
            .map(|p| &p.1[..])
            .unwrap_or(&[]);
        let in_stock = |i: &str| hist.stock.get(i).is_none_or(|s| *s > 0.0);
        let list: Vec<Value> = links
            .for_profile(mine, in_stock, limit)
            .into_iter()
            .map(|(item, score)| json!({"item": item, "score": round6(score), "stock": hist.stock.get(&item)}))
            .collect();
        Ok(Json(json!({"profile": id.to_string(), "items": list})))
    })
    .await
}
