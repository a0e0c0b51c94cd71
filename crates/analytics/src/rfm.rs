//! RFM: recency, frequency and monetary value, each scored 1–5 by quintiles of the
//! current customer base, and the named groups marketers use.
//!
//! **The base** is every profile with at least one order. For each customer:
//! recency is the time of the last order (later is better), frequency the number of
//! orders, monetary value the revenue net of refunds.
//!
//! **Scores** are percentile ranks cut into fifths: with `n` customers in the base and
//! `below` of them strictly worse on a measure, the score is `1 + ⌊5 · below / n⌋`.
//! Customers with equal values always get the same score (so the many one-order customers
//! share one frequency score instead of being split at random, as rank-based cuts do), and
//! the top fifth gets 5. Because recency ranks the time of the last order, a score changes
//! only when the base changes (an order, a refund, a new customer), never by the passing
//! of time alone: everyone ages at the same rate.
//!
//! **Groups** are read off a grid of the recency score `R` against `FM`, the mean of the
//! frequency and monetary scores rounded up:
//!
//! | R \ FM | 1 | 2 | 3 | 4 | 5 |
//! |---|---|---|---|---|---|
//! | 5 | New Customers | Potential Loyalists | Potential Loyalists | Champions | Champions |
//! | 4 | Promising | Potential Loyalists | Potential Loyalists | Loyal Customers | Loyal Customers |
//! | 3 | About To Sleep | About To Sleep | Need Attention | Loyal Customers | Loyal Customers |
//! | 2 | Hibernating | Hibernating | At Risk | At Risk | Can't Lose Them |
//! | 1 | Hibernating | Hibernating | At Risk | At Risk | Can't Lose Them |

use serde::Serialize;

/// One customer of the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Customer {
    /// Time of the last order (ms since the epoch).
    pub last_order_ms: i64,
    /// Orders completed.
    pub orders: u32,
    /// Revenue net of refunds, in 1/10,000 currency units.
    pub monetary: i64,
}

/// A customer's three scores, each 1 (worst fifth) to 5 (best fifth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scores {
    pub r: u8,
    pub f: u8,
    pub m: u8,
}

impl Scores {
    /// The mean of frequency and monetary, rounded up.
    pub fn fm(&self) -> u8 {
        (self.f + self.m).div_ceil(2)
    }

    /// The named group.
    pub fn group(&self) -> Group {
        Group::of(self.r, self.fm())
    }
}

/// The named RFM groups (see the module's grid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Champions,
    LoyalCustomers,
    PotentialLoyalists,
    NewCustomers,
    Promising,
    NeedAttention,
    AboutToSleep,
    AtRisk,
    CantLoseThem,
    Hibernating,
}

impl Group {
    /// Every group, best first.
    pub const ALL: [Group; 10] = [
        Group::Champions,
        Group::LoyalCustomers,
        Group::PotentialLoyalists,
        Group::NewCustomers,
        Group::Promising,
        Group::NeedAttention,
        Group::AboutToSleep,
        Group::AtRisk,
        Group::CantLoseThem,
        Group::Hibernating,
    ];

    /// The group of recency score `r` and frequency-monetary score `fm` (both 1–5;
    /// values outside are clamped).
    pub fn of(r: u8, fm: u8) -> Group {
        match (r.clamp(1, 5), fm.clamp(1, 5)) {
            (5, 4..=5) => Group::Champions,
            (5, 1) => Group::NewCustomers,
            (4..=5, 2..=3) => Group::PotentialLoyalists,
            (4, 1) => Group::Promising,
            (3..=4, 4..=5) => Group::LoyalCustomers,
            (3, 3) => Group::NeedAttention,
            (3, _) => Group::AboutToSleep,
            (1..=2, 5) => Group::CantLoseThem,
            (1..=2, 3 | 4) => Group::AtRisk,
            _ => Group::Hibernating,
        }
    }

