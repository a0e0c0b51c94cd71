//! Segments on profiles: the glue between profile state and [`niyet_rules`].
//!
//! The router prepares, for each event that some segment feature reads, a [`SegEvent`]
//! holding its name and only the properties features read. The partition owner folds it
//! into the profile's [`SegState`] (features and memberships, see
//! [`niyet_rules::SegmentSet`]) and keeps the profile's next timer.

use crate::extract::{Entries, EventView, Kind};
use crate::profile::Profile;
use crate::symbols::{Sym, Symbols};
use niyet_rules::value::{Props, Traits, Value};
use niyet_rules::{Change, Membership, Rule, SegmentSet};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;

/// Segment changes kept per profile (the newest).
pub const HISTORY: usize = 32;

/// A property value owned by an update.
#[derive(Debug, Clone, PartialEq)]
pub enum PropValue {
    Null,
    Bool(bool),
    Num(f64),
    Str(Box<str>),
}

/// The part of an event segment features read.
#[derive(Debug, Clone, PartialEq)]
pub struct SegEvent {
    /// `Order Completed`, `Page Viewed`, `Screen Viewed`, `Identify`, `Group`, `Alias`.
    pub name: Box<str>,
    /// Property paths features read, with their values.
    pub props: Vec<(Box<str>, PropValue)>,
}

impl Props for SegEvent {
    fn prop(&self, path: &str) -> Value<'_> {
        match self.props.iter().find(|p| &*p.0 == path).map(|p| &p.1) {
            Some(PropValue::Bool(b)) => Value::Bool(*b),
            Some(PropValue::Num(n)) => Value::Num(*n),
            Some(PropValue::Str(s)) => Value::Str(Cow::Borrowed(s)),
            _ => Value::Null,
        }
    }
}

/// Reads a JSON value as a rule value (objects and arrays are null). Plain strings,
/// numbers and literals are read without a JSON parser and without copying.
pub fn json_value(raw: &str) -> Value<'_> {
    let t = raw.trim();
    match t.as_bytes().first() {
        Some(b'"')
            if t.len() >= 2 && t.ends_with('"') && !t[1..t.len() - 1].contains(['\\', '"']) =>
        {
            Value::Str(Cow::Borrowed(&t[1..t.len() - 1]))
        }
        Some(b't') if t == "true" => Value::Bool(true),
        Some(b'f') if t == "false" => Value::Bool(false),
        Some(b'n') if t == "null" => Value::Null,
        Some(b'-' | b'0'..=b'9') => t.parse::<f64>().map_or(Value::Null, Value::Num),
        _ => match serde_json::from_str::<serde_json::Value>(t) {
            Ok(serde_json::Value::String(s)) => Value::Str(Cow::Owned(s)),
            _ => Value::Null,
        },
    }
}

fn owned(v: Value<'_>) -> PropValue {
    match v {
        Value::Null => PropValue::Null,
        Value::Bool(b) => PropValue::Bool(b),
        Value::Num(n) => PropValue::Num(n),
        Value::Str(s) => PropValue::Str(s.into()),
    }
}

/// Finds a dotted path in a JSON object.
fn lookup<'a>(mut raw: &'a RawValue, path: &str) -> Option<&'a RawValue> {
    for part in path.split('.') {
        let obj: Entries<'a> = serde_json::from_str(raw.get()).ok()?;
        raw = obj.get(part)?;
    }
    Some(raw)
}

/// The name segments know an event by: the track event's name, `Page Viewed`,
/// `Screen Viewed`, or the call type capitalised (`Identify`, `Group`, `Alias`).
pub fn event_name<'a>(v: &'a EventView<'_>) -> Option<Cow<'a, str>> {
    Some(match v.kind {
        Kind::Track => Cow::Borrowed(v.name.as_deref()?),
        Kind::Page => Cow::Borrowed("Page Viewed"),
        Kind::Screen => Cow::Borrowed("Screen Viewed"),
        Kind::Identify => Cow::Borrowed("Identify"),
        Kind::Group => Cow::Borrowed("Group"),
        Kind::Alias => Cow::Borrowed("Alias"),
        Kind::Control | Kind::Other => return None,
    })
}

