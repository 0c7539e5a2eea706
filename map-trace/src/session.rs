//! One tracing run, for any number of processes: load the tracer, find the processes to
//! trace (and, as they exec, the ones that come later), attach each executable once,
//! stream events to the aggregates and outputs until the end, then drain, detach and
//! summarise.

use std::{
    collections::HashSet,
    ffi::OsString,
    io::{self, BufWriter, IsTerminal as _, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use map_trace_common::{EVENT_SIZE, EventKind, ReadFailures};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    aggregate::Aggregates,
    cli::{MadviseVia, Target, TraceOptions, UprobeLinks},
    discovery::{self, Exec, Scope},
    events::{self, Detail, TraceEvent, Undecodable},
    kernel,
    model::Labels,
    output::{
        self, Exporter, Status,
        csv::CsvExporter,
        live::{self, Action, LiveView},
        summary::{self, RunInfo},
    },
    privileges,
    process::{
        self, Process,
        launch::{Launched, resolve_command},
    },
    targets::{Attached, Targets},
    tracer::{Counters, MadvisePath, Settings, Tracer},
};

/// Maps `--summary-json` lists at least, whatever `--top` says.
const JSON_MAPS: usize = 100;

/// Where tracing starts.
enum Start<'a> {
    /// A running process, already inspected.
    Pid(u32),
    /// A command to start: its executable and arguments.
    Command(PathBuf, &'a [OsString]),
    All,
}

pub fn run(opts: &TraceOptions) -> anyhow::Result<()> {
    privileges::check()?;
    kernel::Features::probe(Path::new("/sys")).check(&kernel::release())?;
    let (start, scope) = resolve_target(opts)?;
    let csv_to_stdout = opts.csv.as_deref() == Some(Path::new("-"));
    // Under `-- CMD` the summary never mixes with the command's own output.
    let summary_to_stderr = csv_to_stdout || matches!(start, Start::Command(..));
    // Creates no threads (so the fork below stays safe); entered, so exporters can set up
    // their sockets and tasks on it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let _entered = rt.enter();
    let exporters = open_exporters(opts)?;
    let madvise = madvise_path(opts)?;
    let settings = Settings {
        key_hash: opts.key_hash,
        map: opts.map,
        show_keys: opts.show_keys,
        summary_only: opts.summary_only,
        ring_buffer_size: opts.ring_buffer_size,
        verifier_log: opts.verbose,
        multi_links: opts.uprobe_links.map(|l| l == UprobeLinks::Multi),
        watch_all: matches!(start, Start::All),
        hold: matches!(start, Start::Command(..)),
        follow: opts.follow,
    };
    let mut tracer = Tracer::load(&settings, madvise)?;
    let (exit_tx, exits) = mpsc::unbounded_channel();
    let mut rings = Rings {
        events: watch(tracer.take_events()?).context("watching the ring buffer")?,
        execs: watch(tracer.take_execs()?).context("watching the exec reports")?,
        exits,
    };
    let counters = tracer.take_counters()?;
    let mut run = Run {
        opts,
        targets: Targets::new(opts.events.clone(), opts.show_keys, opts.verbose),
        scope,
        aggs: Aggregates::default(),
        exporters,
        live: None,
        // The live view only on a terminal that nothing else writes to.
        live_view: !opts.no_tui && !csv_to_stdout && io::stdout().is_terminal(),
        counters,
        exit_tx,
        watched: HashSet::new(),
        root: None,
        started: Instant::now(),
        undecodable: Undecodable::default(),
        bad_totals: Vec::new(),
        passed_over: 0,
        held_back: Vec::new(),
        tracer,
    };
    let result = rt.block_on(run.trace(start, &mut rings));
    let (info, end) = match result {
        Ok(done) => done,
        Err(e) => {
            run.release_held();
            return Err(e);
        }
    };
    run.finish(&info, summary_to_stderr, end)
}

/// What to trace, and what a user's mistake in it is: a `--pid` is inspected here, so
/// one that cannot be traced is one clear error before anything is loaded.
fn resolve_target(opts: &TraceOptions) -> anyhow::Result<(Start<'_>, Scope)> {
    Ok(match &opts.target {
        Target::Pid(pid) => {
            Process::inspect(*pid)?;
            let scope = Scope::Tree {
                root: *pid,
                follow: opts.follow,
            };
            (Start::Pid(*pid), scope)
        }
        Target::Command(argv) => {
            let program = argv.first().context("no command given after --")?;
            let exe = resolve_command(program)?;
            // The root is known once started.
            let scope = Scope::Tree {
                root: 0,
                follow: opts.follow,
            };
            (Start::Command(exe, argv), scope)
        }
        Target::All(exe) => (Start::All, Scope::All { exe: exe.clone() }),
    })
}

/// The root of a `--pid` or `-- CMD` run: the run ends once it is done and no traced
/// process is left.
struct Root {
    pid: u32,
    launched: Option<Launched>,
    /// It exited.
    exited: bool,
    /// It was traced, and now runs a program that is not (`--pid` only ends on that).
    left: bool,
}

/// What the event loop waits on: the two ring buffers, and exits of watched processes.
struct Rings {
    events: AsyncFd<RingBuf<MapData>>,
    execs: AsyncFd<RingBuf<MapData>>,
    /// Pids of watched processes that exited ([`Run::watch_exit`] sends them).
    exits: mpsc::UnboundedReceiver<u32>,
}

/// A run in progress.
struct Run<'a> {
    opts: &'a TraceOptions,
    tracer: Tracer,
    targets: Targets,
    scope: Scope,
    aggs: Aggregates,
    exporters: Vec<Box<dyn Exporter>>,
    live: Option<LiveView>,
    live_view: bool,
    counters: Counters,
    exit_tx: mpsc::UnboundedSender<u32>,
    /// Processes whose exit is watched (a pidfd each).
    watched: HashSet<u32>,
    root: Option<Root>,
    /// When the probes were first in place.
    started: Instant,
    undecodable: Undecodable,
    /// Functions whose kernel totals were undecodable (noted once each).
    bad_totals: Vec<(u32, u16)>,
    /// Processes looked at and not traced.
    passed_over: u64,
    /// Processes stopped at their exec, until they are attached or passed over.
    held_back: Vec<u32>,
}

