//! Hostile traffic: while a well-formed client sends 2,000 events, other threads send
//! thousands of malformed and adversarial requests (huge numbers, deep nesting, invalid
//! UTF-8, truncated JSON, wrong types, gzip bombs, oversized bodies, lying
//! `Content-Length`, random and null bytes, very long headers) and hold slowloris
//! connections open. Every adversarial request must get a 4xx with a JSON `code` and
//! `message` (never a 5xx), slow clients must be cut off shortly after
//! `limits.header_timeout_ms` / `limits.body_timeout_ms`, the server must stay up, and
//! every acknowledged event must be in the log exactly once.
//!
//! Adversarial requests are written as raw bytes over plain TCP (`Connection: close`), so
//! that bodies, headers and framing can be anything; the well-formed client is reqwest.
//!
//! Answers from the HTTP layer itself (hyper refusing broken framing: bad or duplicate
//! `Content-Length`, a null byte in a header, too many headers, bytes that are not HTTP)
//! come before any handler runs and have no JSON body; those cases (`Expect::Protocol`)
//! must get a 4xx or a closed connection, never a 5xx.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::common::*;

const HEADER_TIMEOUT_MS: u64 = 1000;
const BODY_TIMEOUT_MS: u64 = 2000;
/// How long after the limit a slow connection may still be open.
const CUT_OFF_SLACK: Duration = Duration::from_secs(3);
/// The server reads oversized bodies up to this size to answer 413 (DRAIN_MAX in
/// crates/server/src/ingest.rs); beyond it the connection may be reset instead.
const DRAIN_MAX: usize = 8 * 1024 * 1024;

const GOOD_EVENTS: usize = 2000;
const GOOD_BATCH: usize = 25;
const ADVERSARY_THREADS: usize = 4;
const REQUESTS_PER_ADVERSARY: usize = 1500;

const CONFIG: &str = r#"
[limits]
header_timeout_ms = 1000
body_timeout_ms = 2000

[[sources]]
name = "web"
write_key = "test-write-key"
"#;

/// The same, for a server that does not know the timeout keys yet.
const CONFIG_WITHOUT_TIMEOUTS: &str = r#"
[[sources]]
name = "web"
write_key = "test-write-key"
"#;

/// What an adversarial request must get.
#[derive(Clone, Debug)]
enum Expect {
    /// A 4xx whose body is JSON with a non-empty `code` and `message`.
    Refused,
    /// Hostile but valid: 200 (then this message id must be in the log once) or a
    /// refusal as above.
    MaybeAccepted(String),
    /// Broken HTTP framing, answered by the HTTP layer before any handler runs: a 4xx
    /// (whatever the body) or a closed connection; never a 5xx.
    Protocol,
    /// Larger than the server drains: a refusal as above, or a reset connection.
    RefusedOrReset,
}

#[derive(Clone)]
struct Case {
    name: String,
    request: Vec<u8>,
    /// Close our sending side after the request (for a body shorter than announced).
    half_close: bool,
    expect: Expect,
}

/// Deterministic xorshift: the same adversarial traffic in every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn auth() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
}

/// A request builder: defaults (Host, write key, JSON content type, Content-Length,
/// `Connection: close`) unless replaced.
struct Req {
    method: &'static str,
    path: String,
    auth: bool,
    content_type: Option<Vec<u8>>,
    content_length: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn post(path: &str, body: impl Into<Vec<u8>>) -> Self {
        Req {
            method: "POST",
            path: path.to_string(),
            auth: true,
            content_type: Some(b"application/json".to_vec()),
            content_length: None,
            headers: Vec::new(),
            body: body.into(),
        }
    }
    fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    fn content_type(mut self, v: Option<&[u8]>) -> Self {
        self.content_type = v.map(<[u8]>::to_vec);
        self
    }
    fn no_auth(mut self) -> Self {
        self.auth = false;
        self
    }
    fn content_length(mut self, v: &str) -> Self {
        self.content_length = Some(v.to_string());
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 512);
        out.extend_from_slice(
            format!(
                "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                self.method, self.path
            )
            .as_bytes(),
        );
        if self.auth {
            out.extend_from_slice(format!("Authorization: Basic {}\r\n", auth()).as_bytes());
        }
        if let Some(ct) = &self.content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(ct);
            out.extend_from_slice(b"\r\n");
        }
        let chunked = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
        match &self.content_length {
            Some(cl) => out.extend_from_slice(format!("Content-Length: {cl}\r\n").as_bytes()),
            None if !chunked => {
                out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes())
            }
            None => {}
        }
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
    fn case(&self, name: &str, expect: Expect) -> Case {
        Case {
            name: name.to_string(),
            request: self.bytes(),
            half_close: false,
            expect,
        }
    }
}

fn refused(name: &str, r: Req) -> Case {
    r.case(name, Expect::Refused)
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk.max(1) * 8 + 8);
    for c in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).expect("zlib");
    e.finish().expect("zlib")
}

/// `mib` MiB of zeros as concatenated gzip members of 1 MiB each (the server reads
/// multi-member gzip): about 1 KB per MiB.
fn gzip_bomb(mib: usize) -> Vec<u8> {
    let member = gzip(&vec![0u8; 1 << 20]);
    member.repeat(mib)
}

/// One deflate stream of `mib` MiB of zeros.
fn zlib_bomb(mib: usize) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        e.write_all(&zeros).expect("zlib");
    }
    e.finish().expect("zlib")
}

fn valid_batch(prefix: &str, n: usize) -> Vec<u8> {
    json!({"batch": (0..n).map(|i| json!({
        "type": "track", "userId": format!("{prefix}-user"), "event": "Truncated",
        "messageId": format!("{prefix}-{i}"), "properties": {"i": i, "tags": ["a", "b"]}
    })).collect::<Vec<_>>()})
    .to_string()
    .into_bytes()
}