/// The segment event of a stored event, if any segment feature reads events of its name.
/// For pages and screens, `name`, `path`, `url`, `title`, `referrer` and `search` also
/// come from `context.page` when `properties` lacks them.
pub fn seg_event(segs: &Segments, v: &EventView<'_>) -> Option<Box<SegEvent>> {
    let name = event_name(v)?;
    segs.set.catalog().for_event(&name).next()?;
    let paths = segs.props.get(&*name).unwrap_or(&segs.any_props);
    Some(Box::new(seg_event_with(v, name, paths)))
}

/// The segment event of `v` (named `name`, see [`event_name`]) with the values of
/// `paths` only: a backfill reads just what its new features need.
pub fn seg_event_with(v: &EventView<'_>, name: Cow<'_, str>, paths: &[Box<str>]) -> SegEvent {
    let mut props = Vec::new();
    if !paths.is_empty() {
        // The properties object is read once; nested paths go one level at a time.
        let top: Entries<'_> = v
            .properties
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or_default();
        for path in paths.iter() {
            let (head, rest) = match path.split_once('.') {
                Some((h, r)) => (h, Some(r)),
                None => (&**path, None),
            };
            let raw = top.get(head).and_then(|r| match rest {
                Some(rest) => lookup(r, rest),
                None => Some(r),
            });
            let val = match raw {
                Some(r) => json_value(r.get()),
                None if v.kind == Kind::Page || v.kind == Kind::Screen => match &**path {
                    "name" => v
                        .name
                        .as_deref()
                        .map_or(Value::Null, |n| Value::Str(Cow::Borrowed(n))),
                    "path" | "url" | "title" | "referrer" | "search" => v
                        .context
                        .page
                        .and_then(|p| lookup(p, path))
                        .map_or(Value::Null, |r| json_value(r.get())),
                    _ => Value::Null,
                },
                None => Value::Null,
            };
            if val != Value::Null {
                props.push((path.clone(), owned(val)));
            }
        }
    }
    SegEvent {
        name: name.into(),
        props,
    }
}

/// Segments with their trait names interned and the properties each event name needs.
pub struct Segments {
    pub set: SegmentSet,
    /// The lifetime-value model rules' `clv` and `p_alive` read (none until published).
    pub clv: std::sync::RwLock<Option<std::sync::Arc<ClvModel>>>,
    /// The intent scores rules' `score("…")` read.
    pub scores: std::sync::Arc<niyet_actions::Scores>,
    traits: niyet_model::hash::FastMap<Box<str>, Sym>,
    /// The trait names compiled rules hold and the age's sources, by address: a
    /// [`ProfileTraits`] caches the values read through them in these slots.
    slots: Box<[Slot]>,
    /// Property paths features read, by event name.
    props: HashMap<Box<str>, Box<[Box<str>]>>,
    /// Property paths features of any event (`*`) read.
    any_props: Box<[Box<str>]>,
}

impl Segments {
    /// Compiles definitions and interns the trait names they read.
    pub fn new(defs: &[(String, Rule)], syms: &mut Symbols) -> Result<Self, niyet_rules::SetError> {
        let set = SegmentSet::new(defs)?;
        Ok(Self::with_set(set, syms))
    }

