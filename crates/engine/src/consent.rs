//! Consent per purpose, read from events.
//!
//! A customer's consent to a purpose (`email`, `sms`, `push`, `ads`, `analytics`,
//! `personalization`, or any configured one) is `granted` or `denied`; with no statement
//! it is `unknown` and the purpose's default policy decides. Statements come from:
//!
//! * `identify` traits or `context.traits`: `"consent": {"email": true, "sms": "denied"}`;
//! * a `Consent Updated` track event: `{"purpose": "email", "status": "granted"}`, or
//!   `{"consents": {"email": false}}` (also `consent`, `purposes`);
//! * `context.consent.categoryPreferences` on any event (`{"Advertising": false}`), as
//!   consent-management tools send it; category names are lower-cased.
//!
//! Each statement becomes the profile trait `consent.<purpose>` (`"granted"` or
//! `"denied"`), so it is resolved like every trait: last writer wins by event time, with
//! the time and source kept, merged with profiles and rebuilt by replay. The event that
//! made a statement is its proof: [`changes`] over a profile's events gives the history.

use serde_json::Value;

use crate::extract::{EventView, Kind};

/// The track event that states consent.
pub const EVENT: &str = "Consent Updated";
/// Trait name prefix of consent statements.
pub const TRAIT_PREFIX: &str = "consent.";

/// `granted`, `denied`, or `None` for a value that states neither.
pub fn status_of(v: &Value) -> Option<&'static str> {
    match v {
        Value::Bool(true) => Some("granted"),
        Value::Bool(false) => Some("denied"),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "granted" | "grant" | "yes" | "true" | "opt_in" | "opt-in" | "opted_in" | "allow"
            | "allowed" | "accepted" => Some("granted"),
            "denied" | "deny" | "no" | "false" | "opt_out" | "opt-out" | "opted_out"
            | "revoked" | "withdrawn" | "rejected" => Some("denied"),
            _ => None,
        },
        Value::Object(o) => o.get("status").or(o.get("granted")).and_then(status_of),
        _ => None,
    }
}

fn purpose_name(p: &str) -> Option<String> {
    let p = p.trim().to_lowercase();
    let ok = !p.is_empty()
        && p.len() <= 64
        && p.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    ok.then_some(p)
}

fn from_map(v: &Value, out: &mut Vec<(String, &'static str)>) {
    if let Some(o) = v.as_object() {
        for (k, val) in o {
            if let (Some(p), Some(s)) = (purpose_name(k), status_of(val)) {
                out.retain(|(q, _)| *q != p);
                out.push((p, s));
            }
        }
    }
}

/// The consent statements an event makes, by purpose (one per purpose).
pub fn changes(v: &EventView<'_>) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if let Some(raw) = v.context.consent {
        if let Ok(c) = serde_json::from_str::<Value>(raw.get()) {
            from_map(&c["categoryPreferences"], &mut out);
        }
    }
    let traits = v
        .context
        .traits
        .0
        .iter()
        .chain(if v.kind == Kind::Identify {
            v.traits.0.iter()
        } else {
            [].iter()
        });
    for (k, raw) in traits {
        if k == "consent" {
            if let Ok(c) = serde_json::from_str::<Value>(raw.get()) {
                from_map(&c, &mut out);
            }
        }
    }
    if v.kind == Kind::Track && v.name.as_deref() == Some(EVENT) {
        if let Some(props) = v
            .properties
            .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
        {
            for key in ["consent", "consents", "purposes"] {
                from_map(&props[key], &mut out);
            }
            if let (Some(p), Some(s)) = (
                props["purpose"].as_str().and_then(purpose_name),
                ["status", "granted", "state", "value"]
                    .iter()
                    .find_map(|k| status_of(&props[*k])),
            ) {
                out.retain(|(q, _)| *q != p);
                out.push((p, s));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(json: &str) -> Vec<(String, &'static str)> {
        let json = json.replacen('{', r#"{"timestamp":"2026-01-01T00:00:00Z","#, 1);
        let v = crate::extract::parse(json.as_bytes()).expect("parse");
        let mut c = changes(&v);
        c.sort();
        c
    }

    #[test]
    fn statements_from_every_place() {
        assert_eq!(
            of(
                r#"{"type":"identify","userId":"u","traits":{"consent":{"email":true,"SMS":"denied","x":3}}}"#
            ),
            vec![("email".into(), "granted"), ("sms".into(), "denied")]
        );
        assert_eq!(
            of(
                r#"{"type":"track","event":"Consent Updated","userId":"u","properties":{"purpose":"push","status":"revoked"}}"#
            ),
            vec![("push".into(), "denied")]
        );
        assert_eq!(
            of(
                r#"{"type":"track","event":"Consent Updated","userId":"u","properties":{"consents":{"ads":"opt_in"}}}"#
            ),
            vec![("ads".into(), "granted")]
        );
        assert_eq!(
            of(
                r#"{"type":"page","anonymousId":"a","context":{"consent":{"categoryPreferences":{"Advertising":false}}}}"#
            ),
            vec![("advertising".into(), "denied")]
        );
        // Properties of other events and traits of tracks say nothing.
        assert!(of(r#"{"type":"track","event":"Order Completed","userId":"u","properties":{"purpose":"email","status":"granted"}}"#).is_empty());
        assert!(of(
            r#"{"type":"track","event":"X","userId":"u","traits":{"consent":{"email":true}}}"#
        )
        .is_empty());
    }
}
