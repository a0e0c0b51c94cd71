//! Reading stored events: the normalised JSON written by ingest (see `niyet-ingest`).

use niyet_analytics::channel::Origin;
use niyet_identity::{normalize, Graph, Ident, ANONYMOUS_ID, DEVICE_ID, EMAIL, PHONE, USER_ID};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A stored event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The payload is not the stored event form.
    #[error("unreadable stored event: {0}")]
    Json(#[from] serde_json::Error),
    /// The payload is not UTF-8 (valid up to the byte given).
    #[error("stored event is not UTF-8 after byte {0}")]
    Utf8(usize),
    /// The timestamp is not ISO-8601.
    #[error("unreadable timestamp `{0}`")]
    Timestamp(String),
}

/// A JSON object's entries in document order, values left unparsed.
#[derive(Debug, Default, Clone)]
pub struct Entries<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Entries<'a>, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(4));
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
            fn visit_unit<E>(self) -> Result<Entries<'a>, E> {
                Ok(Entries::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'a> Entries<'a> {
    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// A string or number field (ids may be sent as numbers).
#[derive(Debug, Clone)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Option<Text<'a>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or number")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Some(Text(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Some(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Some(Text(Cow::Owned(v))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Some(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Some(Text(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(None)
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut s: S,
            ) -> Result<Self::Value, S::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(None)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))?
            .ok_or_else(|| serde::de::Error::custom("not text"))
    }
}

/// Reads a raw value as text, if it is a string or number.
pub fn text<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    serde_json::from_str::<Text<'a>>(raw.get())
        .ok()
        .map(|t| t.0)
}

/// Reads a raw value as a number (numbers, or strings holding one).
pub fn number(raw: &RawValue) -> Option<f64> {
    let t = text(raw)?;
    t.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

/// `context.device`.
#[derive(Debug, Default, Deserialize)]
pub struct Device<'a> {
    /// Device id (an identifier).
    #[serde(borrow, default)]
    pub id: Option<Text<'a>>,
    /// Device type (`ios`, `android`, …).
    #[serde(borrow, default, rename = "type")]
    pub kind: Option<Text<'a>>,
}

/// One of `context.externalIds`.
#[derive(Debug, Deserialize)]
pub struct ExternalId<'a> {
    /// The id.
    #[serde(borrow)]
    pub id: Text<'a>,
    /// Its type, e.g. `crm_id`.
    #[serde(borrow, rename = "type")]
    pub kind: Text<'a>,
}

/// The parts of `context` profiles use.
#[derive(Debug, Default, Deserialize)]
pub struct Context<'a> {
    /// `context.traits`.
    #[serde(borrow, default)]
    pub traits: Entries<'a>,
    /// `context.device`.
    #[serde(borrow, default)]
    pub device: Option<Device<'a>>,
    /// `context.externalIds`.
    #[serde(borrow, default, rename = "externalIds")]
    pub external_ids: Option<Vec<ExternalId<'a>>>,
    /// `context.userAgent`.
    #[serde(borrow, default, rename = "userAgent")]
    pub user_agent: Option<Text<'a>>,
    /// `context.app` (present for mobile apps).
    #[serde(borrow, default)]
    pub app: Option<&'a RawValue>,
    /// `context.page` (present for web pages).
    #[serde(borrow, default)]
    pub page: Option<&'a RawValue>,
    /// `context.channel`.
    #[serde(borrow, default)]
    pub channel: Option<Text<'a>>,
    /// `context.ip`.
    #[serde(borrow, default)]
    pub ip: Option<Text<'a>>,
    /// `context.consent` (`categoryPreferences`, as consent managers send it).
    #[serde(borrow, default)]
    pub consent: Option<&'a RawValue>,
    /// `context.timezone`.
    #[serde(borrow, default)]
    pub timezone: Option<Text<'a>>,
    /// `context.locale`.
    #[serde(borrow, default)]
    pub locale: Option<Text<'a>>,
    /// `context.screen`.
    #[serde(default)]
    pub screen: Option<Screen>,
    /// `context.campaign` (the UTM parameters).
    #[serde(borrow, default)]
    pub campaign: Option<&'a RawValue>,
}

/// `context.screen`.
#[derive(Debug, Default, Deserialize)]
pub struct Screen {
    /// Width in pixels.
    #[serde(default)]
    pub width: Option<f64>,
    /// Height in pixels.
    #[serde(default)]
    pub height: Option<f64>,
}

