//! Compiling rules into per-profile features and predicates over them.
//!
//! A [`Catalog`] holds every feature any compiled rule needs, each once: `count(Order
//! Completed in 90d)` used by ten segments is one feature. A [`Pred`] is a rule whose
//! event conditions point at features by [`FeatureId`].

use crate::ast::{Agg, Cmp, Match, Rule, Test, TimeTest};
use std::collections::HashMap;

/// Index of a feature in its [`Catalog`].
pub type FeatureId = u32;

/// What a feature keeps for each profile.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureKind {
    /// Matching events in the window: count.
    Count,
    /// A numeric property of matching events: count, sum, min, max.
    Numeric(String),
    /// Distinct values of a property of matching events.
    Distinct(String),
    /// First and last time of a matching event (all time).
    Seen,
    /// `first then second within`: whether such a pair exists (in the window).
    Sequence { then: Match, within: i64 },
}

/// One feature: matching events, what is kept of them, over which window.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDef {
    /// The events it looks at (for a sequence, the first step).
    pub event: Match,
    pub kind: FeatureKind,
    /// Window in ms; `None` is all time.
    pub window: Option<i64>,
}

impl FeatureDef {
    /// Whether events named `name` can touch this feature.
    pub fn wants(&self, name: &str) -> bool {
        let m = |x: &Match| x.name == "*" || x.name == name;
        m(&self.event) || matches!(&self.kind, FeatureKind::Sequence { then, .. } if m(then))
    }
}

/// Every feature the compiled rules need, each kept once.
///
/// Windowed counts, numeric and distinct features over the same events share one state
/// per profile: `count(Product Viewed in 7d)`, `Product Viewed in 30d` and
/// `count(Product Viewed in 90d)` all read the times kept for the longest window (its
/// feature is the *store* of the others), each through its own window.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    defs: Vec<FeatureDef>,
    keys: HashMap<String, FeatureId>,
    /// Stores only: events touch the state of stores.
    by_name: HashMap<String, Vec<FeatureId>>,
    any_name: Vec<FeatureId>,
    /// For each feature, the feature whose state holds its data.
    store: Vec<FeatureId>,
    /// For each store, the features read from its state (itself included); empty for
    /// features that are not stores.
    views: Vec<Vec<FeatureId>>,
    /// Store of each group of features that share a state.
    groups: HashMap<String, FeatureId>,
    /// Trait names rules read, each kept once: every rule reading `trait.city` holds the
    /// same allocation, so a reader can cache values by the name's address.
    trait_names: HashMap<String, std::sync::Arc<str>>,
}

/// A rule that cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error("`{0}` needs at least two rules")]
    TooFew(&'static str),
    #[error("{0} needs a property, as in sum(Order Completed.revenue in 365d)")]
    MissingProperty(&'static str),
    #[error("count takes no property")]
    CountProperty,
    #[error("an event name must not be empty")]
    EmptyName,
    #[error("the value {0} is not a finite number")]
    NotFinite(f64),
    #[error("unknown segment `{0}`")]
    UnknownSegment(String),
}

/// A compiled rule: the predicate over features, traits and other segments.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Not(Box<Pred>),
    /// An aggregate of a feature compared with a value.
    Agg {
        f: FeatureId,
        agg: Agg,
        cmp: Cmp,
        value: f64,
    },
    /// At least one event counted by a `Count` feature.
    Has(FeatureId),
    /// No event counted by a `Count` feature.
    No(FeatureId),
    /// A `Sequence` feature holds.
    Seq(FeatureId),
    /// A `Seen` feature's first or last time tested.
    Seen {
        f: FeatureId,
        last: bool,
        test: TimeTest,
    },
    Trait {
        /// Shared by every rule of the catalog that reads it ([`Catalog::trait_names`]).
        name: std::sync::Arc<str>,
        test: Test,
    },
    Age(Test),
    /// Membership of the segment with this index in the set being compiled.
    Segment(usize),
}

fn agg_name(a: Agg) -> &'static str {
    match a {
        Agg::Count => "count",
        Agg::Sum => "sum",
        Agg::Avg => "avg",
        Agg::Min => "min",
        Agg::Max => "max",
        Agg::Distinct => "distinct",
    }
}

impl Catalog {
    /// The features, by id.
    pub fn defs(&self) -> &[FeatureDef] {
        &self.defs
    }

