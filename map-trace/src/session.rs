//! One tracing run: resolve the target, plan and attach probes, stream events to the outputs
//! until the end, then drain, detach and summarise.

use std::{
    ffi::OsString,
    io::{self, BufWriter, IsTerminal as _, Write},
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use map_trace_common::{EventKind, ReadFailures};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    aggregate::Aggregate,
    binary::GoBinary,
    cli::{MadviseVia, Target, TraceOptions, UprobeLinks},
    events::{self, Detail, TraceEvent, Undecodable},
    goruntime::{Layout, Runtime},
    kernel,
    output::{
        self, Exporter, Status,
        csv::CsvExporter,
        live::{self, Action, LiveView},
        summary::{self, RunInfo, TimedCalls},
    },
    plan::{self, Plan, Role},
    privileges,
    probes::{Counters, MadvisePath, Probes, Settings, UserFrames},
    process::{
        self, Process,
        launch::{HeldChild, resolve_command},
    },
    resolve::Resolver,
};

/// A line on standard error that cannot fail the run: after SIGHUP the terminal may be
/// gone, and no note is worth the outputs still to be flushed.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), $($arg)*);
    }};
}

/// The process to trace: already running, or a command to start once probes are planned.
enum Tracee<'a> {
    /// Watched from the start, so a recycled pid is never mistaken for it.
    Running {
        pid: u32,
        pidfd: OwnedFd,
    },
    Command(&'a [OsString]),
}

pub fn run(opts: &TraceOptions) -> anyhow::Result<()> {
    privileges::check()?;
    kernel::Features::probe(Path::new("/sys")).check(&kernel::release())?;
    let (exe, exe_name, tracee) = resolve_target(opts)?;
    let binary = GoBinary::open(&exe)?;
    let runtime = binary.runtime()?;
    let plan = plan::plan(&binary, &runtime, &opts.events)?;
    if opts.verbose {
        describe_plan(&plan);
    }
    let csv_to_stdout = opts.csv.as_deref() == Some(Path::new("-"));
    // Creates no threads (so the fork below stays safe); entered, so exporters can set up
    // their sockets and tasks on it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let _entered = rt.enter();
    let exporters = open_exporters(opts)?;

    let (pid, pidfd, mut child) = match tracee {
        Tracee::Running { pid, pidfd } => (pid, pidfd, None),
        Tracee::Command(argv) => {
            let child = HeldChild::spawn(&exe, argv)?;
            let pid = child.pid();
            (pid, process::pidfd(pid).context("pidfd_open")?, Some(child))
        }
    };
    let load_bias = process::load_bias(pid, &binary)?;
    let job = Job {
        opts,
        plan,
        runtime,
        exe,
        exe_name,
        pid,
        settings: Settings {
            key_hash: opts.key_hash,
            map: opts.map,
            show_keys: opts.show_keys,
            load_bias,
            summary_only: opts.summary_only,
            ring_buffer_size: opts.ring_buffer_size,
            verifier_log: opts.verbose,
            multi_links: opts.uprobe_links.map(|l| l == UprobeLinks::Multi),
        },
        // The live view only on a terminal that nothing else writes to.
        live_view: !opts.no_tui && !csv_to_stdout && io::stdout().is_terminal(),
    };
    let resolver = Resolver::new(binary, load_bias, opts.show_keys);
    let (sink, info, end) = rt.block_on(job.trace(pidfd, child.as_mut(), resolver, exporters))?;
    if let Some(child) = &child {
        child.reap();
    }
    // The terminal that would show the summary is gone: the files still get everything.
    let hung_up = end == End::HangUp;
    sink.finish(&info, csv_to_stdout, hung_up)
}

/// The executable as the kernel should resolve it for uprobes, its name for people, and
/// the process to trace.
fn resolve_target(opts: &TraceOptions) -> anyhow::Result<(PathBuf, PathBuf, Tracee<'_>)> {
    Ok(match &opts.target {
        Target::Pid(pid) => {
            let process = Process::inspect(*pid)?;
            let pidfd = process::pidfd(*pid).context("pidfd_open")?;
            (
                process.exe,
                process.exe_name,
                Tracee::Running { pid: *pid, pidfd },
            )
        }
        Target::Command(argv) => {
            let program = argv.first().context("no command given after --")?;
            let exe = resolve_command(program)?;
            (exe.clone(), exe, Tracee::Command(argv))
        }
    })
}

/// Everything decided before the probes go in.
struct Job<'a> {
    opts: &'a TraceOptions,
    plan: Plan,
    runtime: Runtime,
    exe: PathBuf,
    exe_name: PathBuf,
    pid: u32,
    settings: Settings,
    live_view: bool,
}

