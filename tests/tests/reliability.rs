//! Never harm the target, never leak a probe, never lose data silently:
//! - a million traced map operations, on stacks that grow and move mid-call, leave the
//!   program's results bit for bit the same as untraced;
//! - however map-trace ends (SIGINT, SIGTERM, the target's exit, `--duration`, an internal
//!   error, SIGKILL), no BPF program, link or perf event of it remains, and the target runs on;
//! - the target exiting, being killed or exec'ing ends the run cleanly; its children are
//!   not traced;
//! - two map-traces on one process each see every event.
//!
//! The tests here share the machine's BPF state, so they run one at a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use integration_tests::{
    GO_CLASSIC, GO_SWISS, Program, Report, Tracer, assert_events_match, build_go, proc_state,
    read_csv, wait_bounded,
};
use serde::Deserialize;

const LIMIT: Duration = Duration::from_mins(4);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The summary's totals row: assigns, deletes, clears, grows, evacuations.
fn totals(summary: &str) -> Vec<u64> {
    summary
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no totals in:\n{summary}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn integrity(go: &str) {
    let _serial = serial();
    let bin = build_go("integrity", go);
    let untraced = Command::new(&bin).output().unwrap();
    assert!(untraced.status.success());
    let expected = String::from_utf8(untraced.stdout).unwrap();

    let mut program = Program::start_ready(&bin, &["-wait"]);
    let pid = program.pid().to_string();
    let mut tracer = Tracer::start(&[
        "--pid",
        &pid,
        "--events",
        "assign,delete,clear,grow,evacuate",
    ]);
    tracer.wait_attached(LIMIT);
    program.proceed();
    let (status, out) = program.finish(LIMIT);
    assert!(status.success(), "the traced program failed: {status}");
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    assert_eq!(
        out.trim(),
        expected.trim(),
        "traced results differ from untraced"
    );

    // `checksum X assigns A deletes D clears C`: map-trace saw exactly those calls.
    let words: Vec<&str> = expected.split_whitespace().collect();
    let n = |at: usize| words[at].parse::<u64>().unwrap();
    let (assigns, deletes, clears) = (n(3), n(5), n(7));
    assert!(assigns + deletes + clears >= 1_000_000, "{expected}");
    assert_eq!(
        totals(&done.stdout)[..3],
        [assigns, deletes, clears],
        "{}",
        done.stdout
    );
    assert!(done.stdout.contains("lost events: 0"), "{}", done.stdout);
}

#[test]
fn integrity_classic() {
    integrity(GO_CLASSIC);
}

#[test]
fn integrity_swiss() {
    integrity(GO_SWISS);
}

/// map-trace's programs, links and perf events on the machine right now.
#[derive(Debug, Default, PartialEq, Eq)]
struct BpfState {
    programs: BTreeSet<u64>,
    links: BTreeSet<u64>,
    perf_events: BTreeSet<(u64, u64)>,
}

/// The names of map-trace's eBPF programs as the kernel keeps them (15 characters).
const PROGRAMS: [&str; 8] = [
    "map_op",
    "call_entry",
    "call_return",
    "gc_event",
    "madvise_enter",
    "madvise_exit",
    "madvise_kprobe",
    "madvise_kretpro",
];

#[derive(Deserialize)]
struct Prog {
    id: u64,
    name: Option<String>,
    /// The processes holding it.
    #[serde(default)]
    pids: Vec<Holder>,
}

#[derive(Deserialize)]
struct Holder {
    pid: u32,
}

#[derive(Deserialize)]
struct Link {
    id: u64,
    prog_id: u64,
}

#[derive(Deserialize)]
struct Perf {
    pid: u64,
    fd: u64,
    prog_id: u64,
}

fn bpftool<T: for<'de> Deserialize<'de>>(what: &str) -> Vec<T> {
    let out = Command::new("bpftool")
        .args(["-j", what, "show"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool {what}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    if text.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str(&text).unwrap()
}

/// What one map-trace run may have left: its programs are newer than `after` (ids only
/// grow) and held by it or by no process at all — never those another map-trace on this
/// machine holds.
fn bpf_state(after: u64, tracer: u32) -> BpfState {
    let programs: BTreeSet<u64> = bpftool::<Prog>("prog")
        .into_iter()
        .filter(|p| p.name.as_deref().is_some_and(|n| PROGRAMS.contains(&n)))
        .filter(|p| p.id > after)
        .filter(|p| p.pids.is_empty() || p.pids.iter().any(|h| h.pid == tracer))
        .map(|p| p.id)
        .collect();
    BpfState {
        links: bpftool::<Link>("link")
            .into_iter()
            .filter(|l| programs.contains(&l.prog_id))
            .map(|l| l.id)
            .collect(),
        perf_events: bpftool::<Perf>("perf")
            .into_iter()
            .filter(|p| programs.contains(&p.prog_id) || p.pid == u64::from(tracer))
            .map(|p| (p.pid, p.fd))
            .collect(),
        programs,
    }
}

/// The newest BPF program id now: what a run starts after.
fn newest_program() -> u64 {
    bpftool::<Prog>("prog")
        .iter()
        .map(|p| p.id)
        .max()
        .unwrap_or(0)
}

/// Waits (bounded) until nothing of the map-trace `tracer`, started after program id
/// `after`, is left in the kernel.
fn assert_nothing_left(how: &str, after: u64, tracer: u32) {
    let start = Instant::now();
    loop {
        let state = bpf_state(after, tracer);
        if state == BpfState::default() {
            return;
        }
        // The kernel frees programs and events shortly after their last descriptor closes.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "after {how}, left in the kernel: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_demo() -> std::process::Child {
    Command::new(build_go("demo", GO_SWISS))
        .arg("600")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Ends a run on the demo with `signal`; the demo must run on, and nothing be left.
fn ended_by_signal(signal: &str, expect_success: bool) {
    let _serial = serial();
    let mut demo = start_demo();
    let pid = demo.id().to_string();
    let after = newest_program();
    let mut tracer = Tracer::start(&["--pid", &pid]);
    tracer.wait_attached(LIMIT);
    let tracer_pid = tracer.pid();
    let running = bpf_state(after, tracer_pid);
    assert!(running.programs.len() >= 3, "{running:?}");
    assert!(
        !running.links.is_empty() || !running.perf_events.is_empty(),
        "{running:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &tracer.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let done = tracer.finish(LIMIT);
    assert_eq!(done.status.success(), expect_success, "{:?}", done.stderr);
    if expect_success {
        assert!(done.stdout.contains("lost events: 0"), "{}", done.stdout);
    }
    assert_nothing_left(signal, after, tracer_pid);
    assert!(
        matches!(proc_state(demo.id()), 'R' | 'S'),
        "demo is {}",
        proc_state(demo.id())
    );
    demo.kill().unwrap();
    demo.wait().unwrap();
}

#[test]
fn nothing_left_after_sigint() {
    ended_by_signal("INT", true);
}

#[test]
fn nothing_left_after_sigterm() {
    ended_by_signal("TERM", true);
}

#[test]
fn nothing_left_after_sigkill() {
    ended_by_signal("KILL", false);
}

#[test]
fn nothing_left_after_duration_and_target_exit() {
    let _serial = serial();
    let mut demo = start_demo();
    let pid = demo.id().to_string();
    let after = newest_program();
    let tracer = Tracer::start(&["--pid", &pid, "--duration", "1"]);
    let tracer_pid = tracer.pid();
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    assert_nothing_left("--duration", after, tracer_pid);
    assert!(matches!(proc_state(demo.id()), 'R' | 'S'));
    demo.kill().unwrap();
    demo.wait().unwrap();

    let bin = build_go("lifecycle", GO_SWISS);
    let mut program = Program::start_ready(&bin, &["exit"]);
    let pid = program.pid().to_string();
    let after = newest_program();
    let mut tracer = Tracer::start(&["--pid", &pid, "--map", &program.ready]);
    tracer.wait_attached(LIMIT);
    let tracer_pid = tracer.pid();
    program.proceed();
    assert!(program.finish(LIMIT).0.success());
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    assert_eq!(totals(&done.stdout)[0], 1000, "{}", done.stdout);
    assert_nothing_left("the target's exit", after, tracer_pid);
}

/// Unmounts the scratch filesystem when the test ends.
struct Unmount(String);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A CSV on a filesystem that fills up mid-run: map-trace stops with one error line saying
/// what happened and what the file holds, removes its probes, and the target runs on.
#[test]
fn nothing_left_after_a_write_error() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mount = |args: &[&str]| {
        let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(status.success(), "{args:?}");
    };
    let at = dir.path().to_str().unwrap();
    mount(&["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", at]);
    let _unmount = Unmount(at.to_owned());

    let mut demo = start_demo();
    let pid = demo.id().to_string();
    let csv = dir.path().join("events.csv");
    let after = newest_program();
    let tracer = Tracer::start(&["--pid", &pid, "--csv", csv.to_str().unwrap()]);
    let tracer_pid = tracer.pid();
    let done = tracer.finish(LIMIT);
    assert_eq!(done.status.code(), Some(1), "{:?}", done.stderr);
    let errors: Vec<&String> = done
        .stderr
        .iter()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{:?}", done.stderr);
    assert!(
        errors[0].contains("No space left on device"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("tracing stopped at event"),
        "{}",
        errors[0]
    );
    assert!(std::fs::metadata(&csv).unwrap().len() > 100_000);
    assert_nothing_left("a write error", after, tracer_pid);
    assert!(matches!(proc_state(demo.id()), 'R' | 'S'));
    demo.kill().unwrap();
    demo.wait().unwrap();
}

/// Traces lifecycle in `mode` by pid; returns map-trace's result and the program.
fn lifecycle(mode: &str) -> (integration_tests::Finished, Program) {
    let bin = build_go("lifecycle", GO_CLASSIC);
    let mut program = Program::start_ready(&bin, &[mode]);
    let pid = program.pid().to_string();
    let mut tracer = Tracer::start(&["--pid", &pid, "--no-tui", "--map", &program.ready]);
    tracer.wait_attached(LIMIT);
    program.step();
    if mode == "hang" {
        std::thread::sleep(Duration::from_millis(500));
        program.child.kill().unwrap();
    }
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{mode}: {:?}", done.stderr);
    assert_eq!(totals(&done.stdout)[0], 1000, "{mode}: {}", done.stdout);
    (done, program)
}

#[test]
fn a_killed_target_ends_the_run() {
    let _serial = serial();
    let (done, mut program) = lifecycle("hang");
    assert!(done.stdout.contains("lost events: 0"));
    wait_bounded(&mut program.child, LIMIT);
}

#[test]
fn an_exec_ends_the_run_and_says_so() {
    let _serial = serial();
    let (done, mut program) = lifecycle("exec");
    let said = done
        .stderr
        .iter()
        .find(|l| l.contains("left the traced binary"))
        .unwrap_or_else(|| panic!("{:?}", done.stderr));
    assert!(said.ends_with("bin/sleep"), "{said}");
    // The process itself goes on, as sleep.
    assert!(matches!(proc_state(program.pid()), 'R' | 'S'));
    program.child.kill().unwrap();
    wait_bounded(&mut program.child, LIMIT);
}

/// A child the traced process starts (itself again) is traced too, unless `--no-follow`.
/// Under `--pid` a descendant is not held at its exec, so only its attach is certain, not
/// its first operations; the parent's own count stays exact either way.
#[test]
fn children_are_followed_unless_no_follow() {
    let _serial = serial();
    let bin = build_go("lifecycle", GO_SWISS);
    for follow in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("e.csv");
        let mut program = Program::start_ready(&bin, &["fork"]);
        let pid = program.pid();
        let mut args = vec![
            "--pid".to_owned(),
            pid.to_string(),
            "--csv".into(),
            csv.to_str().unwrap().into(),
            "--events".into(),
            "assign".into(),
            "--map".into(),
            program.ready.clone(),
        ];
        if !follow {
            args.push("--no-follow".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut tracer = Tracer::start(&args);
        tracer.wait_attached(LIMIT);
        program.step();
        // The child (the same binary) assigns 777 times and exits; then the parent waits.
        assert!(program.read_line().starts_with("worked"));
        let child: u32 = program
            .read_line()
            .trim()
            .strip_prefix("child ")
            .and_then(|p| p.parse().ok())
            .expect("the child's pid");
        program.proceed();
        assert!(program.finish(LIMIT).0.success());
        let done = tracer.finish(LIMIT);
        assert!(done.status.success(), "{:?}", done.stderr);
        let child_attached = done
            .stderr
            .iter()
            .any(|l| l.starts_with("attached ") && l.contains(&format!("pid {child} ")));
        assert_eq!(child_attached, follow, "follow {follow}: {:?}", done.stderr);
        let rows = read_csv(&csv);
        let parents = rows.iter().filter(|r| r["pid"] == pid.to_string()).count();
        assert_eq!(parents, 1000, "follow {follow}: {}", done.stdout);
        let others = rows.iter().filter(|r| r["pid"] != pid.to_string());
        if follow {
            assert!(others.clone().all(|r| r["pid"] == child.to_string()));
        } else {
            assert_eq!(others.count(), 0, "events of another process");
        }
    }
}

/// Two map-traces on one process at once: each sees every event.
#[test]
fn two_tracers_each_see_every_event() {
    let _serial = serial();
    let bin = build_go("mapops", GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let mut program = Program::start_ready(
        &bin,
        &["-wait", "-n", "1000", "-out", report.to_str().unwrap()],
    );
    let pid_num = program.pid();
    let pid = pid_num.to_string();
    let csvs = [dir.path().join("a.csv"), dir.path().join("b.csv")];
    let mut tracers: Vec<Tracer> = csvs
        .iter()
        .map(|csv| Tracer::start(&["--pid", &pid, "--csv", csv.to_str().unwrap()]))
        .collect();
    for t in &mut tracers {
        t.wait_attached(LIMIT);
    }
    program.proceed();
    assert!(program.finish(LIMIT).0.success());
    let report = Report::read(&report);
    for (tracer, csv) in tracers.into_iter().zip(&csvs) {
        let done = tracer.finish(LIMIT);
        assert!(done.status.success(), "{:?}", done.stderr);
        assert_events_match(&report, &read_csv(csv), pid_num);
    }
}
