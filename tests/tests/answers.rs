//! Answers against the program's own truth: `tests/go/answers` reports the lines that made
//! its maps, their addresses, and the bytes each holds by the Go heap's own measurement
//! (`HeapAlloc` around it, with a GC on both sides). map-trace's `--summary-json` must name
//! those sites, hold those bytes within 10 %, and find `presize` and `shrink` there; the
//! 2,000 maps made on one line are one site; the text summary fits on a screen or two and
//! starts with what to change; `map-trace compare` passes the run against itself and fails
//! it against a baseline with fewer grows. On classic and swiss releases.
//!
//! A map filled before map-trace attaches (`-pre`): its site is its first use, and its
//! bytes, which no event showed for swiss tables (map-trace reads them from the process
//! at the end), are within 10 % of the heap's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{path::Path, process::Command, time::Duration};

use integration_tests::{Program, Row, Tracer, build_go, map_trace_bin, read_csv, time_scale};
use serde::Deserialize;
use serde_json::Value;

const LIMIT: Duration = Duration::from_mins(3);

#[derive(Deserialize)]
struct MapReport {
    addr: String,
    line: u32,
    bytes: u64,
    count: u64,
}

#[derive(Deserialize)]
struct Report {
    file: String,
    grown: MapReport,
    shrunk: MapReport,
    small_line: u32,
    small_maps: u64,
}

/// `got` is within 10 % of `truth`.
fn within_10_percent(got: u64, truth: u64) -> bool {
    got.abs_diff(truth) * 10 <= truth
}

fn site<'a>(process: &'a Value, at: &str) -> &'a Value {
    process["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == at)
        .unwrap_or_else(|| panic!("no site {at} in {:#}", process["sites"]))
}

fn finding<'a>(process: &'a Value, kind: &str, at: &str) -> &'a Value {
    process["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["site"] == at)
        .unwrap_or_else(|| panic!("no {kind} finding at {at} in {:#}", process["findings"]))
}

fn compare(base: &Path, new: &Path) -> (bool, String) {
    let out = Command::new(map_trace_bin())
        .arg("compare")
        .args([base, new])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn answers(go: &str) {
    let bin = build_go("answers", go);
    let dir = tempfile::tempdir().unwrap();
    let (csv, json, report) = (
        dir.path().join("events.csv"),
        dir.path().join("summary.json"),
        dir.path().join("report.json"),
    );
    let mut tracer = Tracer::start_command(
        Command::new(map_trace_bin())
            // 300,000 events in a second: room for them when map-trace runs emulated.
            .args(["--ring-buffer-size", "256M"])
            .arg("--csv")
            .arg(&csv)
            .arg("--summary-json")
            .arg(&json)
            .arg("--")
            .arg(&bin)
            .arg("-out")
            .arg(&report),
    );
    // Emulated guests run about ten times slower.
    let limit = LIMIT * time_scale();
    tracer.wait_attached(limit);
    let done = tracer.finish(limit);
    assert!(done.status.success(), "Go {go}: {:?}", done.stderr);
    let truth: Report = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let summary: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(summary["lost_events"], 0, "Go {go}");
    let process = &summary["processes"][0];
    let at = |line: u32| format!("main.main {}:{line}", truth.file);

    // The map grown without a hint: its site, every assign, a presize to its size.
    let grown = site(process, &at(truth.grown.line));
    assert_eq!(grown["maps"], 1, "Go {go}: {grown:#}");
    assert_eq!(grown["assigns"], truth.grown.count, "Go {go}: {grown:#}");
    assert_eq!(grown["hint"], 0, "Go {go}: {grown:#}");
    let presize = finding(process, "presize", &at(truth.grown.line));
    assert!(
        presize["hint"].as_u64().unwrap() >= truth.grown.count,
        "Go {go}: {presize:#}"
    );
    assert!(
        presize["message"]
            .as_str()
            .unwrap()
            .contains("make(map[int]int, 100000)"),
        "Go {go}: {presize:#}"
    );

    // Bytes held, against the heap's own measurement.
    let map = |addr: &str| {
        process["maps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["map"] == addr)
            .unwrap_or_else(|| panic!("Go {go}: no map {addr} in {:#}", process["maps"]))
    };
    for (m, what) in [(&truth.grown, "grown"), (&truth.shrunk, "shrunk")] {
        let bytes = map(&m.addr)["bytes"].as_u64().unwrap();
        assert!(
            within_10_percent(bytes, m.bytes),
            "Go {go}: {what} holds {bytes} bytes by map-trace, {} by the heap",
            m.bytes
        );
    }

    // Grown to 200,000 and deleted down to 1,000: shrink, with the bytes it holds.
    let shrink = finding(process, "shrink", &at(truth.shrunk.line));
    assert_eq!(shrink["map"], truth.shrunk.addr, "Go {go}: {shrink:#}");
    let held = shrink["bytes"].as_u64().unwrap();
    assert!(
        within_10_percent(held, truth.shrunk.bytes),
        "Go {go}: shrink says {held} bytes, the heap {}",
        truth.shrunk.bytes
    );
    let deleted = site(process, &at(truth.shrunk.line));
    assert_eq!(deleted["deletes"], 199_000, "Go {go}: {deleted:#}");
    assert_eq!(deleted["peak_count"], 200_000, "Go {go}: {deleted:#}");

    // 2,000 maps made on one line: one site.
    let small = site(process, &at(truth.small_line));
    assert_eq!(small["maps"], truth.small_maps, "Go {go}: {small:#}");
    assert_eq!(small["assigns"], truth.small_maps, "Go {go}: {small:#}");
    assert!(
        !process["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["site"] == at(truth.small_line) && f["kind"] == "presize"),
        "Go {go}: maps that grew once each are not worth presizing: {:#}",
        process["findings"]
    );

    csv_names_sites(go, &csv, &truth, &at(truth.grown.line));
    // The text summary fits, and its first lines say what to change.
    let text = done.summary();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() <= 120,
        "Go {go}: {} lines:\n{text}",
        lines.len()
    );
    let first = lines.iter().find(|l| l.starts_with("finding ")).unwrap();
    assert!(
        lines.iter().position(|l| l.starts_with("finding ")) == Some(1),
        "Go {go}: findings come first:\n{text}"
    );
    assert!(first.contains("main.go:"), "Go {go}: {first}");

    compare_gates(go, dir.path(), &json, &summary, &at(truth.grown.line));
}

/// The CSV names each event's site; `make` rows carry the hint.
fn csv_names_sites(go: &str, csv: &Path, truth: &Report, grown_at: &str) {
    let rows = read_csv(csv);
    let of = |addr: &str, kind: &str| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r["map"] == addr && r["event"] == kind)
            .collect()
    };
    // The last map made at its address (a map the GC freed may have been there before).
    let made = of(&truth.grown.addr, "make");
    let last = made.last().expect("a make row");
    assert_eq!(last["site"], grown_at, "Go {go}: {made:?}");
    assert!(
        matches!(last["detail"].as_str(), "hint:0" | "small"),
        "Go {go}: {last:?}"
    );
    assert!(last["duration_ns"].is_empty(), "Go {go}: {last:?}");
    // Its assigns: those after it was made (before, the address was another map's).
    let made_at: u64 = last["time_ns"].parse().unwrap();
    let assigns: Vec<&Row> = of(&truth.grown.addr, "assign")
        .into_iter()
        .filter(|r| r["time_ns"].parse::<u64>().unwrap() > made_at)
        .collect();
    assert_eq!(assigns.len() as u64, truth.grown.count, "Go {go}");
    assert!(
        assigns.iter().all(|r| r["site"] == grown_at),
        "Go {go}: {:?}",
        assigns[0]
    );
}