impl Job<'_> {
    /// Attaches, lets a started command run, streams until the end, then detaches and
    /// drains.
    async fn trace(
        &self,
        pidfd: OwnedFd,
        child: Option<&mut HeldChild>,
        resolver: Resolver,
        exporters: Vec<Box<dyn Exporter>>,
    ) -> anyhow::Result<(Sink, RunInfo, End)> {
        let (opts, pid, runtime) = (self.opts, self.pid, &self.runtime);
        let mut ends = Ends::new(opts)?;
        let madvise = madvise_path(opts)?;
        let mut probes =
            Probes::attach(&self.plan, runtime, &self.exe, pid, madvise, &self.settings)?;
        let ring = probes.take_events()?;
        let counters = probes.take_counters()?;
        let user_frames = probes.take_user_frames()?;
        // Every probe is in: they all start reporting at this instant, until a stop.
        probes.start(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
        let via = madvise
            .map(|m| format!("; madvise via {}", m.name()))
            .unwrap_or_default();
        note!(
            "attached {} probes to pid {pid} ({}, {} maps){via}",
            probes.attached(),
            runtime.version.raw,
            runtime.flavour
        );
        let rss = opts.events.contains(EventKind::Rss);
        let live = if self.live_view {
            let header = live::Header {
                pid,
                binary: self.exe_name.display().to_string(),
                go_version: runtime.version.raw.clone(),
                flavour: runtime.flavour,
                probes: probes.attached(),
                madvise: madvise.map(MadvisePath::name),
            };
            Some(LiveView::start(header).context("starting the live view")?)
        } else {
            None
        };
        let mut sink = Sink {
            layout: runtime.layout,
            resolver,
            agg: Aggregate::default(),
            exporters,
            live,
            counters,
            user_frames,
            started: Instant::now(),
            summary_only: opts.summary_only,
            undecodable: Undecodable::default(),
            bad_totals: Vec::new(),
            verbose: opts.verbose,
        };
        match child {
            Some(child) => child.release()?,
            // A running target has its starting RSS now; a command's is taken at the first
            // tick, once it runs its own program.
            None if rss => sink.rss_sample(pid)?,
            None => {}
        }
        let mut ring = watch(ring).context("watching the ring buffer")?;
        read_first();
        let end = ends.wait(&mut ring, pidfd, &mut sink, pid, rss).await;
        // Before anything else, even an error: from here on every probe hit returns at once.
        probes.stop()?;
        let end = end?;
        // The traced window.
        let elapsed = sink.started.elapsed();
        if rss {
            sink.rss_sample(pid)?;
        }
        let attached = probes.attached();
        sink.live = None;
        let detaching = Instant::now();
        let links = probes.link_kind();
        let stopped_at = probes.stopped_at().unwrap_or(0);
        probes.detach();
        if opts.verbose {
            note!(
                "{end}: tracing stopped at {stopped_at} ns (CLOCK_MONOTONIC); {attached} probes removed in {} ms ({links})",
                detaching.elapsed().as_millis()
            );
        }
        // Nothing new can arrive once the probes are gone; then take what is left.
        sink.drain(ring.get_mut(), usize::MAX)?;
        sink.read_kernel_totals()?;
        let status = sink.status()?;
        for exporter in &mut sink.exporters {
            exporter.status(&status)?;
        }
        if opts.verbose {
            describe_read_failures(&status.read_failures);
        }
        let info = RunInfo {
            pid,
            go_version: runtime.version.raw.clone(),
            flavour: runtime.flavour,
            probes: attached,
            elapsed,
            lost: status.lost,
            undecodable: sink.undecodable.clone(),
            read_failures: status.read_failures,
            calls: timed_calls(&self.plan, &sink.counters, opts.verbose)?,
        };
        Ok((sink, info, end))
    }
}

/// How madvise(2) calls are seen, if they are traced.
fn madvise_path(opts: &TraceOptions) -> anyhow::Result<Option<MadvisePath>> {
    if !opts.events.contains(EventKind::Madvise) {
        return Ok(None);
    }
    let asked = opts.madvise_via.map(|via| match via {
        MadviseVia::Kprobe => MadvisePath::Kprobe,
        MadviseVia::Tracepoint => MadvisePath::Tracepoint,
    });
    MadvisePath::choose(Path::new("/sys"), asked).map(Some)
}

/// Every kind of failed read, zeros included (`-v`).
fn describe_read_failures(failures: &ReadFailures) {
    note!(
        "failed reads of the target's memory: {}",
        summary::read_failure_list(failures, true)
    );
}

