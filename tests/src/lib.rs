//! Helpers for the integration tests: building the Go programs in `tests/go` with a given Go
//! release, running the real map-trace binary against them, and reading what both report.
//!
//! Run through `cargo xtask test`, which installs the Go toolchains and sets
//! `MAP_TRACE_GO_ROOTS` and `MAP_TRACE_BIN`. Missing either fails the test loudly: a test
//! that quietly skips proves nothing.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic to fail the test"
)]
#![expect(clippy::expect_used, reason = "test helpers")]

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Mutex, mpsc},
    time::{Duration, Instant},
};

use serde::Deserialize;

/// The Go releases the tests build with: one classic-map and one swiss-map runtime.
pub const GO_CLASSIC: &str = "1.21.13";
pub const GO_SWISS: &str = "1.26.6";
/// Debian 12's Go, which builds every Go program bookworm ships (classic maps, the Go 1.18
/// pclntab format).
pub const GO_DEBIAN: &str = "1.19.8";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// GOROOT of a Go release installed by `cargo xtask setup`.
#[must_use]
pub fn go_root(version: &str) -> PathBuf {
    let roots = std::env::var("MAP_TRACE_GO_ROOTS")
        .expect("MAP_TRACE_GO_ROOTS is not set: run the tests with `cargo xtask test`");
    roots
        .split(',')
        .find_map(|entry| entry.strip_prefix(&format!("{version}=")))
        .map_or_else(
            || panic!("Go {version} is not in MAP_TRACE_GO_ROOTS={roots}"),
            PathBuf::from,
        )
}

/// Every Go release the test run has.
#[must_use]
pub fn go_versions() -> Vec<String> {
    let roots = std::env::var("MAP_TRACE_GO_ROOTS")
        .expect("MAP_TRACE_GO_ROOTS is not set: run the tests with `cargo xtask test`");
    roots
        .split(',')
        .filter_map(|e| e.split_once('='))
        .map(|(v, _)| v.to_owned())
        .collect()
}

/// The map-trace binary under test.
#[must_use]
pub fn map_trace_bin() -> PathBuf {
    std::env::var_os("MAP_TRACE_BIN")
        .map(PathBuf::from)
        .expect("MAP_TRACE_BIN is not set: run the tests with `cargo xtask test`")
}

/// Serialises Go builds: parallel tests share outputs and the Go build cache.
static GO_BUILD: Mutex<()> = Mutex::new(());

/// Runs `go` of release `version` in `dir`.
#[must_use]
pub fn go_command(version: &str, dir: &Path) -> Command {
    let root = go_root(version);
    let mut cmd = Command::new(root.join("bin/go"));
    cmd.current_dir(dir)
        .env("GOROOT", &root)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off");
    cmd
}

/// A Go build to test against: a release and its `GOEXPERIMENT` (empty for none).
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub go: &'static str,
    pub experiment: &'static str,
}

/// Every build map-trace supports, as the support matrix lists them.
pub const VARIANTS: [Variant; 11] = [
    Variant {
        go: GO_DEBIAN,
        experiment: "",
    },
    Variant {
        go: "1.21.13",
        experiment: "",
    },
    Variant {
        go: "1.22.10",
        experiment: "",
    },
    Variant {
        go: "1.23.9",
        experiment: "",
    },
    Variant {
        go: "1.24.11",
        experiment: "",
    },
    Variant {
        go: "1.24.11",
        experiment: "noswissmap",
    },
    Variant {
        go: "1.25.5",
        experiment: "",
    },
    Variant {
        go: "1.25.5",
        experiment: "noswissmap",
    },
    Variant {
        go: "1.26.6",
        experiment: "",
    },
    Variant {
        go: "1.27.3",
        experiment: "",
    },
    Variant {
        go: "1.27.3",
        experiment: "mapsplitgroup",
    },
];

