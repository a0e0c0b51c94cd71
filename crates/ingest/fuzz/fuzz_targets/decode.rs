//! Feeds arbitrary request bodies through the ingest path exactly as the server's
//! `crates/server/src/ingest.rs` does for one request: size limit, `body::decode`,
//! `body::check_depth`, `parse_envelope`, `normalize_all` (with a fixed receive time).
//! Nothing may panic, and the results must hold their invariants: a decoded body never
//! exceeds the limit, every request-level error is a 4xx with a code and a message, every
//! message ends up valid (with a well-formed stored form) or invalid with a code and a
//! reason.
//!
//! Input layout: two control bytes, then the body.
//!
//! * byte 0, bits 0–2: `Content-Encoding` — none, `identity`, `gzip` (body sent as is),
//!   `deflate` (as is), gzip compressed here, deflate compressed here, ` X-GZIP ` (as is),
//!   `br` (unsupported). "Compressed here" lets the fuzzer explore what lies behind a
//!   valid stream and checks that it inflates back to exactly the input.
//! * byte 0, bits 3–4: `Content-Type` — `application/json`, form-encoded, `text/plain`,
//!   none.
//! * byte 0, bit 5: batch endpoint (0) or a single-message one (1).
//! * byte 1, bits 0–2: the single endpoint's type (modulo 6).
//! * byte 1, bits 3–4: the limit — 500 KB (batch default), 32 KB (single default),
//!   4 KiB, 1 KiB (the smallest the config allows).
//! * byte 1, bits 5–6: the source's tracking plan — none, unplanned accepted, unplanned
//!   and invalid quarantined, unplanned and invalid rejected.

#![no_main]

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use niyet_ingest::body::{self, MAX_DEPTH};
use niyet_ingest::{
    parse_envelope, Disposition, Endpoint, ErrorKind, IngestError, MessageType, NormalizeCtx,
    Outcome, PlanAction, TrackingPlan,
};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// 2025-06-15T15:06:40.000Z
const RECEIVED_MS: i64 = 1_750_000_000_000;
const RECEIVED_AT: &str = "2025-06-15T15:06:40.000Z";
const SOURCE: &str = "fuzz";
const QUARANTINED_RAW_MAX: usize = 64 * 1024;

const TYPES: [MessageType; 6] = [
    MessageType::Identify,
    MessageType::Track,
    MessageType::Page,
    MessageType::Screen,
    MessageType::Group,
    MessageType::Alias,
];
const LIMITS: [usize; 4] = [500 * 1024, niyet_ingest::MAX_MESSAGE_BYTES, 4096, 1024];

fn plans() -> &'static [TrackingPlan; 3] {
    static PLANS: OnceLock<[TrackingPlan; 3]> = OnceLock::new();
    PLANS.get_or_init(|| {
        let events: HashMap<String, serde_json::Value> = [
            (
                "Order Completed".to_string(),
                serde_json::json!({
                    "type": "object",
                    "required": ["revenue"],
                    "properties": {
                        "revenue": {"type": "number", "minimum": 0},
                        "currency": {"type": "string", "enum": ["EUR", "TRY", "USD"]},
                        "products": {"type": "array", "maxItems": 50,
                                     "items": {"type": "object", "required": ["sku"]}}
                    },
                    "additionalProperties": true
                }),
            ),
            (
                "Signed Up".to_string(),
                serde_json::json!({
                    "type": "object",
                    "properties": {"plan": {"anyOf": [{"const": "free"}, {"type": "integer"}]},
                                   "name": {"type": "string", "minLength": 1, "maxLength": 20}},
                    "additionalProperties": false
                }),
            ),
        ]
        .into_iter()
        .collect();
        let plan = |unplanned, invalid| match TrackingPlan::new(&events, unplanned, invalid) {
            Ok(p) => p,
            Err(e) => panic!("the fuzz plan does not compile: {e:?}"),
        };
        [
            plan(PlanAction::Accept, PlanAction::Accept),
            plan(PlanAction::Quarantine, PlanAction::Quarantine),
            plan(PlanAction::Reject, PlanAction::Reject),
        ]
    })
}

fn compress(gzip: bool, data: &[u8]) -> Vec<u8> {
    let level = flate2::Compression::fast();
    let r = if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
        e.write_all(data).and_then(|()| e.finish())
    } else {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
        e.write_all(data).and_then(|()| e.finish())
    };
    match r {
        Ok(v) => v,
        Err(e) => panic!("compressing into memory failed: {e}"),
    }
}

