//! Triggers and their actions over the admin API: the action documents destinations
//! receive, recent outcomes, destinations with their queues and dead letters, and the
//! conversion uplift of each trigger against its control group.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use niyet_actions::{Action, Outcome};
use niyet_identity::ProfileId;
use niyet_log::Log;
use niyet_pipeline::Pipeline;
use serde_json::{json, Value};

use crate::admin::blocking;
use crate::profiles::limit_of;
use crate::{ApiError, AppState};

/// Builds the document an action is sent with: the trigger, the profile as it is now
/// (traits as plain values), the record that started it and its event time. The profile
/// and the record come as JSON text (see [`niyet_delivery::Document`]).
pub fn composer(
    pipeline: Arc<OnceLock<Arc<Pipeline>>>,
    log: Arc<Log>,
    offers: Offers,
) -> niyet_delivery::Compose {
    Arc::new(move |a: &Action| {
        let mut doc = niyet_delivery::Document::default();
        let head = &mut doc.head;
        head.insert("id".into(), json!(a.key));
        head.insert("trigger".into(), json!(a.trigger));
        head.insert("destination".into(), json!(a.destination));
        head.insert(
            "acted_at".into(),
            json!(niyet_model::format_rfc3339_millis(a.at_ms)),
        );
        head.insert("profile".into(), json!({"id": a.profile}));
        if let Some(p) = pipeline.get() {
            let id: Option<ProfileId> = a.profile.parse().ok();
            let q = p.query();
            match id
                .and_then(|id| q.canonical(id))
                .and_then(|id| q.profile_plain_json(id))
            {
                Some(v) => {
                    head.insert(
                        "consent".into(),
                        crate::privacy::consent_states(v.consent.as_object(), &offers.privacy),
                    );
                    head.remove("profile");
                    doc.profile = Some(v.json);
                }
                // Not there although the pipeline is past the action's start: erased
                // (or never was). Not there yet (replay after a restart): wait for it.
                None => {
                    let past = if a.origin & niyet_pipeline::TIME_ORIGIN == 0 {
                        p.processed_offset() > a.origin
                    } else {
                        p.time_reached() >= a.at_ms
                    };
                    let flag = if past {
                        "profile_missing"
                    } else {
                        "profile_pending"
                    };
                    head.insert(flag.into(), json!(true));
                }
            }
        }
        if offers.triggers.contains(&a.trigger) {
            if let Some(p) = pipeline.get() {
                let profile = match &doc.profile {
                    Some(t) => serde_json::from_slice(t).unwrap_or(Value::Null),
                    None => doc.head["profile"].clone(),
                };
                let o = offer(p, &offers, a, &profile);
                doc.head.insert("offer".into(), o);
            }
        }
        if a.origin & niyet_pipeline::TIME_ORIGIN == 0 {
            // The stored record goes in as it is; reading its timestamp checks it is JSON.
            #[derive(serde::Deserialize)]
            struct Stamp<'a> {
                #[serde(borrow, default)]
                timestamp: Option<std::borrow::Cow<'a, str>>,
            }
            let mut found = None;
            let _ = log.scan(a.origin, 1, |r| {
                if r.offset == a.origin {
                    if let Ok(s) = serde_json::from_slice::<Stamp<'_>>(r.payload) {
                        let t = s
                            .timestamp
                            .and_then(|t| niyet_model::parse_timestamp(&t).ok())
                            .unwrap_or(r.time_ms);
                        found = Some((t, r.payload.to_vec()));
                    }
                }
            });
            if let Some((t, payload)) = found {
                doc.head.insert("event_time_ms".into(), json!(t));
                doc.event = Some(payload);
            }
        }
        doc
    })
}

/// What offers need besides the profile.
#[derive(Clone)]
pub struct Offers {
    /// Triggers with `offer = true`.
    pub triggers: Vec<String>,
    /// Consent policies.
    pub privacy: crate::config::PrivacySection,
    pub policy: niyet_actions::offer::Policy,
    pub catalogue: Arc<crate::catalogue::Catalogue>,
    pub order_event: String,
    pub cart_event: String,
}

