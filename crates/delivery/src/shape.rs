//! What each kind of destination receives, built from the composed action document
//! (`{"id", "trigger", "profile": {...}, "event": {...}, ...}`). Pure.

use niyet_actions::payload::{google_enhanced, meta_capi, Conversion};
use serde_json::{json, Value};

use crate::{DestinationConfig, Kind};

/// Replaces each `{{path.to.value}}` with that value of `doc` (strings as they are,
/// other values as JSON, missing ones as nothing).
pub fn render(template: &str, doc: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match lookup(doc, after[..end].trim()) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(v) => out.push_str(&v.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The value at a dotted path (`profile.traits.email`).
pub use niyet_actions::trigger::lookup_json as lookup;

fn text<'a>(doc: &'a Value, paths: &[&str]) -> Option<&'a str> {
    paths
        .iter()
        .find_map(|p| lookup(doc, p).and_then(Value::as_str))
        .filter(|s| !s.trim().is_empty())
}

fn number(doc: &Value, paths: &[&str]) -> Option<f64> {
    paths.iter().find_map(|p| {
        let v = lookup(doc, p)?;
        v.as_f64().or_else(|| v.as_str()?.parse().ok())
    })
}

/// Whether the customer's consent lets an action needing `purpose` leave: the document's
/// `consent.<purpose>.allowed`, as the composer works it out from the profile and the
/// purpose's default policy. A purpose the document says nothing of is not allowed.
pub fn consented<D: std::ops::Index<&'static str, Output = Value> + ?Sized>(
    doc: &D,
    purpose: &str,
) -> bool {
    doc["consent"][purpose]["allowed"] == true
}

/// The conversion an order event makes, for ad platforms.
fn conversion<'a>(doc: &'a Value, key: &'a str) -> Conversion<'a> {
    Conversion {
        event_id: key,
        event_name: "Purchase",
        time_ms: lookup(doc, "event_time_ms")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        email: text(doc, &["profile.traits.email", "event.context.traits.email"]),
        phone: text(doc, &["profile.traits.phone", "event.context.traits.phone"]),
        external_id: text(doc, &["event.userId"]),
        value: number(
            doc,
            &[
                "event.properties.revenue",
                "event.properties.total",
                "event.properties.value",
            ],
        ),
        currency: text(doc, &["event.properties.currency"]),
        order_id: text(
            doc,
            &["event.properties.order_id", "event.properties.orderId"],
        ),
    }
}

/// An e-mail to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// What a destination sends for one action.
#[derive(Debug, Clone, PartialEq)]
pub enum Shaped {
    /// The composed document itself (a plain webhook), sent as it is without a copy.
    Document,
    Json(Value),
    Mail(Mail),
    /// Nothing can be sent (no address, no conversion value…): why.
    Unsendable(String),
}

/// Builds what `d` sends for the composed document `doc` of the action keyed `key`.
/// `conversion_time` gives the time Google Ads conversions are stamped with (only they
/// call it).
pub fn shape(
    d: &DestinationConfig,
    doc: &Value,
    key: &str,
    conversion_time: &dyn Fn() -> String,
) -> Shaped {
    match d.kind {
        Kind::Webhook => Shaped::Document,
        Kind::Crm => Shaped::Json(json!({
            "type": "lead",
            "id": key,
            "trigger": doc["trigger"],
            "lead": {
                "profile_id": doc["profile"]["id"],
                "email": doc["profile"]["traits"]["email"],
                "phone": doc["profile"]["traits"]["phone"],
                "name": doc["profile"]["traits"]["name"],
                "company": doc["profile"]["traits"]["company"],
                "segments": doc["profile"]["segments"],
            },
            "event": doc["event"],
        })),
        Kind::Push => {
            let Some(to) = text(
                doc,
                &["profile.traits.push_token", "event.context.device.token"],
            ) else {
                return Shaped::Unsendable("the profile has no push token".into());
            };
            Shaped::Json(json!({
                "to": to,
                "notification": {
                    "title": render(d.title.as_deref().unwrap_or("{{trigger}}"), doc),
                    "body": render(d.template.as_deref().unwrap_or(""), doc),
                },
                "data": {"id": key, "trigger": doc["trigger"], "profile": doc["profile"]["id"]},
            }))
        }
        Kind::MetaCapi => {
            let c = conversion(doc, key);
            if c.email.is_none() && c.phone.is_none() && c.external_id.is_none() {
                return Shaped::Unsendable("no e-mail, phone or user id to match on".into());
            }
            Shaped::Json(meta_capi(&c))
        }
        Kind::GoogleAds => {
            let c = conversion(doc, key);
            if c.email.is_none() && c.phone.is_none() {
                return Shaped::Unsendable("no e-mail or phone to match on".into());
            }
            Shaped::Json(google_enhanced(&c, &conversion_time()))
        }
        Kind::Email => {
            let to = render(d.to.as_deref().unwrap_or("{{profile.traits.email}}"), doc);
            if !to.contains('@') || to.contains(['\r', '\n', '<', '>']) {
                return Shaped::Unsendable(format!("no usable e-mail address (`{to}`)"));
            }
            Shaped::Mail(Mail {
                to,
                subject: render(d.subject.as_deref().unwrap_or("{{trigger}}"), doc)
                    .replace(['\r', '\n'], " "),
                body: render(d.template.as_deref().unwrap_or(""), doc),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({
            "id": "k1", "trigger": "Cart abandoned", "event_time_ms": 1_700_000_000_000i64,
            "profile": {"id": "p_1", "traits": {"email": "A@b.co", "first_name": "Ayşe",
                        "phone": "+905321234567", "consent": {"email": "denied"}}},
            "event": {"userId": "u1", "properties": {"revenue": 99.5, "currency": "try", "order_id": "o1"}},
            "offer": {"kind": "discount", "code": "SAVE-1"}
        })
    }

    #[test]
    fn templates_fill_paths() {
        let d = doc();
        assert_eq!(
            render(
                "Merhaba {{profile.traits.first_name}}, kod: {{ offer.code }} {{nope}}!",
                &d
            ),
            "Merhaba Ayşe, kod: SAVE-1 !"
        );
        assert_eq!(render("{{event.properties.revenue}} {{", &d), "99.5 {{");
    }

    #[test]
    fn consent_is_what_the_document_allows() {
        let mut d = doc();
        d["consent"] = json!({"email": {"status": "denied", "allowed": false},
                              "push": {"status": "unknown", "allowed": true}});
        assert!(!consented(&d, "email"));
        assert!(consented(&d, "push"));
        assert!(!consented(&d, "ads"), "a purpose not stated is not allowed");
    }

    #[test]
    fn ad_platform_shapes_hash_identifiers() {
        let mut cfg: DestinationConfig =
            serde_json::from_value(json!({"name": "meta", "kind": "meta_capi", "url": "http://x"}))
                .unwrap();
        let Shaped::Json(m) = shape(&cfg, &doc(), "k1", &String::new) else {
            panic!()
        };
        assert_eq!(
            m["data"][0]["user_data"]["em"][0],
            niyet_actions::payload::sha256_hex("a@b.co")
        );
        assert_eq!(m["data"][0]["custom_data"]["value"], 99.5);
        cfg.kind = Kind::Email;
        cfg.subject = Some("Sepetin seni bekliyor, {{profile.traits.first_name}}".into());
        let Shaped::Mail(mail) = shape(&cfg, &doc(), "k1", &String::new) else {
            panic!()
        };
        assert_eq!(mail.to, "A@b.co");
        assert_eq!(mail.subject, "Sepetin seni bekliyor, Ayşe");
    }
}