#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default, rename = "userId")]
    user_id: Option<Text<'a>>,
    #[serde(borrow, default, rename = "anonymousId")]
    anonymous_id: Option<Text<'a>>,
    #[serde(borrow, default, rename = "previousId")]
    previous_id: Option<Text<'a>>,
    #[serde(borrow, default, rename = "previousUserId")]
    previous_user_id: Option<Text<'a>>,
    #[serde(borrow, default, rename = "groupId")]
    group_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    event: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow, default)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Text<'a>>,
    #[serde(borrow, default)]
    traits: Entries<'a>,
    #[serde(borrow, default)]
    context: Option<Context<'a>>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

/// The call type of a stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `track`
    Track,
    /// `page`
    Page,
    /// `screen`
    Screen,
    /// `identify`
    Identify,
    /// `group`
    Group,
    /// `alias`
    Alias,
    /// An admin action recorded in the log (`niyet.*`).
    Control,
    /// Anything else (kept in the log, ignored by profiles).
    Other,
}

/// A stored event, borrowing from its payload.
#[derive(Debug)]
pub struct EventView<'a> {
    /// Call type.
    pub kind: Kind,
    /// The raw `type` (for control records, e.g. `niyet.unmerge`).
    pub type_name: Cow<'a, str>,
    /// `event` (track) or `name` (page, screen).
    pub name: Option<Cow<'a, str>>,
    /// `userId`.
    pub user_id: Option<Cow<'a, str>>,
    /// `anonymousId`.
    pub anonymous_id: Option<Cow<'a, str>>,
    /// `previousId` (alias).
    pub previous_id: Option<Cow<'a, str>>,
    /// `groupId`.
    pub group_id: Option<Cow<'a, str>>,
    /// Event time (ms since the epoch).
    pub time_ms: i64,
    /// The source (write key name).
    pub source: Cow<'a, str>,
    /// Top-level `channel`.
    pub channel: Option<Cow<'a, str>>,
    /// Top-level `traits` (identify: the person's; group: the account's).
    pub traits: Entries<'a>,
    /// `context`.
    pub context: Context<'a>,
    /// `properties`, unparsed.
    pub properties: Option<&'a RawValue>,
}

/// Click-id parameters that mark an ad click.
const CLICK_IDS: &[&str] = &[
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "msclkid",
    "fbclid",
    "ttclid",
    "twclid",
    "li_fat_id",
    "sccid",
];

/// (host without `www.`, lower-cased; query) of a URL; an empty host for a relative one.
fn split_url(url: &str) -> (String, &str) {
    let u = url.trim();
    let (rest, query) = match u.split_once('?') {
        Some((r, q)) => (r, q.split('#').next().unwrap_or("")),
        None => (u.split('#').next().unwrap_or(""), ""),
    };
    let host = match rest.split_once("//") {
        Some((_, after)) => after.split(['/', ':']).next().unwrap_or(""),
        None => "",
    };
    let host = host.rsplit('@').next().unwrap_or("").to_ascii_lowercase();
    let host = host.strip_prefix("www.").map(String::from).unwrap_or(host);
    (host, query)
}

/// The payload as text: checked as UTF-8 once, so the JSON reader does not check each
/// string and each unparsed value again (as it does reading bytes).
fn as_text(payload: &[u8]) -> Result<&str, ExtractError> {
    std::str::from_utf8(payload).map_err(|e| ExtractError::Utf8(e.valid_up_to()))
}

/// Reads a stored event.
pub fn parse(payload: &[u8]) -> Result<EventView<'_>, ExtractError> {
    let s: Stored<'_> = serde_json::from_str(as_text(payload)?)?;
    let time_ms = time_of(&s.timestamp)?;
    let (kind, name) = kind_and_name(&s.kind, s.event, s.name);
    Ok(EventView {
        kind,
        type_name: s.kind,
        name,
        user_id: s.user_id.map(|t| t.0),
        anonymous_id: s.anonymous_id.map(|t| t.0),
        previous_id: s.previous_id.or(s.previous_user_id).map(|t| t.0),
        group_id: s.group_id.map(|t| t.0),
        time_ms,
        source: s.source.unwrap_or(Cow::Borrowed("")),
        channel: s.channel.map(|t| t.0),
        traits: s.traits,
        context: s.context.unwrap_or_default(),
        properties: s.properties,
    })
}

