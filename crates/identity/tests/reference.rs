//! The identity graph against a naive reference: profiles as plain lists of identifiers,
//! found by linear search, merged by the same rules.

use niyet_identity::{Graph, Ident, Rules, ANONYMOUS_ID, EMAIL, USER_ID};
use proptest::prelude::*;
use std::collections::BTreeMap;

struct Reference {
    profiles: BTreeMap<u64, Vec<Ident>>,
    next: u64,
}

fn rank(kind: u8) -> u8 {
    match kind {
        USER_ID => 0,
        EMAIL => 1,
        ANONYMOUS_ID => 5,
        _ => 3,
    }
}

fn limit(kind: u8) -> usize {
    if kind == USER_ID {
        1
    } else {
        usize::MAX
    }
}

/// Whether two identifier sets may become one profile.
fn fits(a: &[Ident], b: &[Ident]) -> bool {
    (0..=5u8).all(|k| {
        let (ca, cb) = (
            a.iter().filter(|i| i.kind == k).count(),
            b.iter().filter(|i| i.kind == k).count(),
        );
        ca == 0 || cb == 0 || ca + cb <= limit(k)
    })
}

impl Reference {
    fn owner(&self, i: &Ident) -> Option<u64> {
        self.profiles
            .iter()
            .find(|(_, ids)| ids.contains(i))
            .map(|(p, _)| *p)
    }

    fn resolve(&mut self, event: &[Ident], explicit: bool) -> Option<u64> {
        let mut ids: Vec<Ident> = Vec::new();
        for i in event {
            if i.value.as_ref() != "unknown" && !ids.contains(i) {
                ids.push(i.clone());
            }
        }
        ids.sort_by_key(|i| rank(i.kind));
        let mut target: Option<u64> = None;
        let mut pending: Vec<Ident> = Vec::new();
        for i in ids {
            match (self.owner(&i), target) {
                (Some(q), Some(p)) if p == q => {}
                (Some(q), Some(p)) => {
                    if explicit || fits(&self.profiles[&p], &self.profiles[&q]) {
                        let (keep, gone) = (p.min(q), p.max(q));
                        let moved = self.profiles.remove(&gone).unwrap();
                        self.profiles.get_mut(&keep).unwrap().extend(moved);
                        target = Some(keep);
                    }
                }
                (Some(q), None) => {
                    if explicit || fits(&self.profiles[&q], &pending) {
                        self.profiles.get_mut(&q).unwrap().append(&mut pending);
                        target = Some(q);
                    }
                }
                (None, Some(p)) => {
                    let n = self.profiles[&p]
                        .iter()
                        .filter(|x| x.kind == i.kind)
                        .count();
                    if explicit || n < limit(i.kind) {
                        self.profiles.get_mut(&p).unwrap().push(i);
                    }
                }
                (None, None) => {
                    if pending.iter().filter(|x| x.kind == i.kind).count() < limit(i.kind) {
                        pending.push(i);
                    }
                }
            }
        }
        if target.is_none() && !pending.is_empty() {
            let id = self.next;
            self.next += 1;
            self.profiles.insert(id, pending);
            target = Some(id);
        }
        target
    }
}

fn ident() -> impl Strategy<Value = Ident> {
    prop_oneof![
        (0..4u8).prop_map(|n| Ident::new(USER_ID, format!("u{n}"))),
        (0..6u8).prop_map(|n| Ident::new(ANONYMOUS_ID, format!("a{n}"))),
        (0..3u8).prop_map(|n| Ident::new(EMAIL, format!("e{n}@x.tr"))),
        Just(Ident::new(ANONYMOUS_ID, "unknown")),
    ]
}

fn events() -> impl Strategy<Value = Vec<(Vec<Ident>, bool)>> {
    prop::collection::vec(
        (
            prop::collection::vec(ident(), 1..4),
            prop::bool::weighted(0.1),
        ),
        1..60,
    )
}

