//! `cargo xtask bench`: what tracing costs a Go program, mode by mode, measured side by side.
//!
//! The Go program `tests/go/bench` times its own loop of map operations and prints ns/op, so
//! start-up and attach are not in the number. Each round runs it once per mode (untraced, an
//! empty uprobe, bpftrace, map-trace's modes), the modes interleaved so drift hits all of them
//! alike; the medians over the rounds, the targets of issue 7 and the machine they were
//! measured on go into `docs/performance.md`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    build, is_root,
    setup::{self, Tools},
};

/// The tracefs group of the uprobes the same-address floor counts with perf.
const GROUP: &str = "map_trace_bench";
const TRACEFS: &str = "/sys/kernel/tracing";
/// What the bpftrace scripts print once their probes are attached.
const BPFTRACE_READY: &str = "map-trace-bench: probes attached";
/// Everything from this line on in docs/performance.md is the hand-written analysis, which a
/// new run keeps (the numbers above it are regenerated).
const MARKER: &str =
    "<!-- Below this line: written by hand; cargo xtask bench keeps it as it is. -->";
/// hot2 runs this many times the operations of the other phases: it goes about twice as fast
/// and has to run long enough to fill a ring buffer that falls behind.
const HOT2_FACTOR: u32 = 5;
/// The goals of issue 7.
/// Issue 13's goals, against the empty uprobe at map-trace's own addresses.
const FULL_GOAL: f64 = 1.3;
const GROW_ONLY_GOAL: f64 = 0.05;
const KEY_MISS_GOAL: f64 = 1.1;
const SUMMARY_ONLY_GOAL: f64 = 1.1;
/// CPU-s of map-trace per 100,000 events over a whole run of a million events (hot2).
const CPU_GOAL: f64 = 0.05;
const ATTACH_GOAL: Duration = Duration::from_secs(1);
const STOP_GOAL: Duration = Duration::from_secs(1);
/// The uprobe link kinds map-trace can use (`--uprobe-links`), each stopped under load.
const LINK_KINDS: [&str; 2] = ["multi", "single"];
/// The big Go binary of the attach target (about 25 MB): Go's compiler, under `GOROOT`.
const BIG: &str = "pkg/tool/linux_amd64/compile";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Hot,
    Grow,
    Hot2,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Hot => "hot",
            Phase::Grow => "grow",
            Phase::Hot2 => "hot2",
        }
    }

    /// The runtime functions the phase's loop calls, each operation exactly one of them.
    fn functions(self) -> &'static [&'static str] {
        match self {
            Phase::Hot => &["runtime.mapassign_faststr", "runtime.mapdelete_faststr"],
            Phase::Grow => &["runtime.mapassign_fast64"],
            Phase::Hot2 => &["runtime.mapassign_faststr"],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Untraced,
    Floor,
    SameAddressFloor,
    BpftraceCount,
    Csv,
    GrowOnly,
    KeyMiss,
    SummaryOnly,
}

impl Mode {
    const ALL: [Mode; 8] = [
        Mode::Untraced,
        Mode::Floor,
        Mode::SameAddressFloor,
        Mode::BpftraceCount,
        Mode::Csv,
        Mode::GrowOnly,
        Mode::KeyMiss,
        Mode::SummaryOnly,
    ];

    fn label(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Floor => "uprobe floor (bpftrace -p, empty action)",
            Mode::SameAddressFloor => "uprobe floor at map-trace's addresses (perf)",
            Mode::BpftraceCount => "bpftrace -p, count per map",
            Mode::Csv => "map-trace, all events to CSV",
            Mode::GrowOnly => "map-trace --events grow,evacuate,madvise",
            Mode::KeyMiss => "map-trace --key no-such-key",
            Mode::SummaryOnly => "map-trace --summary-only",
        }
    }

    fn is_map_trace(self) -> bool {
        matches!(
            self,
            Mode::Csv | Mode::GrowOnly | Mode::KeyMiss | Mode::SummaryOnly
        )
    }
}

/// Says whether an output line is the one waited for.
type Ready = fn(&str) -> bool;

/// A child process whose stdout and stderr lines arrive, time-stamped, on one channel.
struct Watched {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().context("no stdout pipe")?;
        let err = child.stderr.take().context("no stderr pipe")?;
        forward(out, tx.clone());
        forward(err, tx);
        Ok(Self {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for a line `ready` accepts and returns when it arrived.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: Ready,
    ) -> anyhow::Result<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if ready(&line) {
                        return Ok((at, line));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("no {what} within {timeout:?}; output: {}", self.told());
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("ended before {what}; output: {}", self.told());
                }
            }
        }
    }

    /// Waits for the exit (killing the process after `timeout`) and returns every line and
    /// the CPU time the process used. Only this process may be reaped meanwhile: the CPU time
    /// is the growth of this process's reaped-children time.
    fn finish(&mut self, timeout: Duration) -> anyhow::Result<(Vec<String>, Duration)> {
        let hz = clock_ticks_per_second()?;
        let before = reaped_children_ticks()?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!(
                    "still running {timeout:?} after its work ended; output: {}",
                    self.told()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        let cpu = Duration::from_nanos((reaped_children_ticks()? - before) * 1_000_000_000 / hz);
        // The readers end with the pipes, so this drains every line.
        self.seen.extend(self.lines.iter().map(|(_, line)| line));
        if !status.success() {
            bail!("exited with {status}; output: {}", self.told());
        }
        Ok((std::mem::take(&mut self.seen), cpu))
    }

    fn told(&self) -> String {
        self.seen.join(" | ")
    }
}

