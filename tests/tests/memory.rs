//! Memory given back: map-trace's madvise events equal strace's record of the same run,
//! call by call; its GC events equal the program's own `runtime.NumGC` change; its RSS
//! samples are there and plausible. On a classic and a swiss Go release, with the runtime
//! returning memory by `MADV_DONTNEED` (`GODEBUG=madvdontneed=1`) and by `MADV_FREE` (`=0`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{collections::HashMap, path::Path, process::Command, time::Duration};

use integration_tests::{
    BuildMode, GO_CLASSIC, GO_SWISS, Program, Row, Tracer, build_go_mode, read_csv,
};
use map_trace::tracer::MadvisePath;
use serde::Deserialize;

const LIMIT: Duration = Duration::from_mins(2);

/// One madvise call: address, length, advice name, and the errno name or `OK`.
type Call = (u64, u64, String, String);

#[derive(Deserialize)]
struct Report {
    numgc_before: u64,
    numgc_after: u64,
}

/// The madvise calls in strace output, joining `<unfinished ...>` and `<... resumed>`.
fn strace_calls(text: &str) -> Vec<Call> {
    let mut pending: HashMap<&str, &str> = HashMap::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let whole = if let Some(args) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(tid, args);
            continue;
        } else if let Some(tail) = rest.strip_prefix("<... madvise resumed>") {
            format!(
                "{}{tail}",
                pending.remove(tid).expect("resumed call was started")
            )
        } else if rest.starts_with("madvise(") {
            rest.to_owned()
        } else {
            continue;
        };
        // strace pads a resumed call's result into a column: `...)      = 0`.
        let (call, result) = whole.rsplit_once(" = ").expect("a result");
        let call = call.trim_end();
        let args: Vec<&str> = call
            .trim_start_matches("madvise(")
            .trim_end_matches(')')
            .split(", ")
            .collect();
        let addr = u64::from_str_radix(args[0].trim_start_matches("0x"), 16).unwrap();
        let advice = args[2].trim_start_matches("MADV_").to_owned();
        let outcome = if result.trim() == "0" {
            "OK".to_owned()
        } else {
            result.split_whitespace().nth(1).unwrap().to_owned()
        };
        calls.push((addr, args[1].parse().unwrap(), advice, outcome));
    }
    calls.sort();
    calls
}

fn errno_name(result: i64) -> String {
    match -result {
        0 => "OK",
        1 => "EPERM",
        11 => "EAGAIN",
        12 => "ENOMEM",
        22 => "EINVAL",
        38 => "ENOSYS",
        _ => "other",
    }
    .to_owned()
}

fn trace_calls(rows: &[Row]) -> Vec<Call> {
    let mut calls: Vec<Call> = rows
        .iter()
        .filter(|r| r["event"] == "madvise")
        .map(|r| {
            (
                u64::from_str_radix(r["addr"].trim_start_matches("0x"), 16).unwrap(),
                r["len"].parse().unwrap(),
                r["advice"].clone(),
                errno_name(r["result"].parse().unwrap()),
            )
        })
        .collect();
    calls.sort();
    calls
}

/// Waits until strace has attached to every thread of `pid`.
fn wait_traced(pid: u32) {
    for _ in 0..500 {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let all = tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("status")).is_ok_and(|s| {
                s.lines().any(|l| {
                    l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0")
                })
            })
        });
        if all {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("strace never attached to every thread of {pid}");
}

