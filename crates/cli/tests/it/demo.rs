//! `niyet demo` starts, drives traffic through the public API, and stops cleanly.

#[test]
fn demo_runs_stores_traffic_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("demo-data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_niyet"))
        .args([
            "demo",
            "--duration",
            "4",
            "--rate",
            "30",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .env("NIYET_LOG", "warn")
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("status page   http://127.0.0.1:"), "{text}");
    assert!(text.contains("0 requests failed"), "{text}");
    let last_of = |label: &str| -> u64 {
        text.lines()
            .filter_map(|l| l.split(label).nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .filter_map(|n| n.parse().ok())
            .max()
            .unwrap_or(0)
    };
    let stored = last_of("stored");
    assert!(
        stored >= 50,
        "the demo stored only {stored} events:\n{text}"
    );
    // The traffic became customer profiles.
    assert!(last_of("profiles") >= 5, "no profiles:\n{text}");
    assert!(
        data.join("state")
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0)
            >= 1,
        "a snapshot is written at shutdown"
    );
    assert!(
        data.join("events")
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0)
            >= 1,
        "the log is on disk"
    );
}