impl Variant {
    /// The map implementation this build has: classic up to 1.23 and with `noswissmap`.
    #[must_use]
    pub fn flavour(&self) -> &'static str {
        let minor: u32 = self
            .go
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .expect("minor");
        if minor <= 23 || self.experiment == "noswissmap" {
            "classic"
        } else {
            "swiss"
        }
    }

    /// Builds `tests/go/<program>` as this variant.
    #[must_use]
    pub fn build(&self, program: &str) -> PathBuf {
        build_go_with(program, self.go, self.experiment)
    }

    /// Builds `tests/go/<program>` as this variant for `goarch` (`GOARCH`), once per test
    /// run, into `target/go-test-bins/<goarch>/`: code to read, not to run here.
    #[must_use]
    pub fn build_for(&self, program: &str, goarch: &str) -> PathBuf {
        let out = workspace_root()
            .join("target/go-test-bins")
            .join(goarch)
            .join(format!("{program}-go{}{}", self.go, self.experiment));
        let _guard = GO_BUILD
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        run_go_build(
            program,
            self.go,
            &[("GOEXPERIMENT", self.experiment)],
            &[],
            &out,
            Some(goarch),
        );
        out
    }

    /// Builds `tests/go/<program>` as this variant in `mode`.
    #[must_use]
    pub fn build_mode(&self, program: &str, mode: BuildMode) -> PathBuf {
        build_variant_mode(program, self.go, self.experiment, mode)
    }
}

/// Builds `tests/go/<program>` with Go `version` (once per test run) and returns the binary.
#[must_use]
pub fn build_go(program: &str, version: &str) -> PathBuf {
    build_go_with(program, version, "")
}

fn build_go_with(program: &str, version: &str, experiment: &str) -> PathBuf {
    go_build(
        program,
        version,
        &[("GOEXPERIMENT", experiment)],
        &[],
        &format!("{program}-go{version}{experiment}"),
    )
}

/// How a test program is built: the forms users ship. The `Cgo*` modes link C (the
/// programs' `cgo` build-tagged files then call into it) with gcc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildMode {
    /// `CGO_ENABLED=0 go build`.
    Default,
    /// `-ldflags=-s -w`: no symbol table, no DWARF.
    Stripped,
    /// `-buildmode=pie` (internally linked).
    Pie,
    /// `CGO_ENABLED=1`: linked externally by gcc.
    Cgo,
    /// cgo and PIE.
    CgoPie,
    /// Everything at once: cgo, PIE and stripped (the pclntab has no section of its own).
    CgoPieStripped,
}

impl BuildMode {
    fn cgo(self) -> &'static str {
        match self {
            BuildMode::Cgo | BuildMode::CgoPie | BuildMode::CgoPieStripped => "1",
            _ => "0",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            BuildMode::Default | BuildMode::Cgo => &[],
            BuildMode::Stripped => &["-ldflags=-s -w"],
            BuildMode::Pie | BuildMode::CgoPie => &["-buildmode=pie"],
            BuildMode::CgoPieStripped => &["-buildmode=pie", "-ldflags=-s -w"],
        }
    }
}

/// Builds `tests/go/<program>` with Go `version` in `mode`.
#[must_use]
pub fn build_go_mode(program: &str, version: &str, mode: BuildMode) -> PathBuf {
    build_variant_mode(program, version, "", mode)
}

fn build_variant_mode(program: &str, version: &str, experiment: &str, mode: BuildMode) -> PathBuf {
    go_build(
        program,
        version,
        &[("CGO_ENABLED", mode.cgo()), ("GOEXPERIMENT", experiment)],
        mode.flags(),
        &format!("{program}-go{version}{experiment}-{mode:?}"),
    )
}

/// The version `go version` reads from the build info of the Go binary `bin`
/// (`go1.24.11 X:noswissmap`).
#[must_use]
pub fn go_version_of(bin: &Path) -> String {
    let out = go_command(GO_SWISS, bin.parent().expect("folder"))
        .arg("version")
        .arg(bin)
        .output()
        .expect("run go version");
    assert!(out.status.success(), "go version of {}", bin.display());
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let Some((_, version)) = text.trim_end().split_once(": ") else {
        panic!("go version said {text:?}");
    };
    version.to_owned()
}

