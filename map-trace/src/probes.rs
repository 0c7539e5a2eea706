//! Loading map-trace's eBPF object and attaching the plan's uprobes to one process.

use std::{io, num::NonZeroU32, os::fd::AsFd as _, path::Path};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader, VerifierLogLevel,
    maps::{MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        Program, ProgramError, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use map_trace_common::{
    CALLS_ORPHANS, Config, EVENT_SIZE, FILTER_KEY, FILTER_MAP, LOST_EVENTS, LOST_TOTALS, MapTotals,
    ReadFailure, ReadFailures, TotalsKey,
};

use crate::{
    goruntime::Runtime,
    kernel,
    plan::{Plan, ProbePoint, Role},
    switch::Switch,
    uprobe_multi,
};

/// The eBPF object built by `build.rs` from map-trace-ebpf.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/map-trace"));

fn program_name(role: Role) -> &'static str {
    match role {
        Role::Op => "map_op",
        Role::Gc => "gc_event",
        Role::Entry => "call_entry",
        Role::Return => "call_return",
    }
}

/// How madvise(2) calls are seen: a kprobe pair on the kernel's `do_madvise` where the
/// kernel has kprobes, else the `syscalls` tracepoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MadvisePath {
    Kprobe,
    Tracepoint,
}

impl MadvisePath {
    /// The path asked for, or with `None` the better one this kernel has: kprobes need
    /// the kernel's kprobe event source (`CONFIG_KPROBES`); `sysfs` is the root of sysfs
    /// (`/sys`).
    pub fn choose(sysfs: &Path, asked: Option<Self>) -> anyhow::Result<Self> {
        let kprobes = kernel::has_kprobes(sysfs);
        match asked {
            Some(MadvisePath::Kprobe) if !kprobes => bail!(
                "kernel {} has no kprobes (CONFIG_KPROBES; {}/bus/event_source/devices/kprobe is missing): use --madvise-via tracepoint, or leave it out",
                kernel::release(),
                sysfs.display()
            ),
            Some(path) => Ok(path),
            None if kprobes => Ok(MadvisePath::Kprobe),
            None => Ok(MadvisePath::Tracepoint),
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            MadvisePath::Kprobe => "kprobe",
            MadvisePath::Tracepoint => "tracepoint",
        }
    }

    /// Its programs: the call's start, then its end.
    fn programs(self) -> [&'static str; 2] {
        match self {
            MadvisePath::Kprobe => ["madvise_kprobe", "madvise_kretprobe"],
            MadvisePath::Tracepoint => ["madvise_enter", "madvise_exit"],
        }
    }
}

/// Tracepoints are found through tracefs; mount it where the kernel expects it if no one has.
fn ensure_tracefs() -> anyhow::Result<()> {
    const TRACEFS: &str = "/sys/kernel/tracing";
    if Path::new(TRACEFS).join("events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(());
    }
    nix::mount::mount(Some("nodev"), TRACEFS, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>)
        .with_context(|| {
            format!("tracefs is not mounted and mounting it at {TRACEFS} failed (the madvise tracepoints need it): mount it, or leave madvise out of --events")
        })
}

/// The reader is woken once the CPUs have together submitted about this fraction of the
/// ring buffer (and reads every [`crate::session::POLL`] anyway): few wakeups under load,
/// far from overflowing.
const WAKEUP_FRACTION: u32 = 8;

/// Records per CPU between wake-ups: [`WAKEUP_FRACTION`] of a ring buffer of `size` bytes,
/// in the smallest records, shared among the `cpus`.
fn wakeup_records(size: u32, cpus: usize) -> u64 {
    let record = u64::try_from(EVENT_SIZE).unwrap_or(1);
    let records = u64::from(size / WAKEUP_FRACTION) / record;
    (records / u64::try_from(cpus.max(1)).unwrap_or(1)).max(1)
}

