//! Read access to the derived state, rendered as JSON for the admin API.

use crate::{PipelineError, Shared};
use niyet_analytics::rfm::{Customer, Group, Scores, Table};
use niyet_engine::segments::Segments;
use niyet_engine::{Profile, Symbols, TraitSet, MONEY_SCALE};
use niyet_identity::{normalize, Graph, Ident, NoteKind, ProfileId};
use niyet_model::format_rfc3339_millis;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Queries over profiles and identities.
pub struct ProfileQuery<'a> {
    sh: &'a Shared,
}

fn raw_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// How a profile's own traits are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TraitForm {
    /// `{"email": {"value": …, "time": …, "source": …}}`: the profile API.
    WithSources,
    /// `{"email": …}`: what action documents carry.
    Plain,
}

fn traits_json(traits: &TraitSet, syms: &Symbols) -> Value {
    let mut m = Map::new();
    for t in traits.iter() {
        m.insert(
            syms.name(t.key).to_string(),
            json!({
                "value": raw_json(t.value),
                "time": format_rfc3339_millis(t.time_ms),
                "source": syms.name(t.source),
            }),
        );
    }
    Value::Object(m)
}

/// Consent statements by purpose (`consent.<purpose>` traits): status, time, source.
fn consent_json(traits: &TraitSet, syms: &Symbols) -> Value {
    let mut m = Map::new();
    for t in traits.iter() {
        if let Some(p) = syms
            .name(t.key)
            .strip_prefix(niyet_engine::consent::TRAIT_PREFIX)
        {
            m.insert(
                p.to_string(),
                json!({
                    "status": raw_json(t.value),
                    "time": format_rfc3339_millis(t.time_ms),
                    "source": syms.name(t.source),
                }),
            );
        }
    }
    Value::Object(m)
}

fn ident_json(g: &Graph, i: &Ident) -> Value {
    json!({"type": g.kinds().name(i.kind), "value": &*i.value})
}