/// The cart offer for the profile of `a`: the cart is what was added since the last
/// order (of its latest 500 events), the history its orders and how many used a coupon.
fn offer(p: &Pipeline, o: &Offers, a: &Action, profile: &Value) -> Value {
    let q = p.query();
    let Some(id) = a
        .profile
        .parse::<ProfileId>()
        .ok()
        .and_then(|id| q.canonical(id))
    else {
        return Value::Null;
    };
    let events = q.events(id, None, 500).unwrap_or(Value::Null);
    let mut cart: Vec<(niyet_actions::offer::Product, u32)> = Vec::new();
    let (mut seen_orders, mut coupons, mut in_cart) = (0u32, 0u32, true);
    for e in events["entries"].as_array().into_iter().flatten() {
        let ev = &e["event"];
        let name = ev["event"].as_str().unwrap_or_default();
        let props = &ev["properties"];
        if name == o.order_event {
            in_cart = false;
            seen_orders += 1;
            if props["coupon"]
                .as_str()
                .is_some_and(|c| !c.trim().is_empty())
            {
                coupons += 1;
            }
        } else if in_cart && name == o.cart_event {
            let Some(sku) = props["sku"]
                .as_str()
                .map(str::to_string)
                .or_else(|| props["product_id"].as_str().map(str::to_string))
            else {
                continue;
            };
            if cart.iter().any(|(x, _)| x.sku == sku) {
                continue;
            }
            let qty = props["quantity"].as_u64().unwrap_or(1).clamp(1, 1_000) as u32;
            let product = o
                .catalogue
                .get(&sku)
                .unwrap_or(niyet_actions::offer::Product {
                    sku,
                    price: props["price"].as_f64().unwrap_or(0.0),
                    category: props["category"].as_str().map(str::to_string),
                    stock: None,
                });
            cart.push((product, qty));
        }
    }
    let purchases = &profile["purchases"];
    let history = niyet_actions::offer::History {
        orders: purchases["orders"]
            .as_u64()
            .map_or(seen_orders, |n| n as u32),
        coupon_orders: coupons,
        average_basket: purchases["average_basket"].as_f64().unwrap_or(0.0),
        // Predicted by the published lifetime-value model, as of the action's instant.
        lifetime_value: q.lifetime_value(id, a.at_ms),
    };
    let mut alternatives = Vec::new();
    for (x, _) in cart.iter().filter(|(x, _)| x.stock == Some(0)) {
        if let Some(c) = &x.category {
            alternatives.extend(o.catalogue.in_stock(c));
        }
    }
    let d = niyet_actions::offer::decide(&cart, &alternatives, &history, &o.policy, &a.key);
    let mut v = serde_json::to_value(&d.offer).unwrap_or(Value::Null);
    v["reasons"] = json!(d.reasons);
    v["cart"] = json!(cart
        .iter()
        .map(|(x, q)| json!({"sku": x.sku, "quantity": q}))
        .collect::<Vec<_>>());
    v
}

fn delivery(st: &AppState) -> Result<&niyet_delivery::Delivery, ApiError> {
    st.delivery.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_destinations",
            "no destinations are configured ([[destinations]] in niyet.toml)",
        )
    })
}

fn delivery_error(e: niyet_delivery::DeliveryError) -> ApiError {
    match e {
        niyet_delivery::DeliveryError::UnknownDestination(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "destination_not_found",
            e.to_string(),
        ),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "delivery", e.to_string()),
    }
}

async fn list_actions(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(&q, 100)?;
    let d = delivery(&st)?;
    Ok(Json(
        json!({"actions": d.recent(q.get("profile").map(String::as_str), limit)}),
    ))
}

/// `GET /v1/stream/scores?score=…`: score crossings as they happen, as server-sent events
/// (`score crossed`, with profile, score, threshold, direction and time).
async fn score_stream(
    State(st): State<Arc<AppState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    let only = q.get("score").cloned();
    if let Some(n) = &only {
        if !st.scores.iter().any(|s| s.name == *n) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "score_not_found",
                format!("no score is named `{n}`"),
            ));
        }
    }
    Ok(crate::segments::live(
        st.score_crossings.subscribe(),
        move |c| {
            (only.is_none() || only.as_deref() == Some(c.score.as_str())).then_some("score crossed")
        },
    ))
}

/// What each configured trigger decided (sent, control group, capped, not in its `if`
/// segment), in configuration order: each firing once, as recorded for the trigger's first
/// destination. Empty without destinations.
pub(crate) async fn trigger_decisions(
    st: &Arc<AppState>,
) -> Result<Vec<(String, niyet_delivery::Decisions)>, ApiError> {
    let Some(d) = st.delivery.clone() else {
        return Ok(Vec::new());
    };
    let counts = blocking(move || d.decisions().map_err(delivery_error)).await?;
    Ok(st
        .triggers
        .iter()
        .map(|t| {
            let c = t
                .then
                .first()
                .and_then(|dest| counts.get(&(t.name.clone(), dest.clone())))
                .copied()
                .unwrap_or_default();
            (t.name.clone(), c)
        })
        .collect())
}