fn time_of(timestamp: &str) -> Result<i64, ExtractError> {
    niyet_model::parse_timestamp(timestamp)
        .map_err(|_| ExtractError::Timestamp(timestamp.to_string()))
}

/// The call type, and the name: `event` for a track, `name` for the other calls.
fn kind_and_name<'a>(
    kind: &str,
    event: Option<Text<'a>>,
    name: Option<Text<'a>>,
) -> (Kind, Option<Cow<'a, str>>) {
    let kind = kind_of(kind);
    let name = match kind {
        Kind::Track => event.map(|t| t.0),
        _ => name.map(|t| t.0),
    };
    (kind, name)
}

fn kind_of(kind: &str) -> Kind {
    match kind {
        "track" => Kind::Track,
        "page" => Kind::Page,
        "screen" => Kind::Screen,
        "identify" => Kind::Identify,
        "group" => Kind::Group,
        "alias" => Kind::Alias,
        k if k.starts_with("niyet.") => Kind::Control,
        _ => Kind::Other,
    }
}

/// [`parse`] of only what segment features read: the call type, the name, the time,
/// `properties` and `context.page`. Identifiers, traits and the rest of the context are
/// passed over unparsed and left empty (a backfill reads millions of events back).
pub fn parse_for_features(payload: &[u8]) -> Result<EventView<'_>, ExtractError> {
    #[derive(Deserialize)]
    struct Page<'a> {
        #[serde(borrow, default)]
        page: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Lite<'a> {
        #[serde(borrow, rename = "type")]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        event: Option<Text<'a>>,
        #[serde(borrow, default)]
        name: Option<Text<'a>>,
        #[serde(borrow)]
        timestamp: Cow<'a, str>,
        #[serde(borrow, default)]
        context: Option<Page<'a>>,
        #[serde(borrow, default)]
        properties: Option<&'a RawValue>,
    }
    let s: Lite<'_> = serde_json::from_str(as_text(payload)?)?;
    let (kind, name) = kind_and_name(&s.kind, s.event, s.name);
    Ok(EventView {
        kind,
        time_ms: time_of(&s.timestamp)?,
        type_name: s.kind,
        name,
        user_id: None,
        anonymous_id: None,
        previous_id: None,
        group_id: None,
        source: Cow::Borrowed(""),
        channel: None,
        traits: Entries::default(),
        context: Context {
            page: s.context.and_then(|c| c.page),
            ..Context::default()
        },
        properties: s.properties,
    })
}

/// How identifiers are read from events.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Calling code of the default country for phone numbers (`"90"` for TR).
    pub calling_code: String,
    /// Trait names whose values are external ids of that name (e.g. `loyalty_card`).
    pub trait_ids: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            calling_code: "90".into(),
            trait_ids: Vec::new(),
        }
    }
}

