//! Trigger definitions and the per-profile journey state.
//!
//! A trigger reads: **when** an event arrives (or the profile enters a segment),
//! optionally **wait** a while **unless** one of some events arrives meanwhile, **if**
//! the profile is in a segment at that moment, **then** send to destinations. Each
//! profile runs at most one wait per trigger: a new `when` restarts it (ten items added
//! to a cart make one abandoned cart, counted from the last one).

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// A trigger as configured (`[[triggers]]` in `niyet.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDef {
    pub name: String,
    pub when: When,
    /// How long to wait before acting (`30m`, `2h`, `1d`, `90s`); none: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// Events that cancel a running wait.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unless: Vec<String>,
    /// A segment the profile must be in when the trigger acts.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_segment: Option<String>,
    /// Destinations the action goes to.
    pub then: Vec<String>,
    /// Frequency cap: at most `max` actions per profile in `per`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
    /// Share of profiles (0–100, chosen by a hash of trigger and profile, so always the
    /// same ones) held out as a control group: recorded, never sent.
    #[serde(default)]
    pub holdout_percent: f64,
    /// Attach a cart offer (see [`crate::offer`]) to the action document as `offer`.
    #[serde(default)]
    pub offer: bool,
    /// No sending in these local hours: an action decided then leaves when they end
    /// (see [`crate::quiet`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<crate::quiet::QuietHoursDef>,
}

/// What starts a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum When {
    /// An event of this name.
    Event(String),
    /// The profile entered this segment.
    SegmentEntered(String),
    /// A score crossed this threshold upwards (`"Hot Lead"`).
    ScoreCrossed(String),
}

/// The value at a dotted path of a JSON document.
pub fn lookup_json<'a>(doc: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(doc, |v, k| match v {
            serde_json::Value::Object(m) => m.get(k),
            serde_json::Value::Array(a) => a.get(k.parse::<usize>().ok()?),
            _ => None,
        })
}

/// A frequency cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    pub max: u32,
    pub per: String,
}

/// A definition that cannot be used, naming the trigger and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trigger `{trigger}`: {field}: {message}")]
pub struct TriggerError {
    pub trigger: String,
    pub field: &'static str,
    pub message: String,
}

/// Parses `500ms`, `90s`, `30m`, `2h`, `7d`, `2w` into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit (ms, s, m, h, d, w)"))?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    let per = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        u => return Err(format!("unknown unit `{u}` (ms, s, m, h, d, w)")),
    };
    n.checked_mul(per)
        .filter(|ms| *ms <= 366 * 86_400_000)
        .ok_or_else(|| format!("`{s}` is longer than a year"))
}

#[derive(Debug, Clone)]
struct Compiled {
    def: TriggerDef,
    wait_ms: i64,
    cap: Option<(u32, i64)>,
    /// Held-out share in hundredths of a percent.
    holdout_bp: u64,
    quiet: Option<crate::quiet::QuietHours>,
}

/// A trigger's wait elapsed (or it had none): it acts now, for the record at `origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fire {
    pub trigger: usize,
    /// Log offset of the record that started it.
    pub origin: u64,
    /// Processing time it acts at.
    pub at: i64,
    /// Decided earlier and held back by quiet hours: it is sent now as decided.
    pub deferred: bool,
}

/// What became of a firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to the trigger's destinations.
    Send,
    /// In the control group: recorded, not sent.
    Holdout,
    /// The frequency cap was reached.
    Capped,
    /// The profile was not in the trigger's `if` segment.
    NotInSegment,
}

/// A running wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub due: i64,
    pub trigger: u16,
    pub origin: u64,
    pub started: i64,
    /// An action decided at `started` and held back by quiet hours until `due` (not a
    /// wait: a new `when` does not restart it; an `unless` still cancels it).
    pub deferred: bool,
}

/// Per-profile journey state (kept with the profile, merged with it, in snapshots).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JourneyState {
    /// Running waits, at most one per trigger.
    pub waiting: Vec<Waiting>,
    /// Recent actions per trigger `(trigger, at)`, for frequency caps.
    pub acted: Vec<(u16, i64)>,
    /// Intent scores, by score index.
    #[serde(default)]
    pub scores: crate::score::ScoreStates,
}

impl JourneyState {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.acted.is_empty() && self.scores.is_empty()
    }
}

/// The configured triggers, compiled.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    defs: Vec<Compiled>,
}