/// A copy of the Go binary `bin` without `.go.buildinfo` and `.note.go.buildid`, as some
/// release builds ship: the Go toolchain itself then calls it "not a Go executable".
#[must_use]
pub fn without_build_info(bin: &Path) -> PathBuf {
    let name = bin.file_name().expect("file name").to_string_lossy();
    let out = bin.with_file_name(format!("{name}-nobuildinfo"));
    let _guard = GO_BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let status = Command::new("objcopy")
        .args(["--remove-section", ".go.buildinfo"])
        .args(["--remove-section", ".note.go.buildid"])
        .arg(bin)
        .arg(&out)
        .status()
        .expect("run objcopy");
    assert!(status.success(), "objcopy of {}", bin.display());
    let version = go_command(GO_SWISS, bin.parent().expect("folder"))
        .arg("version")
        .arg(&out)
        .output()
        .expect("run go version");
    let said = String::from_utf8_lossy(&version.stderr);
    assert!(
        said.contains("not a Go executable"),
        "go version of {}: {said}",
        out.display()
    );
    out
}

fn go_build(
    program: &str,
    version: &str,
    env: &[(&str, &str)],
    flags: &[&str],
    name: &str,
) -> PathBuf {
    let bins = workspace_root().join("target/go-test-bins");
    // A guest of another architecture (arm64) runs Go programs built for it, which it
    // cannot build: it has no Go toolchain of its own.
    let goarch = std::env::var("MAP_TRACE_GOARCH").ok();
    let out = goarch
        .as_ref()
        .map_or_else(|| bins.join(name), |arch| bins.join(arch).join(name));
    // The kernel matrix's guests run Go ten times slower: they take the host's builds.
    if std::env::var_os("MAP_TRACE_GO_PREBUILT").is_some() {
        if out.exists() {
            return out;
        }
        if let Some(arch) = &goarch {
            panic!(
                "{} was not built for {arch}: `cargo xtask test-vm --arch {arch}` builds the Go \
                 programs of the guest's tests on the host first (MAP_TRACE_ALSO_GOARCH={arch})",
                out.display()
            );
        }
    }
    let _guard = GO_BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    run_go_build(program, version, env, flags, &out, goarch.as_deref());
    // Set by xtask when it runs a foreign guest's tests here first: each Go program a test
    // uses is then built for that architecture too, so the guest finds exactly the set its
    // same tests ask for.
    if let Ok(also) = std::env::var("MAP_TRACE_ALSO_GOARCH") {
        run_go_build(
            program,
            version,
            env,
            flags,
            &bins.join(&also).join(name),
            Some(&also),
        );
    }
    out
}

/// `go build` of `tests/go/<program>` into `out`, for `goarch` or the host.
fn run_go_build(
    program: &str,
    version: &str,
    env: &[(&str, &str)],
    flags: &[&str],
    out: &Path,
    goarch: Option<&str>,
) {
    let src = workspace_root().join("tests/go").join(program);
    let mut cmd = go_command(version, &src);
    if let Some(arch) = goarch {
        cmd.env("GOARCH", arch);
    }
    let status = cmd
        .envs(env.iter().copied())
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(".")
        .status()
        .expect("run go build");
    assert!(
        status.success(),
        "go build of {program} ({}) with Go {version} for {} failed",
        out.display(),
        goarch.unwrap_or("the host")
    );
}

/// What mapops reports about one of its maps.
#[derive(Debug, Deserialize)]
pub struct MapTally {
    pub name: String,
    pub addr: String,
    pub assigns: u64,
    pub deletes: u64,
    pub clears: u64,
    pub assign_hash_sum: u64,
    pub delete_hash_sum: u64,
    pub clear_counts: Vec<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Report {
    pub maps: Vec<MapTally>,
}

impl Report {
    #[must_use]
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("read the program's report");
        serde_json::from_str(&text).expect("parse the program's report")
    }
}

/// One CSV row, by the contract's column names.
pub type Row = HashMap<String, String>;

/// Opens map-trace's CSV at `path`, checking the contract's header; the reader and the
/// header's columns.
fn open_csv(path: &Path) -> (csv::Reader<std::fs::File>, Vec<String>) {
    let mut reader = csv::Reader::from_path(path).expect("open CSV");
    let header: Vec<String> = reader
        .headers()
        .expect("CSV header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header.get(..13).expect("13 contract columns"),
        &map_trace::output::csv::HEADER[..13],
        "CSV header differs from the contract"
    );
    (reader, header)
}

