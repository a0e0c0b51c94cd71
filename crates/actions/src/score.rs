//! Intent scores: named sums of points for signals (events, optionally with property
//! filters, optionally only the n-th one in a window), decaying with a half-life, with
//! thresholds that are crossed upwards at the instant points reach them and downwards
//! (with hysteresis) at the exact instant decay or negative points take them below.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::trigger::parse_duration;

/// A score as configured (`[[scores]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreDef {
    pub name: String,
    /// The score halves in this time (`7d`); none: no decay.
    #[serde(default)]
    pub half_life: Option<String>,
    pub signals: Vec<SignalDef>,
    #[serde(default)]
    pub thresholds: Vec<ThresholdDef>,
}

/// Points for an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalDef {
    /// A label for explanations (default: the event name).
    #[serde(default)]
    pub name: Option<String>,
    pub event: String,
    /// Properties that must equal these values (`path = "/pricing"`; a page's `path`,
    /// `url`, `title` are also read from `context.page`).
    #[serde(default, rename = "where")]
    pub filter: BTreeMap<String, Value>,
    pub points: f64,
    /// Only the `nth` matching event within `within` scores (the third visit in 7 days).
    #[serde(default)]
    pub nth: Option<u32>,
    #[serde(default)]
    pub within: Option<String>,
}

impl SignalDef {
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.event)
    }
}

/// A threshold: crossed upwards when the score reaches `at`, downwards when it falls
/// below `at - hysteresis`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdDef {
    pub name: String,
    pub at: f64,
    #[serde(default)]
    pub hysteresis: f64,
}

/// A threshold crossing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Crossing {
    pub score: usize,
    pub threshold: usize,
    pub up: bool,
    pub at: i64,
}

/// One score of one profile.
///
/// Every profile holds one per configured score, so what most profiles never have
/// (recent matches of `nth` signals, crossings) sits behind one pointer: 56 bytes a
/// score instead of 96. Stored as the six fields it always had.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "StoredState")]
pub struct ScoreState {
    /// Value at `at`.
    pub value: f64,
    pub at: i64,
    /// Thresholds currently above (bit per threshold).
    pub above: u64,
    /// Contribution per signal (index within the score), at `at`.
    pub contrib: Vec<(u16, f64)>,
    rare: Option<Box<Rare>>,
}

/// The parts of a score's state few profiles have.
#[derive(Debug, Clone, Default, PartialEq)]
struct Rare {
    /// Recent times of matches of signals with `nth`, per signal.
    recent: Vec<(u16, Vec<i64>)>,
    /// Latest crossings `(threshold, up, at)`.
    history: Vec<(u16, bool, i64)>,
}

impl ScoreState {
    /// Recent times of matches of signals with `nth`, per signal.
    pub fn recent(&self) -> &[(u16, Vec<i64>)] {
        self.rare.as_deref().map_or(&[], |r| &r.recent)
    }

    /// Latest crossings `(threshold, up, at)`, oldest first.
    pub fn history(&self) -> &[(u16, bool, i64)] {
        self.rare.as_deref().map_or(&[], |r| &r.history)
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }
}

/// A score's state as stored (snapshots): the same fields whatever the layout in memory.
#[derive(Deserialize)]
struct StoredState {
    value: f64,
    at: i64,
    above: u64,
    contrib: Vec<(u16, f64)>,
    recent: Vec<(u16, Vec<i64>)>,
    history: Vec<(u16, bool, i64)>,
}

impl From<StoredState> for ScoreState {
    fn from(s: StoredState) -> Self {
        let rare = (!s.recent.is_empty() || !s.history.is_empty()).then(|| {
            Box::new(Rare {
                recent: s.recent,
                history: s.history,
            })
        });
        ScoreState {
            value: s.value,
            at: s.at,
            above: s.above,
            contrib: s.contrib,
            rare,
        }
    }
}

impl Serialize for ScoreState {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = ser.serialize_struct("ScoreState", 6)?;
        st.serialize_field("value", &self.value)?;
        st.serialize_field("at", &self.at)?;
        st.serialize_field("above", &self.above)?;
        st.serialize_field("contrib", &self.contrib)?;
        st.serialize_field("recent", self.recent())?;
        st.serialize_field("history", self.history())?;
        st.end()
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    def: ScoreDef,
    half_life_ms: Option<f64>,
    within_ms: Vec<Option<i64>>,
}

