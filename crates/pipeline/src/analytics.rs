//! Customer analytics over the live state: journeys for attribution (read from the log,
//! by the profile each event belongs to now) and lifetime value (from the profiles'
//! purchase summaries). The models themselves are in `niyet-analytics`.
//!
//! **Touchpoints.** Events are grouped into visits by an inactivity gap. An event whose
//! origin says where it came from (campaign parameters, an ad click id, a referrer from
//! another site) is a touchpoint of the channel [`classify`] gives it; a visit that begins
//! without any is a touchpoint of the direct channel. Conversions are events named as the
//! configured order event; their value is the order's amount.

use std::collections::BTreeMap;

use niyet_analytics::attribution::{journeys_of, Journey};
use niyet_analytics::channel::{classify, Channel, Rule};
use niyet_analytics::clv::History;
use niyet_analytics::intent::Behaviour;
use niyet_analytics::recommend::ItemEvent;
use niyet_engine::extract::{self, Kind};
use niyet_identity::{FastMap, ProfileId};
use niyet_log::LogError;

use crate::{event_owners, Pipeline, PipelineError};

/// What to build journeys of.
#[derive(Debug, Clone)]
pub struct JourneyQuery {
    /// The conversion event (by default the order event).
    pub conversion: String,
    /// Touchpoints older than this before a conversion do not count (ms).
    pub lookback_ms: i64,
    /// Inactivity that ends a visit (ms).
    pub session_gap_ms: i64,
    /// Channel rules tried before the defaults.
    pub rules: Vec<Rule>,
    /// Journeys over campaigns (`utm_campaign`; `(none)` without one) instead of channels.
    pub by_campaign: bool,
    /// Only conversions at or after this time (ms) count.
    pub since_ms: i64,
}

/// Journeys of every profile, with the names of their touchpoints' dimension.
#[derive(Debug, Clone, Default)]
pub struct JourneyTable {
    /// Channel or campaign names; a touch's `channel` indexes this.
    pub names: Vec<String>,
    pub journeys: Vec<Journey>,
    /// Profiles with at least one event read.
    pub profiles: u64,
    /// Log records read.
    pub events_read: u64,
    /// Touchpoints found.
    pub touchpoints: u64,
}

/// The vocabulary of event names and every profile's events for intent signals.
pub type Behaviours = (Vec<String>, Vec<(ProfileId, Vec<Behaviour>)>);

/// Item views and orders per profile, and stock levels.
#[derive(Debug, Clone, Default)]
pub struct ItemHistory {
    pub profiles: Vec<(ProfileId, Vec<ItemEvent>)>,
    /// Latest stock level per item (items never updated are absent).
    pub stock: BTreeMap<String, f64>,
}

/// A profile's funnel steps: (time, step index), sorted.
pub type Timeline = Vec<(i64, usize)>;

/// What one profile did, as times (ms).
#[derive(Debug, Clone)]
pub struct Activity {
    pub profile: ProfileId,
    pub events: Vec<i64>,
    pub conversions: Vec<i64>,
}

/// The name an event goes by in rules and reports: a track's event name, `Page Viewed`
/// or `Screen Viewed`.
fn event_name<'a>(view: &'a extract::EventView<'_>) -> &'a str {
    match view.kind {
        Kind::Page => "Page Viewed",
        Kind::Screen => "Screen Viewed",
        _ => view.name.as_deref().unwrap_or(""),
    }
}

/// An event as the intent signals see it; `name_id` numbers names other than the order.
fn behaviour_of_event(
    view: &extract::EventView<'_>,
    order: &str,
    name_id: impl FnOnce(&str) -> u32,
) -> Behaviour {
    let name = event_name(view);
    let is_order = view.kind == Kind::Track && name == order;
    Behaviour {
        time_ms: view.time_ms,
        name: if is_order { u32::MAX } else { name_id(name) },
        order: is_order,
        amount: if is_order {
            view.amount().unwrap_or(0.0)
        } else {
            0.0
        },
    }
}

/// One event of a profile as attribution sees it.
struct Seen {
    time_ms: i64,
    /// Dimension index when the event is a touchpoint.
    touch: Option<u32>,
    /// Amount when the event is a conversion.
    conversion: Option<f64>,
}