/// The gate: the run against itself passes; against a baseline whose grown map grew half
/// as often, it fails and names that site.
fn compare_gates(go: &str, dir: &Path, json: &Path, summary: &Value, grown_at: &str) {
    let (ok, out) = compare(json, json);
    assert!(ok, "Go {go}: {out}");
    assert!(out.contains("compare: 0 regressions"), "Go {go}: {out}");
    let mut base = summary.clone();
    for s in base["processes"][0]["sites"].as_array_mut().unwrap() {
        if s["site"] == grown_at {
            s["grows"] = (s["grows"].as_u64().unwrap() / 2).into();
        }
    }
    let base_path = dir.join("base.json");
    std::fs::write(&base_path, serde_json::to_vec(&base).unwrap()).unwrap();
    let (ok, out) = compare(&base_path, json);
    assert!(!ok, "Go {go}: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("regression: ") && l.contains(grown_at) && l.contains("grows")),
        "Go {go}: {out}"
    );
}

/// A map filled before tracing, touched once under it, and still there when map-trace
/// stops (SIGINT).
fn made_before_tracing(go: &str) {
    let bin = build_go("answers", go);
    let dir = tempfile::tempdir().unwrap();
    let (json, report) = (dir.path().join("s.json"), dir.path().join("report.json"));
    let mut program =
        Program::start_ready(&bin, &["-pre", "50000", "-out", report.to_str().unwrap()]);
    let limit = LIMIT * time_scale();
    let mut tracer = Tracer::start(&[
        "--pid",
        &program.pid().to_string(),
        "--summary-json",
        json.to_str().unwrap(),
    ]);
    tracer.wait_attached(limit);
    program.step();
    assert_eq!(program.read_line(), "held");
    let (done, _) = tracer.stop(libc::SIGINT, limit);
    assert!(done.status.success(), "Go {go}: {:?}", done.stderr);
    program.proceed();
    let (status, _) = program.finish(limit);
    assert!(status.success(), "Go {go}: {status}");

    let truth: MapReport = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let summary: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let process = &summary["processes"][0];
    let map = process["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["map"] == truth.addr)
        .unwrap_or_else(|| panic!("Go {go}: no map {} in {:#}", truth.addr, process["maps"]));
    assert_eq!(map["first_use"], true, "Go {go}: {map:#}");
    assert!(
        map["site"]
            .as_str()
            .unwrap()
            .starts_with("main.madeBefore "),
        "Go {go}: {map:#}"
    );
    let bytes = map["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("Go {go}: bytes not known: {map:#}"));
    assert!(
        within_10_percent(bytes, truth.bytes),
        "Go {go}: map-trace says {bytes} bytes, the heap {}",
        truth.bytes
    );
}

#[test]
fn made_before_tracing_classic() {
    made_before_tracing("1.23.9");
}

#[test]
fn made_before_tracing_swiss() {
    made_before_tracing("1.26.6");
}

#[test]
fn classic_go1_21() {
    answers("1.21.13");
}

#[test]
fn classic_go1_23() {
    answers("1.23.9");
}

#[test]
fn swiss_go1_24() {
    answers("1.24.11");
}

#[test]
fn swiss_go1_26() {
    answers("1.26.6");
}

#[test]
fn swiss_go1_27() {
    answers("1.27.3");
}