/// A PIE build checks that GC cycle numbers are read at the run-time address of
/// `memstats` (the link-time one plus the load bias).
fn memory(go: &str, madvdontneed: &str, mode: BuildMode) {
    let bin = build_go_mode("memory", go, mode);
    let dir = tempfile::tempdir().unwrap();
    let (csv, report, strace_out) = (
        dir.path().join("e.csv"),
        dir.path().join("r.json"),
        dir.path().join("strace.txt"),
    );
    let mut program = Program::spawn_ready(
        Command::new(&bin)
            .args(["-out", report.to_str().unwrap()])
            .env("GODEBUG", format!("madvdontneed={madvdontneed}")),
    );
    let pid = program.pid().to_string();
    let mut strace = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=madvise",
            "-o",
            strace_out.to_str().unwrap(),
            "-p",
            &pid,
        ])
        .spawn()
        .expect("strace (cargo xtask setup installs it)");
    wait_traced(program.pid());
    let mut tracer = Tracer::start(&[
        "--pid",
        &pid,
        "--csv",
        csv.to_str().unwrap(),
        "--rss-interval",
        "0.2",
    ]);
    let attached = tracer.wait_attached(LIMIT);
    let path = MadvisePath::choose(Path::new("/sys"), None).unwrap().name();
    assert!(
        attached.contains(&format!("; madvise via {path}: ")),
        "{attached}"
    );
    program.proceed();
    let (status, _) = program.finish(LIMIT);
    assert!(status.success());
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "{:?}", done.stderr);
    assert!(integration_tests::wait_bounded(&mut strace, LIMIT).success());
    let rows = read_csv(&csv);

    // madvise: the same calls, one for one.
    let expected = strace_calls(&std::fs::read_to_string(&strace_out).unwrap());
    let seen = trace_calls(&rows);
    assert_eq!(seen, expected, "go{go} madvdontneed={madvdontneed}");
    let count = |advice: &str| seen.iter().filter(|c| c.2 == advice).count();
    if madvdontneed == "1" {
        assert!(count("DONTNEED") > 0 && count("FREE") == 0, "{seen:?}");
    } else {
        assert!(count("FREE") > 0, "{seen:?}");
    }

    // GC: every cycle the program saw complete, started and ended under the probes.
    let report: Report = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let cycles = report.numgc_after - report.numgc_before;
    let gc = |what: &str| {
        rows.iter()
            .filter(|r| r["event"] == "gc" && r["detail"].starts_with(what))
            .count() as u64
    };
    assert!(cycles >= 3, "{cycles}");
    assert_eq!((gc("start:"), gc("mark-end:")), (cycles, cycles), "go{go}");
    let last_end = format!("mark-end:{}", report.numgc_after);
    assert!(
        rows.iter().any(|r| r["detail"] == last_end),
        "no {last_end}"
    );

    // RSS: samples throughout, in bytes, and the peak holds the allocation.
    let rss: Vec<u64> = rows
        .iter()
        .filter(|r| r["event"] == "rss" && r["detail"] == "VmRSS")
        .map(|r| r["len"].parse().unwrap())
        .collect();
    assert!(rss.len() >= 5, "{rss:?}");
    assert!(
        rss.iter().all(|b| (1 << 20..8 << 30).contains(b)),
        "{rss:?}"
    );
    assert!(*rss.iter().max().unwrap() >= 150 << 20, "peak {rss:?}");
    assert!(
        done.summary().contains("rss VmRSS: start"),
        "{}",
        done.summary()
    );
    assert!(
        done.summary().contains("lost events: 0"),
        "{}",
        done.summary()
    );
}

#[test]
fn classic_dontneed() {
    memory(GO_CLASSIC, "1", BuildMode::Default);
}

#[test]
fn classic_free_pie() {
    memory(GO_CLASSIC, "0", BuildMode::Pie);
}

#[test]
fn swiss_dontneed_pie() {
    memory(GO_SWISS, "1", BuildMode::Pie);
}

#[test]
fn swiss_free() {
    memory(GO_SWISS, "0", BuildMode::Default);
}

#[test]
fn strace_lines_are_read_whole() {
    let text = "10 madvise(0x7f00, 4096, MADV_DONTNEED) = 0\n\
                11 madvise(0x8000, 8192, MADV_FREE <unfinished ...>\n\
                10 madvise(0x9000, 4096, MADV_COLLAPSE) = -1 EINVAL (Invalid argument)\n\
                                11 <... madvise resumed>)           = 0\n";
    assert_eq!(
        strace_calls(text),
        [
            (0x7f00, 4096, "DONTNEED".into(), "OK".into()),
            (0x8000, 8192, "FREE".into(), "OK".into()),
            (0x9000, 4096, "COLLAPSE".into(), "EINVAL".into()),
        ]
    );
}