/// What the eBPF programs let through and send, and where the target is loaded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// Keyed events must have this key hash.
    pub key_hash: Option<u64>,
    /// Map events must be of this map header.
    pub map: Option<u64>,
    /// Keyed events carry the key's bytes.
    pub show_keys: bool,
    /// Run-time minus link-time addresses of the target's executable (PIE; else 0).
    pub load_bias: u64,
    /// Map operations are counted in the kernel, not sent ([`Counters::totals`]).
    pub summary_only: bool,
    /// Bytes of the ring buffer: a power of two, whole pages.
    pub ring_buffer_size: u32,
    /// A program the verifier refuses has its whole log written to stderr (`-v`).
    pub verifier_log: bool,
    /// Multi-uprobe links (`Some(true)`), a link per probe (`Some(false)`), or the best
    /// this kernel has.
    pub multi_links: Option<bool>,
}

/// Attached probes and the maps user space reads.
pub struct Probes {
    ebpf: Ebpf,
    attached: usize,
    /// The uprobes went in through multi-uprobe links.
    multi: bool,
    /// Every link, owned here (taken from its program): dropping one detaches it, so
    /// [`Probes::detach`] can drop them all at once on threads of their own.
    links: Vec<Box<dyn Send>>,
    /// The programs' on/off switch.
    switch: Switch,
}

/// Return addresses user space has resolved to user code: the kernel's frame-pointer walk
/// stops at the first one, as the resolver would.
pub struct UserFrames(aya::maps::HashMap<MapData, u64, u8>);

impl UserFrames {
    /// Adds return addresses. Once the set is full the rest are left out: walks past them
    /// go on to the end, which costs time, not events.
    pub fn add(&mut self, pcs: &[u64]) -> anyhow::Result<()> {
        for &pc in pcs {
            match self.0.insert(pc, 1, 0) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::E2BIG) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e).context("adding a user-code return address"),
            }
        }
        Ok(())
    }
}

/// The kernel-side counters that outlive the probes.
pub struct Counters {
    lost: PerCpuArray<MapData, u64>,
    calls: PerCpuArray<MapData, u64>,
    read_failures: PerCpuArray<MapData, u64>,
    totals: PerCpuHashMap<MapData, TotalsKey, MapTotals>,
}

/// One (map, function)'s totals over all CPUs: sums, the worst, and the newest header.
fn merge<'a>(per_cpu: impl Iterator<Item = &'a MapTotals>) -> MapTotals {
    let mut all = MapTotals::ZERO;
    for t in per_cpu {
        all.calls += t.calls;
        all.total_ns += t.total_ns;
        all.worst_ns = all.worst_ns.max(t.worst_ns);
        for (sum, n) in all.histogram.iter_mut().zip(t.histogram) {
            *sum += n;
        }
        if t.last_ns > all.last_ns {
            all.last_ns = t.last_ns;
            all.header = t.header;
            all.map_type = t.map_type;
        }
    }
    all
}

/// Timed calls of one function, as the eBPF programs counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCount {
    pub entered: u64,
    pub returned: u64,
}