/// What the server would answer for a request-level error: a 4xx with a code and a
/// message (see `bad` in crates/server/src/ingest.rs).
fn check_request_error(e: &IngestError, step: &str, allowed: &[ErrorKind]) {
    assert!(
        allowed.contains(&e.kind),
        "{step}: unexpected error kind {:?}: {}",
        e.kind,
        e.message
    );
    let status = e.kind.status();
    assert!((400..500).contains(&status), "{step}: status {status}");
    assert!(!e.kind.code().is_empty(), "{step}: empty code");
    assert!(!e.message.trim().is_empty(), "{step}: empty message");
}

/// The top-level fields of a JSON object, in order, duplicates kept, values raw (a value
/// such as `1e999999` is valid JSON that `serde_json::Value` cannot hold).
struct Fields(Vec<(String, Box<RawValue>)>);

impl Fields {
    fn str(&self, name: &str) -> Option<String> {
        let (_, v) = self.0.iter().rev().find(|(k, _)| k == name)?;
        serde_json::from_str::<String>(v.get()).ok()
    }
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    fields.push((k, m.next_value::<Box<RawValue>>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

fuzz_target!(|data: &[u8]| {
    let (Some(&c0), Some(&c1)) = (data.first(), data.get(1)) else {
        return;
    };
    let input = &data[2..];
    let endpoint = if c0 & 0x20 == 0 {
        Endpoint::Batch
    } else {
        Endpoint::Single(TYPES[usize::from(c1 & 7) % TYPES.len()])
    };
    let limit = LIMITS[usize::from((c1 >> 3) & 3)];
    let plan = match (c1 >> 5) & 3 {
        0 => None,
        n => Some(&plans()[usize::from(n - 1)]),
    };
    let content_type = match (c0 >> 3) & 3 {
        0 => Some("application/json"),
        1 => Some("application/x-www-form-urlencoded; charset=UTF-8"),
        2 => Some("text/plain"),
        _ => None,
    };
    let is_form = (c0 >> 3) & 3 == 1;
    // (header, body on the wire, whether the wire body was made here from `input`)
    let (encoding, wire, made_here): (Option<&str>, std::borrow::Cow<'_, [u8]>, bool) = match c0 & 7
    {
        0 => (None, input.into(), false),
        1 => (Some("identity"), input.into(), false),
        2 => (Some("gzip"), input.into(), false),
        3 => (Some("deflate"), input.into(), false),
        4 => (Some("gzip"), compress(true, input).into(), true),
        5 => (Some("deflate"), compress(false, input).into(), true),
        6 => (Some(" X-GZIP "), input.into(), false),
        _ => (Some("br"), input.into(), false),
    };

    // The server refuses a body over the limit before decoding (413).
    if wire.len() > limit {
        return;
    }

    // 1. Transport decoding.
    let decoded = match body::decode(encoding, content_type, &wire, limit) {
        Ok(d) => d,
        Err(e) => {
            check_request_error(
                &e,
                "decode",
                &[
                    ErrorKind::TooLarge,
                    ErrorKind::BadEncoding,
                    ErrorKind::UnsupportedEncoding,
                    ErrorKind::BadRequest,
                ],
            );
            match c0 & 7 {
                7 => assert_eq!(e.kind, ErrorKind::UnsupportedEncoding),
                0 | 1 if !is_form => panic!("an unencoded non-form body was refused: {e:?}"),
                4 | 5 if input.len() <= limit && !is_form => {
                    panic!("a valid stream of {} bytes was refused: {e:?}", input.len())
                }
                4 | 5 if input.len() > limit => assert_eq!(e.kind, ErrorKind::TooLarge),
                _ => {}
            }
            return;
        }
    };
    assert!(
        decoded.len() <= limit,
        "decoded {} bytes with a limit of {limit}",
        decoded.len()
    );
    assert_ne!(c0 & 7, 7, "an unsupported encoding was accepted");
    let first = decoded.iter().copied().find(|c| !c.is_ascii_whitespace());
    let unwrapped = is_form && !matches!(first, Some(b'{') | Some(b'['));
    if !is_form {
        match c0 & 7 {
            0 | 1 => assert_eq!(&decoded[..], input, "identity changed the body"),
            4 | 5 => assert_eq!(&decoded[..], input, "inflating did not give the input back"),
            _ => {}
        }
    }
    if unwrapped {
        // The JSON found in a form body is an object.
        assert_eq!(
            decoded.iter().copied().find(|c| !c.is_ascii_whitespace()),
            Some(b'{'),
            "form unwrapping returned something else than an object"
        );
    }
    assert!(
        !made_here || input.len() <= limit,
        "a stream inflating to {} bytes passed a limit of {limit}",
        input.len()
    );

    // 2. Depth.
    if let Err(e) = body::check_depth(&decoded) {
        check_request_error(&e, "check_depth", &[ErrorKind::TooDeep]);
        assert!(e.message.contains(&MAX_DEPTH.to_string()), "{}", e.message);
        return;
    }

    // 3. Envelope.
    let env = match parse_envelope(endpoint, &decoded) {
        Ok(env) => env,
        Err(e) => {
            check_request_error(
                &e,
                "parse_envelope",
                &[
                    ErrorKind::BadJson,
                    ErrorKind::BadRequest,
                    ErrorKind::EmptyBatch,
                ],
            );
            return;
        }
    };
    assert!(!env.is_empty(), "an envelope without messages was accepted");
    if matches!(endpoint, Endpoint::Single(_)) {
        assert_eq!(env.len(), 1);
    }
    if let Some(k) = &env.write_key {
        // The server looks the key up as is; it must at least be text.
        let _ = k.len();
    }

    // 4. Every message: valid with a well-formed stored form, or invalid with a reason.
    let ctx = NormalizeCtx {
        received_ms: RECEIVED_MS,
        source: SOURCE,
        plan,
        request_seq: 7,
    };
    let outcomes = env.normalize_all(&ctx);
    assert_eq!(outcomes.len(), env.len(), "one outcome per message");
    for (i, o) in outcomes.iter().enumerate() {
        match o {
            Outcome::Invalid(inv) => {
                assert_eq!(inv.index, i);
                assert!(!inv.code.is_empty(), "message {i}: empty code");
                assert!(
                    inv.code
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "message {i}: code {:?} is not a stable snake_case code",
                    inv.code
                );
                assert!(!inv.reason.trim().is_empty(), "message {i}: empty reason");
                assert!(inv.raw.len() <= QUARANTINED_RAW_MAX);
                if inv.disposition == Disposition::Reject {
                    assert!(
                        plan.is_some(),
                        "message {i} rejected without a tracking plan"
                    );
                }
            }
            Outcome::Valid(n) => {
                if let Endpoint::Single(t) = endpoint {
                    assert_eq!(n.kind, t);
                }
                assert!(!n.message_id.is_empty(), "message {i}: empty messageId");
                let stored: Fields = match serde_json::from_slice(&n.payload) {
                    Ok(v) => v,
                    Err(e) => panic!(
                        "message {i}: stored form is not a JSON object ({e}): {}",
                        String::from_utf8_lossy(&n.payload)
                    ),
                };
                assert_eq!(stored.str("type").as_deref(), Some(n.kind.as_str()));
                assert_eq!(stored.str("messageId"), Some(n.message_id.clone()));
                assert_eq!(stored.str("receivedAt").as_deref(), Some(RECEIVED_AT));
                assert_eq!(stored.str("source").as_deref(), Some(SOURCE));
                assert!(
                    stored.str("timestamp").is_some_and(|t| t.ends_with('Z')),
                    "message {i}: no UTC timestamp"
                );
                if n.dedup_key == 0 {
                    // Only generated ids carry no idempotency key.
                    assert!(
                        n.message_id.starts_with("niyet-") && n.message_id.len() == 38,
                        "message {i}: no dedup key for the given id {:?}",
                        n.message_id
                    );
                }
                let mut keys: Vec<&str> = stored.0.iter().map(|(k, _)| k.as_str()).collect();
                assert!(
                    !keys.contains(&"writeKey"),
                    "message {i}: writeKey was stored"
                );
                assert!(
                    stored.str("userId").is_some() || stored.str("anonymousId").is_some(),
                    "message {i}: stored without an identity"
                );
                let n_keys = keys.len();
                keys.sort_unstable();
                keys.dedup();
                assert_eq!(
                    keys.len(),
                    n_keys,
                    "message {i}: duplicate keys in the stored form {}",
                    String::from_utf8_lossy(&n.payload)
                );
            }
        }
    }
});