/// Reads map-trace's CSV, checking the contract's header.
#[must_use]
pub fn read_csv(path: &Path) -> Vec<Row> {
    let (mut reader, _) = open_csv(path);
    reader.deserialize().map(|r| r.expect("CSV row")).collect()
}

/// Asserts that the events of each of mapops' maps equal what the program did: the number
/// of assigns, deletes and clears, the key hashes, and the element count at each clear.
pub fn assert_events_match(report: &Report, rows: &[Row], pid: u32) {
    for m in &report.maps {
        let mine: Vec<&Row> = rows.iter().filter(|r| r["map"] == m.addr).collect();
        let count = |kind: &str| mine.iter().filter(|r| r["event"] == kind).count() as u64;
        let hash_sum = |kind: &str| {
            mine.iter()
                .filter(|r| r["event"] == kind)
                .fold(0_u64, |acc, r| {
                    acc.wrapping_add(u64::from_str_radix(&r["key_hash"], 16).expect("hex key hash"))
                })
        };
        let what = format!("map {} ({})", m.name, m.addr);
        assert_eq!(count("assign"), m.assigns, "{what}: assigns");
        assert_eq!(count("delete"), m.deletes, "{what}: deletes");
        assert_eq!(count("clear"), m.clears, "{what}: clears");
        assert_eq!(
            hash_sum("assign"),
            m.assign_hash_sum,
            "{what}: assign key hashes"
        );
        assert_eq!(
            hash_sum("delete"),
            m.delete_hash_sum,
            "{what}: delete key hashes"
        );
        let clear_counts: Vec<u64> = mine
            .iter()
            .filter(|r| r["event"] == "clear")
            .map(|r| r["count"].parse().expect("count"))
            .collect();
        assert_eq!(
            clear_counts, m.clear_counts,
            "{what}: element count at each clear"
        );
        // Only assigns and deletes carry a key.
        assert!(mine.iter().all(|r| {
            r["key_hash"].is_empty() != matches!(r["event"].as_str(), "assign" | "delete")
        }));
    }
    let mut last_by_tid: HashMap<&str, u64> = HashMap::new();
    for r in rows {
        assert_eq!(r["pid"], pid.to_string(), "event of another process: {r:?}");
        if r["tid"].is_empty() {
            assert_eq!(
                r["event"], "rss",
                "only map-trace's own samples have no thread"
            );
            continue;
        }
        let t: u64 = r["time_ns"].parse().expect("time_ns");
        let last = last_by_tid.entry(&r["tid"]).or_insert(0);
        assert!(t >= *last, "rows out of order within thread {}", r["tid"]);
        *last = t;
    }
}

/// The target must still run normally after map-trace refused it: not stopped, and it
/// completes when told to.
pub fn assert_untouched(mut program: Program, limit: Duration) {
    let state = program.state();
    assert!(state == 'S' || state == 'R', "target state {state}");
    program.proceed();
    let (status, _) = program.finish(limit);
    assert!(
        status.success(),
        "target failed after map-trace refused it: {status}"
    );
}

/// A Go program started by a test, killed if the test ends first.
pub struct Program {
    pub child: Child,
    /// What the program printed after `ready` on its ready line.
    pub ready: String,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Program {
    /// Starts `bin` with `args` and waits for it to print `ready`.
    #[must_use]
    pub fn start_ready(bin: &Path, args: &[&str]) -> Self {
        Self::spawn_ready(Command::new(bin).args(args))
    }

    /// Starts `cmd` and waits for it to print `ready`.
    #[must_use]
    pub fn spawn_ready(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start Go program");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read ready line");
        let ready = line
            .trim()
            .strip_prefix("ready")
            .unwrap_or_else(|| panic!("program did not get ready: {line:?}"))
            .trim()
            .to_owned();
        Self {
            child,
            ready,
            stdin,
            stdout,
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the program go on (it waits for a line on stdin), and closes its stdin.
    pub fn proceed(&mut self) {
        self.step();
        self.stdin = None;
    }

    /// Lets the program go on, keeping its stdin open for it to wait again.
    pub fn step(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write to program");
    }

    /// The next line the program prints, without its newline.
    #[must_use]
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read program output");
        line.trim_end().to_owned()
    }

    /// Waits for exit (bounded) and returns the status and the rest of its stdout.
    #[must_use]
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, String) {
        let status = wait_bounded(&mut self.child, limit);
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("read stdout");
        (status, rest)
    }