impl Pipeline {
    /// Calls `each(profile, event)` for every `track`, `page` and `screen` event of every
    /// profile, in log order, by the profile holding it now; returns the records read.
    /// Partitions are read one at a time and released before the log is read.
    pub fn scan_events(
        &self,
        mut each: impl FnMut(u64, &extract::EventView<'_>),
    ) -> Result<u64, PipelineError> {
        let sh = &self.shared;
        let mut owner: Vec<(u64, u64)> = Vec::new();
        for part in &sh.partitions {
            let part = part.read().map_err(|_| PipelineError::Stopped)?;
            owner.extend(event_owners([part]));
        }
        owner.sort_unstable();
        let mut read = 0u64;
        let mut i = 0usize;
        while i < owner.len() {
            let recs = match sh.log.read(owner[i].0, 4096) {
                Ok(r) => r,
                Err(LogError::BeforeStart { start, .. }) => {
                    // Removed by retention: those events no longer count.
                    while i < owner.len() && owner[i].0 < start {
                        i += 1;
                    }
                    continue;
                }
                Err(e) => return Err(PipelineError::Invalid(format!("reading the log: {e}"))),
            };
            if recs.is_empty() {
                break;
            }
            for r in &recs {
                while i < owner.len() && owner[i].0 < r.offset {
                    i += 1;
                }
                if i >= owner.len() || owner[i].0 != r.offset {
                    continue;
                }
                let pid = owner[i].1;
                i += 1;
                read += 1;
                let Ok(view) = extract::parse(&r.payload) else {
                    continue;
                };
                if matches!(view.kind, Kind::Track | Kind::Page | Kind::Screen) {
                    each(pid, &view);
                }
            }
        }
        Ok(read)
    }

    /// Builds the journeys of every profile from the log.
    pub fn journeys(&self, q: &JourneyQuery) -> Result<JourneyTable, PipelineError> {
        let mut names: Vec<String> = if q.by_campaign {
            vec!["(none)".to_string()]
        } else {
            Channel::ALL.iter().map(|c| c.name().to_string()).collect()
        };
        let mut campaign_ids: BTreeMap<String, u32> = BTreeMap::new();
        let direct = if q.by_campaign {
            0
        } else {
            Channel::Direct.index() as u32
        };
        let mut per: FastMap<u64, Vec<Seen>> = FastMap::default();
        let read = self.scan_events(|pid, view| {
            let origin = view.origin();
            let touch = origin.is_touch().then(|| {
                if q.by_campaign {
                    match origin.campaign.clone() {
                        None => 0,
                        Some(c) => {
                            let next = names.len() as u32;
                            *campaign_ids.entry(c.clone()).or_insert_with(|| {
                                names.push(c);
                                next
                            })
                        }
                    }
                } else {
                    classify(&origin, &q.rules).index() as u32
                }
            });
            let conversion = (view.kind == Kind::Track
                && view.name.as_deref() == Some(q.conversion.as_str()))
            .then(|| view.amount().unwrap_or(0.0));
            per.entry(pid).or_default().push(Seen {
                time_ms: view.time_ms,
                touch,
                conversion,
            });
        })?;
        let mut table = JourneyTable {
            profiles: per.len() as u64,
            events_read: read,
            ..Default::default()
        };
        let mut ids: Vec<u64> = per.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(mut seen) = per.remove(&id) else {
                continue;
            };
            seen.sort_by_key(|s| s.time_ms);
            let (mut touches, mut convs) = (Vec::new(), Vec::new());
            let mut last = i64::MIN;
            for s in &seen {
                let new_visit = last == i64::MIN || s.time_ms - last > q.session_gap_ms;
                last = s.time_ms;
                match s.touch {
                    Some(t) => touches.push((s.time_ms, t)),
                    None if new_visit => touches.push((s.time_ms, direct)),
                    None => {}
                }
                if let Some(v) = s.conversion {
                    convs.push((s.time_ms, v));
                }
            }
            table.touchpoints += touches.len() as u64;
            let js = journeys_of(&touches, &convs, q.lookback_ms);
            // Conversions before `since` only bound the journeys after them.
            let mut k = 0;
            for j in js {
                let keep = if j.converted {
                    let at = convs[k].0;
                    k += 1;
                    at >= q.since_ms
                } else {
                    true
                };
                if keep {
                    table.journeys.push(j);
                }
            }
        }
        table.names = names;
        Ok(table)
    }