impl EventView<'_> {
    /// A person trait from `traits` (identify) or `context.traits`.
    pub fn person_trait(&self, key: &str) -> Option<&RawValue> {
        let top = match self.kind {
            Kind::Group => None,
            _ => self.traits.get(key),
        };
        top.or_else(|| self.context.traits.get(key))
    }

    /// The identifiers this event carries, normalised (blocked values are left to the
    /// graph). For `alias`, `previousId` is the `userId` it names if that is known,
    /// else an `anonymousId`. Returns whether the event is an explicit link (alias).
    pub fn identifiers(&self, cfg: &IdentityConfig, graph: &mut Graph) -> (Vec<Ident>, bool) {
        let mut out = Vec::with_capacity(4);
        if let Some(u) = &self.user_id {
            out.push(Ident::new(USER_ID, &**u));
        }
        if let Some(a) = &self.anonymous_id {
            out.push(Ident::new(ANONYMOUS_ID, &**a));
        }
        if self.kind == Kind::Alias {
            if let Some(p) = &self.previous_id {
                let as_user = Ident::new(USER_ID, &**p);
                if graph.lookup(&as_user).is_some() {
                    out.push(as_user);
                } else {
                    out.push(Ident::new(ANONYMOUS_ID, &**p));
                }
            }
        }
        self.contact_identifiers(cfg, &mut out);
        if let Some(ext) = &self.context.external_ids {
            for e in ext {
                if let Some(k) = graph.external_kind(&e.kind.0) {
                    out.push(Ident::new(k, &*e.id.0));
                }
            }
        }
        for name in &cfg.trait_ids {
            if let Some(v) = self.person_trait(name).and_then(text) {
                if let Some(k) = graph.external_kind(name) {
                    out.push(Ident::new(k, v.trim()));
                }
            }
        }
        (out, self.kind == Kind::Alias)
    }

    /// E-mail, phone and device id.
    fn contact_identifiers(&self, cfg: &IdentityConfig, out: &mut Vec<Ident>) {
        if let Some(e) = self.person_trait("email").and_then(text) {
            if let Some(e) = normalize::email(&e) {
                out.push(Ident::new(EMAIL, e));
            }
        }
        if let Some(p) = self.person_trait("phone").and_then(text) {
            if let Some(p) = normalize::phone(&p, &cfg.calling_code) {
                out.push(Ident::new(PHONE, p));
            }
        }
        if let Some(d) = self.context.device.as_ref().and_then(|d| d.id.as_ref()) {
            out.push(Ident::new(DEVICE_ID, &*d.0));
        }
    }

    /// The identifiers of the built-in kinds this event carries, without a graph (an
    /// alias's `previousId` as both a user id and an anonymous id): enough to drop the
    /// events of erased customers on the way in.
    pub fn builtin_identifiers(&self, cfg: &IdentityConfig) -> Vec<Ident> {
        let mut out = Vec::with_capacity(4);
        if let Some(u) = &self.user_id {
            out.push(Ident::new(USER_ID, &**u));
        }
        if let Some(a) = &self.anonymous_id {
            out.push(Ident::new(ANONYMOUS_ID, &**a));
        }
        if let Some(p) = &self.previous_id {
            out.push(Ident::new(USER_ID, &**p));
            out.push(Ident::new(ANONYMOUS_ID, &**p));
        }
        self.contact_identifiers(cfg, &mut out);
        out
    }

    /// The channel: explicit `channel`/`context.channel`, else `app` for mobile apps,
    /// `web` for pages and browsers, else the source's name.
    pub fn channel(&self) -> Cow<'_, str> {
        if let Some(c) = self
            .channel
            .as_ref()
            .or(self.context.channel.as_ref().map(|t| &t.0))
        {
            return Cow::Borrowed(&**c);
        }
        if self.context.app.is_some() {
            Cow::Borrowed("app")
        } else if self.context.page.is_some()
            || self.context.user_agent.is_some()
            || self.kind == Kind::Page
        {
            Cow::Borrowed("web")
        } else {
            Cow::Borrowed(&*self.source)
        }
    }

    /// The device class: `context.device.type`, else from the user agent (`mobile`,
    /// `tablet`, `desktop`); None when nothing tells.
    pub fn device(&self) -> Option<Cow<'_, str>> {
        if let Some(t) = self.context.device.as_ref().and_then(|d| d.kind.as_ref()) {
            return Some(Cow::Borrowed(&*t.0));
        }
        let ua = &self.context.user_agent.as_ref()?.0;
        Some(Cow::Borrowed(
            if ua.contains("iPad") || ua.contains("Tablet") {
                "tablet"
            } else if ua.contains("Mobile") || ua.contains("Android") || ua.contains("iPhone") {
                "mobile"
            } else {
                "desktop"
            },
        ))
    }

    /// The weak signals probabilistic matching compares (see `niyet_identity::probable`).
    pub fn signals(&self) -> niyet_identity::probable::Signals {
        use niyet_identity::probable::normalize_name;
        let text_of = |t: &Option<Text<'_>>| {
            t.as_ref()
                .map(|t| t.0.trim())
                .filter(|s| !s.is_empty())
                .map(Box::<str>::from)
        };
        let name = self
            .person_trait("name")
            .and_then(text)
            .map(|n| n.into_owned())
            .or_else(|| {
                let first = self.person_trait("firstName").and_then(text)?;
                let last = self.person_trait("lastName").and_then(text)?;
                Some(format!("{first} {last}"))
            })
            .map(|n| normalize_name(&n))
            .filter(|n| !n.is_empty())
            .map(Box::<str>::from);
        let postcode = ["postalCode", "postcode", "zip"]
            .iter()
            .find_map(|k| self.person_trait(k).and_then(text))
            .or_else(|| {
                #[derive(Deserialize)]
                struct Address<'a> {
                    #[serde(borrow, default, rename = "postalCode")]
                    postal_code: Option<Text<'a>>,
                }
                let raw = self.person_trait("address")?;
                let a: Address<'_> = serde_json::from_str(raw.get()).ok()?;
                a.postal_code.map(|t| Cow::Owned(t.0.into_owned()))
            })
            .map(|p| p.split_whitespace().collect::<String>().to_uppercase())
            .filter(|p| !p.is_empty())
            .map(Box::<str>::from);
        let screen = self
            .context
            .screen
            .as_ref()
            .and_then(|s| match (s.width, s.height) {
                (Some(w), Some(h)) => Some(format!("{w}x{h}").into()),
                _ => None,
            });
        niyet_identity::probable::Signals {
            ip: text_of(&self.context.ip),
            user_agent: text_of(&self.context.user_agent),
            screen,
            timezone: text_of(&self.context.timezone),
            locale: text_of(&self.context.locale),
            name,
            postcode,
        }
    }

    /// Where the event came from: `context.campaign` (else the `utm_*` parameters of the
    /// page URL), click ids in the page URL, and the referrer's host when it is another
    /// site than the page's. The page is `context.page`, else the properties of a `page`
    /// call.
    pub fn origin(&self) -> Origin {
        #[derive(Deserialize, Default)]
        struct Camp<'a> {
            #[serde(borrow, default)]
            source: Option<Text<'a>>,
            #[serde(borrow, default)]
            medium: Option<Text<'a>>,
            #[serde(borrow, default)]
            name: Option<Text<'a>>,
        }
        #[derive(Deserialize, Default)]
        struct Page<'a> {
            #[serde(borrow, default)]
            url: Option<Text<'a>>,
            #[serde(borrow, default)]
            referrer: Option<Text<'a>>,
        }
        let camp: Camp<'_> = self
            .context
            .campaign
            .and_then(|c| serde_json::from_str(c.get()).ok())
            .unwrap_or_default();
        let page_raw = self.context.page.or(if self.kind == Kind::Page {
            self.properties
        } else {
            None
        });
        let page: Page<'_> = page_raw
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or_default();
        let url = page.url.as_ref().map(|u| split_url(&u.0));
        let query = url.as_ref().map(|u| u.1).unwrap_or("");
        let param = |name: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.replace('+', " "))
                .filter(|v| !v.is_empty())
        };
        let text =
            |t: Option<Text<'_>>| t.map(|t| t.0.trim().to_string()).filter(|s| !s.is_empty());
        let (source, medium, campaign) = (text(camp.source), text(camp.medium), text(camp.name));
        let (source, medium, campaign) =
            if source.is_none() && medium.is_none() && campaign.is_none() {
                (
                    param("utm_source"),
                    param("utm_medium"),
                    param("utm_campaign"),
                )
            } else {
                (source, medium, campaign)
            };
        let click_ids = query
            .split('&')
            .filter_map(|kv| kv.split('=').next())
            .filter(|k| CLICK_IDS.iter().any(|c| k.eq_ignore_ascii_case(c)))
            .map(|k| k.to_ascii_lowercase())
            .collect();
        let page_host = url.as_ref().map(|u| u.0.to_string());
        let referrer_host = page
            .referrer
            .as_ref()
            .map(|r| split_url(&r.0).0.to_string())
            .filter(|h| !h.is_empty() && Some(h) != page_host.as_ref());
        Origin {
            source,
            medium,
            campaign,
            click_ids,
            referrer_host,
        }
    }

    /// The amount of an order event: `properties.revenue`, else `total`, else `value`.
    pub fn amount(&self) -> Option<f64> {
        #[derive(Deserialize)]
        struct P<'a> {
            #[serde(borrow, default)]
            revenue: Option<&'a RawValue>,
            #[serde(borrow, default)]
            total: Option<&'a RawValue>,
            #[serde(borrow, default)]
            value: Option<&'a RawValue>,
        }
        let p: P<'_> = serde_json::from_str(self.properties?.get()).ok()?;
        [p.revenue, p.total, p.value]
            .into_iter()
            .flatten()
            .find_map(number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use niyet_identity::Rules;

    #[test]
    fn the_origin_of_an_event() {
        let raw = br#"{"type":"page","timestamp":"2026-01-02T03:04:05.678Z","source":"web","context":{"page":{"url":"https://www.shop.example/p?gclid=abc&utm_source=x","referrer":"https://www.google.com.tr/search?q=a"}},"properties":{}}"#;
        let o = parse(raw).unwrap().origin();
        assert_eq!(o.click_ids, vec!["gclid".to_string()]);
        assert_eq!(o.source.as_deref(), Some("x"));
        assert_eq!(o.referrer_host.as_deref(), Some("google.com.tr"));
        let raw = br#"{"type":"track","event":"x","timestamp":"2026-01-02T03:04:05.678Z","source":"web","context":{"campaign":{"source":"newsletter","medium":"email","name":"kasim"},"page":{"url":"https://shop.example/a","referrer":"https://shop.example/b"}}}"#;
        let o = parse(raw).unwrap().origin();
        assert_eq!(
            (o.medium.as_deref(), o.campaign.as_deref()),
            (Some("email"), Some("kasim"))
        );
        assert_eq!(
            o.referrer_host, None,
            "a referrer on the same site is no touch"
        );
        let raw = br#"{"type":"page","timestamp":"2026-01-02T03:04:05.678Z","source":"web","properties":{"url":"/x"}}"#;
        assert!(!parse(raw).unwrap().origin().is_touch());
    }

    #[test]
    fn reads_a_stored_track_event_and_its_identifiers() {
        let raw = br#"{"type":"track","messageId":"m1","userId":"u1","anonymousId":"a1","timestamp":"2026-01-02T03:04:05.678Z","receivedAt":"2026-01-02T03:04:06.000Z","source":"web","context":{"traits":{"email":" Ayse@Example.com ","phone":"0532 123 45 67"},"device":{"id":"d1","type":"ios"},"externalIds":[{"id":"C-9","type":"crm_id","collection":"users"}],"userAgent":"Mozilla/5.0 (iPhone)"},"event":"Order Completed","properties":{"total":"149.90","currency":"TRY"}}"#;
        let v = parse(raw).unwrap();
        assert_eq!(v.kind, Kind::Track);
        assert_eq!(v.name.as_deref(), Some("Order Completed"));
        assert_eq!(v.time_ms, 1_767_323_045_678);
        assert_eq!(v.amount(), Some(149.9));
        assert_eq!(v.device().as_deref(), Some("ios"));
        assert_eq!(v.channel(), "web");
        let mut g = Graph::new(Rules::default());
        let (ids, explicit) = v.identifiers(&IdentityConfig::default(), &mut g);
        assert!(!explicit);
        let crm = g.kinds().get("crm_id").unwrap();
        assert_eq!(
            ids,
            vec![
                Ident::new(USER_ID, "u1"),
                Ident::new(ANONYMOUS_ID, "a1"),
                Ident::new(EMAIL, "ayse@example.com"),
                Ident::new(PHONE, "+905321234567"),
                Ident::new(DEVICE_ID, "d1"),
                Ident::new(crm, "C-9"),
            ]
        );
    }

    #[test]
    fn numeric_ids_and_group_traits() {
        let raw = br#"{"type":"group","userId":42,"groupId":7,"timestamp":"2026-01-02T03:04:05Z","source":"s","traits":{"email":"acme@example.com","name":"Acme"}}"#;
        let v = parse(raw).unwrap();
        assert_eq!(v.user_id.as_deref(), Some("42"));
        assert_eq!(v.group_id.as_deref(), Some("7"));
        let mut g = Graph::new(Rules::default());
        let (ids, _) = v.identifiers(&IdentityConfig::default(), &mut g);
        // A group's e-mail is the account's, not the person's.
        assert_eq!(ids, vec![Ident::new(USER_ID, "42")]);
    }

    #[test]
    fn alias_previous_id_resolves_to_a_known_user_id() {
        let mut g = Graph::new(Rules::default());
        g.resolve(&[Ident::new(USER_ID, "old")], 0, 0, false);
        let raw = br#"{"type":"alias","userId":"new","previousId":"old","timestamp":"2026-01-02T03:04:05Z","source":"s"}"#;
        let v = parse(raw).unwrap();
        let (ids, explicit) = v.identifiers(&IdentityConfig::default(), &mut g);
        assert!(explicit);
        assert_eq!(
            ids,
            vec![Ident::new(USER_ID, "new"), Ident::new(USER_ID, "old")]
        );
        let raw = br#"{"type":"alias","userId":"new","previousId":"anon-1","timestamp":"2026-01-02T03:04:05Z","source":"s"}"#;
        let v = parse(raw).unwrap();
        let (ids, _) = v.identifiers(&IdentityConfig::default(), &mut g);
        assert_eq!(ids[1], Ident::new(ANONYMOUS_ID, "anon-1"));
    }
}
