//! Per-profile state.

use crate::extract::{EventView, Kind};
use crate::symbols::{Sym, Symbols};
use serde::{Deserialize, Serialize};

mod traits;
pub use traits::{Trait, TraitSet};

/// Money is kept in integer units of 1/10,000 so sums never depend on order.
pub const MONEY_SCALE: f64 = 10_000.0;

/// Channels and devices kept per profile at most.
const MAX_SEEN: usize = 16;
/// Accounts kept per profile at most.
const MAX_ACCOUNTS: usize = 16;

/// Order summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchases {
    /// Orders completed.
    pub orders: u32,
    /// Revenue in 1/10,000 units.
    pub revenue: i64,
    /// First order time (meaningless while `orders` is 0).
    pub first_order_ms: i64,
    /// Last order time (meaningless while `orders` is 0).
    pub last_order_ms: i64,
    /// Orders refunded.
    pub refunds: u32,
    /// Refunded amount in 1/10,000 units.
    pub refunded: i64,
}

impl Purchases {
    /// The purchase history in days as lifetime-value models read it at `now`, and the
    /// mean value of an order net of refunds; `None` before the first order.
    pub fn history(&self, now: i64) -> Option<(niyet_analytics::clv::History, f64)> {
        const DAY: f64 = 86_400_000.0;
        if self.orders == 0 {
            return None;
        }
        let age = ((now - self.first_order_ms) as f64 / DAY).max(0.0);
        let recency = ((self.last_order_ms - self.first_order_ms) as f64 / DAY).clamp(0.0, age);
        let frequency = self.orders - 1;
        let mean =
            ((self.revenue - self.refunded) as f64 / MONEY_SCALE / f64::from(self.orders)).max(0.0);
        Some((
            niyet_analytics::clv::History {
                frequency,
                recency: if frequency == 0 { 0.0 } else { recency },
                age,
            },
            mean,
        ))
    }

    /// Average basket (revenue per order), in currency units.
    pub fn average_basket(&self) -> f64 {
        if self.orders == 0 {
            0.0
        } else {
            self.revenue as f64 / MONEY_SCALE / f64::from(self.orders)
        }
    }

    fn add_order(&mut self, time_ms: i64, amount: i64) {
        if self.orders == 0 {
            self.first_order_ms = time_ms;
            self.last_order_ms = time_ms;
        } else {
            self.first_order_ms = self.first_order_ms.min(time_ms);
            self.last_order_ms = self.last_order_ms.max(time_ms);
        }
        self.orders += 1;
        self.revenue += amount;
    }

    fn absorb(&mut self, o: &Purchases) {
        if o.orders > 0 && self.orders == 0 {
            self.first_order_ms = o.first_order_ms;
            self.last_order_ms = o.last_order_ms;
        } else if o.orders > 0 {
            self.first_order_ms = self.first_order_ms.min(o.first_order_ms);
            self.last_order_ms = self.last_order_ms.max(o.last_order_ms);
        }
        self.orders += o.orders;
        self.revenue += o.revenue;
        self.refunds += o.refunds;
        self.refunded += o.refunded;
    }
}

/// A B2B account the person belongs to (from `group`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// `groupId`.
    pub id: Box<str>,
    /// First `group` call time.
    pub since_ms: i64,
    /// The account's traits.
    pub traits: TraitSet,
}

/// A profile's event offsets, ascending, delta- and varint-encoded (about two bytes per
/// event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventList {
    bytes: Vec<u8>,
    len: u32,
    last: u64,
}

impl EventList {
    /// Appends an offset larger than every offset held; smaller ones are merged in.
    pub fn push(&mut self, offset: u64) {
        if self.len > 0 && offset <= self.last {
            if self.iter().any(|o| o == offset) {
                return;
            }
            let mut all: Vec<u64> = self.iter().collect();
            all.push(offset);
            all.sort_unstable();
            *self = Self::from_sorted(&all);
            return;
        }
        let delta = if self.len == 0 {
            offset
        } else {
            offset - self.last
        };
        write_varint(&mut self.bytes, delta);
        self.last = offset;
        self.len += 1;
    }