impl Drop for Watched {
    /// A run that failed half-way leaves no process behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward(pipe: impl Read + Send + 'static, tx: mpsc::Sender<(Instant, String)>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
}

/// `cutime` + `cstime` of this process (fields 16 and 17 of proc(5)), in clock ticks.
fn reaped_children_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name may hold spaces; the fields after it start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unexpected /proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(n - 3)
            .context("short /proc/self/stat")?
            .parse()?)
    };
    Ok(field(16)? + field(17)?)
}

fn clock_ticks_per_second() -> anyhow::Result<u64> {
    Ok(text(Command::new("getconf").arg("CLK_TCK"))?
        .trim()
        .parse()?)
}

/// Standard output of a command that must succeed.
fn text(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One traced run's tracer: its output, attach time and CPU time.
struct Traced {
    attach: Duration,
    cpu: Duration,
    lines: Vec<String>,
}

impl Traced {
    /// map-trace's event count, from its summary line `map-trace: pid … N events`.
    fn events(&self) -> Option<u64> {
        let line = self
            .lines
            .iter()
            .find(|l| l.starts_with("map-trace: pid"))?;
        line.strip_suffix(" events")?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }

    fn lost(&self) -> Option<u64> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("lost events: "))?
            .trim()
            .parse()
            .ok()
    }

    /// Probe hits bpftrace (`@[map]: n`) or perf (`time,count,,event,…`) counted.
    fn hits(&self) -> Option<u64> {
        let bpftrace = self.lines.iter().filter_map(|l| {
            l.strip_prefix("@[")?
                .rsplit_once("]: ")?
                .1
                .parse::<u64>()
                .ok()
        });
        let perf = self.lines.iter().filter_map(|l| {
            let mut fields = l.trim().split(',');
            let count = fields.nth(1)?;
            fields
                .nth(1)?
                .starts_with(GROUP)
                .then_some(count)?
                .parse::<u64>()
                .ok()
        });
        let all: Vec<u64> = bpftrace.chain(perf).collect();
        (!all.is_empty()).then(|| all.iter().sum())
    }

    /// What the tracer reports per operation: events for map-trace, probe hits otherwise.
    fn per_op(&self, mode: Mode, ops: u32) -> Option<f64> {
        let n = if mode.is_map_trace() {
            self.events()
        } else {
            self.hits()
        }?;
        Some(count_f64(n) / f64::from(ops))
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "counts here stay far below 2^52"
)]
fn count_f64(n: u64) -> f64 {
    n as f64
}

struct Sample {
    ns_per_op: f64,
    traced: Option<Traced>,
}

type Outcome = Result<Sample, String>;

struct Bench {
    map_trace: PathBuf,
    program: PathBuf,
    csv: PathBuf,
    ops: u32,
}

impl Bench {
    fn ops(&self, phase: Phase) -> u32 {
        if phase == Phase::Hot2 {
            self.ops * HOT2_FACTOR
        } else {
            self.ops
        }
    }

    /// The tracer of `mode` for the program at `pid`, and the line that says it is in place.
    fn tracer(&self, mode: Mode, phase: Phase, pid: u32) -> Option<(Command, Ready)> {
        let functions = phase.functions();
        match mode {
            Mode::Untraced => None,
            Mode::Floor | Mode::BpftraceCount => {
                let probes: Vec<String> = functions
                    .iter()
                    .map(|f| format!("uprobe:{}:{f}", self.program.display()))
                    .collect();
                let action = if mode == Mode::Floor {
                    "{}"
                } else {
                    "{ @[reg(\"bx\")] = count(); }"
                };
                // bpftrace prints "Attaching N probes..." before attaching them, but runs
                // BEGIN only once they are all in place.
                let mut cmd = Command::new("bpftrace");
                cmd.arg("-p").arg(pid.to_string()).arg("-e").arg(format!(
                    "BEGIN {{ printf(\"{BPFTRACE_READY}\\n\"); }} {} {action}",
                    probes.join(",")
                ));
                Some((cmd, |l| l == BPFTRACE_READY))
            }
            Mode::SameAddressFloor => {
                let events: Vec<String> = functions
                    .iter()
                    .map(|f| format!("{GROUP}:{}", event_name(f)))
                    .collect();
                let mut cmd = Command::new("perf");
                cmd.args(["stat", "-I", "100", "-x", ",", "-e", &events.join(",")])
                    .arg("-p")
                    .arg(pid.to_string());
                // perf counts from its start; the first interval line proves it has started.
                Some((cmd, |l| l.contains(GROUP)))
            }
            Mode::Csv | Mode::GrowOnly | Mode::KeyMiss | Mode::SummaryOnly => {
                let mut cmd = Command::new(&self.map_trace);
                cmd.arg("--pid").arg(pid.to_string()).arg("--no-tui");
                if mode == Mode::GrowOnly {
                    cmd.args(["--events", "grow,evacuate,madvise"]);
                }
                if mode == Mode::KeyMiss {
                    cmd.args(["--key", "no-such-key"]);
                }
                if mode == Mode::SummaryOnly {
                    cmd.arg("--summary-only");
                } else {
                    cmd.arg("--csv").arg(&self.csv);
                }
                Some((cmd, |l| l.starts_with("attached ")))
            }
        }
    }