    /// The process state letter from /proc (R, S, T for stopped, Z, …).
    #[must_use]
    pub fn state(&self) -> char {
        proc_state(self.pid())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[must_use]
pub fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .expect("state field")
}

/// Waits for `child` at most `limit`; kills it and fails the test after that.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running map-trace, its stderr read on a thread so the `attached` line can be awaited.
pub struct Tracer {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
    /// Read on a thread: with `--csv -` a full pipe would otherwise stall map-trace.
    stdout: std::thread::JoinHandle<String>,
}

/// What a finished map-trace run left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: Vec<String>,
}

impl Finished {
    /// The end-of-run summary: on standard output, or (under `-- CMD`, or with the CSV on
    /// standard output) the standard error lines from its first `map-trace: ` line on.
    #[must_use]
    pub fn summary(&self) -> String {
        if self.stdout.lines().any(|l| l.starts_with("map-trace: ")) {
            return self.stdout.clone();
        }
        let from = self
            .stderr
            .iter()
            .position(|l| l.starts_with("map-trace: "))
            .unwrap_or(self.stderr.len());
        self.stderr[from..].join("\n") + "\n"
    }
}

impl Tracer {
    /// Starts map-trace with `args`.
    #[must_use]
    pub fn start(args: &[&str]) -> Self {
        Self::start_command(Command::new(map_trace_bin()).args(args))
    }

    #[must_use]
    pub fn start_command(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start map-trace");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        Self {
            child,
            stderr_lines: rx,
            stderr: Vec::new(),
            stdout,
        }
    }

    /// Waits for the `attached ` line (and returns it).
    pub fn wait_attached(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.stderr_lines.recv_timeout(left) else {
                let _ = self.child.kill();
                panic!(
                    "map-trace never printed `attached`; stderr: {:?}",
                    self.stderr
                );
            };
            self.stderr.push(line.clone());
            if line.starts_with("attached ") {
                return line;
            }
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for map-trace to end by itself (bounded).
    #[must_use]
    pub fn finish(mut self, limit: Duration) -> Finished {
        let status = wait_bounded(&mut self.child, limit);
        let stdout = self.stdout.join().expect("stdout reader");
        self.stderr.extend(self.stderr_lines.iter());
        Finished {
            status,
            stdout,
            stderr: self.stderr,
        }
    }
}

/// Runs map-trace to completion and returns what it printed.
#[must_use]
pub fn run_map_trace(args: &[&str], limit: Duration) -> Finished {
    Tracer::start(args).finish(limit)
}

