//! map-trace's assign, delete and clear events equal, map by map and key by key, what a
//! real Go program did — on a classic-map and a swiss-map Go release and Debian's Go 1.19,
//! attaching by pid and starting the program through `--`; and on every supported build
//! with its build info removed, where the version comes from the runtime's own string.
//!
//! mapops runs every operation at a random stack depth in a fresh goroutine, so some map
//! calls grow the stack in their prologue: an entry probe on a function's first byte counts
//! those twice, and these tests would fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{path::Path, time::Duration};

use integration_tests::{
    BuildMode, GO_CLASSIC, GO_DEBIAN, GO_SWISS, Program, Report, Tracer, VARIANTS, Variant,
    assert_events_match, build_go, go_version_of, read_csv, trace_command, without_build_info,
};

const LIMIT: Duration = Duration::from_mins(4);

fn summary_row<'a>(summary: &'a str, addr: &str) -> Vec<&'a str> {
    summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(addr))
        .unwrap_or_else(|| panic!("no summary row for {addr} in:\n{summary}"))
        .split_whitespace()
        .collect()
}

fn check_summary(summary: &str, report: &Report, flavour: &str) {
    for m in &report.maps {
        let row = summary_row(summary, &m.addr);
        assert_eq!(row[1], flavour, "{row:?}");
        assert_eq!(row[2], m.assigns.to_string(), "{row:?}");
        assert_eq!(row[3], m.deletes.to_string(), "{row:?}");
        assert_eq!(row[4], m.clears.to_string(), "{row:?}");
        // The last event of each map is a clear: the count then is len(m) before it.
        assert_eq!(
            row[5],
            m.clear_counts.last().unwrap().to_string(),
            "{row:?}"
        );
    }
    assert!(summary.contains("lost events: 0"), "{summary}");
}

fn by_pid(go: &str, flavour: &str) {
    let bin = build_go("mapops", go);
    let dir = tempfile::tempdir().unwrap();
    let (csv, report_path) = (
        dir.path().join("events.csv"),
        dir.path().join("report.json"),
    );
    let mut program = Program::start_ready(
        &bin,
        &["-wait", "-n", "2000", "-out", report_path.to_str().unwrap()],
    );
    let pid_num = program.pid();
    let pid = pid_num.to_string();
    let mut tracer = Tracer::start(&["--pid", &pid, "--csv", csv.to_str().unwrap()]);
    let attached = tracer.wait_attached(LIMIT);
    assert!(
        attached.contains(&format!("to pid {pid} (go{go}, {flavour} maps)")),
        "{attached}"
    );
    program.proceed();
    let (status, _) = program.finish(LIMIT);
    assert!(status.success(), "mapops failed under tracing: {status}");
    // The target's exit ends map-trace.
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "map-trace: {:?}", done.stderr);
    let report = Report::read(&report_path);
    assert_eq!(report.maps.len(), 5);
    assert_events_match(&report, &read_csv(&csv), pid_num);
    check_summary(&done.summary(), &report, flavour);
}

/// Traces `bin` (a mapops build) through `--`; the `attached` line must name `version`.
fn through_command(bin: &Path, version: &str, flavour: &str) {
    let mut run = trace_command(bin, &["-n", "2000"]);
    let attached = run.tracer.wait_attached(LIMIT);
    assert!(
        attached.contains(&format!("({version}, {flavour} maps)")),
        "{attached}"
    );
    let done = run.tracer.finish(LIMIT);
    assert!(done.status.success(), "map-trace: {:?}", done.stderr);
    let pid: u32 = attached
        .split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in `{attached}`"));
    let report = Report::read(&run.report);
    let rows = read_csv(&run.csv);
    assert_events_match(&report, &rows, pid);
    check_summary(&done.summary(), &report, flavour);
    // Stopped at exec: the runtime's own first map operations, before main, are traced
    // too, so there are events on maps other than mapops' five.
    let ours: Vec<&str> = report.maps.iter().map(|m| m.addr.as_str()).collect();
    assert!(
        rows.iter().any(|r| !ours.contains(&r["map"].as_str())),
        "no start-up map events"
    );
}

#[test]
fn classic_maps_by_pid() {
    by_pid(GO_CLASSIC, "classic");
}

#[test]
fn swiss_maps_by_pid() {
    by_pid(GO_SWISS, "swiss");
}

#[test]
fn debian_go_by_pid() {
    by_pid(GO_DEBIAN, "classic");
}

#[test]
fn classic_maps_through_command() {
    let go = GO_CLASSIC;
    through_command(&build_go("mapops", go), &format!("go{go}"), "classic");
}

#[test]
fn swiss_maps_through_command() {
    let go = GO_SWISS;
    through_command(&build_go("mapops", go), &format!("go{go}"), "swiss");
}

#[test]
fn debian_go_through_command() {
    let go = GO_DEBIAN;
    through_command(&build_go("mapops", go), &format!("go{go}"), "classic");
}

/// `v` built in `mode`, then its build info removed: the version `go version` read before
/// that is the one map-trace finds, and the counts are exact.
fn without_build_info_in(v: Variant, mode: BuildMode) {
    let bin = v.build_mode("mapops", mode);
    through_command(&without_build_info(&bin), &go_version_of(&bin), v.flavour());
}

macro_rules! without_build_info_tests {
    ($($name:ident => $index:expr,)*) => {
        $(
            /// Stripped too: the version string is found by scanning the data.
            #[test]
            fn $name() {
                without_build_info_in(VARIANTS[$index], BuildMode::Stripped);
            }
        )*
    };
}

without_build_info_tests! {
    without_build_info_go1_19 => 0,
    without_build_info_go1_21 => 1,
    without_build_info_go1_22 => 2,
    without_build_info_go1_23 => 3,
    without_build_info_go1_24 => 4,
    without_build_info_go1_24_noswissmap => 5,
    without_build_info_go1_25 => 6,
    without_build_info_go1_25_noswissmap => 7,
    without_build_info_go1_26 => 8,
    without_build_info_go1_27 => 9,
    without_build_info_go1_27_mapsplitgroup => 10,
}

/// With a symbol table the version is read at `runtime.buildVersion`; in PIE builds its
/// pointer is a relocation.
#[test]
fn without_build_info_with_symbols_and_pie() {
    for go in [GO_DEBIAN, GO_SWISS] {
        let v = Variant { go, experiment: "" };
        without_build_info_in(v, BuildMode::Default);
        without_build_info_in(v, BuildMode::Pie);
    }
}

/// CSV on standard output: the summary moves to standard error, the CSV stays parseable.
#[test]
fn csv_to_stdout() {
    let bin = build_go("mapops", GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let tracer = Tracer::start(&[
        "--csv",
        "-",
        "--",
        bin.to_str().unwrap(),
        "-n",
        "300",
        "-out",
        report_path.to_str().unwrap(),
    ]);
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    let csv_path = dir.path().join("stdout.csv");
    std::fs::write(&csv_path, &done.stdout).unwrap();
    let rows = read_csv(&csv_path);
    let report = Report::read(&report_path);
    let pid: u32 = rows[0]["pid"].parse().unwrap();
    assert_events_match(&report, &rows, pid);
    assert!(
        done.stderr.iter().any(|l| l.starts_with("lost events: 0")),
        "{:?}",
        done.stderr
    );
}