    /// One run of the program in `phase` under `mode`.
    fn run(&self, phase: Phase, mode: Mode) -> anyhow::Result<Sample> {
        let mut program = Watched::spawn(
            Command::new(&self.program)
                .args(["-phase", phase.name(), "-ops", &self.ops(phase).to_string()])
                .arg("-wait")
                .stdin(Stdio::piped()),
        )?;
        let mut stdin = program.child.stdin.take().context("no stdin pipe")?;
        program.wait_for("ready", Duration::from_secs(30), |l| l == "ready")?;
        let tracer = match self.tracer(mode, phase, program.child.id()) {
            Some((mut cmd, ready)) => {
                let start = Instant::now();
                let mut tracer = Watched::spawn(&mut cmd)?;
                let (at, _) = tracer
                    .wait_for("sign of attaching", Duration::from_mins(1), ready)
                    .with_context(|| format!("{cmd:?}"))?;
                Some((tracer, at - start))
            }
            None => None,
        };
        writeln!(stdin, "go")?;
        let (_, result) = program.wait_for("result", Duration::from_mins(5), |l| {
            l.starts_with("result ")
        })?;
        let ns_per_op = result
            .rsplit_once("ns_per_op=")
            .and_then(|(_, n)| n.trim().parse::<f64>().ok())
            .with_context(|| format!("no ns_per_op in {result:?}"))?;
        // Reaped first, so its CPU time is not taken for the tracer's.
        program.finish(Duration::from_secs(30))?;
        let report = match tracer {
            Some((mut tracer, attach)) => {
                let (lines, cpu) = tracer.finish(Duration::from_mins(1))?;
                Some(Traced { attach, cpu, lines })
            }
            None => None,
        };
        Ok(Sample {
            ns_per_op,
            traced: report,
        })
    }

    /// SIGINT to map-trace while the program runs hot2 under it: the time to its exit, and
    /// the probe removal it reports (`-v`), with uprobe links of `kind`.
    fn stop(&self, kind: &str) -> anyhow::Result<Stop> {
        let mut program = Watched::spawn(
            Command::new(&self.program)
                .args(["-phase", "hot2", "-ops", "4000000000", "-wait"])
                .stdin(Stdio::piped()),
        )?;
        let mut stdin = program.child.stdin.take().context("no stdin pipe")?;
        program.wait_for("ready", Duration::from_secs(30), |l| l == "ready")?;
        let mut tracer = Watched::spawn(
            Command::new(&self.map_trace)
                .arg("--pid")
                .arg(program.child.id().to_string())
                .args(["--no-tui", "-v", "--uprobe-links", kind, "--csv"])
                .arg(&self.csv),
        )?;
        tracer.wait_for("attached line", Duration::from_mins(1), |l| {
            l.starts_with("attached ")
        })?;
        writeln!(stdin, "go")?;
        thread::sleep(Duration::from_secs(1));
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-s", "INT", &tracer.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -s INT failed: {status}");
        }
        let (lines, _) = tracer.finish(Duration::from_mins(1))?;
        let exit = sent.elapsed();
        let _ = program.child.kill();
        let _ = program.child.wait();
        let detach = lines
            .iter()
            .find_map(|l| l.split_once("probes removed in ")?.1.split_once(" ms"))
            .and_then(|(ms, _)| ms.parse::<u64>().ok())
            .map(Duration::from_millis)
            .context("no `probes removed in` line")?;
        Ok(Stop { exit, detach })
    }

    /// Start of map-trace to its `attached ` line, tracing a big Go binary from its exec.
    fn attach_big(&self, big: &Path) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut tracer = Watched::spawn(
            Command::new(&self.map_trace)
                .args(["--no-tui", "--"])
                .arg(big)
                .arg("-V"),
        )?;
        let (at, _) = tracer.wait_for("attached line", Duration::from_mins(1), |l| {
            l.starts_with("attached ")
        })?;
        tracer.finish(Duration::from_mins(1))?;
        Ok(at - start)
    }
}

/// The tracefs event name of a runtime function's probe.
fn event_name(function: &str) -> &str {
    function.trim_start_matches("runtime.")
}

/// Uprobes at map-trace's own probe addresses, for perf to count; removed on drop.
struct SameAddressProbes(Vec<String>);