    /// Wraps a compiled set, interning the trait names it reads.
    pub fn with_set(set: SegmentSet, syms: &mut Symbols) -> Self {
        let mut traits = niyet_model::hash::FastMap::default();
        let names = niyet_rules::age::SOURCES
            .iter()
            .copied()
            .chain(set.catalog().trait_names().map(|n| &**n));
        for n in names {
            let top = n.split('.').next().unwrap_or(n);
            let s = syms.intern(top);
            traits.insert(top.into(), s);
        }
        let paths = |name: &str| -> Box<[Box<str>]> {
            set.props_for(name).into_iter().map(Box::from).collect()
        };
        let props = set
            .catalog()
            .event_names()
            .map(|n| (Box::from(n), paths(n)))
            .collect();
        let any_props = paths("");
        let slot = |name: &str, held: Option<std::sync::Arc<str>>| {
            let (top, rest) = match name.split_once('.') {
                Some((top, rest)) => (top, Some(rest.into())),
                None => (name, None),
            };
            Slot {
                at: name.as_ptr() as usize,
                len: name.len(),
                sym: traits.get(top).copied(),
                rest,
                _held: held,
            }
        };
        let slots = niyet_rules::age::SOURCES
            .iter()
            .map(|name| slot(name, None))
            .chain(
                set.catalog()
                    .trait_names()
                    .map(|n| slot(n, Some(n.clone()))),
            )
            .collect();
        Self {
            set,
            clv: Default::default(),
            scores: Default::default(),
            traits,
            slots,
            props,
            any_props,
        }
    }

    /// The slot of a trait name held by the compiled rules (or an age source), if `name`
    /// is that very allocation. Each slot holds its name, so an address seen here always
    /// stands for the same name.
    fn slot_of(&self, name: &str) -> Option<usize> {
        let at = name.as_ptr() as usize;
        self.slots
            .iter()
            .position(|s| s.at == at && s.len == name.len())
    }

    /// The profile's traits as rules read them (scores from the profile's own state).
    pub fn traits<'a>(&'a self, p: &'a Profile) -> ProfileTraits<'a> {
        ProfileTraits {
            seg: self,
            p,
            scores: None,
            seen: Default::default(),
            age: Default::default(),
        }
    }

    /// [`Self::traits`] while the profile's segment state is taken out of it for work:
    /// scores are read from `scores`.
    pub fn traits_scored<'a>(
        &'a self,
        p: &'a Profile,
        scores: &'a niyet_actions::score::ScoreStates,
    ) -> ProfileTraits<'a> {
        ProfileTraits {
            seg: self,
            p,
            scores: Some(scores),
            seen: Default::default(),
            age: Default::default(),
        }
    }

    /// Score names rules read that no configured score has, as `(segment, score)`.
    pub fn unknown_scores(&self) -> Vec<(String, String)> {
        (0..self.set.len())
            .flat_map(|i| {
                niyet_rules::scores_read(self.set.rule(i))
                    .into_iter()
                    .filter(|s| self.scores.index(s).is_none())
                    .map(move |s| (self.set.name(i).to_string(), s))
            })
            .collect()
    }
}

/// A published lifetime-value model: BG/NBD for purchases and P(alive), Gamma-Gamma for
/// the value of an order (without it, the customer's own mean order value), over a
/// horizon in days; `version` numbers publications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvModel {
    pub version: u64,
    pub horizon_days: f64,
    pub bgnbd: niyet_analytics::clv::BgNbd,
    pub gamma_gamma: Option<niyet_analytics::clv::GammaGamma>,
}

impl ClvModel {
    /// `(p_alive, predicted value over the horizon)` of a purchase summary at `now`;
    /// `None` before the first order.
    pub fn predict(&self, p: &crate::Purchases, now: i64) -> Option<(f64, f64)> {
        let (h, mean) = p.history(now)?;
        let alive = self.bgnbd.p_alive(&h);
        let purchases = self.bgnbd.expected_purchases(&h, self.horizon_days);
        let value = match &self.gamma_gamma {
            Some(g) if g.q > 1.0 => g.expected_value(h.frequency, mean),
            _ => mean,
        };
        Some((alive, value * purchases))
    }
}

/// An age in years and the next instant it changes ([`niyet_rules::age::age`]).
type Age = Option<(i64, Option<i64>)>;

/// A trait name compiled rules read, found by its address.
#[derive(Debug)]
struct Slot {
    at: usize,
    len: usize,
    /// The symbol of the name's first part (`None`: no profile has it).
    sym: Option<Sym>,
    /// The path inside the trait's value after the first dot.
    rest: Option<Box<str>>,
    /// The name itself (`None`: a static), held so that its address is never another
    /// name's while this slot exists, whatever becomes of the compiled set.
    _held: Option<std::sync::Arc<str>>,
}