/// The configured scores, compiled.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    defs: Vec<Compiled>,
    /// The signals of each event name, as packed by [`Self::matches`], in order.
    by_event: std::collections::HashMap<String, Vec<u32>>,
}

/// Where an event's property values come from (so the caller can read them lazily, or
/// compare them without parsing the whole event).
pub trait EventProps {
    /// Whether the property at the dotted `path` is present and equals `want` (numbers by
    /// value, other values exactly).
    fn equals(&self, path: &str, want: &Value) -> bool;
}

impl EventProps for Value {
    fn equals(&self, path: &str, want: &Value) -> bool {
        crate::trigger::lookup_json(self, path).is_some_and(|v| same(v, want))
    }
}

const HISTORY: usize = 32;

impl Scores {
    pub fn new(defs: Vec<ScoreDef>) -> Result<Scores, String> {
        let mut out: Vec<Compiled> = Vec::new();
        for d in defs {
            let e = |m: String| format!("score `{}`: {m}", d.name);
            if d.name.trim().is_empty() {
                return Err("a score has no name".into());
            }
            if out.iter().any(|c| c.def.name == d.name) {
                return Err(e("is defined twice".into()));
            }
            if d.signals.is_empty() || d.signals.len() > 1_000 {
                return Err(e("needs 1 to 1000 signals".into()));
            }
            if d.thresholds.len() > 64 {
                return Err(e("at most 64 thresholds".into()));
            }
            let half_life_ms = match &d.half_life {
                Some(h) => {
                    Some(parse_duration(h).map_err(|m| e(format!("half_life: {m}")))? as f64)
                }
                None => None,
            };
            if half_life_ms == Some(0.0) {
                return Err(e("half_life must be more than zero".into()));
            }
            let mut within_ms = Vec::new();
            for s in &d.signals {
                if !s.points.is_finite() {
                    return Err(e(format!(
                        "signal `{}`: points must be a number",
                        s.label()
                    )));
                }
                within_ms.push(match (s.nth, &s.within) {
                    (None, None) => None,
                    (Some(n), Some(w)) if (1..=1_000).contains(&n) => Some(
                        parse_duration(w)
                            .map_err(|m| e(format!("signal `{}`: within: {m}", s.label())))?,
                    ),
                    _ => {
                        return Err(e(format!(
                            "signal `{}`: `nth` (1–1000) and `within` go together",
                            s.label()
                        )))
                    }
                });
            }
            for t in &d.thresholds {
                if !t.at.is_finite() || !t.hysteresis.is_finite() || t.hysteresis < 0.0 {
                    return Err(e(format!(
                        "threshold `{}`: bad `at` or `hysteresis`",
                        t.name
                    )));
                }
            }
            out.push(Compiled {
                def: d,
                half_life_ms,
                within_ms,
            });
        }
        let mut by_event = std::collections::HashMap::<String, Vec<u32>>::new();
        for (i, c) in out.iter().enumerate() {
            for (j, s) in c.def.signals.iter().enumerate() {
                by_event
                    .entry(s.event.clone())
                    .or_default()
                    .push(((i as u32) << 16) | j as u32);
            }
        }
        Ok(Scores {
            defs: out,
            by_event,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The index of the score named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.defs.iter().position(|c| c.def.name == name)
    }

    /// Score `i`'s value at `now`, decayed (0 for a profile no signal reached).
    pub fn value_at(&self, i: usize, st: Option<&ScoreState>, now: i64) -> f64 {
        let Some(st) = st else { return 0.0 };
        match self.defs.get(i).and_then(|c| c.half_life_ms) {
            Some(h) if now > st.at => st.value * 0.5f64.powf((now - st.at) as f64 / h),
            _ => st.value,
        }
    }

    /// The last millisecond after `now` at which decay has not yet taken score `i` across
    /// `level` (the value is on the far side from the next millisecond on); `None` when
    /// decay never does (no decay, or the value is already on the far side or never gets
    /// there: decay moves values towards 0 and never past it).
    pub fn crosses_at(
        &self,
        i: usize,
        st: Option<&ScoreState>,
        level: f64,
        now: i64,
    ) -> Option<i64> {
        let st = st?;
        let h = self.defs.get(i)?.half_life_ms?;
        let (v, now_v) = (st.value, self.value_at(i, Some(st), now));
        if v == 0.0 || level == 0.0 || (v > 0.0) != (level > 0.0) || now_v.abs() <= level.abs() {
            return None;
        }
        let t = st.at as f64 + h * (v / level).log2();
        (t.is_finite() && t > now as f64).then(|| t.floor() as i64)
    }

    pub fn def(&self, i: usize) -> &ScoreDef {
        &self.defs[i].def
    }

    pub fn defs(&self) -> impl Iterator<Item = &ScoreDef> {
        self.defs.iter().map(|c| &c.def)
    }

    /// The signals an event matches, as `(score, signal)` packed into `u32`s.
    pub fn matches(&self, name: &str, props: &dyn EventProps) -> Vec<u32> {
        let Some(hits) = self.by_event.get(name) else {
            return Vec::new();
        };
        // One allocation, at the first match, of room for every signal of the name.
        let mut out = Vec::new();
        for &h in hits {
            let s = &self.defs[(h >> 16) as usize].def.signals[(h & 0xffff) as usize];
            if s.filter.iter().all(|(k, want)| props.equals(k, want)) {
                if out.capacity() == 0 {
                    out.reserve_exact(hits.len());
                }
                out.push(h);
            }
        }
        out
    }

    fn decay(&self, i: usize, st: &mut ScoreState, now: i64) {
        if now <= st.at {
            return;
        }
        if let Some(h) = self.defs[i].half_life_ms {
            let f = 0.5f64.powf((now - st.at) as f64 / h);
            st.value *= f;
            for c in &mut st.contrib {
                c.1 *= f;
            }
        }
        st.at = now;
    }

    fn cross(&self, i: usize, st: &mut ScoreState, now: i64, out: &mut Vec<Crossing>) {
        for (k, t) in self.defs[i].def.thresholds.iter().enumerate() {
            let bit = 1u64 << k;
            let above = st.above & bit != 0;
            let up = !above && st.value >= t.at;
            let down = above && st.value < t.at - t.hysteresis;
            if up || down {
                st.above ^= bit;
                st.rare_mut().history.push((k as u16, up, now));
                out.push(Crossing {
                    score: i,
                    threshold: k,
                    up,
                    at: now,
                });
            }
        }
        if let Some(r) = st.rare.as_deref_mut().filter(|r| r.history.len() > HISTORY) {
            let cut = r.history.len() - HISTORY;
            r.history.drain(..cut);
        }
    }

    /// Time reached `now`: every downward crossing decay makes by then, at its instant.
    /// Values stay as of their last change (decay is applied when they are next read or
    /// changed), so this only looks for crossings.
    pub fn advance(&self, sts: &mut Vec<ScoreState>, now: i64, out: &mut Vec<Crossing>) {
        sts.resize_with(self.defs.len(), Default::default);
        for (i, st) in sts.iter_mut().enumerate() {
            while let Some(t) = self.next_crossing(i, st).filter(|t| *t <= now) {
                self.decay(i, st, t);
                // The instant is rounded up, so the value is below the bound by then;
                // rounding in the power must not leave it a hair above.
                for (k, th) in self.defs[i].def.thresholds.iter().enumerate() {
                    let bound = th.at - th.hysteresis;
                    if st.above & (1 << k) != 0 && st.value >= bound && st.value > 0.0 {
                        let down = bound.max(0.0) * (1.0 - 1e-12);
                        if down < st.value {
                            let f = down / st.value;
                            st.value = down;
                            for c in &mut st.contrib {
                                c.1 *= f;
                            }
                        }
                    }
                }
                self.cross(i, st, t, out);
            }
        }
    }

    /// The next instant decay alone takes score `i` below a threshold it is above.
    fn next_crossing(&self, i: usize, st: &ScoreState) -> Option<i64> {
        if st.above == 0 {
            return None;
        }
        let h = self.defs[i].half_life_ms?;
        if st.value <= 0.0 {
            return None;
        }
        self.defs[i]
            .def
            .thresholds
            .iter()
            .enumerate()
            .filter(|(k, _)| st.above & (1 << k) != 0)
            .filter_map(|(_, t)| {
                let bound = t.at - t.hysteresis;
                (bound > 0.0).then(|| {
                    let dt = h * (st.value / bound).log2();
                    st.at + (dt.max(0.0).floor() as i64) + 1
                })
            })
            .min()
    }

    /// The next instant any score of the profile changes by time alone.
    pub fn next_due(&self, sts: &[ScoreState]) -> Option<i64> {
        sts.iter()
            .enumerate()
            .filter_map(|(i, st)| self.next_crossing(i, st))
            .min()
    }

    /// Signals `hits` (from [`Self::matches`]) arrived at `now`.
    pub fn on_signals(
        &self,
        sts: &mut Vec<ScoreState>,
        hits: &[u32],
        now: i64,
        out: &mut Vec<Crossing>,
    ) {
        self.advance(sts, now, out);
        // Each score's hits in a run (as `matches` gives them), so a score's thresholds
        // are crossed once, by the sum of its hits, when its run ends.
        let sorted;
        let hits = if hits.windows(2).all(|w| w[0] >> 16 <= w[1] >> 16) {
            hits
        } else {
            let mut v = hits.to_vec();
            v.sort_by_key(|h| h >> 16);
            sorted = v;
            &sorted[..]
        };
        let mut touched: Option<usize> = None;
        for h in hits {
            let (i, j) = ((h >> 16) as usize, (h & 0xffff) as usize);
            let Some(c) = self.defs.get(i) else { continue };
            let Some(s) = c.def.signals.get(j) else {
                continue;
            };
            if let Some(t) = touched.filter(|t| *t != i) {
                self.cross(t, &mut sts[t], now, out);
                touched = None;
            }
            self.decay(i, &mut sts[i], now);
            let st = &mut sts[i];
            if let (Some(n), Some(Some(w))) = (s.nth, c.within_ms.get(j)) {
                let recent = &mut st.rare_mut().recent;
                let k = match recent.iter().position(|r| r.0 == j as u16) {
                    Some(k) => k,
                    None => {
                        recent.push((j as u16, Vec::with_capacity((n as usize + 1).min(16))));
                        recent.len() - 1
                    }
                };
                let times = &mut recent[k].1;
                times.retain(|t| *t > now - w);
                times.push(now);
                if times.len() > n as usize {
                    times.remove(0);
                }
                if times.len() != n as usize {
                    continue;
                }
                // Counted: the next n-th needs n new matches.
                times.clear();
            }
            st.value += s.points;
            match st.contrib.iter_mut().find(|c| c.0 == j as u16) {
                Some(c) => c.1 += s.points,
                None => {
                    if st.contrib.capacity() == 0 {
                        // Room for every signal at once: one allocation per score.
                        st.contrib.reserve_exact(c.def.signals.len().min(16));
                    }
                    st.contrib.push((j as u16, s.points))
                }
            }
            touched = Some(i);
        }
        if let Some(t) = touched {
            self.cross(t, &mut sts[t], now, out);
        }
    }

    /// Another profile merged in at `now` (both already advanced to it): values and
    /// contributions add up; thresholds are crossed by the sum.
    pub fn absorb(
        &self,
        sts: &mut Vec<ScoreState>,
        other: &[ScoreState],
        now: i64,
        out: &mut Vec<Crossing>,
    ) {
        sts.resize_with(self.defs.len(), Default::default);
        for (i, o) in other.iter().enumerate().take(self.defs.len()) {
            let mut o = o.clone();
            self.decay(i, &mut o, now);
            self.decay(i, &mut sts[i], now);
            let st = &mut sts[i];
            st.value += o.value;
            for (j, v) in o.contrib {
                match st.contrib.iter_mut().find(|c| c.0 == j) {
                    Some(c) => c.1 += v,
                    None => st.contrib.push((j, v)),
                }
            }
            st.contrib.sort_by_key(|c| c.0);
            if let Some(o) = o.rare {
                let Rare { recent, history } = *o;
                let mine = st.rare_mut();
                for (j, mut ts) in recent {
                    match mine.recent.iter_mut().find(|r| r.0 == j) {
                        Some(r) => {
                            r.1.append(&mut ts);
                            r.1.sort_unstable();
                        }
                        None => mine.recent.push((j, ts)),
                    }
                }
                mine.recent.sort_by_key(|r| r.0);
                // Crossings the other profile made are the customer's too.
                mine.history.extend_from_slice(&history);
                mine.history.sort_by_key(|h| h.2);
            }
            st.above |= o.above;
            self.cross(i, st, now, out);
        }
    }

    /// The profile's scores at `now` with their contributions, largest first.
    pub fn explain(&self, sts: &[ScoreState], now: i64) -> Value {
        let list: Vec<Value> = self
            .defs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut st = sts.get(i).cloned().unwrap_or_default();
                self.decay(i, &mut st, now);
                let mut contrib: Vec<(u16, f64)> = st.contrib.clone();
                contrib.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
                serde_json::json!({
                    "score": c.def.name,
                    "value": round(st.value),
                    "above": c.def.thresholds.iter().enumerate()
                        .filter(|(k, _)| st.above & (1 << k) != 0)
                        .map(|(_, t)| t.name.clone()).collect::<Vec<_>>(),
                    "signals": contrib.iter().filter_map(|(j, v)| Some(serde_json::json!({
                        "signal": c.def.signals.get(*j as usize)?.label(),
                        "points": round(*v),
                    }))).collect::<Vec<_>>(),
                    "crossings": st.history().iter().filter_map(|(k, up, at)| Some(serde_json::json!({
                        "threshold": c.def.thresholds.get(*k as usize)?.name,
                        "direction": if *up { "up" } else { "down" },
                        "at_ms": at,
                    }))).collect::<Vec<_>>(),
                })
            })
            .collect();
        Value::Array(list)
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Filter equality: numbers by value, strings exactly, others as JSON.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 86_400_000;

    fn lead() -> Scores {
        Scores::new(vec![serde_json::from_value(json!({
            "name": "lead", "half_life": "7d",
            "signals": [
                {"name": "pricing", "event": "Page Viewed", "where": {"path": "/pricing"}, "points": 10},
                {"name": "third pricing visit", "event": "Page Viewed", "where": {"path": "/pricing"},
                 "points": 20, "nth": 3, "within": "7d"},
                {"event": "Document Downloaded", "points": 15},
                {"event": "Email Unsubscribed", "points": -30},
            ],
            "thresholds": [{"name": "Hot Lead", "at": 80, "hysteresis": 10}]
        }))
        .unwrap()])
        .unwrap()
    }

    /// The reference: the score at `t` summed directly from its decayed signals.
    fn reference(points: &[(i64, f64)], t: i64) -> f64 {
        points
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(at, p)| p * 0.5f64.powf((t - at) as f64 / (7 * DAY) as f64))
            .sum()
    }