impl Run<'_> {
    /// Finds and attaches the processes there are at the start, starts the command,
    /// streams until the end, then stops, detaches and drains.
    async fn trace(
        &mut self,
        start: Start<'_>,
        rings: &mut Rings,
    ) -> anyhow::Result<(RunInfo, End)> {
        let mut ends = Ends::new(self.opts)?;
        let attached = self.begin(start)?;
        // Every probe so far is in: they all start reporting at this instant, until a stop.
        self.tracer
            .start(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
        self.started = Instant::now();
        for a in &attached {
            self.announce(a);
        }
        if matches!(self.scope, Scope::All { .. }) && attached.is_empty() {
            note!("attached to no process yet: each Go process is traced as it starts (--all)");
        }
        if self.live_view {
            self.live =
                Some(LiveView::start(self.live_header()).context("starting the live view")?);
        }
        let rss = self.opts.events.contains(EventKind::Rss);
        if rss {
            self.rss_sample()?;
        }
        if let Some(launched) = self.root.as_mut().and_then(|r| r.launched.as_mut()) {
            launched.release()?;
        }
        read_first();
        let end = ends.wait(self, rings, rss).await;
        // Before anything else, even an error: from here on every probe hit returns at once.
        self.tracer.stop()?;
        let end = end?;
        // The traced window.
        let elapsed = self.started.elapsed();
        if rss {
            self.rss_sample()?;
        }
        self.live = None;
        self.release_held();
        // Nothing new comes once the switch is off but the last records of hits already
        // past it: take those, then read the kernel's counts.
        self.drain(rings.events.get_mut(), usize::MAX)?;
        self.read_kernel_totals()?;
        let calls = self.targets.timed_calls(&self.counters);
        let status = self.status()?;
        for exporter in &mut self.exporters {
            exporter.status(&status)?;
        }
        if self.opts.verbose {
            describe_read_failures(&status.read_failures);
        }
        Ok((
            RunInfo {
                elapsed,
                probes: self.targets.probes(),
                lost: status.lost,
                lost_processes: self.counters.lost_processes()?,
                passed_over: self.passed_over,
                undecodable: self.undecodable.clone(),
                read_failures: status.read_failures,
                calls,
            },
            end,
        ))
    }

    /// Attaches the processes there are at the start (a `--pid` and its descendants, or
    /// every one under `--all`), or starts the command held at its gate.
    fn begin(&mut self, start: Start<'_>) -> anyhow::Result<Vec<Attached>> {
        let mut attached = Vec::new();
        match start {
            Start::Pid(pid) => {
                // Followed even with --no-follow (then its children are not): its exec is
                // reported, so a switch to another program is seen.
                self.tracer.follow(pid)?;
                // The process asked for must be traceable: that is the run's error.
                attached.push(self.targets.attach(&mut self.tracer, pid)?);
                self.watch_exit(pid)?;
                self.root = Some(Root {
                    pid,
                    launched: None,
                    exited: false,
                    left: false,
                });
                for child in self.scope.running() {
                    let _ = self.tracer.follow(child);
                    if let Some(a) = self.try_attach(child) {
                        attached.push(a);
                    }
                }
            }
            Start::Command(exe, argv) => {
                let launched = Launched::spawn(&exe, argv)?;
                let pid = launched.pid();
                // Followed even with --no-follow (then only it, not its children): its
                // exec is reported, and it is stopped there until attached.
                self.tracer.follow(pid)?;
                self.watch_exit(pid)?;
                self.scope = Scope::Tree {
                    root: pid,
                    follow: self.opts.follow,
                };
                self.root = Some(Root {
                    pid,
                    launched: Some(launched),
                    exited: false,
                    left: false,
                });
            }
            Start::All => {
                for pid in self.scope.running() {
                    let wanted =
                        process::executable(pid).is_some_and(|e| self.scope.wants(&e.path));
                    if wanted && let Some(a) = self.try_attach(pid) {
                        attached.push(a);
                    }
                }
            }
        }
        Ok(attached)
    }

    /// Attaches `pid`, or passes it over with a line at `-v`.
    fn try_attach(&mut self, pid: u32) -> Option<Attached> {
        match self.targets.attach(&mut self.tracer, pid) {
            Ok(a) => {
                if let Err(e) = self.watch_exit(pid) {
                    // Gone while being attached: passed over after all.
                    self.targets.detach(&mut self.tracer, pid);
                    self.pass_over(pid, &e);
                    return None;
                }
                Some(a)
            }
            Err(e) => {
                self.pass_over(pid, &e);
                None
            }
        }
    }

    fn pass_over(&mut self, pid: u32, why: &anyhow::Error) {
        self.passed_over += 1;
        if self.opts.verbose {
            note!("pid {pid}: passed over: {why:#}");
        }
    }

    /// The `attached` line of a process, and its labels for the aggregates and exporters.
    fn announce(&mut self, a: &Attached) {
        let l = &a.labels;
        let via = self
            .tracer
            .madvise()
            .map(|m| format!("; madvise via {}", m.name()))
            .unwrap_or_default();
        let container = l
            .container
            .as_ref()
            .map(|c| format!(", container {c}"))
            .unwrap_or_default();
        let shared = if a.new_probes {
            ""
        } else {
            ", shared with another process of it"
        };
        note!(
            "attached {} probes to pid {} ({}, {} maps){via}: {}{container}{shared}",
            l.probes,
            l.pid,
            l.go_version,
            l.flavour,
            l.exe
        );
        self.labelled(&a.labels);
    }

    fn labelled(&mut self, labels: &Arc<Labels>) {
        self.aggs.traced(labels.clone());
        for exporter in &mut self.exporters {
            exporter.process(labels);
        }
    }

    /// Watches `pid` for its exit (once per process).
    fn watch_exit(&mut self, pid: u32) -> anyhow::Result<()> {
        if !self.watched.insert(pid) {
            return Ok(());
        }
        let fd = watch(process::pidfd(pid).with_context(|| format!("watching pid {pid}"))?)
            .with_context(|| format!("watching pid {pid}"))?;
        let tx = self.exit_tx.clone();
        tokio::spawn(async move {
            loop {
                let Ok(mut ready) = fd.readable().await else {
                    break;
                };
                if process::has_exited(pid, ready.get_inner()) {
                    break;
                }
                // Readable without an exit (seen on 6.12 guests under load): wait for the
                // next change rather than end a process that still runs.
                ready.clear_ready();
            }
            let _ = tx.send(pid);
        });
        Ok(())
    }

    /// A process exec'd: it is traced if it runs Go (again, if it did before), else
    /// passed over; one stopped at its exec runs on either way.
    fn exec(&mut self, exec: Exec) {
        if exec.held {
            self.held_back.push(exec.pid);
        }
        self.exec_attach(&exec);
        if exec.held {
            discovery::resume(exec.pid);
            self.held_back.retain(|&p| p != exec.pid);
        }
    }

    /// [`Run::exec`]'s attaching part: nothing a process does can end the run here.
    fn exec_attach(&mut self, exec: &Exec) {
        let pid = exec.pid;
        if exec.hold_failed {
            note!(
                "pid {pid}: could not be stopped at its exec; its first map operations may go unseen"
            );
        }
        let Some(exe) = process::executable(pid) else {
            return;
        };
        let was_traced = self.targets.get(pid).is_some();
        if !exec.followed && !self.scope.wants(&exe.path) {
            if was_traced {
                self.left(pid, &exe.path);
            }
            return;
        }
        match self.targets.attach(&mut self.tracer, pid) {
            Ok(a) => {
                if let Err(e) = self.watch_exit(pid) {
                    // Gone while being attached: passed over after all.
                    self.targets.detach(&mut self.tracer, pid);
                    self.pass_over(pid, &e);
                    return;
                }
                self.announce(&a);
            }
            Err(_) if was_traced => self.left(pid, &exe.path),
            Err(e) => {
                let root = self.root.as_ref().is_some_and(|r| r.pid == pid);
                if root && !is_not_go(&e) {
                    // The command asked for runs Go but cannot be traced: say so plainly.
                    note!("pid {pid} ({}): not traced: {e:#}", exe.path.display());
                    self.passed_over += 1;
                } else {
                    self.pass_over(pid, &e);
                }
            }
        }
    }

    /// Traced process `pid` runs another program, `now`, which is not traced.
    fn left(&mut self, pid: u32, now: &Path) {
        note!(
            "pid {pid} left the traced binary: it now runs {}",
            now.display()
        );
        self.end_process(pid);
        if let Some(root) = self.root.as_mut().filter(|r| r.pid == pid) {
            root.left = true;
        }
    }

    /// A process exited.
    fn exited(&mut self, pid: u32, events: &mut RingBuf<MapData>) -> anyhow::Result<()> {
        // Every record it made is in the ring buffer by now: take them while its
        // addresses can still be named.
        self.drain(events, self.in_ring())?;
        if self.opts.summary_only {
            self.read_kernel_totals()?;
            self.counters.forget_totals(pid)?;
        }
        self.watched.remove(&pid);
        self.end_process(pid);
        let _ = self.tracer.unfollow(pid);
        if let Some(root) = self.root.as_mut().filter(|r| r.pid == pid) {
            root.exited = true;
        }
        Ok(())
    }

    fn end_process(&mut self, pid: u32) {
        if self.targets.detach(&mut self.tracer, pid).is_some() {
            self.aggs.ended(pid);
        }
        self.targets
            .release_idle(&mut self.tracer, &mut self.counters);
    }

    /// Why the run is over by itself, if it is: under `--pid` or `-- CMD`, once the root
    /// is done (exited, or left Go) and no traced process is left.
    fn over(&self) -> Option<End> {
        let root = self.root.as_ref()?;
        if self.targets.live() > 0 {
            return None;
        }
        if root.exited {
            Some(End::Exited)
        } else if root.left && root.launched.is_none() {
            Some(End::LeftBinary)
        } else {
            None
        }
    }

    /// The most records the ring buffer can hold: draining that many takes every record
    /// that was in it when the drain began. Not "until empty": under load from other
    /// processes the buffer may never be empty (seen in a 6.1 guest, where the reader then
    /// never got to the exec reports waiting behind the drain).
    fn in_ring(&self) -> usize {
        usize::try_from(self.opts.ring_buffer_size).unwrap_or(usize::MAX) / EVENT_SIZE + 1
    }

    /// Lets every process still stopped at its exec run on: map-trace never leaves one
    /// stopped.
    fn release_held(&mut self) {
        for pid in self.held_back.drain(..) {
            discovery::resume(pid);
        }
    }

    fn status(&self) -> anyhow::Result<Status> {
        Ok(Status {
            elapsed: self.started.elapsed(),
            events: self.aggs.events + self.aggs.kernel_calls().unwrap_or(0),
            lost: self.counters.lost()?,
            read_failures: self.counters.read_failures()?,
        })
    }

    /// `--summary-only`: takes the kernel's per-map totals into each process's aggregate.
    fn read_kernel_totals(&mut self) -> anyhow::Result<()> {
        if !self.opts.summary_only {
            return Ok(());
        }
        let mut calls: std::collections::BTreeMap<u32, Vec<events::KernelCalls>> =
            std::collections::BTreeMap::new();
        for (key, totals) in self.counters.totals()? {
            let Some(traced) = self.targets.get_mut(key.tgid) else {
                continue;
            };
            if let Some(mut c) = events::decode_totals(&key, &totals, traced.layout) {
                c.map_type = traced.resolver.type_name(totals.map_type);
                calls.entry(key.tgid).or_default().push(c);
            } else if !self.bad_totals.contains(&(key.tgid, key.function)) {
                // Read four times a second: each bad entry is noted once.
                self.bad_totals.push((key.tgid, key.function));
                let reason = self.undecodable.note(format_args!(
                    "kernel totals of unknown function {}",
                    key.function
                ));
                if self.opts.verbose {
                    note!("undecodable kernel totals: {reason}");
                }
            }
        }
        for (pid, calls) in calls {
            if let Some(p) = self.aggs.processes.get_mut(&pid) {
                p.agg.set_kernel_calls(&calls);
            }
        }
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
        if self.exporters.iter().any(|e| e.wants_answers()) {
            let elapsed = u64::try_from(status.elapsed.as_nanos()).unwrap_or(u64::MAX);
            let answers = crate::answers::answer(&self.aggs, elapsed, status.lost, 0);
            for exporter in &mut self.exporters {
                if exporter.wants_answers() {
                    exporter.answers(&answers)?;
                }
            }
        }
        let Some(live) = &mut self.live else {
            return Ok(None);
        };
        let action = live
            .tick(&self.aggs, &status)
            .and_then(|()| live.keys(&self.aggs, &status));
        match action {
            Ok(Action::Continue) => Ok(None),
            Ok(Action::Quit) => Ok(Some(End::Quit)),
            Err(_) => {
                self.live = None;
                Ok(Some(End::HangUp))
            }
        }
    }

    fn live_header(&self) -> live::Header {
        live::Header {
            probes: self.targets.probes(),
            madvise: self.tracer.madvise().map(MadvisePath::name),
            all: matches!(self.scope, Scope::All { .. }),
        }
    }

    /// Hands up to `limit` records now in the ring buffer to the aggregates and the
    /// exporters; true when it emptied the buffer.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, limit: usize) -> anyhow::Result<bool> {
        let emptied = self.decode(ring, limit)?;
        for (slot, frames) in self.targets.take_user_frames() {
            self.tracer.add_user_frames(slot, &frames)?;
        }
        Ok(emptied)
    }

    /// [`Run::drain`]'s decoding part.
    fn decode(&mut self, ring: &mut RingBuf<MapData>, limit: usize) -> anyhow::Result<bool> {
        for _ in 0..limit {
            let Some(record) = ring.next() else {
                return Ok(true);
            };
            let decoded =
                match events::record_pid(&record).and_then(|pid| self.targets.get_mut(pid)) {
                    Some(traced) => events::decode(&record, traced.layout)
                        .map(|(mut event, raw)| {
                            traced.resolver.resolve(&mut event, &raw);
                            event
                        })
                        .map_err(|e| e.to_string()),
                    None => Err(format!(
                        "a record of pid {}, which is not traced",
                        events::record_pid(&record).unwrap_or(0)
                    )),
                };
            drop(record);
            match decoded {
                Ok(mut event) => self.record(&mut event)?,
                Err(e) => {
                    let reason = self.undecodable.note(e);
                    if self.opts.verbose {
                        note!("undecodable ring-buffer record: {reason}");
                    }
                }
            }
        }
        Ok(false)
    }

    /// Takes every exec the kernel reported. The events of a process's old program are in
    /// `events` before its exec is reported: they are taken first, while the old
    /// program's layout and addresses still name them.
    fn read_execs(
        &mut self,
        ring: &mut RingBuf<MapData>,
        events: &mut RingBuf<MapData>,
    ) -> anyhow::Result<bool> {
        let mut execs = Vec::new();
        let emptied = loop {
            let Some(record) = ring.next() else {
                break true;
            };
            if let Some(e) = discovery::decode(&record) {
                execs.push(e);
            } else {
                let reason = self
                    .undecodable
                    .note(format_args!("an exec report of {} bytes", record.len()));
                if self.opts.verbose {
                    note!("undecodable exec report: {reason}");
                }
            }
            if execs.len() >= BATCH {
                break false;
            }
        };
        if !execs.is_empty() {
            self.drain(events, self.in_ring())?;
        }
        for exec in execs {
            self.exec(exec);
        }
        Ok(emptied)
    }

    fn record(&mut self, event: &mut TraceEvent) -> anyhow::Result<()> {
        self.aggs.record(event);
        let events = self.aggs.events;
        for exporter in &mut self.exporters {
            exporter.event(event).with_context(|| {
                format!(
                    "tracing stopped at event {events}, probes removed; the files hold the events written before it"
                )
            })?;
        }
        Ok(())
    }

    /// Records each traced process's `VmRSS` and `RssAnon` as `rss` events.
    fn rss_sample(&mut self) -> anyhow::Result<()> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .context("reading the monotonic clock")?;
        let time_ns = u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(now.tv_nsec()).unwrap_or(0);
        let pids: Vec<u32> = self.targets.pids().collect();
        for pid in pids {
            for (which, bytes) in process::resident_memory(pid) {
                self.record(&mut TraceEvent {
                    detail: Some(Detail::Rss(which)),
                    rss_bytes: Some(bytes),
                    // Sampled by map-trace, not by a thread of the target: no tid.
                    ..TraceEvent::bare(EventKind::Rss, time_ns, pid, 0)
                })?;
            }
        }
        Ok(())
    }

    /// Removes every probe, flushes every export, then prints the summary: to standard
    /// error when `to_stderr`. After a hang-up the terminal may be gone: the files still
    /// get everything, and the summary is written if it can be.
    fn finish(self, info: &RunInfo, to_stderr: bool, end: End) -> anyhow::Result<()> {
        let Self {
            tracer,
            targets,
            mut exporters,
            mut aggs,
            root,
            opts,
            ..
        } = self;
        // Maps whose tables were made before tracing: read from the processes still there.
        for pid in targets.pids() {
            if let (Some(t), Some(p)) = (targets.get(pid), aggs.processes.get_mut(&pid)) {
                let (header, storage) = (&t.layout.header, &t.layout.storage);
                p.agg.read_unknown_tables(|map, dir_len| {
                    let read = |addr, len| crate::process::memory::read(pid, addr, len);
                    crate::held::read_tables(read, header, storage, map, dir_len)
                });
            }
        }
        let detaching = Instant::now();
        let links = tracer.link_kind();
        let stopped_at = tracer.stopped_at().unwrap_or(0);
        let probes = targets.probes();
        let (sets, closing) = targets.into_probe_sets();
        tracer.detach(sets, closing);
        if opts.verbose {
            note!(
                "{end}: tracing stopped at {stopped_at} ns (CLOCK_MONOTONIC); {probes} probes removed in {} ms ({links})",
                detaching.elapsed().as_millis()
            );
        }
        if let Some(launched) = root.as_ref().and_then(|r| r.launched.as_ref()) {
            launched.reap();
        }
        for exporter in &mut exporters {
            exporter.finish()?;
        }
        let duration_ns = u64::try_from(info.elapsed.as_nanos()).unwrap_or(u64::MAX);
        let answers =
            crate::answers::answer(&aggs, duration_ns, info.lost, opts.top.max(JSON_MAPS));
        if let Some(path) = &opts.summary_json {
            let file = output::create_file(path, false)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = io::BufWriter::new(file);
            serde_json::to_writer_pretty(&mut out, &answers)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let text = summary::render(&aggs, info, &answers, opts.top);
        let written = if to_stderr {
            io::stderr().write_all(text.as_bytes())
        } else {
            let mut out = io::stdout();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        };
        match written {
            Err(_) if end == End::HangUp => Ok(()),
            other => other.context("writing the summary"),
        }
    }
}