fn track(extra: &str) -> Vec<u8> {
    format!(r#"{{"userId":"hostile-user","event":"Hostile"{extra}}}"#).into_bytes()
}

/// The fixed catalogue of adversarial requests (the random ones are made per request).
fn catalogue() -> Vec<Case> {
    let batch = "/v1/batch";
    let tr = "/v1/track";
    let mut c = Vec::new();

    // Huge and malformed numbers where a string or a timestamp is required, and number
    // syntax JSON does not have.
    for (name, body) in [
        (
            "event is 1e999999",
            track_raw(r#"{"userId":"u","event":1e999999}"#),
        ),
        (
            "event is a 20-digit integer",
            track_raw(r#"{"userId":"u","event":12345678901234567890}"#),
        ),
        ("timestamp is 1e999999", track(r#","timestamp":1e999999"#)),
        ("timestamp is -0", track(r#","timestamp":-0"#)),
        (
            "timestamp is the text 1e999999",
            track(r#","timestamp":"1e999999""#),
        ),
        ("timestamp is NaN text", track(r#","timestamp":"NaN""#)),
        ("userId is NaN", track_raw(r#"{"userId":NaN,"event":"E"}"#)),
        ("property is NaN", track(r#","properties":{"x":NaN}"#)),
        (
            "property is Infinity",
            track(r#","properties":{"x":Infinity}"#),
        ),
        (
            "property is -Infinity",
            track(r#","properties":{"x":-Infinity}"#),
        ),
        (
            "number with a plus sign",
            track(r#","properties":{"x":+1}"#),
        ),
        (
            "number with a leading zero",
            track(r#","properties":{"x":01}"#),
        ),
        ("number ending in a dot", track(r#","properties":{"x":1.}"#)),
        (
            "number starting with a dot",
            track(r#","properties":{"x":.5}"#),
        ),
        ("hex number", track(r#","properties":{"x":0x10}"#)),
        (
            "exponent without digits",
            track(r#","properties":{"x":1e}"#),
        ),
        ("double minus", track(r#","properties":{"x":--1}"#)),
    ] {
        c.push(refused(name, Req::post(tr, body)));
    }
    c.push(refused(
        "batch sentAt is -0",
        Req::post(
            batch,
            r#"{"sentAt":-0,"batch":[{"type":"track","userId":"u","event":"E"}]}"#,
        ),
    ));
    c.push(refused(
        "batch sentAt is 1e999999",
        Req::post(
            batch,
            r#"{"sentAt":1e999999,"batch":[{"type":"track","userId":"u","event":"E"}]}"#,
        ),
    ));

    // Deep nesting, 10,000 levels.
    let n = 10_000;
    for (name, body) in [
        ("10,000 [", "[".repeat(n)),
        ("10,000 [ and ]", "[".repeat(n) + &"]".repeat(n)),
        ("10,000 {\"a\":", "{\"a\":".repeat(n) + "1" + &"}".repeat(n)),
        (
            "10,000 levels in properties",
            format!(
                r#"{{"batch":[{{"type":"track","userId":"u","event":"E","properties":{{"p":{}1{}}}}}]}}"#,
                "[".repeat(n),
                "]".repeat(n)
            ),
        ),
        (
            "10,000 alternating [{",
            format!(
                r#"{{"batch":[{{"type":"track","userId":"u","event":"E","properties":{}}}]}}"#,
                "{\"a\":[".repeat(n / 2) + &"]}".repeat(n / 2)
            ),
        ),
        (
            "65 levels in properties",
            String::from_utf8_lossy(&track(&format!(
                r#","properties":{{"p":{}{}}}"#,
                "[".repeat(64),
                "]".repeat(64)
            )))
            .into_owned(),
        ),
    ] {
        c.push(refused(name, Req::post(batch, body)));
    }

    // Invalid UTF-8 inside strings (keys and values), at the end, overlong, surrogates.
    for (name, bytes) in [
        ("\\xff\\xfe in userId", &b"\xff\xfe"[..]),
        ("\\xc3\\x28", &b"\xc3\x28"[..]),
        ("overlong /", &b"\xc0\xaf"[..]),
        ("encoded surrogate", &b"\xed\xa0\x80"[..]),
        ("cut multi-byte sequence", &b"\xe2\x82"[..]),
        ("lone continuation bytes", &b"\x80\x80\x80"[..]),
        ("5-byte sequence", &b"\xf8\x88\x80\x80\x80"[..]),
    ] {
        let mut in_value = br#"{"batch":[{"type":"track","userId":"u"#.to_vec();
        in_value.extend_from_slice(bytes);
        in_value.extend_from_slice(br#"","event":"E"}]}"#);
        c.push(refused(
            &format!("invalid UTF-8 ({name}) in a value"),
            Req::post(batch, in_value),
        ));
        let mut in_key = br#"{"userId":"u","event":"E","properties":{"k"#.to_vec();
        in_key.extend_from_slice(bytes);
        in_key.extend_from_slice(br#"":1}}"#);
        c.push(refused(
            &format!("invalid UTF-8 ({name}) in a key"),
            Req::post(tr, in_key),
        ));
    }
    c.push(refused(
        "lone surrogate escape in userId",
        Req::post(tr, r#"{"userId":"\ud800","event":"E"}"#),
    ));
    c.push(refused(
        "lone surrogate escape in event",
        Req::post(tr, r#"{"userId":"u","event":"\udc00x"}"#),
    ));

    // Wrong types and shapes.
    for (name, path, body) in [
        ("batch is a string", batch, r#"{"batch":"x"}"#),
        ("batch is an object", batch, r#"{"batch":{}}"#),
        ("batch is null", batch, r#"{"batch":null}"#),
        ("batch is empty", batch, r#"{"batch":[]}"#),
        ("no batch", batch, r#"{"messages":[]}"#),
        (
            "batch of scalars",
            batch,
            r#"{"batch":[1,"a",null,true,[]]}"#,
        ),
        (
            "type is a number",
            batch,
            r#"{"batch":[{"type":5,"userId":"u","event":"E"}]}"#,
        ),
        (
            "type is unknown",
            batch,
            r#"{"batch":[{"type":"purchase","userId":"u"}]}"#,
        ),
        (
            "no type",
            batch,
            r#"{"batch":[{"userId":"u","event":"E"}]}"#,
        ),
        (
            "userId is an object",
            tr,
            r#"{"userId":{"a":1},"event":"E"}"#,
        ),
        ("userId is true", tr, r#"{"userId":true,"event":"E"}"#),
        (
            "anonymousId is an array",
            tr,
            r#"{"anonymousId":["a"],"event":"E"}"#,
        ),
        ("no identity", tr, r#"{"event":"E"}"#),
        (
            "blank identity",
            tr,
            r#"{"userId":"  ","anonymousId":null,"event":"E"}"#,
        ),
        ("event is blank", tr, r#"{"userId":"u","event":"   "}"#),
        ("event is an object", tr, r#"{"userId":"u","event":{}}"#),
        (
            "properties is a string",
            tr,
            r#"{"userId":"u","event":"E","properties":"x"}"#,
        ),
        (
            "properties is an array",
            tr,
            r#"{"userId":"u","event":"E","properties":[1]}"#,
        ),
        (
            "traits is a number",
            "/v1/identify",
            r#"{"userId":"u","traits":1}"#,
        ),
        (
            "context is a string",
            tr,
            r#"{"userId":"u","event":"E","context":"x"}"#,
        ),
        (
            "integrations is true",
            tr,
            r#"{"userId":"u","event":"E","integrations":true}"#,
        ),
        (
            "messageId is an object",
            tr,
            r#"{"userId":"u","event":"E","messageId":{}}"#,
        ),
        (
            "writeKey is a number",
            batch,
            r#"{"writeKey":5,"batch":[{"type":"identify","userId":"u"}]}"#,
        ),
        (
            "sentAt is true",
            batch,
            r#"{"sentAt":true,"batch":[{"type":"identify","userId":"u"}]}"#,
        ),
        (
            "timestamp is an array",
            tr,
            r#"{"userId":"u","event":"E","timestamp":[]}"#,
        ),
        (
            "timestamp month 13",
            tr,
            r#"{"userId":"u","event":"E","timestamp":"2025-13-45T00:00:00Z"}"#,
        ),
        ("group without groupId", "/v1/group", r#"{"userId":"u"}"#),
        ("alias without previousId", "/v1/alias", r#"{"userId":"u"}"#),
        (
            "top-level array",
            batch,
            r#"[{"type":"track","userId":"u","event":"E"}]"#,
        ),
        ("top-level string", tr, r#""track""#),
        ("top-level number", tr, "1e999999"),
        ("top-level null", tr, "null"),
        ("empty body", batch, ""),
        ("whitespace body", batch, " \r\n\t "),
        ("trailing garbage", tr, r#"{"userId":"u","event":"E"} x"#),
        (
            "two objects",
            tr,
            r#"{"userId":"u","event":"E"}{"userId":"u","event":"E"}"#,
        ),
        ("trailing comma", tr, r#"{"userId":"u","event":"E",}"#),
        ("single quotes", tr, "{'userId':'u','event':'E'}"),
        ("comment", tr, r#"{"userId":"u", /* x */ "event":"E"}"#),
        ("bad escape", tr, r#"{"userId":"u\q","event":"E"}"#),
        (
            "control character in a string",
            tr,
            "{\"userId\":\"u\x01\",\"event\":\"E\"}",
        ),
    ] {
        c.push(refused(name, Req::post(path, body)));
    }
    c.push(refused(
        "userId of 2,000 bytes",
        Req::post(
            tr,
            track_raw(&format!(
                r#"{{"userId":"{}","event":"E"}}"#,
                "u".repeat(2000)
            )),
        ),
    ));

    // Null bytes.
    c.push(refused(
        "1,000 null bytes",
        Req::post(batch, vec![0u8; 1000]),
    ));
    c.push(refused(
        "null byte before the JSON",
        Req::post(tr, b"\0{\"userId\":\"u\",\"event\":\"E\"}".to_vec()),
    ));
    c.push(refused(
        "raw null byte in a string",
        Req::post(tr, b"{\"userId\":\"u\0\",\"event\":\"E\"}".to_vec()),
    ));
    c.push(refused(
        "raw null byte between tokens",
        Req::post(tr, b"{\"userId\":\"u\",\0\"event\":\"E\"}".to_vec()),
    ));

    // Encodings: bombs, lies and damage.
    let gz = || ("Content-Encoding", b"gzip".to_vec());
    let small = valid_batch("gz", 3);
    let mut bad_crc = gzip(&small);
    let at = bad_crc.len() - 6;
    bad_crc[at] ^= 0xff;
    let mut cut = gzip(&small);
    cut.truncate(cut.len() / 2);
    for (name, path, enc, body) in [
        ("claims gzip, is JSON", batch, "gzip", small.clone()),
        ("claims deflate, is JSON", batch, "deflate", small.clone()),
        (
            "claims x-gzip, is random",
            batch,
            "x-gzip",
            Rng(7).bytes(3000),
        ),
        ("gzip with a bad CRC", batch, "gzip", bad_crc),
        ("gzip cut in half", batch, "gzip", cut),
        (
            "gzip magic then garbage",
            batch,
            "gzip",
            b"\x1f\x8b\x08\x00garbage".to_vec(),
        ),
        ("gzip inside gzip", batch, "gzip", gzip(&gzip(&small))),
        (
            "gzip of random bytes",
            batch,
            "gzip",
            gzip(&Rng(9).bytes(4000)),
        ),
        (
            "deflate of random bytes",
            tr,
            "deflate",
            zlib(&Rng(11).bytes(4000)),
        ),
        ("gzip of nothing", batch, "gzip", gzip(b"")),
    ] {
        c.push(refused(
            name,
            Req::post(path, body).header("Content-Encoding", enc),
        ));
    }
    for enc in ["br", "zstd", "gzip, gzip", "compress", "*", "gzip;q=1"] {
        c.push(refused(
            &format!("Content-Encoding {enc}"),
            Req::post(batch, small.clone()).header("Content-Encoding", enc),
        ));
    }
    // 1 GiB of zeros in ~1 MB: refused for its size on the wire.
    c.push(refused(
        "gzip bomb 1 GiB -> 1 MB",
        Req::post(batch, gzip_bomb(1024)).header(gz().0, gz().1),
    ));
    // 400 MiB in ~400 KB (under the 500 KB limit): refused while inflating.
    c.push(refused(
        "gzip bomb 400 MiB -> 400 KB",
        Req::post(batch, gzip_bomb(400)).header(gz().0, gz().1),
    ));
    c.push(refused(
        "gzip bomb 16 MiB on /v1/track",
        Req::post(tr, gzip_bomb(16)).header(gz().0, gz().1),
    ));
    c.push(refused(
        "deflate bomb 64 MiB in one stream",
        Req::post(batch, zlib_bomb(64)).header("Content-Encoding", "deflate"),
    ));
    let mut json_bomb =
        br#"{"batch":[{"type":"track","userId":"u","event":"E","properties":{"p":""#.to_vec();
    json_bomb.extend(std::iter::repeat_n(b' ', 8 << 20));
    json_bomb.extend_from_slice(br#""}}]}"#);
    c.push(refused(
        "gzip bomb of 8 MiB of valid JSON",
        Req::post(batch, gzip(&json_bomb)).header(gz().0, gz().1),
    ));

    // Form bodies.
    let form = Some(&b"application/x-www-form-urlencoded"[..]);
    for (name, body) in [
        ("form with a bad escape", "data=%ZZ%7B"),
        ("form with a cut escape", "data=%7"),
        ("form without JSON", "a=1&b=2"),
        ("form with broken JSON", "data=%7B%22batch%22%3A%5B"),
        ("form of nothing", ""),
    ] {
        c.push(refused(name, Req::post(batch, body).content_type(form)));
    }

    // Oversized bodies (all drained and answered: at most DRAIN_MAX).
    let pad = |bytes: usize| {
        format!(
            r#"{{"batch":[{{"type":"track","userId":"u","event":"E","properties":{{"pad":"{}"}}}}]}}"#,
            "p".repeat(bytes)
        )
        .into_bytes()
    };
    c.push(refused("batch of 600 KB", Req::post(batch, pad(600_000))));
    c.push(refused(
        "batch of 7.5 MiB",
        Req::post(batch, pad(DRAIN_MAX - (512 << 10))),
    ));
    c.push(refused(
        "single message of 40 KB",
        Req::post(
            tr,
            track(&format!(
                r#","properties":{{"p":"{}"}}"#,
                "x".repeat(40_000)
            )),
        ),
    ));
    c.push(refused(
        "chunked batch of 4 MiB",
        Req::post(batch, chunked(&pad(4 << 20), 64 * 1024)).header("Transfer-Encoding", "chunked"),
    ));
    c.push(
        Req::post(batch, chunked(&pad(DRAIN_MAX + (4 << 20)), 256 * 1024))
            .header("Transfer-Encoding", "chunked")
            .case(
                "chunked batch of 12 MiB (past the drain limit)",
                Expect::RefusedOrReset,
            ),
    );
    let message_limit_32k = track(&format!(
        r#","properties":{{"p":"{}"}}"#,
        "x".repeat(33_000)
    ));
    c.push(refused(
        "message just over 32 KB",
        Req::post(tr, message_limit_32k),
    ));

    // Content-Length that lies.
    c.push(refused(
        "Content-Length 10^12, short body",
        Req::post(batch, small.clone()).content_length("1000000000000"),
    ));
    for (name, declared) in [
        ("Content-Length 600,000, short body, then closed", "600000"),
        ("Content-Length 5,000, short body, then closed", "5000"),
    ] {
        let mut k = refused(
            name,
            Req::post(batch, small.clone()).content_length(declared),
        );
        k.half_close = true;
        c.push(k);
    }
    for (name, r) in [
        (
            "Content-Length past u64",
            Req::post(batch, small.clone()).content_length("18446744073709551616000"),
        ),
        (
            "Content-Length not a number",
            Req::post(batch, small.clone()).content_length("abc"),
        ),
        (
            "Content-Length negative",
            Req::post(batch, small.clone()).content_length("-1"),
        ),
        (
            "two different Content-Lengths",
            Req::post(batch, small.clone()).header("Content-Length", "3"),
        ),
        (
            // Transfer-Encoding overrides Content-Length (RFC 9112 6.3): the body is
            // read chunked, so it is broken here to make the answer a refusal either way.
            "Content-Length and chunked",
            Req::post(batch, chunked(b"{\"batch\":[", 4))
                .content_length("10")
                .header("Transfer-Encoding", "chunked"),
        ),
        (
            "bad chunk size",
            Req::post(batch, b"zz\r\nabc\r\n0\r\n\r\n".to_vec())
                .header("Transfer-Encoding", "chunked"),
        ),
        (
            "chunk longer than announced",
            Req::post(batch, b"2\r\nabcdef\r\n0\r\n\r\n".to_vec())
                .header("Transfer-Encoding", "chunked"),
        ),
    ] {
        c.push(r.case(name, Expect::Protocol));
    }

    // Very long and strange header values.
    let a100k = "A".repeat(100_000);
    c.push(refused(
        "Authorization of 100 KB",
        Req::post(batch, small.clone())
            .no_auth()
            .header("Authorization", format!("Basic {a100k}")),
    ));
    c.push(refused(
        "Authorization of 100 KB, not base64",
        Req::post(batch, small.clone())
            .no_auth()
            .header("Authorization", format!("Basic {}", "%".repeat(100_000))),
    ));
    c.push(refused(
        "Authorization with bytes that are not UTF-8",
        Req::post(batch, small.clone())
            .no_auth()
            .header("Authorization", b"Basic \xff\xfe\xfd".to_vec()),
    ));
    c.push(refused(
        "Authorization: Bearer token",
        Req::post(batch, small.clone())
            .no_auth()
            .header("Authorization", format!("Bearer {ADMIN}")),
    ));
    c.push(refused(
        "User-Agent of 64 KB, broken body",
        Req::post(tr, "{").header("User-Agent", "M".repeat(64 * 1024)),
    ));
    c.push(refused(
        "200 KB header, broken body",
        Req::post(tr, "{").header("X-Junk", "j".repeat(200 * 1024)),
    ));
    c.push(refused(
        "Content-Type of 50 KB, broken body",
        Req::post(tr, "{\"userId\":").content_type(Some("x".repeat(50_000).as_bytes())),
    ));
    c.push(refused(
        "Content-Encoding of 10 KB",
        Req::post(tr, track("")).header("Content-Encoding", "gzip,".repeat(2000)),
    ));
    c.push(refused(
        "Content-Type not UTF-8, broken body",
        Req::post(tr, "[").content_type(Some(b"application/\xffjson")),
    ));
    let mut many = Req::post(tr, "{");
    for i in 0..90 {
        many = many.header(&format!("X-H{i}"), "v".repeat(1000));
    }
    c.push(refused("90 headers of 1 KB, broken body", many));
    c.push(
        Req::post(tr, "{")
            .header("X-Huge", "h".repeat(300 * 1024))
            .case(
                "a header of 300 KB (past the header buffer)",
                Expect::Protocol,
            ),
    );
    let mut too_many = Req::post(tr, "{");
    for i in 0..200 {
        too_many = too_many.header(&format!("X-H{i}"), "v");
    }
    c.push(too_many.case("200 headers", Expect::Protocol));
    c.push(
        Req::post(tr, "{")
            .header("X-Null", b"a\0b".to_vec())
            .case("null byte in a header value", Expect::Protocol),
    );
    c.push(Req::post("/v1/tr\0ck", track("")).case("null byte in the path", Expect::Protocol));
    c.push(Case {
        name: "not HTTP at all".into(),
        request: Rng(3).bytes(2000),
        half_close: false,
        expect: Expect::Protocol,
    });
    c.push(Case {
        name: "HTTP/1.1 request line only, then closed".into(),
        request: b"POST /v1/batch HTTP/1.1\r\n".to_vec(),
        half_close: true,
        expect: Expect::Protocol,
    });
    c
}

fn track_raw(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Hostile but valid messages: the server may accept them (200) or refuse them (4xx);
/// what it accepts must be stored once and must not break processing or reading back.
fn hostile_valid(id: &str, variant: usize) -> Req {
    let props = [
        r#"{"huge":1e999999,"tiny":1e-999999,"negzero":-0,"big":12345678901234567890,"neg":-12345678901234567890123}"#,
        r#"{"nul":"a\u0000b","lone":"\ud800","pair":"\ud83d\ude00","bidi":"\u202e"}"#,
        r#"{"":"empty key","dup":1,"dup":2,"brackets":"[[[[[[[[[[{{{{{{{{{{"}"#,
        r#"{"deep":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
        r#"{"revenue":1e308,"price":-1e308,"quantity":18446744073709551616,"currency":"\u0000"}"#,
    ];
    let p = props[variant % props.len()];
    let body = match variant % 7 {
        5 => format!(
            r#"{{"userId":12345678901234567890,"event":"Hostile Valid","messageId":"{id}","properties":{p}}}"#
        ),
        6 => format!(
            r#"{{"userId":"hv-user","event":"Hostile Valid","messageId":"{id}","originalTimestamp":"0001-01-01T00:00:00Z","sentAt":"9999-12-31T23:59:59.999Z","properties":{p}}}"#
        ),
        _ => format!(
            r#"{{"userId":"hv-user","anonymousId":-0,"event":"Hostile Valid","messageId":"{id}","timestamp":"9999-12-31T23:59:59.999Z","properties":{p}}}"#
        ),
    };
    Req::post("/v1/track", body)
}

/// A request made up on the spot: truncated, random or mutated.
fn random_case(rng: &mut Rng, serial: usize) -> Case {
    let batch = "/v1/batch";
    match rng.below(6) {
        0 => {
            let full = valid_batch(&format!("trunc-{serial}"), 1 + rng.below(5));
            let at = rng.below(full.len() - 1).max(1);
            refused("truncated JSON", Req::post(batch, full[..at].to_vec()))
        }
        1 => {
            let n = 1 + rng.below(5000);
            let ct: Option<&[u8]> = match rng.below(4) {
                0 => Some(b"application/json"),
                1 => Some(b"application/x-www-form-urlencoded"),
                2 => Some(b"text/plain"),
                _ => None,
            };
            let mut body = rng.bytes(n);
            // Random bytes that happen to start a JSON object still cannot be one valid
            // batch: keep them from starting with '{' only to keep the name honest.
            if body.first() == Some(&b'{') {
                body[0] = b'x';
            }
            refused("random bytes", Req::post(batch, body).content_type(ct))
        }
        2 => {
            let enc = ["gzip", "deflate", "x-gzip"][rng.below(3)];
            refused(
                "random bytes claiming a compression",
                Req::post(batch, {
                    let n = 1 + rng.below(3000);
                    rng.bytes(n)
                })
                .header("Content-Encoding", enc),
            )
        }
        3 => {
            // A valid batch with one byte replaced by something that breaks it.
            let mut b = valid_batch(&format!("mut-{serial}"), 2);
            let structural: Vec<usize> = b
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(c, b'{' | b'}' | b'[' | b']' | b':' | b'"'))
                .map(|(i, _)| i)
                .collect();
            let at = structural[rng.below(structural.len())];
            b[at] = [b'\0', 0xff, b'\\', b'\x01'][rng.below(4)];
            refused("batch with one structural byte broken", Req::post(batch, b))
        }
        4 => {
            let open = ["[", "{\"a\":", "[{\"a\":"][rng.below(3)];
            let depth = 65 + rng.below(10_000);
            refused(
                "random deep nesting",
                Req::post(
                    batch,
                    format!(
                        r#"{{"batch":[{{"type":"track","userId":"u","event":"E","properties":{{"p":{}}}}}]}}"#,
                        open.repeat(depth)
                    ),
                ),
            )
        }
        _ => {
            let mut b = br#"{"userId":"u","event":""#.to_vec();
            let n = 1 + rng.below(50);
            b.extend(rng.bytes(n).into_iter().map(|c| c | 0x80));
            b.extend_from_slice(br#""}"#);
            // Bytes >= 0x80 at random are almost never valid UTF-8; if they are, the
            // message is valid and a 200 is fine.
            let valid = std::str::from_utf8(&b).is_ok();
            let id = format!("hv-rand-{serial}");
            if valid {
                let mut m: Value = serde_json::from_slice(&b).expect("valid");
                m["messageId"] = json!(id);
                Req::post("/v1/track", m.to_string())
                    .case("random high bytes", Expect::MaybeAccepted(id))
            } else {
                refused("random high bytes in a string", Req::post("/v1/track", b))
            }
        }
    }
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Parses one HTTP/1.1 response (Content-Length or chunked).
fn parse_answer(buf: &[u8]) -> Option<Answer> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let rest = &buf[end + 4..];
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let body = if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..n)?.to_vec()
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        let mut r = rest;
        loop {
            let line_end = r.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&r[..line_end]).ok()?.trim(), 16).ok()?;
            r = &r[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(r.get(..size)?);
            r = r.get(size + 2..)?;
        }
        out
    } else {
        rest.to_vec()
    };
    Some(Answer { status, body })
}

/// Sends raw bytes and reads the answer until the server closes. `None`: the connection
/// was closed or reset without a (whole) answer.
fn exchange(port: u16, request: &[u8], half_close: bool) -> (Option<Answer>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.set_write_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // The server may answer (and close) before reading everything: keep going to the
    // answer either way.
    let _ = s.write_all(request);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    (parse_answer(&buf), buf)
}

/// `Ok(code)` if the answer is a refusal with a JSON `code` and `message`.
fn refusal(a: &Answer) -> Result<String, String> {
    if !(400..500).contains(&a.status) {
        return Err(format!("status {}", a.status));
    }
    let v: Value = serde_json::from_slice(&a.body)
        .map_err(|e| format!("{} with a body that is not JSON ({e})", a.status))?;
    let code = v["code"].as_str().unwrap_or_default();
    let message = v["message"].as_str().unwrap_or_default();
    if code.is_empty() || message.is_empty() {
        return Err(format!("{} without code and message", a.status));
    }
    Ok(format!("{} {code}", a.status))
}

#[derive(Default)]
struct Tally {
    /// Problems found: (case, what happened).
    failures: Mutex<Vec<String>>,
    /// Answers seen: "case -> 400 invalid_json" and counts.
    seen: Mutex<HashMap<String, usize>>,
    /// Hostile-valid message ids acknowledged with 200.
    accepted: Mutex<Vec<String>>,
    sent: AtomicUsize,
    server_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().expect("lock").push(what);
    }
    fn saw(&self, what: String) {
        *self.seen.lock().expect("lock").entry(what).or_default() += 1;
    }
}

fn show(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(&raw[..raw.len().min(300)]).into_owned();
    s.replace("\r\n", " | ")
}

fn run_case(port: u16, case: &Case, tally: &Tally) {
    tally.sent.fetch_add(1, Ordering::Relaxed);
    let (answer, raw) = exchange(port, &case.request, case.half_close);
    let name = &case.name;
    if let Some(a) = &answer {
        if a.status >= 500 {
            tally.server_errors.lock().expect("lock").push(format!(
                "{name}: {} {} (request starts {:?})",
                a.status,
                String::from_utf8_lossy(&a.body),
                show(&case.request)
            ));
        }
    }
    match (&case.expect, answer) {
        (Expect::Refused, Some(a)) => match refusal(&a) {
            Ok(code) => tally.saw(format!("{name} -> {code}")),
            Err(e) => tally.fail(format!("{name}: {e}: {}", show(&raw))),
        },
        (Expect::Refused, None) => tally.fail(format!(
            "{name}: connection closed without an answer ({} bytes: {})",
            raw.len(),
            show(&raw)
        )),
        (Expect::MaybeAccepted(id), Some(a)) if a.status == 200 => {
            let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
            if v["accepted"].as_u64() == Some(1) {
                tally.accepted.lock().expect("lock").push(id.clone());
                tally.saw(format!("{name} -> 200 accepted"));
            } else {
                tally.fail(format!("{name}: 200 without accepting: {v}"));
            }
        }
        (Expect::MaybeAccepted(_), Some(a)) => match refusal(&a) {
            Ok(code) => tally.saw(format!("{name} -> {code}")),
            Err(e) => tally.fail(format!("{name}: {e}: {}", show(&raw))),
        },
        (Expect::MaybeAccepted(_), None) => {
            tally.fail(format!("{name}: connection closed without an answer"))
        }
        (Expect::Protocol, Some(a)) => {
            if (400..500).contains(&a.status) {
                let json = refusal(&a).is_ok();
                tally.saw(format!(
                    "{name} -> {}{}",
                    a.status,
                    if json { " (JSON)" } else { " (not JSON)" }
                ));
            } else {
                tally.fail(format!("{name}: status {}: {}", a.status, show(&raw)));
            }
        }
        (Expect::Protocol, None) => tally.saw(format!("{name} -> closed ({} bytes)", raw.len())),
        (Expect::RefusedOrReset, Some(a)) => match refusal(&a) {
            Ok(code) => tally.saw(format!("{name} -> {code}")),
            Err(e) => tally.fail(format!("{name}: {e}")),
        },
        (Expect::RefusedOrReset, None) => tally.saw(format!("{name} -> reset")),
    }
}

/// How a slow connection ended.
#[derive(Debug)]
enum SlowEnd {
    /// Closed (or reset) by the server after this long.
    Closed(Duration),
    /// Answered with this status and JSON code after this long.
    Answered(Duration, u16, String),
    /// Still open when we gave up.
    StillOpen(Duration),
}

impl SlowEnd {
    fn describe(&self) -> String {
        match self {
            SlowEnd::Closed(t) => format!("closed by the server after {:.1} s", t.as_secs_f64()),
            SlowEnd::Answered(t, status, code) => {
                format!("answered {status} {code} after {:.1} s", t.as_secs_f64())
            }
            SlowEnd::StillOpen(t) => format!("still open after {:.1} s", t.as_secs_f64()),
        }
    }
}

/// Opens a connection, sends `prefix` at once, then one byte of `drip` per second,
/// watching for the server to close or answer. Time is counted from when `prefix` was
/// sent.
fn slow_client(port: u16, prefix: &[u8], drip: &[u8], give_up: Duration) -> SlowEnd {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let started = Instant::now();
    let mut got = Vec::new();
    let closed = |got: &[u8], t: Duration| match parse_answer(got) {
        Some(a) => SlowEnd::Answered(
            t,
            a.status,
            serde_json::from_slice::<Value>(&a.body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("(not JSON: {})", show(&a.body))),
        ),
        None => SlowEnd::Closed(t),
    };
    if !prefix.is_empty() && s.write_all(prefix).is_err() {
        return SlowEnd::Closed(started.elapsed());
    }
    let mut next_drip = started + Duration::from_secs(1);
    let mut i = 0;
    let mut buf = [0u8; 4096];
    loop {
        let t = started.elapsed();
        if t > give_up {
            return SlowEnd::StillOpen(t);
        }
        match s.read(&mut buf) {
            Ok(0) => return closed(&got, t),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if parse_answer(&got).is_some() {
                    return closed(&got, t);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return closed(&got, t),
        }
        if Instant::now() >= next_drip && i < drip.len() {
            if s.write_all(&drip[i..i + 1]).is_err() {
                return closed(&got, started.elapsed());
            }
            i += 1;
            next_drip += Duration::from_secs(1);
        }
    }
}

#[derive(Deserialize)]
struct EventsPage<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    next_offset: u64,
    end_offset: u64,
}

#[derive(Deserialize)]
struct StoredEnvelope {
    event: StoredEvent,
}

#[derive(Deserialize)]
struct StoredEvent {
    #[serde(rename = "messageId")]
    message_id: String,
}

/// Message ids of every event in the log. Parsed without building a JSON tree, so stored
/// values JSON allows but `serde_json::Value` does not hold (1e999999) do not matter.
async fn stored_message_ids(base: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let r = client()
            .get(format!("{base}/v1/events?offset={offset}&limit=1000"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200, "reading events at {offset}");
        let text = r.text().await.expect("body");
        let page: EventsPage = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "/v1/events is not JSON ({e}): {}",
                &text[..text.len().min(500)]
            )
        });
        for e in &page.events {
            let ev: StoredEnvelope = serde_json::from_str(e.get()).unwrap_or_else(|err| {
                panic!("stored event without messageId ({err}): {}", e.get())
            });
            out.push(ev.event.message_id);
        }
        offset = page.next_offset;
        if offset >= page.end_offset {
            return out;
        }
    }
}

/// The well-formed client: 2,000 events in batches with unique message ids, retrying on
/// 429 (and on anything else, which is recorded as a failure). Returns the ids
/// acknowledged with 200 and the problems seen.
async fn good_client(base: String) -> (Vec<String>, Vec<String>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let mut acked = Vec::new();
    let mut problems = Vec::new();
    let mut retries_429 = 0;
    for b in 0..GOOD_EVENTS / GOOD_BATCH {
        let ids: Vec<String> = (0..GOOD_BATCH)
            .map(|i| format!("good-{:04}", b * GOOD_BATCH + i))
            .collect();
        let body = json!({"sentAt": "2025-06-15T12:00:01Z", "batch": ids.iter().enumerate().map(|(i, id)| json!({
            "type": "track", "userId": format!("good-user-{}", (b * GOOD_BATCH + i) % 50),
            "event": "Hostile Good", "messageId": id,
            "properties": {"n": b * GOOD_BATCH + i, "revenue": 12.5},
            "originalTimestamp": "2025-06-15T12:00:00Z"
        })).collect::<Vec<_>>()})
        .to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            assert!(attempt <= 20, "batch {b} kept failing: {problems:?}");
            let r = http
                .post(format!("{base}/v1/batch"))
                .basic_auth(WRITE_KEY, Some(""))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("batch {b}: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let v: Value = r.json().await.unwrap_or(Value::Null);
            match status {
                200 => {
                    let n =
                        v["accepted"].as_u64().unwrap_or(0) + v["duplicates"].as_u64().unwrap_or(0);
                    if n != GOOD_BATCH as u64 || v["quarantined"] != 0 {
                        problems.push(format!("batch {b}: 200 but {v}"));
                    }
                    acked.extend(ids);
                    break;
                }
                429 => {
                    retries_429 += 1;
                    tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
                }
                _ => {
                    problems.push(format!("batch {b}: {status} {v}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    if retries_429 > 0 {
        eprintln!("hostile: the good client was told 429 {retries_429} times and retried");
    }
    (acked, problems)
}

/// Whether the server accepts the `[limits]` timeout keys (the server refuses unknown
/// configuration keys).
fn timeouts_supported() -> Result<(), String> {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tmp.path().join("niyet.toml");
    std::fs::write(&p, CONFIG).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_niyet"))
        .args(["config", "validate"])
        .arg(&p)
        .output()
        .expect("run niyet config validate");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() {
        Ok(())
    } else if err.contains("unknown field") && err.contains("timeout_ms") {
        Err(err)
    } else {
        panic!("the test configuration is refused for another reason: {err}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_traffic_is_refused_cleanly_and_acknowledged_events_survive() {
    let started = Instant::now();
    let timeouts = timeouts_supported();
    if let Err(why) = &timeouts {
        eprintln!(
            "hostile: SLOWLORIS CHECK NOT RUN — the server does not accept \
             limits.header_timeout_ms / limits.body_timeout_ms yet: {why}"
        );
    }
    let mut srv = TestServer::start_with_config(Some(if timeouts.is_ok() {
        CONFIG
    } else {
        CONFIG_WITHOUT_TIMEOUTS
    }));
    let base = srv.url();
    let port = srv.port;
    let tally = Arc::new(Tally::default());

    let fixed = Arc::new(catalogue());
    eprintln!("hostile: {} fixed adversarial cases", fixed.len());

    // Slowloris, started first so that it overlaps everything else.
    let header_limit = Duration::from_millis(HEADER_TIMEOUT_MS);
    let body_limit = Duration::from_millis(BODY_TIMEOUT_MS);
    let give_up = if timeouts.is_ok() {
        Duration::from_secs(12)
    } else {
        Duration::from_secs(6)
    };
    let mut slow = Vec::new();
    let request_line = b"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    let headers_drip = format!(
        "Authorization: Basic {}\r\nContent-Type: application/json\r\nX-Slow: 1234567890\r\n",
        auth()
    )
    .into_bytes();
    let full_headers = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n",
        auth()
    )
    .into_bytes();
    let body_drip = valid_batch("slow", 2);
    for i in 0..100 {
        let (kind, prefix, drip, limit) = match i % 5 {
            // Connected, nothing sent: the header deadline covers it too.
            4 => ("idle, nothing sent", Vec::new(), Vec::new(), header_limit),
            // Request headers one byte a second.
            0 => (
                "headers, one byte a second",
                Vec::new(),
                [request_line.clone(), headers_drip.clone()].concat(),
                header_limit,
            ),
            1 => (
                "headers after the request line, one byte a second",
                request_line.clone(),
                headers_drip.clone(),
                header_limit,
            ),
            // Whole headers, then the body one byte a second.
            2 => (
                "body, one byte a second",
                full_headers.clone(),
                body_drip.clone(),
                body_limit,
            ),
            // Whole headers, then no body at all.
            _ => (
                "headers, then no body",
                full_headers.clone(),
                Vec::new(),
                body_limit,
            ),
        };
        slow.push(std::thread::spawn(move || {
            (kind, limit, slow_client(port, &prefix, &drip, give_up))
        }));
    }

    // Adversaries.
    let mut adversaries = Vec::new();
    for t in 0..ADVERSARY_THREADS {
        let fixed = fixed.clone();
        let tally = tally.clone();
        adversaries.push(std::thread::spawn(move || {
            let mut rng =
                Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
            for j in 0..REQUESTS_PER_ADVERSARY {
                let serial = t * REQUESTS_PER_ADVERSARY + j;
                // Every fixed case is sent by every thread at least once; the rest is
                // random, with a hostile-valid message now and then.
                let case = if j < fixed.len() {
                    fixed[(j + t * 17) % fixed.len()].clone()
                } else if j % 10 == 0 {
                    let id = format!("hv-{serial}");
                    hostile_valid(&id, serial / 10)
                        .case("hostile but valid", Expect::MaybeAccepted(id))
                } else {
                    random_case(&mut rng, serial)
                };
                run_case(port, &case, &tally);
            }
        }));
    }

    let (acked, good_problems) = good_client(base.clone()).await;

    let join = |h: Vec<std::thread::JoinHandle<()>>| {
        for h in h {
            h.join().expect("adversary thread panicked");
        }
    };
    tokio::task::spawn_blocking(move || join(adversaries))
        .await
        .expect("join");
    let slow_ends = tokio::task::spawn_blocking(move || {
        slow.into_iter()
            .map(|h| h.join().expect("slow client panicked"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    eprintln!(
        "hostile: {} adversarial requests, good client done, {:.1} s so far",
        tally.sent.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );

    // The server is alive and serving.
    assert!(srv.is_running(), "the server process died");
    let (s, v) = admin_get(&format!("{base}/healthz")).await;
    assert_eq!(s, 200, "healthz: {v}");
    let (s, v) = admin_get(&format!("{base}/readyz")).await;
    assert_eq!(s, 200, "readyz: {v}");

    // What each kind of request got (for the record).
    let mut seen: Vec<(String, usize)> = tally.seen.lock().expect("lock").drain().collect();
    seen.sort();
    for (what, n) in &seen {
        eprintln!("hostile: {n:5} × {what}");
    }
    let server_errors = tally.server_errors.lock().expect("lock").clone();
    assert!(
        server_errors.is_empty(),
        "5xx answers:\n{}",
        server_errors.join("\n")
    );
    let failures = tally.failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} adversarial requests were not refused cleanly:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The well-formed client got through, every acknowledged event is stored exactly once,
    // and nothing else is stored but the hostile-valid messages that were acknowledged.
    assert!(
        good_problems.is_empty(),
        "the good client had trouble: {good_problems:?}"
    );
    assert_eq!(acked.len(), GOOD_EVENTS);
    let hostile_accepted = tally.accepted.lock().expect("lock").clone();
    let stored = stored_message_ids(&base).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    for id in acked.iter().chain(&hostile_accepted) {
        assert_eq!(
            counts.get(id.as_str()).copied(),
            Some(1),
            "acknowledged {id} stored once"
        );
    }
    let good_stored = stored.iter().filter(|id| id.starts_with("good-")).count();
    assert_eq!(good_stored, GOOD_EVENTS, "exactly the good events");
    let unexpected: Vec<&String> = stored
        .iter()
        .filter(|id| !id.starts_with("good-") && !hostile_accepted.contains(id))
        .take(10)
        .collect();
    assert!(
        unexpected.is_empty(),
        "stored but never acknowledged: {unexpected:?}"
    );
    eprintln!(
        "hostile: {} good and {} hostile-valid events stored",
        good_stored,
        hostile_accepted.len()
    );

    // Processing kept up with it all: the pipeline catches up and profiles answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = admin_get(&format!("{base}/v1/pipeline")).await;
        assert_eq!(s, 200, "pipeline status: {v}");
        if v["caught_up"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline did not catch up: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, v) = admin_get(&format!("{base}/v1/profiles?user_id=good-user-7")).await;
    assert_eq!(s, 200, "a good user's profile: {v}");
    // The profile built from the hostile-valid events (huge numbers, lone surrogates,
    // timestamps at the ends of the calendar) is served as JSON.
    let r = client()
        .get(format!("{base}/v1/profiles?user_id=hv-user"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    assert_eq!(status, 200, "the hostile-valid user's profile: {text}");
    assert!(
        serde_json::from_str::<&RawValue>(&text).is_ok(),
        "the hostile-valid user's profile is not JSON: {text}"
    );

    // Slowloris: every slow connection was cut off within a few seconds of its limit.
    // Not cut off long before the limit either (the configured value is what counts).
    let in_time = |t: Duration, limit: Duration| t >= limit * 4 / 5 && t <= limit + CUT_OFF_SLACK;
    let mut slow_report = Vec::new();
    let mut slow_failures = Vec::new();
    for (kind, limit, end) in &slow_ends {
        slow_report.push(format!("{kind}: {}", end.describe()));
        let ok = match end {
            SlowEnd::Closed(t) => in_time(*t, *limit),
            SlowEnd::Answered(t, status, code) => {
                in_time(*t, *limit) && (400..500).contains(status) && !code.starts_with("(not JSON")
            }
            SlowEnd::StillOpen(_) => false,
        };
        if !ok {
            slow_failures.push(format!("{kind} (limit {limit:?}): {}", end.describe()));
        }
        if let SlowEnd::Answered(_, status, _) = end {
            assert!(*status < 500, "slow client got {status}");
        }
    }
    slow_report.sort();
    slow_report.dedup();
    for r in &slow_report {
        eprintln!("hostile: slowloris {r}");
    }
    match &timeouts {
        Ok(()) => assert!(
            slow_failures.is_empty(),
            "slow connections not cut off within {CUT_OFF_SLACK:?} of their limit:\n{}",
            slow_failures.join("\n")
        ),
        Err(why) => eprintln!(
            "hostile: SLOWLORIS CHECK NOT RUN (server lacks the timeout keys: {why}); \
             {} of {} slow connections were still open after {give_up:?}",
            slow_failures.len(),
            slow_ends.len()
        ),
    }
    eprintln!("hostile: done in {:.1} s", started.elapsed().as_secs_f64());
}
