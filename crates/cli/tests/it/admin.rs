//! The admin API: events by offset and filter, quarantine list/replay/discard, tracking
//! plans, deduplication across restarts, metrics and access control.

use crate::common::*;
use serde_json::json;

const PLAN: &str = r#"
[[sources]]
name = "web"
write_key = "test-write-key"
[sources.tracking_plan]
unplanned = "accept"
invalid = "quarantine"
[sources.tracking_plan.events."Order Completed"]
type = "object"
required = ["revenue"]
properties = { revenue = { type = "number", minimum = 0 } }

[[sources]]
name = "pos"
write_key = "pos-write-key"
[sources.tracking_plan]
unplanned = "reject"
invalid = "reject"
[sources.tracking_plan.events."Order Completed"]
required = ["revenue"]
"#;

#[tokio::test]
async fn events_quarantine_replay_and_dedup_across_restart() {
    let mut srv = TestServer::start_with_config(Some(PLAN));
    let base = srv.url();
    let batch = format!("{base}/v1/batch");

    let (s, v, _) = post(&batch, json!({"batch": [
        {"type": "page", "anonymousId": "a1", "name": "Home", "messageId": "m-page"},
        {"type": "track", "anonymousId": "a1", "event": "Product Viewed", "messageId": "m-view"},
        {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 120}, "messageId": "m-order"},
        {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": "120"}, "messageId": "m-bad-order"},
        {"type": "identify", "userId": "u1", "traits": {"email": "a@example.com"}, "messageId": "m-id"}
    ]}).to_string()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], 4);
    assert_eq!(v["quarantined"], 1);
    assert_eq!(v["errors"][0]["code"], "schema_violation");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("properties.revenue: expected number"));

    // Filters and tail.
    let (_, v) = admin_get(&format!("{base}/v1/events?type=track")).await;
    assert_eq!(v["events"].as_array().map(Vec::len), Some(2));
    let (_, v) = admin_get(&format!("{base}/v1/events?event=Order%20Completed")).await;
    assert_eq!(v["events"][0]["event"]["messageId"], "m-order");
    let (_, v) = admin_get(&format!("{base}/v1/events?limit=2")).await;
    let tail: Vec<&str> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event"]["messageId"].as_str())
        .collect();
    assert_eq!(
        tail,
        vec!["m-order", "m-id"],
        "without offset: the newest, oldest first"
    );
    let (_, v) = admin_get(&format!("{base}/v1/events?offset=1&limit=1")).await;
    assert_eq!(v["events"][0]["offset"], 1);
    assert_eq!(v["next_offset"], 2);
    let (s, v) = admin_get(&format!("{base}/v1/events?type=bogus")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_parameter")));

    // Quarantine: listed with the reason; a replay of the unfixed message is refused, the fixed one lands.
    let (_, q) = admin_get(&format!("{base}/v1/quarantine")).await;
    let item = &q["items"][0];
    let id = item["id"].as_u64().expect("id");
    assert_eq!(item["status"], "pending");
    assert_eq!(item["source"], "web");
    let http = client();
    let r = http
        .post(format!("{base}/v1/quarantine/{id}/replay"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("replay");
    assert_eq!(r.status().as_u16(), 422);
    let fixed = json!({"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 120}, "messageId": "m-bad-order"});
    let r = http
        .post(format!("{base}/v1/quarantine/{id}/replay"))
        .bearer_auth(ADMIN)
        .body(fixed.to_string())
        .send()
        .await
        .expect("replay");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["offset"], 4);
    let r = http
        .post(format!("{base}/v1/quarantine/{id}/replay"))
        .bearer_auth(ADMIN)
        .body(fixed.to_string())
        .send()
        .await
        .expect("again");
    assert_eq!(
        r.status().as_u16(),
        409,
        "a settled entry cannot be replayed twice"
    );
    let (_, q) = admin_get(&format!("{base}/v1/quarantine")).await;
    assert_eq!(q["items"].as_array().map(Vec::len), Some(0));
    let (_, q) = admin_get(&format!("{base}/v1/quarantine?status=replayed")).await;
    assert_eq!(q["items"][0]["replayed_offset"], 4);

    // The other source's plan rejects: nothing stored, nothing quarantined, 400 saying why.
    let r = http
        .post(format!("{base}/v1/track"))
        .basic_auth("pos-write-key", Some(""))
        .body(r#"{"userId":"u9","event":"Mystery"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not in the tracking plan"),
        "{v}"
    );

    // Dedup: a retried messageId is answered 200 and not stored again, also after a crash.
    let again = json!({"batch": [{"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 120}, "messageId": "m-order"}]}).to_string();
    let (s, v, _) = post(&batch, again.clone()).await;
    assert_eq!(
        (s, v["duplicates"].as_u64(), v["accepted"].as_u64()),
        (200, Some(1), Some(0)),
        "{v}"
    );
    srv.kill9();
    srv.spawn();
    let (s, v, _) = post(&batch, again).await;
    assert_eq!(
        (s, v["duplicates"].as_u64()),
        (200, Some(1)),
        "dedup survives a restart: {v}"
    );
    let events = all_events(&base).await;
    assert_eq!(events.len(), 5);
    // Quarantine state survives too.
    let (_, q) = admin_get(&format!("{base}/v1/quarantine?status=replayed")).await;
    assert_eq!(q["items"].as_array().map(Vec::len), Some(1));

    // Stored events are normalised.
    let order = &events[2];
    assert_eq!(order["source"], "web");
    assert!(order["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(order.get("writeKey").is_none());
}

#[tokio::test]
async fn admin_api_requires_the_admin_token_and_metrics_report() {
    let srv = TestServer::start();
    let base = srv.url();
    let http = client();
    for path in ["/v1/events", "/v1/quarantine", "/v1/quarantine/0"] {
        let r = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 401, "{path} without a token");
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(WRITE_KEY)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 403, "{path} with a write key");
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["code"], "write_key_not_allowed");
    }
    let r = http
        .post(format!("{base}/v1/quarantine/0/replay"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(format!("{base}/v1/quarantine/99/discard"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 404);

    let (s, _, _) = post(
        &format!("{base}/v1/identify"),
        r#"{"userId":"u1","traits":{"city":"İzmir"}}"#,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = post(&format!("{base}/v1/track"), r#"{"event":"E"}"#).await;
    assert_eq!(s, 400);
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "niyet_ingest_events_total{outcome=\"accepted\"} 1",
        "niyet_ingest_events_total{outcome=\"quarantined\"} 1",
        "niyet_ingest_requests_total{status=\"200\"} 1",
        "niyet_ingest_requests_total{status=\"400\"} 1",
        "niyet_ingest_ack_seconds_count 1",
        "niyet_quarantine_pending 1",
        "niyet_log_end_offset 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack {line:?}:\n{text}"
        );
    }
    // The data directory's use of the disk, by part: the event log's files take at least
    // their records' bytes; the generated credentials are among the loose files.
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metrics lack {name}:\n{text}"))
    };
    let events = gauge("niyet_disk_bytes{part=\"events\"}");
    assert!(events >= gauge("niyet_log_bytes") && events > 0, "{text}");
    assert!(gauge("niyet_disk_bytes{part=\"quarantine\"}") > 0, "{text}");
    assert!(gauge("niyet_disk_bytes{part=\"other\"}") > 0, "{text}");
    let page = http
        .get(format!("{base}/"))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(page.contains("events stored"));
}

/// `/openapi.json` describes the API without a token; a request no route takes, or a
/// method a path does not take, gets a JSON error that says so.
#[tokio::test]
async fn the_api_is_described_and_unknown_requests_get_json_errors() {
    let srv = TestServer::start();
    let base = srv.url();
    let http = client();
    let r = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let doc: serde_json::Value = r.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let op = &doc["paths"]["/v1/segments"]["post"];
    assert_eq!(op["security"][0]["adminToken"][0], "write", "{op}");
    // Every documented path without parameters answers something other than "no route".
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path.contains('{') || item.get("get").is_none() || path.starts_with("/v1/stream") {
            continue;
        }
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("send");
        let body = r.text().await.unwrap_or_default();
        assert!(
            !body.contains("\"no_route\"") && !body.contains("\"method_not_allowed\""),
            "GET {path} is documented but not routed: {body}"
        );
    }

    let r = http
        .get(format!("{base}/v1/nothing-here"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 404);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["code"], "no_route", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("/v1/nothing-here"),
        "{v}"
    );

    let r = http
        .patch(format!("{base}/v1/segments"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 405);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["code"], "method_not_allowed", "{v}");
    assert!(v["message"].as_str().unwrap().contains("GET, POST"), "{v}");
}
