//! A profile's traits packed into one allocation.

use crate::symbols::Sym;
use serde::{Deserialize, Serialize};

const HEAD: usize = 4 + 4 + 8 + 4;

/// Traits sorted by key, packed as `key u32 | source u32 | time i64 | len u32 | value`
/// (little endian) in one boxed slice: a handful of traits costs one allocation of about
/// their size, instead of a vector of structs each pointing to its own string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraitSet {
    bytes: Box<[u8]>,
}

/// One trait read from a [`TraitSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trait<'a> {
    /// Trait name.
    pub key: Sym,
    /// Source that set it.
    pub source: Sym,
    /// Event time it was set at.
    pub time_ms: i64,
    /// The value as JSON text.
    pub value: &'a str,
}

impl Trait<'_> {
    /// Last writer wins by event time; equal times are decided by the value, then the
    /// source, so the outcome never depends on the order events are applied in.
    fn newer_than(&self, other: &Trait<'_>) -> bool {
        (self.time_ms, self.value, self.source) > (other.time_ms, other.value, other.source)
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    b.get(i..i + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn i64_at(b: &[u8], i: usize) -> i64 {
    b.get(i..i + 8)
        .and_then(|s| s.try_into().ok())
        .map(i64::from_le_bytes)
        .unwrap_or(0)
}

impl TraitSet {
    /// The traits, by key.
    pub fn iter(&self) -> impl Iterator<Item = Trait<'_>> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let (t, next) = self.at(pos)?;
            pos = next;
            Some(t)
        })
    }

    /// The trait whose head starts at `pos`, and where the next one starts.
    fn at(&self, pos: usize) -> Option<(Trait<'_>, usize)> {
        let b = &self.bytes;
        if pos + HEAD > b.len() {
            return None;
        }
        let len = u32_at(b, pos + 16) as usize;
        let start = pos + HEAD;
        let value = b
            .get(start..start + len)
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or("");
        let t = Trait {
            key: Sym(u32_at(b, pos)),
            source: Sym(u32_at(b, pos + 4)),
            time_ms: i64_at(b, pos + 8),
            value,
        };
        Some((t, start + len))
    }

    /// A trait by key. Only heads are read on the way: the values passed over are
    /// neither checked nor copied.
    pub fn get(&self, key: Sym) -> Option<Trait<'_>> {
        let b = &self.bytes;
        let mut pos = 0;
        while pos + HEAD <= b.len() {
            if u32_at(b, pos) == key.0 {
                return self.at(pos).map(|(t, _)| t);
            }
            pos += HEAD + u32_at(b, pos + 16) as usize;
        }
        None
    }

    /// Number of traits.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No traits.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Sets traits, each kept only where it is newer than the one held.
    pub fn merge<'a>(&mut self, incoming: impl IntoIterator<Item = Trait<'a>>) {
        let mut inc: Vec<Trait<'a>> = incoming.into_iter().collect();
        if inc.is_empty() {
            return;
        }
        // Newest first within one key, so the first of each key is the one that counts.
        inc.sort_by(|a, b| {
            a.key.cmp(&b.key).then_with(|| {
                if a.newer_than(b) {
                    std::cmp::Ordering::Less
                } else if b.newer_than(a) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
        });
        inc.dedup_by_key(|t| t.key);
        let mut out = Vec::with_capacity(self.bytes.len() + inc.len() * (HEAD + 16));
        let mut changed = false;
        {
            let mut old = self.iter().peekable();
            let mut new = inc.into_iter().peekable();
            loop {
                let pick = match (old.peek(), new.peek()) {
                    (None, None) => break,
                    (Some(_), None) => old.next(),
                    (None, Some(_)) => {
                        changed = true;
                        new.next()
                    }
                    (Some(o), Some(n)) => {
                        if o.key < n.key {
                            old.next()
                        } else if n.key < o.key {
                            changed = true;
                            new.next()
                        } else if n.newer_than(o) {
                            changed = true;
                            old.next();
                            new.next()
                        } else {
                            new.next();
                            old.next()
                        }
                    }
                };
                if let Some(t) = pick {
                    out.extend_from_slice(&t.key.0.to_le_bytes());
                    out.extend_from_slice(&t.source.0.to_le_bytes());
                    out.extend_from_slice(&t.time_ms.to_le_bytes());
                    out.extend_from_slice(&(t.value.len() as u32).to_le_bytes());
                    out.extend_from_slice(t.value.as_bytes());
                }
            }
        }
        if changed {
            self.bytes = out.into_boxed_slice();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// The packed set equals a map kept by the same last-writer-wins rule, whatever
        /// the order and grouping of the writes.
        #[test]
        fn packed_set_equals_a_map(writes in prop::collection::vec((0u32..6, 0u32..3, 0i64..5, "[a-zé\"]{0,12}"), 0..40), chunk in 1usize..5) {
            let mut set = TraitSet::default();
            let mut model: BTreeMap<u32, (i64, String, u32)> = BTreeMap::new();
            for group in writes.chunks(chunk) {
                set.merge(group.iter().map(|(k, s, t, v)| Trait { key: Sym(*k), source: Sym(*s), time_ms: *t, value: v }));
                for (k, s, t, v) in group {
                    let cand = (*t, v.clone(), *s);
                    let e = model.entry(*k).or_insert_with(|| cand.clone());
                    if cand > *e { *e = cand; }
                }
            }
            let got: Vec<(u32, i64, String, u32)> = set.iter().map(|t| (t.key.0, t.time_ms, t.value.to_string(), t.source.0)).collect();
            for k in 0u32..7 {
                let by_key = set.get(Sym(k)).map(|t| (t.time_ms, t.value.to_string(), t.source.0));
                prop_assert_eq!(by_key, model.get(&k).cloned(), "key {}", k);
            }
            let want: Vec<(u32, i64, String, u32)> = model.into_iter().map(|(k, (t, v, s))| (k, t, v, s)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