impl SameAddressProbes {
    fn create(program: &Path, offsets: &BTreeMap<String, u64>) -> anyhow::Result<Self> {
        let events = Path::new(TRACEFS).join("uprobe_events");
        if !events.exists() {
            crate::run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
        }
        let path = program.display().to_string();
        if path.contains(char::is_whitespace) {
            bail!("{path}: tracefs probe definitions cannot hold spaces");
        }
        let mut probes = Self(Vec::new());
        for (function, offset) in offsets {
            let name = format!("{GROUP}/{}", event_name(function));
            // Left over by an interrupted run, perhaps.
            let _ = append(&events, &format!("-:{name}"));
            append(&events, &format!("p:{name} {path}:{offset:#x}"))?;
            probes.0.push(name);
        }
        Ok(probes)
    }
}

impl Drop for SameAddressProbes {
    fn drop(&mut self) {
        let events = Path::new(TRACEFS).join("uprobe_events");
        for name in &self.0 {
            let _ = append(&events, &format!("-:{name}"));
        }
    }
}

fn append(file: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {line:?} to {}", file.display()))
}

/// The file offsets map-trace probes in `program`, from its `-v` listing.
fn probe_offsets(map_trace: &Path, program: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let out = Command::new(map_trace)
        .args(["-v", "--no-tui", "--"])
        .arg(program)
        .args(["-phase", "hot", "-ops", "0"])
        .output()
        .context("starting map-trace -v")?;
    let listing = String::from_utf8_lossy(&out.stderr);
    let wanted = [Phase::Hot, Phase::Grow]
        .into_iter()
        .flat_map(Phase::functions);
    let mut offsets = BTreeMap::new();
    for function in wanted {
        // `probe runtime.mapassign_faststr Op at 0x41080f (file offset 0x1080f)`
        let offset = listing
            .lines()
            .filter_map(|l| {
                l.strip_prefix("probe ")?
                    .strip_prefix(*function)?
                    .strip_prefix(" ")
            })
            .find_map(|l| l.split_once("(file offset 0x")?.1.strip_suffix(')'))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .with_context(|| format!("map-trace -v names no probe of {function}: {listing}"))?;
        offsets.insert((*function).to_owned(), offset);
    }
    Ok(offsets)
}

/// The Go root `Tools` hands to commands for `version`.
fn go_root(tools: &Tools, version: &str) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new("true");
    tools.apply(&mut cmd);
    let roots = cmd
        .get_envs()
        .find(|(k, _)| *k == "MAP_TRACE_GO_ROOTS")
        .and_then(|(_, v)| v)
        .context("the tools name no Go roots")?
        .to_string_lossy()
        .into_owned();
    roots
        .split(',')
        .find_map(|r| r.strip_prefix(version)?.strip_prefix('='))
        .map(PathBuf::from)
        .with_context(|| format!("Go {version} not set up"))
}

/// Everything one `cargo xtask bench` measured.
#[derive(Default)]
struct Results {
    samples: BTreeMap<(Phase, Mode), Vec<Outcome>>,
    attach_big: Vec<Result<Duration, String>>,
    /// Per link kind: SIGINT to exit, and the probe removal map-trace reports.
    stops: BTreeMap<&'static str, Vec<Result<Stop, String>>>,
}

/// One stop under load.
#[derive(Clone, Copy)]
struct Stop {
    exit: Duration,
    detach: Duration,
}

impl Results {
    fn ok(&self, phase: Phase, mode: Mode) -> impl Iterator<Item = &Sample> {
        self.samples
            .get(&(phase, mode))
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_ref().ok())
    }

    fn ns(&self, phase: Phase, mode: Mode) -> Vec<f64> {
        self.ok(phase, mode).map(|s| s.ns_per_op).collect()
    }

    fn median_ns(&self, phase: Phase, mode: Mode) -> Option<f64> {
        median(&self.ns(phase, mode))
    }

    /// (mode − untraced) / (floor − untraced), on the medians.
    fn ratio(&self, phase: Phase, mode: Mode, floor: Mode) -> Option<f64> {
        let base = self.median_ns(phase, Mode::Untraced)?;
        let floor = self.median_ns(phase, floor)? - base;
        let mode = self.median_ns(phase, mode)?;
        (floor > 0.0).then(|| (mode - base) / floor)
    }

    fn traced(&self, phase: Phase, mode: Mode) -> impl Iterator<Item = &Traced> {
        self.ok(phase, mode).filter_map(|s| s.traced.as_ref())
    }

    /// map-trace's CPU seconds per 100,000 events, per run.
    fn cpu_per_100k(&self, phase: Phase, mode: Mode) -> Vec<f64> {
        self.traced(phase, mode)
            .filter_map(|t| {
                let events = t.events().filter(|&n| n > 0)?;
                Some(t.cpu.as_secs_f64() / count_f64(events) * 100_000.0)
            })
            .collect()
    }

    fn failures(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for ((phase, mode), outcomes) in &self.samples {
            for err in outcomes.iter().filter_map(|o| o.as_ref().err()) {
                failed.push(format!("{} / {}: {err}", phase.name(), mode.label()));
            }
        }
        failed.extend(
            self.attach_big
                .iter()
                .filter_map(|o| o.as_ref().err())
                .map(|err| format!("attach to the big binary: {err}")),
        );
        for (kind, stops) in &self.stops {
            failed.extend(
                stops
                    .iter()
                    .filter_map(|o| o.as_ref().err())
                    .map(|err| format!("stop under load ({kind} links): {err}")),
            );
        }
        failed
    }

    /// Seconds of one part of the stops of `kind`.
    fn stop_secs(&self, kind: &str, part: fn(&Stop) -> Duration) -> Vec<f64> {
        self.stops
            .get(kind)
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_ref().ok())
            .map(|s| part(s).as_secs_f64())
            .collect()
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[mid]),
        _ => Some(f64::midpoint(v[mid - 1], v[mid])),
    }
}

