//! Many processes (issue 14), each counted exactly by what it reports itself:
//! - `-- go run .` and `-- go test` trace the program and the test binary the toolchain builds
//!   (held at their exec, so from their first instruction), and the toolchain itself;
//! - `--all` traces Go processes running before map-trace, started after it, and in a
//!   container's own pid and mount namespace (the summary names the container); `--exe`
//!   narrows it;
//! - fifty short-lived processes under `--` each count exactly, and nothing of map-trace is
//!   left in the kernel; under `--all` their kernel entries go when they exit;
//! - a stop with ten busy processes traced ends within a second;
//! - `--all` with `--pid` or `-- CMD` is a usage error.
//!
//! The tests trace host-wide and share the machine's BPF state, so they run one at a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use integration_tests::{
    EventCounts, Finished, GO_CLASSIC, GO_SWISS, ProcReport, Program, Tracer, attached_names,
    build_go, go_command, go_root, map_trace_bin, pids_in, run_map_trace, time_scale, wait_bounded,
};
use serde::Deserialize;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The bound of builds, runs and waits that should take far less.
fn limit() -> Duration {
    Duration::from_mins(2) * time_scale()
}

/// Matches the file names of the `procs` builds (`procs-go1.26.6`) and nothing else the
/// machine runs: `--all` then leaves alone every other Go process (a toolchain a parallel
/// test runs, say).
const PROCS_GLOB: &str = "procs-go*";

fn flavour(go: &str) -> &'static str {
    if go == GO_CLASSIC { "classic" } else { "swiss" }
}

/// map-trace, killed if the test ends before it does.
struct Traced(Option<Tracer>);

impl Traced {
    fn start(args: &[&str]) -> Self {
        Self(Some(Tracer::start(args)))
    }

    fn start_command(cmd: &mut Command) -> Self {
        Self(Some(Tracer::start_command(cmd)))
    }

    fn get(&mut self) -> &mut Tracer {
        self.0.as_mut().expect("map-trace still running")
    }

    fn take(&mut self) -> Tracer {
        self.0.take().expect("map-trace still running")
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(t) = &mut self.0 {
            t.kill();
        }
    }
}

/// A child that is not a [`Program`], killed if the test ends first.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `procs` started with `-wait`: its pid and map from the ready line.
struct Proc {
    program: Program,
    /// The pid the host sees.
    pid: u32,
    map: String,
    report: PathBuf,
}

/// Starts `bin -wait -n n -d d -out report` (plus `extra`), waits for its ready line.
fn start_proc(bin: &Path, n: u64, d: u64, report: &Path, extra: &[&str]) -> Proc {
    let (n, d) = (n.to_string(), d.to_string());
    let mut args = vec![
        "-wait",
        "-n",
        &n,
        "-d",
        &d,
        "-out",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let program = Program::start_ready(bin, &args);
    let (pid, map) = parse_ready(&program.ready);
    assert_eq!(pid, program.pid(), "the ready line's pid");
    Proc {
        pid,
        map,
        report: report.to_owned(),
        program,
    }
}

/// `<pid> <map>` from procs' ready line.
fn parse_ready(ready: &str) -> (u32, String) {
    let mut words = ready.split_whitespace();
    let (Some(pid), Some(map), None) = (words.next(), words.next(), words.next()) else {
        panic!("ready line {ready:?}");
    };
    (pid.parse().expect("pid"), map.to_owned())
}

/// Waits (bounded) for a procs that was told to finish; its report, which must name its pid
/// and map as its ready line did.
fn finish_proc(p: Proc) -> ProcReport {
    let (status, _) = p.program.finish(limit());
    assert!(status.success(), "procs {}: {status}", p.pid);
    let report = ProcReport::read(&p.report);
    assert_eq!((report.pid, &report.map), (p.pid, &p.map), "procs' report");
    report
}

/// Lets a `-wait` procs do its work and waits for its `done` line.
fn run_step(program: &mut Program, keep_stdin: bool) {
    if keep_stdin {
        program.step();
    } else {
        program.proceed();
    }
    let line = program.read_line();
    assert_eq!(line, "done", "procs after its step");
}

/// Asserts that process `pid` has exactly the report's assigns and deletes on its map.
fn assert_counts(counts: &EventCounts, pid: u32, report: &ProcReport, what: &str) {
    assert_eq!(
        counts.get(pid, &report.map, "assign"),
        report.assigns,
        "{what} (pid {pid}, map {}): assigns",
        report.map
    );
    assert_eq!(
        counts.get(pid, &report.map, "delete"),
        report.deletes,
        "{what} (pid {pid}, map {}): deletes",
        report.map
    );
}

/// The summary line that begins process `pid`'s block.
fn summary_line<'a>(lines: impl IntoIterator<Item = &'a str>, pid: u32) -> &'a str {
    let prefix = format!("map-trace: pid {pid} (");
    let mut lines = lines.into_iter();
    lines
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no summary block `{prefix}…`"))
}

