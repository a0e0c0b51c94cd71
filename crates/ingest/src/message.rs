//! Segment Tracking API messages: envelope parsing, validation and normalisation.
//!
//! A message is read one level deep: known fields are checked and rewritten, everything
//! else (properties, traits, context, custom top-level fields) is copied byte for byte.
//! The stored form always has `type`, `messageId`, `timestamp` (UTC, milliseconds, `Z`),
//! `receivedAt` and `source`, and never the `writeKey`.
//!
//! Time follows Segment: an explicit `timestamp` is kept; otherwise `originalTimestamp`
//! is corrected for the client's clock skew, `timestamp = receivedAt − (sentAt −
//! originalTimestamp)`, when `sentAt` (on the message or the batch) is known, and used
//! as is when not; with neither, `timestamp = receivedAt`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use niyet_model::time::{parse_timestamp, write_rfc3339_millis};

use crate::plan::{PlanAction, PlanVerdict, TrackingPlan};
use crate::{ErrorKind, IngestError};

/// Largest accepted message, like Segment's.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Quarantined raw messages are kept up to this size.
const MAX_QUARANTINED_RAW: usize = 64 * 1024;

/// The six message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `identify`
    Identify,
    /// `track`
    Track,
    /// `page`
    Page,
    /// `screen`
    Screen,
    /// `group`
    Group,
    /// `alias`
    Alias,
}

impl MessageType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Identify => "identify",
            MessageType::Track => "track",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "identify" => MessageType::Identify,
            "track" => MessageType::Track,
            "page" => MessageType::Page,
            "screen" => MessageType::Screen,
            "group" => MessageType::Group,
            "alias" => MessageType::Alias,
            _ => return None,
        })
    }
}

/// Which HTTP endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/batch` (also `/v1/import`): many messages, each with its own `type`.
    Batch,
    /// One of `/v1/track`, `/v1/identify`, …: one message of that type.
    Single(MessageType),
}

/// What surrounds the messages of a request.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// `writeKey` from the body, if any.
    pub write_key: Option<String>,
    sent_at_ms: Option<i64>,
    context: Option<&'a RawValue>,
    messages: Vec<Msg<'a>>,
    /// The request body (for single-message endpoints: the message itself).
    source_text: &'a str,
    /// Raw text of each batch item, computed only when an invalid one must be quarantined.
    raw_items: std::cell::OnceCell<Vec<&'a RawValue>>,
    forced: Option<MessageType>,
}

/// A batch item, read one level deep.
#[derive(Debug)]
enum Msg<'a> {
    Object(Fields<'a>),
    Broken(String),
}

impl<'a> Envelope<'a> {
    /// How many messages the request holds.
    pub fn len(&self) -> usize {
        self.messages.len()
    }
    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The message as received (for quarantine).
    fn raw_of(&self, index: usize) -> &'a str {
        if self.forced.is_some() {
            return self.source_text;
        }
        self.raw_items
            .get_or_init(|| {
                serde_json::from_str::<Fields<'a>>(self.source_text)
                    .ok()
                    .and_then(|f| f.get("batch"))
                    .and_then(|b| serde_json::from_str(b.get()).ok())
                    .unwrap_or_default()
            })
            .get(index)
            .map_or("", |r| r.get())
    }
}

/// Reads batch items one by one, so that one broken item does not spoil the others.
fn parse_items(batch: &RawValue) -> Result<(Vec<Msg<'_>>, Option<Vec<&RawValue>>), IngestError> {
    let items: Vec<&RawValue> = serde_json::from_str(batch.get()).map_err(|e| json_error(&e))?;
    let msgs = items
        .iter()
        .map(|raw| {
            if !raw.get().starts_with('{') {
                return Msg::Broken(format!(
                    "message: expected a JSON object, got {}",
                    json_kind(raw.get())
                ));
            }
            match serde_json::from_str::<Fields<'_>>(raw.get()) {
                Ok(f) => Msg::Object(f),
                Err(e) => Msg::Broken(format!("message: {e}")),
            }
        })
        .collect();
    Ok((msgs, Some(items)))
}

/// What normalisation needs from outside.
#[derive(Debug, Clone, Copy)]
pub struct NormalizeCtx<'a> {
    /// Receive time, ms since the epoch.
    pub received_ms: i64,
    /// Name of the authenticated source.
    pub source: &'a str,
    /// The source's tracking plan, if it has one.
    pub plan: Option<&'a TrackingPlan>,
    /// A number unique to this request within the process, for generated message ids.
    pub request_seq: u64,
}

