//! Identity resolution and profiles, end to end over HTTP against the real binary.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{admin_get, client, post, TestServer, ADMIN, WRITE_KEY};

const MOBILE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
const DESKTOP_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0";

/// Waits until every logged event is reflected in profiles.
pub async fn caught_up(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = admin_get(&format!("{base}/v1/pipeline")).await;
        assert_eq!(s, 200, "{v}");
        if v["caught_up"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "pipeline did not catch up: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn batch(base: &str, msgs: Vec<Value>) {
    let (s, v, _) = post(
        &format!("{base}/v1/batch"),
        json!({"batch": msgs}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["quarantined"], 0, "{v}");
}

async fn find(base: &str, q: &str) -> Value {
    let (s, v) = admin_get(&format!("{base}/v1/profiles?{q}")).await;
    assert_eq!(s, 200, "lookup {q}: {v}");
    v
}

fn web(anon: &str, ua: &str, kind: &str, t: &str, extra: Value) -> Value {
    let mut m = json!({
        "type": kind,
        "anonymousId": anon,
        "timestamp": t,
        "context": {"userAgent": ua, "page": {"path": "/"}, "campaign": {"source": "instagram", "medium": "social"}},
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut m, extra) {
        m.extend(e);
    }
    m
}

#[tokio::test]
async fn a_shopper_across_mobile_desktop_and_store_is_one_profile() {
    let srv = TestServer::start();
    let base = srv.url();
    // Mobile, anonymous: browses from an Instagram ad and leaves an e-mail for a coupon.
    batch(
        &base,
        vec![
            web(
                "mob-1",
                MOBILE_UA,
                "page",
                "2026-03-01T10:00:00Z",
                json!({"name": "Home"}),
            ),
            web(
                "mob-1",
                MOBILE_UA,
                "track",
                "2026-03-01T10:01:00Z",
                json!({"event": "Product Viewed", "properties": {"sku": "K-1", "price": 1499.9}}),
            ),
            web(
                "mob-1",
                MOBILE_UA,
                "identify",
                "2026-03-01T10:02:00Z",
                json!({"traits": {"email": "Ayse.Yilmaz@Example.com", "newsletter": true}}),
            ),
        ],
    )
    .await;
    // Desktop, anonymous, the same evening; then logs in and buys.
    batch(&base, vec![
        web("desk-1", DESKTOP_UA, "track", "2026-03-01T20:00:00Z", json!({"event": "Product Viewed", "properties": {"sku": "K-1"}})),
        web("desk-1", DESKTOP_UA, "track", "2026-03-01T20:05:00Z", json!({"event": "Product Added", "properties": {"sku": "K-1"}})),
        web("desk-1", DESKTOP_UA, "identify", "2026-03-01T20:06:00Z", json!({"userId": "u-42", "traits": {"email": "ayse.yilmaz@example.com", "name": "Ayşe Yılmaz", "phone": "0532 123 45 67", "city": "İzmir"}})),
        web("desk-1", DESKTOP_UA, "track", "2026-03-01T20:10:00Z", json!({"userId": "u-42", "event": "Order Completed", "properties": {"order_id": "W-1", "revenue": 1499.9, "currency": "TRY"}})),
    ]).await;
    caught_up(&base).await;
    // Later she buys in a store: the POS export has the e-mail and the receipt number.
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("pos.csv");
    std::fs::write(&csv, "receipt_no,email,total,store,date\nR-9001,AYSE.YILMAZ@EXAMPLE.COM,350.50,Alsancak,2026-03-10T15:30:00Z\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_niyet"))
        .args([
            "import",
            "--no-progress",
            "--url",
            &base,
            "--write-key",
            WRITE_KEY,
            "--event",
            "Order Completed",
        ])
        .args([
            "--map",
            "anonymousId=receipt_no",
            "--map",
            "context.traits.email=email",
        ])
        .args([
            "--map",
            "properties.revenue=total",
            "--map",
            "timestamp=date",
            "--map",
            "context.channel=store",
        ])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    caught_up(&base).await;

    // One profile, whichever identifier asks.
    let p = find(&base, "email=ayse.yilmaz@example.com").await;
    let id = p["id"].as_str().unwrap().to_string();
    for q in [
        "user_id=u-42",
        "anonymous_id=mob-1",
        "anonymous_id=desk-1",
        "anonymous_id=R-9001",
        "phone=%2B90%20532%20123%2045%2067",
        "email=%20AYSE.YILMAZ@example.com",
    ] {
        assert_eq!(find(&base, q).await["id"], json!(id), "{q}");
    }
    let (s, all) = admin_get(&format!("{base}/v1/profiles")).await;
    assert_eq!(s, 200);
    assert_eq!(all["profiles"].as_array().unwrap().len(), 1, "{all}");

    // Everything she did, and the right purchase summary.

    assert_eq!(p["event_count"], 8, "{p}");
    assert_eq!(p["purchases"]["orders"], 2);
    assert_eq!(p["purchases"]["revenue"], 1850.4);
    assert_eq!(p["purchases"]["average_basket"], 925.2);
    assert_eq!(p["purchases"]["first_order"], "2026-03-01T20:10:00.000Z");
    assert_eq!(p["purchases"]["last_order"], "2026-03-10T15:30:00.000Z");
    assert_eq!(p["first_seen"], "2026-03-01T10:00:00.000Z");
    assert_eq!(p["event_counts"]["Product Viewed"], 2);
    assert_eq!(p["event_counts"]["Page Viewed"], 1);
    assert_eq!(p["traits"]["city"]["value"], "İzmir");
    assert_eq!(p["traits"]["name"]["value"], "Ayşe Yılmaz");
    // The newest e-mail spelling wins (last writer by event time), with its time.
    assert_eq!(p["traits"]["email"]["value"], "AYSE.YILMAZ@EXAMPLE.COM");
    let mut devices: Vec<&str> = p["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    devices.sort();
    assert_eq!(devices, ["desktop", "mobile"]);
    let channels = p["channels"].as_array().unwrap();
    assert!(
        channels.contains(&json!("web")) && channels.contains(&json!("Alsancak")),
        "{channels:?}"
    );

    // The merge history is explained.
    let (s, ident) = admin_get(&format!("{base}/v1/profiles/{id}/identity")).await;
    assert_eq!(s, 200);
    let history = ident["history"].as_array().unwrap();
    let merges: Vec<&Value> = history
        .iter()
        .filter(|h| h["type"] == "profile merged")
        .collect();
    assert_eq!(merges.len(), 1, "{ident}");
    assert_eq!(merges[0]["rule"], "shared identifier");
    let ids = ident["identifiers"].as_array().unwrap();
    let desk = ids
        .iter()
        .find(|i| i["identifier"]["value"] == "desk-1")
        .unwrap();
    assert_eq!(desk["via_merges"].as_array().unwrap().len(), 1, "{desk}");
    let merged_away = merges[0]["merged_profile"].as_str().unwrap();
    // The merged-away id keeps resolving to the survivor.
    let (s, old) = admin_get(&format!("{base}/v1/profiles/{merged_away}")).await;
    assert_eq!(s, 200);
    assert_eq!(old["id"], json!(id));

    // History, newest first, paginated, with the merge as an entry.
    let (s, page1) = admin_get(&format!("{base}/v1/profiles/{id}/events?limit=3")).await;
    assert_eq!(s, 200);
    let e = page1["entries"].as_array().unwrap();
    assert_eq!(e[0]["event"]["anonymousId"], "R-9001");
    let before = page1["next_before"].as_u64().unwrap();
    let (_, page2) = admin_get(&format!(
        "{base}/v1/profiles/{id}/events?limit=100&before={before}"
    ))
    .await;
    let all_entries: Vec<&Value> = e
        .iter()
        .chain(page2["entries"].as_array().unwrap())
        .collect();
    assert_eq!(
        all_entries.iter().filter(|x| x["type"] == "event").count(),
        8
    );
    assert!(all_entries.iter().any(|x| x["type"] == "profile merged"));

    // Search by trait.
    let hits = find(&base, "trait.city=%C4%B0zmir").await;
    assert_eq!(hits["profiles"][0]["id"], json!(id));
    assert_eq!(
        find(&base, "trait.city=Ankara").await["profiles"],
        json!([])
    );

    // The CLI shows the same profile.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_niyet"))
        .args([
            "profile",
            "show",
            "ayse.yilmaz@example.com",
            "--url",
            &base,
            "--admin-token",
            ADMIN,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("Profile {id}"))
            && text.contains("2 orders")
            && text.contains("profile merged"),
        "{text}"
    );

    // Unknown identifiers and bad ids answer clearly.
    let (s, v) = admin_get(&format!("{base}/v1/profiles?email=nobody@example.com")).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("profile_not_found")));
    let (s, v) = admin_get(&format!("{base}/v1/profiles?shoe_size=42")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (s, v) = admin_get(&format!("{base}/v1/profiles/12")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_parameter")));
}

async fn unmerge(base: &str, id: &str, kind: &str, value: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/v1/profiles/{id}/unmerge"))
        .bearer_auth(ADMIN)
        .json(&json!({"type": kind, "value": value}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn merge_protection_and_unmerge() {
    let mut srv = TestServer::start();
    let base = srv.url();
    // Two people log in on one shared tablet: they stay two profiles.
    batch(&base, vec![
        json!({"type": "identify", "userId": "ali", "anonymousId": "tablet-1", "timestamp": "2026-04-01T09:00:00Z"}),
        json!({"type": "track", "userId": "ali", "anonymousId": "tablet-1", "event": "Order Completed", "properties": {"revenue": 100}, "timestamp": "2026-04-01T09:05:00Z"}),
        json!({"type": "identify", "userId": "veli", "anonymousId": "tablet-1", "timestamp": "2026-04-01T19:00:00Z"}),
        json!({"type": "track", "userId": "veli", "anonymousId": "tablet-1", "event": "Order Completed", "properties": {"revenue": 40}, "timestamp": "2026-04-01T19:05:00Z"}),
    ]).await;
    caught_up(&base).await;
    let ali = find(&base, "user_id=ali").await;
    let veli = find(&base, "user_id=veli").await;
    assert_ne!(ali["id"], veli["id"]);
    assert_eq!(ali["purchases"]["revenue"], 100.0);
    assert_eq!(veli["purchases"]["revenue"], 40.0);
    let (_, vid) = admin_get(&format!(
        "{base}/v1/profiles/{}/identity",
        veli["id"].as_str().unwrap()
    ))
    .await;
    let blocked: Vec<&Value> = vid["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["type"] == "merge blocked")
        .collect();
    assert!(!blocked.is_empty(), "{vid}");
    assert_eq!(blocked[0]["rule"], "limit user_id = 1");

    // A family e-mail wrongly joins two anonymous shoppers; an admin splits them.
    batch(&base, vec![
        json!({"type": "identify", "anonymousId": "anne", "traits": {"email": "aile@example.com"}, "timestamp": "2026-04-02T09:00:00Z"}),
        json!({"type": "track", "anonymousId": "anne", "event": "Order Completed", "properties": {"revenue": 300}, "timestamp": "2026-04-02T09:10:00Z"}),
        json!({"type": "track", "anonymousId": "ogul", "event": "Product Viewed", "timestamp": "2026-04-02T10:00:00Z"}),
        json!({"type": "track", "anonymousId": "ogul", "event": "Order Completed", "properties": {"revenue": 75}, "timestamp": "2026-04-02T10:05:00Z"}),
        json!({"type": "identify", "anonymousId": "ogul", "traits": {"email": "aile@example.com"}, "timestamp": "2026-04-02T10:06:00Z"}),
    ]).await;
    caught_up(&base).await;
    let fam = find(&base, "email=aile@example.com").await;
    let fam_id = fam["id"].as_str().unwrap().to_string();
    assert_eq!(find(&base, "anonymous_id=ogul").await["id"], json!(fam_id));
    assert_eq!(fam["purchases"]["orders"], 2);
    assert_eq!(fam["event_count"], 5);

    // Refusals first: not a member, unknown profile, bad body.
    let (s, v) = unmerge(&base, &fam_id, "anonymous_id", "tablet-1").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let (s, _) = unmerge(&base, "p_999999", "anonymous_id", "ogul").await;
    assert_eq!(s, 404);

    let (s, v) = unmerge(&base, &fam_id, "anonymous_id", "ogul").await;
    assert_eq!(s, 200, "{v}");
    let new_id = v["new_profile"].as_str().unwrap().to_string();
    let check = |base: String, fam_id: String, new_id: String| async move {
        let mother = find(&base, "email=aile@example.com").await;
        let son = find(&base, "anonymous_id=ogul").await;
        assert_eq!(mother["id"], json!(fam_id));
        assert_eq!(son["id"], json!(new_id));
        assert_eq!(find(&base, "anonymous_id=anne").await["id"], json!(fam_id));
        assert_eq!(
            (
                mother["event_count"].clone(),
                mother["purchases"]["revenue"].clone()
            ),
            (json!(2), json!(300.0))
        );
        assert_eq!(
            (
                son["event_count"].clone(),
                son["purchases"]["revenue"].clone()
            ),
            (json!(3), json!(75.0))
        );
        assert_eq!(son["event_counts"]["Product Viewed"], 1);
        assert_eq!(mother["event_counts"].get("Product Viewed"), None);
        let (_, h) = admin_get(&format!("{base}/v1/profiles/{fam_id}/identity")).await;
        assert!(
            h["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["type"] == "profile split"),
            "{h}"
        );
    };
    check(base.clone(), fam_id.clone(), new_id.clone()).await;

    // The split is in the log: after a crash and a replay it still holds.
    srv.kill9();
    srv.spawn();
    caught_up(&base).await;
    check(base.clone(), fam_id.clone(), new_id.clone()).await;
}

/// Every admin answer says where processing stood; with `Niyet-Consistent: true` it
/// waits until every event acknowledged before the request is in (read your writes).
#[tokio::test]
async fn answers_say_where_processing_stood_and_can_wait_for_it() {
    let mut srv = TestServer::start();
    let base = srv.url();
    // 20,000 events, the last batch only just acknowledged when the profile is read.
    for b in 0..200 {
        let msgs: Vec<Value> = (0..100)
            .map(|i| {
                let n = b * 100 + i;
                let t = format!(
                    "2026-03-01T{:02}:{:02}:{:02}Z",
                    10 + n / 3600,
                    n % 3600 / 60,
                    n % 60
                );
                json!({"type": "identify", "userId": "rw-1", "timestamp": t, "traits": {"step": n}})
            })
            .collect();
        batch(&base, msgs).await;
    }
    let consistent = || async {
        client()
            .get(format!("{base}/v1/profiles?user_id=rw-1"))
            .bearer_auth(ADMIN)
            .header("Niyet-Consistent", "true")
            .send()
            .await
            .unwrap()
    };
    let r = consistent().await;
    assert_eq!(r.status(), 200);
    let h = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let processed: u64 = h(&r, "niyet-processed-offset").parse().unwrap();
    let end: u64 = h(&r, "niyet-log-end-offset").parse().unwrap();
    assert!(
        end >= 20_000,
        "every acknowledged event is below the log end: {end}"
    );
    assert!(processed >= end, "{processed} < {end}");
    assert_eq!(h(&r, "niyet-caught-up"), "true");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["traits"]["step"]["value"], 19_999, "{p}");
    assert_eq!(p["event_count"], 20_000, "{p}");

    // Straight after a kill -9 the log's tail is still being replayed: the answer waits
    // for it instead of showing part of the profile.
    srv.kill9();
    srv.spawn();
    let r = consistent().await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "niyet-caught-up"), "true");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["event_count"], 20_000, "{p}");
    assert_eq!(p["traits"]["step"]["value"], 19_999, "{p}");

    // Without the header the position is there too, and agrees with itself.
    let r = client()
        .get(format!("{base}/v1/segments"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let processed: u64 = h(&r, "niyet-processed-offset").parse().unwrap();
    let end: u64 = h(&r, "niyet-log-end-offset").parse().unwrap();
    assert_eq!(h(&r, "niyet-caught-up"), (processed >= end).to_string());

    // A header that is neither true nor false is refused, with a JSON error.
    let r = client()
        .get(format!("{base}/v1/profiles?user_id=rw-1"))
        .bearer_auth(ADMIN)
        .header("Niyet-Consistent", "soon")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "invalid_header", "{e}");

    // Ingest answers carry no position (they are not derived state).
    let (s, _, headers) = post(
        &format!("{base}/v1/track"),
        json!({"userId": "rw-1", "event": "Signed Up"}).to_string(),
    )
    .await;
    assert_eq!(s, 200);
    assert!(headers.get("niyet-processed-offset").is_none());
}
