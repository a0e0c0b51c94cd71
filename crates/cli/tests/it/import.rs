//! `niyet import` of CSV (with a column mapping) and NDJSON into a running server; a second
//! import of the same file stores nothing twice.

use std::process::Command;

use crate::common::*;

fn import(srv: &TestServer, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_niyet"))
        .arg("import")
        .args(args)
        .args([
            "--url",
            &srv.url(),
            "--write-key",
            WRITE_KEY,
            "--no-progress",
        ])
        .output()
        .expect("run import");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "import failed: {text}");
    text
}

#[tokio::test]
async fn csv_and_ndjson_import_with_summary_and_idempotence() {
    let srv = TestServer::start();
    let dir = tempfile::tempdir().expect("tmp");
    let csv = dir.path().join("pos.csv");
    std::fs::write(&csv, "musteri_no;tutar;tarih;magaza\nC-1;149.90;2025-03-01 14:22;Kadıköy\nC-2;89;2025-03-02;Alsancak\n;10;2025-03-02;Nowhere\n").expect("csv");
    let mapping = dir.path().join("pos.toml");
    std::fs::write(&mapping, "type = \"track\"\nevent = \"Order Completed\"\n[fields]\nuserId = \"musteri_no\"\n\"properties.revenue\" = \"tutar\"\ntimestamp = \"tarih\"\n").expect("mapping");
    let csv_s = csv.to_str().expect("path");
    let map_s = mapping.to_str().expect("path");
    let out = import(&srv, &[csv_s, "--mapping", map_s, "--delimiter", ";"]);
    assert!(
        out.contains("3 lines read · 2 imported · 0 duplicates · 1 quarantined"),
        "{out}"
    );
    let out = import(&srv, &[csv_s, "--mapping", map_s, "--delimiter", ";"]);
    assert!(out.contains("0 imported · 2 duplicates"), "{out}");

    let nd = dir.path().join("crm.ndjson");
    std::fs::write(&nd, "{\"type\":\"identify\",\"userId\":\"C-1\",\"traits\":{\"email\":\"c1@example.com\"}}\n\nnot json\n{\"userId\":\"C-2\",\"event\":\"Signed Up\"}\n").expect("ndjson");
    let out = import(&srv, &[nd.to_str().expect("path")]);
    assert!(
        out.contains("3 lines read · 2 imported") && out.contains("1 unreadable"),
        "{out}"
    );

    let events = all_events(&srv.url()).await;
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["properties"]["revenue"], 149.9);
    assert_eq!(events[0]["properties"]["magaza"], "Kadıköy");
    assert_eq!(events[0]["timestamp"], "2025-03-01T14:22:00.000Z");
    assert_eq!(events[1]["timestamp"], "2025-03-02T00:00:00.000Z");
    assert_eq!(events[2]["traits"]["email"], "c1@example.com");
    assert_eq!(events[3]["event"], "Signed Up");
}
