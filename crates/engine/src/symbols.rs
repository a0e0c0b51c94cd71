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