/// A valid message, ready for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The stored JSON.
    pub payload: Vec<u8>,
    /// Idempotency key from (source, messageId); 0 when the id was generated.
    pub dedup_key: u128,
    /// The message id (given or generated).
    pub message_id: String,
    /// The type.
    pub kind: MessageType,
    /// Event time, ms since the epoch.
    pub timestamp_ms: i64,
}

/// What happens to an invalid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Kept in quarantine with its reason, replayable.
    Quarantine,
    /// Refused (a tracking plan says so); reported in the response only.
    Reject,
}

/// An invalid message and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// Position in the request's batch.
    pub index: usize,
    /// Stable machine-readable reason.
    pub code: &'static str,
    /// The field and what was wrong with it.
    pub reason: String,
    /// The message as received (cut at 64 KiB).
    pub raw: Vec<u8>,
    /// Quarantine or reject.
    pub disposition: Disposition,
}

/// The fate of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Goes to the log.
    Valid(Normalized),
    /// Goes to quarantine or is rejected.
    Invalid(Invalid),
}

fn json_error(e: &serde_json::Error) -> IngestError {
    IngestError::new(
        ErrorKind::BadJson,
        format!(
            "invalid JSON at line {}, column {}: {}",
            e.line(),
            e.column(),
            strip_position(&e.to_string())
        ),
    )
}

fn strip_position(s: &str) -> &str {
    s.split(" at line ").next().unwrap_or(s)
}

/// Reads the envelope of a request body (already decoded by [`crate::body::decode`]).
pub fn parse_envelope(endpoint: Endpoint, body: &[u8]) -> Result<Envelope<'_>, IngestError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        IngestError::new(
            ErrorKind::BadJson,
            format!("body is not UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    if !text.trim_start().starts_with('{') {
        serde_json::from_str::<&RawValue>(text).map_err(|e| json_error(&e))?;
        return Err(IngestError::new(
            ErrorKind::BadRequest,
            "body must be a JSON object",
        ));
    }
    // Fast path for batches: one pass from the bytes to the fields of every message.
    let mut fast_messages = None;
    let fields: Fields<'_> = match endpoint {
        Endpoint::Batch => match serde_json::from_str::<FastBatch<'_>>(text) {
            Ok(fb) => {
                fast_messages = fb.batch;
                fb.rest
            }
            Err(_) => serde_json::from_str(text).map_err(|e| json_error(&e))?,
        },
        Endpoint::Single(_) => serde_json::from_str(text).map_err(|e| json_error(&e))?,
    };
    let write_key = match fields.get("writeKey") {
        Some(v) => match string_or_null(v) {
            Ok(k) => k,
            Err(_) => {
                return Err(IngestError::new(
                    ErrorKind::BadRequest,
                    "writeKey: expected a string",
                ))
            }
        },
        None => None,
    };
    let sent_at_ms = match fields.get("sentAt") {
        Some(v) => {
            time_field(v, "sentAt").map_err(|(_, m)| IngestError::new(ErrorKind::BadRequest, m))?
        }
        None => None,
    };
    match endpoint {
        Endpoint::Batch => {
            let (messages, raw) = match fast_messages {
                Some(m) => (m.into_iter().map(Msg::Object).collect(), None),
                None => {
                    let Some(batch) = fields.get("batch") else {
                        return Err(IngestError::new(
                            ErrorKind::BadRequest,
                            "batch: missing; expected {\"batch\": [messages…]}",
                        ));
                    };
                    if !batch.get().starts_with('[') {
                        return Err(IngestError::new(
                            ErrorKind::BadRequest,
                            "batch: expected an array of messages",
                        ));
                    }
                    parse_items(batch)?
                }
            };
            if messages.is_empty() {
                return Err(IngestError::new(
                    ErrorKind::EmptyBatch,
                    "batch: the array is empty; send at least one message",
                ));
            }
            let context = fields.get("context").filter(|c| c.get().starts_with('{'));
            let raw_items = std::cell::OnceCell::new();
            if let Some(r) = raw {
                let _ = raw_items.set(r);
            }
            Ok(Envelope {
                write_key,
                sent_at_ms,
                context,
                messages,
                source_text: text,
                raw_items,
                forced: None,
            })
        }
        Endpoint::Single(t) => Ok(Envelope {
            write_key,
            sent_at_ms,
            context: None,
            messages: vec![Msg::Object(fields)],
            source_text: text,
            raw_items: std::cell::OnceCell::new(),
            forced: Some(t),
        }),
    }
}

