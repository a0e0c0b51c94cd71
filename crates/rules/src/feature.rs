//! Per-profile feature state, updated one event at a time.
//!
//! Windowed features keep each event's time (events at the same time are kept together),
//! so a value drops out at the exact millisecond its event leaves the window: an event at
//! time `t` is inside a window `D` at `now` while `t > now - D`. All-time features keep
//! only totals. Entries older than the window are dropped as time passes.

use crate::compile::{Catalog, FeatureDef, FeatureId, FeatureKind};
use crate::value::{matches, Props};
use serde::{Deserialize, Serialize};

/// An event as features see it.
pub struct Event<'a> {
    /// Unique per event (the log offset); tells two events at the same time apart.
    pub id: u64,
    pub name: &'a str,
    pub time_ms: i64,
    pub props: &'a dyn Props,
}

/// State of one feature for one profile, kept small (24 bytes): windows hold exactly
/// their entries (boxed slices, no spare capacity), rare or large parts are boxed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Times of the events in the window, sorted.
    CountWindow(Box<[i64]>),
    /// All-time count.
    CountTotal(u64),
    /// Times and values (1/10,000 units) in the window, sorted.
    NumWindow(Box<[(i64, i64)]>),
    /// All-time totals.
    NumTotal(Box<Totals>),
    /// Each distinct value with the latest time it was seen (sorted by value).
    Distinct(Box<[(Box<str>, i64)]>),
    /// First and last time.
    Seen { first: i64, last: i64 },
    /// A sequence: done for good (all time), or the candidate steps so far.
    Seq(Box<SeqState>),
}

/// All-time totals of a numeric feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    pub n: u64,
    pub sum: i128,
    pub min: i64,
    pub max: i64,
}

impl Totals {
    fn add(&mut self, v: i64) {
        if self.n == 0 {
            (self.min, self.max) = (v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.n += 1;
        self.sum += i128::from(v);
    }

    fn absorb(&mut self, o: &Totals) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// Candidate steps of a sequence: first steps and second steps, `(time, event id)`,
/// sorted. `Done` once an all-time sequence has happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeqState {
    Steps {
        first: Vec<(i64, u64)>,
        then: Vec<(i64, u64)>,
    },
    Done,
}

/// All features of one profile, sorted by id; features never touched are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    states: Vec<(FeatureId, State)>,
}

fn inside(t: i64, window: Option<i64>, now: i64) -> bool {
    window.is_none_or(|d| t > now.saturating_sub(d))
}

/// Inserts into a sorted boxed slice (exact size: these stay small).
fn insert_sorted<T: Ord + Clone>(v: &mut Box<[T]>, x: T) {
    let i = v.partition_point(|y| *y <= x);
    let mut grown = Vec::with_capacity(v.len() + 1);
    grown.extend_from_slice(&v[..i]);
    grown.push(x);
    grown.extend_from_slice(&v[i..]);
    *v = grown.into_boxed_slice();
}

/// Keeps the entries `keep` accepts.
fn retain_boxed<T: Clone>(v: &mut Box<[T]>, keep: impl Fn(&T) -> bool) {
    if v.iter().all(&keep) {
        return;
    }
    *v = v.iter().filter(|x| keep(x)).cloned().collect();
}

/// Sorted union of two sorted boxed slices.
fn merge_boxed<T: Ord + Clone>(a: &mut Box<[T]>, b: &[T]) {
    if b.is_empty() {
        return;
    }
    let mut m: Vec<T> = Vec::with_capacity(a.len() + b.len());
    m.extend_from_slice(a);
    m.extend_from_slice(b);
    m.sort();
    *a = m.into_boxed_slice();
}

fn new_state(def: &FeatureDef) -> State {
    match (&def.kind, def.window) {
        (FeatureKind::Count, Some(_)) => State::CountWindow(Box::default()),
        (FeatureKind::Count, None) => State::CountTotal(0),
        (FeatureKind::Numeric(_), Some(_)) => State::NumWindow(Box::default()),
        (FeatureKind::Numeric(_), None) => State::NumTotal(Box::default()),
        (FeatureKind::Distinct(_), _) => State::Distinct(Box::default()),
        (FeatureKind::Seen, _) => State::Seen {
            first: i64::MAX,
            last: i64::MIN,
        },
        (FeatureKind::Sequence { .. }, _) => State::Seq(Box::new(SeqState::Steps {
            first: Vec::new(),
            then: Vec::new(),
        })),
    }
}

/// Whether a sequence holds: a first step, then a different second step no earlier and at
/// most `within` later, with the first step inside the window.
fn seq_holds(
    first: &[(i64, u64)],
    then: &[(i64, u64)],
    within: i64,
    window: Option<i64>,
    now: i64,
) -> bool {
    first
        .iter()
        .rev()
        .filter(|a| inside(a.0, window, now))
        .any(|a| {
            let from = then.partition_point(|b| b.0 < a.0);
            then[from..]
                .iter()
                .take_while(|b| b.0 <= a.0.saturating_add(within))
                .any(|b| b.1 != a.1)
        })
}

fn insert_vec<T: Ord>(v: &mut Vec<T>, x: T) {
    let i = v.partition_point(|y| *y <= x);
    v.insert(i, x);
}

impl State {
    fn prune(&mut self, window: Option<i64>, now: i64) {
        let Some(d) = window else { return };
        let cut = now.saturating_sub(d);
        match self {
            State::CountWindow(v) => retain_boxed(v, |t| *t > cut),
            State::NumWindow(v) => retain_boxed(v, |e| e.0 > cut),
            State::Distinct(v) => retain_boxed(v, |e| e.1 > cut),
            State::Seq(s) => {
                if let SeqState::Steps { first, then } = &mut **s {
                    first.retain(|e| e.0 > cut);
                    then.retain(|e| e.0 > cut);
                }
            }
            _ => {}
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            State::CountWindow(v) => v.is_empty(),
            State::NumWindow(v) => v.is_empty(),
            State::Distinct(v) => v.is_empty(),
            State::Seq(s) => {
                matches!(&**s, SeqState::Steps { first, then } if first.is_empty() && then.is_empty())
            }
            _ => false,
        }
    }

