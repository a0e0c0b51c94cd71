//! Item-to-item recommendations from history.
//!
//! - **Bought together**: items in the same order. For item `a`, each other item `b` is
//!   scored by the orders holding both, with the confidence `orders(a, b) / orders(a)`.
//! - **Viewed then bought**: profiles that viewed `a` and later bought `b ≠ a` within
//!   `window_ms` of the view, counted once per profile; confidence over the profiles that
//!   viewed `a`.
//! - **For a profile**: every item it viewed or bought votes for the items linked to it
//!   (bought together and viewed then bought, by confidence); items it already bought and
//!   items out of stock are left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

/// What a profile did with items, in time order.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemEvent {
    Viewed { time_ms: i64, item: String },
    Ordered { time_ms: i64, items: Vec<String> },
}

impl ItemEvent {
    fn time(&self) -> i64 {
        match self {
            ItemEvent::Viewed { time_ms, .. } | ItemEvent::Ordered { time_ms, .. } => *time_ms,
        }
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Linked {
    pub item: String,
    /// Orders (bought together) or profiles (viewed then bought) behind the link.
    pub count: u64,
    pub confidence: f64,
}

/// Item-to-item links learnt from every profile's history.
#[derive(Debug, Clone, Default)]
pub struct Links {
    bought_together: HashMap<String, Vec<Linked>>,
    viewed_then_bought: HashMap<String, Vec<Linked>>,
}

fn ranked(
    pairs: HashMap<(String, String), u64>,
    base: &HashMap<String, u64>,
) -> HashMap<String, Vec<Linked>> {
    let mut out: HashMap<String, Vec<Linked>> = HashMap::new();
    for ((a, b), n) in pairs {
        let d = base.get(&a).copied().unwrap_or(1).max(1);
        out.entry(a).or_default().push(Linked {
            item: b,
            count: n,
            confidence: n as f64 / d as f64,
        });
    }
    for v in out.values_mut() {
        v.sort_by(|x, y| {
            y.count
                .cmp(&x.count)
                .then(y.confidence.total_cmp(&x.confidence))
                .then(x.item.cmp(&y.item))
        });
    }
    out
}

impl Links {
    /// Learns the links from each profile's events (each list in time order).
    pub fn learn<'a>(profiles: impl IntoIterator<Item = &'a [ItemEvent]>, window_ms: i64) -> Links {
        let mut together: HashMap<(String, String), u64> = HashMap::new();
        let mut orders_of: HashMap<String, u64> = HashMap::new();
        let mut then: HashMap<(String, String), u64> = HashMap::new();
        let mut viewers: HashMap<String, u64> = HashMap::new();
        for events in profiles {
            let mut viewed: BTreeSet<&str> = BTreeSet::new();
            let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
            for (i, e) in events.iter().enumerate() {
                match e {
                    ItemEvent::Ordered { items, .. } => {
                        let set: BTreeSet<&String> = items.iter().collect();
                        for a in &set {
                            *orders_of.entry((*a).clone()).or_default() += 1;
                            for b in &set {
                                if a != b {
                                    *together.entry(((*a).clone(), (*b).clone())).or_default() += 1;
                                }
                            }
                        }
                    }
                    ItemEvent::Viewed { time_ms, item } => {
                        viewed.insert(item);
                        for later in &events[i + 1..] {
                            if later.time() - time_ms > window_ms {
                                break;
                            }
                            if let ItemEvent::Ordered { items, .. } = later {
                                for b in items {
                                    if b != item {
                                        pairs.insert((item, b));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for v in viewed {
                *viewers.entry(v.to_string()).or_default() += 1;
            }
            for (a, b) in pairs {
                *then.entry((a.to_string(), b.to_string())).or_default() += 1;
            }
        }
        Links {
            bought_together: ranked(together, &orders_of),
            viewed_then_bought: ranked(then, &viewers),
        }
    }

    /// Items bought together with `item`, best first.
    pub fn bought_together(&self, item: &str) -> &[Linked] {
        self.bought_together.get(item).map_or(&[], |v| &v[..])
    }

    /// Items bought after viewing `item`, best first.
    pub fn viewed_then_bought(&self, item: &str) -> &[Linked] {
        self.viewed_then_bought.get(item).map_or(&[], |v| &v[..])
    }

    /// Suggestions for a profile with these events: up to `limit` items by the summed
    /// confidence of their links from what it viewed or bought, leaving out what it
    /// bought and what `in_stock` says is not available.
    pub fn for_profile(
        &self,
        events: &[ItemEvent],
        in_stock: impl Fn(&str) -> bool,
        limit: usize,
    ) -> Vec<(String, f64)> {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut bought: BTreeSet<&str> = BTreeSet::new();
        for e in events {
            match e {
                ItemEvent::Viewed { item, .. } => {
                    seen.insert(item);
                }
                ItemEvent::Ordered { items, .. } => {
                    for i in items {
                        seen.insert(i);
                        bought.insert(i);
                    }
                }
            }
        }
        let mut score: BTreeMap<&str, f64> = BTreeMap::new();
        for s in &seen {
            for l in self
                .bought_together(s)
                .iter()
                .chain(self.viewed_then_bought(s))
            {
                *score.entry(l.item.as_str()).or_default() += l.confidence;
            }
        }
        let mut out: Vec<(String, f64)> = score
            .into_iter()
            .filter(|(i, _)| !bought.contains(i) && in_stock(i))
            .map(|(i, s)| (i.to_string(), s))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out.truncate(limit);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn v(t: i64, i: &str) -> ItemEvent {
        ItemEvent::Viewed {
            time_ms: t,
            item: i.into(),
        }
    }
    fn o(t: i64, items: &[&str]) -> ItemEvent {
        ItemEvent::Ordered {
            time_ms: t,
            items: items.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn links_and_suggestions() {
        let p1 = [v(0, "tent"), o(10, &["tent", "stove"])];
        let p2 = [v(0, "tent"), o(20, &["tent", "stove", "lamp"])];
        let p3 = [v(0, "tent"), o(1000, &["mat"])]; // outside the window
        let p4 = [o(5, &["tent"])];
        let l = Links::learn([&p1[..], &p2[..], &p3[..], &p4[..]], 100);
        let bt = l.bought_together("tent");
        assert_eq!((bt[0].item.as_str(), bt[0].count), ("stove", 2));
        assert!((bt[0].confidence - 2.0 / 3.0).abs() < 1e-12, "{bt:?}");
        let vb = l.viewed_then_bought("tent");
        assert_eq!(
            vb.iter().map(|x| x.item.as_str()).collect::<Vec<_>>(),
            vec!["stove", "lamp"]
        );
        assert!((vb[0].confidence - 2.0 / 3.0).abs() < 1e-12);
        // Someone who viewed a tent: the stove first; out of stock, the lamp instead.
        let me = vec![v(0, "tent")];
        assert_eq!(l.for_profile(&me, |_| true, 1)[0].0, "stove");
        assert_eq!(l.for_profile(&me, |i| i != "stove", 1)[0].0, "lamp");
        // Nothing already bought is suggested.
        let bought = vec![o(0, &["tent", "stove"])];
        assert!(l
            .for_profile(&bought, |_| true, 5)
            .iter()
            .all(|(i, _)| i != "stove" && i != "tent"));
    }
}