    /// Per-profile timelines of the funnel's steps, sorted by time: (time, step index) for
    /// every event named as a step (`Page Viewed` and `Screen Viewed` stand for page and
    /// screen calls), with the channel of the profile's first event.
    pub fn funnel_timelines(
        &self,
        steps: &[String],
        rules: &[Rule],
    ) -> Result<Vec<(u64, Channel, Timeline)>, PipelineError> {
        let mut per: FastMap<u64, (i64, Channel, Timeline)> = FastMap::default();
        self.scan_events(|pid, view| {
            let e = per
                .entry(pid)
                .or_insert((i64::MAX, Channel::Direct, Vec::new()));
            if view.time_ms < e.0 {
                e.0 = view.time_ms;
                e.1 = classify(&view.origin(), rules);
            }
            let name = event_name(view);
            for (k, s) in steps.iter().enumerate() {
                if *s == name {
                    e.2.push((view.time_ms, k));
                }
            }
        })?;
        let mut out: Vec<(u64, Channel, Timeline)> = per
            .into_iter()
            .map(|(id, (_, c, mut tl))| {
                tl.sort_unstable();
                (id, c, tl)
            })
            .collect();
        out.sort_unstable_by_key(|p| p.0);
        Ok(out)
    }

    /// Per profile: the times of its events and of its conversions (events named
    /// `conversion`), each sorted.
    pub fn activity(&self, conversion: &str) -> Result<Vec<Activity>, PipelineError> {
        let mut per: FastMap<u64, Activity> = FastMap::default();
        self.scan_events(|pid, view| {
            let a = per.entry(pid).or_insert_with(|| Activity {
                profile: ProfileId(pid),
                events: Vec::new(),
                conversions: Vec::new(),
            });
            a.events.push(view.time_ms);
            if view.kind == Kind::Track && view.name.as_deref() == Some(conversion) {
                a.conversions.push(view.time_ms);
            }
        })?;
        let mut out: Vec<Activity> = per.into_values().collect();
        for a in &mut out {
            a.events.sort_unstable();
            a.conversions.sort_unstable();
        }
        out.sort_unstable_by_key(|a| a.profile.0);
        Ok(out)
    }

    /// Every profile's events for intent signals, sorted by time, with the vocabulary:
    /// the `vocabulary` most frequent event names other than `order` (pages and screens as
    /// `Page Viewed` and `Screen Viewed`).
    pub fn behaviour(&self, order: &str, vocabulary: usize) -> Result<Behaviours, PipelineError> {
        let mut names: FastMap<String, (u32, u64)> = FastMap::default();
        let mut per: FastMap<u64, Vec<Behaviour>> = FastMap::default();
        self.scan_events(|pid, view| {
            let b = behaviour_of_event(view, order, |name| {
                let next = names.len() as u32;
                let e = names.entry(name.to_string()).or_insert((next, 0));
                e.1 += 1;
                e.0
            });
            per.entry(pid).or_default().push(b);
        })?;
        // The most frequent names, by count then name; events are renumbered to them.
        let mut ranked: Vec<(String, u32, u64)> =
            names.into_iter().map(|(n, (i, c))| (n, i, c)).collect();
        ranked.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        ranked.truncate(vocabulary);
        let mut renumber: FastMap<u32, u32> = FastMap::default();
        for (k, r) in ranked.iter().enumerate() {
            renumber.insert(r.1, k as u32);
        }
        let mut out: Vec<(ProfileId, Vec<Behaviour>)> = per
            .into_iter()
            .map(|(id, mut ev)| {
                for e in &mut ev {
                    e.name = renumber.get(&e.name).copied().unwrap_or(u32::MAX);
                }
                ev.sort_by_key(|e| e.time_ms);
                (ProfileId(id), ev)
            })
            .collect();
        out.sort_unstable_by_key(|p| p.0 .0);
        Ok((ranked.into_iter().map(|r| r.0).collect(), out))
    }

    /// One profile's events for intent signals, sorted by time, over a given vocabulary.
    pub fn behaviour_of(
        &self,
        id: ProfileId,
        order: &str,
        vocabulary: &[String],
    ) -> Result<Vec<Behaviour>, PipelineError> {
        let sh = &self.shared;
        let offsets: Vec<u64> = {
            let part = sh.partitions[sh.partition_of(id)]
                .read()
                .map_err(|_| PipelineError::Stopped)?;
            part.get(&id.0)
                .map(|p| p.events.iter().collect())
                .unwrap_or_default()
        };
        let mut out = Vec::with_capacity(offsets.len());
        for o in offsets {
            let Ok(recs) = sh.log.read(o, 1) else {
                continue;
            };
            let Some(r) = recs.first().filter(|r| r.offset == o) else {
                continue;
            };
            let Ok(view) = extract::parse(&r.payload) else {
                continue;
            };
            if !matches!(view.kind, Kind::Track | Kind::Page | Kind::Screen) {
                continue;
            }
            out.push(behaviour_of_event(&view, order, |name| {
                vocabulary
                    .iter()
                    .position(|v| v == name)
                    .map_or(u32::MAX, |i| i as u32)
            }));
        }
        out.sort_by_key(|e| e.time_ms);
        Ok(out)
    }