fn partition(g: &Graph) -> BTreeMap<u64, Vec<Ident>> {
    g.profile_ids()
        .into_iter()
        .map(|p| {
            let mut ids: Vec<Ident> = g
                .node(p)
                .unwrap()
                .members
                .iter()
                .map(|m| Ident::new(m.kind, m.value))
                .collect();
            ids.sort();
            (p.0, ids)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every event lands on the profile the reference picks, and the profiles hold the
    /// same identifiers.
    #[test]
    fn graph_equals_reference(evs in events()) {
        let mut g = Graph::new(Rules::default());
        let mut r = Reference { profiles: BTreeMap::new(), next: 1 };
        for (i, (ids, explicit)) in evs.iter().enumerate() {
            let got = g.resolve(ids, i as u64, i as i64, *explicit).profile;
            let want = r.resolve(ids, *explicit);
            prop_assert_eq!(got.map(|p| p.0), want, "event {}", i);
        }
        let mut want = r.profiles.clone();
        for ids in want.values_mut() { ids.sort(); }
        prop_assert_eq!(partition(&g), want);
        // Merged-away ids resolve to a live profile holding their identifiers.
        for (ids, _) in &evs {
            for i in ids {
                if let Some(p) = g.lookup(i) {
                    prop_assert_eq!(g.canonical(p), Some(p));
                }
            }
        }
    }

    /// A capture started at any point and encoded a node at a time while later events
    /// (merges, new profiles, conflicts, an un-merge) keep changing the graph gives the
    /// graph as it stood when it started.
    #[test]
    fn a_capture_while_changing_is_the_graph_at_its_start(
        evs in events(), cut in 0usize..60, step in 1usize..4, unmerge in any::<bool>()
    ) {
        let mut g = Graph::new(Rules::default());
        let mut at_cut = None;
        let mut captured = None;
        let mut landed: Vec<(u64, Vec<Ident>, Option<niyet_identity::ProfileId>)> = Vec::new();
        for (i, (ids, explicit)) in evs.iter().enumerate() {
            if i == cut {
                at_cut = Some(g.snapshot());
                g.begin_capture();
            }
            let p = g.resolve(ids, i as u64, i as i64, *explicit).profile;
            landed.push((i as u64, ids.clone(), p));
            if unmerge && i == cut + 1 {
                if let Some(id) = p.and_then(|p| g.canonical(p)) {
                    let mine: Vec<(u64, Vec<Ident>)> = landed
                        .iter()
                        .filter(|(_, _, q)| q.and_then(|q| g.canonical(q)) == Some(id))
                        .map(|(o, ids, _)| (*o, ids.clone()))
                        .collect();
                    if let Some(x) = ids.first() {
                        let _ = g.split(id, x, &mine, i as u64, i as i64);
                    }
                }
            }
            if captured.is_none() {
                captured = g.capture_step(step);
            }
        }
        if g.capturing() {
            captured = g.finish_capture();
        }
        if let (Some(want), Some(bytes)) = (at_cut, captured) {
            let got: niyet_identity::GraphSnapshot =
                postcard::from_bytes(&bytes.unwrap().into_pieces().unwrap().concat()).unwrap();
            // Same graph once restored (the capture's nodes come in another order).
            prop_assert_eq!(
                Graph::restore(Rules::default(), got).snapshot(),
                Graph::restore(Rules::default(), want).snapshot()
            );
        }
    }

    /// A restart (snapshot, restore) at any point changes nothing.
    #[test]
    fn restart_anywhere_gives_the_same_graph(evs in events(), cut in 0usize..60) {
        let mut straight = Graph::new(Rules::default());
        let mut restarted = Graph::new(Rules::default());
        for (i, (ids, explicit)) in evs.iter().enumerate() {
            if i == cut {
                restarted = Graph::restore(Rules::default(), restarted.snapshot());
            }
            let a = straight.resolve(ids, i as u64, i as i64, *explicit);
            let b = restarted.resolve(ids, i as u64, i as i64, *explicit);
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(straight.snapshot(), restarted.snapshot());
    }
}

#[test]
fn two_logged_in_users_on_one_device_stay_apart() {
    let mut g = Graph::new(Rules::default());
    let device = Ident::new(ANONYMOUS_ID, "shared-tablet");
    let a = g.resolve(&[Ident::new(USER_ID, "ayse"), device.clone()], 1, 1, false);
    let b = g.resolve(
        &[Ident::new(USER_ID, "mehmet"), device.clone()],
        2,
        2,
        false,
    );
    assert_ne!(a.profile, b.profile);
    assert_eq!(b.conflicts, 1);
    assert!(b.created);
    assert_eq!(g.profiles(), 2);
    // The device stays with the first user; the conflict is on the second's profile.
    assert_eq!(g.lookup(&device), a.profile);
    let notes = &g.node(b.profile.unwrap()).unwrap().notes();
    assert!(
        format!("{notes:?}").contains("limit user_id = 1"),
        "{notes:?}"
    );
}

#[test]
fn login_merges_anonymous_history_and_old_id_keeps_resolving() {
    let mut g = Graph::new(Rules::default());
    let mobile = g
        .resolve(&[Ident::new(ANONYMOUS_ID, "m")], 1, 1, false)
        .profile
        .unwrap();
    let desktop = g
        .resolve(&[Ident::new(ANONYMOUS_ID, "d")], 2, 2, false)
        .profile
        .unwrap();
    let login = g.resolve(
        &[Ident::new(USER_ID, "u"), Ident::new(ANONYMOUS_ID, "d")],
        3,
        3,
        false,
    );
    assert_eq!(login.profile, Some(desktop));
    let r = g.resolve(
        &[
            Ident::new(EMAIL, "u@x.tr"),
            Ident::new(ANONYMOUS_ID, "m"),
            Ident::new(USER_ID, "u"),
        ],
        4,
        4,
        false,
    );
    assert_eq!(r.profile, Some(mobile));
    assert_eq!(r.merged, vec![(desktop, mobile)]);
    assert_eq!(g.canonical(desktop), Some(mobile));
    let why = g.explain(mobile);
    let d = why.iter().find(|e| &*e.ident.value == "d").unwrap();
    assert_eq!(d.member.origin, desktop);
    assert_eq!(d.via_merges.len(), 1);
}

#[test]
fn split_moves_the_events_that_came_through_the_identifier() {
    let mut g = Graph::new(Rules::default());
    let e = Ident::new(EMAIL, "family@x.tr");
    let (a1, b1) = (
        Ident::new(ANONYMOUS_ID, "a1"),
        Ident::new(ANONYMOUS_ID, "b1"),
    );
    let b2 = Ident::new(ANONYMOUS_ID, "b2");
    let evs: Vec<(u64, Vec<Ident>)> = vec![
        (0, vec![a1.clone()]),
        (1, vec![a1.clone(), e.clone()]),
        (2, vec![b1.clone()]),
        (3, vec![b1.clone(), b2.clone()]),
        (4, vec![b1.clone(), e.clone()]),
    ];
    for (o, ids) in &evs {
        g.resolve(ids, *o, *o as i64, false);
    }
    assert_eq!(g.profiles(), 1);
    let p = g.lookup(&a1).unwrap();
    let plan = g.split(p, &b1, &evs, 10, 10).unwrap();
    assert_eq!(
        plan.groups,
        vec![(p, vec![0, 1]), (plan.new, vec![2, 3, 4])]
    );
    assert_eq!(g.lookup(&b1), Some(plan.new));
    assert_eq!(g.lookup(&b2), Some(plan.new));
    assert_eq!(g.lookup(&e), Some(p));
    // The split sticks: b1 with the shared e-mail again does not re-merge; the event goes
    // to the profile of its highest-priority identifier (the e-mail).
    let again = g.resolve(&[b1.clone(), e.clone()], 11, 11, false);
    assert_eq!(again.profile, Some(p));
    assert_eq!(g.lookup(&b1), Some(plan.new));
    assert_eq!(again.conflicts, 1);
    assert!(g.split(p, &b1, &evs, 12, 12).is_err());
}
