//! Bad input gets one `error:` line and exit status 1, and the target is left exactly as it
//! was: still running, not stopped, and able to finish its work.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use integration_tests::{
    GO_CLASSIC, GO_SWISS, Program, Tracer, assert_one_error_line, assert_untouched, build_go,
    map_trace_bin, run_map_trace,
};

const LIMIT: Duration = Duration::from_mins(1);

#[test]
fn nonexistent_pid() {
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let free = (1..pid_max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let f = run_map_trace(&["--pid", &free.to_string()], LIMIT);
    assert_one_error_line(&f, &format!("no process with pid {free}"));
}

#[test]
fn process_that_is_not_go() {
    let mut sleeper = Command::new("sleep").arg("600").spawn().unwrap();
    let f = run_map_trace(&["--pid", &sleeper.id().to_string()], LIMIT);
    assert_one_error_line(&f, "not a Go program");
    let line = &f.stderr[0];
    assert_eq!(line.matches("not a Go program").count(), 1, "{line}");
    assert_eq!(line.matches("no Go build info").count(), 1, "{line}");
    let state = integration_tests::proc_state(sleeper.id());
    assert!(matches!(state, 'S' | 'R'), "sleep left in state {state}");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// A copy of a Go binary whose build info (and runtime version string) claims another
/// release.
fn binary_claiming(version_from: &str, version_to: &str, bin: &Path) -> PathBuf {
    let mut data = std::fs::read(bin).unwrap();
    let (from, to) = (version_from.as_bytes(), version_to.as_bytes());
    assert_eq!(from.len(), to.len());
    // Every copy: the build info and runtime.buildVersion.
    let mut patched = 0;
    while let Some(at) = data.windows(from.len()).position(|w| w == from) {
        data[at..at + to.len()].copy_from_slice(to);
        patched += 1;
    }
    assert!(patched > 0, "version string not found");
    let out = bin.with_file_name(format!(
        "{}-claims-{version_to}",
        bin.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&out, data).unwrap();
    let mut perms = std::fs::metadata(bin).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&out, perms).unwrap();
    out
}

/// Older than the oldest supported release, and the release between Debian's Go 1.19 and
/// Go 1.21 (no toolchain here to test it with).
#[test]
fn go_older_than_supported_or_untested() {
    let idle = build_go("idle", GO_CLASSIC);
    for claim in ["go1.18.13", "go1.20.13"] {
        // Same length, so the build info stays well-formed.
        let old = binary_claiming("go1.21.13", claim, &idle);
        let program = Program::start_ready(&old, &[]);
        let f = run_map_trace(&["--pid", &program.pid().to_string()], LIMIT);
        assert_one_error_line(
            &f,
            &format!("built with {claim}; map-trace supports Go 1.19 and 1.21 to 1.27"),
        );
        assert_untouched(program, LIMIT);
    }
}

#[test]
fn binary_without_the_map_functions_asked_for() {
    // idle uses no maps: the linker keeps the runtime's own mapassign* but drops mapclear.
    let idle = build_go("idle", GO_SWISS);
    let program = Program::start_ready(&idle, &[]);
    let f = run_map_trace(
        &["--pid", &program.pid().to_string(), "--events", "clear"],
        LIMIT,
    );
    assert_one_error_line(&f, "contains none of the runtime's map functions");
    assert_untouched(program, LIMIT);
}

#[test]
fn not_root() {
    let idle = build_go("idle", GO_SWISS);
    let program = Program::start_ready(&idle, &[]);
    // map-trace must be reachable by an unprivileged user.
    let bin = std::env::temp_dir().join(format!("map-trace-unprivileged-{}", std::process::id()));
    std::fs::copy(map_trace_bin(), &bin).unwrap();
    let tracer = Tracer::start_command(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&bin)
            .args(["--pid", &program.pid().to_string()]),
    );
    let f = tracer.finish(LIMIT);
    let _ = std::fs::remove_file(&bin);
    assert_one_error_line(&f, "CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE");
    assert_untouched(program, LIMIT);
}

#[test]
fn command_not_found() {
    let f = run_map_trace(&["--", "/nonexistent/program"], LIMIT);
    assert_one_error_line(&f, "command `/nonexistent/program` not found");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["--pid", "1", "--duration", "soon"],
        &["--pid", "1", "--events", "x"],
    ] {
        let f = run_map_trace(args, LIMIT);
        assert_eq!(f.status.code(), Some(2), "{args:?}: {:?}", f.stderr);
        assert!(f.stderr[0].starts_with("error: "), "{:?}", f.stderr);
    }
}

#[test]
fn unwritable_csv_is_refused_before_attaching() {
    let idle = build_go("idle", GO_SWISS);
    let program = Program::start_ready(&idle, &[]);
    let f = run_map_trace(
        &[
            "--pid",
            &program.pid().to_string(),
            "--csv",
            "/nonexistent-dir/events.csv",
        ],
        LIMIT,
    );
    assert_one_error_line(&f, "cannot write CSV to /nonexistent-dir/events.csv");
    assert!(!f.stderr[0].contains("attached"));
    assert_untouched(program, LIMIT);
}

#[test]
fn malformed_options_are_usage_errors() {
    for args in [
        &["--pid", "1", "--key-hash", "123"][..],
        &["--pid", "1", "--key-hash", "zzzzzzzzzzzzzzzz"],
        &["--pid", "1", "--map", "not-hex"],
        &["--pid", "1", "--map", "0"],
        &["--pid", "1", "--events", "assign,,grow"],
        &["--pid", "1", "--duration", "-1"],
        &["--pid", "1", "--duration", "0"],
        &["--pid", "1", "--ring-buffer-size", "1000"],
        &["--pid", "1", "--key", "a", "--key-int", "1"],
        &["--pid", "x"],
    ] {
        let f = run_map_trace(args, LIMIT);
        assert_eq!(f.status.code(), Some(2), "{args:?}: {:?}", f.stderr);
        assert!(
            f.stderr[0].starts_with("error: "),
            "{args:?}: {:?}",
            f.stderr
        );
    }
}

#[test]
fn zombie_and_kernel_thread_are_refused() {
    // A child that has exited and is not reaped yet is a zombie.
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    let start = std::time::Instant::now();
    while integration_tests::proc_state(pid) != 'Z' {
        assert!(start.elapsed() < LIMIT, "no zombie");
        std::thread::sleep(Duration::from_millis(10));
    }
    let f = run_map_trace(&["--pid", &pid.to_string()], LIMIT);
    assert_one_error_line(&f, &format!("pid {pid} is a zombie"));
    child.wait().unwrap();

    // kthreadd is pid 2.
    let f = run_map_trace(&["--pid", "2"], LIMIT);
    assert_one_error_line(&f, "pid 2 is a kernel thread");
}

/// A full device takes no CSV header: refused before any probe goes in.
#[test]
fn full_csv_device_is_refused_before_attaching() {
    let idle = build_go("idle", GO_CLASSIC);
    let program = Program::start_ready(&idle, &[]);
    let f = run_map_trace(
        &["--pid", &program.pid().to_string(), "--csv", "/dev/full"],
        LIMIT,
    );
    assert_one_error_line(&f, "No space left on device");
    assert!(!f.stderr.iter().any(|l| l.contains("attached")));
    assert_untouched(program, LIMIT);
}
