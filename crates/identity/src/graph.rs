//! The identity graph: identifier → profile, with merge rules, merge history and un-merge.

use crate::{key_of, Ident, KindId, Kinds, ProfileId, Rules};
use niyet_model::walk::IdWalk;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

pub use niyet_model::hash::{FastMap, FoldHasher};

fn split_key(k: u128) -> [u64; 2] {
    [k as u64, (k >> 64) as u64]
}

/// How an identifier came to its original profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum How {
    /// It was the first identifier of a new profile.
    Created,
    /// It arrived on an event together with identifiers already in the profile.
    Joined,
    /// An `alias` call linked it.
    Alias,
    /// An admin un-merge moved it here.
    Split,
}

/// An identifier held by a profile, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Identifier kind.
    pub kind: KindId,
    /// How it joined its original profile.
    pub how: How,
    /// The profile it first joined (differs from the holder after a merge).
    pub origin: ProfileId,
    /// Log offset of the event that brought it.
    pub offset: u64,
    /// Normalised value.
    pub value: Box<str>,
}

impl Member {
    fn key(&self) -> u128 {
        key_of(self.kind, &self.value)
    }
}

/// A member read from a [`MemberSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberRef<'a> {
    /// Identifier kind.
    pub kind: KindId,
    /// How it joined its original profile.
    pub how: How,
    /// The profile it first joined.
    pub origin: ProfileId,
    /// Log offset of the event that brought it.
    pub offset: u64,
    /// Normalised value.
    pub value: &'a str,
}

impl MemberRef<'_> {
    /// The identifier.
    pub fn ident(&self) -> Ident {
        Ident::new(self.kind, self.value)
    }
    /// Its index key.
    pub fn key(&self) -> u128 {
        key_of(self.kind, self.value)
    }
    /// An owned copy.
    pub fn to_member(self) -> Member {
        Member {
            kind: self.kind,
            how: self.how,
            origin: self.origin,
            offset: self.offset,
            value: self.value.into(),
        }
    }
}

const MEMBER_HEAD: usize = 1 + 1 + 8 + 8 + 2;

/// A profile's identifiers packed in one allocation, in the order they joined:
/// `kind u8 | how u8 | origin u64 | offset u64 | len u16 | value` per member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSet {
    bytes: Box<[u8]>,
}

fn how_code(h: How) -> u8 {
    match h {
        How::Created => 0,
        How::Joined => 1,
        How::Alias => 2,
        How::Split => 3,
    }
}

fn how_of(c: u8) -> How {
    match c {
        0 => How::Created,
        1 => How::Joined,
        2 => How::Alias,
        _ => How::Split,
    }
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    b.get(i..i + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

impl MemberSet {
    /// The members, in joining order.
    pub fn iter(&self) -> impl Iterator<Item = MemberRef<'_>> + '_ {
        let b = &self.bytes;
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos + MEMBER_HEAD > b.len() {
                return None;
            }
            let len = u16::from_le_bytes([b[pos + 18], b[pos + 19]]) as usize;
            let start = pos + MEMBER_HEAD;
            let value = b
                .get(start..start + len)
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or("");
            let m = MemberRef {
                kind: b[pos],
                how: how_of(b[pos + 1]),
                origin: ProfileId(u64_at(b, pos + 2)),
                offset: u64_at(b, pos + 10),
                value,
            };
            pos = start + len;
            Some(m)
        })
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No members.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn encode(out: &mut Vec<u8>, m: &MemberRef<'_>) {
        // Identifier values are capped at 64 KiB (ingest limits events to 32 KB).
        let v = &m.value.as_bytes()[..m.value.len().min(u16::MAX as usize)];
        out.push(m.kind);
        out.push(how_code(m.how));
        out.extend_from_slice(&m.origin.0.to_le_bytes());
        out.extend_from_slice(&m.offset.to_le_bytes());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
    }

    /// Adds a member at the end.
    pub fn push(&mut self, m: MemberRef<'_>) {
        let mut out = Vec::with_capacity(self.bytes.len() + MEMBER_HEAD + m.value.len());
        out.extend_from_slice(&self.bytes);
        Self::encode(&mut out, &m);
        self.bytes = out.into_boxed_slice();
    }

    /// Adds another set's members at the end.
    pub fn append(&mut self, other: &MemberSet) {
        let mut out = Vec::with_capacity(self.bytes.len() + other.bytes.len());
        out.extend_from_slice(&self.bytes);
        out.extend_from_slice(&other.bytes);
        self.bytes = out.into_boxed_slice();
    }

    /// Members of one kind.
    pub fn count_kind(&self, kind: KindId) -> usize {
        self.iter().filter(|m| m.kind == kind).count()
    }
}

/// Something that happened to a profile's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Log offset of the event or admin action that caused it.
    pub offset: u64,
    /// Event time.
    pub time_ms: i64,
    /// What happened.
    pub kind: NoteKind,
}