impl Envelope<'_> {
    /// Validates and normalises every message.
    pub fn normalize_all(&self, ctx: &NormalizeCtx<'_>) -> Vec<Outcome> {
        // Times shared by every message of the request are formatted once.
        let mut shared = String::with_capacity(64);
        shared.push_str(",\"receivedAt\":\"");
        write_rfc3339_millis(&mut shared, ctx.received_ms);
        shared.push('"');
        let received_len = shared.len();
        if let Some(sent) = self.sent_at_ms {
            shared.push_str(",\"sentAt\":\"");
            write_rfc3339_millis(&mut shared, sent);
            shared.push('"');
        }
        let (received, batch_sent) = shared.split_at(received_len);
        let times = SharedTimes {
            received,
            batch_sent,
        };
        self.messages
            .iter()
            .enumerate()
            .map(|(i, msg)| match self.normalize_one(i, msg, ctx, &times) {
                Ok(n) => Outcome::Valid(n),
                Err(inv) => Outcome::Invalid(inv),
            })
            .collect()
    }

    fn normalize_one(
        &self,
        index: usize,
        msg: &Msg<'_>,
        ctx: &NormalizeCtx<'_>,
        times: &SharedTimes<'_>,
    ) -> Result<Normalized, Invalid> {
        let invalid = |code: &'static str, reason: String| {
            let raw = self.raw_of(index);
            Invalid {
                index,
                code,
                reason,
                raw: raw.as_bytes()[..raw.len().min(MAX_QUARANTINED_RAW)].to_vec(),
                disposition: Disposition::Quarantine,
            }
        };
        let fields = match msg {
            Msg::Object(f) => f,
            Msg::Broken(why) => return Err(invalid("invalid_message", why.clone())),
        };
        let size = fields.compact_len();
        if size > MAX_MESSAGE_BYTES {
            return Err(invalid(
                "message_too_large",
                format!("message is {size} bytes; the limit is {MAX_MESSAGE_BYTES}"),
            ));
        }
        let check = |r: Result<(), (&'static str, String)>| r.map_err(|(c, m)| invalid(c, m));

        let kind = match self.forced {
            Some(t) => t,
            None => match fields.get("type") {
                None => return Err(invalid("missing_field", "type: missing".into())),
                Some(v) => {
                    let s = string_or_null(v).ok().flatten().ok_or_else(|| {
                        invalid("invalid_field", "type: expected a string".into())
                    })?;
                    MessageType::parse(&s).ok_or_else(|| {
                        invalid(
                            "invalid_field",
                            format!("type: unknown message type '{s}' (expected identify, track, page, screen, group or alias)"),
                        )
                    })?
                }
            },
        };
        let user_id = check_id(fields, "userId").map_err(|(c, m)| invalid(c, m))?;
        let anonymous_id = check_id(fields, "anonymousId").map_err(|(c, m)| invalid(c, m))?;
        if user_id.is_none() && anonymous_id.is_none() {
            return Err(invalid(
                "missing_identity",
                "userId/anonymousId: a message needs a userId or an anonymousId".into(),
            ));
        }
        let given_id = check_id(fields, "messageId").map_err(|(c, m)| invalid(c, m))?;
        for obj in ["properties", "traits", "context", "integrations"] {
            if let Some(v) = fields.get(obj) {
                let t = v.get();
                if !(t.starts_with('{') || t == "null") {
                    return Err(invalid(
                        "invalid_field",
                        format!("{obj}: expected an object, got {}", json_kind(t)),
                    ));
                }
            }
        }
        let mut event_name = None;
        match kind {
            MessageType::Track => {
                let e = fields
                    .get("event")
                    .map(string_or_null)
                    .transpose()
                    .map_err(|_| invalid("invalid_field", "event: expected a string".into()))?
                    .flatten()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| {
                        invalid(
                            "missing_field",
                            "event: a track message needs an event name".into(),
                        )
                    })?;
                event_name = Some(e);
            }
            MessageType::Page | MessageType::Screen => {
                check(fields.get("name").map_or(Ok(()), |v| {
                    string_or_null(v)
                        .map(|_| ())
                        .map_err(|_| ("invalid_field", "name: expected a string".to_string()))
                }))?;
            }
            MessageType::Group => {
                if check_id(fields, "groupId")
                    .map_err(|(c, m)| invalid(c, m))?
                    .is_none()
                {
                    return Err(invalid(
                        "missing_field",
                        "groupId: a group message needs a groupId".into(),
                    ));
                }
            }
            MessageType::Alias => {
                if check_id(fields, "previousId")
                    .map_err(|(c, m)| invalid(c, m))?
                    .or(check_id(fields, "previousUserId").map_err(|(c, m)| invalid(c, m))?)
                    .is_none()
                {
                    return Err(invalid(
                        "missing_field",
                        "previousId: an alias message needs a previousId (or previousUserId)"
                            .into(),
                    ));
                }
                if user_id.is_none() {
                    return Err(invalid(
                        "missing_field",
                        "userId: an alias message needs the new userId".into(),
                    ));
                }
            }
            MessageType::Identify => {}
        }
        let ts = fields
            .get("timestamp")
            .map(|v| time_field(v, "timestamp"))
            .transpose()
            .map_err(|(c, m)| invalid(c, m))?
            .flatten();
        let original = fields
            .get("originalTimestamp")
            .map(|v| time_field(v, "originalTimestamp"))
            .transpose()
            .map_err(|(c, m)| invalid(c, m))?
            .flatten();
        let sent = fields
            .get("sentAt")
            .map(|v| time_field(v, "sentAt"))
            .transpose()
            .map_err(|(c, m)| invalid(c, m))?
            .flatten()
            .or(self.sent_at_ms);
        let timestamp_ms = event_time(ctx.received_ms, ts, original, sent);

        if let (Some(plan), MessageType::Track, Some(name)) =
            (ctx.plan, kind, event_name.as_deref())
        {
            let props = fields.get("properties").map(|p| p.get());
            match plan.check(name, props) {
                PlanVerdict::Pass => {}
                PlanVerdict::Fail {
                    code,
                    reason,
                    action,
                } => match action {
                    PlanAction::Accept => {}
                    PlanAction::Quarantine => return Err(invalid(code, reason)),
                    PlanAction::Reject => {
                        let mut i = invalid(code, reason);
                        i.disposition = Disposition::Reject;
                        return Err(i);
                    }
                },
            }
        }

        let (message_id, dedup_key) = match given_id {
            Some(id) => {
                let key = xxhash_rust::xxh3::xxh3_128(
                    &[ctx.source.as_bytes(), &[0], id.as_bytes()].concat(),
                )
                .max(1);
                (id.into_owned(), key)
            }
            None => {
                let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(
                    ctx.request_seq ^ ((index as u64) << 40) ^ (ctx.received_ms as u64),
                );
                for (k, v) in fields.entries() {
                    hasher.update(k.as_bytes());
                    hasher.update(v.get().as_bytes());
                }
                let h = hasher.digest128();
                (format!("niyet-{h:032x}"), 0)
            }
        };

        let mut out = Vec::with_capacity(size + 160);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"messageId\":");
        write_json_str(&mut out, &message_id);
        if let Some(u) = &user_id {
            out.extend_from_slice(b",\"userId\":");
            write_json_str(&mut out, u);
        }
        if let Some(a) = &anonymous_id {
            out.extend_from_slice(b",\"anonymousId\":");
            write_json_str(&mut out, a);
        }
        let mut stamp = String::with_capacity(40);
        stamp.push_str(",\"timestamp\":\"");
        write_rfc3339_millis(&mut stamp, timestamp_ms);
        stamp.push('"');
        out.extend_from_slice(stamp.as_bytes());
        out.extend_from_slice(times.received.as_bytes());
        out.extend_from_slice(b",\"source\":");
        write_json_str(&mut out, ctx.source);
        if self.context.is_some() && fields.get("context").is_none() {
            if let Some(c) = self.context {
                out.extend_from_slice(b",\"context\":");
                out.extend_from_slice(c.get().as_bytes());
            }
        }
        if fields.get("sentAt").is_none() {
            out.extend_from_slice(times.batch_sent.as_bytes());
        }
        for (k, v) in fields.entries() {
            if matches!(
                k,
                "type"
                    | "messageId"
                    | "userId"
                    | "anonymousId"
                    | "timestamp"
                    | "receivedAt"
                    | "source"
                    | "writeKey"
            ) {
                continue;
            }
            out.push(b',');
            write_json_str(&mut out, k);
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        Ok(Normalized {
            payload: out,
            dedup_key,
            message_id,
            kind,
            timestamp_ms,
        })
    }
}

