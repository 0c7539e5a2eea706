//! The tracer, once per run for any number of processes: map-trace's eBPF object, its ring
//! buffers and stop switch, the process tracepoints, and the uprobe programs, which each
//! executable's probe set ([`ProbeSet`]) links to its own functions. A process is traced
//! once its facts are in the kernel's `PROCS` map ([`Tracer::trace_process`]).

use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader, VerifierLogLevel,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        Program, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use map_trace_common::{
    CALLS_ORPHANS, CallsKey, Config, EVENT_SIZE, FILTER_KEY, FILTER_MAP, FrameKey, LOST_EVENTS,
    LOST_EXECS, LOST_FOLLOWS, LOST_TOTALS, MapTotals, ProcInfo, ReadFailure, ReadFailures,
    TotalsKey,
};

use crate::{
    kernel,
    plan::{Plan, ProbePoint, Role},
    switch::Switch,
    uprobe_multi,
    verifier::{load, refusal},
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

/// What the eBPF programs let through and send.
#[derive(Clone, Copy, Debug, Default)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
pub struct Settings {
    /// Keyed events must have this key hash.
    pub key_hash: Option<u64>,
    /// Map events must be of this map header.
    pub map: Option<u64>,
    /// Keyed events carry the key's bytes.
    pub show_keys: bool,
    /// Map operations are counted in the kernel, not sent ([`Counters::totals`]).
    pub summary_only: bool,
    /// Bytes of the ring buffer: a power of two, whole pages.
    pub ring_buffer_size: u32,
    /// A program the verifier refuses has its whole log written to stderr (`-v`).
    pub verifier_log: bool,
    /// Multi-uprobe links (`Some(true)`), a link per probe (`Some(false)`), or the best
    /// this kernel has.
    pub multi_links: Option<bool>,
    /// Every exec on the host is reported (`--all`).
    pub watch_all: bool,
    /// Followed processes are stopped at their exec until attached (`-- CMD`).
    pub hold: bool,
    /// The children of followed processes are followed too (not with `--no-follow`).
    pub follow: bool,
}

/// The probes of one executable: every process running it shares them. Dropping the set
/// removes them; [`ProbeSet::detach`] does it without waiting.
pub struct ProbeSet {
    links: Vec<Box<dyn Send>>,
    probes: usize,
}

impl ProbeSet {
    /// Uprobes in the set.
    #[must_use]
    pub fn probes(&self) -> usize {
        self.probes
    }

    /// Removes the probes on a thread of their own: closing a link waits for the kernel's
    /// RCU grace periods (about 0.1 s each here), which the event loop must not. The
    /// thread is to be joined before map-trace exits: in a 6.1 guest, exiting while such
    /// a thread still closed links locked both CPUs up in the kernel.
    #[must_use]
    pub fn detach(self) -> Option<std::thread::JoinHandle<()>> {
        let closer = std::thread::Builder::new().name("map-trace-detach".into());
        // Where no thread can be made, the closure, and with it the links, is dropped here.
        closer.spawn(move || close_all(self.links)).ok()
    }
}

/// Closes `links` at the same time, on threads of their own: they wait for the same grace
/// periods (one after another, 20 links took 2 s).
fn close_all(links: Vec<Box<dyn Send>>) {
    std::thread::scope(|scope| {
        for link in links {
            let closer = std::thread::Builder::new().name("map-trace-detach".into());
            let _ = closer.spawn_scoped(scope, move || drop(link));
        }
    });
}

/// The loaded object, its maps user space writes, and the links that are not per binary.
pub struct Tracer {
    ebpf: Ebpf,
    settings: Settings,
    /// Through multi-uprobe links, while the kernel takes them.
    multi: bool,
    /// Programs loaded for multi-uprobe links, by name (loaded once, linked per binary).
    multi_programs: HashMap<&'static str, OwnedFd>,
    /// Every map's descriptor, for loading those programs against the same maps.
    map_fds: uprobe_multi::MapFds,
    /// Programs loaded for links per probe.
    single_loaded: Vec<&'static str>,
    /// The process tracepoints and madvise programs.
    links: Vec<Box<dyn Send>>,
    switch: Switch,
    procs: BpfHashMap<MapData, u32, ProcInfo>,
    follow: BpfHashMap<MapData, u32, u8>,
    user_frames: BpfHashMap<MapData, FrameKey, u8>,
    madvise: Option<MadvisePath>,
}

impl Tracer {
    /// Loads the object with `settings` and attaches the process tracepoints and, with
    /// `madvise`, that path's programs. Nothing reports until [`Tracer::start`].
    pub fn load(settings: &Settings, madvise: Option<MadvisePath>) -> anyhow::Result<Self> {
        ensure_tracefs("the process tracepoints")?;
        let filters = if settings.key_hash.is_some() {
            FILTER_KEY
        } else {
            0
        } | if settings.map.is_some() {
            FILTER_MAP
        } else {
            0
        };
        let config = Config {
            show_keys: u32::from(settings.show_keys),
            watch_all: u32::from(settings.watch_all),
            hold: u32::from(settings.hold),
            fork_child_pid_offset: kernel::tracepoint_field_offset(
                "sched",
                "sched_process_fork",
                "child_pid",
            )?,
            follow_forks: u32::from(settings.follow),
            pad: 0,
            filters,
            key_hash: settings.key_hash.unwrap_or(0),
            map: settings.map.unwrap_or(0),
            summary_only: u64::from(settings.summary_only),
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
        let map_fds = uprobe_multi::MapFds::of(&ebpf)?;
        let switch = Switch::new(take(&mut ebpf, "SWITCH")?)?;
        let procs = BpfHashMap::try_from(take(&mut ebpf, "PROCS")?)?;
        let follow = BpfHashMap::try_from(take(&mut ebpf, "FOLLOW")?)?;
        let user_frames = BpfHashMap::try_from(take(&mut ebpf, "USER_FRAMES")?)?;
        let release = kernel::release();
        if settings.multi_links == Some(true) && !uprobe_multi::usable(&release) {
            bail!(
                "kernel {release} has no usable multi-uprobe links (Linux 6.10+): use --uprobe-links single, or leave it out"
            );
        }
        let mut tracer = Self {
            ebpf,
            settings: *settings,
            multi: settings
                .multi_links
                .unwrap_or_else(|| uprobe_multi::usable(&release)),
            multi_programs: HashMap::new(),
            map_fds,
            single_loaded: Vec::new(),
            links: Vec::new(),
            switch,
            procs,
            follow,
            user_frames,
            madvise,
        };
        tracer.attach_process_tracepoints()?;
        if let Some(path) = madvise {
            tracer.attach_madvise(path)?;
        }
        Ok(tracer)
    }

    /// The fork, exec and exit tracepoints that follow processes.
    fn attach_process_tracepoints(&mut self) -> anyhow::Result<()> {
        let verbose = self.settings.verifier_log;
        for (name, tracepoint) in [
            ("process_fork", "sched_process_fork"),
            ("process_exec", "sched_process_exec"),
            ("process_exit", "sched_process_exit"),
        ] {
            let Program::TracePoint(p) = program(&mut self.ebpf, name)? else {
                return Err(anyhow!("{name} has an unexpected program type"));
            };
            load(name, p.load(), verbose)?;
            let link = p
                .attach("sched", tracepoint)
                .with_context(|| format!("attaching the {tracepoint} tracepoint"))?;
            self.links.push(Box::new(p.take_link(link)?));
        }
        Ok(())
    }

    /// How madvise(2) is seen, if it is.
    #[must_use]
    pub fn madvise(&self) -> Option<MadvisePath> {
        self.madvise
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

    /// `CLOCK_MONOTONIC`, in ns, when the programs were turned off (by [`Tracer::stop`] or
    /// a stop signal): every event is stamped before it.
    #[must_use]
    pub fn stopped_at(&self) -> Option<u64> {
        self.switch.stopped_at()
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

    /// The event ring buffer (once).
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(take(&mut self.ebpf, "EVENTS")?)?)
    }

    /// The ring buffer of execs (once).
    pub fn take_execs(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(take(&mut self.ebpf, "PROCESSES")?)?)
    }

    /// The kernel-side counters (once).
    pub fn take_counters(&mut self) -> anyhow::Result<Counters> {
        let lost = PerCpuArray::try_from(take(&mut self.ebpf, "LOST")?)?;
        let read_failures = PerCpuArray::try_from(take(&mut self.ebpf, "READ_FAILURES")?)?;
        let calls = PerCpuHashMap::try_from(take(&mut self.ebpf, "CALLS")?)?;
        let totals = PerCpuHashMap::try_from(take(&mut self.ebpf, "TOTALS")?)?;
        Ok(Counters {
            lost,
            calls,
            read_failures,
            totals,
        })
    }

    /// Attaches every point of `plan` in `exe` (a path the kernel resolves to the
    /// executable, such as `/proc/PID/exe`): in every process running it, counted only in
    /// those [`Tracer::trace_process`] names.
    pub fn attach(&mut self, plan: &Plan, exe: &Path) -> anyhow::Result<ProbeSet> {
        let mut set = ProbeSet {
            links: Vec::new(),
            probes: 0,
        };
        // The order does not matter: a hit counts only once the process is in PROCS, and
        // returns without an entry are counted as such. Only the programs this plan uses
        // are loaded (the verifier is most of a run's fixed cost).
        for role in [Role::Op, Role::Gc, Role::Return, Role::Entry] {
            let points: Vec<&ProbePoint> = plan.points.iter().filter(|p| p.role == role).collect();
            if points.is_empty() {
                continue;
            }
            let cookies: Vec<u64> = points.iter().map(|p| p.cookie.encode()).collect();
            let name = program_name(role);
            set.probes += points.len();
            if self.multi {
                match self.attach_multi(name, &points, &cookies, exe)? {
                    Some(link) => {
                        set.links.push(link);
                        continue;
                    }
                    // Only the first link can find the kernel without them (none made yet).
                    None if self.multi_programs.len() <= 1
                        && set.links.is_empty()
                        && self.settings.multi_links.is_none() =>
                    {
                        self.multi = false;
                    }
                    None => bail!(
                        "kernel {} refused a multi-uprobe link: use --uprobe-links single",
                        kernel::release()
                    ),
                }
            }
            self.attach_single(name, &points, &cookies, exe, &mut set)?;
        }
        Ok(set)
    }

    fn attach_single(
        &mut self,
        name: &'static str,
        points: &[&ProbePoint],
        cookies: &[u64],
        exe: &Path,
        set: &mut ProbeSet,
    ) -> anyhow::Result<()> {
        self.load_single(name)?;
        let program: &mut UProbe = program(&mut self.ebpf, name)?.try_into()?;
        for (point, &cookie) in points.iter().zip(cookies) {
            let at = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(point.file_offset),
                cookie: Some(cookie),
            };
            let link = program
                .attach(at, exe, UProbeScope::AllProcesses)
                .with_context(|| {
                    format!(
                        "attaching a uprobe to {} at {:#x}",
                        point.function.symbol, point.addr
                    )
                })?;
            set.links.push(Box::new(program.take_link(link)?));
        }
        Ok(())
    }

    /// Links program `name` (loaded for multi-uprobe links once) to every point at once;
    /// `None` if the kernel has no such links.
    fn attach_multi(
        &mut self,
        name: &'static str,
        points: &[&ProbePoint],
        cookies: &[u64],
        exe: &Path,
    ) -> anyhow::Result<Option<Box<dyn Send>>> {
        self.load_multi(name)?;
        let program = self
            .multi_programs
            .get(name)
            .context("a loaded program went missing")?;
        let offsets: Vec<u64> = points.iter().map(|p| p.file_offset).collect();
        match uprobe_multi::attach(program.as_fd(), exe, &offsets, cookies) {
            Ok(link) => Ok(Some(Box::new(link))),
            Err(e) if is_missing_feature(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "attaching {} uprobes of {name} to {} in one multi-uprobe link",
                    points.len(),
                    exe.display()
                )
            }),
        }
    }

    /// Loads uprobe program `name` for a link per uprobe, once.
    fn load_single(&mut self, name: &'static str) -> anyhow::Result<()> {
        if !self.single_loaded.contains(&name) {
            let program: &mut UProbe = program(&mut self.ebpf, name)?.try_into()?;
            load(name, program.load(), self.settings.verifier_log)?;
            self.single_loaded.push(name);
        }
        Ok(())
    }

    /// Loads uprobe program `name` for multi-uprobe links, once.
    fn load_multi(&mut self, name: &'static str) -> anyhow::Result<()> {
        if !self.multi_programs.contains_key(name) {
            let fd = match uprobe_multi::load(EBPF_OBJECT, &self.map_fds, name)? {
                Ok(fd) => fd,
                Err(refused) => {
                    if let Some(refused) = refusal(name, &refused.log, self.settings.verifier_log) {
                        return Err(refused);
                    }
                    bail!("loading the eBPF program {name}: {}", refused.error);
                }
            };
            self.multi_programs.insert(name, fd);
        }
        Ok(())
    }

    /// Loads every uprobe program as a trace would link it, attaching none, and returns
    /// how many programs have passed the verifier in all (`map-trace check`).
    pub fn load_all(&mut self) -> anyhow::Result<usize> {
        for role in [Role::Op, Role::Gc, Role::Return, Role::Entry] {
            let name = program_name(role);
            if self.multi {
                self.load_multi(name)?;
            } else {
                self.load_single(name)?;
            }
        }
        // The process tracepoints and the madvise programs, one link each.
        Ok(self.links.len() + self.single_loaded.len() + self.multi_programs.len())
    }

    /// Loads and attaches the two madvise programs of `path`.
    fn attach_madvise(&mut self, path: MadvisePath) -> anyhow::Result<()> {
        let verbose = self.settings.verifier_log;
        let [begin, end] = path.programs();
        for name in [begin, end] {
            let link: Box<dyn Send> = match program(&mut self.ebpf, name)? {
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
            self.links.push(link);
        }
        Ok(())
    }

    /// Starts counting process `tgid`'s hits, with its facts.
    pub fn trace_process(&mut self, tgid: u32, facts: &ProcInfo) -> anyhow::Result<()> {
        self.procs
            .insert(tgid, facts, 0)
            .with_context(|| format!("adding pid {tgid} to the kernel's traced processes"))
    }

    /// Stops counting process `tgid`'s hits (already done by the kernel if it exited).
    pub fn untrace_process(&mut self, tgid: u32) -> anyhow::Result<()> {
        forget(self.procs.remove(&tgid), "a traced process")
    }

    /// Follows `pid`: its children are followed, its execs reported.
    pub fn follow(&mut self, pid: u32) -> anyhow::Result<()> {
        self.follow
            .insert(pid, 1, 0)
            .with_context(|| format!("following pid {pid}"))
    }

    /// Forgets `pid` as followed (already done by the kernel if it exited).
    pub fn unfollow(&mut self, pid: u32) -> anyhow::Result<()> {
        forget(self.follow.remove(&pid), "a followed process")
    }

    /// Adds return addresses (link-time) of probe set `binary` known as user code. Once
    /// the set is full the rest are left out: walks past them go on to the end, which
    /// costs time, not events.
    pub fn add_user_frames(&mut self, binary: u32, pcs: &[u64]) -> anyhow::Result<()> {
        for &pc in pcs {
            let key = FrameKey { pc, binary, pad: 0 };
            match self.user_frames.insert(key, 1, 0) {
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

    /// Removes every user-code return address of probe set `binary`.
    pub fn forget_user_frames(&mut self, binary: u32) -> anyhow::Result<()> {
        let keys = picked(self.user_frames.keys(), |k: &FrameKey| k.binary == binary);
        remove_all(
            &keys,
            |k| self.user_frames.remove(k),
            "a user-code return address",
        )
    }

    /// Removes the probes of every set in `sets` and then the programs, at the same time,
    /// once the sets already being removed (`closing`) are gone.
    pub fn detach(self, sets: Vec<ProbeSet>, closing: Vec<std::thread::JoinHandle<()>>) {
        for closer in closing {
            let _ = closer.join();
        }
        let Self {
            ebpf,
            links,
            multi_programs,
            ..
        } = self;
        let all = sets
            .into_iter()
            .flat_map(|s| s.links)
            .chain(links)
            .collect();
        close_all(all);
        // The programs, with no link left, go at once.
        drop(multi_programs);
        drop(ebpf);
    }
}

/// A removal that found nothing to remove is fine: the kernel's programs remove entries
/// of processes that exit.
fn forget(result: Result<(), MapError>, what: &str) -> anyhow::Result<()> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.with_context(|| format!("removing {what} from the kernel's maps")),
    }
}

/// The keys of a map that `pick` picks: those of a process or probe set that is gone.
fn picked<K>(keys: impl Iterator<Item = Result<K, MapError>>, pick: impl Fn(&K) -> bool) -> Vec<K> {
    keys.filter_map(Result::ok).filter(|k| pick(k)).collect()
}

/// Removes every key of `keys` with `remove` (see [`forget`]).
fn remove_all<K>(
    keys: &[K],
    mut remove: impl FnMut(&K) -> Result<(), MapError>,
    what: &str,
) -> anyhow::Result<()> {
    keys.iter().try_for_each(|k| forget(remove(k), what))
}

fn take(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("the eBPF object lacks map {name}"))
}

