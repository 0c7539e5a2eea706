//! The two ways events can fail to reach user space one by one, made honest: a ring buffer
//! too small for a user space that cannot keep up reports every event it could not carry,
//! and `--summary-only` counts in the kernel exactly what streaming sees.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{collections::BTreeMap, time::Duration};

use integration_tests::{
    GO_CLASSIC, GO_SWISS, Program, Report, Tracer, build_go, read_csv, run_map_trace,
};

const LIMIT: Duration = Duration::from_mins(4);

fn lost_events(summary: &str) -> u64 {
    summary
        .lines()
        .find_map(|l| l.strip_prefix("lost events: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lost events line in:\n{summary}"))
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A 4 KiB ring buffer (about twenty events) and a map-trace stopped with SIGSTOP while the
/// program works: most events cannot be carried, and every one of them is counted.
fn overflow(go: &str) {
    let bin = build_go("mapops", go);
    let dir = tempfile::tempdir().unwrap();
    let (csv, report_path) = (dir.path().join("e.csv"), dir.path().join("r.json"));
    let mut program = Program::start_ready(
        &bin,
        &["-wait", "-n", "1000", "-out", report_path.to_str().unwrap()],
    );
    // Only the string map's operations: the events the program reports, no others.
    let string_map = program.ready.clone();
    let pid = program.pid().to_string();
    let mut tracer = Tracer::start(&[
        "--pid",
        &pid,
        "--map",
        &string_map,
        "--events",
        "assign,delete,clear",
        "--ring-buffer-size",
        "4096",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    tracer.wait_attached(LIMIT);
    signal(tracer.pid(), "STOP");
    program.proceed();
    let (status, _) = program.finish(LIMIT);
    assert!(status.success());
    signal(tracer.pid(), "CONT");
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);

    let report = Report::read(&report_path);
    let m = report.maps.iter().find(|m| m.addr == string_map).unwrap();
    let produced = m.assigns + m.deletes + m.clears;
    let delivered = read_csv(&csv)
        .iter()
        .filter(|r| r["map"] == string_map)
        .count() as u64;
    let lost = lost_events(&done.stdout);
    assert!(
        lost > 0,
        "nothing lost: the test did not overflow the buffer"
    );
    assert!(delivered > 0, "nothing delivered");
    assert_eq!(
        delivered + lost,
        produced,
        "delivered {delivered} + lost {lost} != produced {produced}"
    );
}

#[test]
fn overflow_is_counted_classic() {
    overflow(GO_CLASSIC);
}

#[test]
fn overflow_is_counted_swiss() {
    overflow(GO_SWISS);
}

/// Per map: the summary row's numbers and the grows by kind.
fn per_map(summary: &str) -> BTreeMap<String, (Vec<String>, String)> {
    let mut maps = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in summary.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first().is_some_and(|w| w.starts_with("0x")) {
            current = Some(words[0].to_owned());
            // assigns, deletes, clears, count, grows, evacs
            let numbers = words[2..8].iter().map(|w| (*w).to_owned()).collect();
            maps.insert(words[0].to_owned(), (numbers, String::new()));
        } else if let (Some(map), Some(kinds)) = (&current, line.trim().strip_prefix("grows ")) {
            // `grows N, total …, worst … (double 3, same-size 1)…`: the count and the kinds.
            let count = kinds.split(',').next().unwrap().to_owned();
            let by_kind = kinds
                .split_once('(')
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(k, _)| k.to_owned())
                .unwrap();
            maps.get_mut(map).unwrap().1 = format!("{count} ({by_kind})");
        } else if !line.starts_with("    ") {
            current = None;
        }
    }
    maps
}

/// Histogram counts per map: `grow times: <16µs 5, <33µs 2` → total calls.
fn grow_time_counts(summary: &str) -> u64 {
    summary
        .lines()
        .filter_map(|l| l.trim().strip_prefix("grow times: "))
        .flat_map(|l| l.split(", "))
        .map(|b| b.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Two tracers on one process at once, streaming and `--summary-only`: the same numbers
/// per map, and both equal to the program's own.
fn summary_only_equals_streaming(go: &str) {
    let bin = build_go("mapops", go);
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("r.json");
    let mut program = Program::start_ready(
        &bin,
        &["-wait", "-n", "3000", "-out", report_path.to_str().unwrap()],
    );
    let pid = program.pid().to_string();
    // Every map listed in both, not the ten costliest (their grow times differ).
    let mut streaming = Tracer::start(&[
        "--top",
        "1000",
        "--pid",
        &pid,
        "--events",
        "assign,delete,clear,grow,evacuate",
    ]);
    let mut counted = Tracer::start(&[
        "--top",
        "1000",
        "--pid",
        &pid,
        "--events",
        "assign,delete,clear,grow,evacuate",
        "--summary-only",
    ]);
    streaming.wait_attached(LIMIT);
    counted.wait_attached(LIMIT);
    program.proceed();
    let (status, _) = program.finish(LIMIT);
    assert!(status.success());
    let (a, b) = (streaming.finish(LIMIT), counted.finish(LIMIT));
    assert!(
        a.status.success() && b.status.success(),
        "{:?} {:?}",
        a.stderr,
        b.stderr
    );
    assert!(
        b.stdout
            .contains("map calls counted in the kernel (--summary-only)"),
        "{}",
        b.stdout
    );
    assert_eq!(lost_events(&a.stdout), 0);
    assert_eq!(lost_events(&b.stdout), 0);

    let (sa, sb) = (per_map(&a.stdout), per_map(&b.stdout));
    let report = Report::read(&report_path);
    for m in &report.maps {
        let (numbers, grows) = &sa[&m.addr];
        assert_eq!(
            (&numbers[0], &numbers[1], &numbers[2]),
            (
                &m.assigns.to_string(),
                &m.deletes.to_string(),
                &m.clears.to_string()
            ),
            "{}",
            m.name
        );
        assert!(!grows.is_empty(), "{} never grew:\n{}", m.name, a.stdout);
    }
    // Every map either saw, the same.
    assert_eq!(
        sa, sb,
        "streaming:\n{}\nsummary-only:\n{}",
        a.stdout, b.stdout
    );
    assert_eq!(grow_time_counts(&a.stdout), grow_time_counts(&b.stdout));
    assert!(grow_time_counts(&b.stdout) > 0);
}

#[test]
fn summary_only_equals_streaming_classic() {
    summary_only_equals_streaming(GO_CLASSIC);
}

#[test]
fn summary_only_equals_streaming_swiss() {
    summary_only_equals_streaming(GO_SWISS);
}

#[test]
fn summary_only_refuses_per_event_exports() {
    let f = run_map_trace(&["--summary-only", "--csv", "x.csv", "--pid", "1"], LIMIT);
    assert_eq!(f.status.code(), Some(2), "{:?}", f.stderr);
}
