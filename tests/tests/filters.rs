//! Filters evaluated in the eBPF programs: `--map` keeps exactly the chosen map's events
//! (compared with the program's own counts), `--key`, `--key-int` and `--key-hash` keep
//! exactly the keyed events of that key (compared with an unfiltered run of the same
//! deterministic program) and let unkeyed events through.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::time::Duration;

use integration_tests::{GO_CLASSIC, GO_SWISS, Program, Report, Row, Tracer, build_go, read_csv};
use map_trace_common::key_hash;

const LIMIT: Duration = Duration::from_mins(4);

fn traced_rows(go: &str, filter: &[&str]) -> Vec<Row> {
    let bin = build_go("mapops", go);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("e.csv");
    let report = dir.path().join("r.json");
    let mut cmd = vec!["--csv", csv.to_str().unwrap()];
    cmd.extend_from_slice(filter);
    cmd.extend([
        "--",
        bin.to_str().unwrap(),
        "-n",
        "600",
        "-out",
        report.to_str().unwrap(),
    ]);
    let done = Tracer::start(&cmd).finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    read_csv(&csv)
}

fn keyed_with(rows: &[Row], hash: &str) -> usize {
    rows.iter().filter(|r| r["key_hash"] == hash).count()
}

fn key_filter(go: &str, filter: &[&str], hash: u64) {
    let hash = format!("{hash:016x}");
    let all = traced_rows(go, &[]);
    let only = traced_rows(go, filter);
    let expected = keyed_with(&all, &hash);
    assert!(expected >= 2, "the key is used: {expected}");
    // Every keyed event that got through has the key, and none of the key's are missing.
    assert!(
        only.iter()
            .all(|r| r["key_hash"].is_empty() || r["key_hash"] == hash),
        "{filter:?}"
    );
    assert_eq!(keyed_with(&only, &hash), expected, "{filter:?}");
    // Unkeyed kinds pass.
    let clears = |rows: &[Row]| rows.iter().filter(|r| r["event"] == "clear").count();
    assert_eq!(clears(&only), clears(&all), "{filter:?}");
}

#[test]
fn key_string() {
    key_filter(GO_SWISS, &["--key", "key-5"], key_hash(b"key-5"));
}

#[test]
fn key_int() {
    // mapops' int64 map is keyed by i - 1000.
    key_filter(
        GO_CLASSIC,
        &["--key-int", "-995"],
        key_hash(&(-995_i64).to_le_bytes()),
    );
}

#[test]
fn key_hash_hex() {
    let hash = key_hash(b"key-12");
    key_filter(GO_SWISS, &["--key-hash", &format!("0x{hash:016x}")], hash);
}

#[test]
fn one_map() {
    let bin = build_go("mapops", GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let (csv, report) = (dir.path().join("e.csv"), dir.path().join("r.json"));
    let mut program = Program::start_ready(
        &bin,
        &["-wait", "-n", "800", "-out", report.to_str().unwrap()],
    );
    let map = program.ready.clone();
    let pid = program.pid().to_string();
    let mut tracer = Tracer::start(&["--pid", &pid, "--map", &map, "--csv", csv.to_str().unwrap()]);
    tracer.wait_attached(LIMIT);
    program.proceed();
    assert!(program.finish(LIMIT).0.success());
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    let rows = read_csv(&csv);
    let report = Report::read(&report);
    let string_map = report.maps.iter().find(|m| m.addr == map).unwrap();
    assert!(rows.iter().all(|r| r["map"].is_empty() || r["map"] == map));
    let count = |kind: &str| rows.iter().filter(|r| r["event"] == kind).count() as u64;
    assert_eq!(
        (count("assign"), count("delete"), count("clear")),
        (string_map.assigns, string_map.deletes, string_map.clears)
    );
    assert!(count("grow") > 0);
}
