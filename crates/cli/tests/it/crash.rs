//! Under continuous ingest the server is killed with SIGKILL several times and
//! restarted; every event whose request was answered 200 is in the log afterwards, and
//! none is there twice (SDK-style retries of unanswered requests are deduplicated).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::json;

const CLIENTS: usize = 6;
const PER_BATCH: usize = 25;
const KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill_and_retries_never_double() {
    let mut srv = TestServer::start();
    let base = srv.url();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (acked, stop, base) = (acked.clone(), stop.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
            let mut seq = 0u64;
            let mut sent_batches = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..PER_BATCH).map(|i| format!("c{c}-b{seq}-{i}")).collect();
                seq += 1;
                let body = json!({"batch": ids.iter().map(|id| json!({"type": "track", "userId": format!("u{c}"), "event": "Tick", "messageId": id})).collect::<Vec<_>>()}).to_string();
                // Like an SDK: retry the same batch until it is answered 200.
                loop {
                    let r = http.post(format!("{base}/v1/batch")).basic_auth(WRITE_KEY, Some("")).body(body.clone()).send().await;
                    if let Ok(r) = r {
                        if r.status().as_u16() == 200 {
                            acked.lock().expect("ledger").extend(ids.iter().cloned());
                            sent_batches += 1;
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            sent_batches
        }));
    }
    for k in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(400 + 150 * k as u64)).await;
        let before = acked.lock().expect("ledger").len();
        srv.kill9();
        tokio::time::sleep(Duration::from_millis(100)).await;
        srv.spawn();
        assert!(before > 0 || k > 0, "load was running before the kill");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut batches = 0;
    for t in tasks {
        batches += t.await.expect("client task");
    }
    assert!(
        batches > 50,
        "only {batches} batches were acknowledged; the test did not load the server"
    );

    let events = all_events(&base).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *seen
            .entry(e["messageId"].as_str().expect("messageId").to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        twice.is_empty(),
        "stored twice: {:?}",
        &twice[..twice.len().min(5)]
    );
    let acked = acked.lock().expect("ledger");
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .cloned()
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(srv.is_running());
}

/// The harness itself: a port taken between picking it and the server binding it (another
/// test's listener) makes the server exit; the harness starts it again on another port.
#[tokio::test]
async fn a_server_whose_port_was_taken_starts_on_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let mut s = TestServer::start_at(port, None);
    assert_ne!(s.port, port);
    assert!(s.is_running());
    let r = client()
        .get(format!("{}/healthz", s.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    drop(taken);
}
