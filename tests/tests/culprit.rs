//! Finding the culprit in any Go binary a user runs: every event names its map's Go type and
//! the line of Go code behind it (assign, delete and clear, and the grows those writes set
//! off), on normal, stripped, PIE and cgo builds of a classic-map and a swiss-map release
//! and of Debian's Go 1.19, and on processes whose executable was deleted, replaced, or is
//! visible only inside another mount namespace.
//!
//! The truth is the program's own source (lines marked `SITE:<name>`) and its report of
//! what it did.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{
    BuildMode, GO_CLASSIC, GO_DEBIAN, GO_SWISS, Program, Row, Tracer, build_go_mode, read_csv,
    trace_command,
};
use serde::Deserialize;

const LIMIT: Duration = Duration::from_mins(4);

#[derive(Debug, Deserialize)]
struct CulpritReport {
    sessions: String,
    visits: String,
    registers: usize,
    visit_ops: usize,
    expires: usize,
    resets: usize,
    cgo: i32,
}

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go/culprit/main.go")
}

/// The line of each `SITE:<name>` marker in the program's source.
fn site_lines() -> HashMap<String, u32> {
    let text = fs::read_to_string(source()).unwrap();
    let lines: HashMap<String, u32> = text
        .lines()
        .zip(1..)
        .filter_map(|(l, n)| Some((l.split("// SITE:").nth(1)?.trim().to_owned(), n)))
        .collect();
    assert_eq!(lines.len(), 4, "markers in {}", source().display());
    lines
}

/// What every event of one kind on one map must say about where it came from.
struct Expect<'a> {
    map: &'a str,
    event: &'a str,
    count: Option<usize>,
    function: &'a str,
    site: &'a str,
    type_name: &'a str,
}

fn check_rows(rows: &[Row], lines: &HashMap<String, u32>, e: &Expect<'_>) -> usize {
    let mine: Vec<&Row> = rows
        .iter()
        .filter(|r| r["map"] == e.map && r["event"] == e.event)
        .collect();
    if let Some(n) = e.count {
        assert_eq!(mine.len(), n, "{} events on {}", e.event, e.map);
    }
    let line = format!("/culprit/main.go:{}", lines[e.site]);
    for r in &mine {
        assert_eq!(r["caller"], e.function, "{r:?}");
        assert!(r["caller_line"].ends_with(&line), "want …{line}: {r:?}");
        assert_eq!(r["type"], e.type_name, "{r:?}");
    }
    mine.len()
}

/// Checks a finished run of culprit against its source and report; returns the summary.
fn check_run(rows: &[Row], summary: &str, report: &CulpritReport) {
    let lines = site_lines();
    let sessions_type = "map[string]*main.Session";
    let visits_type = "map[int]int";
    let expect = |map, event, count, function, site, type_name| Expect {
        map,
        event,
        count,
        function,
        site,
        type_name,
    };
    let s = &report.sessions;
    let v = &report.visits;
    check_rows(
        rows,
        &lines,
        &expect(
            s,
            "assign",
            Some(report.registers),
            "main.register",
            "register",
            sessions_type,
        ),
    );
    check_rows(
        rows,
        &lines,
        &expect(
            s,
            "delete",
            Some(report.expires),
            "main.expire",
            "expire",
            sessions_type,
        ),
    );
    // Growth happens inside the runtime; the line is the write that set it off.
    let grows = check_rows(
        rows,
        &lines,
        &expect(s, "grow", None, "main.register", "register", sessions_type),
    );
    assert!(grows >= 5, "{grows} grows of the sessions map");
    // visit is inlined into main: its frame comes from the binary's inline tables.
    check_rows(
        rows,
        &lines,
        &expect(
            v,
            "assign",
            Some(report.visit_ops),
            "main.visit",
            "visit",
            visits_type,
        ),
    );
    check_rows(
        rows,
        &lines,
        &expect(
            v,
            "clear",
            Some(report.resets),
            "main.reset",
            "reset",
            visits_type,
        ),
    );

    // The summary names the type and the lines behind the work and the growth.
    assert!(
        summary.contains(&format!("type {sessions_type}")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("type {visits_type}")),
        "{summary}"
    );
    let register = format!("main.register main.go:{}", lines["register"]);
    assert!(
        summary.contains(&format!(
            "top call sites: {register} ({} ops); main.expire main.go:{} ({} ops)",
            report.registers, lines["expire"], report.expires
        )),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "grow time by call site: {register} (grows {grows},"
        )),
        "{summary}"
    );
}

fn trace_build(version: &str, mode: BuildMode) {
    let bin = build_go_mode("culprit", version, mode);
    let run = trace_command(&bin, &["-n", "3000"]);
    let done = run.tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    let report: CulpritReport =
        serde_json::from_str(&fs::read_to_string(&run.report).unwrap()).unwrap();
    assert_eq!(report.cgo, if mode == BuildMode::Cgo { 42 } else { 0 });
    check_run(&read_csv(&run.csv), &done.summary(), &report);
}