impl Triggers {
    /// Validates and compiles; `segment_exists` tells which segment names are defined.
    pub fn new(
        defs: Vec<TriggerDef>,
        segment_exists: impl Fn(&str) -> bool,
    ) -> Result<Triggers, TriggerError> {
        if defs.len() > usize::from(u16::MAX) {
            return Err(TriggerError {
                trigger: String::new(),
                field: "triggers",
                message: "too many triggers".into(),
            });
        }
        let mut out = Vec::with_capacity(defs.len());
        for def in defs {
            let err = |field, message: String| TriggerError {
                trigger: def.name.clone(),
                field,
                message,
            };
            if def.name.trim().is_empty() {
                return Err(err("name", "must not be empty".into()));
            }
            if out.iter().any(|c: &Compiled| c.def.name == def.name) {
                return Err(err("name", "is defined twice".into()));
            }
            match &def.when {
                When::Event(e) if e.trim().is_empty() => {
                    return Err(err("when", "names no event".into()))
                }
                When::SegmentEntered(s) if !segment_exists(s) => {
                    return Err(err("when", format!("no segment is named `{s}`")))
                }
                _ => {}
            }
            if let Some(s) = &def.if_segment {
                if !segment_exists(s) {
                    return Err(err("if", format!("no segment is named `{s}`")));
                }
            }
            if def.then.is_empty() {
                return Err(err("then", "names no destination".into()));
            }
            let wait_ms = match &def.wait {
                Some(w) => parse_duration(w).map_err(|m| err("wait", m))?,
                None => 0,
            };
            if !def.unless.is_empty() && wait_ms == 0 {
                return Err(err("unless", "needs a `wait` to cancel".into()));
            }
            let cap = match &def.cap {
                Some(c) if c.max == 0 => return Err(err("cap", "max must be at least 1".into())),
                Some(c) => Some((c.max, parse_duration(&c.per).map_err(|m| err("cap", m))?)),
                None => None,
            };
            if !(0.0..=100.0).contains(&def.holdout_percent) {
                return Err(err("holdout_percent", "must be between 0 and 100".into()));
            }
            let holdout_bp = (def.holdout_percent * 100.0).round() as u64;
            let quiet = match &def.quiet_hours {
                Some(q) => {
                    Some(crate::quiet::QuietHours::new(q).map_err(|m| err("quiet_hours", m))?)
                }
                None => None,
            };
            out.push(Compiled {
                def,
                wait_ms,
                cap,
                holdout_bp,
                quiet,
            });
        }
        Ok(Triggers { defs: out })
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// `(trigger, segment)` for every segment a trigger names (`when` or `if`).
    pub fn segment_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.defs.iter().flat_map(|c| {
            let when = match &c.def.when {
                When::SegmentEntered(s) => Some(s.as_str()),
                _ => None,
            };
            when.into_iter()
                .chain(c.def.if_segment.as_deref())
                .map(|s| (c.def.name.as_str(), s))
        })
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn def(&self, i: usize) -> &TriggerDef {
        &self.defs[i].def
    }

    pub fn defs(&self) -> impl Iterator<Item = &TriggerDef> {
        self.defs.iter().map(|c| &c.def)
    }

    /// An event named `name` (log offset `origin`) arrived at `now`: cancels the waits it
    /// is an `unless` of, then starts (or restarts) the waits it is a `when` of; those
    /// with no wait fire at once, into `out`.
    pub fn on_event(
        &self,
        st: &mut JourneyState,
        name: &str,
        origin: u64,
        now: i64,
        out: &mut Vec<Fire>,
    ) {
        st.waiting.retain(|w| {
            !self.defs[usize::from(w.trigger)]
                .def
                .unless
                .iter()
                .any(|u| u == name)
        });
        self.start_all(
            st,
            |w| matches!(w, When::Event(e) if e == name),
            origin,
            now,
            out,
        );
    }

    /// A score crossed threshold `name` upwards at `now`.
    pub fn on_crossing(
        &self,
        st: &mut JourneyState,
        name: &str,
        origin: u64,
        now: i64,
        out: &mut Vec<Fire>,
    ) {
        self.start_all(
            st,
            |w| matches!(w, When::ScoreCrossed(s) if s == name),
            origin,
            now,
            out,
        );
    }

    /// The profile entered `segment` at `now` (while processing the record at `origin`).
    pub fn on_entry(
        &self,
        st: &mut JourneyState,
        segment: &str,
        origin: u64,
        now: i64,
        out: &mut Vec<Fire>,
    ) {
        self.start_all(
            st,
            |w| matches!(w, When::SegmentEntered(s) if s == segment),
            origin,
            now,
            out,
        );
    }

    /// Starts every trigger whose `when` matches.
    fn start_all(
        &self,
        st: &mut JourneyState,
        when: impl Fn(&When) -> bool,
        origin: u64,
        now: i64,
        out: &mut Vec<Fire>,
    ) {
        for i in 0..self.defs.len() {
            if when(&self.defs[i].def.when) {
                self.start(st, i, origin, now, out);
            }
        }
    }

    fn start(&self, st: &mut JourneyState, i: usize, origin: u64, now: i64, out: &mut Vec<Fire>) {
        let c = &self.defs[i];
        let trigger = i as u16;
        st.waiting.retain(|w| w.trigger != trigger || w.deferred);
        if c.wait_ms == 0 {
            out.push(Fire {
                trigger: i,
                origin,
                at: now,
                deferred: false,
            });
            return;
        }
        st.waiting.push(Waiting {
            due: now.saturating_add(c.wait_ms),
            trigger,
            origin,
            started: now,
            deferred: false,
        });
        st.waiting.sort_by_key(|w| (w.due, w.trigger));
    }

    /// If trigger run `fire` (just decided to send) falls in its trigger's quiet hours in
    /// time zone `tz`, holds it back until they end and returns that instant; the run
    /// then fires again, `deferred`, and is sent as decided.
    pub fn hold_for_quiet_hours(
        &self,
        st: &mut JourneyState,
        fire: &Fire,
        tz: Option<&str>,
    ) -> Option<i64> {
        if fire.deferred {
            return None;
        }
        let until = self.defs[fire.trigger].quiet.as_ref()?.until(fire.at, tz)?;
        st.waiting.push(Waiting {
            due: until,
            trigger: fire.trigger as u16,
            origin: fire.origin,
            started: fire.at,
            deferred: true,
        });
        st.waiting.sort_by_key(|w| (w.due, w.trigger));
        Some(until)
    }

    /// Whether any trigger has quiet hours (so callers look up time zones only then).
    pub fn has_quiet_hours(&self) -> bool {
        self.defs.iter().any(|c| c.quiet.is_some())
    }

    /// When the next wait elapses.
    pub fn next_due(st: &JourneyState) -> Option<i64> {
        st.waiting.first().map(|w| w.due)
    }

    /// Time reached `now`: every wait due by then fires, at its own instant.
    pub fn advance(st: &mut JourneyState, now: i64, out: &mut Vec<Fire>) {
        let n = st.waiting.iter().take_while(|w| w.due <= now).count();
        for w in st.waiting.drain(..n) {
            out.push(Fire {
                trigger: usize::from(w.trigger),
                origin: w.origin,
                at: w.due,
                deferred: w.deferred,
            });
        }
    }

    /// Another profile merged into this one: its waits and actions are the customer's
    /// too (of two waits of one trigger, the later start counts, as a new `when` would).
    pub fn absorb(st: &mut JourneyState, other: &JourneyState) {
        for w in &other.waiting {
            match st
                .waiting
                .iter_mut()
                .find(|x| x.trigger == w.trigger && x.deferred == w.deferred)
            {
                Some(x) if (w.started, w.origin) > (x.started, x.origin) => *x = *w,
                Some(_) => {}
                None => st.waiting.push(*w),
            }
        }
        st.waiting.sort_by_key(|w| (w.due, w.trigger));
        st.acted.extend_from_slice(&other.acted);
        st.acted.sort_unstable();
    }

    /// Decides a firing for `profile` (its id): control group, cap, `if` segment; an
    /// action sent or held out counts towards the cap.
    pub fn decide(
        &self,
        st: &mut JourneyState,
        fire: &Fire,
        profile: &str,
        in_segment: impl Fn(&str) -> bool,
    ) -> Outcome {
        if fire.deferred {
            // Decided when it first fired; quiet hours only held it back.
            return Outcome::Send;
        }
        let c = &self.defs[fire.trigger];
        let trigger = fire.trigger as u16;
        if let Some(s) = &c.def.if_segment {
            if !in_segment(s) {
                return Outcome::NotInSegment;
            }
        }
        let longest = self
            .defs
            .iter()
            .filter_map(|c| c.cap.map(|(_, per)| per))
            .max()
            .unwrap_or(0);
        st.acted.retain(|(_, at)| *at > fire.at - longest);
        if let Some((max, per)) = c.cap {
            let recent = st
                .acted
                .iter()
                .filter(|(t, at)| *t == trigger && *at > fire.at - per)
                .count();
            if recent >= max as usize {
                return Outcome::Capped;
            }
            st.acted.push((trigger, fire.at));
        }
        if held_out(&c.def.name, profile, c.holdout_bp) {
            Outcome::Holdout
        } else {
            Outcome::Send
        }
    }
}

/// Whether `profile` is in the control group of trigger `name` holding out `bp`
/// hundredths of a percent: a hash, so the same profiles on every run and node.
pub fn held_out(name: &str, profile: &str, bp: u64) -> bool {
    let mut key = Vec::with_capacity(name.len() + profile.len() + 1);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(profile.as_bytes());
    xxh3_64(&key) % 10_000 < bp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cart(wait: &str) -> TriggerDef {
        TriggerDef {
            name: "Cart abandoned".into(),
            when: When::Event("Product Added".into()),
            wait: Some(wait.into()),
            unless: vec!["Order Completed".into()],
            if_segment: None,
            then: vec!["offers".into()],
            cap: None,
            holdout_percent: 0.0,
            offer: false,
            quiet_hours: None,
        }
    }

    #[test]
    fn a_wait_fires_at_its_instant_unless_cancelled() {
        let t = Triggers::new(vec![cart("30m")], |_| true).unwrap();
        let mut st = JourneyState::default();
        let mut out = Vec::new();
        t.on_event(&mut st, "Product Added", 7, 1_000, &mut out);
        assert!(out.is_empty());
        assert_eq!(Triggers::next_due(&st), Some(1_000 + 1_800_000));
        Triggers::advance(&mut st, 1_800_999, &mut out);
        assert!(out.is_empty());
        Triggers::advance(&mut st, 1_801_000, &mut out);
        assert_eq!(
            out,
            vec![Fire {
                trigger: 0,
                origin: 7,
                at: 1_801_000,
                deferred: false,
            }]
        );
        // An order during the wait cancels it.
        out.clear();
        t.on_event(&mut st, "Product Added", 8, 2_000_000, &mut out);
        t.on_event(&mut st, "Order Completed", 9, 2_500_000, &mut out);
        Triggers::advance(&mut st, 9_000_000, &mut out);
        assert!(out.is_empty());
        assert!(st.waiting.is_empty());
    }

    #[test]
    fn quiet_hours_hold_a_decided_action_until_they_end() {
        const H: i64 = 3_600_000;
        let mut d = cart("30m");
        d.cap = Some(Cap {
            max: 1,
            per: "1d".into(),
        });
        d.quiet_hours = Some(crate::quiet::QuietHoursDef {
            from: "21:00".into(),
            to: "09:00".into(),
            timezone: None,
        });
        let t = Triggers::new(vec![d], |_| true).unwrap();
        assert!(t.has_quiet_hours());
        // Day 0 is 1970-01-01 (UTC): a cart at 22:00 is due at 22:30, in quiet hours.
        let mut st = JourneyState::default();
        let mut out = Vec::new();
        t.on_event(&mut st, "Product Added", 5, 22 * H, &mut out);
        Triggers::advance(&mut st, 22 * H + 1_800_000, &mut out);
        let fire = out.pop().unwrap();
        assert_eq!(t.decide(&mut st, &fire, "p_1", |_| true), Outcome::Send);
        assert_eq!(t.hold_for_quiet_hours(&mut st, &fire, None), Some(33 * H));
        // Istanbul (UTC+3 since 2016): 22:30 UTC on 10 March 2026 is 01:30 local, quiet
        // until 09:00 local, 06:00 UTC.
        let mut other = JourneyState::default();
        let late = Fire {
            at: 1_773_181_800_000,
            ..fire
        };
        assert_eq!(
            t.hold_for_quiet_hours(&mut other, &late, Some("Europe/Istanbul")),
            Some(1_773_208_800_000)
        );
        // A new cart meanwhile starts a new wait and leaves the held action alone.
        t.on_event(&mut st, "Product Added", 6, 23 * H, &mut out);
        assert_eq!(st.waiting.len(), 2);
        assert_eq!(Triggers::next_due(&st), Some(23 * H + 1_800_000));
        Triggers::advance(&mut st, 33 * H, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        // The new wait fired at 23:30, still quiet: capped (the held one counted).
        let second = out.remove(0);
        assert_eq!((second.origin, second.deferred), (6, false));
        assert_eq!(t.decide(&mut st, &second, "p_1", |_| true), Outcome::Capped);
        // The held one fires at 09:00 as decided, not capped again, not held again.
        let held = out.remove(0);
        assert_eq!((held.origin, held.at, held.deferred), (5, 33 * H, true));
        assert_eq!(t.decide(&mut st, &held, "p_1", |_| true), Outcome::Send);
        assert_eq!(t.hold_for_quiet_hours(&mut st, &held, None), None);
        assert!(st.waiting.is_empty());

        // An order while the action is held back cancels it.
        let mut st = JourneyState::default();
        t.on_event(&mut st, "Product Added", 7, 2 * 24 * H + 22 * H, &mut out);
        Triggers::advance(&mut st, 2 * 24 * H + 22 * H + 1_800_000, &mut out);
        let fire = out.pop().unwrap();
        assert_eq!(t.decide(&mut st, &fire, "p_1", |_| true), Outcome::Send);
        assert!(t.hold_for_quiet_hours(&mut st, &fire, None).is_some());
        t.on_event(&mut st, "Order Completed", 8, 2 * 24 * H + 23 * H, &mut out);
        Triggers::advance(&mut st, 4 * 24 * H, &mut out);
        assert!(out.is_empty() && st.waiting.is_empty(), "{out:?}");
    }

    #[test]
    fn a_new_when_restarts_the_wait() {
        let t = Triggers::new(vec![cart("10m")], |_| true).unwrap();
        let mut st = JourneyState::default();
        let mut out = Vec::new();
        t.on_event(&mut st, "Product Added", 1, 0, &mut out);
        t.on_event(&mut st, "Product Added", 2, 300_000, &mut out);
        Triggers::advance(&mut st, 10 * 60_000, &mut out);
        assert!(out.is_empty());
        Triggers::advance(&mut st, 15 * 60_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].origin, 2);
    }

    #[test]
    fn caps_holdouts_and_if_segments_decide() {
        let mut d = cart("1m");
        d.wait = None;
        d.unless.clear();
        d.cap = Some(Cap {
            max: 2,
            per: "1d".into(),
        });
        let t = Triggers::new(vec![d.clone()], |_| true).unwrap();
        let mut st = JourneyState::default();
        let f = |at| Fire {
            trigger: 0,
            origin: 0,
            at,
            deferred: false,
        };
        assert_eq!(t.decide(&mut st, &f(0), "p_1", |_| true), Outcome::Send);
        assert_eq!(t.decide(&mut st, &f(10), "p_1", |_| true), Outcome::Send);
        assert_eq!(t.decide(&mut st, &f(20), "p_1", |_| true), Outcome::Capped);
        assert_eq!(
            t.decide(&mut st, &f(86_400_001), "p_1", |_| true),
            Outcome::Send
        );
        // Holdout: about the configured share, always the same profiles.
        d.cap = None;
        d.holdout_percent = 20.0;
        d.if_segment = Some("VIP".into());
        let t = Triggers::new(vec![d], |_| true).unwrap();
        let held = (0..10_000)
            .filter(|i| t.decide(&mut st, &f(0), &format!("p_{i}"), |_| true) == Outcome::Holdout)
            .count();
        assert!((1_800..2_200).contains(&held), "{held}");
        let again = (0..10_000)
            .filter(|i| held_out("Cart abandoned", &format!("p_{i}"), 2_000))
            .count();
        assert_eq!(held, again);
        assert_eq!(
            t.decide(&mut st, &f(0), "p_1", |s| s != "VIP"),
            Outcome::NotInSegment
        );
    }

    #[test]
    fn bad_definitions_are_named() {
        let mut d = cart("30 minutes");
        let e = Triggers::new(vec![d.clone()], |_| true).unwrap_err();
        assert_eq!(e.field, "wait");
        assert!(e.to_string().contains("Cart abandoned"), "{e}");
        d.wait = None;
        assert_eq!(
            Triggers::new(vec![d.clone()], |_| true).unwrap_err().field,
            "unless"
        );
        d.unless.clear();
        d.if_segment = Some("Nope".into());
        let e = Triggers::new(vec![d], |s| s == "VIP").unwrap_err();
        assert_eq!(e.field, "if");
        assert!(e.message.contains("Nope"));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert!(parse_duration("400d").is_err());
    }

    #[test]
    fn merged_waits_keep_the_later_start() {
        let t = Triggers::new(vec![cart("30m")], |_| true).unwrap();
        let (mut a, mut b) = (JourneyState::default(), JourneyState::default());
        let mut out = Vec::new();
        t.on_event(&mut a, "Product Added", 1, 100, &mut out);
        t.on_event(&mut b, "Product Added", 2, 200, &mut out);
        let mut ab = a.clone();
        Triggers::absorb(&mut ab, &b);
        let mut ba = b.clone();
        Triggers::absorb(&mut ba, &a);
        assert_eq!(ab, ba);
        assert_eq!(ab.waiting.len(), 1);
        assert_eq!(ab.waiting[0].origin, 2);
    }
}