    #[test]
    fn a_score_state_is_stored_as_its_six_fields() {
        let s = lead();
        let mut st = Vec::new();
        let mut out = Vec::new();
        let hits = s.matches("Page Viewed", &json!({"path": "/pricing"}));
        for k in 0..9 {
            s.on_signals(&mut st, &hits, k * 1_000, &mut out);
        }
        assert_eq!(out.len(), 1, "crossed Hot Lead once: {out:?}");
        assert_eq!(std::mem::size_of::<ScoreState>(), 56);
        let stored = serde_json::to_value(&st[0]).unwrap();
        assert_eq!(
            stored,
            json!({
                "value": st[0].value, "at": 8_000, "above": 1,
                "contrib": [[0, st[0].contrib[0].1], [1, st[0].contrib[1].1]],
                "recent": [[1, []]],
                "history": [[0, true, 5_000]],
            })
        );
        let back: ScoreState = serde_json::from_value(stored).unwrap();
        assert_eq!(back, st[0]);
        // A state with no recent matches and no crossings keeps nothing behind its pointer.
        let plain: ScoreState = serde_json::from_value(json!({
            "value": 3.0, "at": 1, "above": 0, "contrib": [[2, 3.0]], "recent": [], "history": []
        }))
        .unwrap();
        assert!(plain.rare.is_none());
        assert_eq!(serde_json::to_value(&plain).unwrap()["history"], json!([]));
        // Snapshots use postcard: the same bytes as the six plain fields.
        #[derive(Serialize)]
        struct Six<'a> {
            value: f64,
            at: i64,
            above: u64,
            contrib: &'a [(u16, f64)],
            recent: &'a [(u16, Vec<i64>)],
            history: &'a [(u16, bool, i64)],
        }
        let six = Six {
            value: st[0].value,
            at: st[0].at,
            above: st[0].above,
            contrib: &st[0].contrib,
            recent: st[0].recent(),
            history: st[0].history(),
        };
        assert_eq!(
            postcard::to_allocvec(&st[0]).unwrap(),
            postcard::to_allocvec(&six).unwrap()
        );
    }

    #[test]
    fn points_decay_cross_and_explain() {
        let s = lead();
        let mut st = Vec::new();
        let mut out = Vec::new();
        let pricing = json!({"path": "/pricing"});
        let hits = s.matches("Page Viewed", &pricing);
        assert_eq!(hits.len(), 2);
        assert!(s
            .matches("Page Viewed", &json!({"path": "/blog"}))
            .is_empty());
        let mut log = Vec::new();
        for k in 0..3 {
            s.on_signals(&mut st, &hits, k * 3_600_000, &mut out);
            log.push((k * 3_600_000, 10.0));
        }
        log.push((2 * 3_600_000, 20.0));
        let t = 2 * 3_600_000;
        assert!((st[0].value - reference(&log, t)).abs() < 1e-9);
        let doc = s.matches("Document Downloaded", &json!({}));
        for k in 0..2 {
            s.on_signals(&mut st, &doc, t + k, &mut out);
            log.push((t + k, 15.0));
        }
        assert!(out.is_empty(), "{:?} below 80", st[0].value);
        s.on_signals(&mut st, &doc, t + 2, &mut out);
        log.push((t + 2, 15.0));
        assert_eq!(out.len(), 1);
        assert!(out[0].up);
        let v = st[0].value;
        assert!(
            v >= 80.0 && (v - reference(&log, t + 2)).abs() < 1e-9,
            "{v}"
        );
        // Decay takes it below 70 at the instant predicted: 7d · log2(v / 70) later.
        let due = s.next_due(&st).unwrap();
        let expect = t + 2 + ((7 * DAY) as f64 * (v / 70.0).log2()) as i64;
        assert!((due - expect).abs() <= 1, "{due} {expect}");
        out.clear();
        s.advance(&mut st, due - 2, &mut out);
        assert!(out.is_empty());
        s.advance(&mut st, due + 10, &mut out);
        assert_eq!(out.len(), 1);
        assert!(!out[0].up);
        assert_eq!(out[0].at, due);
        let e = s.explain(&st, due + 10);
        assert_eq!(e[0]["signals"][0]["signal"], "Document Downloaded");
        assert_eq!(e[0]["crossings"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn merged_scores_add_up_whichever_survives() {
        let s = lead();
        let pricing = s.matches("Page Viewed", &json!({"path": "/pricing"}));
        let (mut a, mut b, mut out) = (Vec::new(), Vec::new(), Vec::new());
        s.on_signals(&mut a, &pricing, 0, &mut out);
        s.on_signals(
            &mut b,
            &s.matches("Document Downloaded", &json!({})),
            DAY,
            &mut out,
        );
        let (mut ab, mut ba) = (a.clone(), b.clone());
        s.advance(&mut ab, 2 * DAY, &mut out);
        s.advance(&mut ba, 2 * DAY, &mut out);
        s.absorb(&mut ab, &b, 2 * DAY, &mut out);
        s.absorb(&mut ba, &a, 2 * DAY, &mut out);
        assert!((ab[0].value - ba[0].value).abs() < 1e-9);
        let r = reference(&[(0, 10.0), (DAY, 15.0)], 2 * DAY);
        assert!((ab[0].value - r).abs() < 1e-9);
    }

    #[test]
    fn bad_scores_are_named() {
        let e = Scores::new(vec![serde_json::from_value(json!({
            "name": "x", "signals": [{"event": "A", "points": 1, "nth": 3}]
        }))
        .unwrap()])
        .unwrap_err();
        assert!(e.contains("score `x`") && e.contains("within"), "{e}");
    }
}
