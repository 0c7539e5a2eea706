//! How a run ends: after --duration or on SIGINT/SIGTERM map-trace drains every event,
//! writes the CSV and the summary, exits 0, and the target keeps running.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{path::Path, process::Command, time::Duration};

use integration_tests::{
    Finished, GO_CLASSIC, GO_SWISS, Tracer, build_go, proc_state, read_csv, timed_calls,
    wait_bounded,
};

const LIMIT: Duration = Duration::from_mins(1);

fn total_row(summary: &str) -> Vec<u64> {
    let line = summary
        .lines()
        .find(|l| l.starts_with("total"))
        .expect("total row");
    line.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The CSV holds exactly the events the summary counted: nothing was left in the buffer.
fn assert_drained(done: &Finished, csv: &Path) {
    assert!(done.status.success(), "{:?}", done.stderr);
    let rows = read_csv(csv);
    let total = total_row(&done.stdout);
    // assigns, deletes, clears, grows, evacuations: one CSV row each.
    assert_eq!(total.len(), 5, "{}", done.stdout);
    assert!(total[0] > 0, "no assigns seen:\n{}", done.stdout);
    let map_rows = rows.iter().filter(|r| !r["map"].is_empty()).count();
    assert_eq!(map_rows as u64, total.iter().sum::<u64>());
    assert!(done.stdout.contains("lost events: 0"), "{}", done.stdout);
    // Attached and detached mid-run: every matched return made exactly one event, and
    // entries are removed before returns, so no call is left entered but unreturned.
    let (entered, returned, _) = timed_calls(&done.stdout);
    let timed = rows
        .iter()
        .filter(|r| matches!(r["event"].as_str(), "grow" | "evacuate"));
    assert_eq!(returned, timed.count() as u64);
    assert_eq!(entered, returned);
}

fn start_demo(go: &str) -> std::process::Child {
    Command::new(build_go("demo", go))
        .arg("600")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn duration_ends_the_run() {
    let mut demo = start_demo(GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("e.csv");
    let pid = demo.id().to_string();
    let mut tracer = Tracer::start(&[
        "--pid",
        &pid,
        "--duration",
        "1.5",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    tracer.wait_attached(LIMIT);
    let done = tracer.finish(LIMIT);
    assert_drained(&done, &csv);
    assert!(matches!(proc_state(demo.id()), 'S' | 'R'), "target harmed");
    demo.kill().unwrap();
    wait_bounded(&mut demo, LIMIT);
}

fn signal_ends_the_run(signal: &str, go: &str) {
    let mut demo = start_demo(go);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("e.csv");
    let mut tracer = Tracer::start(&[
        "--pid",
        &demo.id().to_string(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    tracer.wait_attached(LIMIT);
    std::thread::sleep(Duration::from_secs(1));
    let status = Command::new("kill")
        .args(["-s", signal, &tracer.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let done = tracer.finish(LIMIT);
    assert_drained(&done, &csv);
    assert!(matches!(proc_state(demo.id()), 'S' | 'R'), "target harmed");
    demo.kill().unwrap();
    wait_bounded(&mut demo, LIMIT);
}

#[test]
fn sigint_ends_the_run() {
    signal_ends_the_run("INT", GO_CLASSIC);
}

#[test]
fn sigterm_ends_the_run() {
    signal_ends_the_run("TERM", GO_SWISS);
}