/// Asserts the contract's error form: exit status 1 and exactly one `error: ` line.
pub fn assert_one_error_line(f: &Finished, mentions: &str) {
    assert_eq!(
        f.status.code(),
        Some(1),
        "exit status; stderr: {:?}",
        f.stderr
    );
    assert_eq!(
        f.stderr.len(),
        1,
        "expected one line on stderr, got {:?}",
        f.stderr
    );
    let line = &f.stderr[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(
        line.contains(mentions),
        "`{line}` should mention `{mentions}`"
    );
}

/// Runs `f` on `bin`'s DWARF. Go compresses its debug sections; `object` inflates them.
fn with_dwarf<R>(
    bin: &Path,
    f: impl FnOnce(&gimli::Dwarf<gimli::EndianSlice<'_, gimli::LittleEndian>>) -> R,
) -> R {
    use object::{Object as _, ObjectSection as _};
    let data = std::fs::read(bin).expect("read binary");
    let file = object::File::parse(&*data).expect("parse ELF");
    let sections = gimli::DwarfSections::load(|id| {
        file.section_by_name(id.name())
            .map(|s| s.uncompressed_data())
            .transpose()
            .map(Option::unwrap_or_default)
    })
    .expect("DWARF sections");
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    f(&dwarf)
}

/// A struct as DWARF describes it.
#[derive(Debug, Default)]
pub struct DwarfStruct {
    /// Its size in bytes.
    pub size: u64,
    /// Member name → offset.
    pub members: HashMap<String, u64>,
}

/// The named structs in `bin`'s DWARF, by name. Go compresses its debug sections; `object`
/// inflates them.
#[must_use]
pub fn dwarf_structs(bin: &Path, names: &[&str]) -> HashMap<String, DwarfStruct> {
    with_dwarf(bin, |dwarf| {
        let mut found: HashMap<String, DwarfStruct> = HashMap::new();
        let mut units = dwarf.units();
        while let Some(header) = units.next().expect("unit header") {
            let unit = dwarf.unit(header).expect("unit");
            let mut cursor = unit.entries();
            // (struct name, its depth) while inside a wanted struct.
            let mut inside: Option<(String, isize)> = None;
            while let Some(entry) = cursor.next_dfs().expect("DIE") {
                let depth = entry.depth();
                if inside.as_ref().is_some_and(|(_, d)| depth <= *d) {
                    inside = None;
                }
                let name = entry
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| dwarf.attr_string(&unit, v).ok())
                    .map(|s| s.to_string_lossy().into_owned());
                match (entry.tag(), name, &inside) {
                    (gimli::DW_TAG_structure_type, Some(n), None)
                        if names.contains(&n.as_str()) && !found.contains_key(&n) =>
                    {
                        let size = entry
                            .attr_value(gimli::DW_AT_byte_size)
                            .and_then(|v| v.udata_value())
                            .expect("struct size");
                        let members = HashMap::new();
                        found.insert(n.clone(), DwarfStruct { size, members });
                        inside = Some((n, depth));
                    }
                    (gimli::DW_TAG_member, Some(member), Some((s, d))) if depth == d + 1 => {
                        let offset = entry
                            .attr_value(gimli::DW_AT_data_member_location)
                            .and_then(|v| v.udata_value())
                            .expect("member offset");
                        let s = found.get_mut(s).expect("struct");
                        s.members.insert(member, offset);
                    }
                    _ => {}
                }
            }
        }
        found
    })
}

/// Where the runtime type descriptors of the named Go types are, as offsets from
/// `runtime.types`: the `DW_AT_go_runtime_type` attribute the Go linker puts on each type's
/// DWARF entry.
#[must_use]
pub fn dwarf_runtime_types(bin: &Path, names: &[&str]) -> HashMap<String, u64> {
    const DW_AT_GO_RUNTIME_TYPE: gimli::DwAt = gimli::DwAt(0x2904);
    with_dwarf(bin, |dwarf| {
        let mut found = HashMap::new();
        let mut units = dwarf.units();
        while let Some(header) = units.next().expect("unit header") {
            let unit = dwarf.unit(header).expect("unit");
            let mut cursor = unit.entries();
            while let Some(entry) = cursor.next_dfs().expect("DIE") {
                let Some(name) = entry
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| dwarf.attr_string(&unit, v).ok())
                    .map(|s| s.to_string_lossy().into_owned())
                    .filter(|n| names.contains(&n.as_str()))
                else {
                    continue;
                };
                if let Some(offset) =
                    entry
                        .attr_value(DW_AT_GO_RUNTIME_TYPE)
                        .and_then(|v| match v {
                            gimli::AttributeValue::Addr(offset) => Some(offset),
                            other => other.udata_value(),
                        })
                {
                    found.insert(name, offset);
                }
            }
        }
        found
    })
}

/// map-trace running a Go program through `--`, with the CSV and the program's JSON
/// report (`-out`) in a scratch folder.
pub struct CommandRun {
    pub tracer: Tracer,
    pub csv: PathBuf,
    pub report: PathBuf,
    /// Holds the scratch folder for the run's lifetime.
    pub dir: tempfile::TempDir,
}

/// Starts `map-trace --csv … -- bin args… -out report.json`.
#[must_use]
pub fn trace_command(bin: &Path, args: &[&str]) -> CommandRun {
    let dir = tempfile::tempdir().expect("scratch folder");
    let (csv, report) = (
        dir.path().join("events.csv"),
        dir.path().join("report.json"),
    );
    let mut cmd = Command::new(map_trace_bin());
    cmd.arg("--csv")
        .arg(&csv)
        .arg("--")
        .arg(bin)
        .args(args)
        .arg("-out")
        .arg(&report);
    CommandRun {
        tracer: Tracer::start_command(&mut cmd),
        csv,
        report,
        dir,
    }
}