fn describe_plan(plan: &Plan) {
    for p in &plan.points {
        note!(
            "probe {} {:?} at {:#x} (file offset {:#x})",
            p.function.symbol,
            p.role,
            p.addr,
            p.file_offset
        );
    }
    for symbol in &plan.missing {
        note!("not in binary (dropped by the linker): {symbol}");
    }
}

/// Bytes an export file takes in memory before a write(2): at a million events a second,
/// the standard 8 KiB made one system call per 40 rows.
const EXPORT_BUFFER: usize = 256 << 10;

fn open_exporters(opts: &TraceOptions) -> anyhow::Result<Vec<Box<dyn Exporter>>> {
    use output::{json::JsonExporter, perfetto::PerfettoExporter, prometheus::PrometheusExporter};
    let create = |path: &Path, holds_keys: bool, what: &str| {
        output::create_file(path, holds_keys)
            .map(|file| BufWriter::with_capacity(EXPORT_BUFFER, file))
            .with_context(|| {
                format!(
                    "cannot write {what} to {}: give a writable path",
                    path.display()
                )
            })
    };
    let mut exporters: Vec<Box<dyn Exporter>> = Vec::new();
    if let Some(path) = &opts.csv {
        let out: Box<dyn Write> = if path == Path::new("-") {
            Box::new(BufWriter::with_capacity(EXPORT_BUFFER, io::stdout()))
        } else {
            Box::new(create(path, opts.show_keys, "CSV")?)
        };
        exporters.push(Box::new(CsvExporter::new(out, opts.show_keys)?));
    }
    if let Some(path) = &opts.json {
        let out = create(path, opts.show_keys, "JSON")?;
        exporters.push(Box::new(JsonExporter::new(out, opts.show_keys)));
    }
    if let Some(path) = &opts.perfetto {
        // No keys in the trace: names, sizes and times only.
        let out = create(path, false, "the Perfetto trace")?;
        exporters.push(Box::new(PerfettoExporter::new(out)?));
    }
    if let Some(addr) = opts.prometheus {
        exporters.push(Box::new(PrometheusExporter::bind(addr)?));
    }
    Ok(exporters)
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Exited,
    LeftBinary,
    Interrupt,
    Terminate,
    /// SIGHUP: the terminal or the session went away.
    HangUp,
    Duration,
    Quit,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::Exited => "the target exited",
            End::LeftBinary => "the target left the traced binary",
            End::Interrupt => "SIGINT",
            End::Terminate => "SIGTERM",
            End::HangUp => "SIGHUP",
            End::Duration => "--duration is over",
            End::Quit => "q pressed",
        })
    }
}

/// Everything that can end a run, and the periodic RSS sample.
struct Ends {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
    duration: Option<Duration>,
    rss_interval: Duration,
    sample_soon: bool,
    verbose: bool,
}

/// When a command started by map-trace gets its first RSS sample.
const COMMAND_FIRST_SAMPLE: Duration = Duration::from_millis(20);