impl Probes {
    /// Loads the programs configured for `runtime` and process `pid`, and attaches every
    /// point of `plan` in `binary` (a path the kernel resolves to the target's executable).
    /// With `madvise`, also attaches the madvise programs of that path.
    pub fn attach(
        plan: &Plan,
        runtime: &Runtime,
        binary: &Path,
        pid: u32,
        madvise: Option<MadvisePath>,
        settings: &Settings,
    ) -> anyhow::Result<Self> {
        let layout = runtime.layout;
        let config = Config {
            tgid: pid,
            show_keys: u32::from(settings.show_keys),
            goid_offset: layout.goid_offset,
            map_type_key_offset: layout.map_type_key_offset,
            type_size_offset: layout.type_size_offset,
            gc_cycles_addr: plan
                .gc_cycles_addr
                .map_or(0, |a| a.wrapping_add(settings.load_bias)),
            filters: if settings.key_hash.is_some() {
                FILTER_KEY
            } else {
                0
            } | if settings.map.is_some() {
                FILTER_MAP
            } else {
                0
            },
            key_hash: settings.key_hash.unwrap_or(0),
            map: settings.map.unwrap_or(0),
            summary_only: u64::from(settings.summary_only),
            variant_offset: layout.header.variant().map_or(0, |(offset, _)| offset),
            variant_mask: layout.header.variant().map_or(0, |(_, mask)| mask),
            wakeup_records: wakeup_records(
                settings.ring_buffer_size,
                aya::util::nr_cpus().unwrap_or(1),
            ),
        };
        let mut ebpf = EbpfLoader::new()
            // aya asks for a log only when a load fails, by loading again with a buffer: a
            // load that passes costs nothing. Level 1 logs only the refused path (not every
            // path, as level 2 would: megabytes, and slow to produce); stats add the size.
            .verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS)
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", settings.ring_buffer_size)
            .load(EBPF_OBJECT)
            .context("loading the eBPF programs (does the kernel support BPF ring buffers?)")?;
        let mut links: Vec<Box<dyn Send>> = Vec::new();
        let (mut attached, multi) =
            attach_uprobes(&mut ebpf, plan, binary, pid, settings, &mut links)?;
        let switch = Switch::new(ebpf.take_map("SWITCH").context("SWITCH map missing")?)?;
        if let Some(path) = madvise {
            attach_madvise(&mut ebpf, path, settings.verifier_log, &mut links)?;
            attached += 2;
        }
        Ok(Self {
            ebpf,
            attached,
            multi,
            links,
            switch,
        })
    }

    /// How the uprobes are linked, for people.
    #[must_use]
    pub fn link_kind(&self) -> &'static str {
        if self.multi {
            "multi-uprobe links"
        } else {
            "a link per uprobe"
        }
    }

    /// Turns the programs on: from now on every probe reports, until a stop, or one of
    /// `stop_signals` arrives (turning them off from its handler, at once).
    pub fn start(&mut self, stop_signals: &[libc::c_int]) -> anyhow::Result<()> {
        self.switch.off_on(stop_signals)?;
        self.switch.on()
    }

    /// Turns the programs off: once this returns, every probe hit returns at its first
    /// instruction, and the only records still to come are those of hits already past it.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.switch.off()
    }

    /// `CLOCK_MONOTONIC`, in ns, when the programs were turned off (by [`Probes::stop`] or
    /// a stop signal): every event is stamped before it.
    #[must_use]
    pub fn stopped_at(&self) -> Option<u64> {
        self.switch.stopped_at()
    }

    /// Uprobes, kprobes and tracepoints attached.
    #[must_use]
    pub fn attached(&self) -> usize {
        self.attached
    }

    /// The event ring buffer (once).
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("EVENTS ring buffer missing")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// The set of return addresses known as user code, which the stack walks stop at (once).
    pub fn take_user_frames(&mut self) -> anyhow::Result<UserFrames> {
        let map = self
            .ebpf
            .take_map("USER_FRAMES")
            .context("USER_FRAMES missing")?;
        Ok(UserFrames(aya::maps::HashMap::try_from(map)?))
    }

    /// The lost-event and timed-call counters (once).
    pub fn take_counters(&mut self) -> anyhow::Result<Counters> {
        let mut take = |name: &str| -> anyhow::Result<PerCpuArray<MapData, u64>> {
            let map = self
                .ebpf
                .take_map(name)
                .with_context(|| format!("{name} missing"))?;
            Ok(PerCpuArray::try_from(map)?)
        };
        let (lost, calls) = (take("LOST")?, take("CALLS")?);
        let read_failures = take("READ_FAILURES")?;
        let totals = self.ebpf.take_map("TOTALS").context("TOTALS missing")?;
        Ok(Counters {
            lost,
            calls,
            read_failures,
            totals: PerCpuHashMap::try_from(totals)?,
        })
    }

    /// Removes every probe (after [`Probes::stop`]: they report nothing any more); maps
    /// already taken stay readable for draining.
    ///
    /// Closing a link waits for the kernel's RCU grace periods, about 0.1 s each here: one
    /// after another, 20 links took 2 s. Closed at the same time, on threads of their own,
    /// they wait for the same grace periods.
    pub fn detach(self) {
        let Self { ebpf, links, .. } = self;
        std::thread::scope(|scope| {
            for link in links {
                let closer = std::thread::Builder::new().name("map-trace-detach".into());
                // Where no thread can be made, the closure, and with it the link, is dropped
                // here instead.
                let _ = closer.spawn_scoped(scope, move || drop(link));
            }
        });
        // The programs, with no link left, go at once.
        drop(ebpf);
    }
}

