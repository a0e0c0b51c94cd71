//! Retention per event type in simulated time: page views kept a day are erased from the
//! log once a day has passed, orders stay, and the profile still answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use niyet_model::ManualClock;
use serde_json::{json, Value};

const T0: i64 = 1_767_225_600_000; // 2026-01-01
const DAY: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_views_leave_after_their_day_orders_stay() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{}"
admin_token = "retention-admin-token"
[[sources]]
name = "web"
write_key = "retention-write-key"
[log.retention_by_event]
"Page Viewed" = 1
"#,
        dir.path().join("data").display()
    );
    let cfg: niyet_server::Config = toml::from_str(&toml).unwrap();
    let rules: BTreeMap<String, u64> = cfg.log.retention_by_event.clone();
    let clock = ManualClock::new(T0);
    let server = niyet_server::Server::bind(cfg, Arc::new(clock.clone()))
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let st = server.state();
    tokio::spawn(server.run(std::future::pending()));
    let http = reqwest::Client::new();
    let send = |body: Value| {
        http.post(format!("{url}/v1/batch"))
            .basic_auth("retention-write-key", Some(""))
            .json(&body)
            .send()
    };
    let r = send(json!({"batch": [
        {"type": "page", "userId": "u1", "name": "Home", "context": {"page": {"path": "/secret-campaign"}}},
        {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"revenue": 50}},
    ]}))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    clock.set(T0 + DAY / 2);
    let r = send(json!({"batch": [
        {"type": "page", "userId": "u1", "name": "Later", "context": {"page": {"path": "/later"}}},
    ]}))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let wait = st.clone();
    tokio::task::spawn_blocking(move || {
        wait.pipeline
            .wait_processed(wait.log.end_offset(), Duration::from_secs(10))
            .unwrap()
    })
    .await
    .unwrap();

    let mut cursors = Vec::new();
    // Nothing is a day old yet.
    assert_eq!(
        niyet_server::retention_pass(&st, &rules, &mut cursors).events_expired,
        0
    );
    clock.set(T0 + DAY + 1);
    let pass = niyet_server::retention_pass(&st, &rules, &mut cursors);
    assert_eq!(pass.events_expired, 1, "the first page view is a day old");
    // Running again does not go over the same records.
    assert_eq!(
        niyet_server::retention_pass(&st, &rules, &mut cursors).events_expired,
        0
    );
    let recs = st.log.read(0, 10).unwrap();
    assert_eq!(recs.len(), 3);
    assert!(recs[0].payload.starts_with(niyet_log::ERASED));
    let text = |i: usize| String::from_utf8_lossy(&recs[i].payload).to_string();
    assert!(!text(0).contains("secret-campaign"));
    assert!(text(1).contains("Order Completed"));
    assert!(text(2).contains("/later"));
    clock.set(T0 + DAY + DAY / 2 + 1);
    assert_eq!(
        niyet_server::retention_pass(&st, &rules, &mut cursors).events_expired,
        1
    );
    // The profile still answers, with its order.
    let id = st.pipeline.query().find("user_id", "u1").unwrap().unwrap();
    let p: Value = http
        .get(format!("{url}/v1/profiles/{id}/events"))
        .bearer_auth("retention-admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(p.to_string().contains("Order Completed"), "{p}");
    assert!(!p.to_string().contains("secret-campaign"), "{p}");
}
