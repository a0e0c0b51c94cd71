use super::*;
use proptest::prelude::*;

fn update(
    offset: u64,
    time: i64,
    name: u32,
    trait_key: u32,
    val: u8,
    order: Option<i64>,
) -> Update {
    Update {
        offset,
        time_ms: time,
        kind: if name == 0 {
            UpdateKind::Call
        } else {
            UpdateKind::Event
        },
        name: (name > 0).then_some(Sym(name)),
        source: Sym(100 + (offset % 2) as u32),
        traits: vec![(Sym(trait_key), format!("\"v{val}\"").into())],
        channel: Sym(200 + name % 3),
        device: (val.is_multiple_of(2)).then_some(Sym(300 + u32::from(val % 4))),
        order,
        refund: None,
        account: (name == 0)
            .then(|| (format!("g{val}").into(), vec![(Sym(trait_key), "1".into())])),
        now_ms: time,
        seg: None,
        signals: Vec::new(),
    }
}

fn arb_updates() -> impl Strategy<Value = Vec<(Update, bool)>> {
    prop::collection::vec(
        (
            0i64..50,
            0u32..4,
            0u32..3,
            0u8..6,
            prop::option::of(0i64..1_000_000),
            any::<bool>(),
        ),
        1..40,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (t, n, k, val, o, side))| (update(i as u64 * 3, t, n, k, val, o), side))
            .collect()
    })
}

proptest! {
    /// Merging two profiles equals folding all their events into one, in any split.
    #[test]
    fn absorb_equals_fold(ups in arb_updates()) {
        let mut all = Profile::default();
        let (mut a, mut b) = (Profile::default(), Profile::default());
        for (u, side) in &ups {
            all.apply(u);
            if *side { a.apply(u) } else { b.apply(u) }
        }
        let mut ab = a.clone();
        ab.absorb(b.clone());
        prop_assert_eq!(&ab, &all);
        b.absorb(a);
        prop_assert_eq!(&b, &all);
    }

    /// The compact event list holds exactly the offsets pushed, in order.
    #[test]
    fn event_list_round_trips(mut offs in prop::collection::vec(0u64..1_000_000_000_000, 0..200)) {
        let mut l = EventList::default();
        for o in &offs { l.push(*o); }
        offs.sort_unstable();
        offs.dedup();
        prop_assert_eq!(l.iter().collect::<Vec<_>>(), offs.clone());
        prop_assert_eq!(l.len(), offs.len());
    }
}

#[test]
fn purchase_summary() {
    let mut p = Profile::default();
    p.apply(&update(1, 10, 1, 1, 1, Some(1_000_000)));
    p.apply(&update(2, 5, 1, 1, 2, Some(3_000_000)));
    p.apply(&update(3, 7, 2, 1, 3, None));
    assert_eq!(p.purchases.orders, 2);
    assert_eq!(p.purchases.revenue, 4_000_000);
    assert_eq!(p.purchases.first_order_ms, 5);
    assert_eq!(p.purchases.last_order_ms, 10);
    assert!((p.purchases.average_basket() - 200.0).abs() < 1e-9);
    assert_eq!(p.first_seen_ms, 5);
    assert_eq!(p.last_seen_ms, 10);
    assert_eq!(p.count(Sym(1)), 2);
    assert_eq!(p.count(Sym(2)), 1);
    // Last writer by event time wins, not last applied.
    assert_eq!(p.trait_value(Sym(1)).unwrap().value, "\"v1\"");
}
