//! Quarantine: invalid messages kept durably with their reason until they are replayed
//! (once fixed) or discarded. Stored in a log of its own, so it has the same durability
//! as events; its state (pending / replayed / discarded) is rebuilt from that log on start.

use std::collections::BTreeMap;
use std::sync::Mutex;

use niyet_log::{Log, LogError, NewRecord};
use serde::{Deserialize, Serialize};

use crate::append;

/// One quarantined message as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Source name.
    pub source: String,
    /// Stable reason code.
    pub code: String,
    /// The field and what was wrong with it.
    pub reason: String,
    /// Message type forced by a single-message endpoint, if any.
    pub endpoint_type: Option<String>,
    /// Position in its request.
    pub index: usize,
    /// When it arrived.
    pub received_at: String,
    /// The message as received.
    pub raw: String,
}

impl Entry {
    /// Keys of the built-in identifiers the message carries, however wrong the rest of
    /// it is: the identifier fields that are text (or numbers, for ids) are read as an
    /// event carrying only them would be; none if the message is not a JSON object.
    pub fn identifier_keys(&self, pipeline: &niyet_pipeline::Pipeline) -> Vec<u128> {
        use serde_json::{json, Value};
        let Ok(v) = serde_json::from_str::<Value>(&self.raw) else {
            return Vec::new();
        };
        let text = |x: &Value| match x {
            Value::String(s) => Some(Value::String(s.clone())),
            Value::Number(n) => Some(Value::String(n.to_string())),
            _ => None,
        };
        let mut ev = json!({"type": "identify", "timestamp": self.received_at,
                            "traits": {}, "context": {"traits": {}}});
        for f in ["userId", "anonymousId"] {
            if let Some(t) = v.get(f).and_then(text) {
                ev[f] = t;
            }
        }
        for (from, to) in [
            ("/traits", "/traits"),
            ("/context/traits", "/context/traits"),
        ] {
            for k in ["email", "phone"] {
                if let Some(t) = v.pointer(&format!("{from}/{k}")).and_then(text) {
                    if let Some(o) = ev.pointer_mut(to).and_then(Value::as_object_mut) {
                        o.insert(k.into(), t);
                    }
                }
            }
        }
        if let Some(t) = v.pointer("/context/device/id").and_then(text) {
            ev["context"]["device"] = json!({ "id": t });
        }
        serde_json::to_vec(&ev)
            .ok()
            .and_then(|b| pipeline.identifier_keys_of(&b))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Stored {
    Quarantined(Entry),
    Replayed { id: u64, offset: Option<u64> },
    Discarded { id: u64 },
}

/// The state of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for a decision.
    Pending,
    /// Replayed into the event log (at this offset; none when it was a duplicate).
    Replayed,
    /// Discarded by an operator.
    Discarded,
}

/// An entry with its state, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// Its id (position in the quarantine log).
    pub id: u64,
    /// Pending, replayed or discarded.
    pub status: Status,
    /// Where it landed in the event log, once replayed.
    pub replayed_offset: Option<u64>,
    /// The stored entry.
    #[serde(flatten)]
    pub entry: Entry,
}

/// The quarantine store.
pub struct Quarantine {
    log: Log,
    /// id → (status, offset in the event log once replayed).
    state: Mutex<BTreeMap<u64, (Status, Option<u64>)>>,
}

impl Quarantine {
    /// Opens the store and rebuilds its state.
    pub fn open(log: Log) -> Result<Self, LogError> {
        let mut state = BTreeMap::new();
        let mut from = log.stats().start_offset;
        loop {
            let batch = log.read(from, 4096)?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            for r in batch {
                if r.payload.starts_with(niyet_log::ERASED) {
                    continue;
                }
                match serde_json::from_slice::<Stored>(&r.payload) {
                    Ok(Stored::Quarantined(_)) => {
                        state.insert(r.offset, (Status::Pending, None));
                    }
                    Ok(Stored::Replayed { id, offset }) => {
                        state.insert(id, (Status::Replayed, offset));
                    }
                    Ok(Stored::Discarded { id }) => {
                        state.insert(id, (Status::Discarded, None));
                    }
                    Err(e) => {
                        tracing::warn!(offset = r.offset, error = %e, "unreadable quarantine record")
                    }
                }
            }
        }
        Ok(Self {
            log,
            state: Mutex::new(state),
        })
    }