/// Tracepoints are found through tracefs; mount it where the kernel expects it if no one has.
fn ensure_tracefs(needed_by: &str) -> anyhow::Result<()> {
    const TRACEFS: &str = "/sys/kernel/tracing";
    if kernel::tracefs().is_some() {
        return Ok(());
    }
    nix::mount::mount(Some("nodev"), TRACEFS, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>)
        .with_context(|| {
            format!("tracefs is not mounted and mounting it at {TRACEFS} failed ({needed_by} need it): mount it")
        })
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

/// Timed calls of one function, as the eBPF programs counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCount {
    pub entered: u64,
    pub returned: u64,
}

/// The kernel-side counters that outlive the probes.
pub struct Counters {
    lost: PerCpuArray<MapData, u64>,
    calls: PerCpuHashMap<MapData, CallsKey, u64>,
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

    /// Processes that may have gone unseen: execs the process ring buffer had no room
    /// for, and forks of followed processes that found the follow map full.
    pub fn lost_processes(&self) -> anyhow::Result<u64> {
        Ok(Self::sum(&self.lost, LOST_EXECS)? + Self::sum(&self.lost, LOST_FOLLOWS)?)
    }

    /// `--summary-only`: every (process, map, function) the kernel counted, its CPUs'
    /// values merged.
    pub fn totals(&self) -> anyhow::Result<Vec<(TotalsKey, MapTotals)>> {
        self.totals
            .iter()
            .map(|entry| {
                let (key, per_cpu) = entry.context("reading the kernel's map totals")?;
                Ok((key, merge(per_cpu.iter())))
            })
            .collect()
    }