pub fn bench(root: &Path, tools: &Tools, rounds: u64, ops: u32) -> anyhow::Result<()> {
    let map_trace = build(root, tools)?;
    if !is_root() {
        bail!("map-trace loads eBPF programs: run cargo xtask bench as root");
    }
    let program = root.join("target/bench/bench");
    tools.go_build(setup::DEMO_GO, &root.join("tests/go/bench"), &program)?;
    let goroot = go_root(tools, setup::DEMO_GO)?;
    let big = goroot.join(BIG);
    let help = text(Command::new(&map_trace).arg("--help"))?;
    let summary_only = help.contains("--summary-only");
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|&m| m != Mode::SummaryOnly || summary_only)
        .collect();
    let offsets = probe_offsets(&map_trace, &program)?;
    let _probes = SameAddressProbes::create(&program, &offsets)?;
    let bench = Bench {
        map_trace,
        program,
        csv: std::env::temp_dir().join(format!("map-trace-bench-{}.csv", std::process::id())),
        ops,
    };
    let results = measure(&bench, &modes, &big, rounds);
    let _ = std::fs::remove_file(&bench.csv);
    let machine = Machine::read(&goroot)?;
    let report = Report {
        results: &results,
        machine: &machine,
        modes: &modes,
        summary_only,
        rounds,
        ops,
        program: &bench.program,
        big: &big,
    };
    let doc = root.join("docs/performance.md");
    let kept = std::fs::read_to_string(&doc)
        .ok()
        .and_then(|old| old.find(MARKER).map(|at| old[at..].to_owned()))
        .unwrap_or_else(|| format!("{MARKER}\n\n## Analysis\n\nNot written yet.\n"));
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::write(&doc, format!("{}\n{kept}", report.render()))
        .with_context(|| format!("writing {}", doc.display()))?;
    println!("\n{}", report.targets());
    println!("written to {}", doc.display());
    let failed = results.failures();
    if !failed.is_empty() {
        bail!("{} run(s) failed:\n{}", failed.len(), failed.join("\n"));
    }
    Ok(())
}

/// Every round runs every (phase, mode) once; the order of the modes turns by one each
/// round, so no mode always follows the same other.
fn measure(bench: &Bench, modes: &[Mode], big: &Path, rounds: u64) -> Results {
    let mut results = Results::default();
    let plan = [Phase::Hot, Phase::Grow]
        .into_iter()
        .flat_map(|p| modes.iter().map(move |&m| (p, m)))
        .chain([(Phase::Hot2, Mode::Untraced), (Phase::Hot2, Mode::Csv)]);
    let plan: Vec<(Phase, Mode)> = plan.collect();
    let started = Instant::now();
    for (turn, round) in (1..=rounds).enumerate() {
        let mut order = plan.clone();
        order.rotate_left(turn % plan.len());
        for (phase, mode) in order {
            let outcome = bench.run(phase, mode).map_err(|e| format!("{e:#}"));
            println!(
                "round {round}/{rounds} {:>4}  {:<46} {}",
                phase.name(),
                mode.label(),
                progress(&outcome, mode, bench.ops(phase))
            );
            results
                .samples
                .entry((phase, mode))
                .or_default()
                .push(outcome);
        }
        let attach = bench.attach_big(big).map_err(|e| format!("{e:#}"));
        match &attach {
            Ok(d) => println!(
                "round {round}/{rounds} attach to {}: {d:.3?}",
                big.display()
            ),
            Err(e) => println!(
                "round {round}/{rounds} attach to {}: failed: {e}",
                big.display()
            ),
        }
        results.attach_big.push(attach);
        for kind in LINK_KINDS {
            let stop = bench.stop(kind).map_err(|e| format!("{e:#}"));
            match &stop {
                Ok(s) => println!(
                    "round {round}/{rounds} stop under load ({kind} links): exit {:.3?}, probes removed in {:.3?}",
                    s.exit, s.detach
                ),
                Err(e) => {
                    println!("round {round}/{rounds} stop under load ({kind} links): failed: {e}");
                }
            }
            results.stops.entry(kind).or_default().push(stop);
        }
        println!(
            "round {round}/{rounds} done after {:.0?}",
            started.elapsed()
        );
    }
    results
}

