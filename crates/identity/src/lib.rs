//! Identity resolution: which customer profile an event belongs to.
//!
//! Every event carries identifiers (`userId`, `anonymousId`, e-mail, phone, device id,
//! external ids). The [`Graph`] maps each identifier to one profile. An event whose
//! identifiers belong to two profiles merges them, unless a rule of [`Rules`] protects
//! against it; then the event is attributed to the profile of its highest-priority
//! identifier and the conflict is recorded.
//!
//! # Resolution, step by step
//!
//! 1. Blocked values (`unknown`, `null`, …) are dropped; the rest are ordered by the
//!    priority of their kind (by default `user_id`, `email`, `phone`, external ids,
//!    `device_id`, `anonymous_id`).
//! 2. The **anchor** is the profile of the first identifier, or a new profile if that
//!    identifier is not known yet.
//! 3. Each further identifier, in priority order: if unknown, it joins the anchor unless
//!    that would exceed its kind's limit; if it belongs to another profile, the two merge
//!    unless the merged profile would exceed a kind's limit or the two were split apart
//!    by an admin (un-merge). A merge keeps the older profile (smaller id), so results do
//!    not depend on timing, and the merged-away id keeps resolving to the survivor.
//! 4. An `alias` call is an explicit link: it merges regardless of the limits (but never
//!    what an admin split apart).
//!
//! Pure: no I/O, no clock; offsets and times are arguments.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod graph;
pub mod normalize;
pub mod probable;

pub use graph::{
    encode_into, Captured, Explanation, FastMap, FoldHasher, Graph, GraphSnapshot, GraphView, How,
    Member, Node, Note, NoteKind, Resolution, SplitError, SplitPlan, PIECE,
};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A profile's id. Shown as `p_<number>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProfileId(pub u64);

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p_{}", self.0)
    }
}

impl std::str::FromStr for ProfileId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix("p_")
            .and_then(|n| n.parse().ok())
            .map(ProfileId)
            .ok_or(())
    }
}

/// Index of an identifier kind in [`Kinds`].
pub type KindId = u8;

/// `userId`.
pub const USER_ID: KindId = 0;
/// `anonymousId`.
pub const ANONYMOUS_ID: KindId = 1;
/// E-mail address (trimmed, lower-cased).
pub const EMAIL: KindId = 2;
/// Phone number in E.164.
pub const PHONE: KindId = 3;
/// `context.device.id`.
pub const DEVICE_ID: KindId = 4;
const BUILTIN: [&str; 5] = ["user_id", "anonymous_id", "email", "phone", "device_id"];

/// Names of identifier kinds: the five built-in ones, then external id types in the order
/// they were first seen (deterministic for a given log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kinds {
    names: Vec<String>,
}

impl Default for Kinds {
    fn default() -> Self {
        Self {
            names: BUILTIN.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Kinds {
    /// The id of a kind by name, if known.
    pub fn get(&self, name: &str) -> Option<KindId> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| KindId::try_from(i).ok())
    }

    /// The id of a kind, adding it if new. `None` once 255 kinds exist.
    pub fn intern(&mut self, name: &str) -> Option<KindId> {
        if let Some(k) = self.get(name) {
            return Some(k);
        }
        let id = KindId::try_from(self.names.len()).ok()?;
        if id == KindId::MAX {
            return None;
        }
        self.names.push(name.to_string());
        Some(id)
    }

    /// The name of a kind.
    pub fn name(&self, kind: KindId) -> &str {
        self.names
            .get(kind as usize)
            .map(String::as_str)
            .unwrap_or("unknown")
    }

    /// Number of kinds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: the built-in kinds exist.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether a kind is an external id type.
    pub fn is_external(kind: KindId) -> bool {
        kind as usize >= BUILTIN.len()
    }
}

/// One identifier: a kind and a normalised value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ident {
    /// The kind.
    pub kind: KindId,
    /// The normalised value.
    pub value: Box<str>,
}

impl Ident {
    /// A new identifier (the value must already be normalised).
    pub fn new(kind: KindId, value: impl Into<Box<str>>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }

    /// The 128-bit key the graph indexes this identifier by.
    pub fn key(&self) -> u128 {
        key_of(self.kind, &self.value)
    }
}

pub(crate) fn key_of(kind: KindId, value: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128_with_seed(value.as_bytes(), u64::from(kind) + 1)
}

/// The merge rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Most identifiers of one kind a profile may hold (by kind name; absent = unlimited).
    /// Default: `user_id = 1`.
    pub limits: Vec<(String, u32)>,
    /// Kinds from highest to lowest priority; kinds not listed rank after the listed ones
    /// (external ids before `device_id` and `anonymous_id` if those are listed last).
    pub priority: Vec<String>,
    /// Values never used as identifiers (compared case-insensitively, after trimming).
    pub blocked_values: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            limits: vec![("user_id".into(), 1)],
            priority: [
                "user_id",
                "email",
                "phone",
                "*",
                "device_id",
                "anonymous_id",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            blocked_values: [
                "unknown",
                "null",
                "undefined",
                "none",
                "nil",
                "nan",
                "0",
                "-",
                "n/a",
                "anonymous",
                "test@test.com",
                "test@example.com",
                "noemail@noemail.com",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

impl Rules {
    /// Checks the rules; every problem is reported.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, limit) in &self.limits {
            if *limit == 0 {
                errors.push(format!("identity.limits.{name}: must be at least 1"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.priority {
            if !seen.insert(p) {
                errors.push(format!("identity.priority: `{p}` is listed twice"));
            }
        }
        errors
    }
}
