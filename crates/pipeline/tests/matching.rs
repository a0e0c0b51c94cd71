//! Probabilistic matching in the pipeline: merges above the threshold, suggestions below,
//! nothing when disabled, and the same result on replay.

use niyet_log::{Log, LogConfig, NewRecord};
use niyet_pipeline::{Pipeline, PipelineConfig};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn ev(anon: &str, minute: i64, context: Value, traits: Value) -> Vec<u8> {
    let mut ctx = context;
    ctx["traits"] = traits;
    serde_json::to_vec(&json!({
        "type": "page",
        "anonymousId": anon,
        "timestamp": niyet_model::format_rfc3339_millis(1_767_225_600_000 + minute * 60_000),
        "source": "web",
        "context": ctx,
    }))
    .unwrap()
}

fn device(ip: &str, ua: &str, full: bool) -> Value {
    let mut c = json!({"ip": ip, "userAgent": ua});
    if full {
        c["screen"] = json!({"width": 390, "height": 844});
        c["timezone"] = json!("Europe/Istanbul");
        c["locale"] = json!("tr-TR");
    }
    c
}

fn run(dir: &Path, log: &Arc<Log>, enabled: bool) -> (Pipeline, Value) {
    let mut c = PipelineConfig::new(dir);
    c.matching.enabled = enabled;
    let p = Pipeline::start(log.clone(), c).unwrap();
    p.wait_processed(log.end_offset(), Duration::from_secs(20))
        .unwrap();
    let dump = p.query().dump();
    (p, dump)
}

fn id_of(p: &Pipeline, anon: &str) -> String {
    p.query()
        .find("anonymous_id", anon)
        .unwrap()
        .unwrap()
        .to_string()
}

#[test]
fn likely_links_merge_weaker_ones_are_suggested() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lc = LogConfig::new(tmp.path().join("log"));
    lc.direct_io = false;
    let log = Arc::new(Log::open(lc, 0).unwrap());
    let phone = "Mozilla/5.0 (iPhone) Mobile Safari";
    let recs = vec![
        // The same phone, twice anonymous within minutes (cookie cleared): merged.
        ev("a1", 0, device("85.1.2.3", phone, true), json!({})),
        ev("a2", 10, device("85.1.2.3", phone, true), json!({})),
        // Same IP and browser but nothing else: only a suggestion.
        ev("a3", 20, device("85.1.2.3", phone, false), json!({})),
        // Same IP and browser hours later: no evidence.
        ev("a4", 600, device("85.1.2.3", phone, true), json!({})),
        // A web visitor who gave name and postcode, and a POS record with the same.
        ev(
            "w1",
            700,
            json!({}),
            json!({"name": "Ayşe Yılmaz", "postalCode": "35 220"}),
        ),
        ev(
            "pos-9",
            900,
            json!({}),
            json!({"firstName": "AYSE", "lastName": "YILMAZ", "address": {"postalCode": "35220"}}),
        ),
    ];
    log.append_blocking(
        recs.into_iter()
            .map(|p| NewRecord {
                time_ms: 0,
                key: 0,
                payload: p,
            })
            .collect(),
    )
    .unwrap();

    let (p, on) = run(&tmp.path().join("on"), &log, true);
    assert_eq!(id_of(&p, "a1"), id_of(&p, "a2"));
    assert_ne!(id_of(&p, "a1"), id_of(&p, "a3"));
    assert_ne!(id_of(&p, "a1"), id_of(&p, "a4"));
    assert_eq!(id_of(&p, "w1"), id_of(&p, "pos-9"));
    let s = p.stats();
    assert_eq!(s.probable_merges, 2, "{s:?}");
    let a1: niyet_identity::ProfileId = id_of(&p, "a1").parse().unwrap();
    let sug = p.query().suggestions(a1).unwrap();
    let list = sug["suggestions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{sug}");
    assert_eq!(list[0]["profile"], json!(id_of(&p, "a3")));
    let prob = list[0]["probability"].as_f64().unwrap();
    assert!((0.5..0.95).contains(&prob), "{prob}");
    let ident = p.query().identity(a1).unwrap();
    assert!(ident.to_string().contains("probabilistic match"), "{ident}");
    p.close();

    // Off by default: nothing links.
    let (p, off) = run(&tmp.path().join("off"), &log, false);
    assert_ne!(id_of(&p, "a1"), id_of(&p, "a2"));
    assert_eq!(p.stats().probable_merges, 0);
    assert_ne!(on, off);
    p.close();

    // A restart from the snapshot and a replay from scratch agree with the first run.
    let (p, again) = run(&tmp.path().join("on"), &log, true);
    assert_eq!(p.stats().restored_from, Some(log.end_offset()));
    assert_eq!(again, on);
    p.close();
    let (_, replay) = run(&tmp.path().join("fresh"), &log, true);
    assert_eq!(replay, on);
}