    /// Event names some feature asks for by name.
    pub fn event_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.by_name.keys().map(String::as_str)
    }

    /// The features an event named `name` can touch.
    pub fn for_event<'a>(&'a self, name: &str) -> impl Iterator<Item = FeatureId> + 'a {
        let named = self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[]);
        named.iter().chain(self.any_name.iter()).copied()
    }

    /// The feature whose per-profile state holds the data of feature `id`.
    pub fn store_of(&self, id: FeatureId) -> FeatureId {
        self.store.get(id as usize).copied().unwrap_or(id)
    }

    /// Whether feature `id` has a state of its own.
    pub fn is_store(&self, id: FeatureId) -> bool {
        self.store_of(id) == id
    }

    /// The features read from the state of store `id` (itself included).
    pub fn views(&self, id: FeatureId) -> &[FeatureId] {
        self.views.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The features events of every name can touch (`*` matches).
    pub fn for_any_event(&self) -> impl Iterator<Item = FeatureId> + '_ {
        self.any_name.iter().copied()
    }

    /// The trait names compiled rules read: the very allocations their predicates hold.
    pub fn trait_names(&self) -> impl Iterator<Item = &std::sync::Arc<str>> + '_ {
        self.trait_names.values()
    }

    fn trait_name(&mut self, name: &str) -> std::sync::Arc<str> {
        self.trait_names
            .entry(name.to_string())
            .or_insert_with(|| name.into())
            .clone()
    }

    fn feature(&mut self, def: FeatureDef) -> FeatureId {
        // Debug output is structural (floats print round-trip), so equal features share
        // one key.
        let key = format!("{def:?}");
        if let Some(id) = self.keys.get(&key) {
            return *id;
        }
        let id = self.defs.len() as FeatureId;
        let group = (def.window.is_some()
            && matches!(
                def.kind,
                FeatureKind::Count | FeatureKind::Numeric(_) | FeatureKind::Distinct(_)
            ))
        .then(|| format!("{:?}|{:?}", def.event, def.kind));
        self.defs.push(def);
        self.keys.insert(key, id);
        self.store.push(id);
        self.views.push(vec![id]);
        let Some(g) = group else {
            self.index_names(id, true);
            return id;
        };
        match self.groups.get(&g).copied() {
            None => {
                self.groups.insert(g, id);
                self.index_names(id, true);
            }
            Some(s) if self.defs[id as usize].window > self.defs[s as usize].window => {
                // The longer window holds everything the others read.
                let mut views = std::mem::take(&mut self.views[s as usize]);
                views.push(id);
                for v in &views {
                    self.store[*v as usize] = id;
                }
                self.views[id as usize] = views;
                self.index_names(s, false);
                self.index_names(id, true);
                self.groups.insert(g, id);
            }
            Some(s) => {
                self.store[id as usize] = s;
                self.views[s as usize].push(id);
                self.views[id as usize].clear();
            }
        }
        id
    }

    /// Adds (or removes) a store to the lists of the event names it reads.
    fn index_names(&mut self, id: FeatureId, add: bool) {
        let def = &self.defs[id as usize];
        let mut names = vec![def.event.name.clone()];
        if let FeatureKind::Sequence { then, .. } = &def.kind {
            names.push(then.name.clone());
        }
        names.sort();
        names.dedup();
        for n in names {
            let list = if n == "*" {
                &mut self.any_name
            } else {
                self.by_name.entry(n).or_default()
            };
            if add {
                list.push(id);
            } else {
                list.retain(|x| *x != id);
            }
        }
    }

    /// Compiles a rule. `segment` resolves a segment name to its index (for rules that
    /// refer to other segments).
    pub fn compile(
        &mut self,
        rule: &Rule,
        segment: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Pred, CompileError> {
        let name_ok = |m: &Match| {
            if m.name.is_empty() {
                Err(CompileError::EmptyName)
            } else {
                Ok(())
            }
        };
        Ok(match rule {
            Rule::And(rs) | Rule::Or(rs) => {
                let and = matches!(rule, Rule::And(_));
                if rs.len() < 2 {
                    return Err(CompileError::TooFew(if and { "and" } else { "or" }));
                }
                let ps = rs
                    .iter()
                    .map(|r| self.compile(r, segment))
                    .collect::<Result<Vec<_>, _>>()?;
                if and {
                    Pred::And(ps)
                } else {
                    Pred::Or(ps)
                }
            }
            Rule::Not(r) => Pred::Not(Box::new(self.compile(r, segment)?)),
            Rule::Aggregate(a) => {
                name_ok(&a.of.event)?;
                if !a.value.is_finite() {
                    return Err(CompileError::NotFinite(a.value));
                }
                let kind = match (a.agg, &a.prop) {
                    (Agg::Count, None) => FeatureKind::Count,
                    (Agg::Count, Some(_)) => return Err(CompileError::CountProperty),
                    (other, None) => return Err(CompileError::MissingProperty(agg_name(other))),
                    (Agg::Distinct, Some(p)) => FeatureKind::Distinct(p.clone()),
                    (_, Some(p)) => FeatureKind::Numeric(p.clone()),
                };
                let f = self.feature(FeatureDef {
                    event: a.of.event.clone(),
                    kind,
                    window: a.of.window.map(|d| d.0),
                });
                Pred::Agg {
                    f,
                    agg: a.agg,
                    cmp: a.cmp,
                    value: a.value,
                }
            }
            Rule::Has(e) | Rule::No(e) => {
                name_ok(&e.event)?;
                let f = self.feature(FeatureDef {
                    event: e.event.clone(),
                    kind: FeatureKind::Count,
                    window: e.window.map(|d| d.0),
                });
                if matches!(rule, Rule::Has(_)) {
                    Pred::Has(f)
                } else {
                    Pred::No(f)
                }
            }
            Rule::Sequence(s) => {
                name_ok(&s.first)?;
                name_ok(&s.then)?;
                Pred::Seq(self.feature(FeatureDef {
                    event: s.first.clone(),
                    kind: FeatureKind::Sequence {
                        then: s.then.clone(),
                        within: s.within.0,
                    },
                    window: s.window.map(|d| d.0),
                }))
            }
            Rule::Seen(s) => {
                let event = s.event.clone().unwrap_or_else(|| Match {
                    name: "*".into(),
                    filter: vec![],
                });
                name_ok(&event)?;
                Pred::Seen {
                    f: self.feature(FeatureDef {
                        event,
                        kind: FeatureKind::Seen,
                        window: None,
                    }),
                    last: s.last,
                    test: s.test.clone(),
                }
            }
            Rule::Trait(t) => Pred::Trait {
                name: self.trait_name(&t.name),
                test: t.test.clone(),
            },
            Rule::Age(t) => Pred::Age(t.clone()),
            Rule::Segment(n) => {
                Pred::Segment(segment(n).ok_or_else(|| CompileError::UnknownSegment(n.clone()))?)
            }
        })
    }
}