    fn observe(&mut self, def: &FeatureDef, ev: &Event<'_>, now: i64) {
        let hit = matches(&def.event, ev.name, ev.props);
        let t = ev.time_ms;
        let fits = inside(t, def.window, now);
        match (self, &def.kind) {
            (State::CountWindow(v), _) if hit && fits => insert_sorted(v, t),
            (State::CountTotal(n), _) if hit => *n += 1,
            (State::NumWindow(v), FeatureKind::Numeric(p)) if hit && fits => {
                if let Some(x) = ev.props.prop(p).scaled() {
                    insert_sorted(v, (t, x));
                }
            }
            (State::NumTotal(s), FeatureKind::Numeric(p)) if hit => {
                if let Some(x) = ev.props.prop(p).scaled() {
                    s.add(x);
                }
            }
            (State::Distinct(v), FeatureKind::Distinct(p)) if hit && fits => {
                if let Some(k) = ev.props.prop(p).distinct_key() {
                    match v.binary_search_by(|e| e.0.as_ref().cmp(k.as_str())) {
                        Ok(i) => v[i].1 = v[i].1.max(t),
                        Err(_) => insert_sorted(v, (k.into_boxed_str(), t)),
                    }
                }
            }
            (State::Seen { first, last }, _) if hit => {
                *first = (*first).min(t);
                *last = (*last).max(t);
            }
            (State::Seq(s), FeatureKind::Sequence { then: m2, within }) if fits => {
                let SeqState::Steps { first, then } = &mut **s else {
                    return;
                };
                if hit {
                    insert_vec(first, (t, ev.id));
                }
                if matches(m2, ev.name, ev.props) {
                    insert_vec(then, (t, ev.id));
                }
                if def.window.is_none() && seq_holds(first, then, *within, None, now) {
                    **s = SeqState::Done;
                }
            }
            _ => {}
        }
    }

