use super::*;
use niyet_model::time::format_rfc3339_millis;
use proptest::prelude::*;
use serde_json::{json, Value};

const NOW: i64 = 1_763_806_530_000; // 2025-11-22T10:15:30Z

fn ctx() -> NormalizeCtx<'static> {
    NormalizeCtx {
        received_ms: NOW,
        source: "web",
        plan: None,
        request_seq: 7,
    }
}

fn run(endpoint: Endpoint, body: &Value) -> Vec<Outcome> {
    let bytes = serde_json::to_vec(body).expect("json");
    let env = parse_envelope(endpoint, &bytes).expect("envelope");
    env.normalize_all(&ctx())
}

fn valid(o: &Outcome) -> Value {
    match o {
        Outcome::Valid(n) => serde_json::from_slice(&n.payload).expect("stored JSON parses"),
        Outcome::Invalid(i) => panic!("invalid: {}", i.reason),
    }
}

fn reason(o: &Outcome) -> String {
    match o {
        Outcome::Invalid(i) => i.reason.clone(),
        Outcome::Valid(_) => panic!("unexpectedly valid"),
    }
}

#[test]
fn a_batch_of_all_six_types_normalises() {
    let out = run(
        Endpoint::Batch,
        &json!({
            "writeKey": "secret",
            "sentAt": "2025-11-22T10:15:30Z",
            "batch": [
                {"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}, "messageId": "m1"},
                {"type": "track", "anonymousId": "a1", "userId": null, "event": "Order Completed", "properties": {"revenue": 12.5}, "messageId": "m2"},
                {"type": "page", "userId": 42, "name": "Home", "messageId": "m3"},
                {"type": "screen", "userId": "u1", "name": "Cart"},
                {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}},
                {"type": "alias", "userId": "u2", "previousUserId": "u1"}
            ]
        }),
    );
    assert_eq!(out.len(), 6);
    let v: Vec<Value> = out.iter().map(valid).collect();
    assert_eq!(v[0]["type"], "identify");
    assert_eq!(v[0]["traits"]["email"], "a@b.c");
    assert_eq!(v[1]["event"], "Order Completed");
    assert_eq!(v[1]["properties"]["revenue"], 12.5);
    assert_eq!(v[1].get("userId"), None, "null ids are dropped");
    assert_eq!(v[2]["userId"], "42", "numeric ids become strings");
    assert_eq!(v[4]["groupId"], "g1");
    assert_eq!(v[5]["previousUserId"], "u1");
    for e in &v {
        assert_eq!(e["source"], "web");
        assert_eq!(e["receivedAt"], "2025-11-22T10:15:30.000Z");
        assert!(e.get("writeKey").is_none(), "the write key is never stored");
        assert!(e["messageId"].as_str().is_some_and(|s| !s.is_empty()));
    }
    assert!(v[3]["messageId"]
        .as_str()
        .is_some_and(|s| s.starts_with("niyet-")));
}

#[test]
fn dedup_keys_are_per_source_and_message_id() {
    let body = serde_json::to_vec(&json!({"batch": [
        {"type": "track", "userId": "u", "event": "E", "messageId": "same"},
        {"type": "track", "userId": "u", "event": "E", "messageId": "same"},
        {"type": "track", "userId": "u", "event": "E"}
    ]}))
    .expect("json");
    let env = parse_envelope(Endpoint::Batch, &body).expect("env");
    let keys = |source: &'static str| -> Vec<u128> {
        env.normalize_all(&NormalizeCtx { source, ..ctx() })
            .into_iter()
            .map(|o| match o {
                Outcome::Valid(n) => n.dedup_key,
                Outcome::Invalid(_) => panic!(),
            })
            .collect()
    };
    let web = keys("web");
    assert_eq!(web[0], web[1]);
    assert_ne!(web[0], 0);
    assert_eq!(web[2], 0, "generated ids never deduplicate");
    assert_ne!(keys("ios")[0], web[0]);
}

#[test]
fn invalid_messages_say_which_field_and_what() {
    let out = run(
        Endpoint::Batch,
        &json!({"batch": [
            {"type": "track", "event": "E"},
            {"type": "track", "userId": null, "anonymousId": null, "event": "E"},
            {"type": "track", "userId": ["x"], "event": "E"},
            {"type": "track", "userId": "u"},
            {"type": "bogus", "userId": "u"},
            {"userId": "u"},
            {"type": "track", "userId": "u", "event": "E", "properties": [1]},
            {"type": "track", "userId": "u", "event": "E", "timestamp": "yesterday"},
            {"type": "group", "userId": "u"},
            {"type": "alias", "userId": "u"},
            "not an object",
            {"type": "identify", "userId": "u", "traits": {"big": "x".repeat(40_000)}}
        ]}),
    );
    let reasons: Vec<String> = out.iter().map(reason).collect();
    let want = [
        "userId/anonymousId",
        "userId/anonymousId",
        "userId: expected a string or number, got an array",
        "event:",
        "type: unknown message type 'bogus'",
        "type: missing",
        "properties: expected an object, got an array",
        "timestamp: 'yesterday'",
        "groupId",
        "previousUserId",
        "expected a JSON object",
        "limit is 32768",
    ];
    for (r, w) in reasons.iter().zip(want) {
        assert!(r.contains(w), "{r:?} should contain {w:?}");
    }
}