    /// The group's name as shown to people and used in the API.
    pub fn name(&self) -> &'static str {
        match self {
            Group::Champions => "Champions",
            Group::LoyalCustomers => "Loyal Customers",
            Group::PotentialLoyalists => "Potential Loyalists",
            Group::NewCustomers => "New Customers",
            Group::Promising => "Promising",
            Group::NeedAttention => "Need Attention",
            Group::AboutToSleep => "About To Sleep",
            Group::AtRisk => "At Risk",
            Group::CantLoseThem => "Can't Lose Them",
            Group::Hibernating => "Hibernating",
        }
    }

    /// The group named `name` (case and spaces, `-` and `_` ignored: `at-risk`,
    /// `AtRisk`, `at_risk`).
    pub fn parse(name: &str) -> Option<Group> {
        let key = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect()
        };
        let k = key(name);
        Group::ALL.into_iter().find(|g| key(g.name()) == k)
    }
}

/// The customer base sorted on each measure, to score any customer against it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    last: Vec<i64>,
    orders: Vec<u32>,
    monetary: Vec<i64>,
}

/// Where the fifths begin on one measure: a score of `k + 2` needs a value above
/// `above[k]` (None while the base is empty).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cuts<T> {
    pub above: Vec<Option<T>>,
}

/// Score from the number of customers strictly below, out of `n`.
fn fifth(below: usize, n: usize) -> u8 {
    if n == 0 {
        return 1;
    }
    (1 + (5 * below) / n).min(5) as u8
}

fn cuts<T: Copy>(sorted: &[T]) -> Cuts<T> {
    let n = sorted.len();
    // Score s needs below ≥ ⌈(s−1)·n/5⌉, i.e. a value above the one at that rank − 1.
    let above = (2..=5usize)
        .map(|s| {
            let k = ((s - 1) * n).div_ceil(5);
            if n == 0 {
                None
            } else {
                sorted.get(k.saturating_sub(1)).copied()
            }
        })
        .collect();
    Cuts { above }
}

impl Table {
    /// The base from its customers (any order).
    pub fn new(customers: impl IntoIterator<Item = Customer>) -> Table {
        let mut t = Table::default();
        for c in customers {
            t.last.push(c.last_order_ms);
            t.orders.push(c.orders);
            t.monetary.push(c.monetary);
        }
        t.last.sort_unstable();
        t.orders.sort_unstable();
        t.monetary.sort_unstable();
        t
    }

    /// Customers in the base.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether the base is empty.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// The scores of `c` against the base.
    pub fn score(&self, c: &Customer) -> Scores {
        let n = self.len();
        Scores {
            r: fifth(self.last.partition_point(|x| *x < c.last_order_ms), n),
            f: fifth(self.orders.partition_point(|x| *x < c.orders), n),
            m: fifth(self.monetary.partition_point(|x| *x < c.monetary), n),
        }
    }