    fn absorb(&mut self, def: &FeatureDef, o: &State, now: i64) {
        match (self, o) {
            (State::CountWindow(a), State::CountWindow(b)) => merge_boxed(a, b),
            (State::CountTotal(a), State::CountTotal(b)) => *a += b,
            (State::NumWindow(a), State::NumWindow(b)) => merge_boxed(a, b),
            (State::NumTotal(a), State::NumTotal(b)) => a.absorb(b),
            (State::Distinct(a), State::Distinct(b)) => {
                for (k, t) in b.iter() {
                    match a.binary_search_by(|e| e.0.cmp(k)) {
                        Ok(i) => a[i].1 = a[i].1.max(*t),
                        Err(_) => insert_sorted(a, (k.clone(), *t)),
                    }
                }
            }
            (
                State::Seen { first, last },
                State::Seen {
                    first: f2,
                    last: l2,
                },
            ) => {
                *first = (*first).min(*f2);
                *last = (*last).max(*l2);
            }
            (State::Seq(a), State::Seq(b)) => match (&mut **a, &**b) {
                (SeqState::Done, _) => {}
                (_, SeqState::Done) => **a = SeqState::Done,
                (
                    SeqState::Steps { first, then },
                    SeqState::Steps {
                        first: f2,
                        then: t2,
                    },
                ) => {
                    first.extend_from_slice(f2);
                    first.sort();
                    then.extend_from_slice(t2);
                    then.sort();
                    if let FeatureKind::Sequence { within, .. } = def.kind {
                        if def.window.is_none() && seq_holds(first, then, within, None, now) {
                            **a = SeqState::Done;
                        }
                    }
                }
            },
            _ => {}
        }
    }

    /// The earliest time after `now` at which an entry leaves the window.
    fn next_expiry(&self, window: Option<i64>, now: i64) -> Option<i64> {
        let d = window?;
        // Sorted by time: the first entry still inside the window leaves first.
        let sorted = |times: &mut dyn Iterator<Item = i64>| {
            times.map(|t| t.saturating_add(d)).find(|x| *x > now)
        };
        match self {
            State::CountWindow(v) => sorted(&mut v.iter().copied()),
            State::NumWindow(v) => sorted(&mut v.iter().map(|e| e.0)),
            State::Distinct(v) => v
                .iter()
                .map(|e| e.1.saturating_add(d))
                .filter(|x| *x > now)
                .min(),
            State::Seq(s) => match &**s {
                SeqState::Steps { first, .. } => sorted(&mut first.iter().map(|e| e.0)),
                SeqState::Done => None,
            },
            _ => None,
        }
    }
}

/// Aggregate values of a count or numeric feature at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Events counted (with a numeric value, for a numeric feature).
    pub n: u64,
    /// Sum in 1/10,000 units.
    pub sum: i128,
    pub min: i64,
    pub max: i64,
}

impl Features {
    fn get(&self, id: FeatureId) -> Option<&State> {
        self.states
            .binary_search_by_key(&id, |e| e.0)
            .ok()
            .map(|i| &self.states[i].1)
    }

    fn get_mut(&mut self, cat: &Catalog, id: FeatureId) -> &mut State {
        let i = match self.states.binary_search_by_key(&id, |e| e.0) {
            Ok(i) => i,
            Err(i) => {
                self.states
                    .insert(i, (id, new_state(&cat.defs()[id as usize])));
                i
            }
        };
        &mut self.states[i].1
    }

    /// Whether no feature holds anything.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Updates every feature the event touches. `now` is the current time; an event
    /// already outside a window is not kept in it.
    pub fn observe(&mut self, cat: &Catalog, ev: &Event<'_>, now: i64) {
        for id in cat.for_event(ev.name) {
            let def = &cat.defs()[id as usize];
            let s = self.get_mut(cat, id);
            s.prune(def.window, now);
            s.observe(def, ev, now);
            if s.is_empty() {
                self.remove(id);
            }
        }
    }

    fn remove(&mut self, id: FeatureId) {
        if let Ok(i) = self.states.binary_search_by_key(&id, |e| e.0) {
            self.states.remove(i);
        }
    }

    /// Drops entries that have left their windows by `now`.
    pub fn prune(&mut self, cat: &Catalog, now: i64) {
        for (id, s) in &mut self.states {
            s.prune(cat.defs()[*id as usize].window, now);
        }
        self.states.retain(|e| !e.1.is_empty());
    }

    /// Takes in another profile's features (a merge). The result is the same as if every
    /// event of both had been observed by one.
    pub fn absorb(&mut self, cat: &Catalog, other: &Features, now: i64) {
        for (id, s) in &other.states {
            let def = &cat.defs()[*id as usize];
            self.get_mut(cat, *id).absorb(def, s, now);
        }
        self.prune(cat, now);
    }