/// Pre-formatted `,"receivedAt":"…"` and (when the batch has one) `,"sentAt":"…"`.
struct SharedTimes<'a> {
    received: &'a str,
    batch_sent: &'a str,
}

/// Event time from the message's clocks (see the module docs).
pub fn event_time(
    received_ms: i64,
    timestamp: Option<i64>,
    original: Option<i64>,
    sent: Option<i64>,
) -> i64 {
    match (timestamp, original, sent) {
        (Some(t), _, _) => t,
        (None, Some(o), Some(s)) => received_ms.saturating_sub(s.saturating_sub(o)),
        (None, Some(o), None) => o,
        (None, None, _) => received_ms,
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_kind(t: &str) -> &'static str {
    match t.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// A string or number id (numbers are kept as their text), or none for null/empty.
fn check_id<'a>(
    fields: &Fields<'a>,
    name: &'static str,
) -> Result<Option<Cow<'a, str>>, (&'static str, String)> {
    let Some(v) = fields.get(name) else {
        return Ok(None);
    };
    let t = v.get();
    match t.as_bytes().first() {
        Some(b'"') => {
            let s: Cow<'a, str> = match serde_json::from_str::<&'a str>(t) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => Cow::Owned(
                    serde_json::from_str::<String>(t)
                        .map_err(|e| ("invalid_field", format!("{name}: {e}")))?,
                ),
            };
            if s.trim().is_empty() {
                Ok(None)
            } else if s.len() > 1024 {
                Err(("invalid_field", format!("{name}: longer than 1024 bytes")))
            } else {
                Ok(Some(s))
            }
        }
        Some(b'n') => Ok(None),
        Some(b'-' | b'0'..=b'9') => Ok(Some(Cow::Owned(t.to_string()))),
        _ => Err((
            "invalid_field",
            format!("{name}: expected a string or number, got {}", json_kind(t)),
        )),
    }
}