fn progress(outcome: &Outcome, mode: Mode, ops: u32) -> String {
    let sample = match outcome {
        Ok(sample) => sample,
        Err(e) => return format!("failed: {e}"),
    };
    let mut line = format!("{:>10} ns/op", ns(sample.ns_per_op));
    if let Some(t) = &sample.traced {
        let _ = write!(line, "  attach {:.0?}", t.attach);
        if let Some(per_op) = t.per_op(mode, ops) {
            let what = if mode.is_map_trace() {
                "events"
            } else {
                "hits"
            };
            let _ = write!(line, "  {what}/op {per_op:.4}");
        }
        if mode.is_map_trace() {
            let _ = write!(line, "  cpu {:.2?}", t.cpu);
            if let Some(lost) = t.lost() {
                let _ = write!(line, "  lost {lost}");
            }
        }
    }
    line
}

fn ns(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// What the numbers were measured on.
struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    go: String,
    bpftrace: String,
    perf: String,
    date: String,
}

impl Machine {
    fn read(goroot: &Path) -> anyhow::Result<Self> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown", |(_, m)| m.trim())
            .to_owned();
        let go = text(Command::new(goroot.join("bin/go")).arg("version"))?;
        Ok(Self {
            cpu,
            cores: thread::available_parallelism().map_or(0, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")?
                .trim()
                .to_owned(),
            go: go.split_whitespace().nth(2).unwrap_or("unknown").to_owned(),
            bpftrace: text(Command::new("bpftrace").arg("--version"))?
                .trim()
                .to_owned(),
            perf: text(Command::new("perf").arg("--version"))?
                .trim()
                .to_owned(),
            date: text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
                .trim()
                .to_owned(),
        })
    }
}

struct Report<'a> {
    results: &'a Results,
    machine: &'a Machine,
    modes: &'a [Mode],
    summary_only: bool,
    rounds: u64,
    ops: u32,
    program: &'a Path,
    big: &'a Path,
}

/// One row of the targets table.
struct Target {
    what: String,
    measured: Option<String>,
    goal: String,
    met: Option<bool>,
}

