//! Segments over one profile: membership kept current as events arrive and as time
//! passes, with every change at its exact instant.
//!
//! After each event the profile's segments are evaluated again from its features
//! (cheap: features are already aggregated). Changes by time alone happen only when a
//! windowed entry expires, a `seen … ago` comparison flips, or an age goes up;
//! [`SegmentSet::next_change`] gives the earliest such instant, so a caller sets one timer
//! per profile and never polls.

use crate::ast::{Agg, Rule, TimeTest};
use crate::compile::{Catalog, CompileError, FeatureId, Pred};
use crate::feature::{Event, Features};
use crate::value::{compare, Traits, Value, SCALE};

/// A segment definition could not be accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SetError {
    #[error("segment `{0}`: {1}")]
    Compile(String, CompileError),
    #[error("segment `{0}` is defined twice")]
    Duplicate(String),
    #[error("segments refer to each other in a cycle: {0}")]
    Cycle(String),
}

struct Seg {
    name: String,
    rule: Rule,
    pred: Pred,
    /// Reads traits or age.
    traits: bool,
    /// Can change by time alone through a `seen … ago` test or an age.
    clock: bool,
}

/// A set of compiled segments sharing one feature catalog.
pub struct SegmentSet {
    catalog: Catalog,
    segs: Vec<Seg>,
    /// Evaluation order: every segment after the segments it refers to.
    order: Vec<usize>,
    /// Position of each segment in `order`.
    rank: Vec<usize>,
    /// Segments referring to each segment.
    dependents: Vec<Vec<usize>>,
    /// Durations of `… ago` tests on each feature.
    ago: Vec<Vec<i64>>,
    /// Ranks of the segments an event of each name reads (sorted).
    dirty_named: std::collections::HashMap<String, Vec<u32>>,
    /// Ranks of the segments reading events of any name.
    dirty_any: Vec<u32>,
    /// Ranks of the segments reading traits or age.
    dirty_traits: Vec<u32>,
    /// Segments an empty profile (no events, no traits) is in, at any time.
    empty: Vec<usize>,
    /// Whether a segment reads a metric (`clv`, `p_alive`).
    metrics: bool,
}

/// The traits of a profile that has none.
struct NoTraits;

impl Traits for NoTraits {
    fn get(&self, _: &str) -> Value<'_> {
        Value::Null
    }
}

/// Segments to evaluate, by rank: a bitset, inline up to 256 segments.
struct Dirty {
    inline: [u64; 4],
    heap: Vec<u64>,
}

impl Dirty {
    fn new(n: usize) -> Self {
        let words = n.div_ceil(64);
        Dirty {
            inline: [0; 4],
            heap: if words > 4 {
                vec![0; words]
            } else {
                Vec::new()
            },
        }
    }

    fn words(&mut self) -> &mut [u64] {
        if self.heap.is_empty() {
            &mut self.inline
        } else {
            &mut self.heap
        }
    }

    fn mark(&mut self, rank: usize) {
        self.words()[rank / 64] |= 1 << (rank % 64);
    }

    fn marks(&mut self, ranks: &[u32]) {
        let w = self.words();
        for r in ranks {
            w[*r as usize / 64] |= 1 << (r % 64);
        }
    }

    /// The lowest marked rank at or after `from`, unmarked as it is taken.
    fn take_from(&mut self, from: usize) -> Option<usize> {
        let w = self.words();
        let mut k = from / 64;
        let mut word = w.get(k)? & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                let r = k * 64 + word.trailing_zeros() as usize;
                w[k] &= !(1 << (r % 64));
                return Some(r);
            }
            k += 1;
            word = *w.get(k)?;
        }
    }
}

/// Per-profile state: features and current memberships.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Membership {
    pub features: Features,
    /// `(segment index, entered at)`, sorted by index.
    pub member: Vec<(u32, i64)>,
}