    /// From ascending, distinct offsets.
    pub fn from_sorted(offsets: &[u64]) -> Self {
        let mut l = EventList::default();
        for &o in offsets {
            l.push(o);
        }
        l
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// No events.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offsets, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut pos = 0;
        let mut acc = 0u64;
        std::iter::from_fn(move || {
            if pos >= self.bytes.len() {
                return None;
            }
            let (d, n) = read_varint(&self.bytes[pos..]);
            pos += n;
            acc += d;
            Some(acc)
        })
    }

    /// Offsets, newest first.
    pub fn newest_first(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.iter().collect();
        v.reverse();
        v
    }

    fn absorb(&mut self, other: &EventList) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other.clone();
            return;
        }
        let mut all: Vec<u64> = self.iter().chain(other.iter()).collect();
        all.sort_unstable();
        all.dedup();
        *self = Self::from_sorted(&all);
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    (v, b.len())
}

/// Trait names with JSON text values.
pub type TraitValues = Vec<(Sym, Box<str>)>;

/// What kind of update an event makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateKind {
    /// A behavioural event (track, page, screen): counted by name.
    Event,
    /// identify / group / alias: traits and identity only.
    Call,
}

/// One event prepared for a profile: names interned, values copied out of the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// Log offset.
    pub offset: u64,
    /// Event time.
    pub time_ms: i64,
    /// Counted or not.
    pub kind: UpdateKind,
    /// The name counted: track event name, `Page Viewed`, `Screen Viewed`.
    pub name: Option<Sym>,
    /// Source.
    pub source: Sym,
    /// Person traits set (JSON text values).
    pub traits: TraitValues,
    /// Channel.
    pub channel: Sym,
    /// Device class.
    pub device: Option<Sym>,
    /// Order amount (1/10,000 units) for order events.
    pub order: Option<i64>,
    /// Refund amount for refund events.
    pub refund: Option<i64>,
    /// `group`: account id and its traits.
    pub account: Option<(Box<str>, TraitValues)>,
    /// Processing time: when the log received the event.
    pub now_ms: i64,
    /// What segment features read of the event (none when no feature reads its name).
    pub seg: Option<Box<crate::segments::SegEvent>>,
    /// Intent-score signals the event matches (see `niyet_actions::Scores::matches`).
    pub signals: Vec<u32>,
}

/// Names of the commerce events that feed the purchase summary.
#[derive(Debug, Clone)]
pub struct CommerceNames {
    /// Completed orders (default `Order Completed`).
    pub order: String,
    /// Refunds (default `Order Refunded`).
    pub refund: String,
}

impl Default for CommerceNames {
    fn default() -> Self {
        Self {
            order: "Order Completed".into(),
            refund: "Order Refunded".into(),
        }
    }
}

