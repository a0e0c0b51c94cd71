//! Probabilistic matching: linking profiles that very likely belong to one person even
//! though they share no identifier. Off by default (`[identity.matching] enabled`).
//!
//! # The model (Fellegi–Sunter)
//!
//! Each profile keeps the latest value of a few weak signals. Two profiles are compared
//! field by field; a field where both have a value either agrees or disagrees, and adds
//! its weight to a score in bits:
//!
//! | field | m = P(agree \| same person) | u = P(agree \| different people) | agree | disagree |
//! |---|---|---|---|---|
//! | IP address | 0.85 | 0.01 | +6.41 | −2.72 |
//! | user agent | 0.90 | 0.02 | +5.49 | −3.29 |
//! | screen size | 0.90 | 0.10 | +3.17 | −3.17 |
//! | time zone | 0.95 | 0.30 | +1.66 | −3.81 |
//! | locale | 0.95 | 0.40 | +1.25 | −3.58 |
//! | name (normalised) | 0.90 | 0.001 | +9.81 | −3.32 |
//! | postcode | 0.90 | 0.01 | +6.49 | −3.31 |
//!
//! agree = log2(m/u), disagree = log2((1−m)/(1−u)); a missing value adds 0. The prior odds
//! that two candidates are one person (`prior`, default 1/1000, −9.97 bits) are added and
//! the sum turned into a probability: `p = 1 / (1 + 2^−(prior + Σ weights))`.
//!
//! Only candidates are compared, never all pairs: profiles seen with the same IP address
//! and user agent within `window` of each other, and profiles with the same normalised
//! name and postcode (a POS or CRM import). A pair at or above `merge_threshold` (default
//! 0.95) is merged like any other merge (merge protection applies; the merge history says
//! `probabilistic match` with the probability); a pair at or above `suggest_threshold`
//! (default 0.5) is kept as a suggestion on both profiles, visible in the API.
//!
//! Examples with the defaults: same IP, user agent, screen, time zone and locale within 30
//! minutes → 0.996 (merged); same IP and user agent only → 0.79 (suggested); same name and
//! postcode → 0.988 (merged); same IP but another user agent → below 0.5 (nothing).
//!
//! Deterministic: event time and processing order decide everything, and the matcher's
//! state is part of the snapshot.

use crate::{Graph, ProfileId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How probabilistic matching runs.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchConfig {
    /// Off by default.
    pub enabled: bool,
    /// Link (merge) at or above this probability.
    pub merge_threshold: f64,
    /// Keep as a suggestion at or above this probability.
    pub suggest_threshold: f64,
    /// IP address and user agent count as seen together within this time.
    pub window_ms: i64,
    /// Prior probability that two candidates are one person.
    pub prior: f64,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            merge_threshold: 0.95,
            suggest_threshold: 0.5,
            window_ms: 30 * 60_000,
            prior: 0.001,
        }
    }
}

/// The weak signals of one profile (latest values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signals {
    /// `context.ip`.
    pub ip: Option<Box<str>>,
    /// `context.userAgent`.
    pub user_agent: Option<Box<str>>,
    /// `context.screen` as `WIDTHxHEIGHT`.
    pub screen: Option<Box<str>>,
    /// `context.timezone`.
    pub timezone: Option<Box<str>>,
    /// `context.locale`.
    pub locale: Option<Box<str>>,
    /// Name, normalised with [`normalize_name`].
    pub name: Option<Box<str>>,
    /// Postcode without spaces, upper-cased.
    pub postcode: Option<Box<str>>,
}

impl Signals {
    /// No signal at all.
    pub fn is_empty(&self) -> bool {
        *self == Signals::default()
    }

    fn update(&mut self, new: &Signals) {
        let fields = [
            (&mut self.ip, &new.ip),
            (&mut self.user_agent, &new.user_agent),
            (&mut self.screen, &new.screen),
            (&mut self.timezone, &new.timezone),
            (&mut self.locale, &new.locale),
            (&mut self.name, &new.name),
            (&mut self.postcode, &new.postcode),
        ];
        for (mine, theirs) in fields {
            if theirs.is_some() {
                *mine = theirs.clone();
            }
        }
    }
}

/// Lower-case, Turkish letters folded to ASCII, everything but letters and digits
/// collapsed to single spaces: `"  Ayşe  YILMAZ "` → `"ayse yilmaz"`.
pub fn normalize_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut space = false;
    for c in raw.chars() {
        let c = match c {
            'ı' | 'İ' | 'I' => 'i',
            'ş' | 'Ş' => 's',
            'ğ' | 'Ğ' => 'g',
            'ü' | 'Ü' => 'u',
            'ö' | 'Ö' => 'o',
            'ç' | 'Ç' => 'c',
            c => c.to_lowercase().next().unwrap_or(c),
        };
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        } else {
            space = true;
        }
    }
    out
}

