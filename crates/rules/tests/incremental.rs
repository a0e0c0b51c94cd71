//! The incremental engine against the reference evaluator: random segment definitions,
//! random events (some late, some early), random clock advances; at every step the
//! memberships and every change (which segment, in or out, at which instant) must agree.

use niyet_rules::naive::{durations, Naive, NaiveEvent};
use niyet_rules::value::{Props, Traits, Value};
use niyet_rules::*;
use proptest::prelude::*;
use std::borrow::Cow;

const NAMES: [&str; 3] = ["View", "Add", "Order"];
const SEGMENTS: usize = 4;

fn dur() -> impl Strategy<Value = Dur> {
    (1i64..=8).prop_map(|s| Dur(s * 1000))
}

fn window() -> impl Strategy<Value = Option<Dur>> {
    prop_oneof![Just(None), dur().prop_map(Some)]
}

fn cmp() -> impl Strategy<Value = Cmp> {
    prop_oneof![
        Just(Cmp::Eq),
        Just(Cmp::Ne),
        Just(Cmp::Lt),
        Just(Cmp::Le),
        Just(Cmp::Gt),
        Just(Cmp::Ge)
    ]
}

fn matcher() -> impl Strategy<Value = Match> {
    let name = prop_oneof![
        4 => (0..NAMES.len()).prop_map(|i| NAMES[i].to_string()),
        1 => Just("*".to_string()),
    ];
    let filter = prop_oneof![
        3 => Just(vec![]),
        1 => Just(vec![PropTest { prop: "c".into(), test: Test::Cmp(Cmp::Eq, Literal::Str("a".into())) }]),
        1 => Just(vec![PropTest { prop: "v".into(), test: Test::Cmp(Cmp::Ge, Literal::Num(2.0)) }]),
    ];
    (name, filter).prop_map(|(name, filter)| Match { name, filter })
}

fn events() -> impl Strategy<Value = Events> {
    (matcher(), window()).prop_map(|(event, window)| Events { event, window })
}

fn leaf() -> impl Strategy<Value = Rule> {
    let agg = prop_oneof![
        Just(Agg::Count),
        Just(Agg::Sum),
        Just(Agg::Avg),
        Just(Agg::Min),
        Just(Agg::Max),
        Just(Agg::Distinct)
    ];
    prop_oneof![
        4 => (agg, events(), cmp(), 0i64..=6).prop_map(|(agg, of, cmp, v)| {
            let prop = match agg {
                Agg::Count => None,
                Agg::Distinct => Some("c".to_string()),
                _ => Some("v".to_string()),
            };
            Rule::Aggregate(Aggregate { agg, of, prop, cmp, value: v as f64 / 2.0 })
        }),
        2 => events().prop_map(Rule::Has),
        2 => events().prop_map(Rule::No),
        2 => (matcher(), matcher(), dur(), window()).prop_map(|(first, then, within, window)| {
            Rule::Sequence(Sequence { first, then, within, window })
        }),
        2 => (any::<bool>(), prop::option::of(matcher()), prop_oneof![
            3 => (cmp(), dur()).prop_map(|(c, d)| TimeTest::Ago(c, d)),
            1 => Just(TimeTest::IsNull),
            1 => Just(TimeTest::IsNotNull),
        ]).prop_map(|(last, event, test)| Rule::Seen(Seen { last, event, test })),
        1 => (0i64..4).prop_map(|x| Rule::Trait(TraitTest {
            name: "t".into(),
            test: Test::Cmp(Cmp::Ge, Literal::Num(x as f64)),
        })),
        1 => (0..SEGMENTS).prop_map(|i| Rule::Segment(format!("s{i}"))),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..=3).prop_map(Rule::And),
            prop::collection::vec(inner.clone(), 2..=3).prop_map(Rule::Or),
            inner.prop_map(|r| Rule::Not(Box::new(r))),
        ]
    })
}

/// Segment `i` may only refer to segments before it; other references become a trait test.
fn acyclic(r: Rule, i: usize) -> Rule {
    match r {
        Rule::And(rs) => Rule::And(rs.into_iter().map(|r| acyclic(r, i)).collect()),
        Rule::Or(rs) => Rule::Or(rs.into_iter().map(|r| acyclic(r, i)).collect()),
        Rule::Not(r) => Rule::Not(Box::new(acyclic(*r, i))),
        Rule::Segment(n) if n[1..].parse::<usize>().unwrap_or(usize::MAX) >= i => {
            Rule::Trait(TraitTest {
                name: "t".into(),
                test: Test::IsNull,
            })
        }
        other => other,
    }
}