impl Ends {
    /// Registered before the probes are attached, so no signal finds map-trace unprepared.
    fn new(opts: &TraceOptions) -> anyhow::Result<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            sigterm: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            sighup: signal(SignalKind::hangup()).context("SIGHUP handler")?,
            duration: opts.duration,
            rss_interval: opts.rss_interval,
            sample_soon: matches!(opts.target, Target::Command(_)),
            verbose: opts.verbose,
        })
    }

    /// Streams events until the target exits or execs another program, a signal arrives
    /// or the duration is over; samples the target's resident memory on the way if `rss`.
    async fn wait(
        &mut self,
        ring: &mut AsyncFd<RingBuf<MapData>>,
        pidfd: OwnedFd,
        sink: &mut Sink,
        pid: u32,
        rss: bool,
    ) -> anyhow::Result<End> {
        let rss_of = rss.then_some(pid);
        let exited = watch(pidfd).context("watching the target")?;
        // The probes sit in this file: once the process runs another, nothing more comes.
        let traced = process::executable(pid);
        let deadline = tokio::time::sleep(self.duration.unwrap_or(Duration::MAX));
        tokio::pin!(deadline);
        // A started command's first sample comes as soon as it runs its own program.
        let first = if self.sample_soon {
            COMMAND_FIRST_SAMPLE
        } else {
            self.rss_interval
        };
        let start = tokio::time::Instant::now() + first.min(self.rss_interval);
        let mut rss_tick = tokio::time::interval_at(start, self.rss_interval);
        let mut refresh = tokio::time::interval(REFRESH);
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("polling the ring buffer")?;
                    // Readiness is cleared only once the buffer is empty: the kernel wakes
                    // a reader only after it has caught up, so clearing early would stall.
                    if sink.drain(guard.get_inner_mut(), BATCH)? {
                        guard.clear_ready();
                    } else {
                        drop(guard);
                        // Let signals, the deadline and the target's exit be seen under load.
                        tokio::task::yield_now().await;
                    }
                }
                _ = rss_tick.tick(), if rss_of.is_some() => {
                    if let Some(pid) = rss_of {
                        sink.rss_sample(pid)?;
                    }
                }
                _ = poll.tick() => {
                    sink.drain(ring.get_mut(), BATCH)?;
                }
                _ = refresh.tick() => {
                    if let Some(end) = sink.refresh()? {
                        return Ok(end);
                    }
                    if let Some(now) = process::executable(pid).filter(|now| Some(now) != traced.as_ref()) {
                        sink.live = None;
                        note!("pid {pid} left the traced binary: it now runs {}", now.path.display());
                        return Ok(End::LeftBinary);
                    }
                }
                ready = exited.readable() => {
                    let mut ready = ready.context("watching the target")?;
                    if process::has_exited(pid, ready.get_inner()) {
                        return Ok(End::Exited);
                    }
                    // Readable without an exit (seen on 6.12 guests under load): wait for
                    // the next change rather than end a run whose target still runs.
                    ready.clear_ready();
                    if self.verbose {
                        note!("pid {pid}: its pidfd was readable, but it still runs");
                    }
                }
                _ = self.sigint.recv() => return Ok(End::Interrupt),
                _ = self.sigterm.recv() => return Ok(End::Terminate),
                _ = self.sighup.recv() => return Ok(End::HangUp),
                () = &mut deadline, if self.duration.is_some() => return Ok(End::Duration),
            }
        }
    }
}

/// How much this thread, the ring buffer's reader, is favoured over the target's threads
/// when they compete for a CPU (a nice value; a thread's own on Linux). Under a target
/// whose goroutines keep every CPU busy making events, an equal share left the reader
/// behind until the ring buffer overflowed; favoured, it takes the CPU time the events
/// cost as they come, and the target runs slower by that much instead of losing events.
const READER_NICE: libc::c_int = -10;

/// Favours this thread as the ring buffer's reader ([`READER_NICE`]); where that is not
/// allowed (no `CAP_SYS_NICE`), it reads at its usual share.
fn read_first() {
    // SAFETY: setpriority on the calling thread (who = 0) only changes its nice value.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, READER_NICE) };
}

/// Registers an owned descriptor with the event loop, for readability only.
fn watch<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its descriptor (a BPF map or a pidfd) and keeps it open and
    // unchanged for as long as the AsyncFd holds it.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(Into::into)
}

/// At most this many records are handled per wake-up before the loop looks at the rest.
const BATCH: usize = 4096;

/// How often the live view redraws and exporters hear the run's status.
const REFRESH: Duration = Duration::from_millis(250);

/// How often the ring buffer is read without being woken: the eBPF programs wake the
/// reader only once a batch has built up.
pub const POLL: Duration = Duration::from_millis(10);

/// Where decoded events go.
struct Sink {
    layout: &'static Layout,
    resolver: Resolver,
    agg: Aggregate,
    exporters: Vec<Box<dyn Exporter>>,
    live: Option<LiveView>,
    counters: Counters,
    /// Where the kernel's stack walks may stop.
    user_frames: UserFrames,
    /// When the probes were in place.
    started: Instant,
    /// Map operations are counted in the kernel and read from there.
    summary_only: bool,
    undecodable: Undecodable,
    /// Functions whose kernel totals were undecodable (noted once each).
    bad_totals: Vec<u16>,
    verbose: bool,
}

impl Sink {
    fn status(&self) -> anyhow::Result<Status> {
        Ok(Status {
            elapsed: self.started.elapsed(),
            events: self.agg.events + self.agg.kernel_calls.unwrap_or(0),
            lost: self.counters.lost()?,
            read_failures: self.counters.read_failures()?,
        })
    }

    /// `--summary-only`: takes the kernel's per-map totals into the aggregate.
    fn read_kernel_totals(&mut self) -> anyhow::Result<()> {
        if !self.summary_only {
            return Ok(());
        }
        let mut calls = Vec::new();
        for (key, totals) in self.counters.totals()? {
            if let Some(mut c) = events::decode_totals(&key, &totals, self.layout) {
                c.map_type = self.resolver.type_name(totals.map_type);
                calls.push(c);
            } else if !self.bad_totals.contains(&key.function) {
                // Read four times a second: each bad entry is noted once.
                self.bad_totals.push(key.function);
                let reason = self.undecodable.note(format_args!(
                    "kernel totals of unknown function {}",
                    key.function
                ));
                if self.verbose {
                    note!("undecodable kernel totals: {reason}");
                }
            }
        }
        self.agg.set_kernel_calls(&calls);
        Ok(())
    }

