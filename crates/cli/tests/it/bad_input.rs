//! Bad input gets the right status and a message naming the problem; the server keeps
//! serving throughout.

use std::io::Write;

use crate::common::*;
use serde_json::json;

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

async fn raw(
    url: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut r = client().post(url).body(body);
    if let Some(k) = key {
        r = r.basic_auth(k, Some(""));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.expect("send");
    let s = r.status().as_u16();
    let text = r.text().await.expect("text");
    (
        s,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

/// (name, url, write key, headers, body, status, code, words in the message)
type Case<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a [(&'a str, &'a str)],
    Vec<u8>,
    u16,
    &'a str,
    &'a str,
);

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let srv = TestServer::start();
    let base = srv.url();
    let batch = format!("{base}/v1/batch");
    let track = format!("{base}/v1/track");
    let deep = format!("{{\"batch\":[{{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\",\"properties\":{}1{}}}]}}", "[".repeat(200), "]".repeat(200));
    let big_message =
        json!({"userId": "u", "event": "E", "properties": {"x": "y".repeat(40_000)}}).to_string();
    let big_batch = json!({"batch": (0..40).map(|i| json!({"type": "track", "userId": "u", "event": "E", "properties": {"i": i, "pad": "p".repeat(15_000)}})).collect::<Vec<_>>()}).to_string();
    let bomb = gzip(&vec![b' '; 5_000_000]);
    let gz = [("content-encoding", "gzip")];
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            &batch,
            Some(WRITE_KEY),
            &[],
            b"{\"batch\": [".to_vec(),
            400,
            "invalid_json",
            "line 1",
        ),
        (
            "not an object",
            &batch,
            Some(WRITE_KEY),
            &[],
            b"[1,2]".to_vec(),
            400,
            "invalid_request",
            "JSON object",
        ),
        (
            "batch not an array",
            &batch,
            Some(WRITE_KEY),
            &[],
            b"{\"batch\": {}}".to_vec(),
            400,
            "invalid_request",
            "batch",
        ),
        (
            "empty batch",
            &batch,
            Some(WRITE_KEY),
            &[],
            b"{\"batch\": []}".to_vec(),
            400,
            "empty_batch",
            "empty",
        ),
        (
            "wrong type of userId",
            &track,
            Some(WRITE_KEY),
            &[],
            br#"{"userId": {"a": 1}, "event": "E"}"#.to_vec(),
            400,
            "invalid_messages",
            "userId: expected a string or number",
        ),
        (
            "wrong type of event",
            &track,
            Some(WRITE_KEY),
            &[],
            br#"{"userId": "u", "event": 5}"#.to_vec(),
            400,
            "invalid_messages",
            "event",
        ),
        (
            "no identity",
            &track,
            Some(WRITE_KEY),
            &[],
            br#"{"event": "E", "anonymousId": null}"#.to_vec(),
            400,
            "invalid_messages",
            "userId or an anonymousId",
        ),
        (
            "bad timestamp",
            &track,
            Some(WRITE_KEY),
            &[],
            br#"{"userId": "u", "event": "E", "timestamp": "2025-13-45"}"#.to_vec(),
            400,
            "invalid_messages",
            "timestamp",
        ),
        (
            "deeply nested",
            &batch,
            Some(WRITE_KEY),
            &[],
            deep.into_bytes(),
            400,
            "too_deep",
            "nested deeper",
        ),
        (
            "oversized single event",
            &track,
            Some(WRITE_KEY),
            &[],
            big_message.into_bytes(),
            413,
            "payload_too_large",
            "limit",
        ),
        (
            "oversized batch",
            &batch,
            Some(WRITE_KEY),
            &[],
            big_batch.into_bytes(),
            413,
            "payload_too_large",
            "limit",
        ),
        (
            "broken gzip",
            &batch,
            Some(WRITE_KEY),
            &gz,
            b"\x1f\x8b\x08garbage".to_vec(),
            400,
            "invalid_encoding",
            "gzip",
        ),
        (
            "gzip bomb",
            &batch,
            Some(WRITE_KEY),
            &gz,
            bomb,
            413,
            "payload_too_large",
            "limit",
        ),
        (
            "unknown encoding",
            &batch,
            Some(WRITE_KEY),
            &[("content-encoding", "br")],
            b"{}".to_vec(),
            415,
            "unsupported_encoding",
            "br",
        ),
        (
            "unknown write key",
            &batch,
            Some("nope-nope-nope"),
            &[],
            br#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#.to_vec(),
            401,
            "invalid_write_key",
            "write key",
        ),
        (
            "no write key",
            &batch,
            None,
            &[],
            br#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#.to_vec(),
            401,
            "missing_write_key",
            "write key",
        ),
        (
            "not UTF-8",
            &batch,
            Some(WRITE_KEY),
            &[],
            b"{\"batch\":[\"\xff\xfe\"]}".to_vec(),
            400,
            "invalid_json",
            "UTF-8",
        ),
    ];
    for (name, url, key, headers, body, status, code, words) in cases {
        let (s, v) = raw(url, key, headers, body).await;
        assert_eq!(s, status, "{name}: {v}");
        assert_eq!(v["code"], code, "{name}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(words),
            "{name}: message {msg:?} should mention {words:?}"
        );
        // The server is still serving.
        let (hs, _) = admin_get(&format!("{base}/readyz")).await;
        assert_eq!(hs, 200, "{name}: not ready afterwards");
    }

    // A batch mixing good and bad: the good one is stored, the bad one quarantined with its reason.
    let (s, v, _) = post(
        &batch,
        json!({"batch": [
            {"type": "track", "userId": "u1", "event": "Good", "messageId": "good-1"},
            {"type": "track", "userId": ["x"], "event": "Bad", "messageId": "bad-1"}
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["quarantined"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["errors"][0]["index"], 1);
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("userId"));

    // Text/plain and form-encoded bodies carrying JSON are accepted, like real SDKs send them.
    let body =
        br#"{"batch":[{"type":"track","userId":"u2","event":"Plain","messageId":"plain-1"}]}"#
            .to_vec();
    let (s, v) = raw(
        &batch,
        Some(WRITE_KEY),
        &[("content-type", "text/plain")],
        body.clone(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = raw(
        &batch,
        Some(WRITE_KEY),
        &[("content-type", "application/x-www-form-urlencoded")],
        String::from_utf8_lossy(&body)
            .replace("plain-1", "plain-2")
            .into_bytes(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // writeKey in the body instead of Basic auth.
    let (s, v) = raw(
        &batch,
        None,
        &[],
        format!(r#"{{"writeKey":"{WRITE_KEY}","batch":[{{"type":"identify","userId":"u3"}}]}}"#)
            .into_bytes(),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    let events = all_events(&base).await;
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names,
        vec!["Good", "Plain", "Plain"],
        "only valid events are in the log"
    );
    assert_eq!(events.len(), 4);
    let (s, q) = admin_get(&format!("{base}/v1/quarantine")).await;
    assert_eq!(s, 200);
    let reasons: Vec<&str> = q["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["reason"].as_str())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("userId")), "{reasons:?}");
    assert!(
        reasons.len() >= 5,
        "every invalid message is quarantined: {reasons:?}"
    );
}

/// An oversized body (7 MiB, more than a socket buffer holds), chunked or with its length
/// announced, is read to the end and answered 413: the client never sees a reset
/// connection (which an SDK would take for a network error and retry).
#[tokio::test]
async fn oversized_bodies_get_a_413_answer_not_a_reset() {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = TestServer::start();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
    let chunk = vec![b' '; 64 * 1024];
    for chunked in [true, false] {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", srv.port))
            .await
            .unwrap();
        let total = 110 * chunk.len();
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {total}")
        };
        conn.write_all(
            format!("POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        for _ in 0..110 {
            if chunked {
                conn.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await
                    .unwrap();
            }
            conn.write_all(&chunk)
                .await
                .expect("the server reads the whole body");
            if chunked {
                conn.write_all(b"\r\n").await.unwrap();
            }
        }
        if chunked {
            conn.write_all(b"0\r\n\r\n").await.unwrap();
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains("payload_too_large") {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(
                n > 0,
                "closed without an answer: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    }
}

/// A configuration mistake is reported as what is wrong, with exit code 1 and no stack
/// trace, even with RUST_BACKTRACE set (as a shell with it exported would run niyet).
#[test]
fn a_bad_configuration_is_named_without_a_stack_trace() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tmp.path().join("niyet.toml");
    std::fs::write(&p, "[profiles]\nsnapshot_every = 0\nsnapshot_share = 1.5\n").expect("write");
    let data = tmp.path().join("data");
    let (p, data) = (p.to_str().expect("path"), data.to_str().expect("path"));
    for cmd in [
        vec!["config", "validate", p],
        vec!["serve", "--data-dir", data, "--config", p],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_niyet"))
            .args(&cmd)
            .env("RUST_BACKTRACE", "1")
            .env_remove("NIYET_CONFIG")
            .output()
            .expect("run niyet");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
        assert!(
            err.contains("profiles.snapshot_every must be at least 1"),
            "{cmd:?}: {err}"
        );
        assert!(
            err.contains("profiles.snapshot_share must be more than 0 and at most 1"),
            "{cmd:?}: {err}"
        );
        assert!(!err.contains("backtrace"), "{cmd:?}: {err}");
    }
}
