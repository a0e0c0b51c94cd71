//! Erasure ("right to be forgotten") and the suppression list.
//!
//! An erasure is an admin action written to the log (`niyet.erase`) naming the profile by
//! the keys of its identifiers ([`niyet_identity::Ident::key`], 128-bit hashes), never by
//! their values, and never by profile id: ids are handed out in log order, so after the
//! erased events are gone a replay numbers later profiles differently, while the keys
//! still find exactly the profile that held those identifiers (or nothing, once its
//! events are erased). When the router reaches the action it takes the profile from its
//! owner, removes its identity from the graph (and the probabilistic matcher), rewrites
//! its events in the log in place ([`niyet_log::Log::erase`]), adds the keys to the
//! suppression list (unless the request says delete only) and writes a new snapshot, which
//! replaces the older ones still holding the profile. A crash before that snapshot
//! restores the old one and replays the action again, so the erasure is redone.
//!
//! The suppression list (`state/suppressed.bin`, 16 bytes per key, synced) is consulted
//! by ingest (the event is dropped before it is stored) and by the router (an event that
//! got past ingest while the erasure was under way is skipped and erased in the log).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use niyet_identity::{Ident, ProfileId};
use niyet_model::hash::FastSet;

use crate::{PipelineError, Router};

/// Keys of identifiers whose events are dropped.
pub(crate) struct Suppression {
    path: PathBuf,
    keys: RwLock<FastSet<u128>>,
    any: AtomicBool,
}

impl Suppression {
    pub(crate) fn open(path: PathBuf) -> Suppression {
        let bytes = std::fs::read(&path).unwrap_or_default();
        let keys: FastSet<u128> = bytes
            .chunks_exact(16)
            .filter_map(|c| c.try_into().ok().map(u128::from_le_bytes))
            .collect();
        Suppression {
            path,
            any: AtomicBool::new(!keys.is_empty()),
            keys: RwLock::new(keys),
        }
    }

    /// Adds keys (durably, before they count).
    pub(crate) fn add(&self, keys: &[u128]) -> std::io::Result<()> {
        let Ok(mut set) = self.keys.write() else {
            return Err(std::io::Error::other("suppression lock poisoned"));
        };
        let new: Vec<u128> = keys.iter().copied().filter(|k| !set.contains(k)).collect();
        if new.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut buf = Vec::with_capacity(new.len() * 16);
        for k in &new {
            buf.extend_from_slice(&k.to_le_bytes());
        }
        f.write_all(&buf)?;
        f.sync_data()?;
        set.extend(new);
        self.any.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether any of these keys is suppressed.
    pub(crate) fn any_of(&self, mut keys: impl Iterator<Item = u128>) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        self.keys
            .read()
            .map(|s| keys.any(|k| s.contains(&k)))
            .unwrap_or(false)
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.read().map(|s| s.len()).unwrap_or(0)
    }
}

fn hex(k: u128) -> String {
    format!("{k:032x}")
}

impl crate::Pipeline {
    /// Erases the profile holding any of these identifier keys (and everything derived
    /// from its events); `suppress` also drops later events carrying them. Written to the
    /// log as `niyet.erase` and applied in order; returns once applied, with what was
    /// removed.
    pub fn erase(
        &self,
        keys: &[u128],
        suppress: bool,
        request: &str,
        now_ms: i64,
        timeout: std::time::Duration,
    ) -> Result<serde_json::Value, PipelineError> {
        if keys.is_empty() {
            return Err(PipelineError::Invalid("nothing to erase".into()));
        }
        let keys: Vec<String> = keys.iter().map(|k| hex(*k)).collect();
        self.act(
            serde_json::json!({
                "type": "niyet.erase",
                "request": request,
                "suppress": suppress,
                "keys": keys,
            }),
            now_ms,
            timeout,
        )
    }

    /// Whether a stored event carries an identifier on the suppression list (checked by
    /// ingest before the event is stored; built-in identifier kinds only, the router
    /// checks them all).
    pub fn suppressed(&self, payload: &[u8]) -> bool {
        if self.shared.suppressed.is_empty() {
            return false;
        }
        self.identifier_keys_of(payload)
            .is_some_and(|k| self.shared.suppressed.any_of(k.into_iter()))
    }

