//! `niyet demo` starts, drives traffic through the public API, acts into the shop's
//! receiver, and stops cleanly; a second run on its data brings new visitors.

/// The largest figure after `label` on the demo's summary lines.
fn last_figure(text: &str, label: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split(label).nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Runs `niyet demo` for `seconds` at 30 visits/s on `data`; its summary, once it has
/// stopped cleanly.
fn run_demo(data: &std::path::Path, seconds: u32) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_niyet"))
        .args(["demo", "--duration", &seconds.to_string(), "--rate", "30"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("NIYET_LOG", "warn")
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn demo_runs_stores_traffic_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("demo-data");
    let text = run_demo(&data, 4);
    assert!(text.contains("status page   http://127.0.0.1:"), "{text}");
    assert!(text.contains("0 requests failed"), "{text}");
    let last_of = |label: &str| last_figure(&text, label);
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
    // The triggers acted into the shop's receiver, every request signed.
    let acted = text
        .lines()
        .find(|l| l.starts_with("actions received by the shop:"))
        .unwrap_or_else(|| panic!("no actions line:\n{text}"));
    assert!(acted.contains("Order feedback"), "{acted}");
    assert!(acted.ends_with("(0 with a bad signature)"), "{acted}");

    // A second run on the same data brings new visitors: its events are stored, not
    // dropped as the first run's duplicates.
    let text2 = run_demo(&data, 3);
    assert!(
        last_figure(&text2, "stored") >= stored + 50,
        "the second run stored nothing new ({stored} before):\n{text2}"
    );
}