fn segments() -> impl Strategy<Value = Vec<(String, Rule)>> {
    prop::collection::vec(rule(), 1..=SEGMENTS).prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, r)| (format!("s{i}"), acyclic(r, i)))
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Step {
    Advance(i64),
    Event {
        name: usize,
        /// Event time relative to now: late events and a few from the future.
        dt: i64,
        v: Option<i64>,
        c: Option<&'static str>,
        t: Option<i64>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => prop_oneof![0i64..2_000, 0i64..12_000, Just(1), Just(1000)].prop_map(Step::Advance),
        2 => (
            0..NAMES.len(),
            prop_oneof![3 => -3_000i64..=0, 1 => -10_000i64..=1_000, 1 => Just(0)],
            prop::option::of(1i64..=4),
            prop::option::of(prop_oneof![Just("a"), Just("b"), Just("c")]),
            prop::option::of(0i64..4),
        )
            .prop_map(|(name, dt, v, c, t)| Step::Event { name, dt, v, c, t }),
    ]
}

#[derive(Default)]
struct Map(Option<i64>);

impl Traits for Map {
    fn get(&self, path: &str) -> Value<'_> {
        match (path, self.0) {
            ("t", Some(x)) => Value::Num(x as f64),
            _ => Value::Null,
        }
    }
}

fn naive_event(id: u64, name: usize, time_ms: i64, v: Option<i64>, c: Option<&str>) -> NaiveEvent {
    let mut props = Vec::new();
    if let Some(v) = v {
        props.push(("v".to_string(), Value::Num(v as f64)));
    }
    if let Some(c) = c {
        props.push(("c".to_string(), Value::Str(Cow::Owned(c.to_string()))));
    }
    NaiveEvent {
        id,
        name: NAMES[name].to_string(),
        time_ms,
        props,
    }
}

/// The reference: memberships recomputed from scratch at every instant at which one can
/// change (each event time plus each duration the rules mention, and one ms after).
struct Reference<'a> {
    naive: Naive<'a>,
    durs: Vec<i64>,
    member: Vec<bool>,
}

impl Reference<'_> {
    fn at(&mut self, events: &[NaiveEvent], traits: &Map, now: i64, out: &mut Vec<Change>) {
        for (i, s) in self.naive.segments.iter().enumerate() {
            let m = self.naive.member(&s.0, events, traits, now);
            if m != self.member[i] {
                self.member[i] = m;
                out.push(Change {
                    segment: i,
                    entered: m,
                    at_ms: now,
                });
            }
        }
    }

    fn advance(
        &mut self,
        events: &[NaiveEvent],
        traits: &Map,
        from: i64,
        to: i64,
        out: &mut Vec<Change>,
    ) {
        let mut instants: Vec<i64> = events
            .iter()
            .flat_map(|e| {
                self.durs
                    .iter()
                    .flat_map(move |d| [e.time_ms + d, e.time_ms + d + 1])
            })
            .filter(|t| *t > from && *t <= to)
            .collect();
        instants.sort_unstable();
        instants.dedup();
        for t in instants {
            self.at(events, traits, t, out);
        }
    }
}