    /// Every profile's item views and orders in time order, and the latest stock level
    /// seen per item. Items are `properties.product_id` (else `sku`, else `id`) of
    /// `Product Viewed`, and of each of `properties.products` of an order (else of the
    /// order itself); stock is `properties.stock` (else `inventory`, `quantity`) of
    /// `Product Updated` and `Inventory Updated`.
    pub fn item_history(&self, order: &str) -> Result<ItemHistory, PipelineError> {
        fn item_id(v: &serde_json::Value) -> Option<String> {
            ["product_id", "sku", "id"]
                .iter()
                .find_map(|k| match &v[k] {
                    serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
        }
        let mut per: FastMap<u64, Vec<ItemEvent>> = FastMap::default();
        let mut stock: BTreeMap<String, (i64, f64)> = BTreeMap::new();
        self.scan_events(|pid, view| {
            let name = event_name(view);
            let wanted = name == "Product Viewed"
                || name == order
                || name == "Product Updated"
                || name == "Inventory Updated";
            if !wanted || view.kind != Kind::Track {
                return;
            }
            let Some(props) = view
                .properties
                .and_then(|p| serde_json::from_str::<serde_json::Value>(p.get()).ok())
            else {
                return;
            };
            let t = view.time_ms;
            if name == "Product Viewed" {
                if let Some(item) = item_id(&props) {
                    per.entry(pid)
                        .or_default()
                        .push(ItemEvent::Viewed { time_ms: t, item });
                }
            } else if name == order {
                let mut items: Vec<String> = props["products"]
                    .as_array()
                    .map(|a| a.iter().filter_map(item_id).collect())
                    .unwrap_or_default();
                if items.is_empty() {
                    items.extend(item_id(&props));
                }
                if !items.is_empty() {
                    per.entry(pid)
                        .or_default()
                        .push(ItemEvent::Ordered { time_ms: t, items });
                }
            } else if let Some(item) = item_id(&props) {
                let level = ["stock", "inventory", "quantity"]
                    .iter()
                    .find_map(|k| props[k].as_f64());
                if let Some(level) = level {
                    let e = stock.entry(item).or_insert((i64::MIN, level));
                    if t >= e.0 {
                        *e = (t, level);
                    }
                }
            }
        })?;
        let mut profiles: Vec<(ProfileId, Vec<ItemEvent>)> = per
            .into_iter()
            .map(|(id, mut ev)| {
                ev.sort_by_key(|e| match e {
                    ItemEvent::Viewed { time_ms, .. } | ItemEvent::Ordered { time_ms, .. } => {
                        *time_ms
                    }
                });
                (ProfileId(id), ev)
            })
            .collect();
        profiles.sort_unstable_by_key(|p| p.0 .0);
        Ok(ItemHistory {
            profiles,
            stock: stock.into_iter().map(|(k, (_, v))| (k, v)).collect(),
        })
    }

    /// Every profile's value of trait `key` (strings as they are, other JSON as text).
    pub fn trait_values(&self, key: &str) -> FastMap<u64, String> {
        let mut out = FastMap::default();
        let Some(sym) = self.shared.symbols.read().ok().and_then(|s| s.get(key)) else {
            return out;
        };
        for part in &self.shared.partitions {
            let Ok(p) = part.read() else { continue };
            for (id, prof) in p.iter() {
                if let Some(t) = prof.trait_value(sym) {
                    let v = match serde_json::from_str::<serde_json::Value>(t.value) {
                        Ok(serde_json::Value::String(s)) => s,
                        _ => t.value.to_string(),
                    };
                    out.insert(*id, v);
                }
            }
        }
        out
    }

    /// Every customer's purchase history for lifetime-value models, in days, observed up
    /// to `now` (ms): (profile, history, mean order value). Frequency counts orders after
    /// the first; the mean is over all orders (the summary keeps no per-order values).
    pub fn purchase_histories(&self, now: i64) -> Vec<(ProfileId, History, f64)> {
        let mut out = Vec::new();
        for part in &self.shared.partitions {
            // The ids first, then the profiles in chunks: the partition's owner is never
            // held up for more than a chunk's worth.
            let ids: Vec<u64> = match part.read() {
                Ok(p) => p.keys().copied().collect(),
                Err(_) => continue,
            };
            for chunk in ids.chunks(20_000) {
                let Ok(part) = part.read() else { break };
                for id in chunk {
                    if let Some((h, mean)) = part.get(id).and_then(|p| p.purchases.history(now)) {
                        out.push((ProfileId(*id), h, mean));
                    }
                }
            }
        }
        out.sort_unstable_by_key(|c| c.0 .0);
        out
    }
}
