//! One tracing run: resolve the target, plan and attach probes, stream events to the outputs
//! until the end, then drain, detach and summarise.

use std::{
    ffi::OsString,
    io::{self, BufWriter, Write},
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use map_trace_common::EventKind;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    aggregate::Aggregate,
    cli::{Target, TraceOptions},
    events::{self, Detail, TraceEvent},
    goruntime::{Layout, Runtime},
    output::{
        self, Exporter,
        csv::CsvExporter,
        summary::{self, RunInfo, TimedCalls},
    },
    plan::{self, Plan, Role},
    privileges,
    probes::{Counters, MadvisePath, Probes, Settings},
    resolve::Resolver,
    target::{
        binary::GoBinary,
        launch::{HeldChild, resolve_command},
        process::{self, Process},
    },
};

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
    // The executable as the kernel should resolve it for uprobes.
    let (exe, tracee) = match &opts.target {
        Target::Pid(pid) => {
            let exe = Process::inspect(*pid)?.exe;
            let pidfd = process::pidfd(*pid).context("pidfd_open")?;
            (exe, Tracee::Running { pid: *pid, pidfd })
        }
        Target::Command(argv) => {
            let program = argv.first().context("no command given after --")?;
            (resolve_command(program)?, Tracee::Command(argv))
        }
    };

    let binary = GoBinary::open(&exe)?;
    let runtime = Runtime::of(&binary)?;
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
    let settings = Settings {
        key_hash: opts.key_hash,
        map: opts.map,
        show_keys: opts.show_keys,
        load_bias,
    };
    let resolver = Resolver::new(binary, load_bias, opts.show_keys);

    let (sink, info) = rt.block_on(async {
        let mut ends = Ends::new(opts)?;
        let madvise = opts
            .events
            .contains(EventKind::Madvise)
            .then(|| MadvisePath::detect(Path::new("/sys")));
        let mut probes = Probes::attach(&plan, &runtime, &exe, pid, madvise, &settings)?;
        let ring = probes.take_events()?;
        let counters = probes.take_counters()?;
        let via = madvise
            .map(|m| format!("; madvise via {}", m.name()))
            .unwrap_or_default();
        eprintln!(
            "attached {} probes to pid {pid} ({}, {} maps){via}",
            probes.attached(),
            runtime.version.raw,
            runtime.flavour
        );
        let rss = opts.events.contains(EventKind::Rss);
        let mut sink = Sink {
            layout: runtime.layout,
            resolver,
            agg: Aggregate::default(),
            exporters,
        };
        match &mut child {
            Some(child) => child.release()?,
            // A running target has its starting RSS now; a command's is taken at the first
            // tick, once it runs its own program.
            None if rss => sink.rss_sample(pid)?,
            None => {}
        }
        let started = Instant::now();
        let mut ring = watch(ring).context("watching the ring buffer")?;
        ends.wait(&mut ring, pidfd, &mut sink, rss.then_some(pid))
            .await?;
        if rss {
            sink.rss_sample(pid)?;
        }
        let attached = probes.attached();
        // The traced window; removing probes afterwards takes the kernel ~0.1 s each.
        let elapsed = started.elapsed();
        // Nothing new can arrive once the probes are gone; then take what is left.
        probes.detach()?;
        sink.drain(ring.get_mut(), usize::MAX)?;
        let info = RunInfo {
            pid,
            go_version: runtime.version.raw.clone(),
            flavour: runtime.flavour,
            probes: attached,
            elapsed,
            lost: counters.lost()?,
            calls: timed_calls(&plan, &counters, opts.verbose)?,
        };
        anyhow::Ok((sink, info))
    })?;
    if let Some(child) = &child {
        child.reap();
    }
    sink.finish(&info, csv_to_stdout)
}

fn describe_plan(plan: &Plan) {
    for p in &plan.points {
        eprintln!(
            "probe {} {:?} at {:#x} (file offset {:#x})",
            p.function.symbol, p.role, p.addr, p.file_offset
        );
    }
    for symbol in &plan.missing {
        eprintln!("not in binary (dropped by the linker): {symbol}");
    }
}

