//! Transport decoding of request bodies.

use std::borrow::Cow;
use std::io::Read;

use crate::{ErrorKind, IngestError};

/// Deepest nesting of arrays and objects accepted in a body.
pub const MAX_DEPTH: usize = 64;

/// Undoes `Content-Encoding` (gzip, deflate, identity) without inflating past `limit`
/// bytes, then unwraps JSON sent as `application/x-www-form-urlencoded`.
pub fn decode<'a>(
    content_encoding: Option<&str>,
    content_type: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, IngestError> {
    let enc = content_encoding.map(|e| e.trim().to_ascii_lowercase());
    let inflated: Cow<'a, [u8]> = match enc.as_deref() {
        None | Some("") | Some("identity") => Cow::Borrowed(body),
        Some("gzip") | Some("x-gzip") => Cow::Owned(inflate(
            flate2::read::MultiGzDecoder::new(body),
            limit,
            "gzip",
        )?),
        Some("deflate") => Cow::Owned(inflate(
            flate2::read::ZlibDecoder::new(body),
            limit,
            "deflate",
        )?),
        Some(other) => {
            return Err(IngestError::new(
                ErrorKind::UnsupportedEncoding,
                format!("Content-Encoding '{other}' is not supported; use gzip, deflate or none"),
            ))
        }
    };
    if inflated.len() > limit {
        return Err(too_large(inflated.len(), limit));
    }
    let is_form = content_type.is_some_and(|t| {
        t.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let first = inflated.iter().copied().find(|c| !c.is_ascii_whitespace());
    if is_form && !matches!(first, Some(b'{') | Some(b'[')) {
        return unwrap_form(&inflated).map(Cow::Owned);
    }
    Ok(inflated)
}

fn too_large(n: usize, limit: usize) -> IngestError {
    IngestError::new(
        ErrorKind::TooLarge,
        format!("request body is larger than the limit of {limit} bytes (got at least {n})"),
    )
}

fn inflate(r: impl Read, limit: usize, what: &str) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            IngestError::new(
                ErrorKind::BadEncoding,
                format!("body is not valid {what}: {e}"),
            )
        })?;
    if out.len() > limit {
        return Err(too_large(out.len(), limit));
    }
    Ok(out)
}

/// Finds the JSON in a form body: the value of the first field that holds a JSON
/// object, or a bare JSON key (some clients send JSON with a form content type).
fn unwrap_form(body: &[u8]) -> Result<Vec<u8>, IngestError> {
    for pair in body.split(|&c| c == b'&') {
        let (k, v) = match pair.iter().position(|&c| c == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[..0]),
        };
        for part in [v, k] {
            let decoded = percent_decode(part)?;
            if decoded.trim_ascii_start().first() == Some(&b'{') {
                return Ok(decoded);
            }
        }
    }
    Err(IngestError::new(
        ErrorKind::BadRequest,
        "form-encoded body carries no JSON object",
    ))
}

fn percent_decode(s: &[u8]) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        IngestError::new(
                            ErrorKind::BadRequest,
                            format!("bad percent-escape at byte {i} of the form body"),
                        )
                    })?;
                out.push(byte);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Ok(out)
}

/// Refuses JSON nested deeper than [`MAX_DEPTH`], naming the byte where it happens.
pub fn check_depth(body: &[u8]) -> Result<(), IngestError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // Skip the string: jump between quotes and backslashes.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &body[i..]) {
                        None => return Ok(()),
                        Some(j) if body[i + j] == b'\\' => i += j + 2,
                        Some(j) => {
                            i += j;
                            break;
                        }
                    }
                    if i >= body.len() {
                        return Ok(());
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(IngestError::new(
                        ErrorKind::TooDeep,
                        format!("JSON is nested deeper than {MAX_DEPTH} levels (at byte {i})"),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap_or_default();
        e.finish().unwrap_or_default()
    }

    #[test]
    fn gzip_and_limits() {
        let body = br#"{"batch":[]}"#;
        assert_eq!(
            decode(Some("gzip"), None, &gz(body), 100).map(|b| b.into_owned()),
            Ok(body.to_vec())
        );
        let bomb = gz(&vec![b' '; 10_000]);
        assert_eq!(
            decode(Some("gzip"), None, &bomb, 1000).map_err(|e| e.kind),
            Err(ErrorKind::TooLarge)
        );
        let e = decode(Some("gzip"), None, b"not gzip", 1000).expect_err("broken");
        assert_eq!(e.kind, ErrorKind::BadEncoding);
        assert!(e.message.contains("gzip"));
        assert_eq!(
            decode(Some("br"), None, body, 100).map_err(|e| e.kind),
            Err(ErrorKind::UnsupportedEncoding)
        );
    }

    #[test]
    fn form_encoded_json() {
        let ct = Some("application/x-www-form-urlencoded");
        let raw = br#"{"a":1}"#;
        assert_eq!(
            decode(None, ct, raw, 100).map(|b| b.into_owned()),
            Ok(raw.to_vec())
        );
        let enc = b"data=%7B%22a%22%3A+1%7D";
        assert_eq!(
            decode(None, ct, enc, 100).map(|b| b.into_owned()),
            Ok(br#"{"a": 1}"#.to_vec())
        );
        assert!(decode(None, ct, b"x=1", 100).is_err());
    }

    #[test]
    fn depth() {
        assert!(check_depth(br#"{"a":[{"b":"[[[[["}]}"#).is_ok());
        assert!(check_depth(br#"{"a":"\\"[[[[[[\\\\","b":1}"#).is_ok());
        assert!(check_depth(br#"{"a":"unterminated [[["#).is_ok());
        let deep_in_value = format!(
            "{{\"a\":\"x\\\\\",\"b\":{}{}}}",
            "[".repeat(65),
            "]".repeat(65)
        );
        assert!(
            check_depth(deep_in_value.as_bytes()).is_err(),
            "an escaped backslash ends a string"
        );
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert_eq!(
            check_depth(deep.as_bytes()).map_err(|e| e.kind),
            Err(ErrorKind::TooDeep)
        );
    }
}

#[cfg(test)]
mod depth_reference {
    use super::*;
    use proptest::prelude::*;

    /// The plain byte-by-byte scanner the fast one must agree with.
    fn reference(body: &[u8]) -> bool {
        let (mut depth, mut in_str, mut esc) = (0usize, false, false);
        for &c in body {
            if in_str {
                if esc {
                    esc = false
                } else if c == b'\\' {
                    esc = true
                } else if c == b'"' {
                    in_str = false
                }
                continue;
            }
            match c {
                b'"' => in_str = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return false;
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        true
    }

    proptest! {
        #[test]
        fn fast_depth_check_matches_the_reference(
            body in prop::collection::vec(prop::sample::select(b"[]{}\"\\ax".to_vec()), 0..400)
        ) {
            prop_assert_eq!(check_depth(&body).is_ok(), reference(&body));
        }
    }
}