/// Loads the uprobe programs `plan` uses and attaches each of its points in `binary`, in
/// process `pid`: through multi-uprobe links where the kernel has them (unless
/// `settings` says otherwise), else a link per point. The uprobes attached, and whether
/// through multi-uprobe links.
fn attach_uprobes(
    ebpf: &mut Ebpf,
    plan: &Plan,
    binary: &Path,
    pid: u32,
    settings: &Settings,
    links: &mut Vec<Box<dyn Send>>,
) -> anyhow::Result<(usize, bool)> {
    let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
    let release = kernel::release();
    let mut multi = settings
        .multi_links
        .unwrap_or_else(|| uprobe_multi::usable(&release));
    if settings.multi_links == Some(true) && !uprobe_multi::usable(&release) {
        bail!(
            "kernel {release} has no usable multi-uprobe links (Linux 6.10+): use --uprobe-links single, or leave it out"
        );
    }
    let mut attached = 0;
    // The switch is still closed: the order does not matter, nothing is reported until
    // every probe is in. Only the programs this plan uses are loaded (the verifier is most
    // of a run's fixed cost).
    for role in [Role::Op, Role::Gc, Role::Return, Role::Entry] {
        let points: Vec<&ProbePoint> = plan.points.iter().filter(|p| p.role == role).collect();
        if points.is_empty() {
            continue;
        }
        let name = program_name(role);
        attached += points.len();
        if multi {
            let verbose = settings.verifier_log;
            match attach_multi(ebpf, name, &points, binary, pid, verbose)? {
                Some(link) => {
                    links.push(link);
                    continue;
                }
                // Only the first link can find the kernel without them (none made yet).
                None if links.is_empty() && settings.multi_links.is_none() => multi = false,
                None => {
                    bail!("kernel {release} refused a multi-uprobe link: use --uprobe-links single")
                }
            }
        }
        let program: &mut UProbe = program(ebpf, name)?.try_into()?;
        load(name, program.load(), settings.verifier_log)?;
        for point in points {
            let at = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(point.file_offset),
                cookie: Some(point.cookie.encode()),
            };
            let link = program.attach(at, binary, scope).with_context(|| {
                format!(
                    "attaching a uprobe to {} at {:#x}",
                    point.function.symbol, point.addr
                )
            })?;
            links.push(Box::new(program.take_link(link)?));
        }
    }
    Ok((attached, multi))
}

/// Loads and attaches the two madvise programs of `path`.
fn attach_madvise(
    ebpf: &mut Ebpf,
    path: MadvisePath,
    verbose: bool,
    links: &mut Vec<Box<dyn Send>>,
) -> anyhow::Result<()> {
    if path == MadvisePath::Tracepoint {
        ensure_tracefs()?;
    }
    let [begin, end] = path.programs();
    for name in [begin, end] {
        let link: Box<dyn Send> = match program(ebpf, name)? {
            Program::KProbe(p) => {
                load(name, p.load(), verbose)?;
                let link = p
                    .attach("do_madvise", 0)
                    .with_context(|| format!("attaching {name}"))?;
                Box::new(p.take_link(link)?)
            }
            Program::TracePoint(p) => {
                load(name, p.load(), verbose)?;
                let tp = if name == begin {
                    "sys_enter_madvise"
                } else {
                    "sys_exit_madvise"
                };
                let link = p
                    .attach("syscalls", tp)
                    .with_context(|| format!("attaching the {tp} tracepoint"))?;
                Box::new(p.take_link(link)?)
            }
            _ => return Err(anyhow!("{name} has an unexpected program type")),
        };
        links.push(link);
    }
    Ok(())
}

/// Loads program `name` for multi-uprobe links and links it to every point at once; `None`
/// if the kernel has no such links.
fn attach_multi(
    ebpf: &Ebpf,
    name: &'static str,
    points: &[&ProbePoint],
    binary: &Path,
    pid: u32,
    verbose: bool,
) -> anyhow::Result<Option<Box<dyn Send>>> {
    let program = match uprobe_multi::load(EBPF_OBJECT, ebpf, name)? {
        Ok(fd) => fd,
        Err(refused) => {
            if let Some(refused) = refusal(name, &refused.log, verbose) {
                return Err(refused);
            }
            bail!("loading the eBPF program {name}: {}", refused.error);
        }
    };
    let offsets: Vec<u64> = points.iter().map(|p| p.file_offset).collect();
    let cookies: Vec<u64> = points.iter().map(|p| p.cookie.encode()).collect();
    match uprobe_multi::attach(program.as_fd(), binary, &offsets, &cookies, pid) {
        Ok(link) => Ok(Some(Box::new((link, program)))),
        Err(e) if is_missing_feature(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| {
            format!(
                "attaching {} uprobes of {name} to {} in one multi-uprobe link",
                points.len(),
                binary.display()
            )
        }),
    }
}