    /// Keys of the built-in identifiers a stored event carries (`None`: not an event).
    pub fn identifier_keys_of(&self, payload: &[u8]) -> Option<Vec<u128>> {
        let v = niyet_engine::extract::parse(payload).ok()?;
        Some(
            v.builtin_identifiers(&self.shared.cfg.identity)
                .iter()
                .map(Ident::key)
                .collect(),
        )
    }

    /// Erases events named `name` (`Page Viewed` for pages, `Screen Viewed` for screens)
    /// received before `before_ms`, reading the log from `from`; stops at the first record
    /// received at or after `before_ms` (or the end). Returns the offset to go on from next
    /// time and how many were erased.
    pub fn expire_events(
        &self,
        name: &str,
        before_ms: i64,
        from: u64,
    ) -> Result<(u64, u64), PipelineError> {
        let log = &self.shared.log;
        let mut next = from.max(log.stats().start_offset);
        let mut doomed = Vec::new();
        'read: loop {
            let recs = log.read(next, 4096)?;
            if recs.is_empty() {
                break;
            }
            for r in recs {
                if r.time_ms >= before_ms {
                    break 'read;
                }
                next = r.offset + 1;
                if let Ok(v) = niyet_engine::extract::parse(&r.payload) {
                    if niyet_engine::segments::event_name(&v).as_deref() == Some(name) {
                        doomed.push(r.offset);
                    }
                }
            }
        }
        let n = log.erase(doomed)?;
        Ok((next, n))
    }

    /// Whether any of these identifier keys is on the suppression list.
    pub fn any_suppressed(&self, keys: &[u128]) -> bool {
        self.shared.suppressed.any_of(keys.iter().copied())
    }

    /// Identifier keys on the suppression list.
    pub fn suppressed_count(&self) -> usize {
        self.shared.suppressed.len()
    }
}

impl Router {
    /// Applies `niyet.erase`.
    pub(crate) fn erase(&mut self, payload: &[u8]) -> Result<serde_json::Value, String> {
        #[derive(serde::Deserialize)]
        struct Action {
            request: String,
            #[serde(default = "yes")]
            suppress: bool,
            keys: Vec<String>,
        }
        fn yes() -> bool {
            true
        }
        let a: Action = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        let mut keys = Vec::with_capacity(a.keys.len());
        for k in &a.keys {
            keys.push(u128::from_str_radix(k, 16).map_err(|_| format!("bad key `{k}`"))?);
        }
        let profiles: BTreeSet<ProfileId> = {
            let g = self.sh.graph.read().map_err(|_| "stopped")?;
            keys.iter()
                .filter_map(|k| g.lookup_key(*k))
                .filter_map(|p| g.canonical(p))
                .collect()
        };
        let mut offsets = Vec::new();
        let mut removed: Vec<u128> = keys.clone();
        for p in &profiles {
            if let Some(prof) = self.take(*p) {
                offsets.extend(prof.events.iter());
            }
            let idents = self.sh.graph.write().map_err(|_| "stopped")?.erase(*p);
            removed.extend(idents.iter().map(Ident::key));
            if let Ok(mut m) = self.sh.matcher.write() {
                m.forget(*p);
            }
        }
        removed.sort_unstable();
        removed.dedup();
        if a.suppress {
            self.sh
                .suppressed
                .add(&removed)
                .map_err(|e| format!("the suppression list could not be written: {e}"))?;
        }
        let erased = self.sh.log.erase(offsets).map_err(|e| e.to_string())?;
        if !profiles.is_empty() {
            // The older snapshots hold the profile: a new one replaces them. The caller
            // waits for it, so it is taken at full speed.
            self.finish_snapshot_write();
            self.snapshot_at(1.0);
            self.finish_snapshot_write();
        }
        Ok(serde_json::json!({
            "request": a.request,
            "profiles": profiles.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "identifiers": removed.len(),
            "events_erased": erased,
            "suppressed": a.suppress,
        }))
    }

    /// An event carrying a suppressed identifier is skipped; it is erased from the log
    /// with the rest of its chunk.
    pub(crate) fn skip_suppressed(&mut self, offset: u64) {
        self.to_erase.push(offset);
        self.bump(|s| s.suppressed += 1);
    }

    /// Erases the skipped events of suppressed identifiers.
    pub(crate) fn erase_suppressed(&mut self) {
        if self.to_erase.is_empty() {
            return;
        }
        let offsets = std::mem::take(&mut self.to_erase);
        if let Err(e) = self.sh.log.erase(offsets) {
            tracing::error!(error = %e, "erasing suppressed events failed");
        }
    }
}
