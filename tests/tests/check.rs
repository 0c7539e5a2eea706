//! `map-trace check`: one line per item, agreeing with this kernel as found independently
//! (uname, sysfs, the tracepoint's format, what a real trace chose), and exit status 1 with
//! one `error:` line when tracing cannot work, shown with fake sysfs trees and with the
//! capabilities dropped. Also run in the kernel matrix's guests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use integration_tests::{
    Finished, GO_SWISS, Program, Tracer, assert_one_error_line, build_go, map_trace_bin,
    run_map_trace,
};

const LIMIT: Duration = Duration::from_mins(2);
/// The process tracepoints (3), the madvise pair (2) and the uprobe programs (4).
const PROGRAMS: usize = 9;

/// The report's lines: item → (status, detail).
fn report(f: &Finished) -> BTreeMap<String, (String, String)> {
    f.stdout
        .lines()
        .filter(|l| !l.starts_with("map-trace can trace"))
        .map(|l| {
            let (name, rest) = l.split_at(14.min(l.len()));
            let (status, detail) = rest.split_at(9.min(rest.len()));
            (
                name.trim().to_owned(),
                (status.trim().to_owned(), detail.trim().to_owned()),
            )
        })
        .collect()
}

fn status<'a>(items: &'a BTreeMap<String, (String, String)>, name: &str) -> &'a str {
    &items
        .get(name)
        .unwrap_or_else(|| panic!("no {name} line: {items:?}"))
        .0
}

fn uname(option: &str) -> String {
    let out = Command::new("uname").arg(option).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn release() -> String {
    uname("-r")
}

fn release_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap(), parts.next().unwrap()) >= want
}

/// `offset:N` of `child_pid` in the fork tracepoint's format, read here.
fn child_pid_offset(format: &str) -> u32 {
    let line = format
        .lines()
        .find(|l| l.contains(" child_pid;"))
        .expect("child_pid in the format");
    let offset = line.split("offset:").nth(1).unwrap();
    offset.split(';').next().unwrap().parse().unwrap()
}

const FORK_FORMAT: &str = "/sys/kernel/tracing/events/sched/sched_process_fork/format";

#[test]
fn this_host_is_reported_as_a_trace_would_use_it() {
    let f = run_map_trace(&["check"], LIMIT);
    let items = report(&f);
    let release = release();
    assert_eq!(items["kernel"], ("ok".into(), release.clone()));
    let machine = uname("-m");
    let goarch = match machine.as_str() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no map-trace build for {other}"),
    };
    assert_eq!(
        items["architecture"],
        (
            "ok".into(),
            format!("{machine}: this build traces {goarch} Go programs")
        )
    );
    assert_eq!(status(&items, "privileges"), "ok");
    assert_eq!(status(&items, "uprobes"), "ok");
    assert_eq!(status(&items, "ring buffer"), "ok");
    if !release_at_least(&release, (5, 15)) {
        // 5.10: no attach cookies, and the check fails as a trace would.
        assert_eq!(status(&items, "attach cookie"), "missing", "{items:?}");
        assert_one_error_line(&f, "bpf_get_attach_cookie");
        assert_eq!(status(&items, "programs"), "no");
        return;
    }
    assert!(f.status.success(), "{:?}\n{}", f.stderr, f.stdout);
    assert!(f.stderr.is_empty(), "{:?}", f.stderr);
    assert!(
        f.stdout
            .ends_with("map-trace can trace Go processes on this host\n")
    );
    assert_eq!(status(&items, "attach cookie"), "ok");
    // The fork record's layout, as this kernel's format gives it.
    let format = std::fs::read_to_string(FORK_FORMAT).unwrap();
    assert!(
        items["tracefs"]
            .1
            .contains(&format!("child_pid at byte {})", child_pid_offset(&format))),
        "{:?}",
        items["tracefs"]
    );
    let links = if release_at_least(&release, (6, 10)) {
        "ok"
    } else {
        "no"
    };
    assert_eq!(status(&items, "uprobe links"), links, "{items:?}");
    let btf = if Path::new("/sys/kernel/btf/vmlinux").exists() {
        "ok"
    } else {
        "no"
    };
    assert_eq!(status(&items, "BTF"), btf);
    assert_eq!(
        items["programs"],
        (
            "ok".into(),
            format!("{PROGRAMS} eBPF programs passed this kernel's verifier")
        )
    );
    // The madvise path is the one a trace takes here.
    let kprobes = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    let madvise = &items["madvise"].1;
    assert_eq!(
        madvise.starts_with("kprobes on do_madvise"),
        kprobes,
        "{madvise}"
    );
    let idle = build_go("idle", GO_SWISS);
    let program = Program::start_ready(&idle, &[]);
    let mut tracer = Tracer::start(&["--pid", &program.pid().to_string(), "--duration", "1"]);
    let attached = tracer.wait_attached(LIMIT);
    let via = if kprobes {
        "madvise via kprobe"
    } else {
        "madvise via tracepoint"
    };
    assert!(attached.contains(via), "{attached} / {madvise}");
    assert!(tracer.finish(LIMIT).status.success());
}