/// What happened to a profile's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoteKind {
    /// `from` was merged into `into` because one event carried `kept` (of `into`) and
    /// `joined` (of `from`).
    Merged {
        /// The merged-away profile.
        from: ProfileId,
        /// The surviving profile.
        into: ProfileId,
        /// Identifier that resolved to the survivor.
        kept: Ident,
        /// Identifier that resolved to the merged-away profile.
        joined: Ident,
        /// `shared identifier` or `alias`.
        rule: String,
    },
    /// A rule prevented `ident` (of profile `other`, or new) from joining this profile.
    Blocked {
        /// The identifier that was not linked.
        ident: Ident,
        /// The profile it belongs to (None: it was new and stayed unlinked).
        other: Option<ProfileId>,
        /// The rule, e.g. `limit user_id = 1`.
        rule: String,
    },
    /// An admin split `ident` off into profile `new`.
    Split {
        /// The identifier removed.
        ident: Ident,
        /// The profile that now holds it.
        new: ProfileId,
        /// Other profiles created by the split (components no longer connected).
        others: Vec<ProfileId>,
    },
}

/// One profile's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Identifiers, in the order they joined.
    pub members: MemberSet,
    /// Merges, conflicts and splits, oldest first (conflicts capped per profile). Boxed:
    /// most profiles have none, and an empty box costs 8 bytes where a `Vec` costs 24.
    pub notes: Option<Box<Vec<Note>>>,
}

impl Node {
    /// The notes, oldest first.
    pub fn notes(&self) -> &[Note] {
        self.notes.as_deref().map(Vec::as_slice).unwrap_or(&[])
    }

    fn notes_mut(&mut self) -> &mut Vec<Note> {
        self.notes.get_or_insert_with(Default::default)
    }
}

/// Conflicts kept per profile; older ones are dropped first.
const MAX_CONFLICT_NOTES: usize = 64;

/// The outcome of resolving one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The profile the event belongs to (None if it carried no usable identifier).
    pub profile: Option<ProfileId>,
    /// The profile was created by this event.
    pub created: bool,
    /// Merges done, in order: (merged-away, survivor).
    pub merged: Vec<(ProfileId, ProfileId)>,
    /// Conflicts recorded.
    pub conflicts: usize,
}

/// Why an identifier belongs to a profile, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The identifier.
    pub ident: Ident,
    /// The member record.
    pub member: Member,
    /// The merges (oldest first) that brought it from its original profile to this one.
    pub via_merges: Vec<Note>,
}

/// Why an un-merge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// No such profile.
    #[error("profile {0} does not exist")]
    NoProfile(ProfileId),
    /// The identifier is not one of the profile's.
    #[error("{0} does not belong to profile {1}")]
    NotMember(String, ProfileId),
    /// Nothing would be left.
    #[error("{0} is the only identifier of profile {1}; there is nothing to split")]
    OnlyMember(String, ProfileId),
}

/// The result of an un-merge: which events now belong to which profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    /// The profile split (keeps its id and the events of its main part).
    pub original: ProfileId,
    /// The new profile holding the removed identifier.
    pub new: ProfileId,
    /// Every profile after the split with its events' offsets, ascending; the first entry
    /// is `original`.
    pub groups: Vec<(ProfileId, Vec<u64>)>,
}

/// Serializable view of a graph (deterministic order), for snapshots.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GraphSnapshot {
    kinds: Kinds,
    next_id: u64,
    nodes: Vec<(ProfileId, Node)>,
    redirects: Vec<(ProfileId, ProfileId)>,
    apart: Vec<(u128, Vec<u128>)>,
}