/// A profile's traits seen through [`Traits`]. Values read through the names compiled
/// rules hold are remembered for as long as this view lives: one evaluation reads the
/// same trait for many segments. The cache is keyed by the name's slot, found by address,
/// so a lookup neither compares nor copies names.
pub struct ProfileTraits<'a> {
    seg: &'a Segments,
    p: &'a Profile,
    /// Score states when not in `p` (taken out while a partition owner works on it).
    scores: Option<&'a niyet_actions::score::ScoreStates>,
    /// By slot of [`Segments::slots`]; sized at the first read.
    seen: std::cell::RefCell<Vec<Option<Value<'a>>>>,
    /// The age last computed: `(at, age)`.
    age: std::cell::Cell<Option<(i64, Age)>>,
}

impl Traits for ProfileTraits<'_> {
    fn metric(&self, name: &str, now: i64) -> Value<'_> {
        if let Some(s) = niyet_rules::score_of(name) {
            return match self.seg.scores.index(s) {
                Some(i) => Value::Num(self.seg.scores.value_at(i, self.score_states(), now)),
                None => Value::Null,
            };
        }
        let model = self.seg.clv.read().ok().and_then(|m| m.clone());
        let Some((alive, clv)) = model.and_then(|m| m.predict(&self.p.purchases, now)) else {
            return Value::Null;
        };
        match name {
            "p_alive" if alive.is_finite() => Value::Num(alive),
            "clv" if clv.is_finite() => Value::Num(clv),
            _ => Value::Null,
        }
    }

    fn metric_changes_at(&self, name: &str, test: &niyet_rules::Test, now: i64) -> Option<i64> {
        use niyet_rules::{Literal, Test};
        let Some(s) = niyet_rules::score_of(name) else {
            return Some(now.saturating_add(niyet_rules::METRIC_RECHECK_MS));
        };
        let i = self.seg.scores.index(s)?;
        let st = self.score_states();
        let at = |k: f64| self.seg.scores.crosses_at(i, st, k, now);
        let nums = |ls: &[Literal]| -> Vec<f64> {
            ls.iter()
                .filter_map(|l| match l {
                    Literal::Num(x) => Some(*x),
                    _ => None,
                })
                .collect()
        };
        let bounds = match test {
            Test::Cmp(_, Literal::Num(k)) => vec![*k],
            Test::Between(a, b) => vec![*a, *b],
            Test::In(ls) | Test::NotIn(ls) => nums(ls),
            _ => Vec::new(),
        };
        bounds.into_iter().filter_map(at).min()
    }

    fn age_at(&self, now: i64) -> Age {
        match self.age.get() {
            Some((at, age)) if at == now => age,
            _ => {
                let age = niyet_rules::age::age(self, now);
                self.age.set(Some((now, age)));
                age
            }
        }
    }

    fn get(&self, path: &str) -> Value<'_> {
        let Some(i) = self.seg.slot_of(path) else {
            return self.read(path);
        };
        if let Some(Some(v)) = self.seen.borrow().get(i) {
            return v.clone();
        }
        let slot = &self.seg.slots[i];
        let v = self.read_in(slot.sym, slot.rest.as_deref());
        let mut seen = self.seen.borrow_mut();
        if seen.len() < self.seg.slots.len() {
            seen.resize(self.seg.slots.len(), None);
        }
        seen[i] = Some(v.clone());
        v
    }
}

impl<'a> ProfileTraits<'a> {
    fn score_states(&self) -> &niyet_actions::score::ScoreStates {
        static NONE: niyet_actions::score::ScoreStates = niyet_actions::score::ScoreStates::new();
        self.scores
            .or_else(|| self.p.segments.as_ref().map(|s| &s.journeys.scores))
            .unwrap_or(&NONE)
    }