fn string_or_null(v: &RawValue) -> Result<Option<String>, ()> {
    match v.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(v.get())
            .map(Some)
            .map_err(|_| ()),
        Some(b'n') => Ok(None),
        _ => Err(()),
    }
}

fn time_field(v: &RawValue, name: &'static str) -> Result<Option<i64>, (&'static str, String)> {
    match string_or_null(v) {
        Ok(None) => Ok(None),
        Ok(Some(s)) => parse_timestamp(&s).map(Some).map_err(|e| {
            (
                "invalid_timestamp",
                format!("{name}: '{s}' is not an ISO-8601 timestamp: {e}"),
            )
        }),
        Err(()) => Err((
            "invalid_timestamp",
            format!(
                "{name}: expected an ISO-8601 string, got {}",
                json_kind(v.get())
            ),
        )),
    }
}

/// The top-level fields of a JSON object, values kept raw, in order.
#[derive(Debug)]
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// The last value of `name` (later duplicates win, as in JavaScript).
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
    /// Length of the object written compactly (how the 32 KB message limit is measured).
    fn compact_len(&self) -> usize {
        2 + self
            .0
            .iter()
            .map(|(k, v)| k.len() + 4 + v.get().len())
            .sum::<usize>()
            .saturating_sub(1)
    }

    fn entries(&self) -> impl Iterator<Item = (&str, &'a RawValue)> + '_ {
        self.0.iter().enumerate().filter_map(|(i, (k, v))| {
            // Keep only the last occurrence of a duplicated key.
            if self.0[i + 1..].iter().any(|(k2, _)| k2 == k) {
                None
            } else {
                Some((k.as_ref(), *v))
            }
        })
    }
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Fields<'de>, A::Error> {
                let mut v = Vec::with_capacity(16);
                while let Some(k) = m.next_key::<Key<'de>>()? {
                    let val: &'de RawValue = m.next_value()?;
                    v.push((k.0, val));
                }
                Ok(Fields(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A batch body read in one pass: `batch` straight into the fields of each message,
/// every other top-level field kept raw. Fails if any item is not an object; the caller
/// then takes the item-by-item path.
struct FastBatch<'a> {
    batch: Option<Vec<Fields<'a>>>,
    rest: Fields<'a>,
}

impl<'de> Deserialize<'de> for FastBatch<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FastBatch<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a batch object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<FastBatch<'de>, A::Error> {
                let mut batch = None;
                let mut rest = Vec::with_capacity(4);
                while let Some(k) = m.next_key::<Key<'de>>()? {
                    if k.0 == "batch" {
                        batch = Some(m.next_value::<Vec<Fields<'de>>>()?);
                    } else {
                        let v: &'de RawValue = m.next_value()?;
                        rest.push((k.0, v));
                    }
                }
                Ok(FastBatch {
                    batch,
                    rest: Fields(rest),
                })
            }
        }
        d.deserialize_map(V)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests;