/// Asserts the summary block line of `pid` names its Go release, flavour and (if given) exe.
fn assert_summary_line(line: &str, pid: u32, go: &str, exe: Option<&Path>) {
    let mut want = format!("map-trace: pid {pid} (go{go}, {} maps), exe ", flavour(go));
    if let Some(exe) = exe {
        want.push_str(exe.canonicalize().unwrap().to_str().unwrap());
        assert!(
            line == want || line.starts_with(&format!("{want},")),
            "summary line `{line}`, expected `{want}[, …]`"
        );
    } else {
        assert!(
            line.starts_with(&want),
            "summary line `{line}`, expected `{want}…`"
        );
    }
}

/// Whether the test itself runs in a container (its processes then have a container id too).
fn in_a_container() -> bool {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    ["docker", "kubepods", "crio-", "libpod-"]
        .iter()
        .any(|c| cgroup.contains(c))
}

/// A copy of `tests/go/<program>` in a scratch folder (the Go toolchain runs there).
fn module_copy(program: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("go")
        .join(program);
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// `map-trace --csv csv --events assign,delete -- <go> <args>` in `dir`, with the environment
/// the harness builds with.
fn map_trace_over_go(go: &str, dir: &Path, csv: &Path, args: &[&str]) -> Command {
    let go_cmd = go_command(go, dir);
    let mut cmd = Command::new(map_trace_bin());
    cmd.arg("--csv")
        .arg(csv)
        .args(["--events", "assign,delete", "--"])
        .arg(go_cmd.get_program())
        .args(args)
        .current_dir(dir);
    for (key, value) in go_cmd.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// The checks common to `go run` and `go test`: the program's events are exact, it and the
/// go command each have an `attached` line and a summary block.
fn check_toolchain_run(go: &str, done: &Finished, csv: &Path, report: &ProcReport, what: &str) {
    assert!(
        done.status.success(),
        "{what}: map-trace {}; stderr: {:?}",
        done.status,
        done.stderr
    );
    let pid = report.pid;
    let counts = EventCounts::read(csv);
    assert_counts(&counts, pid, report, what);
    assert!(
        done.stderr.iter().any(|l| attached_names(l, pid)),
        "{what}: no `attached … pid {pid}` line: {:?}",
        done.stderr
    );
    // The first `attached` line is the command's own: the go command.
    let first = done
        .stderr
        .iter()
        .find(|l| l.starts_with("attached "))
        .unwrap_or_else(|| panic!("{what}: no `attached` line: {:?}", done.stderr));
    let go_pid = *pids_in(first)
        .first()
        .unwrap_or_else(|| panic!("{what}: no pid in `{first}`"));
    assert_ne!(
        go_pid, pid,
        "{what}: the first `attached` line is the program's"
    );
    assert!(
        counts.of_pid(go_pid) > 0,
        "{what}: no events of the go command (pid {go_pid}); pids with events: {:?}",
        counts.pids()
    );
    // Under `-- CMD` the summary goes to stderr, a block per process.
    let lines = || done.stderr.iter().map(String::as_str);
    assert_summary_line(
        summary_line(lines(), go_pid),
        go_pid,
        go,
        Some(&go_root(go).join("bin/go")),
    );
    assert_summary_line(summary_line(lines(), pid), pid, go, None);
}

/// Runs the go command untraced once, as `args` set it up, reporting one assign to
/// `report`: the build cache then holds the compiled package (the traced run still runs
/// the go command, and the linker where go run does not cache executables).
fn warm_up(go: &str, dir: &Path, report: &Path, args: impl FnOnce(&mut Command)) {
    let mut cmd = go_command(go, dir);
    args(&mut cmd);
    let mut run = Guarded(cmd.stdout(Stdio::null()).spawn().unwrap());
    assert!(
        wait_bounded(&mut run.0, limit()).success(),
        "untraced go {go}"
    );
    assert_eq!(ProcReport::read(report).assigns, 1);
}

fn go_run(go: &str) {
    let dir = module_copy("procs");
    let scratch = tempfile::tempdir().unwrap();
    let warm = scratch.path().join("warm.json");
    warm_up(go, dir.path(), &warm, |cmd| {
        cmd.args(["run", ".", "-n", "1", "-out"]).arg(&warm);
    });

    let (csv, report) = (
        scratch.path().join("events.csv"),
        scratch.path().join("report.json"),
    );
    let (n, d) = (2500, 700);
    let mut cmd = map_trace_over_go(
        go,
        dir.path(),
        &csv,
        &[
            "run",
            ".",
            "-n",
            &n.to_string(),
            "-d",
            &d.to_string(),
            "-out",
            report.to_str().unwrap(),
        ],
    );
    let mut traced = Traced::start_command(&mut cmd);
    let done = traced.take().finish_bounded(limit());
    let report = ProcReport::read(&report);
    assert_eq!((report.assigns, report.deletes), (n, d));
    check_toolchain_run(go, &done, &csv, &report, &format!("go{go} run"));
}

#[test]
fn go_run_traces_the_program() {
    let _serial = serial();
    for go in [GO_SWISS, GO_CLASSIC] {
        go_run(go);
    }
}

fn go_test(go: &str) {
    let dir = module_copy("procstest");
    let scratch = tempfile::tempdir().unwrap();
    let warm = scratch.path().join("warm.json");
    warm_up(go, dir.path(), &warm, |cmd| {
        cmd.args(["test", "-count=1", "."])
            .env("PROCS_REPORT", &warm)
            .env("PROCS_N", "1")
            .env("PROCS_D", "0");
    });

    let (csv, report) = (
        scratch.path().join("events.csv"),
        scratch.path().join("report.json"),
    );
    let (n, d) = (3100, 1200);
    let mut cmd = map_trace_over_go(go, dir.path(), &csv, &["test", "-count=1", "."]);
    cmd.env("PROCS_REPORT", &report)
        .env("PROCS_N", n.to_string())
        .env("PROCS_D", d.to_string());
    let mut traced = Traced::start_command(&mut cmd);
    let done = traced.take().finish_bounded(limit());
    let report = ProcReport::read(&report);
    assert_eq!((report.assigns, report.deletes, report.len), (n, d, n - d));
    check_toolchain_run(go, &done, &csv, &report, &format!("go{go} test"));
}

#[test]
fn go_test_traces_the_test_binary() {
    let _serial = serial();
    for go in [GO_SWISS, GO_CLASSIC] {
        go_test(go);
    }
}

const CGROUP_V1_PIDS: &str = "/sys/fs/cgroup/pids";

/// A docker-style container id (64 lowercase hex digits), new each run.
fn container_id() -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut x = u64::try_from(seed % u128::from(u64::MAX)).unwrap() ^ u64::from(std::process::id());
    let mut id = String::new();
    for _ in 0..4 {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        write!(id, "{:016x}", z ^ (z >> 31)).unwrap();
    }
    id
}

/// procs run as pid 1 of its own pid and mount namespaces (`unshare`), in a cgroup laid out
/// as docker's (`/docker/<id>` in the v1 pids hierarchy). Dropping it kills the process and
/// removes the cgroup.
struct Contained {
    /// `unshare`, whose child is the program; `--kill-child` takes the program down with it.
    unshare: Option<Program>,
    /// The program's pid as the host sees it.
    host_pid: u32,
    map: String,
    id: String,
    cgroup: PathBuf,
    /// `/sys/fs/cgroup/pids/docker`, when this test made it.
    made_parent: Option<PathBuf>,
}

impl Contained {
    fn start(bin: &Path, n: u64, d: u64, report: &Path, extra: &[&str]) -> Self {
        let root = Path::new(CGROUP_V1_PIDS);
        assert!(
            root.join("cgroup.procs").exists(),
            "no cgroup v1 pids hierarchy at {CGROUP_V1_PIDS}"
        );
        let id = container_id();
        let parent = root.join("docker");
        let made_parent = if parent.exists() {
            None
        } else {
            std::fs::create_dir(&parent).unwrap();
            Some(parent.clone())
        };
        let cgroup = parent.join(&id);
        let mut me = Self {
            unshare: None,
            host_pid: 0,
            map: String::new(),
            id,
            cgroup,
            made_parent,
        };
        std::fs::create_dir(&me.cgroup).unwrap();

        let (n, d) = (n.to_string(), d.to_string());
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--mount", "--fork", "--mount-proc", "--kill-child"])
            .arg(bin)
            .args(["-wait", "-n", &n, "-d", &d, "-out"])
            .arg(report)
            .args(extra);
        let unshare = Program::spawn_ready(&mut cmd);
        let (pid_inside, map) = parse_ready(&unshare.ready);
        let unshare_pid = unshare.pid();
        me.unshare = Some(unshare);
        me.map = map;
        assert_eq!(pid_inside, 1, "procs is pid 1 of its own namespace");
        let children =
            std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children"))
                .unwrap();
        let children: Vec<u32> = children
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let [host_pid] = children[..] else {
            panic!("unshare {unshare_pid} has children {children:?}");
        };
        me.host_pid = host_pid;
        let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
        let nspid = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .expect("NSpid in status");
        let nspid: Vec<&str> = nspid.split_whitespace().collect();
        assert_eq!(
            nspid,
            [host_pid.to_string().as_str(), "1"],
            "pid {host_pid}'s pids by namespace"
        );
        std::fs::write(me.cgroup.join("cgroup.procs"), host_pid.to_string()).unwrap();
        let cgroups = std::fs::read_to_string(format!("/proc/{host_pid}/cgroup")).unwrap();
        assert!(
            cgroups
                .lines()
                .any(|l| l.ends_with(&format!(":pids:/docker/{}", me.id))),
            "pid {host_pid} not in the container's cgroup: {cgroups}"
        );
        me
    }

    fn program(&mut self) -> &mut Program {
        self.unshare.as_mut().expect("running")
    }

    /// Waits (bounded) for the program and unshare to exit, successfully.
    fn finish(&mut self) {
        let unshare = self.unshare.take().expect("running");
        let (status, _) = unshare.finish(limit());
        assert!(status.success(), "contained procs: {status}");
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        if self.unshare.is_some()
            && self.host_pid != 0
            && let Ok(pid) = libc::pid_t::try_from(self.host_pid)
        {
            // SAFETY: kill(2); the program is still alive (unshare, its parent, has not been
            // reaped), so the pid is still its.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        drop(self.unshare.take());
        // The cgroup can go once no task is left in it.
        let start = Instant::now();
        while std::fs::remove_dir(&self.cgroup).is_err()
            && self.cgroup.exists()
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(parent) = &self.made_parent {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// GET `/metrics` from map-trace's Prometheus endpoint.
fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10) * time_scale()))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// Waits (bounded) until a map metric of map-trace's Prometheus endpoint at `port` carries
/// the labels `pid="<pid>"` and `container="<id>"`.
fn assert_container_metrics(port: u16, pid: u32, id: &str) {
    let (want_pid, want_container) = (format!("pid=\"{pid}\""), format!("container=\"{id}\""));
    let labelled = |metrics: &str| {
        metrics
            .lines()
            .any(|l| !l.starts_with('#') && l.contains(&want_pid) && l.contains(&want_container))
    };
    let deadline = Instant::now() + Duration::from_secs(5) * time_scale();
    loop {
        let metrics = scrape(port);
        if labelled(&metrics) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no metric with {want_pid} and {want_container}:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn all_traces_every_go_process() {
    let _serial = serial();
    let (bin_a, bin_b, bin_c) = (
        build_go("procs", GO_CLASSIC),
        build_go("procs", GO_SWISS),
        build_go("procs", GO_SWISS),
    );
    let idle = build_go("idle", GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let csv = path("events.csv");

    // A and C run before map-trace; C in its own namespaces, in a "container".
    let mut a = start_proc(&bin_a, 3000, 1000, &path("a.json"), &[]);
    let mut c = Contained::start(&bin_c, 2200, 900, &path("c.json"), &["-hold"]);
    let port = free_port();
    let prometheus = format!("127.0.0.1:{port}");
    let mut traced = Traced::start(&[
        "--all",
        "--exe",
        PROCS_GLOB,
        "--csv",
        csv.to_str().unwrap(),
        "--prometheus",
        &prometheus,
    ]);
    let first = traced.get().wait_attached(limit());
    traced
        .get()
        .wait_attached_pids(&[a.pid, c.host_pid], limit());
    assert!(
        pids_in(&first).contains(&a.pid) || pids_in(&first).contains(&c.host_pid),
        "the first `attached` line `{first}` names neither A ({}) nor C ({})",
        a.pid,
        c.host_pid
    );

    // A Go program --exe leaves out, and B, started after the attach.
    let mut idle = Program::start_ready(&idle, &[]);
    let mut b = start_proc(&bin_b, 4100, 1300, &path("b.json"), &[]);
    // Attached within 100 ms of its exec; the line may take a little longer.
    let bound = Duration::from_secs(2) * time_scale();
    traced.get().wait_attached_pids(&[b.pid], bound);

    let (pids, bins) = ([a.pid, b.pid, c.host_pid], [&bin_a, &bin_b]);
    run_step(&mut a.program, false);
    run_step(&mut b.program, false);
    run_step(c.program(), true);
    let reports = [
        finish_proc(a),
        finish_proc(b),
        ProcReport::read(&path("c.json")),
    ];
    assert_eq!((reports[2].pid, &reports[2].map), (1, &c.map), "C's report");

    // While C still runs: its map metrics carry its pid and container.
    assert_container_metrics(port, c.host_pid, &c.id);
    c.program().proceed();
    c.finish();

    let (done, _) = traced.take().stop(libc::SIGINT, limit());
    assert!(
        done.status.success(),
        "map-trace {}; stderr: {:?}",
        done.status,
        done.stderr
    );

    let counts = EventCounts::read(&csv);
    for (what, (pid, report)) in ["A (before)", "B (after)", "C (contained)"]
        .iter()
        .zip(pids.iter().zip(&reports))
    {
        assert_counts(&counts, *pid, report, what);
    }
    let traced_pids = counts.pids();
    assert!(
        traced_pids.is_subset(&pids.iter().copied().collect::<BTreeSet<u32>>()),
        "events of processes --exe {PROCS_GLOB} leaves out: pids {traced_pids:?}, procs {pids:?}"
    );
    assert!(
        !done.stderr.iter().any(|l| attached_names(l, idle.pid())),
        "idle (pid {}) is not a procs build, yet attached: {:?}",
        idle.pid(),
        done.stderr
    );
    idle.proceed();
    let _ = idle.finish(limit());

    // The summary goes to stdout here: a block per process; C's names its container.
    let lines = || done.stdout.lines();
    let line_c = summary_line(lines(), c.host_pid);
    assert_summary_line(line_c, c.host_pid, GO_SWISS, None);
    assert!(
        line_c.contains(&format!(", container {}", c.id)),
        "C's summary line `{line_c}` lacks `, container {}`",
        c.id
    );
    for (pid, go, bin) in [(pids[0], GO_CLASSIC, bins[0]), (pids[1], GO_SWISS, bins[1])] {
        let line = summary_line(lines(), pid);
        assert_summary_line(line, pid, go, Some(bin));
        if !in_a_container() {
            assert!(!line.contains(", container "), "{line}");
        }
    }
}

/// `sh -c` running `procs` 50 times in a row, alternately classic and swiss, the i-th doing
/// 1000 + i assigns and i deletes (`scale` × i more assigns), reporting to
/// `dir/report-<i>.json`.
fn loop_script(scale: u64) -> String {
    format!(
        "classic=$1 swiss=$2 dir=$3
         for i in $(seq 50); do
           if [ $((i % 2)) -eq 0 ]; then bin=$swiss; else bin=$classic; fi
           \"$bin\" -n $((1000 + i + {scale} * i)) -d $i -out \"$dir/report-$i.json\" || exit 1
         done"
    )
}

/// map-trace's eBPF programs and the links of them.
const PROGRAMS: [&str; 4] = ["map_op", "call_entry", "call_return", "gc_event"];

#[derive(Deserialize)]
struct Holder {
    pid: u32,
}

#[derive(Deserialize)]
struct BpfObject {
    id: u64,
    name: Option<String>,
    /// The processes holding it (where bpftool can tell).
    #[serde(default)]
    pids: Vec<Holder>,
}

#[derive(Deserialize)]
struct BpfLink {
    id: u64,
    prog_id: u64,
}

fn bpftool_json<T: for<'de> Deserialize<'de>>(args: &[&str]) -> T {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool {args:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let text = if text.trim().is_empty() { "[]" } else { &text };
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}: {text}"))
}

fn newest_id(what: &str) -> u64 {
    bpftool_json::<Vec<BpfObject>>(&[what, "show"])
        .iter()
        .map(|o| o.id)
        .max()
        .unwrap_or(0)
}

/// Waits (bounded) until no eBPF program of map-trace newer than `after` is left, unless
/// another process holds it (another map-trace), nor any link of one.
fn assert_nothing_left(after: u64) {
    let start = Instant::now();
    loop {
        let programs: BTreeSet<u64> = bpftool_json::<Vec<BpfObject>>(&["prog", "show"])
            .into_iter()
            .filter(|p| p.id > after)
            .filter(|p| p.name.as_deref().is_some_and(|n| PROGRAMS.contains(&n)))
            .filter(|p| p.pids.is_empty())
            .map(|p| p.id)
            .collect();
        let links: Vec<u64> = bpftool_json::<Vec<BpfLink>>(&["link", "show"])
            .into_iter()
            .filter(|l| l.prog_id > after)
            .filter(|l| programs.contains(&l.prog_id))
            .map(|l| l.id)
            .collect();
        if programs.is_empty() && links.is_empty() {
            return;
        }
        // The kernel frees programs shortly after their last descriptor closes.
        assert!(
            start.elapsed() < Duration::from_secs(10) * time_scale(),
            "left after map-trace exited: programs {programs:?}, links {links:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fifty_short_lived_processes() {
    let _serial = serial();
    let (classic, swiss) = (build_go("procs", GO_CLASSIC), build_go("procs", GO_SWISS));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("events.csv");
    let after = newest_id("prog");
    let mut traced = Traced::start(&[
        "--csv",
        csv.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &loop_script(0),
        "sh",
        classic.to_str().unwrap(),
        swiss.to_str().unwrap(),
        dir.path().to_str().unwrap(),
    ]);
    // It ends by itself once the loop has.
    let done = traced.take().finish_bounded(limit());
    assert!(
        done.status.success(),
        "map-trace {}; stderr: {:?}",
        done.status,
        done.stderr
    );
    let counts = EventCounts::read(&csv);
    let mut pids = BTreeSet::new();
    for i in 1..=50_u64 {
        let report = ProcReport::read(&dir.path().join(format!("report-{i}.json")));
        assert_eq!((report.assigns, report.deletes), (1000 + i, i));
        let what = format!("process {i}");
        assert_counts(&counts, report.pid, &report, &what);
        assert!(
            done.stderr.iter().any(|l| attached_names(l, report.pid)),
            "{what}: no `attached … pid {}` line",
            report.pid
        );
        let go = if i % 2 == 0 { GO_SWISS } else { GO_CLASSIC };
        let bin = if i % 2 == 0 { &swiss } else { &classic };
        assert_summary_line(
            summary_line(done.stderr.iter().map(String::as_str), report.pid),
            report.pid,
            go,
            Some(bin),
        );
        pids.insert(report.pid);
    }
    assert_eq!(pids.len(), 50, "distinct pids");
    assert_nothing_left(after);
}

/// map-trace's kernel map named `name` (PROCS, FOLLOW), made after map id `after` and, where
/// bpftool can tell, held by `tracer`.
fn kernel_maps(name: &str, after: u64, tracer: u32) -> Vec<u64> {
    let maps: Vec<u64> = bpftool_json::<Vec<BpfObject>>(&["map", "show"])
        .into_iter()
        .filter(|m| m.id > after && m.name.as_deref() == Some(name))
        .filter(|m| m.pids.is_empty() || m.pids.iter().any(|h| h.pid == tracer))
        .map(|m| m.id)
        .collect();
    assert!(!maps.is_empty(), "no kernel map {name} of map-trace");
    maps
}

/// The entries of kernel map `id`, as bpftool dumps them.
fn dump(id: u64) -> Vec<serde_json::Value> {
    bpftool_json(&["map", "dump", "id", &id.to_string()])
}

/// The u32 key (a tgid) of a dumped entry: with BTF a number (`key` or `formatted.key`),
/// without, the key's bytes as hex strings, little-endian.
fn entry_key(entry: &serde_json::Value) -> Option<u64> {
    let formatted = &entry["formatted"]["key"];
    if let Some(k) = formatted.as_u64().or_else(|| entry["key"].as_u64()) {
        return Some(k);
    }
    let bytes: Vec<u8> = entry["key"]
        .as_array()?
        .iter()
        .map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
        .collect::<Option<_>>()?;
    let word: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u64::from(u32::from_le_bytes(word)))
}

#[test]
fn fifty_short_lived_processes_leave_no_kernel_entries_under_all() {
    let _serial = serial();
    let (classic, swiss) = (build_go("procs", GO_CLASSIC), build_go("procs", GO_SWISS));
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("events.csv");
    let (after_prog, after_map) = (newest_id("prog"), newest_id("map"));
    let mut traced = Traced::start(&["--all", "--exe", PROCS_GLOB, "--csv", csv.to_str().unwrap()]);
    // No procs runs yet: one `attached` line all the same.
    traced.get().wait_attached(limit());
    let tracer_pid = traced.get().pid();
    let procs_maps = kernel_maps("PROCS", after_map, tracer_pid);
    let follow_maps = kernel_maps("FOLLOW", after_map, tracer_pid);

    // A process that stays while the others come and go: PROCS holds it.
    let mut stay = start_proc(&swiss, 10, 0, &dir.path().join("stay.json"), &["-hold"]);
    traced.get().wait_attached_pids(&[stay.pid], limit());
    let deadline = Instant::now() + Duration::from_secs(1) * time_scale();
    loop {
        let keys: Vec<Option<u64>> = procs_maps
            .iter()
            .flat_map(|id| dump(*id))
            .map(|e| entry_key(&e))
            .collect();
        if keys.contains(&Some(u64::from(stay.pid))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PROCS has no entry for attached pid {}: keys {keys:?}",
            stay.pid
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(loop_script(2000))
        .arg("sh")
        .arg(&classic)
        .arg(&swiss)
        .arg(dir.path());
    let mut sh = Guarded(sh.spawn().unwrap());
    let status = wait_bounded(&mut sh.0, limit());
    assert!(status.success(), "the loop: {status}");
    for i in 1..=50 {
        let report = ProcReport::read(&dir.path().join(format!("report-{i}.json")));
        assert_eq!(report.deletes, i);
    }
    run_step(&mut stay.program, false);
    let (status, _) = stay.program.finish(limit());
    assert!(status.success(), "procs: {status}");

    // Every process has exited: their entries go.
    std::thread::sleep(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(1) * time_scale();
    loop {
        let left: Vec<(u64, Vec<serde_json::Value>)> = procs_maps
            .iter()
            .chain(&follow_maps)
            .map(|id| (*id, dump(*id)))
            .filter(|(_, entries)| !entries.is_empty())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "entries left in PROCS {procs_maps:?} / FOLLOW {follow_maps:?} after every \
             process exited: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (done, _) = traced.take().stop(libc::SIGINT, limit());
    assert!(
        done.status.success(),
        "map-trace {}; stderr: {:?}",
        done.status,
        done.stderr
    );
    assert_nothing_left(after_prog);
}

#[test]
fn sigint_with_many_processes_ends_within_a_second() {
    let _serial = serial();
    let bins = [build_go("procs", GO_CLASSIC), build_go("procs", GO_SWISS)];
    let dir = tempfile::tempdir().unwrap();
    let start = |i: usize| {
        let mut p = start_proc(
            &bins[i % 2],
            100,
            10,
            &dir.path().join(format!("report-{i}.json")),
            &["-busy"],
        );
        // Busy from now on, until stdin closes or the test ends.
        run_step(&mut p.program, true);
        p
    };
    // Five before map-trace, five after its first `attached` line.
    let mut procs: Vec<Proc> = (0..5).map(start).collect();
    // No CSV: ten busy processes would fill a guest's scratch space.
    let mut traced = Traced::start(&["--all", "--exe", PROCS_GLOB]);
    traced.get().wait_attached(limit());
    procs.extend((5..10).map(start));
    let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    traced.get().wait_attached_pids(&pids, limit());
    // Let events flow from all ten.
    std::thread::sleep(Duration::from_millis(500));

    let (done, took) = traced.take().stop(libc::SIGINT, limit());
    assert!(
        done.status.success(),
        "map-trace {}; stderr: {:?}",
        done.status,
        done.stderr
    );
    let bound = Duration::from_secs(1) * time_scale();
    assert!(
        took <= bound,
        "map-trace took {took:?} from SIGINT to its exit with ten processes traced (bound {bound:?})"
    );
    for (i, pid) in pids.iter().enumerate() {
        let go = if i % 2 == 0 { GO_CLASSIC } else { GO_SWISS };
        assert_summary_line(
            summary_line(done.stdout.lines(), *pid),
            *pid,
            go,
            Some(&bins[i % 2]),
        );
    }
    // The programs ran on, untouched, to the end.
    for p in &procs {
        let state = integration_tests::proc_state(p.pid);
        assert!(matches!(state, 'R' | 'S'), "pid {} is {state}", p.pid);
    }
}

#[test]
fn all_with_pid_or_command_is_a_usage_error() {
    for args in [&["--all", "--pid", "1"][..], &["--all", "--", "true"][..]] {
        let f = run_map_trace(args, limit());
        assert_eq!(
            f.status.code(),
            Some(2),
            "map-trace {args:?}: {}; stderr: {:?}",
            f.status,
            f.stderr
        );
        assert!(
            f.stderr.first().is_some_and(|l| l.starts_with("error: ")),
            "map-trace {args:?}: stderr {:?}",
            f.stderr
        );
    }
}