/// How profile state carries over to a redefined [`SegmentSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redefined {
    /// For each old feature, its id in the new catalog (`None`: no longer used).
    pub features: Vec<Option<FeatureId>>,
    /// Features of the new catalog that nothing held before: fill them from history.
    pub new_features: Vec<FeatureId>,
    /// For each old segment, its index in the new set if its definition is unchanged
    /// (edited and deleted segments start over).
    pub segments: Vec<Option<usize>>,
    /// Every old feature keeps its id (nothing to renumber).
    pub features_kept: bool,
    /// Every old segment keeps its index (nothing to renumber).
    pub segments_kept: bool,
}

/// A profile entered or left a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub segment: usize,
    pub entered: bool,
    pub at_ms: i64,
}

impl Membership {
    /// Since when the profile is in segment `i` (None: it is not).
    pub fn since(&self, i: usize) -> Option<i64> {
        self.member
            .binary_search_by_key(&(i as u32), |m| m.0)
            .ok()
            .map(|k| self.member[k].1)
    }

    /// Whether the profile is in segment `i`.
    pub fn is_member(&self, i: usize) -> bool {
        self.since(i).is_some()
    }

    fn set(&mut self, i: usize, on: bool, at: i64) -> bool {
        match (self.member.binary_search_by_key(&(i as u32), |m| m.0), on) {
            (Err(p), true) => self.member.insert(p, (i as u32, at)),
            (Ok(p), false) => {
                self.member.remove(p);
            }
            _ => return false,
        }
        true
    }
}

fn time_test(x: Option<i64>, t: &TimeTest, now: i64) -> bool {
    match (t, x) {
        (TimeTest::IsNull, x) => x.is_none(),
        (TimeTest::IsNotNull, x) => x.is_some(),
        (TimeTest::Ago(c, d), Some(x)) => c.holds(x.cmp(&now.saturating_sub(d.0))),
        (TimeTest::Ago(..), None) => false,
    }
}