impl Update {
    /// Prepares an event, interning names. `None` for events profiles ignore.
    pub fn from_view(
        v: &EventView<'_>,
        offset: u64,
        syms: &mut Symbols,
        commerce: &CommerceNames,
    ) -> Option<Update> {
        let (kind, name) = match v.kind {
            Kind::Track => (UpdateKind::Event, v.name.as_deref()),
            Kind::Page => (UpdateKind::Event, Some("Page Viewed")),
            Kind::Screen => (UpdateKind::Event, Some("Screen Viewed")),
            Kind::Identify | Kind::Group | Kind::Alias => (UpdateKind::Call, None),
            Kind::Control | Kind::Other => return None,
        };
        let mut traits = Vec::new();
        if v.kind == Kind::Identify {
            for (k, val) in &v.traits.0 {
                traits.push((syms.intern(k), Box::<str>::from(val.get())));
            }
        }
        for (k, val) in &v.context.traits.0 {
            let s = syms.intern(k);
            if !traits.iter().any(|(t, _)| *t == s) {
                traits.push((s, Box::<str>::from(val.get())));
            }
        }
        // Consent statements are traits of their own, one per purpose (so each purpose
        // is last-writer-wins on its own); the raw `consent` object is not kept.
        if let Some(raw) = syms.get("consent") {
            traits.retain(|(t, _)| *t != raw);
        }
        for (p, status) in crate::consent::changes(v) {
            {
                let key = syms.intern(&format!("{}{p}", crate::consent::TRAIT_PREFIX));
                traits.retain(|(t, _)| *t != key);
                traits.push((key, format!("\"{status}\"").into_boxed_str()));
            }
        }
        let is = |n: &str| v.kind == Kind::Track && v.name.as_deref() == Some(n);
        let money = |f: f64| (f * MONEY_SCALE).round() as i64;
        let order = if is(&commerce.order) {
            Some(v.amount().map(money).unwrap_or(0))
        } else {
            None
        };
        let refund = if is(&commerce.refund) {
            Some(v.amount().map(money).unwrap_or(0))
        } else {
            None
        };
        let account = match (v.kind, &v.group_id) {
            (Kind::Group, Some(g)) => Some((
                Box::<str>::from(&**g),
                v.traits
                    .0
                    .iter()
                    .map(|(k, val)| (syms.intern(k), Box::<str>::from(val.get())))
                    .collect(),
            )),
            _ => None,
        };
        Some(Update {
            offset,
            time_ms: v.time_ms,
            kind,
            name: name.map(|n| syms.intern(n)),
            source: syms.intern(&v.source),
            traits,
            channel: syms.intern(&v.channel()),
            device: v.device().map(|d| syms.intern(&d)),
            order,
            refund,
            account,
            now_ms: v.time_ms,
            seg: None,
            signals: Vec::new(),
        })
    }
}

/// The state of one customer profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Earliest event time.
    pub first_seen_ms: i64,
    /// Latest event time.
    pub last_seen_ms: i64,
    /// Offsets of the profile's events.
    pub events: EventList,
    /// Traits.
    pub traits: TraitSet,
    /// Event counts by name, sorted by name symbol.
    pub counts: Box<[(Sym, u32)]>,
    /// Channels and device classes seen (devices tagged with [`DEVICE_TAG`]), sorted.
    pub seen: Box<[Sym]>,
    /// Purchase summary.
    pub purchases: Purchases,
    /// Accounts (B2B); boxed because most shop customers have none.
    pub accounts: Option<Box<Vec<Account>>>,
    /// Segment features and memberships (kept by the partition owner).
    pub segments: Option<Box<crate::segments::SegState>>,
}

/// Marks a device class in [`Profile::seen`].
pub const DEVICE_TAG: u32 = 1 << 31;

/// Inserts into a sorted boxed slice (profiles hold a handful of names that rarely grow,
/// so no spare capacity is kept).
fn insert_at<T: Copy>(v: &mut Box<[T]>, i: usize, x: T) {
    let mut grown = Vec::with_capacity(v.len() + 1);
    grown.extend_from_slice(&v[..i]);
    grown.push(x);
    grown.extend_from_slice(&v[i..]);
    *v = grown.into_boxed_slice();
}

fn add_seen(v: &mut Box<[Sym]>, s: Sym) {
    let kind = s.0 & DEVICE_TAG;
    if let Err(i) = v.binary_search(&s) {
        if v.iter().filter(|x| x.0 & DEVICE_TAG == kind).count() < MAX_SEEN {
            insert_at(v, i, s);
        }
    }
}

fn add_count(counts: &mut Box<[(Sym, u32)]>, n: Sym, c: u32) {
    match counts.binary_search_by_key(&n, |x| x.0) {
        Ok(i) => counts[i].1 += c,
        Err(i) => insert_at(counts, i, (n, c)),
    }
}