    /// Count/sum/min/max of a count or numeric feature at `now`.
    pub fn stats(&self, cat: &Catalog, id: FeatureId, now: i64) -> Stats {
        let window = cat.defs()[id as usize].window;
        let mut st = Totals::default();
        match self.get(cat.store_of(id)) {
            Some(State::CountWindow(v)) => {
                // Sorted: the entries inside the window are a suffix.
                let cut = window.map_or(i64::MIN, |d| now.saturating_sub(d));
                st.n = (v.len() - v.partition_point(|t| *t <= cut)) as u64;
            }
            Some(State::CountTotal(n)) => st.n = *n,
            Some(State::NumWindow(v)) => v
                .iter()
                .filter(|e| inside(e.0, window, now))
                .for_each(|e| st.add(e.1)),
            Some(State::NumTotal(t)) => st = **t,
            _ => {}
        }
        Stats {
            n: st.n,
            sum: st.sum,
            min: st.min,
            max: st.max,
        }
    }

    /// Number of distinct values of a distinct feature at `now`.
    pub fn distinct(&self, cat: &Catalog, id: FeatureId, now: i64) -> u64 {
        let window = cat.defs()[id as usize].window;
        match self.get(cat.store_of(id)) {
            Some(State::Distinct(v)) => {
                v.iter().filter(|e| inside(e.1, window, now)).count() as u64
            }
            _ => 0,
        }
    }

    /// First and last time of a seen feature.
    pub fn seen(&self, id: FeatureId) -> Option<(i64, i64)> {
        match self.get(id) {
            Some(State::Seen { first, last }) if *first <= *last => Some((*first, *last)),
            _ => None,
        }
    }

    /// Whether a sequence feature holds at `now`.
    pub fn sequence(&self, cat: &Catalog, id: FeatureId, now: i64) -> bool {
        let def = &cat.defs()[id as usize];
        let FeatureKind::Sequence { within, .. } = def.kind else {
            return false;
        };
        match self.get(id) {
            Some(State::Seq(s)) => match &**s {
                SeqState::Done => true,
                SeqState::Steps { first, then } => seq_holds(first, then, within, def.window, now),
            },
            _ => false,
        }
    }

    /// The earliest time after `now` at which feature `id` (read through its own window)
    /// loses an entry.
    pub fn expiry_of(&self, cat: &Catalog, id: FeatureId, now: i64) -> Option<i64> {
        self.get(cat.store_of(id))?
            .next_expiry(cat.defs()[id as usize].window, now)
    }

    /// The earliest time after `now` at which a windowed feature loses an entry.
    pub fn next_expiry(&self, cat: &Catalog, now: i64) -> Option<i64> {
        self.states
            .iter()
            .flat_map(|(id, s)| {
                cat.views(*id)
                    .iter()
                    .filter_map(move |v| s.next_expiry(cat.defs()[*v as usize].window, now))
            })
            .min()
    }

    /// Renumbers features after the catalog changed: `map[old]` is the new id, or `None`
    /// for a feature no longer used (its state is dropped).
    pub fn remap(&mut self, map: &[Option<FeatureId>]) {
        // In place: run for every profile at each redefinition, where a fresh vector
        // each would cost an allocation per profile. Ids usually keep their order.
        self.states
            .retain_mut(|(id, _)| match map.get(*id as usize).copied().flatten() {
                Some(to) => {
                    *id = to;
                    true
                }
                None => false,
            });
        if !self.states.is_sorted_by_key(|e| e.0) {
            self.states.sort_by_key(|e| e.0);
        }
    }

    /// Observes an event for the listed features only (a backfill of new features).
    pub fn observe_only(&mut self, cat: &Catalog, ids: &[FeatureId], ev: &Event<'_>, now: i64) {
        for id in cat.for_event(ev.name).filter(|id| ids.contains(id)) {
            let def = &cat.defs()[id as usize];
            let s = self.get_mut(cat, id);
            s.observe(def, ev, now);
            if s.is_empty() {
                self.remove(id);
            }
        }
    }

    /// Ids of the features that hold something.
    pub fn ids(&self) -> impl Iterator<Item = FeatureId> + '_ {
        self.states.iter().map(|e| e.0)
    }
}

#[cfg(test)]
mod size_tests {
    /// Every profile holds one entry per feature it touched: keep them small.
    #[test]
    fn a_feature_entry_takes_32_bytes() {
        assert_eq!(std::mem::size_of::<super::State>(), 24);
        assert_eq!(std::mem::size_of::<(super::FeatureId, super::State)>(), 32);
    }
}