/// The Perfetto trace at `path` is whole JSON, with one slice per timed event (grow,
/// evacuate) of the run's CSV `rows`.
pub fn assert_perfetto_whole(path: &Path, rows: &[Row]) {
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read the Perfetto trace"))
            .expect("a whole Perfetto trace");
    let slices = trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["ph"] == "X")
        .count();
    let timed = rows
        .iter()
        .filter(|r| matches!(r["event"].as_str(), "grow" | "evacuate"))
        .count();
    assert_eq!(slices, timed, "slices and timed events");
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of the CSV's `time_ns`.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec), u64::try_from(ts.tv_nsec)) else {
        panic!("a negative monotonic time");
    };
    secs * 1_000_000_000 + nanos
}

/// How much slower than the host this machine runs: `MAP_TRACE_TIME_SCALE` (the kernel
/// matrix's emulated guests set 10), else 1. Time bounds of tests are multiplied by it.
#[must_use]
pub fn time_scale() -> u32 {
    std::env::var("MAP_TRACE_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// `timed calls: E entered, R returned, O returns without entry` from a summary.
#[must_use]
pub fn timed_calls(summary: &str) -> (u64, u64, u64) {
    let line = summary
        .lines()
        .find(|l| l.starts_with("timed calls:"))
        .unwrap_or_else(|| panic!("no timed calls line in:\n{summary}"));
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1], n[2])
}

// ---- many processes (issue 14) ----

/// What the `procs` program (and the `procstest` package's test) reports: its own pid, the
/// address of the map it worked on, and what it did to it.
#[derive(Debug, Deserialize)]
pub struct ProcReport {
    pub pid: u32,
    pub map: String,
    pub assigns: u64,
    pub deletes: u64,
    pub len: u64,
}

impl ProcReport {
    #[must_use]
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read the program's report {}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("parse the program's report {text:?}: {e}"))
    }
}