impl FeatureDef {
    /// Property paths the feature reads.
    pub fn paths<'a>(&'a self, out: &mut Vec<&'a str>) {
        out.extend(self.event.filter.iter().map(|f| f.prop.as_str()));
        match &self.kind {
            FeatureKind::Numeric(p) | FeatureKind::Distinct(p) => out.push(p),
            FeatureKind::Sequence { then, .. } => {
                out.extend(then.filter.iter().map(|f| f.prop.as_str()))
            }
            _ => {}
        }
    }
}

impl Pred {
    /// Calls `f` on this predicate and every predicate inside it.
    pub fn walk(&self, f: &mut dyn FnMut(&Pred)) {
        f(self);
        match self {
            Pred::And(ps) | Pred::Or(ps) => ps.iter().for_each(|p| p.walk(f)),
            Pred::Not(p) => p.walk(f),
            _ => {}
        }
    }

    /// The features the predicate reads.
    pub fn features(&self, out: &mut Vec<FeatureId>) {
        match self {
            Pred::And(ps) | Pred::Or(ps) => ps.iter().for_each(|p| p.features(out)),
            Pred::Not(p) => p.features(out),
            Pred::Agg { f, .. }
            | Pred::Has(f)
            | Pred::No(f)
            | Pred::Seq(f)
            | Pred::Seen { f, .. } => out.push(*f),
            Pred::Trait { .. } | Pred::Age(_) | Pred::Segment(_) => {}
        }
    }

    /// The segments the predicate reads.
    pub fn segments(&self, out: &mut Vec<usize>) {
        match self {
            Pred::And(ps) | Pred::Or(ps) => ps.iter().for_each(|p| p.segments(out)),
            Pred::Not(p) => p.segments(out),
            Pred::Segment(i) => out.push(*i),
            _ => {}
        }
    }
}
