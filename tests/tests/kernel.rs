//! What the kernel offers decides what map-trace does, and each answer is asserted on the
//! kernel the test runs on (the host, and every guest of `cargo xtask test-vm`):
//!
//! - a kernel without what map-trace needs (the matrix's 5.10 lacks uprobe attach cookies)
//!   gets one `error:` line naming the kernel and the feature, and the target is untouched;
//!   a capable one is traced;
//! - on a kernel with kprobes (Debian's 6.1 and 6.12), madvise goes through the kprobe pair
//!   by default, and it sees exactly the calls the syscall tracepoints see in the same run;
//!   on one without (the host's 6.18), asking for kprobes is the clear error.
//!
//! Whether the kernel should be capable comes from its version, and whether it has kprobes
//! from its symbols (`register_kprobe`) — not from the checks map-trace itself makes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{path::Path, process::Command, time::Duration};

use integration_tests::{
    BuildMode, GO_SWISS, Program, Row, Tracer, assert_one_error_line, assert_untouched, build_go,
    build_go_mode, read_csv, run_map_trace,
};

const LIMIT: Duration = Duration::from_mins(4);

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_owned()
}

/// (major, minor) of the running kernel.
fn version() -> (u32, u32) {
    let release = release();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn a_kernel_without_what_map_trace_needs_is_refused_clearly() {
    let program = Program::start_ready(&build_go("idle", GO_SWISS), &[]);
    let pid = program.pid().to_string();
    if version() < (5, 15) {
        let f = run_map_trace(&["--pid", &pid], LIMIT);
        assert_one_error_line(
            &f,
            &format!(
                "kernel {} lacks the bpf_get_attach_cookie helper for uprobes (Linux 5.15+)",
                release()
            ),
        );
    } else {
        let mut tracer = Tracer::start(&["--pid", &pid, "--duration", "1"]);
        let attached = tracer.wait_attached(LIMIT);
        assert!(attached.contains(&format!("to pid {pid} ")), "{attached}");
        let done = tracer.finish(LIMIT);
        assert!(done.status.success(), "{:?}", done.stderr);
    }
    assert_untouched(program, LIMIT);
}

/// The madvise events of a CSV, per thread in order: (tid, addr, len, advice, result).
fn madvise_calls(rows: &[Row]) -> Vec<(String, String, String, String, String)> {
    let mut calls: Vec<_> = rows
        .iter()
        .filter(|r| r["event"] == "madvise")
        .map(|r| {
            (
                r["tid"].clone(),
                r["time_ns"].parse::<u64>().unwrap(),
                (r["addr"].clone(), r["len"].clone(), r["advice"].clone()),
                r["result"].clone(),
            )
        })
        .collect();
    // Each path stamps its own time; within a thread, calls come one after another.
    calls.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    calls
        .into_iter()
        .map(|(tid, _, (addr, len, advice), result)| (tid, addr, len, advice, result))
        .collect()
}

#[test]
fn madvise_by_kprobe_equals_the_tracepoints() {
    // The kernel's own symbols: register_kprobe exists where CONFIG_KPROBES is set.
    let kprobes = std::fs::read_to_string("/proc/kallsyms")
        .unwrap()
        .lines()
        .any(|l| l.ends_with(" register_kprobe"));
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let bin = build_go_mode("memory", GO_SWISS, BuildMode::Default);
    let mut program = Program::spawn_ready(
        Command::new(&bin)
            .args(["-out", report.to_str().unwrap()])
            .env("GODEBUG", "madvdontneed=1"),
    );
    let pid = program.pid().to_string();
    eprintln!("kernel {}: kprobes {kprobes}", release());
    if !kprobes {
        let f = run_map_trace(&["--pid", &pid, "--madvise-via", "kprobe"], LIMIT);
        assert_one_error_line(
            &f,
            &format!("kernel {} has no kprobes (CONFIG_KPROBES", release()),
        );
        assert_untouched(program, LIMIT);
        return;
    }
    let csv = |name: &str| dir.path().join(name);
    let start = |via: Option<&str>, out: &Path| {
        let mut args = vec!["--pid", &pid, "--events", "madvise", "--csv"];
        args.push(out.to_str().unwrap());
        if let Some(via) = via {
            args.extend(["--madvise-via", via]);
        }
        Tracer::start(&args)
    };
    // By default the kprobe pair, where the kernel has kprobes.
    let (by_kprobe, by_tracepoint) = (csv("kprobe.csv"), csv("tracepoint.csv"));
    let mut kprobe = start(None, &by_kprobe);
    let mut tracepoint = start(Some("tracepoint"), &by_tracepoint);
    let line = kprobe.wait_attached(LIMIT);
    assert!(line.contains("; madvise via kprobe: "), "{line}");
    let line = tracepoint.wait_attached(LIMIT);
    assert!(line.contains("; madvise via tracepoint: "), "{line}");
    program.proceed();
    let (status, _) = program.finish(LIMIT);
    assert!(status.success());
    for tracer in [kprobe, tracepoint] {
        let done = tracer.finish(LIMIT);
        assert!(done.status.success(), "{:?}", done.stderr);
        assert!(
            done.summary().contains("lost events: 0"),
            "{}",
            done.summary()
        );
    }
    let (k, t) = (
        madvise_calls(&read_csv(&by_kprobe)),
        madvise_calls(&read_csv(&by_tracepoint)),
    );
    // The program frees 200 MiB and returns it: dozens of DONTNEED calls.
    assert!(
        k.iter().filter(|c| c.3 == "DONTNEED").count() >= 10,
        "{k:?}"
    );
    assert_eq!(
        k, t,
        "the kprobe pair and the tracepoints saw different calls"
    );
}