/// (field, m, u).
const FIELDS: [(&str, f64, f64); 7] = [
    ("ip", 0.85, 0.01),
    ("user_agent", 0.90, 0.02),
    ("screen", 0.90, 0.10),
    ("timezone", 0.95, 0.30),
    ("locale", 0.95, 0.40),
    ("name", 0.90, 0.001),
    ("postcode", 0.90, 0.01),
];

/// The match probability of two signal sets and the fields that agree.
pub fn score(a: &Signals, b: &Signals, prior: f64) -> (f64, Vec<&'static str>) {
    let pairs = [
        (&a.ip, &b.ip),
        (&a.user_agent, &b.user_agent),
        (&a.screen, &b.screen),
        (&a.timezone, &b.timezone),
        (&a.locale, &b.locale),
        (&a.name, &b.name),
        (&a.postcode, &b.postcode),
    ];
    let mut bits = (prior / (1.0 - prior)).log2();
    let mut agree = Vec::new();
    for ((x, y), (field, m, u)) in pairs.into_iter().zip(FIELDS) {
        if let (Some(x), Some(y)) = (x, y) {
            if x == y {
                bits += (m / u).log2();
                agree.push(field);
            } else {
                bits += ((1.0 - m) / (1.0 - u)).log2();
            }
        }
    }
    (1.0 / (1.0 + (-bits).exp2()), agree)
}

/// A likely link between two profiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    /// The other profile (as it was when suggested; resolve with [`Graph::canonical`]).
    pub other: ProfileId,
    /// Match probability.
    pub probability: f64,
    /// Fields that agree.
    pub fields: Vec<String>,
    /// Log offset of the event that produced it.
    pub offset: u64,
}

/// A candidate found for a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The other profile (live id).
    pub other: ProfileId,
    /// Match probability.
    pub probability: f64,
    /// Fields that agree.
    pub fields: Vec<&'static str>,
}

const MAX_PER_KEY: usize = 16;
const MAX_SUGGESTIONS: usize = 16;

/// The matcher's state (part of snapshots).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Matcher {
    signals: BTreeMap<u64, Signals>,
    by_device: BTreeMap<u64, Vec<(u64, i64)>>,
    by_person: BTreeMap<u64, Vec<u64>>,
    suggestions: BTreeMap<u64, Vec<Suggestion>>,
}

fn key(parts: &[&str]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(parts.join("\u{1f}").as_bytes())
}

impl Matcher {
    /// Forgets everything observed of `profile` (erasure).
    pub fn forget(&mut self, profile: ProfileId) {
        let id = profile.0;
        self.signals.remove(&id);
        self.suggestions.remove(&id);
        for v in self.suggestions.values_mut() {
            v.retain(|s| s.other != profile);
        }
        self.suggestions.retain(|_, v| !v.is_empty());
        for v in self.by_device.values_mut() {
            v.retain(|(p, _)| *p != id);
        }
        self.by_device.retain(|_, v| !v.is_empty());
        for v in self.by_person.values_mut() {
            v.retain(|p| *p != id);
        }
        self.by_person.retain(|_, v| !v.is_empty());
    }

    /// Records `profile`'s signals from an event at `time_ms` and returns the candidates
    /// at or above the suggestion threshold, most likely first.
    pub fn observe(
        &mut self,
        cfg: &MatchConfig,
        graph: &Graph,
        profile: ProfileId,
        new: &Signals,
        time_ms: i64,
    ) -> Vec<Candidate> {
        if new.is_empty() {
            return Vec::new();
        }
        let mine = {
            let s = self.signals.entry(profile.0).or_default();
            s.update(new);
            s.clone()
        };
        let mut found: Vec<u64> = Vec::new();
        if let (Some(ip), Some(ua)) = (&new.ip, &new.user_agent) {
            let list = self.by_device.entry(key(&[ip, ua])).or_default();
            for (p, t) in list.iter() {
                if (time_ms - t).abs() <= cfg.window_ms {
                    found.push(*p);
                }
            }
            list.retain(|(p, _)| *p != profile.0);
            list.push((profile.0, time_ms));
            if list.len() > MAX_PER_KEY {
                list.remove(0);
            }
        }
        if let (Some(n), Some(pc)) = (&mine.name, &mine.postcode) {
            let list = self.by_person.entry(key(&[n, pc])).or_default();
            found.extend(list.iter().copied());
            if !list.contains(&profile.0) {
                list.push(profile.0);
                if list.len() > MAX_PER_KEY {
                    list.remove(0);
                }
            }
        }
        let me = graph.canonical(profile);
        let mut out: Vec<Candidate> = Vec::new();
        for p in found {
            let Some(other) = graph.canonical(ProfileId(p)) else {
                continue;
            };
            if Some(other) == me || out.iter().any(|c| c.other == other) {
                continue;
            }
            let Some(theirs) = self.signals.get(&p) else {
                continue;
            };
            let (probability, fields) = score(&mine, theirs, cfg.prior);
            if probability >= cfg.suggest_threshold {
                out.push(Candidate {
                    other,
                    probability,
                    fields,
                });
            }
        }
        out.sort_by(|a, b| {
            b.probability
                .total_cmp(&a.probability)
                .then(a.other.cmp(&b.other))
        });
        out
    }