#[test]
fn request_level_errors() {
    let e = |ep, b: &str| parse_envelope(ep, b.as_bytes()).expect_err(b);
    let bad = e(Endpoint::Batch, "{\"batch\": [}");
    assert_eq!(bad.kind, ErrorKind::BadJson);
    assert!(bad.message.contains("line 1, column 12"), "{}", bad.message);
    assert_eq!(
        e(Endpoint::Batch, "{\"batch\": []}").kind,
        ErrorKind::EmptyBatch
    );
    assert_eq!(
        e(Endpoint::Batch, "{\"batch\": {}}").kind,
        ErrorKind::BadRequest
    );
    assert_eq!(e(Endpoint::Batch, "{}").kind, ErrorKind::BadRequest);
    assert_eq!(e(Endpoint::Batch, "[1]").kind, ErrorKind::BadRequest);
    assert_eq!(
        e(Endpoint::Single(MessageType::Track), "{\"writeKey\": 5}").kind,
        ErrorKind::BadRequest
    );
}

#[test]
fn single_endpoints_force_the_type_and_read_the_write_key() {
    let body = br#"{"writeKey":"k","userId":"u","event":"Signed Up","type":"identify"}"#;
    let env = parse_envelope(Endpoint::Single(MessageType::Track), body).expect("env");
    assert_eq!(env.write_key.as_deref(), Some("k"));
    let v = valid(&env.normalize_all(&ctx())[0]);
    assert_eq!(v["type"], "track");
    assert_eq!(v["event"], "Signed Up");
}

#[test]
fn batch_context_fills_messages_without_one() {
    let out = run(
        Endpoint::Batch,
        &json!({"context": {"library": {"name": "x"}}, "batch": [
            {"type": "track", "userId": "u", "event": "E"},
            {"type": "track", "userId": "u", "event": "E", "context": {"ip": "1.2.3.4"}}
        ]}),
    );
    assert_eq!(valid(&out[0])["context"]["library"]["name"], "x");
    assert_eq!(valid(&out[1])["context"], json!({"ip": "1.2.3.4"}));
}

#[test]
fn tracking_plan_decides() {
    use std::collections::HashMap;
    let mut events = HashMap::new();
    events.insert(
        "Order Completed".to_string(),
        json!({"required": ["revenue"]}),
    );
    let plan = TrackingPlan::new(
        &events,
        crate::PlanAction::Reject,
        crate::PlanAction::Quarantine,
    )
    .expect("plan");
    let body = serde_json::to_vec(&json!({"batch": [
        {"type": "track", "userId": "u", "event": "Order Completed", "properties": {"revenue": 1}},
        {"type": "track", "userId": "u", "event": "Order Completed", "properties": {}},
        {"type": "track", "userId": "u", "event": "Unplanned"},
        {"type": "identify", "userId": "u"}
    ]}))
    .expect("json");
    let env = parse_envelope(Endpoint::Batch, &body).expect("env");
    let out = env.normalize_all(&NormalizeCtx {
        plan: Some(&plan),
        ..ctx()
    });
    assert!(matches!(out[0], Outcome::Valid(_)));
    assert!(
        matches!(&out[1], Outcome::Invalid(i) if i.disposition == Disposition::Quarantine && i.code == "schema_violation")
    );
    assert!(
        matches!(&out[2], Outcome::Invalid(i) if i.disposition == Disposition::Reject && i.code == "unplanned_event")
    );
    assert!(
        matches!(out[3], Outcome::Valid(_)),
        "plans cover track events"
    );
}

#[test]
fn escaped_keys_and_duplicates_are_handled() {
    let body = br#"{"batch":[{"type":"track","userId":"u","event":"E","\u0070roperties":{"a":1},"event":"F"}]}"#;
    let env = parse_envelope(Endpoint::Batch, body).expect("env");
    let v = valid(&env.normalize_all(&ctx())[0]);
    assert_eq!(v["properties"]["a"], 1);
    assert_eq!(v["event"], "F", "the last duplicate wins");
}

