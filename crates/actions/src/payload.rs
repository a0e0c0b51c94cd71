//! Actions as recorded in the outbox, their keys, signatures and destination payloads.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_128;

pub use crate::trigger::Outcome;

/// One action for one destination, as the pipeline emits it and the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Deterministic idempotency key (see [`idempotency_key`]).
    pub key: String,
    pub trigger: String,
    pub destination: String,
    pub profile: String,
    /// Log offset of the record that started the trigger.
    pub origin: u64,
    /// Processing time the trigger acted at (ms).
    pub at_ms: i64,
    pub outcome: Outcome,
}

/// The key of the action of `trigger` for `profile` started by the record at `origin`,
/// to `destination`: the same on every replay and every retry, so receivers deduplicate.
pub fn idempotency_key(trigger: &str, profile: &str, origin: u64, destination: &str) -> String {
    let mut b = Vec::with_capacity(trigger.len() + profile.len() + destination.len() + 11);
    for part in [
        trigger.as_bytes(),
        profile.as_bytes(),
        destination.as_bytes(),
    ] {
        b.extend_from_slice(part);
        b.push(0);
    }
    b.extend_from_slice(&origin.to_le_bytes());
    format!("{:032x}", xxh3_128(&b))
}

/// A decision recorded with an action: what was chosen and why.
pub type Decision = Value;

/// Lower-case hex SHA-256.
pub fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Signature of a webhook body: hex HMAC-SHA256 over `"{timestamp}.{body}"` with the
/// destination's secret (the receiver recomputes it and checks the timestamp is recent).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // Any key length is accepted by HMAC.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// E-mail as ad platforms hash it: trimmed, lower-case.
pub fn normalise_email(e: &str) -> String {
    e.trim().to_lowercase()
}

/// Phone as ad platforms hash it: digits only, with the country code (E.164 without `+`).
pub fn normalise_phone(p: &str) -> String {
    p.chars().filter(|c| c.is_ascii_digit()).collect()
}

/// What conversion feedback is built from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversion<'a> {
    pub event_id: &'a str,
    pub event_name: &'a str,
    pub time_ms: i64,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub external_id: Option<&'a str>,
    pub value: Option<f64>,
    pub currency: Option<&'a str>,
    pub order_id: Option<&'a str>,
}

/// A body shaped like Meta's Conversions API (`data` of one server event; user data
/// hashed with SHA-256 after normalising; `event_id` deduplicates against the pixel).
pub fn meta_capi(c: &Conversion<'_>) -> Value {
    let mut user = serde_json::Map::new();
    if let Some(e) = c.email {
        user.insert("em".into(), json!([sha256_hex(&normalise_email(e))]));
    }
    if let Some(p) = c.phone {
        user.insert("ph".into(), json!([sha256_hex(&normalise_phone(p))]));
    }
    if let Some(x) = c.external_id {
        user.insert("external_id".into(), json!([sha256_hex(x.trim())]));
    }
    let mut custom = serde_json::Map::new();
    if let Some(v) = c.value {
        custom.insert("value".into(), json!(v));
    }
    if let Some(cur) = c.currency {
        custom.insert("currency".into(), json!(cur.to_uppercase()));
    }
    if let Some(o) = c.order_id {
        custom.insert("order_id".into(), json!(o));
    }
    json!({"data": [{
        "event_name": c.event_name,
        "event_time": c.time_ms.div_euclid(1000),
        "event_id": c.event_id,
        "action_source": "website",
        "user_data": user,
        "custom_data": custom,
    }]})
}

/// A body shaped like a Google Ads enhanced-conversions upload (one conversion; e-mail and
/// phone hashed with SHA-256, the phone in E.164 with its `+`).
pub fn google_enhanced(c: &Conversion<'_>, conversion_time: &str) -> Value {
    let mut ids = Vec::new();
    if let Some(e) = c.email {
        ids.push(json!({"hashedEmail": sha256_hex(&normalise_email(e))}));
    }
    if let Some(p) = c.phone {
        ids.push(json!({"hashedPhoneNumber": sha256_hex(&format!("+{}", normalise_phone(p)))}));
    }
    let mut conv = json!({
        "orderId": c.order_id.unwrap_or(c.event_id),
        "conversionDateTime": conversion_time,
        "userIdentifiers": ids,
    });
    if let Some(v) = c.value {
        conv["conversionValue"] = json!(v);
    }
    if let Some(cur) = c.currency {
        conv["currencyCode"] = json!(cur.to_uppercase());
    }
    json!({"conversions": [conv], "partialFailure": true})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_distinct() {
        let k = idempotency_key("Cart", "p_1", 42, "offers");
        assert_eq!(k, idempotency_key("Cart", "p_1", 42, "offers"));
        assert_eq!(k.len(), 32);
        assert_ne!(k, idempotency_key("Cart", "p_1", 43, "offers"));
        assert_ne!(k, idempotency_key("Cart", "p_1", 42, "crm"));
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            idempotency_key("ab", "c", 1, "d"),
            idempotency_key("a", "bc", 1, "d")
        );
    }

    #[test]
    fn sha256_and_hmac_match_published_vectors() {
        // FIPS 180-2 "abc".
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Our framing is "{timestamp}.{body}".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            signature(b"s3cret", 1_700_000_000, b"{\"a\":1}"),
            hex(&mac.finalize().into_bytes())
        );
    }

    #[test]
    fn conversion_payloads_hash_normalised_identifiers() {
        let c = Conversion {
            event_id: "k1",
            event_name: "Purchase",
            time_ms: 1_700_000_000_123,
            email: Some("  Ayse.Yilmaz@Example.COM "),
            phone: Some("+90 532 123 45 67"),
            external_id: Some("u-1"),
            value: Some(249.9),
            currency: Some("try"),
            order_id: Some("o-9"),
        };
        let m = meta_capi(&c);
        let d = &m["data"][0];
        assert_eq!(d["event_time"], 1_700_000_000);
        assert_eq!(d["event_id"], "k1");
        assert_eq!(
            d["user_data"]["em"][0],
            sha256_hex("ayse.yilmaz@example.com")
        );
        assert_eq!(d["user_data"]["ph"][0], sha256_hex("905321234567"));
        assert_eq!(d["custom_data"]["currency"], "TRY");
        let g = google_enhanced(&c, "2023-11-14 22:13:20+00:00");
        let ids = &g["conversions"][0]["userIdentifiers"];
        assert_eq!(ids[0]["hashedEmail"], sha256_hex("ayse.yilmaz@example.com"));
        assert_eq!(ids[1]["hashedPhoneNumber"], sha256_hex("+905321234567"));
        assert_eq!(g["conversions"][0]["orderId"], "o-9");
    }
}