/// The errors of a kernel that has no multi-uprobe links.
fn is_missing_feature(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
    )
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("eBPF object lacks program {name}"))
}

/// A load result as one readable line: for a program the verifier refused, its reason (the
/// log itself would swamp the error line; with `verbose` it goes to stderr first).
fn load(name: &str, result: Result<(), ProgramError>, verbose: bool) -> anyhow::Result<()> {
    let Err(err) = result else {
        return Ok(());
    };
    if let ProgramError::LoadError { verifier_log, .. } = &err
        && let Some(refused) = refusal(name, &verifier_log.to_string(), verbose)
    {
        return Err(refused);
    }
    let text = err.to_string();
    let reason = text.split(". Verifier output").next().unwrap_or(&text);
    bail!("loading the eBPF program {name}: {reason}")
}

/// A program the verifier refused, with the reason its `log` gives; `None` if it gives none.
/// With `verbose` the whole log goes to stderr.
fn refusal(name: &str, log: &str, verbose: bool) -> Option<anyhow::Error> {
    if verbose && !log.is_empty() {
        eprintln!(
            "the kernel's verifier refused {name}; its log:\n{}",
            log.trim_end()
        );
    }
    let reason = verifier_reason(log)?;
    let see = if verbose {
        "its log is above"
    } else {
        "run with -v for the verifier log"
    };
    Some(anyhow!(
        "the kernel's verifier refused {name}: {reason}; this kernel is {}; {see}",
        kernel::release()
    ))
}

/// The verifier's reason in its log: the last line that is not the trace of the refused
/// path (instructions, source lines, register and stack states, calls and returns) nor the
/// statistics after it.
fn verifier_reason(log: &str) -> Option<&str> {
    const NOT_REASONS: [&str; 12] = [
        ";",
        "from ",
        "caller:",
        "callee:",
        "returning from callee:",
        "to caller at ",
        "processed ",
        "verification time ",
        "stack depth ",
        "mark_precise:",
        "Validating ",
        // A note on the BTF of a function's arguments, printed before each call.
        "reg type unsupported for arg#",
    ];
    log.lines().map(str::trim).rev().find(|line| {
        !line.is_empty()
            && !NOT_REASONS.iter().any(|p| line.starts_with(p))
            && !is_instruction(line)
            && !is_state(line)
    })
}

/// `144: (85) call bpf_probe_read_user#112`, or the state at an instruction `881: frame1: …`.
fn is_instruction(line: &str) -> bool {
    line.split_once(": ")
        .is_some_and(|(at, _)| !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()))
}

/// Registers and stack slots: `R6=scalar(id=1) R7_w=0 fp-8=mmmmmmmm`, in a callee prefixed
/// `frame1: `.
fn is_state(line: &str) -> bool {
    let line = line
        .strip_prefix("frame")
        .and_then(|rest| rest.split_once(": "))
        .map_or(line, |(_, state)| state);
    line.split_whitespace().next().is_some_and(|first| {
        first
            .split_once('=')
            .is_some_and(|(slot, _)| slot.starts_with('R') || slot.starts_with("fp"))
    })
}

impl Counters {
    fn sum(array: &PerCpuArray<MapData, u64>, slot: u32) -> anyhow::Result<u64> {
        Ok(array
            .get(&slot, 0)
            .context("reading a per-CPU counter")?
            .iter()
            .sum())
    }

    /// Events lost so far, summed over CPUs: ring-buffer records that found no room, and
    /// `--summary-only` calls that found the totals map full.
    pub fn lost(&self) -> anyhow::Result<u64> {
        Ok(Self::sum(&self.lost, LOST_EVENTS)? + Self::sum(&self.lost, LOST_TOTALS)?)
    }

