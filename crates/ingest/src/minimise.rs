//! Data minimisation per source, applied to each valid message before it is stored:
//! drop or truncate the IP address, drop listed fields, hash listed identifiers.
//!
//! * `ip = "drop"` removes `context.ip`; `"truncate"` keeps the network only (IPv4: the
//!   last octet becomes 0; IPv6: the first 48 bits are kept).
//! * `drop_properties` removes those keys from `properties`, `traits` and
//!   `context.traits`.
//! * `hash_identifiers` replaces `email`, `phone` (in `traits` and `context.traits`),
//!   `user_id` (`userId`) and `anonymous_id` (`anonymousId`) with the hex SHA-256 of the
//!   value normalised first (e-mail trimmed and lower-cased, phone reduced to `+` and
//!   digits), so the same person still resolves to one profile across hashed sources.
//!
//! A source with nothing configured is passed through untouched (no parse).

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What happens to the IP address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpPolicy {
    /// Stored as sent.
    #[default]
    Keep,
    /// Not stored.
    Drop,
    /// Only the network part is stored.
    Truncate,
}

/// A source's minimisation settings (`[sources.minimise]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Minimise {
    /// The IP address.
    pub ip: IpPolicy,
    /// Fields dropped from properties and traits.
    pub drop_properties: Vec<String>,
    /// Identifiers stored as SHA-256: `email`, `phone`, `user_id`, `anonymous_id`.
    pub hash_identifiers: Vec<String>,
}

/// The identifiers `hash_identifiers` accepts.
pub const HASHABLE: [&str; 4] = ["email", "phone", "user_id", "anonymous_id"];

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn normalised(kind: &str, v: &str) -> String {
    match kind {
        "email" => v.trim().to_lowercase(),
        "phone" => v
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect(),
        _ => v.to_string(),
    }
}

/// The network part of an IP address (`None`: not an address).
pub fn truncate_ip(ip: &str) -> Option<String> {
    match ip.trim().parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            Some(std::net::Ipv4Addr::new(o[0], o[1], o[2], 0).to_string())
        }
        std::net::IpAddr::V6(a) => {
            let s = a.segments();
            Some(std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string())
        }
    }
}

impl Minimise {
    /// Whether anything is to be done.
    pub fn is_active(&self) -> bool {
        self.ip != IpPolicy::Keep
            || !self.drop_properties.is_empty()
            || !self.hash_identifiers.is_empty()
    }

    /// Names in `hash_identifiers` that are not identifiers.
    pub fn problems(&self) -> Vec<String> {
        self.hash_identifiers
            .iter()
            .filter(|h| !HASHABLE.contains(&h.as_str()))
            .map(|h| format!("hash_identifiers: `{h}` is not one of {HASHABLE:?}"))
            .collect()
    }

    fn hash(&self, kind: &str) -> bool {
        self.hash_identifiers.iter().any(|h| h == kind)
    }

    /// Applies the settings to a stored message (JSON); returns it unchanged when nothing
    /// is configured or it is not a JSON object.
    pub fn apply(&self, payload: Vec<u8>) -> Vec<u8> {
        if !self.is_active() {
            return payload;
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(&payload) else {
            return payload;
        };
        if !v.is_object() {
            return payload;
        }
        match self.ip {
            IpPolicy::Keep => {}
            IpPolicy::Drop => {
                if let Some(c) = v.get_mut("context").and_then(Value::as_object_mut) {
                    c.remove("ip");
                }
            }
            IpPolicy::Truncate => {
                if let Some(c) = v.get_mut("context").and_then(Value::as_object_mut) {
                    let cut = c.get("ip").and_then(Value::as_str).and_then(truncate_ip);
                    match cut {
                        Some(t) => c.insert("ip".into(), Value::String(t)),
                        None => c.remove("ip"),
                    };
                }
            }
        }
        for (field, kind) in [("userId", "user_id"), ("anonymousId", "anonymous_id")] {
            if self.hash(kind) {
                if let Some(s) = v.get(field).and_then(Value::as_str).map(str::to_string) {
                    v[field] = Value::String(sha256_hex(&s));
                }
            }
        }
        let Some(o) = v.as_object_mut() else {
            return payload;
        };
        // Properties lose the dropped fields; traits (of the message and of its context)
        // lose them too and have their identifiers hashed.
        let mut props = None;
        let mut people = Vec::new();
        for (k, val) in o.iter_mut() {
            match k.as_str() {
                "properties" => props = val.as_object_mut(),
                "traits" => people.extend(val.as_object_mut()),
                "context" => people.extend(val.get_mut("traits").and_then(Value::as_object_mut)),
                _ => {}
            }
        }
        for p in &self.drop_properties {
            if let Some(m) = props.as_mut() {
                m.remove(p);
            }
            for m in people.iter_mut() {
                m.remove(p);
            }
        }
        for m in people {
            for kind in ["email", "phone"] {
                if self.hash(kind) {
                    if let Some(s) = m.get(kind).and_then(Value::as_str) {
                        let h = sha256_hex(&normalised(kind, s));
                        m.insert(kind.into(), Value::String(h));
                    }
                }
            }
        }
        serde_json::to_vec(&v).unwrap_or(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(m: &Minimise, v: Value) -> Value {
        serde_json::from_slice(&m.apply(serde_json::to_vec(&v).unwrap())).unwrap()
    }

    #[test]
    fn nothing_configured_is_untouched() {
        let raw = br#"{"a": 1,   "b":2}"#.to_vec();
        assert_eq!(Minimise::default().apply(raw.clone()), raw);
    }

    #[test]
    fn ip_properties_and_identifiers() {
        let m = Minimise {
            ip: IpPolicy::Truncate,
            drop_properties: vec!["card".into(), "tckn".into()],
            hash_identifiers: vec!["email".into(), "user_id".into()],
        };
        let out = run(
            &m,
            json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
                   "traits": {"email": " Ayse@Example.com ", "tckn": "12345678901", "city": "İzmir"},
                   "properties": {"card": "4111", "sku": "S"},
                   "context": {"ip": "85.34.12.201", "traits": {"email": "ayse@example.com"}}}),
        );
        assert_eq!(out["context"]["ip"], "85.34.12.0");
        assert_eq!(out["properties"], json!({"sku": "S"}));
        assert!(out["traits"].get("tckn").is_none());
        assert_eq!(out["traits"]["city"], "İzmir");
        let h = sha256_hex("ayse@example.com");
        assert_eq!(out["traits"]["email"], h.as_str());
        assert_eq!(
            out["context"]["traits"]["email"],
            h.as_str(),
            "one hash per person"
        );
        assert_eq!(out["userId"], sha256_hex("u1").as_str());
        assert_eq!(out["anonymousId"], "a1");
        assert_eq!(
            truncate_ip("2a02:ff0:1:2:3::9").as_deref(),
            Some("2a02:ff0:1::")
        );
        assert_eq!(truncate_ip("not an ip"), None);
        let d = Minimise {
            ip: IpPolicy::Drop,
            ..Default::default()
        };
        assert!(
            run(&d, json!({"context": {"ip": "1.2.3.4", "locale": "tr"}}))["context"]
                .get("ip")
                .is_none()
        );
        assert_eq!(
            Minimise {
                hash_identifiers: vec!["name".into()],
                ..Default::default()
            }
            .problems()
            .len(),
            1
        );
    }
}