/// `GET /v1/triggers`: the definitions; each names the segments it reads that are not
/// defined now (`undefined_segments`: such a trigger does not act until they are) and,
/// with destinations configured, what it decided so far (`decisions`).
async fn triggers(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let defined = st.pipeline.query().segment_names();
    let decisions = trigger_decisions(&st).await?;
    let list: Vec<Value> = st
        .triggers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut v = json!(t);
            if let Some((_, d)) = decisions.get(i) {
                v["decisions"] = json!(d);
            }
            let when = match &t.when {
                niyet_actions::When::SegmentEntered(s) => Some(s),
                _ => None,
            };
            let missing: Vec<&String> = when
                .into_iter()
                .chain(t.if_segment.as_ref())
                .filter(|s| !defined.contains(s))
                .collect();
            v["undefined_segments"] = json!(missing);
            v
        })
        .collect();
    Ok(Json(json!({"triggers": list})))
}

async fn destinations(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(delivery(&st)?.stats()))
}

async fn dead(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = delivery(&st)?.clone();
    let letters = blocking(move || d.dead_letters(&name).map_err(delivery_error)).await?;
    Ok(Json(json!({"dead_letters": letters})))
}

async fn replay(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let d = delivery(&st)?.clone();
    let n = blocking(move || d.replay_dead(&name).map_err(delivery_error)).await?;
    Ok(Json(json!({"requeued": n})))
}

/// Conversion of treated against held-out profiles: the share whose last order came
/// after the trigger acted on them.
async fn uplift(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !st.triggers.iter().any(|t| t.name == name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "trigger_not_found",
            format!("no trigger is named `{name}`"),
        ));
    }
    let d = delivery(&st)?.clone();
    let p = st.pipeline.clone();
    let out = blocking(move || {
        let actions = d.actions().map_err(delivery_error)?;
        // One decision per profile and run: the first destination's record stands for it.
        let mut runs: HashMap<(String, u64), (Outcome, i64)> = HashMap::new();
        for a in actions.iter().filter(|a| a.trigger == name) {
            runs.entry((a.profile.clone(), a.origin))
                .or_insert((a.outcome, a.at_ms));
        }
        let q = p.query();
        let mut groups: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for ((profile, _), (outcome, at)) in &runs {
            let group = match outcome {
                Outcome::Send => "treated",
                Outcome::Holdout => "held_out",
                _ => continue,
            };
            let last_order = profile
                .parse::<ProfileId>()
                .ok()
                .and_then(|id| q.canonical(id))
                .and_then(|id| q.profile(id))
                .and_then(|v| {
                    v["purchases"]["last_order"]
                        .as_str()
                        .and_then(|t| niyet_model::parse_timestamp(t).ok())
                });
            let g = groups.entry(group).or_default();
            g.0 += 1;
            if last_order.is_some_and(|t| t > *at) {
                g.1 += 1;
            }
        }
        let rate = |g: &str| {
            groups
                .get(g)
                .filter(|(n, _)| *n > 0)
                .map(|(n, c)| *c as f64 / *n as f64)
        };
        let (t, c) = (rate("treated"), rate("held_out"));
        let group = |g: &str| {
            let (n, conv) = groups.get(g).copied().unwrap_or_default();
            json!({"profiles": n, "converted": conv, "conversion_rate": rate(g)})
        };
        Ok(json!({
            "trigger": name,
            "treated": group("treated"),
            "held_out": group("held_out"),
            "uplift": t.zip(c).map(|(t, c)| t - c),
            "relative_uplift": t.zip(c).filter(|(_, c)| *c > 0.0).map(|(t, c)| t / c - 1.0),
        }))
    })
    .await?;
    Ok(Json(out))
}

async fn profile_scores(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pid = crate::profiles::parse_id(&id)?;
    let now = st.clock.now_ms();
    st.pipeline
        .query()
        .profile_scores(pid, now)
        .map(Json)
        .ok_or_else(|| crate::profiles::not_found(&id))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/profiles/{id}/scores", get(profile_scores))
        .route("/v1/stream/scores", get(score_stream))
        .route("/v1/actions", get(list_actions))
        .route("/v1/triggers", get(triggers))
        .route("/v1/triggers/{name}/uplift", get(uplift))
        .route("/v1/destinations", get(destinations))
        .route("/v1/destinations/{name}/dead", get(dead))
        .route("/v1/destinations/{name}/dead/replay", post(replay))
}
