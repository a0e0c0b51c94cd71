//! Erasure and export over HTTP against the real binary: after an erasure no byte of the
//! data directory holds the person's e-mail, phone, ids or name, the API finds nothing,
//! later events with those identifiers are suppressed, and all of it survives a SIGKILL
//! and a replay; the export holds everything before.

use std::path::Path;

use crate::common::*;
use serde_json::{json, Value};

/// Every file under `dir` that contains `needle` (case-insensitively).
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let needle = needle.to_lowercase().into_bytes();
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                let lower = bytes.to_ascii_lowercase();
                if lower.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

fn send(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).expect("json")
}

/// The profile an identifier finds, once every stored event is reflected in profiles.
async fn wait_profile(base: &str, q: &str) -> Value {
    for _ in 0..500 {
        let (_, st) = admin_get(&format!("{base}/v1/pipeline")).await;
        let caught_up = st["caught_up"] == true;
        let (s, v) = admin_get(&format!("{base}/v1/profiles?{q}")).await;
        if s == 200 && caught_up {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no profile for {q}");
}

const PII: [&str; 6] = [
    "ayse.yilmaz@example.com",
    "+905321112233",
    "user-ayse-77",
    "anon-ayse-1",
    "dev-ayse-9",
    "Yılmazoğlu",
];

#[tokio::test]
async fn an_erased_customer_leaves_no_byte_behind_and_stays_out() {
    let mut srv = TestServer::start();
    let base = srv.url();
    let batch = format!("{base}/v1/batch");
    let ayse = |n: usize| {
        json!({"type": "track", "userId": "user-ayse-77", "event": "Product Viewed",
               "properties": {"sku": format!("S{n}")}, "messageId": format!("a-{n}")})
    };
    let (s, v, _) = post(&batch, send(json!({"batch": [
        {"type": "page", "anonymousId": "anon-ayse-1", "name": "Home", "messageId": "a-p",
         "context": {"device": {"id": "dev-ayse-9"}}},
        {"type": "identify", "anonymousId": "anon-ayse-1", "userId": "user-ayse-77",
         "traits": {"email": "Ayse.Yilmaz@Example.com", "phone": "0532 111 22 33",
                    "last_name": "Yılmazoğlu", "consent": {"email": true}}, "messageId": "a-id"},
        ayse(1), ayse(2),
        {"type": "track", "userId": "user-ayse-77", "event": "Order Completed",
         "properties": {"revenue": 120, "order_id": "o-1"}, "messageId": "a-o"},
        // Invalid (an array user id): quarantined, with her e-mail in it.
        {"type": "track", "userId": ["x"], "event": "Signed Up",
         "context": {"traits": {"email": "ayse.yilmaz@example.com"}}, "messageId": "a-bad"},
        {"type": "identify", "userId": "user-mehmet-5",
         "traits": {"email": "mehmet.kaya@example.com"}, "messageId": "m-id"},
        {"type": "track", "userId": "user-mehmet-5", "event": "Order Completed",
         "properties": {"revenue": 80, "order_id": "o-2"}, "messageId": "m-o"},
    ]})))
    .await;
    assert_eq!(s, 200, "{v}");
    let profile = wait_profile(&base, "email=ayse.yilmaz@example.com").await;
    let id = profile["id"].as_str().expect("id").to_string();
    wait_profile(&base, "user_id=user-mehmet-5").await;

    // Export first: everything held about her, in one document.
    let (s, export) = admin_send(
        "GET",
        &format!("{base}/v1/privacy/export?email=ayse.yilmaz@example.com"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{export}");
    assert_eq!(export["profile"]["id"], id.as_str());
    assert_eq!(
        export["events"].as_array().expect("events").len(),
        5,
        "{export}"
    );
    assert_eq!(export["consent"]["purposes"]["email"]["status"], "granted");
    assert!(
        export["identity"]["identifiers"]
            .as_array()
            .expect("ids")
            .len()
            >= 5
    );
    assert!(export["segments"].is_object() && export["profile"]["purchases"]["orders"] == 1);
    let cli = niyet(
        &["privacy", "export", "email:ayse.yilmaz@example.com"],
        &base,
        ADMIN,
    );
    assert_eq!(cli["events"], export["events"]);
    let cli = niyet(&["privacy", "consent", &id], &base, ADMIN);
    assert_eq!(cli["purposes"]["email"]["status"], "granted");

    // A clean restart writes a snapshot holding her: the erasure must reach it too.
    srv.stop();
    srv.spawn();
    for p in PII {
        assert!(
            !files_containing(&srv.dir, p).is_empty(),
            "the search finds `{p}` before the erasure"
        );
    }
    assert!(!files_containing(&srv.dir.join("state"), "user-ayse-77").is_empty());

    let (s, v) = admin_send(
        "POST",
        &format!("{base}/v1/privacy/erase"),
        Some(json!({"phone": "+90 532 111 22 33"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "complete");
    assert_eq!(v["profiles"], json!([id]));
    assert_eq!(v["events_erased"], 5, "{v}");
    assert_eq!(v["quarantine_erased"], 1, "{v}");
    assert_eq!(v["suppressed"], true);
    let request = v["request"].as_str().expect("request id").to_string();

    let check = |dir: &Path| {
        for p in PII {
            let hits = files_containing(dir, p);
            assert!(hits.is_empty(), "`{p}` is still in {hits:?}");
        }
        // The search does find what was not erased.
        assert!(!files_containing(dir, "mehmet.kaya@example.com").is_empty());
    };
    check(&srv.dir);
    for q in [
        "email=ayse.yilmaz@example.com",
        "user_id=user-ayse-77",
        "anonymous_id=anon-ayse-1",
        "device_id=dev-ayse-9",
        "phone=%2B905321112233",
    ] {
        let (s, v) = admin_get(&format!("{base}/v1/profiles?{q}")).await;
        assert_eq!(s, 404, "{q}: {v}");
    }
    let (s, _) = admin_get(&format!("{base}/v1/profiles/{id}")).await;
    assert_eq!(s, 404);
    let (_, v) = admin_get(&format!("{base}/v1/privacy/suppressions")).await;
    assert!(v["identifiers"].as_u64().expect("count") >= 5, "{v}");
    let (_, mehmet) = admin_get(&format!("{base}/v1/profiles?user_id=user-mehmet-5")).await;
    assert_eq!(mehmet["purchases"]["orders"], 1);

    // Later events carrying her identifiers are acknowledged and dropped.
    let (s, _, _) = post(&batch, send(json!({"batch": [
        {"type": "track", "userId": "user-ayse-77", "event": "Product Viewed", "messageId": "late-1"},
        {"type": "identify", "anonymousId": "anon-new",
         "traits": {"email": "AYSE.YILMAZ@example.com"}, "messageId": "late-2"},
        {"type": "track", "userId": "user-mehmet-5", "event": "Product Viewed", "messageId": "m-late"},
        // Invalid, with her e-mail: not quarantined either.
        {"type": "track", "userId": ["bad"], "event": "Signed Up", "messageId": "late-3",
         "context": {"traits": {"email": "ayse.yilmaz@example.com"}}},
    ]})))
    .await;
    assert_eq!(s, 200);
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("niyet_ingest_events_total{outcome=\"suppressed\"} 3"),
        "{metrics}"
    );
    let events_url = format!(
        "{base}/v1/profiles/{}/events",
        mehmet["id"].as_str().expect("id")
    );
    let mut later = Value::Null;
    for _ in 0..250 {
        later = admin_get(&events_url).await.1;
        if later.to_string().contains("m-late") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(later.to_string().contains("m-late"), "{later}");
    check(&srv.dir);

    // The audit log has the request and its completion, without her data.
    let (_, audit) = admin_get(&format!("{base}/v1/audit")).await;
    let entries: Vec<&Value> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["request"] == request.as_str())
        .collect();
    let events: Vec<&str> = entries.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(events, ["erasure requested", "erasure completed"]);

    // A crash and a replay of the whole log (the snapshot removed) change nothing.
    srv.kill9();
    std::fs::remove_dir_all(srv.dir.join("state")).expect("remove state");
    srv.spawn();
    wait_profile(&base, "user_id=user-mehmet-5").await;
    let (s, _) = admin_get(&format!("{base}/v1/profiles?email=ayse.yilmaz@example.com")).await;
    assert_eq!(s, 404);
    let (_, v) = admin_get(&format!("{base}/v1/pipeline")).await;
    assert!(v.to_string().contains("profiles"), "{v}");
    srv.stop();
    check(&srv.dir);
}

#[tokio::test]
async fn a_minimising_source_stores_less() {
    let srv = TestServer::start_with_config(Some(
        r#"
[[sources]]
name = "web"
write_key = "test-write-key"
[sources.minimise]
ip = "truncate"
drop_properties = ["card_number"]
hash_identifiers = ["email"]
"#,
    ));
    let base = srv.url();
    let (s, v, _) = post(
        &format!("{base}/v1/batch"),
        send(json!({"batch": [
            {"type": "identify", "userId": "u-min", "traits": {"email": "Gizli.Kisi@Example.com"},
             "context": {"ip": "85.34.12.201"}, "messageId": "min-1"},
            {"type": "track", "userId": "u-min", "event": "Order Completed",
             "properties": {"revenue": 10, "card_number": "4111111111111111"},
             "context": {"ip": "85.34.12.201", "traits": {"email": "gizli.kisi@example.com"}},
             "messageId": "min-2"},
        ]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let events = all_events(&base).await;
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e["context"]["ip"], "85.34.12.0", "{e}");
        assert!(e["properties"].get("card_number").is_none(), "{e}");
    }
    let hashed = events[0]["traits"]["email"].as_str().expect("email");
    assert_eq!(hashed.len(), 64, "a SHA-256 in hex: {hashed}");
    assert_eq!(
        events[1]["context"]["traits"]["email"], hashed,
        "one person, one hash"
    );
    // Both events are one profile, found by the hash; the address itself is nowhere.
    let p = wait_profile(&base, "user_id=u-min").await;
    assert_eq!(p["purchases"]["orders"], 1, "{p}");
    assert_eq!(p["traits"]["email"]["value"], hashed, "{p}");
    for needle in ["gizli.kisi@example.com", "4111111111111111", "85.34.12.201"] {
        assert!(files_containing(&srv.dir, needle).is_empty(), "{needle}");
    }
}
