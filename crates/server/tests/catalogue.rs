//! The product catalogue is derived from the log: product and inventory events and admin
//! upserts, in log order; it comes back the same from a snapshot and from a full replay.

use niyet_actions::offer::Product;
use niyet_log::{Log, LogConfig, NewRecord};
use niyet_pipeline::{Pipeline, PipelineConfig};
use niyet_server::Config;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_767_225_600_000; // 2026-01-01

fn open(dir: &Path) -> (Arc<Log>, Pipeline) {
    let mut lc = LogConfig::new(dir.join("events"));
    lc.direct_io = false;
    let log = Arc::new(Log::open(lc, T0).unwrap());
    let cfg = Config {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let pc: PipelineConfig = cfg.pipeline();
    let p = Pipeline::start(log.clone(), pc).unwrap();
    (log, p)
}

fn send(log: &Log, p: &Pipeline, n: usize, event: &str, props: Value) {
    let payload = json!({
        "type": "track", "anonymousId": "catalogue-feed", "event": event,
        "properties": props, "messageId": format!("m{n}"),
        "timestamp": niyet_model::format_rfc3339_millis(T0 + n as i64), "source": "erp",
    });
    log.append_blocking(vec![NewRecord {
        time_ms: T0 + n as i64,
        key: 0,
        payload: serde_json::to_vec(&payload).unwrap(),
    }])
    .unwrap();
    p.wait_processed(log.end_offset(), Duration::from_secs(10))
        .unwrap();
}

#[test]
fn product_events_and_admin_upserts_make_the_catalogue_and_it_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (log, p) = open(dir.path());
    p.upsert_products(
        &[
            Product {
                sku: "SHOE-1".into(),
                price: 900.0,
                category: Some("shoes".into()),
                stock: Some(40),
            },
            Product {
                sku: "BAG-1".into(),
                price: 300.0,
                category: Some("bags".into()),
                stock: Some(5),
            },
        ],
        T0,
        Duration::from_secs(10),
    )
    .unwrap();
    // A price feed and a stock feed, each setting only what it carries.
    send(
        &log,
        &p,
        1,
        "Product Updated",
        json!({"product_id": "SHOE-2", "price": 950, "category": "shoes"}),
    );
    send(
        &log,
        &p,
        2,
        "Inventory Updated",
        json!({"sku": "SHOE-2", "stock": 3}),
    );
    send(
        &log,
        &p,
        3,
        "Inventory Updated",
        json!({"sku": "SHOE-1", "inventory": 0}),
    );
    send(
        &log,
        &p,
        4,
        "Product Updated",
        json!({"sku": "BAG-1", "price": 280.0}),
    );
    // Other events, and product events without a SKU, change nothing.
    send(
        &log,
        &p,
        5,
        "Product Viewed",
        json!({"sku": "SHOE-9", "price": 1}),
    );
    send(&log, &p, 6, "Product Updated", json!({"price": 1}));

    let want = json!([
        {"sku": "BAG-1", "price": 280.0, "category": "bags", "stock": 5},
        {"sku": "SHOE-1", "price": 900.0, "category": "shoes", "stock": 0},
        {"sku": "SHOE-2", "price": 950.0, "category": "shoes", "stock": 3},
    ]);
    assert_eq!(json!(p.products()), want);
    assert_eq!(
        p.in_stock("shoes")
            .iter()
            .map(|x| x.sku.as_str())
            .collect::<Vec<_>>(),
        ["SHOE-2"]
    );
    // The events also reached the profile that sent them.
    let q = p.query();
    let id = q.find("anonymous_id", "catalogue-feed").unwrap().unwrap();
    assert_eq!(q.all_events(id).unwrap().len(), 6);

    // From the snapshot written at close.
    p.close();
    drop(p);
    drop(log);
    let (log, p) = open(dir.path());
    assert!(p.stats().restored_from.is_some());
    assert_eq!(json!(p.products()), want);
    // From the log alone.
    p.close();
    drop(p);
    drop(log);
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let (log, p) = open(dir.path());
    p.wait_processed(log.end_offset(), Duration::from_secs(10))
        .unwrap();
    assert!(p.stats().restored_from.is_none());
    assert_eq!(json!(p.products()), want);
}
