//! Segments over HTTP against the real binary: rules checked with positions, a segment
//! created through the API filled from history at once, members (JSON and CSV), a
//! profile's segments, editing, deleting, built-ins protected, and live updates.

use serde_json::{json, Value};

use crate::common::{admin_get, client, post, TestServer, ADMIN};
use crate::profiles::caught_up;

async fn admin(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = client().request(method, url).bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn order(user: &str, revenue: f64) -> Value {
    json!({"type": "track", "userId": user, "event": "Order Completed", "properties": {"revenue": revenue}})
}

pub(crate) async fn send(base: &str, msgs: Vec<Value>) {
    let (s, v, _) = post(
        &format!("{base}/v1/batch"),
        json!({"batch": msgs}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    caught_up(base).await;
}

async fn segments_of(base: &str, user: &str) -> Vec<String> {
    let (s, p) = admin_get(&format!("{base}/v1/profiles?user_id={user}")).await;
    assert_eq!(s, 200, "{p}");
    let id = p["id"].as_str().unwrap();
    let (s, v) = admin_get(&format!("{base}/v1/profiles/{id}/segments")).await;
    assert_eq!(s, 200, "{v}");
    v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["segment"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn segments_are_defined_backfilled_listed_and_kept_current() {
    let srv = TestServer::start();
    let base = srv.url();
    send(
        &base,
        vec![
            order("big", 700.0),
            order("big", 900.0),
            order("small", 20.0),
            json!({"type": "identify", "userId": "small", "traits": {"city": "İzmir"}}),
        ],
    )
    .await;
    // The built-in lifecycle segments are there and already current.
    let (s, v) = admin_get(&format!("{base}/v1/segments")).await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for b in ["New", "Active", "At-Risk", "Lost", "VIP", "Undecided"] {
        assert!(names.contains(&b), "{b} in {names:?}");
    }
    assert!(segments_of(&base, "big")
        .await
        .contains(&"Active".to_string()));

    // A rule with a mistake is refused with where and what was expected.
    let url = format!("{base}/v1/segments");
    let (s, v) = admin(
        reqwest::Method::POST,
        &url,
        Some(json!({"name": "Spenders", "rule": "sum(Order Completed.revenue in 365d) >\n  lots"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["code"], "rule_syntax");
    assert_eq!(v["details"]["line"], 2, "{v}");
    assert_eq!(v["details"]["column"], 3, "{v}");

    // A new segment is filled from history before the answer (its window is new, so
    // its feature is computed from the log).
    let (s, v) = admin(
        reqwest::Method::POST,
        &url,
        Some(json!({"name": "Spenders", "rule": "sum(Order Completed.revenue in 400d) > 1000", "description": "big baskets"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["size"], 1, "{v}");
    assert_eq!(v["source"], "api");
    assert!(
        v["backfill"]["backfilled_events"].as_u64().unwrap() >= 3,
        "{v}"
    );
    let (s, v) = admin(
        reqwest::Method::POST,
        &url,
        Some(json!({"name": "Spenders", "rule": "count(Order Completed) > 0"})),
    )
    .await;
    assert_eq!(s, 409, "{v}");

    // The JSON form of a rule works too, and may refer to other segments.
    let (s, v) = admin(
        reqwest::Method::POST,
        &format!("{base}/v1/rules/check"),
        Some(json!({"rule": "trait.city = \"İzmir\" and not segment(\"Spenders\")"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin(
        reqwest::Method::POST,
        &url,
        Some(json!({"name": "Izmir small", "rule_json": v["rule_json"]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["size"], 1, "{v}");

    // Members, as JSON and as CSV.
    let (s, v) = admin_get(&format!("{base}/v1/segments/Spenders/members")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    let csv = client()
        .get(format!("{base}/v1/segments/Spenders/members?format=csv"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.starts_with("profile,since\n"));

    // Live: an event moves "small" into Spenders at once and out of "Izmir small".
    send(&base, vec![order("small", 2000.0)]).await;
    let segs = segments_of(&base, "small").await;
    assert!(segs.contains(&"Spenders".to_string()), "{segs:?}");
    assert!(!segs.contains(&"Izmir small".to_string()), "{segs:?}");
    let (_, v) = admin_get(&format!("{base}/v1/segments/Spenders")).await;
    assert_eq!(v["size"], 2, "{v}");

    // Editing refills; deleting removes; built-ins cannot be changed through the API.
    let (s, v) = admin(
        reqwest::Method::PUT,
        &format!("{base}/v1/segments/Spenders"),
        Some(json!({"rule": "sum(Order Completed.revenue in 400d) > 1900"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["size"], 1, "{v}");
    let (s, _) = admin(
        reqwest::Method::DELETE,
        &format!("{base}/v1/segments/Izmir%20small"),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = admin_get(&format!("{base}/v1/segments/Izmir%20small")).await;
    assert_eq!(s, 404);
    let (s, v) = admin(
        reqwest::Method::DELETE,
        &format!("{base}/v1/segments/VIP"),
        None,
    )
    .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = admin(
        reqwest::Method::DELETE,
        &format!("{base}/v1/segments/Nope"),
        None,
    )
    .await;
    assert_eq!(s, 404, "{v}");
}

/// A backfill reads back only the properties its new features need: filters on the
/// first and the second step of a sequence, a nested path and a page's path given only in
/// its context, none of them read by any other segment, all come from history.
#[tokio::test]
async fn a_backfill_reads_the_properties_its_new_features_filter_on() {
    let srv = TestServer::start();
    let base = srv.url();
    let viewed = |user: &str, sku: &str| json!({"type": "track", "userId": user, "event": "Product Viewed", "properties": {"sku": sku}});
    let added = |user: &str, sku: &str| json!({"type": "track", "userId": user, "event": "Product Added", "properties": {"sku": sku}});
    let coupon = |user: &str, code: &str| json!({"type": "track", "userId": user, "event": "Order Completed", "properties": {"revenue": 10, "coupon": {"code": code}}});
    send(
        &base,
        vec![
            viewed("a", "K-1"),
            added("a", "K-1"),
            viewed("b", "K-1"),
            added("b", "K-2"),
            viewed("c", "K-2"),
            added("c", "K-1"),
            coupon("a", "SPRING"),
            coupon("b", "AUTUMN"),
            // A page's path may come only in its context.
            json!({"type": "page", "userId": "b", "context": {"page": {"path": "/pricing"}}}),
            json!({"type": "page", "userId": "c", "properties": {"path": "/blog"}}),
        ],
    )
    .await;
    let url = format!("{base}/v1/segments");
    for (name, rule, members) in [
        (
            "K-1 journey",
            r#"Product Viewed where sku = "K-1" then Product Added where sku = "K-1" within 1h in 30d"#,
            &["a"][..],
        ),
        (
            "Spring coupon",
            r#"count(Order Completed where coupon.code = "SPRING" in 30d) >= 1"#,
            &["a"][..],
        ),
        (
            "Pricing readers",
            r#"count(Page Viewed where path = "/pricing" in 30d) >= 1"#,
            &["b"][..],
        ),
        (
            "Added K-1",
            r#"count(Product Added where sku = "K-1" in 30d) >= 1"#,
            &["a", "c"][..],
        ),
    ] {
        let (s, v) = admin(
            reqwest::Method::POST,
            &url,
            Some(json!({"name": name, "rule": rule})),
        )
        .await;
        assert_eq!(s, 201, "{name}: {v}");
        assert_eq!(v["size"], members.len(), "{name}: {v}");
        for user in ["a", "b", "c"] {
            let inside = segments_of(&base, user).await.contains(&name.to_string());
            assert_eq!(inside, members.contains(&user), "{name}: {user}");
        }
    }
}

#[tokio::test]
async fn api_segments_survive_a_restart() {
    let mut srv = TestServer::start();
    let base = srv.url();
    send(&base, vec![order("a", 5.0), order("b", 50.0)]).await;
    let (s, v) = admin(
        reqwest::Method::POST,
        &format!("{base}/v1/segments"),
        Some(json!({"name": "Fifty", "rule": "max(Order Completed.revenue) >= 50"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    srv.kill9();
    srv.spawn();
    let base = srv.url();
    caught_up(&base).await;
    let (s, v) = admin_get(&format!("{base}/v1/segments/Fifty")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["size"], 1, "{v}");
    assert_eq!(segments_of(&base, "b").await, vec!["New", "Fifty"]);
}

#[tokio::test]
async fn entries_and_exits_stream_live_over_sse() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let srv = TestServer::start();
    let base = srv.url();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", srv.port))
        .await
        .unwrap();
    conn.write_all(
        format!(
            "GET /v1/stream/segments?segment=Undecided HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut lines = BufReader::new(conn).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    send(
        &base,
        vec![
            json!({"type": "track", "userId": "s1", "event": "Product Viewed"}),
            json!({"type": "track", "userId": "s1", "event": "Product Added"}),
        ],
    )
    .await;
    send(&base, vec![order("s1", 10.0)]).await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen.len() < 2 {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        if let Some(e) = line.strip_prefix("event: ") {
            seen.push(e.to_string());
        }
        if let Some(d) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).unwrap();
            assert_eq!(v["segment"], "Undecided", "only the segment asked for: {v}");
            assert!(v["profile"].as_str().unwrap().starts_with("p_"));
        }
    }
    assert_eq!(seen, vec!["segment entered", "segment exited"]);
}