/// Whether an attach failed only because the program is not Go: for a `-- CMD` launcher
/// such as `sh` or `make`, that is expected.
fn is_not_go(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::binary::BinaryError>()
        .is_some_and(crate::binary::BinaryError::is_not_go)
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
        })
    }

    /// Streams events and takes execs and exits until the run is over, a signal arrives
    /// or the duration is over; samples resident memory on the way if `rss`.
    async fn wait(
        &mut self,
        run: &mut Run<'_>,
        rings: &mut Rings,
        rss: bool,
    ) -> anyhow::Result<End> {
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
            if let Some(end) = run.over() {
                return Ok(end);
            }
            tokio::select! {
                // Execs first: a process stopped at its exec waits for them.
                guard = rings.execs.readable_mut() => {
                    let mut guard = guard.context("polling the exec reports")?;
                    if run.read_execs(guard.get_inner_mut(), rings.events.get_mut())? {
                        guard.clear_ready();
                    }
                }
                guard = rings.events.readable_mut() => {
                    let mut guard = guard.context("polling the ring buffer")?;
                    // Readiness is cleared only once the buffer is empty: the kernel wakes
                    // a reader only after it has caught up, so clearing early would stall.
                    if run.drain(guard.get_inner_mut(), BATCH)? {
                        guard.clear_ready();
                    } else {
                        drop(guard);
                        // Let signals, the deadline and exits be seen under load.
                        tokio::task::yield_now().await;
                    }
                }
                Some(pid) = rings.exits.recv() => run.exited(pid, rings.events.get_mut())?,
                _ = rss_tick.tick(), if rss => run.rss_sample()?,
                _ = poll.tick() => {
                    run.drain(rings.events.get_mut(), BATCH)?;
                    run.read_execs(rings.execs.get_mut(), rings.events.get_mut())?;
                }
                _ = refresh.tick() => {
                    if let Some(end) = run.refresh()? {
                        return Ok(end);
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

/// How often the ring buffers are read without being woken: the eBPF programs wake the
/// reader only once a batch has built up.
pub const POLL: Duration = Duration::from_millis(10);