impl Profile {
    /// Folds one event in.
    pub fn apply(&mut self, u: &Update) {
        if self.events.is_empty() {
            self.first_seen_ms = u.time_ms;
            self.last_seen_ms = u.time_ms;
        } else {
            self.first_seen_ms = self.first_seen_ms.min(u.time_ms);
            self.last_seen_ms = self.last_seen_ms.max(u.time_ms);
        }
        self.events.push(u.offset);
        self.traits.merge(u.traits.iter().map(|(k, v)| Trait {
            key: *k,
            source: u.source,
            time_ms: u.time_ms,
            value: v,
        }));
        if let (UpdateKind::Event, Some(n)) = (u.kind, u.name) {
            add_count(&mut self.counts, n, 1);
        }
        add_seen(&mut self.seen, u.channel);
        if let Some(d) = u.device {
            add_seen(&mut self.seen, Sym(d.0 | DEVICE_TAG));
        }
        if let Some(a) = u.order {
            self.purchases.add_order(u.time_ms, a);
        }
        if let Some(a) = u.refund {
            self.purchases.refunds += 1;
            self.purchases.refunded += a;
        }
        if let Some((id, traits)) = &u.account {
            let accounts = self.accounts.get_or_insert_with(Default::default);
            let i = match accounts.iter().position(|a| a.id == *id) {
                Some(i) => i,
                None if accounts.len() < MAX_ACCOUNTS => {
                    accounts.push(Account {
                        id: id.clone(),
                        since_ms: u.time_ms,
                        traits: TraitSet::default(),
                    });
                    accounts.sort_by(|a, b| a.id.cmp(&b.id));
                    accounts.iter().position(|a| a.id == *id).unwrap_or(0)
                }
                None => return,
            };
            let acc = &mut accounts[i];
            acc.since_ms = acc.since_ms.min(u.time_ms);
            acc.traits.merge(traits.iter().map(|(k, v)| Trait {
                key: *k,
                source: u.source,
                time_ms: u.time_ms,
                value: v,
            }));
        }
    }

    /// Merges another profile into this one (the result equals folding both profiles'
    /// events into one).
    pub fn absorb(&mut self, o: Profile) {
        if o.events.is_empty() {
            return;
        }
        if self.events.is_empty() {
            *self = o;
            return;
        }
        self.first_seen_ms = self.first_seen_ms.min(o.first_seen_ms);
        self.last_seen_ms = self.last_seen_ms.max(o.last_seen_ms);
        self.events.absorb(&o.events);
        self.traits.merge(o.traits.iter());
        for &(n, c) in o.counts.iter() {
            add_count(&mut self.counts, n, c);
        }
        for &c in o.seen.iter() {
            add_seen(&mut self.seen, c);
        }
        self.purchases.absorb(&o.purchases);
        let theirs = o.accounts.map(|a| *a).unwrap_or_default();
        if theirs.is_empty() {
            return;
        }
        let accounts = self.accounts.get_or_insert_with(Default::default);
        for a in theirs {
            match accounts.iter().position(|x| x.id == a.id) {
                Some(i) => {
                    let x = &mut accounts[i];
                    x.since_ms = x.since_ms.min(a.since_ms);
                    x.traits.merge(a.traits.iter());
                }
                None if accounts.len() < MAX_ACCOUNTS => accounts.push(a),
                None => {}
            }
        }
        accounts.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// Channels seen.
    pub fn channels(&self) -> impl Iterator<Item = Sym> + '_ {
        self.seen.iter().filter(|s| s.0 & DEVICE_TAG == 0).copied()
    }

    /// Device classes seen.
    pub fn devices(&self) -> impl Iterator<Item = Sym> + '_ {
        self.seen
            .iter()
            .filter(|s| s.0 & DEVICE_TAG != 0)
            .map(|s| Sym(s.0 & !DEVICE_TAG))
    }

    /// Accounts (B2B).
    pub fn accounts(&self) -> &[Account] {
        self.accounts.as_deref().map(Vec::as_slice).unwrap_or(&[])
    }

    /// The count of events named `name`.
    pub fn count(&self, name: Sym) -> u32 {
        self.counts
            .binary_search_by_key(&name, |c| c.0)
            .map(|i| self.counts[i].1)
            .unwrap_or(0)
    }

    /// A trait by key.
    pub fn trait_value(&self, key: Sym) -> Option<Trait<'_>> {
        self.traits.get(key)
    }
}

#[cfg(test)]
mod tests;