/// Borrowed, serializable view of a graph with the same layout as [`GraphSnapshot`]
/// (serialize this, deserialize that), so snapshots do not copy the graph.
#[derive(Debug, Serialize)]
pub struct GraphView<'a> {
    kinds: &'a Kinds,
    next_id: u64,
    nodes: Vec<(ProfileId, &'a Node)>,
    redirects: Vec<(ProfileId, ProfileId)>,
    apart: Vec<(u128, &'a Vec<u128>)>,
}

/// The identity graph.
#[derive(Debug, Clone)]
pub struct Graph {
    kinds: Kinds,
    rules: Rules,
    limits: Vec<u32>,
    ranks: Vec<u16>,
    /// Blocked values, lower-cased, and the lengths they have (a quick first filter).
    blocked: HashSet<String>,
    blocked_lens: u64,
    /// Identifier key → profile. Keys as two u64 (8-byte aligned, so a slot is 24 bytes,
    /// not the 32 a 16-byte-aligned u128 would take).
    index: FastMap<[u64; 2], ProfileId>,
    nodes: FastMap<ProfileId, Node>,
    redirects: FastMap<ProfileId, ProfileId>,
    apart: FastMap<u128, Vec<u128>>,
    next_id: u64,
    /// A snapshot being taken while the graph changes (see [`Graph::begin_capture`]).
    capture: Option<Box<Capture>>,
}

/// A snapshot of the graph as it stood at [`Graph::begin_capture`], encoded a node at a
/// time while the graph goes on changing: a node about to change, or to go, is encoded
/// first (copy on write); nodes made later are left out. The bytes are those of a
/// [`GraphSnapshot`] of that moment (nodes in another order).
///
/// The nodes of that moment are those with ids below the `next_id` of then: the capture
/// walks that range ([`IdWalk`]).
#[derive(Debug, Clone, Default)]
struct Capture {
    /// The ids of that moment; those taken out of turn were encoded before a change, or
    /// found missing (made later).
    walk: IdWalk,
    /// `kinds` and `next_id`, encoded.
    head: Vec<u8>,
    /// Encoded `(id, node)` items in pieces of about [`PIECE`] bytes (never one buffer
    /// grown by copying hundreds of megabytes), and how many.
    items: Vec<Vec<u8>>,
    count: usize,
    /// `redirects` and `apart` of that moment, in no order (sorted and encoded by
    /// [`Captured::into_pieces`], off the thread that holds the graph).
    redirects: Vec<(ProfileId, ProfileId)>,
    apart: Vec<(u128, Vec<u128>)>,
    failed: Option<String>,
}

/// A finished capture: the encoded nodes and what is left to encode.
#[derive(Debug)]
pub struct Captured {
    pieces: Vec<Vec<u8>>,
    redirects: Vec<(ProfileId, ProfileId)>,
    apart: Vec<(u128, Vec<u128>)>,
}

impl Captured {
    /// The bytes of the [`GraphSnapshot`] of the capture's moment, in pieces to be
    /// written one after the other.
    pub fn into_pieces(mut self) -> Result<Vec<Vec<u8>>, String> {
        self.redirects.sort_unstable();
        self.apart.sort_unstable_by_key(|a| a.0);
        let tail =
            postcard::to_allocvec(&(&self.redirects, &self.apart)).map_err(|e| e.to_string())?;
        self.pieces.push(tail);
        Ok(self.pieces)
    }
}

/// Size of the pieces snapshot bytes are gathered in.
pub const PIECE: usize = 1 << 20;

/// Appends `v`'s encoding to the last of `pieces`, starting a new piece when it is full.
pub fn encode_into<T: Serialize + ?Sized>(
    pieces: &mut Vec<Vec<u8>>,
    v: &T,
) -> Result<(), postcard::Error> {
    if pieces.last().is_none_or(|p| p.len() >= PIECE) {
        pieces.push(Vec::with_capacity(PIECE + PIECE / 4));
    }
    if let Some(last) = pieces.last_mut() {
        *last = postcard::to_extend(v, std::mem::take(last))?;
    }
    Ok(())
}

impl Capture {
    fn add(&mut self, id: ProfileId, node: &Node) {
        if let Err(e) = encode_into(&mut self.items, &(id, node)) {
            self.failed = Some(e.to_string());
        }
        self.count += 1;
    }
}

impl Graph {
    /// An empty graph with these rules.
    pub fn new(rules: Rules) -> Self {
        let blocked = rules
            .blocked_values
            .iter()
            .map(|v| v.trim().to_lowercase())
            .collect();
        let mut g = Graph {
            kinds: Kinds::default(),
            rules,
            limits: Vec::new(),
            ranks: Vec::new(),
            blocked_lens: blocked_lens(&blocked),
            blocked,
            index: FastMap::default(),
            nodes: FastMap::default(),
            redirects: FastMap::default(),
            apart: FastMap::default(),
            next_id: 1,
            capture: None,
        };
        g.refresh_kind_tables();
        g
    }

    /// Starts taking a snapshot of the graph as it is now, without stopping it: call
    /// [`Self::capture_step`] between changes until it returns the bytes (a
    /// [`GraphSnapshot`] encoding). A capture still running is finished first (its
    /// bytes are then dropped).
    pub fn begin_capture(&mut self) {
        let _ = self.finish_capture();
        let mut c = Capture {
            walk: IdWalk::new(0, 1, self.next_id),
            ..Default::default()
        };
        c.redirects = self.redirects.iter().map(|(k, v)| (*k, *v)).collect();
        c.apart = self.apart.iter().map(|(k, v)| (*k, v.clone())).collect();
        // The fields around `nodes`, in `GraphSnapshot` order (a struct is its fields).
        match postcard::to_allocvec(&(&self.kinds, self.next_id)) {
            Ok(h) => c.head = h,
            Err(e) => c.failed = Some(e.to_string()),
        }
        self.capture = Some(Box::new(c));
    }

    /// Encodes up to `n` more nodes of the capture; once all are, ends it and returns it
    /// (see [`Captured::into_pieces`]). `None`: not finished yet, or no capture running.
    pub fn capture_step(&mut self, n: usize) -> Option<Result<Captured, String>> {
        if !self.walk(n) {
            return None;
        }
        let c = self.capture.take()?;
        if let Some(e) = c.failed {
            return Some(Err(e));
        }
        // A sequence: its length as a varint, then the items.
        let head = match postcard::to_extend(&c.count, c.head) {
            Ok(o) => o,
            Err(e) => return Some(Err(e.to_string())),
        };
        let mut pieces = Vec::with_capacity(c.items.len() + 2);
        pieces.push(head);
        pieces.extend(c.items);
        Some(Ok(Captured {
            pieces,
            redirects: c.redirects,
            apart: c.apart,
        }))
    }

    /// Walks up to `n` more ids of the running capture, encoding the nodes it still owes;
    /// true once every id is walked (or none is running).
    fn walk(&mut self, n: usize) -> bool {
        let Some(c) = self.capture.as_mut() else {
            return true;
        };
        // Ids of nodes merged away are gaps, walked like the others.
        for _ in 0..n {
            if c.walk.done() {
                break;
            }
            // Still as it was (a change would have encoded it first) or gone (likewise).
            let id = c.walk.advance().map(ProfileId);
            if let Some((id, node)) = id.and_then(|id| Some((id, self.nodes.get(&id)?))) {
                c.add(id, node);
            }
        }
        c.walk.done()
    }

    /// Encodes every node the running capture has left; its bytes (`None`: none running).
    pub fn finish_capture(&mut self) -> Option<Result<Captured, String>> {
        self.capture.as_ref()?;
        self.capture_step(usize::MAX)
    }

    /// The id the next new profile gets (every id in use is below it).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Whether a capture is running.
    pub fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// Node `id` is about to change, be removed or be made: a running capture encodes it
    /// first as it stood (or notes that it is new).
    fn before_change(&mut self, id: ProfileId) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        if !c.walk.owes(id.0) {
            return;
        }
        // Missing: not there at the start either (a removal takes the node first).
        if let Some(node) = self.nodes.get(&id) {
            c.add(id, node);
        }
        c.walk.mark(id.0);
    }

    fn refresh_kind_tables(&mut self) {
        let n = self.kinds.len();
        let star = self.rules.priority.iter().position(|p| p == "*");
        let listed = self.rules.priority.len();
        self.limits = (0..n)
            .map(|k| {
                let name = self.kinds.name(k as KindId);
                self.rules
                    .limits
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, l)| *l)
                    .unwrap_or(0)
            })
            .collect();
        self.ranks = (0..n)
            .map(|k| {
                let name = self.kinds.name(k as KindId);
                match self.rules.priority.iter().position(|p| p == name) {
                    Some(i) => i as u16,
                    None if Kinds::is_external(k as KindId) => star.unwrap_or(listed) as u16,
                    None => listed as u16 + 1,
                }
            })
            .collect();
    }

    /// The kind names.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    /// The id of an external id type, registering it if new.
    pub fn external_kind(&mut self, name: &str) -> Option<KindId> {
        let before = self.kinds.get(name);
        if before.is_some() {
            return before;
        }
        let k = self.kinds.intern(name)?;
        self.refresh_kind_tables();
        Some(k)
    }

    /// Whether a (normalised) value is blocked.
    pub fn is_blocked(&self, value: &str) -> bool {
        let v = value.trim();
        if v.is_empty() {
            return true;
        }
        // Most values are longer than any blocked one: no lower-casing needed for them.
        if v.len() >= 64 || self.blocked_lens & (1 << v.len()) == 0 {
            return false;
        }
        self.blocked.contains(&v.to_lowercase())
    }

    /// Number of profiles.
    pub fn profiles(&self) -> usize {
        self.nodes.len()
    }

    /// Number of identifiers held.
    pub fn identifiers(&self) -> usize {
        self.index.len()
    }

    /// The current profile of an identifier.
    pub fn lookup(&self, ident: &Ident) -> Option<ProfileId> {
        self.index.get(&split_key(ident.key())).copied()
    }

    /// The profile of the identifier with this key ([`Ident::key`]).
    pub fn lookup_key(&self, key: u128) -> Option<ProfileId> {
        self.index.get(&split_key(key)).copied()
    }

    /// Forgets a profile's identity for good (erasure): its identifiers, the ids merged
    /// into it, the pairs kept apart with them and every other profile's notes naming
    /// them. Returns the identifiers removed.
    pub fn erase(&mut self, id: ProfileId) -> Vec<Ident> {
        // Every node's notes may change below: a running capture takes them all first.
        self.walk(usize::MAX);
        let Some(node) = self.nodes.remove(&id) else {
            return Vec::new();
        };
        let idents: Vec<Ident> = node.members.iter().map(|m| m.ident()).collect();
        let keys: HashSet<u128> = idents.iter().map(Ident::key).collect();
        for k in &keys {
            self.index.remove(&split_key(*k));
            if let Some(partners) = self.apart.remove(k) {
                for p in partners {
                    if let Some(v) = self.apart.get_mut(&p) {
                        v.retain(|x| !keys.contains(x));
                        if v.is_empty() {
                            self.apart.remove(&p);
                        }
                    }
                }
            }
        }
        let dead: Vec<ProfileId> = self
            .redirects
            .keys()
            .copied()
            .filter(|r| self.canonical(*r).is_none())
            .collect();
        for r in dead {
            self.redirects.remove(&r);
        }
        let names = |i: &Ident| keys.contains(&i.key());
        for n in self.nodes.values_mut() {
            if let Some(notes) = n.notes.as_mut() {
                notes.retain(|note| match &note.kind {
                    NoteKind::Merged { kept, joined, .. } => !names(kept) && !names(joined),
                    NoteKind::Blocked { ident, .. } | NoteKind::Split { ident, .. } => {
                        !names(ident)
                    }
                });
                if notes.is_empty() {
                    n.notes = None;
                }
            }
        }
        idents
    }

    /// The live profile a (possibly merged-away) profile id resolves to.
    pub fn canonical(&self, mut id: ProfileId) -> Option<ProfileId> {
        for _ in 0..64 {
            if self.nodes.contains_key(&id) {
                return Some(id);
            }
            id = *self.redirects.get(&id)?;
        }
        None
    }

    /// A profile's identity.
    pub fn node(&self, id: ProfileId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// All live profile ids, ascending.
    pub fn profile_ids(&self) -> Vec<ProfileId> {
        let mut ids: Vec<ProfileId> = self.nodes.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn rank(&self, kind: KindId) -> u16 {
        self.ranks.get(kind as usize).copied().unwrap_or(u16::MAX)
    }

    fn limit(&self, kind: KindId) -> u32 {
        self.limits.get(kind as usize).copied().unwrap_or(0)
    }

    fn count_kind(&self, id: ProfileId, kind: KindId) -> u32 {
        self.nodes
            .get(&id)
            .map(|n| n.members.count_kind(kind) as u32)
            .unwrap_or(0)
    }

    /// The first rule that forbids merging `a` and `b`, if any.
    fn merge_blocker(&self, a: ProfileId, b: ProfileId, explicit: bool) -> Option<String> {
        let (na, nb) = (self.nodes.get(&a)?, self.nodes.get(&b)?);
        if !self.apart.is_empty() {
            let keys_b: HashSet<u128> = nb.members.iter().map(|m| m.key()).collect();
            for m in na.members.iter() {
                if let Some(partners) = self.apart.get(&m.key()) {
                    if partners.iter().any(|p| keys_b.contains(p)) {
                        return Some("un-merged by an admin".into());
                    }
                }
            }
        }
        if explicit {
            return None;
        }
        for (kind, &limit) in self.limits.iter().enumerate() {
            if limit == 0 {
                continue;
            }
            let kind = kind as KindId;
            let ca = na.members.count_kind(kind) as u32;
            let cb = nb.members.count_kind(kind) as u32;
            // Only a merge that brings identifiers of the kind from both sides past the
            // limit is refused (a profile over the limit by `alias` can still merge with
            // one that has none of that kind).
            if ca > 0 && cb > 0 && ca + cb > limit {
                return Some(format!("limit {} = {limit}", self.kinds.name(kind)));
            }
        }
        None
    }

    fn apart_from(&self, ident: &Ident, id: ProfileId) -> bool {
        let Some(partners) = self.apart.get(&ident.key()) else {
            return false;
        };
        self.nodes
            .get(&id)
            .is_some_and(|n| n.members.iter().any(|m| partners.contains(&m.key())))
    }

    /// Resolves one event's identifiers (normalised, in any order) to a profile, merging
    /// and creating as the rules say. `explicit` marks an `alias` call.
    pub fn resolve(
        &mut self,
        idents: &[Ident],
        offset: u64,
        time_ms: i64,
        explicit: bool,
    ) -> Resolution {
        let mut ids: Vec<&Ident> = Vec::with_capacity(idents.len());
        for i in idents {
            if !self.is_blocked(&i.value) && !ids.contains(&i) {
                ids.push(i);
            }
        }
        ids.sort_by_key(|i| self.rank(i.kind));
        let mut res = Resolution::default();
        if ids.is_empty() {
            return res;
        }
        let mut target: Option<ProfileId> = None;
        let mut anchor_ident: Option<&Ident> = None;
        let mut pending: Vec<&Ident> = Vec::new();
        let mut conflicts: Vec<(Ident, Option<ProfileId>, String)> = Vec::new();

        for ident in ids {
            let found = self.lookup(ident);
            match (found, target) {
                (Some(q), Some(p)) if p == q => {}
                (Some(q), Some(p)) => match self.merge_blocker(p, q, explicit) {
                    None => {
                        let rule = if explicit {
                            "alias"
                        } else {
                            "shared identifier"
                        };
                        let kept = anchor_ident.cloned().unwrap_or_else(|| ident.clone());
                        let survivor = self.merge(p, q, offset, time_ms, kept, ident.clone(), rule);
                        res.merged
                            .push((if survivor == p { q } else { p }, survivor));
                        target = Some(survivor);
                    }
                    Some(rule) => conflicts.push((ident.clone(), Some(q), rule)),
                },
                (Some(q), None) => {
                    // New identifiers (of higher priority) want to join q.
                    match self.join_blocker(q, &pending, explicit) {
                        None => {
                            for p in pending.drain(..) {
                                self.attach(
                                    q,
                                    p,
                                    offset,
                                    if explicit { How::Alias } else { How::Joined },
                                );
                            }
                            target = Some(q);
                            anchor_ident = Some(ident);
                        }
                        Some(rule) => conflicts.push((ident.clone(), Some(q), rule)),
                    }
                }
                (None, Some(p)) => {
                    let limit = self.limit(ident.kind);
                    if self.apart_from(ident, p) {
                        conflicts.push((ident.clone(), None, "un-merged by an admin".into()));
                    } else if !explicit && limit > 0 && self.count_kind(p, ident.kind) >= limit {
                        conflicts.push((
                            ident.clone(),
                            None,
                            format!("limit {} = {limit}", self.kinds.name(ident.kind)),
                        ));
                    } else {
                        self.attach(
                            p,
                            ident,
                            offset,
                            if explicit { How::Alias } else { How::Joined },
                        );
                    }
                }
                (None, None) => {
                    let limit = self.limit(ident.kind);
                    let n = pending.iter().filter(|p| p.kind == ident.kind).count() as u32;
                    if limit > 0 && n >= limit {
                        conflicts.push((
                            ident.clone(),
                            None,
                            format!("limit {} = {limit}", self.kinds.name(ident.kind)),
                        ));
                    } else {
                        if anchor_ident.is_none() {
                            anchor_ident = Some(ident);
                        }
                        pending.push(ident);
                    }
                }
            }
        }
        let profile = match target {
            Some(p) => p,
            None => {
                let id = ProfileId(self.next_id);
                self.next_id += 1;
                self.before_change(id);
                self.nodes.insert(id, Node::default());
                for (i, p) in pending.iter().enumerate() {
                    self.attach(
                        id,
                        p,
                        offset,
                        if i == 0 { How::Created } else { How::Joined },
                    );
                }
                res.created = true;
                id
            }
        };
        res.conflicts = conflicts.len();
        if !conflicts.is_empty() {
            self.before_change(profile);
        }
        if let Some(node) = self.nodes.get_mut(&profile) {
            for (ident, other, rule) in conflicts {
                node.notes_mut().push(Note {
                    offset,
                    time_ms,
                    kind: NoteKind::Blocked { ident, other, rule },
                });
            }
            trim_conflicts(node.notes_mut());
        }
        res.profile = Some(profile);
        res
    }

    /// Whether new identifiers `pending` may join profile `q`.
    fn join_blocker(&self, q: ProfileId, pending: &[&Ident], explicit: bool) -> Option<String> {
        if pending.iter().any(|i| self.apart_from(i, q)) {
            return Some("un-merged by an admin".into());
        }
        if explicit {
            return None;
        }
        for i in pending {
            let limit = self.limit(i.kind);
            if limit == 0 {
                continue;
            }
            let have = self.count_kind(q, i.kind);
            let add = pending.iter().filter(|p| p.kind == i.kind).count() as u32;
            if have > 0 && have + add > limit {
                return Some(format!("limit {} = {limit}", self.kinds.name(i.kind)));
            }
        }
        None
    }

    fn attach(&mut self, id: ProfileId, ident: &Ident, offset: u64, how: How) {
        self.index.insert(split_key(ident.key()), id);
        self.before_change(id);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.members.push(MemberRef {
                kind: ident.kind,
                how,
                origin: id,
                offset,
                value: &ident.value,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn merge(
        &mut self,
        a: ProfileId,
        b: ProfileId,
        offset: u64,
        time_ms: i64,
        kept: Ident,
        joined: Ident,
        rule: &str,
    ) -> ProfileId {
        let (survivor, gone) = if a < b { (a, b) } else { (b, a) };
        self.before_change(gone);
        self.before_change(survivor);
        let Some(mut old) = self.nodes.remove(&gone) else {
            return survivor;
        };
        for m in old.members.iter() {
            self.index.insert(split_key(m.key()), survivor);
        }
        self.redirects.insert(gone, survivor);
        if let Some(node) = self.nodes.get_mut(&survivor) {
            node.members.append(&old.members);
            if let Some(mut old_notes) = old.notes.take() {
                node.notes_mut().append(&mut old_notes);
            }
            node.notes_mut().sort_by_key(|n| n.offset);
            node.notes_mut().push(Note {
                offset,
                time_ms,
                kind: NoteKind::Merged {
                    from: gone,
                    into: survivor,
                    kept,
                    joined,
                    rule: rule.to_string(),
                },
            });
            trim_conflicts(node.notes_mut());
        }
        survivor
    }

    /// Links two profiles found likely to be one person (probabilistic matching): merges
    /// them unless a merge rule forbids it. Returns (merged-away, survivor), or the rule
    /// that prevented the merge.
    pub fn link(
        &mut self,
        a: ProfileId,
        b: ProfileId,
        offset: u64,
        time_ms: i64,
        probability: f64,
    ) -> Result<(ProfileId, ProfileId), String> {
        let a = self.canonical(a).ok_or("the profile no longer exists")?;
        let b = self.canonical(b).ok_or("the profile no longer exists")?;
        if a == b {
            return Err("already one profile".into());
        }
        if let Some(rule) = self.merge_blocker(a, b, false) {
            return Err(rule);
        }
        let first = |p: ProfileId| {
            self.nodes
                .get(&p)
                .and_then(|n| n.members.iter().next().map(|m| m.ident()))
        };
        let (Some(kept), Some(joined)) = (first(a), first(b)) else {
            return Err("a profile without identifiers".into());
        };
        let rule = format!("probabilistic match ({probability:.3})");
        let survivor = self.merge(a, b, offset, time_ms, kept, joined, &rule);
        Ok((if survivor == a { b } else { a }, survivor))
    }

    /// Why each identifier belongs to the profile.
    pub fn explain(&self, id: ProfileId) -> Vec<Explanation> {
        let Some(node) = self.nodes.get(&id) else {
            return Vec::new();
        };
        node.members
            .iter()
            .map(|m| {
                let mut via = Vec::new();
                let mut at = m.origin;
                // Follow the merges from the member's original profile to this one.
                for note in node.notes() {
                    if let NoteKind::Merged { from, into, .. } = &note.kind {
                        if *from == at {
                            via.push(note.clone());
                            at = *into;
                        }
                    }
                }
                Explanation {
                    ident: m.ident(),
                    member: m.to_member(),
                    via_merges: via,
                }
            })
            .collect()
    }

    /// Splits `ident` off profile `id` (un-merge). `events` are the profile's events in
    /// log order with the identifiers each carried. The events that carried `ident` move
    /// to a new profile with it (and with identifiers seen only on those events); the
    /// remaining identifiers stay together as far as the remaining events connect them,
    /// each disconnected part becoming a profile of its own. The removed identifier is
    /// kept apart from the profile's remaining identifiers from now on.
    pub fn split(
        &mut self,
        id: ProfileId,
        ident: &Ident,
        events: &[(u64, Vec<Ident>)],
        offset: u64,
        time_ms: i64,
    ) -> Result<SplitPlan, SplitError> {
        let id = self.canonical(id).ok_or(SplitError::NoProfile(id))?;
        let label = format!("{}:{}", self.kinds.name(ident.kind), ident.value);
        let node = self.nodes.get(&id).ok_or(SplitError::NoProfile(id))?;
        let xkey = ident.key();
        if !node.members.iter().any(|m| m.key() == xkey) {
            return Err(SplitError::NotMember(label, id));
        }
        if node.members.len() < 2 {
            return Err(SplitError::OnlyMember(label, id));
        }
        let members: Vec<Member> = node.members.iter().map(|m| m.to_member()).collect();
        let pos: HashMap<u128, usize> = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.key(), i))
            .collect();
        // Union-find over the members, connected by events that do not carry `ident`.
        let mut parent: Vec<usize> = (0..members.len()).collect();
        fn find(p: &mut [usize], mut i: usize) -> usize {
            while p[i] != i {
                p[i] = p[p[i]];
                i = p[i];
            }
            i
        }
        let mut seen_without = vec![false; members.len()];
        let xi = pos[&xkey];
        for (_, ids) in events {
            let idx: Vec<usize> = ids
                .iter()
                .filter_map(|i| pos.get(&i.key()).copied())
                .collect();
            if idx.contains(&xi) {
                continue;
            }
            for w in idx.windows(2) {
                let (ra, rb) = (find(&mut parent, w[0]), find(&mut parent, w[1]));
                if ra != rb {
                    parent[ra.max(rb)] = ra.min(rb);
                }
            }
            for i in idx {
                seen_without[i] = true;
            }
        }
        // Members never seen without `ident` go with it; members seen on no event at all
        // stay with the main part.
        let mut seen_any = vec![false; members.len()];
        for (_, ids) in events {
            for i in ids {
                if let Some(&p) = pos.get(&i.key()) {
                    seen_any[p] = true;
                }
            }
        }
        let goes_with_x = |i: usize| i == xi || (seen_any[i] && !seen_without[i]);
        let main_root = (0..members.len())
            .filter(|&i| !goes_with_x(i))
            .map(|i| find(&mut parent, i))
            .min();
        let Some(main_root) = main_root else {
            return Err(SplitError::OnlyMember(label, id));
        };
        let new_id = ProfileId(self.next_id);
        self.next_id += 1;
        // Assign every member to a profile.
        let mut root_to_profile: HashMap<usize, ProfileId> = HashMap::new();
        root_to_profile.insert(main_root, id);
        let mut others = Vec::new();
        let mut owner: Vec<ProfileId> = Vec::with_capacity(members.len());
        for i in 0..members.len() {
            if goes_with_x(i) {
                owner.push(new_id);
                continue;
            }
            let r = find(&mut parent, i);
            let p = match root_to_profile.get(&r) {
                Some(p) => *p,
                None => {
                    let p = ProfileId(self.next_id);
                    self.next_id += 1;
                    root_to_profile.insert(r, p);
                    others.push(p);
                    p
                }
            };
            owner.push(p);
        }
        // Rebuild the nodes.
        self.before_change(id);
        let mut old = self.nodes.remove(&id).unwrap_or_default();
        let mut groups: Vec<(ProfileId, Vec<u64>)> = std::iter::once(id)
            .chain(std::iter::once(new_id))
            .chain(others.iter().copied())
            .map(|p| (p, Vec::new()))
            .collect();
        for p in groups.iter().map(|g| g.0).collect::<Vec<_>>() {
            self.before_change(p);
            self.nodes.insert(p, Node::default());
        }
        for (i, mut m) in members.into_iter().enumerate() {
            let p = owner[i];
            self.index.insert(split_key(m.key()), p);
            if p != id {
                m.how = How::Split;
                m.origin = p;
                m.offset = offset;
            }
            if let Some(n) = self.nodes.get_mut(&p) {
                n.members.push(MemberRef {
                    kind: m.kind,
                    how: m.how,
                    origin: m.origin,
                    offset: m.offset,
                    value: &m.value,
                });
            }
        }
        if let Some(n) = self.nodes.get_mut(&id) {
            n.notes = std::mem::take(&mut old.notes);
        }
        let split_note = Note {
            offset,
            time_ms,
            kind: NoteKind::Split {
                ident: ident.clone(),
                new: new_id,
                others: others.clone(),
            },
        };
        for (p, _) in &groups {
            if let Some(n) = self.nodes.get_mut(p) {
                n.notes_mut().push(split_note.clone());
            }
        }
        // Events follow their identifiers.
        for (off, ids) in events {
            let carries_x = ids.iter().any(|i| i.key() == xkey);
            let p = if carries_x {
                new_id
            } else {
                ids.iter()
                    .find_map(|i| pos.get(&i.key()).map(|&k| owner[k]))
                    .unwrap_or(id)
            };
            if let Some(g) = groups.iter_mut().find(|g| g.0 == p) {
                g.1.push(*off);
            }
        }
        // Keep the removed identifier apart from what remains.
        let remaining: Vec<u128> = self
            .nodes
            .get(&id)
            .map(|n| n.members.iter().map(|m| m.key()).collect())
            .unwrap_or_default();
        for k in &remaining {
            self.apart.entry(xkey).or_default().push(*k);
            self.apart.entry(*k).or_default().push(xkey);
        }
        Ok(SplitPlan {
            original: id,
            new: new_id,
            groups,
        })
    }

    /// A deterministic, serializable copy of the graph (rules are not included).
    pub fn snapshot(&self) -> GraphSnapshot {
        let mut nodes: Vec<(ProfileId, Node)> =
            self.nodes.iter().map(|(k, v)| (*k, v.clone())).collect();
        nodes.sort_unstable_by_key(|n| n.0);
        let mut redirects: Vec<(ProfileId, ProfileId)> =
            self.redirects.iter().map(|(k, v)| (*k, *v)).collect();
        redirects.sort_unstable();
        let mut apart: Vec<(u128, Vec<u128>)> =
            self.apart.iter().map(|(k, v)| (*k, v.clone())).collect();
        apart.sort_unstable();
        GraphSnapshot {
            kinds: self.kinds.clone(),
            next_id: self.next_id,
            nodes,
            redirects,
            apart,
        }
    }

    /// A borrowed, deterministic view for serialization.
    pub fn view(&self) -> GraphView<'_> {
        let mut nodes: Vec<(ProfileId, &Node)> = self.nodes.iter().map(|(k, v)| (*k, v)).collect();
        nodes.sort_unstable_by_key(|n| n.0);
        let mut redirects: Vec<(ProfileId, ProfileId)> =
            self.redirects.iter().map(|(k, v)| (*k, *v)).collect();
        redirects.sort_unstable();
        let mut apart: Vec<(u128, &Vec<u128>)> = self.apart.iter().map(|(k, v)| (*k, v)).collect();
        apart.sort_unstable_by_key(|a| a.0);
        GraphView {
            kinds: &self.kinds,
            next_id: self.next_id,
            nodes,
            redirects,
            apart,
        }
    }

    /// Rebuilds a graph from a snapshot, with the given rules.
    pub fn restore(rules: Rules, snap: GraphSnapshot) -> Self {
        let mut g = Graph::new(rules);
        g.kinds = snap.kinds;
        g.refresh_kind_tables();
        // Above every id in use (a capture walks the ids below it).
        let top = snap.nodes.iter().map(|(id, _)| id.0 + 1).max().unwrap_or(1);
        g.next_id = snap.next_id.max(top);
        let members: usize = snap.nodes.iter().map(|(_, n)| n.members.len()).sum();
        g.index.reserve(members);
        g.nodes.reserve(snap.nodes.len());
        for (id, node) in snap.nodes {
            for m in node.members.iter() {
                g.index.insert(split_key(m.key()), id);
            }
            g.nodes.insert(id, node);
        }
        g.redirects.extend(snap.redirects);
        g.apart.extend(snap.apart);
        g
    }
}

fn blocked_lens(blocked: &HashSet<String>) -> u64 {
    blocked
        .iter()
        .filter(|b| b.len() < 64)
        .fold(0, |acc, b| acc | (1 << b.len()))
}

fn trim_conflicts(notes: &mut Vec<Note>) {
    let n = notes
        .iter()
        .filter(|n| matches!(n.kind, NoteKind::Blocked { .. }))
        .count();
    if n <= MAX_CONFLICT_NOTES {
        return;
    }
    let mut drop = n - MAX_CONFLICT_NOTES;
    notes.retain(|note| {
        if drop > 0 && matches!(note.kind, NoteKind::Blocked { .. }) {
            drop -= 1;
            false
        } else {
            true
        }
    });
}