    fn read(&self, path: &str) -> Value<'a> {
        let (top, rest) = match path.split_once('.') {
            Some((top, rest)) => (top, Some(rest)),
            None => (path, None),
        };
        self.read_in(self.seg.traits.get(top).copied(), rest)
    }

    /// The value of trait `sym`, or of the path `rest` inside it.
    fn read_in(&self, sym: Option<Sym>, rest: Option<&str>) -> Value<'a> {
        let Some(t) = sym.and_then(|sym| self.p.traits.get(sym)) else {
            return Value::Null;
        };
        match rest {
            None => json_value(t.value),
            Some(rest) => serde_json::from_str::<&RawValue>(t.value)
                .ok()
                .and_then(|raw| lookup(raw, rest))
                .map_or(Value::Null, |r| json_value(r.get())),
        }
    }
}

/// A profile's segment state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegState {
    pub m: Membership,
    /// Processing time the memberships are evaluated at.
    pub at: i64,
    /// When the next timer is due (`i64::MAX`: none).
    pub due: i64,
    /// The newest changes: `(segment index, entered, at)`.
    pub history: Vec<(u32, bool, i64)>,
    /// Running trigger waits and recent actions (for caps).
    #[serde(default)]
    pub journeys: niyet_actions::JourneyState,
}

impl SegState {
    /// Records changes in the history.
    pub fn record(&mut self, changes: &[Change]) {
        for c in changes {
            self.history.push((c.segment as u32, c.entered, c.at_ms));
        }
        if self.history.len() > HISTORY {
            let cut = self.history.len() - HISTORY;
            self.history.drain(..cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Trait;

    const DAY: i64 = 86_400_000;

    #[test]
    fn traits_read_through_the_rules_names_equal_those_read_through_a_copy() {
        let mut syms = Symbols::default();
        let rule = |r: &str| niyet_rules::parse(r).expect("a rule");
        let defs = vec![
            ("a".to_string(), rule("trait.city = \"İzmir\"")),
            (
                "b".to_string(),
                rule("trait.city in [\"İzmir\"] and trait.address.zip = \"35000\""),
            ),
            ("c".to_string(), rule("age between 20 and 40")),
            ("d".to_string(), rule("trait.plan = \"pro\"")),
        ];
        let seg = Segments::new(&defs, &mut syms).expect("segments");
        // Both rules reading `trait.city` hold one name.
        let mut names: Vec<_> = seg.set.catalog().trait_names().cloned().collect();
        names.sort();
        assert_eq!(
            names.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["address.zip", "city", "plan"]
        );
        let src = syms.intern("web");
        let mut p = Profile::default();
        let t = |key: &str, value: &'static str, syms: &mut Symbols| Trait {
            key: syms.intern(key),
            source: src,
            time_ms: 1,
            value,
        };
        p.traits.merge([
            t("city", "\"İzmir\"", &mut syms),
            t("address", "{\"zip\":\"35000\"}", &mut syms),
            t("birthday", "\"1990-06-15\"", &mut syms),
        ]);
        let view = seg.traits(&p);
        for n in &names {
            let copy = n.to_string();
            assert!(seg.slot_of(n).is_some(), "{n} has a slot");
            assert!(seg.slot_of(&copy).is_none(), "a copy of {n} has none");
            let (first, again, by_copy) = (view.get(n), view.get(n), view.get(&copy));
            assert_eq!(first, by_copy, "{n}");
            assert_eq!(again, by_copy, "{n}");
        }
        assert_eq!(view.get("city"), Value::Str("İzmir".into()));
        assert_eq!(view.get("address.zip"), Value::Str("35000".into()));
        assert_eq!(view.get("plan"), Value::Null);
        // The age reads its sources through their slots, twice alike.
        let now = niyet_model::parse_timestamp("2026-06-15T00:00:00Z").expect("time");
        let want = Some((36, Some(now + 365 * DAY)));
        assert_eq!(niyet_rules::age::age(&view, now), want);
        // Remembered for one instant only.
        assert_eq!(view.age_at(now), want);
        assert_eq!(view.age_at(now - 1).map(|a| a.0), Some(35));
        assert_eq!(view.age_at(now), want);
        // A view of another profile does not see the first one's values.
        let q = Profile::default();
        let other = seg.traits(&q);
        assert_eq!(other.get(&names[1]), Value::Null);
        assert_eq!(other.age_at(now), None);
    }
}