    /// Durably stores entries; returns their ids.
    pub async fn add(&self, entries: Vec<Entry>, now_ms: i64) -> Result<Vec<u64>, LogError> {
        let recs = entries
            .into_iter()
            .map(|e| NewRecord {
                time_ms: now_ms,
                key: 0,
                payload: serde_json::to_vec(&Stored::Quarantined(e)).unwrap_or_default(),
            })
            .collect();
        let done = append(&self.log, recs).await?;
        let ids: Vec<u64> = done
            .into_iter()
            .filter_map(|a| match a {
                niyet_log::Appended::At(o) => Some(o),
                niyet_log::Appended::Duplicate => None,
            })
            .collect();
        if let Ok(mut s) = self.state.lock() {
            for id in &ids {
                s.insert(*id, (Status::Pending, None));
            }
        }
        Ok(ids)
    }

    /// Records the fate of an entry.
    pub async fn settle(
        &self,
        id: u64,
        status: Status,
        offset: Option<u64>,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let stored = match status {
            Status::Replayed => Stored::Replayed { id, offset },
            Status::Discarded => Stored::Discarded { id },
            Status::Pending => return Ok(()),
        };
        let rec = NewRecord {
            time_ms: now_ms,
            key: 0,
            payload: serde_json::to_vec(&stored).unwrap_or_default(),
        };
        append(&self.log, vec![rec]).await?;
        if let Ok(mut s) = self.state.lock() {
            s.insert(id, (status, offset));
        }
        Ok(())
    }

    /// Entries not yet replayed or discarded.
    pub fn pending(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.values().filter(|(st, _)| *st == Status::Pending).count())
            .unwrap_or(0)
    }

    /// The status of an entry, if it exists.
    pub fn status(&self, id: u64) -> Option<(Status, Option<u64>)> {
        self.state.lock().ok().and_then(|s| s.get(&id).copied())
    }

    /// Reads one entry.
    pub fn get(&self, id: u64) -> Result<Option<Entry>, LogError> {
        if self.status(id).is_none() {
            return Ok(None);
        }
        let recs = self.log.read(id, 1)?;
        Ok(recs.into_iter().next().and_then(|r| {
            match serde_json::from_slice::<Stored>(&r.payload) {
                Ok(Stored::Quarantined(e)) => Some(e),
                _ => None,
            }
        }))
    }

    /// Lists entries with id ≥ `from` and the given status (any when `None`).
    pub fn list(
        &self,
        from: u64,
        limit: usize,
        status: Option<Status>,
    ) -> Result<Vec<Item>, LogError> {
        let ids: Vec<(u64, Status, Option<u64>)> = self
            .state
            .lock()
            .map(|s| {
                s.range(from..)
                    .filter(|(_, (st, _))| status.is_none_or(|want| *st == want))
                    .take(limit)
                    .map(|(id, (st, off))| (*id, *st, *off))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(ids.len());
        for (id, st, off) in ids {
            if let Some(entry) = self.get(id)? {
                out.push(Item {
                    id,
                    status: st,
                    replayed_offset: off,
                    entry,
                });
            }
        }
        Ok(out)
    }

    /// Erases every quarantined message that carries one of these identifiers (by key,
    /// as events would resolve them, or by value anywhere in its text, case-insensitively);
    /// returns how many.
    pub fn erase_matching(
        &self,
        keys: &[u128],
        values: &[String],
        pipeline: &niyet_pipeline::Pipeline,
    ) -> Result<u64, LogError> {
        let needles: Vec<String> = values
            .iter()
            .filter(|v| v.len() >= 3)
            .map(|v| v.to_lowercase())
            .collect();
        let ids: Vec<u64> = self
            .state
            .lock()
            .map(|s| s.keys().copied().collect())
            .unwrap_or_default();
        let mut hit = Vec::new();
        for id in ids {
            let Some(e) = self.get(id)? else { continue };
            let text = e.raw.to_lowercase();
            let by_value = needles.iter().any(|n| text.contains(n.as_str()));
            let by_key = || e.identifier_keys(pipeline).iter().any(|k| keys.contains(k));
            if by_value || by_key() {
                hit.push(id);
            }
        }
        let n = self.log.erase(hit.clone())?;
        if let Ok(mut s) = self.state.lock() {
            for id in &hit {
                s.remove(id);
            }
        }
        Ok(n)
    }

    /// Removes messages older than the quarantine's retention (whole segments); returns
    /// how many went.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<u64, LogError> {
        let r = self.log.enforce_retention(now_ms)?;
        let start = self.log.stats().start_offset;
        if let Ok(mut s) = self.state.lock() {
            *s = s.split_off(&start);
        }
        Ok(r.records_removed)
    }

    /// The underlying log (for closing).
    pub fn log(&self) -> &Log {
        &self.log
    }
}