impl SegmentSet {
    /// Compiles named rules. Rules may refer to each other by name (`segment("VIP")`) as
    /// long as there is no cycle.
    pub fn new(defs: &[(String, Rule)]) -> Result<Self, SetError> {
        let names: Vec<&str> = defs.iter().map(|d| d.0.as_str()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(SetError::Duplicate(n.to_string()));
            }
        }
        let mut catalog = Catalog::default();
        let mut segs = Vec::with_capacity(defs.len());
        let mut metrics = false;
        for (name, rule) in defs {
            let pred = catalog
                .compile(rule, &|n| names.iter().position(|x| *x == n))
                .map_err(|e| SetError::Compile(name.clone(), e))?;
            let (mut traits, mut clock) = (false, false);
            pred.walk(&mut |p| match p {
                Pred::Trait { name, .. } if crate::metric_of(name).is_some() => {
                    (traits, clock) = (true, true);
                    metrics = true;
                }
                Pred::Trait { .. } => traits = true,
                Pred::Age(_) => (traits, clock) = (true, true),
                Pred::Seen {
                    test: TimeTest::Ago(..),
                    ..
                } => clock = true,
                _ => {}
            });
            segs.push(Seg {
                name: name.clone(),
                rule: rule.clone(),
                pred,
                traits,
                clock,
            });
        }
        let order = Self::order(&segs)?;
        let mut rank = vec![0; segs.len()];
        for (k, i) in order.iter().enumerate() {
            rank[*i] = k;
        }
        let mut by_feature = vec![Vec::new(); catalog.defs().len()];
        let mut ago = vec![Vec::new(); catalog.defs().len()];
        for s in &segs {
            s.pred.walk(&mut |p| {
                if let Pred::Seen {
                    f,
                    test: TimeTest::Ago(_, d),
                    ..
                } = p
                {
                    ago[*f as usize].push(d.0);
                }
            });
        }
        let mut dependents = vec![Vec::new(); segs.len()];
        for (i, s) in segs.iter().enumerate() {
            let mut fs = Vec::new();
            s.pred.features(&mut fs);
            fs.sort_unstable();
            fs.dedup();
            // An event changes a store's state, so every segment reading one of its
            // features is affected.
            fs.into_iter()
                .for_each(|f| by_feature[catalog.store_of(f) as usize].push(i));
            let mut ds = Vec::new();
            s.pred.segments(&mut ds);
            ds.sort_unstable();
            ds.dedup();
            ds.into_iter().for_each(|d| dependents[d].push(i));
        }
        let ranks = |fs: &mut dyn Iterator<Item = FeatureId>| {
            let mut r: Vec<u32> = fs
                .flat_map(|f| by_feature[f as usize].iter().map(|s| rank[*s] as u32))
                .collect();
            r.sort_unstable();
            r.dedup();
            r
        };
        let dirty_named = catalog
            .event_names()
            .map(|n| (n.to_string(), ranks(&mut catalog.for_event(n))))
            .collect();
        let dirty_any = ranks(&mut catalog.for_any_event());
        let mut dirty_traits: Vec<u32> = (0..segs.len())
            .filter(|i| segs[*i].traits)
            .map(|i| rank[i] as u32)
            .collect();
        dirty_traits.sort_unstable();
        let mut set = Self {
            catalog,
            segs,
            order,
            rank,
            dependents,
            ago,
            dirty_named,
            dirty_any,
            dirty_traits,
            empty: Vec::new(),
            metrics,
        };
        // With no event and no trait, no feature, window, `… ago` test or age depends on
        // the time: the empty profile's memberships hold at every instant.
        let mut st = Membership::default();
        set.evaluate(&mut st, &NoTraits, 0, None, &mut Vec::new());
        set.empty = st.member.iter().map(|m| m.0 as usize).collect();
        Ok(set)
    }

    /// Whether a segment reads a metric (`clv`, `p_alive`): such segments are evaluated
    /// again when the profile's purchases change (give `traits_changed`).
    pub fn reads_metrics(&self) -> bool {
        self.metrics
    }

    /// The set with new definitions, and how to carry profiles over to it: see
    /// [`Redefined`].
    pub fn redefine(&self, defs: &[(String, Rule)]) -> Result<(Self, Redefined), SetError> {
        let next = Self::new(defs)?;
        let key = |d: &crate::compile::FeatureDef| format!("{d:?}");
        // A state carries over when the same feature is still a store; a store whose
        // group gained a longer window starts over (its state lacks the older events).
        let features: Vec<Option<FeatureId>> = self
            .catalog
            .defs()
            .iter()
            .enumerate()
            .map(|(old, d)| {
                let k = key(d);
                next.catalog
                    .defs()
                    .iter()
                    .position(|n| key(n) == k)
                    .map(|p| p as FeatureId)
                    .filter(|p| {
                        !self.catalog.is_store(old as FeatureId) || next.catalog.is_store(*p)
                    })
            })
            .collect();
        let held: Vec<FeatureId> = features
            .iter()
            .enumerate()
            .filter(|(old, _)| self.catalog.is_store(*old as FeatureId))
            .filter_map(|(_, f)| *f)
            .collect();
        let new_features = (0..next.catalog.defs().len() as FeatureId)
            .filter(|id| next.catalog.is_store(*id) && !held.contains(id))
            .collect();
        let segments: Vec<Option<usize>> = self
            .segs
            .iter()
            .map(|s| {
                next.segs
                    .iter()
                    .position(|n| n.name == s.name && n.rule == s.rule)
            })
            .collect();
        Ok((
            next,
            Redefined {
                features_kept: features
                    .iter()
                    .enumerate()
                    .all(|(i, f)| *f == Some(i as FeatureId)),
                segments_kept: segments.iter().enumerate().all(|(i, s)| *s == Some(i)),
                features,
                new_features,
                segments,
            },
        ))
    }

    fn order(segs: &[Seg]) -> Result<Vec<usize>, SetError> {
        // Depth-first topological sort; 0 = new, 1 = on the stack, 2 = done.
        fn visit(
            i: usize,
            segs: &[Seg],
            mark: &mut [u8],
            out: &mut Vec<usize>,
            path: &mut Vec<usize>,
        ) -> Result<(), SetError> {
            match mark[i] {
                2 => return Ok(()),
                1 => {
                    let from = path.iter().position(|p| *p == i).unwrap_or(0);
                    let mut names: Vec<&str> = path[from..]
                        .iter()
                        .map(|p| segs[*p].name.as_str())
                        .collect();
                    names.push(&segs[i].name);
                    return Err(SetError::Cycle(names.join(" → ")));
                }
                _ => {}
            }
            mark[i] = 1;
            path.push(i);
            let mut deps = Vec::new();
            segs[i].pred.segments(&mut deps);
            for d in deps {
                visit(d, segs, mark, out, path)?;
            }
            path.pop();
            mark[i] = 2;
            out.push(i);
            Ok(())
        }
        let mut mark = vec![0u8; segs.len()];
        let mut out = Vec::with_capacity(segs.len());
        for i in 0..segs.len() {
            visit(i, segs, &mut mark, &mut out, &mut Vec::new())?;
        }
        Ok(out)
    }

    /// The shared feature catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segs.len()
    }

    /// Whether there are no segments.
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Segment `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.segs[i].name
    }

    /// Segment `i`'s rule.
    pub fn rule(&self, i: usize) -> &Rule {
        &self.segs[i].rule
    }

    /// The index of the segment named `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.segs.iter().position(|s| s.name == name)
    }

    /// Property paths of events named `name` that some feature reads (what an event must
    /// carry into [`Event::props`]).
    pub fn props_for(&self, name: &str) -> Vec<&str> {
        self.props_of(name, |_| true)
    }

    /// [`Self::props_for`] of the features `ids` only (a backfill's new features).
    pub fn props_for_features(&self, name: &str, ids: &[FeatureId]) -> Vec<&str> {
        self.props_of(name, |f| ids.contains(&f))
    }

    fn props_of(&self, name: &str, keep: impl Fn(FeatureId) -> bool) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in self.catalog.for_event(name).filter(|f| keep(*f)) {
            let d = &self.catalog.defs()[f as usize];
            d.paths(&mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether profile state `st` satisfies segment `i` at `now`, without changing it (a
    /// dry run; segments it refers to are read from `st`'s memberships).
    pub fn holds_segment(&self, i: usize, st: &Membership, traits: &dyn Traits, now: i64) -> bool {
        self.segs
            .get(i)
            .is_some_and(|s| self.holds(&s.pred, st, traits, now))
    }

    fn holds(&self, p: &Pred, st: &Membership, traits: &dyn Traits, now: i64) -> bool {
        let cat = &self.catalog;
        match p {
            Pred::And(ps) => ps.iter().all(|p| self.holds(p, st, traits, now)),
            Pred::Or(ps) => ps.iter().any(|p| self.holds(p, st, traits, now)),
            Pred::Not(p) => !self.holds(p, st, traits, now),
            Pred::Agg { f, agg, cmp, value } => {
                let v = if *agg == Agg::Distinct {
                    Some(st.features.distinct(cat, *f, now) as f64)
                } else {
                    aggregate(*agg, st.features.stats(cat, *f, now))
                };
                v.is_some_and(|v| compare(v, *cmp, *value))
            }
            Pred::Has(f) => st.features.stats(cat, *f, now).n > 0,
            Pred::No(f) => st.features.stats(cat, *f, now).n == 0,
            Pred::Seq(f) => st.features.sequence(cat, *f, now),
            Pred::Seen { f, last, test } => {
                let x = st.features.seen(*f).map(|(a, b)| if *last { b } else { a });
                time_test(x, test, now)
            }
            Pred::Trait { name, test } => {
                crate::value::trait_or_metric(traits, name, now).passes(test)
            }
            Pred::Age(test) => {
                let a = traits
                    .age_at(now)
                    .map_or(Value::Null, |a| Value::Num(a.0 as f64));
                a.passes(test)
            }
            Pred::Segment(i) => st.is_member(*i),
        }
    }

    /// Evaluates segment `i` at `now`; records and tells whether its membership changed.
    fn evaluate_one(
        &self,
        i: usize,
        st: &mut Membership,
        traits: &dyn Traits,
        now: i64,
        out: &mut Vec<Change>,
    ) -> bool {
        let on = self.holds(&self.segs[i].pred, st, traits, now);
        let changed = st.set(i, on, now);
        if changed {
            out.push(Change {
                segment: i,
                entered: on,
                at_ms: now,
            });
        }
        changed
    }

    /// Evaluates segments at `now` (all of them, or those marked dirty and the segments
    /// that refer to a changed one) and records the changes.
    fn evaluate(
        &self,
        st: &mut Membership,
        traits: &dyn Traits,
        now: i64,
        dirty: Option<Dirty>,
        out: &mut Vec<Change>,
    ) {
        let Some(mut d) = dirty else {
            for &i in &self.order {
                self.evaluate_one(i, st, traits, now, out);
            }
            return;
        };
        let mut from = 0;
        while let Some(k) = d.take_from(from) {
            from = k + 1;
            let i = self.order[k];
            if self.evaluate_one(i, st, traits, now, out) {
                // Dependents come later in the order.
                self.dependents[i]
                    .iter()
                    .for_each(|j| d.mark(self.rank[*j]));
            }
        }
    }

    /// The segments an event named `name` can change directly (by rank), plus those
    /// reading traits when `traits_changed`.
    fn dirty_for(&self, name: &str, traits_changed: bool) -> Option<Dirty> {
        let named = self.dirty_named.get(name).unwrap_or(&self.dirty_any);
        let traits_dirty = traits_changed && !self.dirty_traits.is_empty();
        if named.is_empty() && !traits_dirty {
            return None;
        }
        let mut d = Dirty::new(self.order.len());
        d.marks(named);
        if traits_changed {
            d.marks(&self.dirty_traits);
        }
        Some(d)
    }

    /// The first event of a new profile (empty state) arrived at `now` (`None`: an event no
    /// feature reads): the memberships after it, all recorded as entries at `now`.
    pub fn on_first_event(
        &self,
        st: &mut Membership,
        ev: Option<&Event<'_>>,
        traits: &dyn Traits,
        now: i64,
        out: &mut Vec<Change>,
    ) {
        // Before its first event the profile is empty, and so is every segment's input but
        // the event's features and the traits: start from the memberships of the empty
        // profile and evaluate only what the event or the traits can change.
        st.member = self.empty.iter().map(|i| (*i as u32, now)).collect();
        let dirty = match ev {
            Some(ev) => {
                st.features.observe(&self.catalog, ev, now);
                self.dirty_for(ev.name, true)
            }
            None => (!self.dirty_traits.is_empty()).then(|| {
                let mut d = Dirty::new(self.order.len());
                d.marks(&self.dirty_traits);
                d
            }),
        };
        if let Some(d) = dirty {
            self.evaluate(st, traits, now, Some(d), &mut Vec::new());
        }
        // Every membership it has now is an entry, at `now`.
        out.extend(st.member.iter().map(|(i, _)| Change {
            segment: *i as usize,
            entered: true,
            at_ms: now,
        }));
    }

    /// An event arrived at `now`; `traits_changed` says whether it changed the profile's
    /// traits (already applied). Changes due by time before `now` must have been taken
    /// with [`Self::advance`] first.
    pub fn on_event(
        &self,
        st: &mut Membership,
        ev: &Event<'_>,
        traits: &dyn Traits,
        traits_changed: bool,
        now: i64,
        out: &mut Vec<Change>,
    ) {
        st.features.observe(&self.catalog, ev, now);
        if let Some(d) = self.dirty_for(ev.name, traits_changed) {
            self.evaluate(st, traits, now, Some(d), out);
        }
    }

    /// The earliest instant after `now` at which an event just observed (named `name`, at
    /// `time_ms`) can change a membership by time alone. After an event that changed no
    /// traits, the profile's next change is the earlier of this and the one before
    /// (if that is still ahead): an event only adds such instants.
    pub fn event_due(&self, name: &str, time_ms: i64, now: i64) -> Option<i64> {
        let mut best: Option<i64> = None;
        let mut consider = |t: i64| {
            if t > now {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        for f in self.catalog.for_event(name) {
            for v in self.catalog.views(f) {
                if let Some(w) = self.catalog.defs()[*v as usize].window {
                    consider(time_ms.saturating_add(w));
                }
            }
            for d in &self.ago[f as usize] {
                consider(time_ms.saturating_add(*d));
                consider(time_ms.saturating_add(*d).saturating_add(1));
            }
        }
        best
    }

    /// The profile's traits changed with no event any feature reads: evaluate the
    /// segments that read traits (and those that refer to them).
    pub fn on_traits(
        &self,
        st: &mut Membership,
        traits: &dyn Traits,
        now: i64,
        out: &mut Vec<Change>,
    ) {
        if let Some(d) = self.dirty_for("", true) {
            self.evaluate(st, traits, now, Some(d), out);
        }
    }

    /// A new profile state after a redefinition: features remapped; new features must
    /// then be filled by [`Features::observe_only`] from history before
    /// [`Self::refresh`] evaluates everything.
    pub fn carry_over(&self, st: &mut Membership, r: &Redefined) {
        if !r.features_kept {
            st.features.remap(&r.features);
        }
        if r.segments_kept {
            return;
        }
        let mut member: Vec<(u32, i64)> = st
            .member
            .iter()
            .filter_map(|(i, at)| {
                Some((r.segments.get(*i as usize).copied().flatten()? as u32, *at))
            })
            .collect();
        member.sort_unstable();
        st.member = member;
    }

    /// Another profile was merged into this one at `now`.
    pub fn on_merge(
        &self,
        st: &mut Membership,
        other: &Membership,
        traits: &dyn Traits,
        now: i64,
        out: &mut Vec<Change>,
    ) {
        st.features.absorb(&self.catalog, &other.features, now);
        let from = out.len();
        self.evaluate(st, traits, now, None, out);
        // A segment the absorbed profile was in counts from when it entered: the merged
        // customer has been in it since the earlier of the two entries, whichever
        // profile survives and in whatever order several merges arrive.
        for (i, since) in &other.member {
            if let Ok(k) = st.member.binary_search_by_key(i, |m| m.0) {
                let entered_now = out[from..]
                    .iter()
                    .any(|c| c.segment == *i as usize && c.entered);
                if entered_now || *since < st.member[k].1 {
                    st.member[k].1 = (*since).min(st.member[k].1);
                }
            }
        }
    }

    /// Something other than an event changed the profile (traits set by an admin, a new
    /// segment definition): evaluate at `now`.
    pub fn refresh(
        &self,
        st: &mut Membership,
        traits: &dyn Traits,
        now: i64,
        out: &mut Vec<Change>,
    ) {
        self.evaluate(st, traits, now, None, out);
    }

    /// The segments of this set a redefinition `r` (into this set) leaves to evaluate
    /// again: the new and edited ones and, transitively, those referring to them. The
    /// others keep their carried-over memberships.
    pub fn changed_by(&self, r: &Redefined) -> Vec<usize> {
        let mut fresh = vec![true; self.segs.len()];
        for i in r.segments.iter().flatten() {
            if let Some(f) = fresh.get_mut(*i) {
                *f = false;
            }
        }
        let mut stack: Vec<usize> = (0..fresh.len()).filter(|i| fresh[*i]).collect();
        while let Some(i) = stack.pop() {
            for j in &self.dependents[i] {
                if !fresh[*j] {
                    fresh[*j] = true;
                    stack.push(*j);
                }
            }
        }
        (0..fresh.len()).filter(|i| fresh[*i]).collect()
    }

    /// After a redefinition: evaluates only `changed` (from [`Self::changed_by`]) at
    /// `now`, the state having been carried over and its new features filled.
    pub fn refresh_changed(
        &self,
        st: &mut Membership,
        traits: &dyn Traits,
        now: i64,
        changed: &[usize],
        out: &mut Vec<Change>,
    ) {
        if changed.is_empty() {
            return;
        }
        let mut d = Dirty::new(self.order.len());
        for i in changed {
            d.mark(self.rank[*i]);
        }
        self.evaluate(st, traits, now, Some(d), out);
    }

    /// Time passed from `from` to `to`: every change on the way, each at its instant.
    pub fn advance(
        &self,
        st: &mut Membership,
        traits: &dyn Traits,
        from: i64,
        to: i64,
        out: &mut Vec<Change>,
    ) {
        let mut now = from;
        while let Some(t) = self.next_change(st, traits, now).filter(|t| *t <= to) {
            self.evaluate(st, traits, t, None, out);
            now = t;
        }
        st.features.prune(&self.catalog, to);
    }

    /// [`Self::next_change`] for the segments `changed` only: the instants their own
    /// features and time tests can flip. After a redefinition, the earlier of this and
    /// the profile's previous next change is never later than the full computation.
    pub fn next_change_of(
        &self,
        st: &Membership,
        traits: &dyn Traits,
        now: i64,
        changed: &[usize],
    ) -> Option<i64> {
        let mut best: Option<i64> = None;
        let mut consider = |t: i64| {
            if t > now {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        let mut age = None;
        let mut fs = Vec::new();
        for &i in changed {
            let Some(s) = self.segs.get(i) else { continue };
            fs.clear();
            s.pred.features(&mut fs);
            for f in &fs {
                if let Some(t) = st.features.expiry_of(&self.catalog, *f, now) {
                    consider(t);
                }
            }
            if s.clock {
                self.time_points(&s.pred, st, traits, now, &mut age, &mut consider);
            }
        }
        best
    }

    /// The earliest instant after `now` at which a membership can change with no new
    /// event; `None` when only an event can change it.
    pub fn next_change(&self, st: &Membership, traits: &dyn Traits, now: i64) -> Option<i64> {
        let mut best: Option<i64> = None;
        let mut consider = |t: i64| {
            if t > now {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        if let Some(t) = st.features.next_expiry(&self.catalog, now) {
            consider(t);
        }
        let mut age = None;
        for s in self.segs.iter().filter(|s| s.clock) {
            self.time_points(&s.pred, st, traits, now, &mut age, &mut consider);
        }
        best
    }

    /// Instants after `now` at which a time test in `p` can flip; `age` caches the next
    /// birthday (computed once per call of [`Self::next_change`]).
    fn time_points(
        &self,
        p: &Pred,
        st: &Membership,
        traits: &dyn Traits,
        now: i64,
        age: &mut Option<Option<i64>>,
        f: &mut dyn FnMut(i64),
    ) {
        match p {
            Pred::And(ps) | Pred::Or(ps) => ps
                .iter()
                .for_each(|p| self.time_points(p, st, traits, now, age, f)),
            Pred::Not(p) => self.time_points(p, st, traits, now, age, f),
            Pred::Seen {
                f: id,
                last,
                test: TimeTest::Ago(_, d),
            } => {
                if let Some((a, b)) = st.features.seen(*id) {
                    let x = if *last { b } else { a };
                    // `x cmp now - d` can flip when now reaches x + d or just after it.
                    f(x.saturating_add(d.0));
                    f(x.saturating_add(d.0).saturating_add(1));
                }
            }
            // Metrics drift with time: lifetime value as the customer ages (looked at
            // again daily), scores as they decay (at the instant they cross the bound).
            Pred::Trait { name, test } if crate::metric_of(name).is_some() => {
                let m = crate::metric_of(name).unwrap_or_default();
                if let Some(t) = traits.metric_changes_at(m, test, now) {
                    f(t);
                    f(t.saturating_add(1));
                }
            }
            Pred::Age(_) => {
                let next = *age.get_or_insert_with(|| traits.age_at(now).and_then(|a| a.1));
                if let Some(t) = next {
                    f(t);
                }
            }
            _ => {}
        }
    }
}

/// The value of an aggregate over count/numeric stats; `None` for the average, minimum
/// or maximum of nothing.
pub fn aggregate(agg: Agg, s: crate::feature::Stats) -> Option<f64> {
    let scaled = |x: i128| x as f64 / SCALE;
    match agg {
        Agg::Count => Some(s.n as f64),
        Agg::Sum => Some(scaled(s.sum)),
        Agg::Avg => (s.n > 0).then(|| scaled(s.sum) / s.n as f64),
        Agg::Min => (s.n > 0).then(|| scaled(i128::from(s.min))),
        Agg::Max => (s.n > 0).then(|| scaled(i128::from(s.max))),
        Agg::Distinct => None,
    }
}