fn open_exporters(opts: &TraceOptions) -> anyhow::Result<Vec<Box<dyn Exporter>>> {
    let mut exporters: Vec<Box<dyn Exporter>> = Vec::new();
    if let Some(path) = &opts.csv {
        let out: Box<dyn Write> = if path == Path::new("-") {
            Box::new(BufWriter::new(io::stdout()))
        } else {
            let file = output::create_file(path, opts.show_keys).with_context(|| {
                format!(
                    "cannot write CSV to {}: give a writable path",
                    path.display()
                )
            })?;
            Box::new(BufWriter::new(file))
        };
        exporters.push(Box::new(CsvExporter::new(out, opts.show_keys)?));
    }
    Ok(exporters)
}

/// Everything that can end a run, and the periodic RSS sample.
struct Ends {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    duration: Option<Duration>,
    rss_interval: Duration,
    sample_soon: bool,
}

/// When a command started by map-trace gets its first RSS sample.
const COMMAND_FIRST_SAMPLE: Duration = Duration::from_millis(20);

impl Ends {
    /// Registered before the probes are attached, so no signal finds map-trace unprepared.
    fn new(opts: &TraceOptions) -> anyhow::Result<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            sigterm: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            duration: opts.duration,
            rss_interval: opts.rss_interval,
            sample_soon: matches!(opts.target, Target::Command(_)),
        })
    }

    /// Streams events until the target exits, a signal arrives or the duration is over;
    /// samples `rss_of`'s resident memory on the way.
    async fn wait(
        &mut self,
        ring: &mut AsyncFd<RingBuf<MapData>>,
        pidfd: OwnedFd,
        sink: &mut Sink,
        rss_of: Option<u32>,
    ) -> anyhow::Result<()> {
        let exited = watch(pidfd).context("watching the target")?;
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
                _ = exited.readable() => return Ok(()),
                _ = self.sigint.recv() => return Ok(()),
                _ = self.sigterm.recv() => return Ok(()),
                () = &mut deadline, if self.duration.is_some() => return Ok(()),
            }
        }
    }
}

/// Registers an owned descriptor with the event loop, for readability only.
fn watch<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its descriptor (a BPF map or a pidfd) and keeps it open and
    // unchanged for as long as the AsyncFd holds it.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(Into::into)
}

/// At most this many records are handled per wake-up before the loop looks at the rest.
const BATCH: usize = 4096;

/// Where decoded events go.
struct Sink {
    layout: &'static Layout,
    resolver: Resolver,
    agg: Aggregate,
    exporters: Vec<Box<dyn Exporter>>,
}

impl Sink {
    /// Hands up to `limit` records now in the ring buffer to the aggregate and the
    /// exporters; true when it emptied the buffer.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, limit: usize) -> anyhow::Result<bool> {
        for _ in 0..limit {
            let Some(record) = ring.next() else {
                return Ok(true);
            };
            let (mut event, raw) = events::decode(&record, self.layout)?;
            self.resolver.resolve(&mut event, &raw);
            self.record(&event)?;
        }
        Ok(false)
    }

    /// Flushes every export, then prints the summary: to standard error when the CSV
    /// takes standard output.
    fn finish(mut self, info: &RunInfo, csv_to_stdout: bool) -> anyhow::Result<()> {
        for exporter in &mut self.exporters {
            exporter.finish()?;
        }
        let text = summary::render(&self.agg, info);
        if csv_to_stdout {
            eprint!("{text}");
        } else {
            print!("{text}");
            io::stdout().flush().context("writing the summary")?;
        }
        Ok(())
    }

    fn record(&mut self, event: &TraceEvent) -> anyhow::Result<()> {
        self.agg.record(event);
        for exporter in &mut self.exporters {
            exporter.event(event)?;
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
            eprintln!(
                "timed {}: {} entered, {} returned",
                point.function.symbol, c.entered, c.returned
            );
        }
        total.entered += c.entered;
        total.returned += c.returned;
    }
    Ok(total)
}