    /// Keeps a suggestion on both profiles.
    pub fn suggest(&mut self, a: ProfileId, c: &Candidate, offset: u64) {
        for (from, to) in [(a, c.other), (c.other, a)] {
            let list = self.suggestions.entry(from.0).or_default();
            list.retain(|s| s.other != to);
            list.push(Suggestion {
                other: to,
                probability: c.probability,
                fields: c.fields.iter().map(|f| f.to_string()).collect(),
                offset,
            });
            if list.len() > MAX_SUGGESTIONS {
                list.remove(0);
            }
        }
    }

    /// Suggestions for a live profile (including those made for profiles merged into it),
    /// with other profiles resolved to their live ids, most likely first.
    pub fn suggestions(&self, graph: &Graph, profile: ProfileId) -> Vec<Suggestion> {
        let mut out: Vec<Suggestion> = Vec::new();
        for (k, list) in &self.suggestions {
            if graph.canonical(ProfileId(*k)) != Some(profile) {
                continue;
            }
            for s in list {
                let Some(other) = graph.canonical(s.other) else {
                    continue;
                };
                if other == profile || out.iter().any(|x| x.other == other) {
                    continue;
                }
                out.push(Suggestion { other, ..s.clone() });
            }
        }
        out.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ident, Rules, ANONYMOUS_ID};

    fn s(ip: &str, ua: &str) -> Signals {
        Signals {
            ip: Some(ip.into()),
            user_agent: Some(ua.into()),
            ..Signals::default()
        }
    }

    #[test]
    fn the_documented_examples() {
        let full = Signals {
            screen: Some("390x844".into()),
            timezone: Some("Europe/Istanbul".into()),
            locale: Some("tr-TR".into()),
            ..s("85.1.2.3", "Safari")
        };
        let (p, f) = score(&full, &full, 0.001);
        assert!((p - 0.996).abs() < 0.001, "{p}");
        assert_eq!(f.len(), 5);
        let (p, _) = score(&s("85.1.2.3", "Safari"), &s("85.1.2.3", "Safari"), 0.001);
        assert!((p - 0.79).abs() < 0.01, "{p}");
        let person = Signals {
            name: Some(normalize_name("  Ayşe  YILMAZ ").into()),
            postcode: Some("35220".into()),
            ..Signals::default()
        };
        let (p, _) = score(&person, &person, 0.001);
        assert!((p - 0.988).abs() < 0.001, "{p}");
        let (p, _) = score(&s("85.1.2.3", "Safari"), &s("85.1.2.3", "Chrome"), 0.001);
        assert!(p < 0.5, "{p}");
        assert_eq!(normalize_name("  Ayşe  YILMAZ "), "ayse yilmaz");
    }

    #[test]
    fn candidates_only_within_the_window() {
        let cfg = MatchConfig {
            enabled: true,
            ..MatchConfig::default()
        };
        let mut g = Graph::new(Rules::default());
        let a = g
            .resolve(&[Ident::new(ANONYMOUS_ID, "a")], 0, 0, false)
            .profile
            .unwrap();
        let b = g
            .resolve(&[Ident::new(ANONYMOUS_ID, "b")], 1, 0, false)
            .profile
            .unwrap();
        let c = g
            .resolve(&[Ident::new(ANONYMOUS_ID, "c")], 2, 0, false)
            .profile
            .unwrap();
        let mut m = Matcher::default();
        assert!(m.observe(&cfg, &g, a, &s("1.1.1.1", "UA"), 0).is_empty());
        let found = m.observe(&cfg, &g, b, &s("1.1.1.1", "UA"), 10 * 60_000);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].other, a);
        // Two hours later the same device fingerprint is no longer evidence.
        assert!(m
            .observe(&cfg, &g, c, &s("1.1.1.1", "UA"), 3 * 3_600_000)
            .is_empty());
        m.suggest(b, &found[0], 5);
        assert_eq!(m.suggestions(&g, a)[0].other, b);
    }
}