    /// `--summary-only`: every (map, function) the kernel counted, its CPUs' values merged.
    pub fn totals(&self) -> anyhow::Result<Vec<(TotalsKey, MapTotals)>> {
        self.totals
            .iter()
            .map(|entry| {
                let (key, per_cpu) = entry.context("reading the kernel's map totals")?;
                Ok((key, merge(per_cpu.iter())))
            })
            .collect()
    }

    /// Timed calls of the function at plan index `function`.
    pub fn calls(&self, function: u16) -> anyhow::Result<CallCount> {
        let slot = 2 * u32::from(function);
        Ok(CallCount {
            entered: Self::sum(&self.calls, slot)?,
            returned: Self::sum(&self.calls, slot + 1)?,
        })
    }

    /// Returns that found no entry: the probes were attached while those calls ran.
    pub fn orphan_returns(&self) -> anyhow::Result<u64> {
        Self::sum(&self.calls, CALLS_ORPHANS)
    }

    /// Failed reads of the target's memory, per kind.
    pub fn read_failures(&self) -> anyhow::Result<ReadFailures> {
        let mut all = ReadFailures::default();
        for (n, kind) in all.iter_mut().zip(ReadFailure::ALL) {
            *n = Self::sum(&self.read_failures, kind as u32)?;
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_program_and_the_verifiers_reason() {
        // Real logs of Debian 12's kernel 6.1 at the level map-trace asks for: an earlier
        // map_op, whose key length bound that verifier lost, and a program calling a helper
        // 6.1 does not have.
        let bounds = include_str!("../testdata/verifier-6.1-map_op-key-bounds.log");
        let reason = "R2 min value is negative, either use unsigned or 'var &= const'";
        assert_eq!(verifier_reason(bounds), Some(reason));
        let helper = include_str!("../testdata/verifier-6.1-unknown-helper.log");
        assert_eq!(verifier_reason(helper), Some("invalid func unknown#210"));
        let line = refusal("map_op", bounds, false).unwrap().to_string();
        let release = kernel::release();
        assert_eq!(
            line,
            format!(
                "the kernel's verifier refused map_op: {reason}; this kernel is {release}; run with -v for the verifier log"
            )
        );
        assert!(
            refusal("gc_event", helper, true)
                .unwrap()
                .to_string()
                .ends_with("its log is above")
        );
        // No reason in the log (the load failed before verifying): the caller's error.
        assert_eq!(verifier_reason(""), None);
        let trace = "0: R1=ctx() R10=fp0\n; x\n0: (b7) r0 = 0\nprocessed 1 insns (limit 1000000)\n";
        assert!(refusal("map_op", trace, false).is_none());
    }

    #[test]
    fn wake_ups_come_per_eighth_of_the_buffer_shared_among_cpus() {
        // 16 MiB: an eighth is 2 MiB, 10,485 records of 200 bytes.
        assert_eq!(wakeup_records(16 << 20, 1), 10_485);
        assert_eq!(wakeup_records(16 << 20, 2), 5_242);
        // Never zero: a tiny buffer on a big machine wakes the reader for every record.
        assert_eq!(wakeup_records(4096, 64), 1);
        assert_eq!(wakeup_records(4096, 0), 2);
    }

    #[test]
    fn madvise_path_follows_the_kernels_kprobe_support() {
        let sysfs = tempfile::tempdir().unwrap();
        let choose = |asked| MadvisePath::choose(sysfs.path(), asked);
        assert_eq!(choose(None).unwrap(), MadvisePath::Tracepoint);
        let asked = Some(MadvisePath::Tracepoint);
        assert_eq!(choose(asked).unwrap(), MadvisePath::Tracepoint);
        let err = choose(Some(MadvisePath::Kprobe)).unwrap_err().to_string();
        assert!(err.contains("has no kprobes (CONFIG_KPROBES"), "{err}");
        let pmu = sysfs.path().join("bus/event_source/devices/kprobe");
        std::fs::create_dir_all(&pmu).unwrap();
        std::fs::write(pmu.join("type"), "6\n").unwrap();
        assert_eq!(choose(None).unwrap(), MadvisePath::Kprobe);
        assert_eq!(choose(asked).unwrap(), MadvisePath::Tracepoint);
    }
}