impl Report<'_> {
    fn render(&self) -> String {
        let m = self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Performance\n\n\
             Generated by `cargo xtask bench` ({}); a new run rewrites everything above the \
             hand-written analysis at the end.\n\n\
             | | |\n|---|---|\n\
             | machine | {}, {} cores |\n| kernel | {} |\n\
             | Go | {} (the benchmark program `tests/go/bench`; swiss maps) |\n\
             | tools | {}; {} |\n\
             | rounds | {}, every mode once per round, modes interleaved; medians, min–max in brackets |\n\
             | operations | {} per run in `hot` and `grow`, {} in `hot2` |\n",
            m.date,
            m.cpu,
            m.cores,
            m.kernel,
            m.go,
            m.bpftrace,
            m.perf,
            self.rounds,
            self.ops,
            self.ops * HOT2_FACTOR,
        );
        s.push_str(DESCRIPTION);
        self.cost_table(&mut s);
        let _ = write!(s, "\n## Targets (issue 13)\n\n{}", self.targets());
        self.other(&mut s);
        s
    }

    fn cost_table(&self, s: &mut String) {
        let r = self.results;
        s.push_str(
            "\n## Cost per map operation\n\n\
             ns/op is the program's own loop time per operation. \"× floor\" is the mode's \
             overhead over the floor's, (mode − untraced) / (floor − untraced); \"× same-address \
             floor\" the same against the empty uprobe at map-trace's own probe addresses. \
             \"per op\" is what the tracer counted per operation: map-trace's events, bpftrace's \
             and perf's probe hits.\n\n\
             | mode | hot ns/op | × floor | × same-address floor | per op | grow ns/op | × floor | × same-address floor | per op |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for &mode in self.modes {
            let _ = write!(s, "| {} |", mode.label());
            for phase in [Phase::Hot, Phase::Grow] {
                let per_op = median(
                    &r.traced(phase, mode)
                        .filter_map(|t| t.per_op(mode, self.ops))
                        .collect::<Vec<_>>(),
                );
                let _ = write!(
                    s,
                    " {} | {} | {} | {} |",
                    spread(&r.ns(phase, mode), ns),
                    times(r.ratio(phase, mode, Mode::Floor)),
                    times(r.ratio(phase, mode, Mode::SameAddressFloor)),
                    per_op.map_or_else(|| "–".to_owned(), |v| format!("{v:.4}")),
                );
            }
            s.push('\n');
        }
        if !self.summary_only {
            s.push_str("| map-trace --summary-only | not available (not in `map-trace --help`) | | | | | | | |\n");
        }
    }

    fn other(&self, s: &mut String) {
        let r = self.results;
        let attach_pid: Vec<f64> = [Phase::Hot, Phase::Grow]
            .into_iter()
            .flat_map(|p| r.traced(p, Mode::Csv))
            .map(|t| t.attach.as_secs_f64())
            .collect();
        let fixed: Vec<f64> = r
            .traced(Phase::Hot, Mode::GrowOnly)
            .map(|t| t.cpu.as_secs_f64())
            .collect();
        let csv_cpu: Vec<f64> = r
            .traced(Phase::Hot, Mode::Csv)
            .map(|t| t.cpu.as_secs_f64())
            .collect();
        let csv_events: Vec<f64> = r
            .traced(Phase::Hot, Mode::Csv)
            .filter_map(Traced::events)
            .map(count_f64)
            .collect();
        let marginal = match (median(&csv_cpu), median(&fixed), median(&csv_events)) {
            (Some(cpu), Some(fixed), Some(events)) if events > 0.0 => {
                format!("{:.3}", (cpu - fixed) / events * 100_000.0)
            }
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            s,
            "\n## Other measurements\n\n\
             - **hot2** (two goroutines assigning on their own maps): untraced {} ns/op, under \
             map-trace with all events to CSV {} ns/op, that is about {} events/s; lost events \
             per run: {}; map-trace CPU {} s per 100,000 events.\n\
             - **map-trace's CPU time** on the hot phase (utime + stime of the whole run, from \
             start to exit): {} s with all events to CSV, {} s with no per-operation probes \
             (`--events grow,evacuate,madvise`, almost no events: the fixed cost of a run); \
             the difference is {marginal} CPU-s per 100,000 events.\n\
             - **attach** (start of map-trace to its `attached ` line): by `--pid` to the \
             benchmark program ({} MB) {} s; through `-- CMD` to Go's compiler \
             `$GOROOT/{BIG}` ({} MB) {} s.",
            spread(&r.ns(Phase::Hot2, Mode::Untraced), ns),
            spread(&r.ns(Phase::Hot2, Mode::Csv), ns),
            r.median_ns(Phase::Hot2, Mode::Csv)
                .map_or_else(|| "–".to_owned(), |v| format!("{:.0}", 1e9 / v)),
            r.traced(Phase::Hot2, Mode::Csv)
                .map(|t| t.lost().map_or_else(|| "?".to_owned(), |n| n.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
            spread(&r.cpu_per_100k(Phase::Hot2, Mode::Csv), secs),
            spread(&csv_cpu, secs),
            spread(&fixed, secs),
            megabytes(self.program),
            spread(&attach_pid, secs),
            megabytes(self.big),
            spread(
                &r.attach_big
                    .iter()
                    .filter_map(|a| a.as_ref().ok())
                    .map(Duration::as_secs_f64)
                    .collect::<Vec<_>>(),
                secs
            ),
        );
        for kind in LINK_KINDS {
            let _ = writeln!(
                s,
                "- **stop under load** with `--uprobe-links {kind}` (SIGINT one second into hot2, \
                 all events to CSV): exit {} s after the signal; removing the probes took {} s \
                 of it.",
                spread(&r.stop_secs(kind, |s| s.exit), secs),
                spread(&r.stop_secs(kind, |s| s.detach), secs),
            );
        }
        let failed = r.failures();
        if !failed.is_empty() {
            let _ = writeln!(s, "\nFailed runs:\n");
            for f in failed {
                let _ = writeln!(s, "- {}", f.replace('|', "\\|"));
            }
        }
    }

    fn target_rows(&self) -> Vec<Target> {
        let r = self.results;
        let ratio_row = |what: &str, phase, mode, floor, goal: f64| Target {
            what: what.to_owned(),
            measured: r.ratio(phase, mode, floor).map(|v| format!("{v:.3}×")),
            goal: format!("≤ {goal:.2}×"),
            met: r.ratio(phase, mode, floor).map(|v| v <= goal),
        };
        let cpu = median(&r.cpu_per_100k(Phase::Hot2, Mode::Csv));
        let lost: Vec<u64> = r
            .traced(Phase::Hot2, Mode::Csv)
            .filter_map(Traced::lost)
            .collect();
        let attach = median(
            &r.attach_big
                .iter()
                .filter_map(|a| a.as_ref().ok())
                .map(Duration::as_secs_f64)
                .collect::<Vec<_>>(),
        );
        let stop = median(&r.stop_secs("multi", |s| s.exit));
        vec![
            ratio_row(
                "full tracing (all events to CSV), hot phase, overhead ÷ the same-address floor's",
                Phase::Hot,
                Mode::Csv,
                Mode::SameAddressFloor,
                FULL_GOAL,
            ),
            ratio_row(
                "non-matching key filter (`--key no-such-key`), hot phase, ÷ the same-address floor's",
                Phase::Hot,
                Mode::KeyMiss,
                Mode::SameAddressFloor,
                KEY_MISS_GOAL,
            ),
            ratio_row(
                "`--summary-only`, hot phase, ÷ the same-address floor's",
                Phase::Hot,
                Mode::SummaryOnly,
                Mode::SameAddressFloor,
                SUMMARY_ONLY_GOAL,
            ),
            ratio_row(
                "growth only (`--events grow,evacuate,madvise`), grow phase, per assign ÷ the same-address floor's",
                Phase::Grow,
                Mode::GrowOnly,
                Mode::SameAddressFloor,
                GROW_ONLY_GOAL,
            ),
            Target {
                what: "SIGINT to exit under load (hot2, all events to CSV, multi-uprobe links)"
                    .to_owned(),
                measured: stop.map(|v| format!("{v:.3} s")),
                goal: format!("≤ {} s", STOP_GOAL.as_secs()),
                met: stop.map(|v| v <= STOP_GOAL.as_secs_f64()),
            },
            Target {
                what: "map-trace's CPU (utime + stime of the whole run), hot2 (a million events), all events to CSV"
                    .to_owned(),
                measured: cpu.map(|v| format!("{v:.3} CPU-s per 100,000 events")),
                goal: format!("≤ {CPU_GOAL}"),
                met: cpu.map(|v| v <= CPU_GOAL),
            },
            Target {
                what: "lost events, hot2 (two goroutines), all events to CSV".to_owned(),
                measured: (!lost.is_empty())
                    .then(|| format!("{} in {} runs", lost.iter().sum::<u64>(), lost.len())),
                goal: "0".to_owned(),
                met: (!lost.is_empty()).then(|| lost.iter().all(|&n| n == 0)),
            },
            Target {
                what: format!(
                    "attach to `{}` ({} MB), start to `attached `",
                    self.big
                        .file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    megabytes(self.big)
                ),
                measured: attach.map(|v| format!("{v:.3} s")),
                goal: format!("≤ {} s", ATTACH_GOAL.as_secs()),
                met: attach.map(|v| v <= ATTACH_GOAL.as_secs_f64()),
            },
        ]
    }

    fn targets(&self) -> String {
        let mut s = String::from("| target | measured | goal | met |\n|---|---|---|---|\n");
        for t in self.target_rows() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.what,
                t.measured.as_deref().unwrap_or("not measured"),
                t.goal,
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                }
            );
        }
        s
    }
}