    /// The periodic update: exporters hear the status, the live view redraws and reads
    /// its keys. The end it asks for: `q`, or a terminal that is gone (it fails to draw
    /// or read), which is a hang-up like SIGHUP, whichever of the two comes first.
    fn refresh(&mut self) -> anyhow::Result<Option<End>> {
        self.read_kernel_totals()?;
        let status = self.status()?;
        for exporter in &mut self.exporters {
            exporter.status(&status)?;
        }
        let Some(live) = &mut self.live else {
            return Ok(None);
        };
        let action = live
            .tick(&self.agg, &status)
            .and_then(|()| live.keys(&self.agg, &status));
        match action {
            Ok(Action::Continue) => Ok(None),
            Ok(Action::Quit) => Ok(Some(End::Quit)),
            Err(_) => {
                self.live = None;
                Ok(Some(End::HangUp))
            }
        }
    }

    /// Hands up to `limit` records now in the ring buffer to the aggregate and the
    /// exporters; true when it emptied the buffer.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, limit: usize) -> anyhow::Result<bool> {
        let emptied = self.decode(ring, limit)?;
        self.user_frames.add(&self.resolver.take_user_frames())?;
        Ok(emptied)
    }

    /// [`Sink::drain`]'s decoding part.
    fn decode(&mut self, ring: &mut RingBuf<MapData>, limit: usize) -> anyhow::Result<bool> {
        for _ in 0..limit {
            let Some(record) = ring.next() else {
                return Ok(true);
            };
            match events::decode(&record, self.layout) {
                Ok((mut event, raw)) => {
                    self.resolver.resolve(&mut event, &raw);
                    self.record(&event)?;
                }
                Err(e) => {
                    let reason = self.undecodable.note(e);
                    if self.verbose {
                        note!("undecodable ring-buffer record: {reason}");
                    }
                }
            }
        }
        Ok(false)
    }

    /// Flushes every export, then prints the summary: to standard error when the CSV
    /// takes standard output. After a hang-up the terminal may be gone: the summary is
    /// then written if it can be.
    fn finish(mut self, info: &RunInfo, csv_to_stdout: bool, hung_up: bool) -> anyhow::Result<()> {
        for exporter in &mut self.exporters {
            exporter.finish()?;
        }
        let text = summary::render(&self.agg, info);
        let written = if csv_to_stdout {
            io::stderr().write_all(text.as_bytes())
        } else {
            let mut out = io::stdout();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        };
        match written {
            Err(_) if hung_up => Ok(()),
            other => other.context("writing the summary"),
        }
    }

    fn record(&mut self, event: &TraceEvent) -> anyhow::Result<()> {
        self.agg.record(event);
        let events = self.agg.events;
        for exporter in &mut self.exporters {
            exporter.event(event).with_context(|| {
                format!(
                    "tracing stopped at event {events}, probes removed; the files hold the events written before it"
                )
            })?;
        }
        Ok(())
    }

    /// Records the target's `VmRSS` and `RssAnon` as `rss` events, if it is still there.
    fn rss_sample(&mut self, pid: u32) -> anyhow::Result<()> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .context("reading the monotonic clock")?;
        let time_ns = u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(now.tv_nsec()).unwrap_or(0);
        for (which, bytes) in process::resident_memory(pid) {
            self.record(&TraceEvent {
                detail: Some(Detail::Rss(which)),
                rss_bytes: Some(bytes),
                // Sampled by map-trace, not by a thread of the target: no tid.
                ..TraceEvent::bare(EventKind::Rss, time_ns, pid, 0)
            })?;
        }
        Ok(())
    }
}

/// Timed calls over the plan's timed functions, listed per function with `-v`.
fn timed_calls(plan: &Plan, counters: &Counters, verbose: bool) -> anyhow::Result<TimedCalls> {
    let mut total = TimedCalls {
        orphans: counters.orphan_returns()?,
        ..TimedCalls::default()
    };
    let timed = plan.points.iter().filter(|p| p.role == Role::Entry);
    for point in timed {
        let c = counters.calls(point.cookie.function)?;
        if verbose {
            note!(
                "timed {}: {} entered, {} returned",
                point.function.symbol,
                c.entered,
                c.returned
            );
        }
        total.entered += c.entered;
        total.returned += c.returned;
    }
    Ok(total)
}
