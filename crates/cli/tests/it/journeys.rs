//! Actions survive `kill -9`: the server acts while its webhook receiver is down, is
//! killed, and after a restart every action is delivered, waits included, each with one
//! idempotency key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A port held for a receiver that starts later: bound but not listening, so connections
/// to it are refused and no other test can take it meanwhile.
fn held_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let port = s.local_addr().expect("address").port();
    (s, port)
}

async fn receiver(held: tokio::net::TcpSocket) -> Seen {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app =
        axum::Router::new().fallback(move |h: axum::http::HeaderMap, body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                let key = h
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                s.lock().expect("seen").push((key, v));
                "ok"
            }
        });
    let l = held.listen(1024).expect("receiver port");
    tokio::spawn(async move { axum::serve(l, app).await });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_actions_are_delivered_after_sigkill() {
    let (held, port) = held_port();
    let config = format!(
        r#"
[[sources]]
name = "web"
write_key = "{WRITE_KEY}"

[lifecycle]
enabled = false

[[destinations]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{port}/hook"
timeout_ms = 500
backoff_ms = 50
max_backoff_ms = 200
max_attempts = 1000

[[triggers]]
name = "Welcome"
when = {{ event = "Signed Up" }}
then = ["hook"]

[[triggers]]
name = "Cart abandoned"
when = {{ event = "Product Added" }}
wait = "3s"
unless = ["Order Completed"]
then = ["hook"]
"#
    );
    let mut srv = TestServer::start_with_config(Some(&config));
    let http = client();
    let batch: Vec<Value> = (0..20)
        .map(|i| json!({"type": "track", "userId": format!("s{i}"), "event": "Signed Up", "messageId": format!("su{i}")}))
        .chain((0..10).map(|i| json!({"type": "track", "userId": format!("c{i}"), "event": "Product Added", "messageId": format!("pa{i}")})))
        .collect();
    let r = http
        .post(format!("{}/v1/batch", srv.url()))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"batch": batch}))
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 200);
    // The welcome actions are in the outbox, failing against the closed port.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d: Value = http
            .get(format!("{}/v1/destinations", srv.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("destinations")
            .json()
            .await
            .expect("json");
        if d["outbox_records"].as_u64().unwrap_or(0) >= 20
            && d["destinations"][0]["retries"].as_u64().unwrap_or(0) > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "actions did not reach the outbox: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    srv.kill9();
    let seen = receiver(held).await;
    srv.spawn();
    // Twenty welcomes at once, ten abandoned carts once their wait has passed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let keys = loop {
        let got = seen.lock().expect("seen").clone();
        let keys: BTreeSet<String> = got.iter().map(|(k, _)| k.clone()).collect();
        if keys.len() >= 30 {
            break got;
        }
        assert!(Instant::now() < deadline, "{} of 30 delivered", keys.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = seen.lock().expect("seen").clone();
    assert!(got.len() >= keys.len());
    // One key per (trigger, profile): a redelivery, if any, carries the same key.
    let mut by_run: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (k, v) in &got {
        by_run
            .entry((
                v["trigger"].as_str().unwrap_or_default().into(),
                v["profile"]["id"].as_str().unwrap_or_default().into(),
            ))
            .or_default()
            .insert(k.clone());
    }
    assert_eq!(by_run.len(), 30, "{by_run:?}");
    assert!(by_run.values().all(|k| k.len() == 1), "{by_run:?}");
    assert_eq!(
        by_run.keys().filter(|(t, _)| t == "Cart abandoned").count(),
        10
    );
}