const DESCRIPTION: &str = "
## What is measured

The program (`tests/go/bench`, built with the Go above) prints `ready`, waits until the tracer \
is attached, then times its own loop with `time.Now`, so start-up and attach are not in the \
number:

- **hot**: assigns and deletes alternate on 1,024 fixed string keys in a map sized up front: \
every operation is exactly one call of `runtime.mapassign_faststr` or \
`runtime.mapdelete_faststr`, with no growth and no allocation.
- **grow**: assigns of `int64` keys into fresh maps without a size hint, 4,096 entries each: \
every map goes through all its growth steps (small, to-table, table doublings, splits) inside \
`runtime.mapassign_fast64`; ns/op is per assign.
- **hot2**: two goroutines assign on their own maps as fast as they can: the highest event rate \
the program can produce, for the lost-events check.

The modes:

- **uprobe floor**: `bpftrace -p PID -e 'uprobe:BIN:FUNC,… {}'` on every runtime function the \
phase calls (one probe hit per operation, as with map-trace): what a user's first try costs, \
kept for comparison.
- **uprobe floor at map-trace's addresses**: the same functions, but probed where map-trace \
probes them (the first instruction after the prologue's stack check, read from \
`map-trace -v`): tracefs uprobes counted by `perf stat -p PID`. This bpftrace cannot probe \
an offset inside a function (built without that check), hence perf. The targets are set \
against this floor: the trap itself, at the same instruction.
- **bpftrace, count per map**: `@[reg(\"bx\")] = count()` on the same probes as the floor: \
what a user would write instead of map-trace. Its hits come out a little above one per \
operation: a probe on a function's first byte fires again when a preempted goroutine re-enters \
the function through `morestack`, which map-trace's placement avoids.
- **map-trace**: `--pid PID --no-tui`, with all events to a CSV file (in the temporary \
folder); with `--events grow,evacuate,madvise` (no per-operation probes); with `--key \
no-such-key` (every operation probed, none passes the filter in the kernel); with \
`--summary-only` where map-trace has it.

map-trace's CPU time is its utime + stime over the whole run (start, attach, tracing, drain, \
summary), read from this process's reaped-children times when it is reaped.

Each round also stops map-trace under load, once per uprobe link kind: the program runs \
hot2 (both cores busy), map-trace traces it with all events to CSV and `-v`, and one second \
in gets SIGINT; measured are the time from the signal to map-trace's exit and the time it \
reports for removing its probes (`probes removed in`).
";

/// The median of `values` and, when there are several, their range.
fn spread(values: &[f64], show: fn(f64) -> String) -> String {
    let Some(mid) = median(values) else {
        return "–".to_owned();
    };
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() == 1 {
        show(mid)
    } else {
        format!("{} ({}–{})", show(mid), show(lo), show(hi))
    }
}

fn secs(v: f64) -> String {
    format!("{v:.3}")
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "–".to_owned(), |v| format!("{v:.3}×"))
}

fn megabytes(path: &Path) -> String {
    std::fs::metadata(path).map_or_else(
        |_| "?".to_owned(),
        |m| format!("{:.1}", count_f64(m.len()) / 1e6),
    )
}