fn note_json(g: &Graph, n: &niyet_identity::Note) -> Value {
    let base = |kind: &str| {
        json!({
            "type": kind,
            "offset": n.offset,
            "time": format_rfc3339_millis(n.time_ms),
        })
    };
    let mut v = match &n.kind {
        NoteKind::Merged {
            from,
            into,
            kept,
            joined,
            rule,
        } => {
            let mut v = base("profile merged");
            v["merged_profile"] = json!(from.to_string());
            v["into"] = json!(into.to_string());
            v["identifiers"] = json!([ident_json(g, kept), ident_json(g, joined)]);
            v["rule"] = json!(rule);
            v
        }
        NoteKind::Blocked { ident, other, rule } => {
            let mut v = base("merge blocked");
            v["identifier"] = ident_json(g, ident);
            v["other_profile"] = json!(other.map(|o| o.to_string()));
            v["rule"] = json!(rule);
            v
        }
        NoteKind::Split { ident, new, others } => {
            let mut v = base("profile split");
            v["identifier"] = ident_json(g, ident);
            v["new_profile"] = json!(new.to_string());
            v["other_new_profiles"] =
                json!(others.iter().map(|o| o.to_string()).collect::<Vec<_>>());
            v
        }
    };
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

impl<'a> ProfileQuery<'a> {
    pub(crate) fn new(sh: &'a Shared) -> Self {
        Self { sh }
    }

    /// An identifier from an API kind name and a raw value (normalised like events).
    pub fn parse_identifier(&self, kind: &str, value: &str) -> Result<Ident, PipelineError> {
        let g = self.sh.graph.read().map_err(|_| PipelineError::Stopped)?;
        let k = g.kinds().get(kind).ok_or_else(|| {
            PipelineError::Invalid(format!(
                "unknown identifier type `{kind}`; use user_id, anonymous_id, email, phone, device_id or an external id type seen in events"
            ))
        })?;
        let v = match k {
            niyet_identity::EMAIL => normalize::email(value).ok_or_else(|| {
                PipelineError::Invalid(format!("`{value}` is not an e-mail address"))
            })?,
            niyet_identity::PHONE => normalize::phone(value, &self.sh.cfg.identity.calling_code)
                .ok_or_else(|| {
                    PipelineError::Invalid(format!("`{value}` is not a phone number"))
                })?,
            _ => value.to_string(),
        };
        Ok(Ident::new(k, v))
    }

    /// The profile holding an identifier.
    pub fn find(&self, kind: &str, value: &str) -> Result<Option<ProfileId>, PipelineError> {
        let ident = self.parse_identifier(kind, value)?;
        let g = self.sh.graph.read().map_err(|_| PipelineError::Stopped)?;
        Ok(g.lookup(&ident))
    }

    /// The live profile an id (possibly merged away) resolves to.
    pub fn canonical(&self, id: ProfileId) -> Option<ProfileId> {
        self.sh.graph.read().ok()?.canonical(id)
    }

    fn with_profile<T>(&self, id: ProfileId, f: impl FnOnce(&Profile) -> T) -> Option<T> {
        let part = self.sh.read_partition(self.sh.partition_of(id))?;
        part.get(&id.0).map(|p| f(p))
    }

    /// The profile's predicted lifetime value at `now` under the published model
    /// (`None`: no model yet, or no order).
    pub fn lifetime_value(&self, id: ProfileId, now: i64) -> Option<f64> {
        let id = self.canonical(id)?;
        let model = self.sh.segments.read().ok()?.clv.read().ok()?.clone()?;
        self.with_profile(id, |p| model.predict(&p.purchases, now))
            .flatten()
            .map(|(_, clv)| clv)
            .filter(|v| v.is_finite())
    }

    /// A profile as JSON (`None` if it does not exist).
    pub fn profile(&self, id: ProfileId) -> Option<Value> {
        self.profile_as(id, TraitForm::WithSources)
    }

    /// A profile as JSON with its traits as plain values (`"traits": {"email": …}`), as
    /// action documents carry it; otherwise as [`ProfileQuery::profile`].
    pub fn profile_plain(&self, id: ProfileId) -> Option<Value> {
        self.profile_as(id, TraitForm::Plain)
    }

    /// [`ProfileQuery::profile_plain`] written straight to JSON text (the same document,
    /// its keys in another order), with the profile's consent statements beside it as a
    /// value: what an action's document needs, without building the profile as values
    /// first. Taken under the same locks, in the same order, as `profile_plain`.
    pub fn profile_plain_json(&self, id: ProfileId) -> Option<PlainProfile> {
        let mut out = Vec::with_capacity(1024);
        let id = {
            let g = self.sh.graph.read().ok()?;
            let id = g.canonical(id)?;
            let node = g.node(id)?;
            out.extend_from_slice(b"{\"id\":");
            put(&mut out, &id.to_string());
            out.extend_from_slice(b",\"identifiers\":[");
            for (i, m) in node.members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"type\":");
                put(&mut out, g.kinds().name(m.kind));
                out.extend_from_slice(b",\"value\":");
                put(&mut out, m.value);
                out.push(b'}');
            }
            out.extend_from_slice(b"],\"merged_profiles\":[");
            let mut first = true;
            for n in node.notes() {
                if let NoteKind::Merged { from, .. } = &n.kind {
                    if !std::mem::take(&mut first) {
                        out.push(b',');
                    }
                    put(&mut out, &from.to_string());
                }
            }
            out.push(b']');
            id
        };
        let segs = self.sh.segments.read().ok()?.clone();
        let consent = {
            let part = self.sh.read_partition(self.sh.partition_of(id))?;
            let syms = self.sh.symbols.read().ok()?;
            let empty = Profile::default();
            let p = part.get(&id.0).map_or(&empty, |p| &**p);
            write_plain_body(p, &syms, &segs, &mut out)
        };
        out.push(b'}');
        Some(PlainProfile { json: out, consent })
    }

    fn profile_as(&self, id: ProfileId, form: TraitForm) -> Option<Value> {
        // The router writes the graph and the symbol table for every event, and the
        // partition owner holds its partition through a batch (letting waiting readers in
        // between two operations): neither table is held
        // while waiting for the partition (which would stop the router meanwhile). The
        // partition is taken first and the symbols only for rendering; no other path
        // holds the symbols while it waits for a partition.
        let (id, identifiers, merged) = {
            let g = self.sh.graph.read().ok()?;
            let id = g.canonical(id)?;
            let node = g.node(id)?;
            let identifiers: Vec<Value> = node
                .members
                .iter()
                .map(|m| json!({"type": g.kinds().name(m.kind), "value": m.value}))
                .collect();
            let merged: Vec<String> = node
                .notes()
                .iter()
                .filter_map(|n| match &n.kind {
                    NoteKind::Merged { from, .. } => Some(from.to_string()),
                    _ => None,
                })
                .collect();
            (id, identifiers, merged)
        };
        let segs = self.sh.segments.read().ok()?.clone();
        let body = {
            let part = self.sh.read_partition(self.sh.partition_of(id))?;
            let syms = self.sh.symbols.read().ok()?;
            match part.get(&id.0) {
                Some(p) => render_profile(p, &syms, &segs, form),
                None => render_profile(&Profile::default(), &syms, &segs, form),
            }
        };
        let mut v = json!({
            "id": id.to_string(),
            "identifiers": identifiers,
            "merged_profiles": merged,
        });
        if let (Value::Object(m), Value::Object(b)) = (&mut v, body) {
            m.extend(b);
        }
        Some(v)
    }

    /// Why each identifier belongs to the profile.
    pub fn identity(&self, id: ProfileId) -> Option<Value> {
        let g = self.sh.graph.read().ok()?;
        let id = g.canonical(id)?;
        let node = g.node(id)?;
        let explained: Vec<Value> = g
            .explain(id)
            .into_iter()
            .map(|e| {
                let how = match e.member.how {
                    niyet_identity::How::Created => {
                        "first identifier of the profile, seen on the event at this offset"
                    }
                    niyet_identity::How::Joined => {
                        "arrived on an event together with identifiers already in the profile"
                    }
                    niyet_identity::How::Alias => "linked by an alias call",
                    niyet_identity::How::Split => "moved here when an admin split a profile",
                };
                json!({
                    "identifier": ident_json(&g, &e.ident),
                    "joined_profile": e.member.origin.to_string(),
                    "offset": e.member.offset,
                    "how": how,
                    "via_merges": e.via_merges.iter().map(|n| note_json(&g, n)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let history: Vec<Value> = node.notes().iter().map(|n| note_json(&g, n)).collect();
        Some(json!({
            "id": id.to_string(),
            "identifiers": explained,
            "history": history,
        }))
    }

    /// Every consent statement in the profile's events, oldest first: purpose, status,
    /// time, source and the event's offset (its proof).
    pub fn consent_history(&self, id: ProfileId) -> Option<Value> {
        let id = self.canonical(id)?;
        let mut offsets = self.with_profile(id, |p| p.events.newest_first())?;
        offsets.reverse();
        let mut out = Vec::new();
        for o in offsets {
            let Some(r) = self.sh.log.read(o, 1).ok().and_then(|mut r| r.pop()) else {
                continue;
            };
            if let Ok(v) = niyet_engine::extract::parse(&r.payload) {
                for (purpose, status) in niyet_engine::consent::changes(&v) {
                    out.push(json!({
                        "purpose": purpose,
                        "status": status,
                        "time": format_rfc3339_millis(v.time_ms),
                        "source": &*v.source,
                        "offset": o,
                    }));
                }
            }
        }
        Some(Value::Array(out))
    }

    /// Every event of the profile, oldest first, as stored.
    pub fn all_events(&self, id: ProfileId) -> Option<Vec<Value>> {
        let id = self.canonical(id)?;
        let mut offsets = self.with_profile(id, |p| p.events.newest_first())?;
        offsets.reverse();
        Some(
            offsets
                .into_iter()
                .filter_map(|o| self.sh.log.read(o, 1).ok()?.pop())
                .map(|r| {
                    json!({
                        "offset": r.offset,
                        "event": serde_json::from_slice::<Value>(&r.payload).unwrap_or(Value::Null),
                    })
                })
                .collect(),
        )
    }

    /// Keys ([`Ident::key`]) and values of the profile's identifiers.
    pub fn identifier_keys(&self, id: ProfileId) -> Option<Vec<(u128, String)>> {
        let g = self.sh.graph.read().ok()?;
        let id = g.canonical(id)?;
        Some(
            g.node(id)?
                .members
                .iter()
                .map(|m| (m.ident().key(), m.value.to_string()))
                .collect(),
        )
    }

    /// The profile's history, newest first: its events (read from the log) and identity
    /// changes. `before`: only entries with a smaller offset (the cursor of the next page).
    pub fn events(&self, id: ProfileId, before: Option<u64>, limit: usize) -> Option<Value> {
        let (id, notes) = {
            let g = self.sh.graph.read().ok()?;
            let id = g.canonical(id)?;
            let notes: Vec<(u64, Value)> = g
                .node(id)?
                .notes()
                .iter()
                .map(|n| (n.offset, note_json(&g, n)))
                .collect();
            (id, notes)
        };
        let offsets = self
            .with_profile(id, |p| p.events.newest_first())
            .unwrap_or_default();
        let total = offsets.len();
        let cut = before.unwrap_or(u64::MAX);
        // (offset, 1 = identity note / 0 = event, index of the note), newest first; a note
        // sorts before the event at the same offset that caused it.
        let mut keys: Vec<(u64, u8, usize)> = offsets
            .into_iter()
            .filter(|o| *o < cut)
            .map(|o| (o, 0, 0))
            .chain(
                notes
                    .iter()
                    .enumerate()
                    .filter(|(_, (o, _))| *o < cut)
                    .map(|(i, (o, _))| (*o, 1, i)),
            )
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse((k.0, k.1)));
        // A page never splits the entries of one offset, so `before` loses nothing.
        let mut end = keys.len().min(limit.max(1));
        while end < keys.len() && end > 0 && keys[end].0 == keys[end - 1].0 {
            end += 1;
        }
        let next = (end < keys.len()).then(|| keys[end - 1].0);
        let mut entries: Vec<Value> = Vec::with_capacity(end);
        for (o, kind, i) in keys.into_iter().take(end) {
            if kind == 1 {
                entries.push(notes[i].1.clone());
                continue;
            }
            let ev = match self.sh.log.read(o, 1) {
                Ok(mut r) if !r.is_empty() => {
                    serde_json::from_slice(&r.remove(0).payload).unwrap_or(Value::Null)
                }
                _ => json!({"error": "no longer in the log"}),
            };
            entries.push(json!({"offset": o, "type": "event", "event": ev}));
        }
        Some(json!({
            "profile": id.to_string(),
            "event_count": total,
            "entries": entries,
            "next_before": next,
        }))
    }

    /// Profiles whose trait `key` equals `value` (JSON value compared as text for strings,
    /// or any value when `value` is None), by id, after the cursor `after`.
    pub fn search(
        &self,
        key: &str,
        value: Option<&str>,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Value {
        let Some(sym) = self.sh.symbols.read().ok().and_then(|s| s.get(key)) else {
            return json!({"profiles": [], "next_after": null});
        };
        let mut hits: Vec<u64> = Vec::new();
        let after = after.map(|a| a.0).unwrap_or(0);
        for part in &self.sh.partitions {
            let Ok(p) = part.read() else { continue };
            for (id, prof) in p.iter() {
                if *id <= after {
                    continue;
                }
                let Some(t) = prof.trait_value(sym) else {
                    continue;
                };
                let ok = match value {
                    None => true,
                    Some(want) => match raw_json(t.value) {
                        Value::String(s) => s == want,
                        other => other == raw_json(want),
                    },
                };
                if ok {
                    hits.push(*id);
                }
            }
        }
        hits.sort_unstable();
        hits.truncate(limit);
        let next = (hits.len() == limit)
            .then(|| hits.last().map(|h| format!("p_{h}")))
            .flatten();
        let profiles: Vec<Value> = hits
            .into_iter()
            .filter_map(|h| self.profile(ProfileId(h)))
            .collect();
        json!({"profiles": profiles, "next_after": next})
    }
}

impl ProfileQuery<'_> {
    /// Likely links found by probabilistic matching but not merged.
    pub fn suggestions(&self, id: ProfileId) -> Option<Value> {
        let g = self.sh.graph.read().ok()?;
        let id = g.canonical(id)?;
        let m = self.sh.matcher.read().ok()?;
        let list: Vec<Value> = m
            .suggestions(&g, id)
            .into_iter()
            .map(|s| {
                json!({
                    "profile": s.other.to_string(),
                    "probability": (s.probability * 1000.0).round() / 1000.0,
                    "agreeing_fields": s.fields,
                    "offset": s.offset,
                })
            })
            .collect();
        Some(json!({"id": id.to_string(), "suggestions": list}))
    }

    /// A profile's segments now (with entry times) and its latest segment changes.
    pub fn profile_segments(&self, id: ProfileId) -> Option<Value> {
        let id = self.canonical(id)?;
        let segs = self.sh.segments.read().ok()?.clone();
        self.with_profile(id, |p| {
            let history: Vec<Value> = p
                .segments
                .iter()
                .flat_map(|s| s.history.iter().rev())
                .map(|(i, entered, at)| {
                    json!({
                        "type": if *entered { "segment entered" } else { "segment exited" },
                        "segment": segs.set.name(*i as usize),
                        "time": format_rfc3339_millis(*at),
                    })
                })
                .collect();
            json!({
                "id": id.to_string(),
                "segments": render_segments(p, &segs),
                "history": history,
            })
        })
        .or_else(|| Some(json!({"id": id.to_string(), "segments": [], "history": []})))
    }

    /// A profile's intent scores at `now`, with the signals that made them and their
    /// threshold crossings.
    pub fn profile_scores(&self, id: ProfileId, now: i64) -> Option<Value> {
        let id = self.canonical(id)?;
        let j = self.sh.journeys.clone();
        let scores = self
            .with_profile(id, |p| {
                let empty = Default::default();
                let st = p.segments.as_ref().map_or(&empty, |s| &s.journeys.scores);
                j.scores.explain(st, now)
            })
            .unwrap_or_else(|| j.scores.explain(&Default::default(), now));
        Some(json!({"id": id.to_string(), "scores": scores}))
    }

    /// Names of the segments in force.
    pub fn segment_names(&self) -> Vec<String> {
        self.sh
            .segments
            .read()
            .map(|s| {
                (0..s.set.len())
                    .map(|i| s.set.name(i).to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every segment with its rule and current size.
    pub fn segments(&self) -> Value {
        let Ok(segs) = self.sh.segments.read().map(|s| s.clone()) else {
            return Value::Null;
        };
        let sizes = self.sh.sizes.read().ok().map(|s| s.clone());
        Value::Array(
            (0..segs.set.len())
                .map(|i| segment_json(self.sh, &segs, sizes.as_deref().map(|v| v.as_slice()), i))
                .collect(),
        )
    }

    /// One segment with its rule and size.
    pub fn segment(&self, name: &str) -> Option<Value> {
        let segs = self.sh.segments.read().ok()?.clone();
        let i = segs.set.index(name)?;
        let sizes = self.sh.sizes.read().ok().map(|s| s.clone());
        Some(segment_json(
            self.sh,
            &segs,
            sizes.as_deref().map(|v| v.as_slice()),
            i,
        ))
    }

    /// Members of a segment by profile id after `after`, with their entry times.
    pub fn members(&self, name: &str, after: Option<ProfileId>, limit: usize) -> Option<Value> {
        let segs = self.sh.segments.read().ok()?.clone();
        let i = segs.set.index(name)?;
        let mut found: Vec<(u64, i64)> = Vec::new();
        for part in &self.sh.partitions {
            let Ok(part) = part.read() else { continue };
            for (id, p) in part.iter() {
                if after.is_some_and(|a| *id <= a.0) {
                    continue;
                }
                if let Some(since) = p.segments.as_ref().and_then(|s| s.m.since(i)) {
                    found.push((*id, since));
                }
            }
        }
        found.sort_unstable();
        found.truncate(limit);
        let next = (found.len() == limit)
            .then(|| found.last().map(|m| ProfileId(m.0).to_string()))
            .flatten();
        Some(json!({
            "segment": name,
            "members": found.iter().map(|(id, since)| json!({
                "profile": ProfileId(*id).to_string(),
                "since": format_rfc3339_millis(*since),
            })).collect::<Vec<_>>(),
            "next_after": next,
        }))
    }

    /// Two segments side by side: sizes, overlap, and the members of each who ordered
    /// after they entered (the later conversion rate).
    pub fn compare(&self, a: &str, b: &str) -> Option<Value> {
        let segs = self.sh.segments.read().ok()?.clone();
        let (ia, ib) = (segs.set.index(a)?, segs.set.index(b)?);
        // (members, converted) of a, of b, of both.
        let mut n = [(0u64, 0u64); 3];
        for part in &self.sh.partitions {
            let Ok(part) = part.read() else { continue };
            for p in part.values() {
                let Some(s) = &p.segments else { continue };
                let converted =
                    |t: i64| u64::from(p.purchases.orders > 0 && p.purchases.last_order_ms > t);
                let (sa, sb) = (s.m.since(ia), s.m.since(ib));
                if let Some(t) = sa {
                    n[0].0 += 1;
                    n[0].1 += converted(t);
                }
                if let Some(t) = sb {
                    n[1].0 += 1;
                    n[1].1 += converted(t);
                }
                if let (Some(x), Some(y)) = (sa, sb) {
                    n[2].0 += 1;
                    n[2].1 += converted(x.max(y));
                }
            }
        }
        let rate = |(m, c): (u64, u64)| if m == 0 { 0.0 } else { c as f64 / m as f64 };
        let side = |name: &str, k: usize| json!({"segment": name, "size": n[k].0, "converted": n[k].1, "conversion_rate": rate(n[k])});
        let union = n[0].0 + n[1].0 - n[2].0;
        Some(json!({
            "a": side(a, 0),
            "b": side(b, 1),
            "overlap": n[2].0,
            "only_a": n[0].0 - n[2].0,
            "only_b": n[1].0 - n[2].0,
            "jaccard": if union == 0 { 0.0 } else { n[2].0 as f64 / union as f64 },
            "conversion_event": self.sh.cfg.commerce.order,
        }))
    }

    /// A segment's size over time, from `since` on (ms).
    pub fn segment_sizes(&self, name: &str, since: i64) -> Option<Value> {
        let segs = self.sh.segments.read().ok()?.clone();
        let i = segs.set.index(name)?;
        let now = self
            .sh
            .sizes
            .read()
            .ok()
            .and_then(|s| {
                s.get(i)
                    .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            })
            .unwrap_or(0);
        let h = self.sh.size_history.lock().ok()?;
        let points: Vec<Value> = h
            .of(name, since)
            .into_iter()
            .map(|(t, n)| json!({"time": format_rfc3339_millis(t), "size": n}))
            .collect();
        Some(json!({
            "segment": name,
            "size": now,
            "interval_seconds": h.interval_ms() / 1000,
            "points": points,
        }))
    }

    /// Every customer (profile with an order) with its RFM inputs, by id, and the base
    /// they are scored against.
    fn rfm_base(&self) -> (Vec<(u64, Customer)>, Table) {
        let mut base = Vec::new();
        for part in &self.sh.partitions {
            let Ok(part) = part.read() else { continue };
            base.extend(part.iter().filter_map(|(id, p)| Some((*id, customer(p)?))));
        }
        base.sort_unstable_by_key(|c| c.0);
        let table = Table::new(base.iter().map(|c| c.1));
        (base, table)
    }

    /// The RFM table now: the base, where each fifth begins, and the size of each score
    /// and named group. `now` (ms) turns last-order times into days.
    pub fn rfm(&self, now: i64) -> Value {
        let (base, table) = self.rfm_base();
        let mut groups: BTreeMap<Group, u64> = Group::ALL.iter().map(|g| (*g, 0)).collect();
        let mut per = [[0u64; 5]; 3];
        for (_, c) in &base {
            let s = table.score(c);
            *groups.entry(s.group()).or_default() += 1;
            per[0][s.r as usize - 1] += 1;
            per[1][s.f as usize - 1] += 1;
            per[2][s.m as usize - 1] += 1;
        }
        let n = base.len();
        let (r, f, m) = table.cuts();
        let cut = |k: usize, what: Value| json!({"score": k + 2, "above": what});
        json!({
            "customers": n,
            "at": format_rfc3339_millis(now),
            "cuts": {
                "recency": r.above.iter().enumerate().map(|(k, t)| cut(k, t.map_or(Value::Null, |t| json!({
                    "last_order_after": format_rfc3339_millis(t), "days_ago": days_ago(now, t)})))).collect::<Vec<_>>(),
                "frequency": f.above.iter().enumerate().map(|(k, o)| cut(k, json!(o))).collect::<Vec<_>>(),
                "monetary": m.above.iter().enumerate().map(|(k, v)| cut(k, json!(v.map(|v| v as f64 / MONEY_SCALE)))).collect::<Vec<_>>(),
            },
            "scores": {"r": per[0], "f": per[1], "m": per[2]},
            "groups": groups.iter().map(|(g, k)| json!({
                "group": g.name(), "size": k,
                "share": if n == 0 { 0.0 } else { *k as f64 / n as f64 },
            })).collect::<Vec<_>>(),
        })
    }

    /// Customers with their RFM scores, by profile id after `after`, optionally of one
    /// group only.
    pub fn rfm_members(
        &self,
        group: Option<Group>,
        after: Option<ProfileId>,
        limit: usize,
        now: i64,
    ) -> Value {
        let (base, table) = self.rfm_base();
        let list: Vec<Value> = base
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| *id > a.0))
            .filter_map(|(id, c)| {
                let s = table.score(c);
                group
                    .is_none_or(|g| s.group() == g)
                    .then(|| rfm_json(*id, c, s, now))
            })
            .take(limit)
            .collect();
        let next = (list.len() == limit)
            .then(|| {
                list.last()
                    .and_then(|v| v["profile"].as_str().map(String::from))
            })
            .flatten();
        json!({"customers": table.len(), "members": list, "next_after": next})
    }

    /// One profile's RFM scores (null scores while it has no order).
    pub fn profile_rfm(&self, id: ProfileId, now: i64) -> Option<Value> {
        let id = self.canonical(id)?;
        let c = self.with_profile(id, customer)?;
        let Some(c) = c else {
            return Some(json!({"profile": id.to_string(), "scores": null, "group": null}));
        };
        let (_, table) = self.rfm_base();
        Some(rfm_json(id.0, &c, table.score(&c), now))
    }

    /// Profiles by id after the cursor `after`.
    pub fn list(&self, after: Option<ProfileId>, limit: usize) -> Value {
        let ids: Vec<ProfileId> = match self.sh.graph.read() {
            Ok(g) => g
                .profile_ids()
                .into_iter()
                .filter(|id| after.is_none_or(|a| *id > a))
                .take(limit)
                .collect(),
            Err(_) => Vec::new(),
        };
        let next = (ids.len() == limit)
            .then(|| ids.last().map(|i| i.to_string()))
            .flatten();
        let profiles: Vec<Value> = ids.into_iter().filter_map(|id| self.profile(id)).collect();
        json!({"profiles": profiles, "next_after": next})
    }

    /// Every profile with its identity, by id: a canonical dump of the derived state
    /// (names, not internal numbers), for comparing two runs.
    pub fn dump(&self) -> Value {
        let ids = match self.sh.graph.read() {
            Ok(g) => g.profile_ids(),
            Err(_) => return Value::Null,
        };
        Value::Array(
            ids.into_iter()
                .filter_map(|id| {
                    Some(json!({
                        "profile": self.profile(id)?,
                        "identity": self.identity(id)?,
                    }))
                })
                .collect(),
        )
    }
}

fn segment_json(
    sh: &Shared,
    segs: &Segments,
    sizes: Option<&[std::sync::atomic::AtomicI64]>,
    i: usize,
) -> Value {
    let rule = segs.set.rule(i);
    let name = segs.set.name(i);
    let api = sh
        .api_segments
        .read()
        .ok()
        .and_then(|a| a.iter().find(|s| s.name == name).cloned());
    json!({
        "name": name,
        "source": if api.is_some() { "api" } else { "config" },
        "description": api.map(|a| a.description).unwrap_or_default(),
        "rule": rule.to_string(),
        "rule_json": serde_json::to_value(rule).unwrap_or(Value::Null),
        "size": sizes
            .and_then(|s| s.get(i))
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0),
    })
}

fn render_segments(p: &Profile, segs: &Segments) -> Value {
    let Some(st) = &p.segments else {
        return json!([]);
    };
    Value::Array(
        st.m.member
            .iter()
            .map(|(i, since)| {
                json!({"segment": segs.set.name(*i as usize), "since": format_rfc3339_millis(*since)})
            })
            .collect(),
    )
}

/// A profile as JSON text and its consent statements (see
/// [`ProfileQuery::profile_plain_json`]).
#[derive(Debug, Clone)]
pub struct PlainProfile {
    /// The profile document, a JSON object.
    pub json: Vec<u8>,
    /// Its `consent` member, as a value.
    pub consent: Value,
}

/// Writes `v` as JSON (strings escaped, numbers as `serde_json` writes them).
fn put<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    // Writing to a Vec cannot fail, and these values all serialise.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Writes `,"key":` (the members it starts always follow others).
fn member(out: &mut Vec<u8>, key: &str) {
    out.push(b',');
    put(out, key);
    out.push(b':');
}

fn put_time_or_null(out: &mut Vec<u8>, has: bool, t: i64) {
    if has {
        put(out, &format_rfc3339_millis(t));
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A trait's stored JSON text as it is (checked, as [`raw_json`] would read it).
fn put_raw(out: &mut Vec<u8>, text: &str) {
    match serde_json::from_str::<&serde_json::value::RawValue>(text) {
        Ok(r) => out.extend_from_slice(r.get().as_bytes()),
        Err(_) => out.extend_from_slice(b"null"),
    }
}

/// The members [`render_profile`] gives in the plain form, written after members already
/// in `out` (each with a comma before it); returns the `consent` member's value.
fn write_plain_body(p: &Profile, syms: &Symbols, segs: &Segments, out: &mut Vec<u8>) -> Value {
    let seen = !p.events.is_empty();
    member(out, "first_seen");
    put_time_or_null(out, seen, p.first_seen_ms);
    member(out, "last_seen");
    put_time_or_null(out, seen, p.last_seen_ms);
    member(out, "event_count");
    put(out, &p.events.len());
    member(out, "traits");
    out.push(b'{');
    for (i, t) in p.traits.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put(out, syms.name(t.key));
        out.push(b':');
        put_raw(out, t.value);
    }
    out.push(b'}');
    member(out, "event_counts");
    out.push(b'{');
    for (i, (s, c)) in p.counts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put(out, syms.name(*s));
        out.push(b':');
        put(out, c);
    }
    out.push(b'}');
    member(out, "channels");
    put(out, &p.channels().map(|s| syms.name(s)).collect::<Vec<_>>());
    member(out, "devices");
    put(out, &p.devices().map(|s| syms.name(s)).collect::<Vec<_>>());
    let pu = &p.purchases;
    member(out, "purchases");
    out.extend_from_slice(b"{\"orders\":");
    put(out, &pu.orders);
    member(out, "revenue");
    put(out, &(pu.revenue as f64 / MONEY_SCALE));
    member(out, "average_basket");
    put(out, &((pu.average_basket() * 100.0).round() / 100.0));
    member(out, "first_order");
    put_time_or_null(out, pu.orders > 0, pu.first_order_ms);
    member(out, "last_order");
    put_time_or_null(out, pu.orders > 0, pu.last_order_ms);
    member(out, "refunds");
    put(out, &pu.refunds);
    member(out, "refunded");
    put(out, &(pu.refunded as f64 / MONEY_SCALE));
    out.push(b'}');
    member(out, "segments");
    out.push(b'[');
    if let Some(st) = &p.segments {
        for (k, (i, since)) in st.m.member.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"segment\":");
            put(out, segs.set.name(*i as usize));
            member(out, "since");
            put(out, &format_rfc3339_millis(*since));
            out.push(b'}');
        }
    }
    out.push(b']');
    let consent = consent_json(&p.traits, syms);
    member(out, "consent");
    put(out, &consent);
    member(out, "accounts");
    put(out, &accounts_json(p, syms));
    consent
}

fn accounts_json(p: &Profile, syms: &Symbols) -> Vec<Value> {
    p.accounts()
        .iter()
        .map(|a| {
            json!({
                "id": &*a.id,
                "since": format_rfc3339_millis(a.since_ms),
                "traits": traits_json(&a.traits, syms),
            })
        })
        .collect()
}

fn render_profile(p: &Profile, syms: &Symbols, segs: &Segments, form: TraitForm) -> Value {
    let counts: Map<String, Value> = p
        .counts
        .iter()
        .map(|(s, c)| (syms.name(*s).to_string(), json!(c)))
        .collect();
    let pu = &p.purchases;
    let time_or_null = |has: bool, t: i64| {
        if has {
            json!(format_rfc3339_millis(t))
        } else {
            Value::Null
        }
    };
    json!({
        "first_seen": time_or_null(!p.events.is_empty(), p.first_seen_ms),
        "last_seen": time_or_null(!p.events.is_empty(), p.last_seen_ms),
        "event_count": p.events.len(),
        "traits": match form {
            TraitForm::WithSources => traits_json(&p.traits, syms),
            TraitForm::Plain => Value::Object(
                p.traits
                    .iter()
                    .map(|t| (syms.name(t.key).to_string(), raw_json(t.value)))
                    .collect(),
            ),
        },
        "event_counts": counts,
        "channels": p.channels().map(|s| syms.name(s)).collect::<Vec<_>>(),
        "devices": p.devices().map(|s| syms.name(s)).collect::<Vec<_>>(),
        "purchases": {
            "orders": pu.orders,
            "revenue": pu.revenue as f64 / MONEY_SCALE,
            "average_basket": (pu.average_basket() * 100.0).round() / 100.0,
            "first_order": time_or_null(pu.orders > 0, pu.first_order_ms),
            "last_order": time_or_null(pu.orders > 0, pu.last_order_ms),
            "refunds": pu.refunds,
            "refunded": pu.refunded as f64 / MONEY_SCALE,
        },
        "segments": render_segments(p, segs),
        "consent": consent_json(&p.traits, syms),
        "accounts": accounts_json(p, syms),
    })
}

/// A profile's RFM inputs, if it has ordered.
fn customer(p: &Profile) -> Option<Customer> {
    let pu = &p.purchases;
    (pu.orders > 0).then_some(Customer {
        last_order_ms: pu.last_order_ms,
        orders: pu.orders,
        monetary: pu.revenue - pu.refunded,
    })
}

/// Days from `t` to `now`, to a tenth.
fn days_ago(now: i64, t: i64) -> f64 {
    ((now - t) as f64 / 86_400_000.0 * 10.0).round() / 10.0
}

fn rfm_json(id: u64, c: &Customer, s: Scores, now: i64) -> Value {
    json!({
        "profile": ProfileId(id).to_string(),
        "scores": {"r": s.r, "f": s.f, "m": s.m, "fm": s.fm()},
        "rfm": format!("{}{}{}", s.r, s.f, s.m),
        "group": s.group().name(),
        "last_order": format_rfc3339_millis(c.last_order_ms),
        "days_since_last_order": days_ago(now, c.last_order_ms),
        "orders": c.orders,
        "monetary": c.monetary as f64 / MONEY_SCALE,
    })
}
