//! When too many requests wait for storage, ingest answers 429 with Retry-After.

use std::sync::Arc;

use niyet_model::SystemClock;
use niyet_server::{Config, Server};

#[tokio::test]
async fn overload_answers_429_with_retry_after() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: tmp.path().to_path_buf(),
        admin_token: Some("overload-admin-token".into()),
        sources: vec![niyet_server::config::SourceConfig {
            name: "web".into(),
            write_key: "overload-key".into(),
            tracking_plan: None,
            minimise: Default::default(),
        }],
        ..Config::default()
    };
    let server = Server::bind(cfg, Arc::new(SystemClock))
        .await
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    let state = server.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    // Every slot for requests waiting on storage is taken.
    let n = state.pending.available_permits() as u32;
    let held = state.pending.acquire_many(n).await.expect("permits");
    let body = r#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#;
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/batch"))
        .basic_auth("overload-key", Some(""))
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["code"], "overloaded");
    drop(held);
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/batch"))
        .basic_auth("overload-key", Some(""))
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.status().as_u16(),
        200,
        "accepted again once storage keeps up"
    );
    let _ = tx.send(());
    task.await.expect("join").expect("server");
}