    /// Where the fifths begin on recency (last order time), frequency and monetary value.
    pub fn cuts(&self) -> (Cuts<i64>, Cuts<u32>, Cuts<i64>) {
        (cuts(&self.last), cuts(&self.orders), cuts(&self.monetary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition read literally: count the customers strictly below by a scan.
    fn reference(base: &[Customer], c: &Customer) -> Scores {
        let n = base.len();
        let s = |below: usize| -> u8 {
            let mut score = 1u8;
            // The largest s with below/n ≥ (s−1)/5.
            for k in 2..=5u8 {
                if below * 5 >= (k as usize - 1) * n {
                    score = k;
                }
            }
            score
        };
        Scores {
            r: s(base
                .iter()
                .filter(|x| x.last_order_ms < c.last_order_ms)
                .count()),
            f: s(base.iter().filter(|x| x.orders < c.orders).count()),
            m: s(base.iter().filter(|x| x.monetary < c.monetary).count()),
        }
    }

    fn customer() -> impl Strategy<Value = Customer> {
        (0i64..50, 1u32..8, 0i64..40).prop_map(|(l, o, m)| Customer {
            last_order_ms: l * 86_400_000,
            orders: o,
            monetary: m * 10_000,
        })
    }

    proptest! {
        #[test]
        fn scores_match_the_definition(base in prop::collection::vec(customer(), 1..60)) {
            let t = Table::new(base.iter().copied());
            for c in &base {
                prop_assert_eq!(t.score(c), reference(&base, c));
            }
        }

        #[test]
        fn cuts_agree_with_scores(base in prop::collection::vec(customer(), 1..60)) {
            let t = Table::new(base.iter().copied());
            let (_, f, _) = t.cuts();
            for c in &base {
                let want = 1 + f.above.iter().filter(|a| a.is_some_and(|a| c.orders > a)).count() as u8;
                prop_assert_eq!(t.score(c).f, want);
            }
        }
    }

    #[test]
    fn distinct_values_fill_the_fifths_evenly() {
        let base: Vec<Customer> = (0..100)
            .map(|i| Customer {
                last_order_ms: i,
                orders: i as u32 + 1,
                monetary: 1000 - i,
            })
            .collect();
        let t = Table::new(base.iter().copied());
        let mut per = [0; 6];
        for c in &base {
            per[t.score(c).r as usize] += 1;
        }
        assert_eq!(per[1..], [20, 20, 20, 20, 20]);
        // Monetary runs the other way: the earliest customer spent the most.
        assert_eq!(t.score(&base[0]).m, 5);
        assert_eq!(t.score(&base[0]).r, 1);
        assert_eq!(t.score(&base[99]).r, 5);
    }

    #[test]
    fn ties_share_a_score() {
        // 70 one-order customers, 30 with more: every one-order customer scores 1.
        let base: Vec<Customer> = (0..100)
            .map(|i| Customer {
                last_order_ms: i,
                orders: if i < 70 { 1 } else { 2 + (i as u32 - 70) / 10 },
                monetary: i,
            })
            .collect();
        let t = Table::new(base.iter().copied());
        assert!(base[..70].iter().all(|c| t.score(c).f == 1));
        assert_eq!(t.score(&base[70]).f, 4, "70 below: 1 + ⌊350/100⌋");
        assert_eq!(t.score(&base[99]).f, 5);
    }

    #[test]
    fn the_grid_names_every_cell() {
        let g = |r, fm| Group::of(r, fm).name();
        assert_eq!(g(5, 5), "Champions");
        assert_eq!(g(5, 4), "Champions");
        assert_eq!(g(5, 1), "New Customers");
        assert_eq!(g(5, 2), "Potential Loyalists");
        assert_eq!(g(4, 3), "Potential Loyalists");
        assert_eq!(g(4, 1), "Promising");
        assert_eq!(g(4, 4), "Loyal Customers");
        assert_eq!(g(3, 5), "Loyal Customers");
        assert_eq!(g(3, 3), "Need Attention");
        assert_eq!(g(3, 2), "About To Sleep");
        assert_eq!(g(3, 1), "About To Sleep");
        assert_eq!(g(2, 5), "Can't Lose Them");
        assert_eq!(g(1, 4), "At Risk");
        assert_eq!(g(2, 3), "At Risk");
        assert_eq!(g(1, 2), "Hibernating");
        assert_eq!(g(1, 1), "Hibernating");
        let mut seen: Vec<Group> = (1..=5)
            .flat_map(|r| (1..=5).map(move |fm| Group::of(r, fm)))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), Group::ALL.len(), "every group has a cell");
        for grp in Group::ALL {
            assert_eq!(Group::parse(grp.name()), Some(grp));
        }
        assert_eq!(Group::parse("cant-lose-them"), Some(Group::CantLoseThem));
        assert_eq!(Group::parse("at_risk"), Some(Group::AtRisk));
        assert_eq!(Group::parse("nobody"), None);
    }

    #[test]
    fn fm_rounds_up() {
        let s = Scores { r: 3, f: 3, m: 4 };
        assert_eq!(s.fm(), 4);
        assert_eq!(s.group(), Group::LoyalCustomers);
    }
}