/// A sysfs tree with the uprobe event source and tracefs holding `format` as the fork
/// tracepoint's, and the kprobe source if `kprobes`.
fn fake_sysfs(format: &str, kprobes: bool) -> tempfile::TempDir {
    let sys = tempfile::tempdir().unwrap();
    let mut sources = vec!["uprobe"];
    if kprobes {
        sources.push("kprobe");
    }
    for source in sources {
        let dir = sys.path().join("bus/event_source/devices").join(source);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("type"), "7\n").unwrap();
    }
    let fork = sys
        .path()
        .join("kernel/tracing/events/sched/sched_process_fork");
    std::fs::create_dir_all(&fork).unwrap();
    std::fs::write(fork.join("format"), format).unwrap();
    sys
}

fn check_with(sysfs: &Path) -> Finished {
    run_map_trace(&["check", "--sysfs", sysfs.to_str().unwrap()], LIMIT)
}

#[test]
fn a_sysfs_without_uprobes_fails_naming_them() {
    let empty = tempfile::tempdir().unwrap();
    let f = check_with(empty.path());
    let items = report(&f);
    assert_eq!(status(&items, "uprobes"), "missing");
    assert_eq!(status(&items, "tracefs"), "no", "{items:?}");
    assert_eq!(status(&items, "BTF"), "no");
    assert_eq!(status(&items, "programs"), "no");
    assert_one_error_line(&f, "has no uprobes (CONFIG_UPROBE_EVENTS");
}

#[test]
fn a_fake_sysfs_decides_tracefs_and_the_madvise_path() {
    let format = std::fs::read_to_string(FORK_FORMAT).unwrap();
    // A fork record without the field the programs read: tracing cannot follow forks.
    let broken = format.replace(" child_pid;", " child_tid;");
    let sys = fake_sysfs(&broken, true);
    let f = check_with(sys.path());
    let items = report(&f);
    assert_eq!(status(&items, "uprobes"), "ok");
    assert_eq!(status(&items, "tracefs"), "missing", "{items:?}");
    assert!(
        items["madvise"].1.starts_with("kprobes on do_madvise"),
        "{items:?}"
    );
    assert_one_error_line(&f, "has no field child_pid");

    // The same tree with the real format and no kprobes: the syscall tracepoints, and the
    // offset of the format given.
    let shifted = format.replace(
        &format!("offset:{};", child_pid_offset(&format)),
        "offset:36;",
    );
    let sys = fake_sysfs(&shifted, false);
    let f = check_with(sys.path());
    let items = report(&f);
    assert_eq!(status(&items, "tracefs"), "ok", "{items:?}");
    assert!(
        items["tracefs"].1.contains("child_pid at byte 36)"),
        "{items:?}"
    );
    assert!(
        items["madvise"]
            .1
            .starts_with("the syscalls:sys_enter_madvise"),
        "{items:?}"
    );
}

#[test]
fn without_capabilities_nothing_is_loaded_and_the_fix_is_named() {
    let f = Tracer::start_command(
        Command::new("setpriv")
            .arg("--bounding-set=-all")
            .arg(map_trace_bin())
            .arg("check"),
    )
    .finish(LIMIT);
    let items = report(&f);
    assert_eq!(status(&items, "privileges"), "missing", "{items:?}");
    assert!(items["privileges"].1.contains("CAP_BPF"), "{items:?}");
    // The BPF probes cannot be made: not found out, rather than reported missing.
    assert_eq!(status(&items, "ring buffer"), "unknown");
    assert_eq!(status(&items, "attach cookie"), "unknown");
    assert_eq!(status(&items, "programs"), "no");
    assert_one_error_line(&f, "run it as root");
}