fn sorted(mut v: Vec<Change>) -> Vec<(i64, usize, bool)> {
    let mut k: Vec<_> = v
        .drain(..)
        .map(|c| (c.at_ms, c.segment, c.entered))
        .collect();
    k.sort_unstable();
    k
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Live, incremental memberships equal the reference at every step, and so does every
    /// change, at the same instant.
    #[test]
    fn incremental_equals_reference(defs in segments(), steps in prop::collection::vec(step(), 1..60)) {
        let set = SegmentSet::new(&defs).unwrap();
        let mut durs = Vec::new();
        defs.iter().for_each(|d| durations(&d.1, &mut durs));
        let mut reference = Reference { naive: Naive { segments: &defs }, durs, member: vec![false; defs.len()] };
        let mut st = Membership::default();
        let mut traits = Map::default();
        let mut events: Vec<NaiveEvent> = Vec::new();
        let mut now = 1_000_000i64;
        let (mut inc, mut naive) = (Vec::new(), Vec::new());
        set.refresh(&mut st, &traits, now, &mut inc);
        reference.at(&events, &traits, now, &mut naive);
        prop_assert_eq!(sorted(std::mem::take(&mut inc)), sorted(std::mem::take(&mut naive)));
        for (k, s) in steps.into_iter().enumerate() {
            match s {
                Step::Advance(dt) => {
                    set.advance(&mut st, &traits, now, now + dt, &mut inc);
                    reference.advance(&events, &traits, now, now + dt, &mut naive);
                    now += dt;
                }
                Step::Event { name, dt, v, c, t } => {
                    if t.is_some() {
                        traits.0 = t;
                    }
                    let e = naive_event(k as u64, name, now + dt, v, c);
                    let ev = Event { id: e.id, name: &e.name, time_ms: e.time_ms, props: &e as &dyn Props };
                    let before = set.next_change(&st, &traits, now);
                    set.on_event(&mut st, &ev, &traits, t.is_some(), now, &mut inc);
                    // The shortcut the partition owners take: with no trait change, the
                    // next change is never later than the earlier of the one before and
                    // the event's own instants.
                    if t.is_none() {
                        let quick = match (before, set.event_due(&e.name, e.time_ms, now)) {
                            (Some(b), Some(x)) => Some(b.min(x)),
                            (b, x) => b.or(x),
                        };
                        let full = set.next_change(&st, &traits, now);
                        if let Some(f) = full {
                            prop_assert!(quick.is_some_and(|q| q <= f), "quick {:?} full {:?}", quick, full);
                        }
                    }
                    events.push(e.clone());
                    reference.at(&events, &traits, now, &mut naive);
                }
            }
            prop_assert_eq!(sorted(std::mem::take(&mut inc)), sorted(std::mem::take(&mut naive)), "step {}", k);
            for i in 0..defs.len() {
                prop_assert_eq!(st.is_member(i), reference.member[i]);
            }
        }
    }

    /// Two profiles merged: the memberships and later changes are those of one profile
    /// that saw every event of both.
    #[test]
    fn merged_profiles_equal_one_profile(
        defs in segments(),
        steps in prop::collection::vec((step(), any::<bool>()), 1..40),
        after in prop::collection::vec(0i64..6_000, 0..4),
    ) {
        let set = SegmentSet::new(&defs).unwrap();
        let mut durs = Vec::new();
        defs.iter().for_each(|d| durations(&d.1, &mut durs));
        let traits = Map::default();
        let (mut a, mut b) = (Membership::default(), Membership::default());
        let mut all = Vec::new();
        let mut now = 1_000_000i64;
        let mut sink = Vec::new();
        for (k, (s, to_b)) in steps.into_iter().enumerate() {
            match s {
                Step::Advance(dt) => {
                    set.advance(&mut a, &traits, now, now + dt, &mut sink);
                    set.advance(&mut b, &traits, now, now + dt, &mut sink);
                    now += dt;
                }
                Step::Event { name, dt, v, c, .. } => {
                    let e = naive_event(k as u64, name, now + dt, v, c);
                    let ev = Event { id: e.id, name: &e.name, time_ms: e.time_ms, props: &e as &dyn Props };
                    set.on_event(if to_b { &mut b } else { &mut a }, &ev, &traits, false, now, &mut sink);
                    all.push(e);
                }
            }
        }
        set.on_merge(&mut a, &b, &traits, now, &mut sink);
        let mut reference = Reference { naive: Naive { segments: &defs }, durs, member: vec![false; defs.len()] };
        reference.at(&all, &traits, now, &mut Vec::new());
        for i in 0..defs.len() {
            prop_assert_eq!(a.is_member(i), reference.member[i], "segment {} after the merge", i);
        }
        for dt in after {
            let (mut inc, mut naive) = (Vec::new(), Vec::new());
            set.advance(&mut a, &traits, now, now + dt, &mut inc);
            reference.advance(&all, &traits, now, now + dt, &mut naive);
            now += dt;
            prop_assert_eq!(sorted(inc), sorted(naive));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Segments redefined mid-stream (some kept, some edited, some new), the new features
    /// filled from the event history: memberships then equal the reference for the new
    /// definitions, and so do later changes.
    #[test]
    fn redefinition_with_backfill_equals_reference(
        before in segments(),
        after in segments(),
        steps in prop::collection::vec(step(), 1..40),
        later in prop::collection::vec(0i64..6_000, 0..4),
    ) {
        // Keep some of the old definitions under their old names.
        let mut defs2 = after.clone();
        for (i, d) in before.iter().enumerate() {
            if i % 2 == 0 && i < defs2.len() {
                defs2[i] = d.clone();
            }
        }
        let set1 = SegmentSet::new(&before).unwrap();
        let mut traits = Map::default();
        let mut st = Membership::default();
        let mut all = Vec::new();
        let mut now = 1_000_000i64;
        let mut sink = Vec::new();
        set1.refresh(&mut st, &traits, now, &mut sink);
        for (k, s) in steps.into_iter().enumerate() {
            match s {
                Step::Advance(dt) => {
                    set1.advance(&mut st, &traits, now, now + dt, &mut sink);
                    now += dt;
                }
                Step::Event { name, dt, v, c, t } => {
                    if t.is_some() {
                        traits.0 = t;
                    }
                    let e = naive_event(k as u64, name, now + dt, v, c);
                    let ev = Event { id: e.id, name: &e.name, time_ms: e.time_ms, props: &e as &dyn Props };
                    set1.on_event(&mut st, &ev, &traits, t.is_some(), now, &mut sink);
                    all.push(e);
                }
            }
        }
        let due_before = set1.next_change(&st, &traits, now).unwrap_or(i64::MAX);
        let (set2, r) = set1.redefine(&defs2).unwrap();
        set2.carry_over(&mut st, &r);
        for e in &all {
            let ev = Event { id: e.id, name: &e.name, time_ms: e.time_ms, props: e as &dyn Props };
            st.features.observe_only(set2.catalog(), &r.new_features, &ev, now);
        }
        let changed = set2.changed_by(&r);
        set2.refresh_changed(&mut st, &traits, now, &changed, &mut sink);
        // The next change from the changed segments alone and the one before never comes
        // later than the full computation.
        let quick = set2
            .next_change_of(&st, &traits, now, &changed)
            .map_or(due_before, |t| t.min(due_before));
        let full = set2.next_change(&st, &traits, now).unwrap_or(i64::MAX);
        prop_assert!(quick <= full, "quick {} > full {}", quick, full);
        let mut durs = Vec::new();
        defs2.iter().for_each(|d| durations(&d.1, &mut durs));
        let mut reference = Reference { naive: Naive { segments: &defs2 }, durs, member: vec![false; defs2.len()] };
        reference.at(&all, &traits, now, &mut Vec::new());
        for i in 0..defs2.len() {
            prop_assert_eq!(st.is_member(i), reference.member[i], "segment {}", i);
        }
        for dt in later {
            let (mut inc, mut naive) = (Vec::new(), Vec::new());
            set2.advance(&mut st, &traits, now, now + dt, &mut inc);
            reference.advance(&all, &traits, now, now + dt, &mut naive);
            now += dt;
            prop_assert_eq!(sorted(inc), sorted(naive));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    /// A new profile's first event (read by features or not): starting from the empty
    /// profile's memberships and evaluating only what the event and the traits touch gives
    /// the memberships and the entries of the reference, which recomputes every segment
    /// after the event.
    #[test]
    fn a_first_event_equals_the_reference(
        defs in segments(),
        name in 0..NAMES.len(),
        dt in -5_000i64..5_000,
        v in prop::option::of(1i64..=4),
        c in prop::option::of(prop_oneof![Just("a"), Just("b"), Just("c")]),
        t in prop::option::of(0i64..4),
        with_event in prop::bool::weighted(0.8),
    ) {
        let set = SegmentSet::new(&defs).unwrap();
        let traits = Map(t);
        let now = 1_000_000i64;
        let e = naive_event(1, name, now + dt, v, c);
        let ev = Event { id: e.id, name: &e.name, time_ms: e.time_ms, props: &e as &dyn Props };
        let mut st = Membership::default();
        let mut out = Vec::new();
        set.on_first_event(&mut st, with_event.then_some(&ev), &traits, now, &mut out);
        let mut durs = Vec::new();
        defs.iter().for_each(|d| durations(&d.1, &mut durs));
        let mut reference = Reference { naive: Naive { segments: &defs }, durs, member: vec![false; defs.len()] };
        let mut want = Vec::new();
        let events = if with_event { std::slice::from_ref(&e) } else { &[] };
        reference.at(events, &traits, now, &mut want);
        prop_assert_eq!(sorted(out), sorted(want));
        for i in 0..defs.len() {
            prop_assert_eq!(st.is_member(i), reference.member[i], "segment {}", i);
        }
    }
}
