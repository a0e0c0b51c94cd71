//! Dry runs, side-by-side segment versions, sizes over time and RFM over HTTP against the
//! real binary.

use serde_json::{json, Value};

use crate::common::{admin_get, client, TestServer, ADMIN};
use crate::profiles::caught_up;
use crate::segments::send;

const DAY: i64 = 86_400_000;

/// Segment sizes sampled every second.
const SAMPLED: &str = r#"
[profiles]
segment_size_sample_seconds = 1
[[sources]]
name = "web"
write_key = "test-write-key"
"#;

async fn admin_post(url: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(url)
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn iso(t: i64) -> String {
    niyet_model::format_rfc3339_millis(t)
}

fn now_ms() -> i64 {
    use niyet_model::Clock;
    niyet_model::SystemClock.now_ms()
}

/// Customer `c{i}` (i in 0..10): i + 1 orders of 100·(i + 1) each, the last one
/// 10 − i days ago (so c9 ordered most recently, most often and spent most).
fn history() -> Vec<Value> {
    let now = now_ms();
    let mut msgs = Vec::new();
    for i in 0..10i64 {
        for k in 0..=i {
            msgs.push(json!({
                "type": "track", "userId": format!("c{i}"), "event": "Order Completed",
                "properties": {"revenue": 100 * (i + 1)},
                "timestamp": iso(now - (10 - i) * DAY - (i - k) * 3_600_000),
            }));
        }
    }
    msgs
}

async fn profile_id(base: &str, user: &str) -> String {
    let (s, p) = admin_get(&format!("{base}/v1/profiles?user_id={user}")).await;
    assert_eq!(s, 200, "{p}");
    p["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_dry_run_counts_what_saving_would_hold_and_two_versions_compare() {
    let srv = TestServer::start_with_config(Some(SAMPLED));
    let base = srv.url();
    send(&base, history()).await;

    // All-time revenue is a feature no segment keeps: the dry run reads it from the log.
    // c_i spent 100·(i+1)², over 2,000 from c4 on.
    let (s, v) = admin_post(
        &format!("{base}/v1/rules/preview"),
        json!({"rule": "sum(Order Completed.revenue) > 2000", "sample": 3}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["would_match"], 6, "{v}");
    assert_eq!(v["profiles"], 10, "{v}");
    assert_eq!(v["new_features"], 1, "{v}");
    assert_eq!(v["backfilled_events"], 55, "every order read back: {v}");
    assert_eq!(v["sample"].as_array().unwrap().len(), 3, "{v}");
    // Over features already kept (the built-ins count orders in 90 days), and referring
    // to a segment in force.
    let (s, v) = admin_post(
        &format!("{base}/v1/rules/preview"),
        json!({"rule": "count(Order Completed in 90d) >= 7 and segment(\"Active\")"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["new_features"], 0, "{v}");
    assert_eq!(v["would_match"], 4, "c6..c9: {v}");
    let (s, v) = admin_post(
        &format!("{base}/v1/rules/preview"),
        json!({"rule": "count(Order Completed in 90d) >= "}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["code"], "rule_syntax", "{v}");
    let (s, v) = admin_post(
        &format!("{base}/v1/rules/preview"),
        json!({"rule": "segment(\"Nope\")"}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("Nope"), "{v}");
    // Nothing was saved.
    let (_, v) = admin_get(&format!("{base}/v1/segments")).await;
    assert_eq!(
        v["segments"].as_array().unwrap().len(),
        6,
        "built-ins only: {v}"
    );

    // Saved, the segment holds what the dry run said.
    let url = format!("{base}/v1/segments");
    let (s, v) = admin_post(
        &url,
        json!({"name": "Big v1", "rule": "sum(Order Completed.revenue) > 2000"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["size"], 6, "{v}");
    let (s, v) = admin_post(
        &url,
        json!({"name": "Big v2", "rule": "count(Order Completed) >= 7"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["size"], 4, "{v}");

    // c4 (in v1 only) orders again after entering: v1 converts 1 of 6, v2 0 of 4.
    send(
        &base,
        vec![
            json!({"type": "track", "userId": "c4", "event": "Order Completed",
                    "properties": {"revenue": 10}}),
        ],
    )
    .await;
    let (s, v) = admin_get(&format!("{base}/v1/segments/Big%20v1/compare/Big%20v2")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["a"]["size"], 6, "{v}");
    assert_eq!(v["b"]["size"], 4, "{v}");
    assert_eq!(v["overlap"], 4, "{v}");
    assert_eq!(v["only_a"], 2, "{v}");
    assert_eq!(v["only_b"], 0, "{v}");
    assert_eq!(v["a"]["converted"], 1, "{v}");
    assert_eq!(v["b"]["converted"], 0, "{v}");
    assert!(
        (v["jaccard"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9,
        "{v}"
    );
    let (s, v) = admin_get(&format!("{base}/v1/segments/Big%20v1/compare/Nope")).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["code"], "segment_not_found");

    // Sizes over time: one sample per second of processing time, on whole seconds.
    let mut points = Vec::new();
    for _ in 0..50 {
        let (s, v) = admin_get(&format!("{base}/v1/segments/Big%20v1/sizes")).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["size"], 6, "{v}");
        assert_eq!(v["interval_seconds"], 1, "{v}");
        points = v["points"].as_array().unwrap().clone();
        if points.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(points.len() >= 2, "{points:?}");
    let times: Vec<i64> = points
        .iter()
        .map(|p| niyet_model::parse_timestamp(p["time"].as_str().unwrap()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert!(times.iter().all(|t| t % 1000 == 0), "{times:?}");
    assert_eq!(points.last().unwrap()["size"], 6, "{points:?}");
    let (s, v) = admin_get(&format!("{base}/v1/segments/Nope/sizes")).await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test]
async fn size_history_survives_a_crash() {
    let mut srv = TestServer::start_with_config(Some(SAMPLED));
    let base = srv.url();
    send(&base, history()).await;
    let url = format!("{base}/v1/segments/Active/sizes");
    let mut before = Vec::new();
    for _ in 0..50 {
        before = admin_get(&url).await.1["points"]
            .as_array()
            .unwrap()
            .clone();
        if !before.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(!before.is_empty());
    srv.kill9();
    srv.spawn();
    let base = srv.url();
    caught_up(&base).await;
    let (_, v) = admin_get(&format!("{base}/v1/segments/Active/sizes")).await;
    let after = v["points"].as_array().unwrap();
    assert!(
        after.starts_with(&before[..1]),
        "the first sample is kept: {before:?} vs {after:?}"
    );
}

#[tokio::test]
async fn rfm_scores_follow_the_customer_base() {
    let srv = TestServer::start();
    let base = srv.url();
    send(&base, history()).await;
    let (s, v) = admin_get(&format!("{base}/v1/rfm")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["customers"], 10, "{v}");
    let sizes: u64 = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["size"].as_u64().unwrap())
        .sum();
    assert_eq!(sizes, 10, "every customer in one group: {v}");
    // Ten distinct values per measure: two customers per score.
    assert_eq!(v["scores"]["r"], json!([2, 2, 2, 2, 2]), "{v}");
    assert_eq!(
        v["cuts"]["frequency"][0],
        json!({"score": 2, "above": 2}),
        "{v}"
    );

    let c9 = profile_id(&base, "c9").await;
    let (s, v) = admin_get(&format!("{base}/v1/profiles/{c9}/rfm")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rfm"], "555", "{v}");
    assert_eq!(v["group"], "Champions", "{v}");
    assert_eq!(v["orders"], 10);
    let c0 = profile_id(&base, "c0").await;
    let (_, v) = admin_get(&format!("{base}/v1/profiles/{c0}/rfm")).await;
    assert_eq!(v["rfm"], "111", "{v}");
    assert_eq!(v["group"], "Hibernating", "{v}");
    assert!(
        (v["days_since_last_order"].as_f64().unwrap() - 10.0).abs() < 0.2,
        "{v}"
    );

    let (s, v) = admin_get(&format!("{base}/v1/rfm/members?group=champions")).await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<&str> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["profile"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&c9.as_str()), "{v}");
    assert!(!ids.contains(&c0.as_str()), "{v}");
    let (s, v) = admin_get(&format!("{base}/v1/rfm/members?group=Whales")).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["code"], "invalid_parameter");
    let r = client()
        .get(format!("{base}/v1/rfm/members?format=csv"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csv = r.text().await.unwrap();
    assert_eq!(csv.lines().count(), 11, "{csv}");
    assert!(csv.starts_with("profile,r,f,m,group,"), "{csv}");

    // c0 comes back with a big order spree: the base changes, so do the scores.
    let spree = (0..12)
        .map(|_| {
            json!({"type": "track", "userId": "c0", "event": "Order Completed",
                        "properties": {"revenue": 1000}})
        })
        .collect();
    send(&base, spree).await;
    let (_, v) = admin_get(&format!("{base}/v1/profiles/{c0}/rfm")).await;
    assert_eq!(v["rfm"], "555", "{v}");
    assert_eq!(v["group"], "Champions", "{v}");
    let (_, v) = admin_get(&format!("{base}/v1/profiles/{c9}/rfm")).await;
    assert_eq!(
        v["scores"]["f"], 5,
        "c9 still among the top fifth by orders: {v}"
    );
    assert_eq!(
        v["scores"]["r"], 5,
        "second most recent of ten is still the top fifth: {v}"
    );

    // A profile with no order has no scores.
    send(
        &base,
        vec![json!({"type": "identify", "userId": "browser", "traits": {"city": "Bursa"}})],
    )
    .await;
    let b = profile_id(&base, "browser").await;
    let (s, v) = admin_get(&format!("{base}/v1/profiles/{b}/rfm")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["scores"], Value::Null, "{v}");
}

#[tokio::test]
async fn the_status_page_charts_segment_sizes_with_names_escaped() {
    let srv = TestServer::start();
    let base = srv.url();
    send(&base, history()).await;
    let (s, v) = admin_post(
        &format!("{base}/v1/segments"),
        json!({"name": "<script>alert(1)</script>", "rule": "count(Order Completed) >= 9"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let page = client()
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<svg"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>"), "{page}");
    // c8 and c9: the bar's label is the size.
    assert!(page.contains(">2</text>"), "{page}");
    assert!(page.contains("10 profiles"), "{page}");
}