#[test]
fn names_types_and_lines_in_normal_builds() {
    trace_build(GO_DEBIAN, BuildMode::Default);
    trace_build(GO_CLASSIC, BuildMode::Default);
    trace_build(GO_SWISS, BuildMode::Default);
}

#[test]
fn names_types_and_lines_in_stripped_builds() {
    trace_build(GO_DEBIAN, BuildMode::Stripped);
    trace_build(GO_CLASSIC, BuildMode::Stripped);
    trace_build(GO_SWISS, BuildMode::Stripped);
}

#[test]
fn names_types_and_lines_in_pie_builds() {
    trace_build(GO_DEBIAN, BuildMode::Pie);
    trace_build(GO_CLASSIC, BuildMode::Pie);
    trace_build(GO_SWISS, BuildMode::Pie);
}

#[test]
fn names_types_and_lines_in_cgo_builds() {
    trace_build(GO_DEBIAN, BuildMode::Cgo);
    trace_build(GO_CLASSIC, BuildMode::Cgo);
    trace_build(GO_SWISS, BuildMode::Cgo);
}

/// Starts culprit with `cmd` (it waits after `ready`), lets `prepare` act on the running
/// process, traces it by pid, and checks the run.
fn trace_running(mut cmd: Command, report: &Path, prepare: impl FnOnce(&Program)) {
    cmd.args(["-wait", "-n", "2000", "-out"]).arg(report);
    let mut program = Program::spawn_ready(&mut cmd);
    prepare(&program);
    let csv = report.with_extension("csv");
    let pid = program.pid().to_string();
    let mut tracer = Tracer::start(&["--csv", csv.to_str().unwrap(), "--pid", &pid]);
    tracer.wait_attached(LIMIT);
    program.proceed();
    let (status, _) = program.finish(LIMIT);
    assert!(status.success());
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    let report: CulpritReport = serde_json::from_str(&fs::read_to_string(report).unwrap()).unwrap();
    check_run(&read_csv(&csv), &done.summary(), &report);
}

#[test]
fn traces_a_process_whose_binary_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("culprit");
    fs::copy(build_go_mode("culprit", GO_SWISS, BuildMode::Pie), &bin).unwrap();
    trace_running(Command::new(&bin), &dir.path().join("report.json"), |_| {
        fs::remove_file(&bin).unwrap();
    });
}

#[test]
fn traces_a_process_whose_binary_was_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("culprit");
    fs::copy(
        build_go_mode("culprit", GO_CLASSIC, BuildMode::Default),
        &bin,
    )
    .unwrap();
    trace_running(Command::new(&bin), &dir.path().join("report.json"), |_| {
        // What a deploy does: a new build renamed over the old path.
        let new = dir.path().join("culprit.new");
        fs::copy(build_go_mode("culprit", GO_SWISS, BuildMode::Default), &new).unwrap();
        fs::rename(&new, &bin).unwrap();
    });
}

#[test]
fn traces_a_process_in_another_mount_namespace() {
    let dir = tempfile::tempdir().unwrap();
    // Inside the namespace a tmpfs covers `inside`; the binary exists only on that tmpfs.
    let inside = dir.path().join("inside");
    fs::create_dir(&inside).unwrap();
    let bin = build_go_mode("culprit", GO_SWISS, BuildMode::Stripped);
    let script = format!(
        "mount -t tmpfs tmpfs '{0}' && cp '{1}' '{0}/culprit' && exec '{0}/culprit' \"$@\"",
        inside.display(),
        bin.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .stderr(Stdio::inherit());
    trace_running(cmd, &dir.path().join("report.json"), |program| {
        let exe = fs::read_link(format!("/proc/{}/exe", program.pid())).unwrap();
        assert_eq!(exe, inside.join("culprit"));
        assert!(
            !exe.exists(),
            "{} is visible outside the namespace",
            exe.display()
        );
    });
}

/// The binary checks that make the above meaningful: the builds really are what they claim.
#[test]
fn build_modes_are_what_they_claim() {
    for version in [GO_DEBIAN, GO_CLASSIC, GO_SWISS] {
        let file = |mode| fs::read(build_go_mode("culprit", version, mode)).unwrap();
        let normal = file(BuildMode::Default);
        let has = |data: &[u8], section: &str| {
            use object::{Object as _, ObjectSection as _};
            let obj = object::File::parse(data).unwrap();
            obj.sections().any(|s| s.name() == Ok(section))
        };
        let kind = |data: &[u8]| {
            use object::Object as _;
            object::File::parse(data).unwrap().kind()
        };
        assert!(has(&normal, ".symtab"));
        assert!(!has(&file(BuildMode::Stripped), ".symtab"));
        assert!(!has(&file(BuildMode::Stripped), ".debug_info"));
        assert_eq!(kind(&normal), object::ObjectKind::Executable);
        assert_eq!(kind(&file(BuildMode::Pie)), object::ObjectKind::Dynamic);
        assert!(
            !has(&normal, ".interp"),
            "the default build links internally, statically"
        );
        assert!(
            has(&file(BuildMode::Cgo), ".interp"),
            "the cgo build links libc"
        );
    }
}