proptest! {
    /// Skew correction: whatever the client clock's error, the corrected time is the
    /// receive time minus how long the event waited on the device.
    #[test]
    fn skew_correction_cancels_the_client_clock_error(
        wait_ms in 0i64..86_400_000,
        skew_ms in -86_400_000i64..86_400_000,
        queued_ms in 0i64..60_000,
    ) {
        let true_event = NOW - wait_ms - queued_ms;
        let original = true_event + skew_ms;
        let sent = NOW - queued_ms + skew_ms; // the device's clock when it sent
        let msg = json!({"type": "track", "userId": "u", "event": "E",
            "originalTimestamp": format_rfc3339_millis(original),
            "sentAt": format_rfc3339_millis(sent)});
        let v = valid(&run(Endpoint::Batch, &json!({"batch": [msg]}))[0]);
        prop_assert_eq!(v["timestamp"].as_str().map(str::to_string), Some(format_rfc3339_millis(NOW - wait_ms)));
        // The same on the batch's sentAt.
        let msg = json!({"type": "track", "userId": "u", "event": "E", "originalTimestamp": format_rfc3339_millis(original)});
        let v = valid(&run(Endpoint::Batch, &json!({"sentAt": format_rfc3339_millis(sent), "batch": [msg]}))[0]);
        prop_assert_eq!(v["timestamp"].as_str().map(str::to_string), Some(format_rfc3339_millis(NOW - wait_ms)));
    }

    #[test]
    fn event_time_matches_the_reference(
        ts in prop::option::of(0i64..4_000_000_000_000),
        orig in prop::option::of(0i64..4_000_000_000_000),
        sent in prop::option::of(0i64..4_000_000_000_000),
    ) {
        // Reference: Segment's documented precedence, written out plainly.
        let want = if let Some(t) = ts { t }
            else if let (Some(o), Some(s)) = (orig, sent) { NOW - (s - o) }
            else if let Some(o) = orig { o }
            else { NOW };
        prop_assert_eq!(event_time(NOW, ts, orig, sent), want);
    }

    /// Arbitrary bytes never panic the decoder; they are either an error or messages.
    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(env) = parse_envelope(Endpoint::Batch, &body) {
            let _ = env.normalize_all(&ctx());
        }
    }
}

fn arb_message() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        Just(Value::Null),
        "[a-z0-9]{1,8}".prop_map(Value::from),
        (0i64..1000).prop_map(Value::from),
        Just(json!(["bad"])),
    ];
    let kind = prop::sample::select(vec![
        "track", "identify", "page", "screen", "group", "alias", "bogus",
    ]);
    let props = prop::collection::btree_map(
        "[a-z\\\\\"é]{1,5}",
        prop_oneof![
            (0i64..100).prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            Just(json!({"nested": [1, {"x": "y\"z"}]})),
        ],
        0..4,
    );
    (
        kind,
        id.clone(),
        id,
        prop::option::of("[A-Z][a-z ]{0,10}"),
        props,
        prop::option::of(0i64..4_000_000_000_000),
        any::<bool>(),
    )
        .prop_map(|(k, uid, aid, event, props, ts, with_id)| {
            let mut m = json!({"type": k, "userId": uid, "anonymousId": aid, "properties": props,
                "groupId": "g", "previousUserId": "p", "name": "n"});
            if let Some(e) = event {
                m["event"] = json!(e);
            }
            if let Some(t) = ts {
                m["originalTimestamp"] = json!(format_rfc3339_millis(t));
            }
            if with_id {
                m["messageId"] = json!(format!("id-{}", m.to_string().len()));
            }
            m
        })
}

proptest! {
    /// The one-pass batch reader and the item-by-item reader agree on every message.
    #[test]
    fn fast_and_item_by_item_batch_readers_agree(msgs in prop::collection::vec(arb_message(), 1..8)) {
        let fast = run(Endpoint::Batch, &json!({"sentAt": "2025-11-22T10:15:00Z", "batch": msgs}));
        // A trailing non-object forces the item-by-item path.
        let mut with_junk = msgs.clone();
        with_junk.push(json!("junk"));
        let slow = run(Endpoint::Batch, &json!({"sentAt": "2025-11-22T10:15:00Z", "batch": with_junk}));
        prop_assert_eq!(slow.len(), fast.len() + 1);
        for (f, s) in fast.iter().zip(&slow) {
            match (f, s) {
                (Outcome::Valid(a), Outcome::Valid(b)) => {
                    prop_assert_eq!(&a.payload, &b.payload);
                    prop_assert_eq!(a.dedup_key, b.dedup_key);
                }
                (Outcome::Invalid(a), Outcome::Invalid(b)) => {
                    prop_assert_eq!(&a.reason, &b.reason);
                    prop_assert_eq!(&a.raw, &b.raw, "the quarantined text is the item as sent");
                }
                _ => prop_assert!(false, "paths disagree: {:?} vs {:?}", f, s),
            }
        }
        prop_assert!(matches!(slow.last(), Some(Outcome::Invalid(i)) if i.reason.contains("expected a JSON object")));
    }
}
