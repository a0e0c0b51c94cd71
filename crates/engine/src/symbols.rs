use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// An interned name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sym(pub u32);

/// Append-only name table. Ids are given in first-seen order, so the same log gives the
/// same table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Symbols {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, Sym>,
}

impl Symbols {
    /// The symbol of `name`, if interned.
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.ids.get(name).copied()
    }

    /// The symbol of `name`, interning it if new.
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(s) = self.ids.get(name) {
            return *s;
        }
        let s = Sym(self.names.len() as u32);
        self.names.push(name.into());
        self.ids.insert(name.into(), s);
        s
    }

    /// The name of a symbol (`""` if unknown).
    pub fn name(&self, s: Sym) -> &str {
        self.names.get(s.0 as usize).map(|n| &**n).unwrap_or("")
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// No names yet.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// All names in id order (for snapshots).
    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }

    /// Adds the names `newer` has beyond this table's, in order, so the two agree on
    /// every id (`newer` must have grown from this table: this table's names are its
    /// first ones). Returns how many were added.
    pub fn catch_up(&mut self, newer: &Symbols) -> usize {
        let from = self.names.len();
        for name in newer.names.get(from..).unwrap_or_default() {
            self.intern(name);
        }
        self.names.len() - from
    }

    /// A table from names in id order.
    pub fn from_names(names: Vec<Box<str>>) -> Self {
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), Sym(i as u32)))
            .collect();
        Self { names, ids }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_catches_up_with_the_table_it_was_taken_from() {
        let mut own = Symbols::default();
        own.intern("Order Completed");
        let mut shared = own.clone();
        assert_eq!(shared.catch_up(&own), 0);
        for name in ["city", "Order Completed", "plan", "İzmir"] {
            own.intern(name);
        }
        assert_eq!(shared.catch_up(&own), 3);
        assert_eq!(shared, own);
        for name in own.names() {
            assert_eq!(shared.get(name), own.get(name), "{name}");
        }
        assert_eq!(shared.catch_up(&own), 0);
        assert_eq!(shared, own);
    }
}