/// The pids a line of map-trace's names as `pid <N>`.
#[must_use]
pub fn pids_in(line: &str) -> Vec<u32> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "pid")
        .filter_map(|w| {
            w[1].trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .collect()
}

/// Whether `line` is an `attached ` line naming `pid`.
#[must_use]
pub fn attached_names(line: &str, pid: u32) -> bool {
    line.starts_with("attached ") && pids_in(line).contains(&pid)
}

/// A CSV's events counted by process, map and kind, read as a stream: a run that traces the
/// Go toolchain has millions of rows.
#[derive(Debug, Default)]
pub struct EventCounts {
    /// (pid, map, event) → rows.
    counts: HashMap<(String, String, String), u64>,
    pub rows: u64,
}

impl EventCounts {
    /// Reads map-trace's CSV at `path`, checking the contract's header.
    #[must_use]
    pub fn read(path: &Path) -> Self {
        let (mut reader, header) = open_csv(path);
        let column = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("no {name} column"))
        };
        let (pid, map, event) = (column("pid"), column("map"), column("event"));
        let mut counts = Self::default();
        let mut record = csv::StringRecord::new();
        while reader.read_record(&mut record).expect("CSV row") {
            let field = |i: usize| record.get(i).expect("CSV field").to_owned();
            *counts
                .counts
                .entry((field(pid), field(map), field(event)))
                .or_insert(0) += 1;
            counts.rows += 1;
        }
        counts
    }

    /// The number of `event` rows of process `pid` on the map at `map`.
    #[must_use]
    pub fn get(&self, pid: u32, map: &str, event: &str) -> u64 {
        self.counts
            .get(&(pid.to_string(), map.to_owned(), event.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// The number of rows of process `pid`.
    #[must_use]
    pub fn of_pid(&self, pid: u32) -> u64 {
        let pid = pid.to_string();
        self.counts
            .iter()
            .filter(|((p, _, _), _)| *p == pid)
            .map(|(_, n)| n)
            .sum()
    }

    /// The pids rows name (rows without one left out).
    #[must_use]
    pub fn pids(&self) -> std::collections::BTreeSet<u32> {
        self.counts
            .keys()
            .filter_map(|(p, _, _)| p.parse().ok())
            .collect()
    }
}

impl Tracer {
    /// Ends map-trace at once (SIGKILL) and reaps it: for tests' failure paths.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` to map-trace.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) with the pid of our own, not yet reaped, child.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Every line map-trace has printed on stderr so far (those already read, and those
    /// waiting to be).
    pub fn stderr_now(&mut self) -> &[String] {
        while let Ok(line) = self.stderr_lines.try_recv() {
            self.stderr.push(line);
        }
        &self.stderr
    }

    /// Waits (bounded) for a stderr line, among those printed so far too, that `wanted`
    /// accepts, and returns it. Kills map-trace and fails the test if none comes in time.
    pub fn wait_stderr_line(
        &mut self,
        what: &str,
        limit: Duration,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        let mut seen = 0;
        loop {
            while let Some(line) = self.stderr.get(seen) {
                if wanted(line) {
                    return line.clone();
                }
                seen += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.stderr_lines.recv_timeout(left) else {
                self.kill();
                self.stderr.extend(self.stderr_lines.try_iter());
                panic!(
                    "map-trace printed no {what} within {limit:?}; stderr: {:?}",
                    self.stderr
                );
            };
            self.stderr.push(line);
        }
    }

    /// Waits (bounded) until each of `pids` has an `attached ` line naming it; returns
    /// those lines, in the order of `pids`.
    pub fn wait_attached_pids(&mut self, pids: &[u32], limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        pids.iter()
            .map(|&pid| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.wait_stderr_line(&format!("`attached … pid {pid}` line"), left, |l| {
                    attached_names(l, pid)
                })
            })
            .collect()
    }

    /// Sends `signal`, waits (bounded by `limit`, polling finely) for map-trace to exit, and
    /// returns the run and the time from the signal to the exit.
    #[must_use]
    pub fn stop(mut self, signal: libc::c_int, limit: Duration) -> (Finished, Duration) {
        let sent = Instant::now();
        self.signal(signal);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if sent.elapsed() > limit {
                self.kill();
                panic!(
                    "map-trace did not exit within {limit:?} of signal {signal}; stderr: {:?}",
                    self.stderr_now()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let took = sent.elapsed();
        (self.collect(status, limit), took)
    }

    /// Like [`Tracer::finish`], bounded to the end: once map-trace has exited, its stdout and
    /// stderr must close within `limit` too (a descendant left running, or left stopped,
    /// would hold them open).
    #[must_use]
    pub fn finish_bounded(mut self, limit: Duration) -> Finished {
        let status = wait_bounded(&mut self.child, limit);
        self.collect(status, limit)
    }

    /// What map-trace printed, once it has exited with `status`; bounded by `limit`.
    fn collect(mut self, status: ExitStatus, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        while !self.stdout.is_finished() {
            assert!(
                Instant::now() < deadline,
                "map-trace exited ({status}), yet its stdout stayed open {limit:?}: \
                 a process it started still runs; stderr: {:?}",
                self.stderr_now()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let stdout = self.stdout.join().expect("stdout reader");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => self.stderr.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "map-trace exited ({status}), yet its stderr stayed open {limit:?}: a \
                     process it started still runs; stderr: {:?}",
                    self.stderr
                ),
            }
        }
        Finished {
            status,
            stdout,
            stderr: self.stderr,
        }
    }
}

/// A free loopback port (free when asked; nobody else here takes it in between).
#[must_use]
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
}

/// What a Prometheus server puts in `Accept` when it scrapes.
pub const OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// `GET path` over plain HTTP/1.1 with `accept`: the status and headers, and the body.
pub fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    accept: &str,
) -> std::io::Result<(String, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body).ok_or_else(|| std::io::Error::other("bad chunked body"))?
    } else {
        body.to_owned()
    };
    Ok((head.to_owned(), body))
}

/// A chunked HTTP/1.1 body, joined (Go's servers chunk larger replies).
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}