    /// `--summary-only`: removes the totals of process `tgid` (read before it exited).
    pub fn forget_totals(&mut self, tgid: u32) -> anyhow::Result<()> {
        let keys = picked(self.totals.keys(), |k: &TotalsKey| k.tgid == tgid);
        remove_all(&keys, |k| self.totals.remove(k), "a process's map totals")
    }

    fn calls_slot(&self, binary: u32, slot: u32) -> anyhow::Result<u64> {
        match self.calls.get(&CallsKey { binary, slot }, 0) {
            Ok(per_cpu) => Ok(per_cpu.iter().sum()),
            Err(MapError::KeyNotFound) => Ok(0),
            Err(e) => Err(e).context("reading the timed-call counters"),
        }
    }

    /// Timed calls of the function at plan index `function` in probe set `binary`.
    pub fn calls(&self, binary: u32, function: u16) -> anyhow::Result<CallCount> {
        let slot = 2 * u32::from(function);
        Ok(CallCount {
            entered: self.calls_slot(binary, slot)?,
            returned: self.calls_slot(binary, slot + 1)?,
        })
    }

    /// Returns in probe set `binary` that found no entry: the probes were attached while
    /// those calls ran.
    pub fn orphan_returns(&self, binary: u32) -> anyhow::Result<u64> {
        self.calls_slot(binary, CALLS_ORPHANS)
    }

    /// Removes the timed-call counters of probe set `binary` (read before).
    pub fn forget_calls(&mut self, binary: u32) -> anyhow::Result<()> {
        let keys = picked(self.calls.keys(), |k: &CallsKey| k.binary == binary);
        remove_all(&keys, |k| self.calls.remove(k), "timed-call counters")
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
