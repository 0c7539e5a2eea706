//! The targets the tracer knows. Each executable once, by identity (device and inode):
//! its Go runtime, its probe plan and the probe set every process running it shares. Each
//! traced process: which executable it runs, its runtime layout, its labels and the
//! resolver for its addresses. A process that exits leaves nothing here; its executable's
//! probes go with the last of its processes.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use map_trace_common::ProcInfo;

use crate::{
    binary::GoBinary,
    cli::EventSet,
    goruntime::{Layout, Runtime},
    model::Labels,
    output::summary::TimedCalls,
    plan::{self, Plan, Role},
    process::{self, Executable, FileId, container::container_id},
    resolve::Resolver,
    tracer::{Counters, ProbeSet, Tracer},
};

/// An executable that runs Go, with its probes while processes run it.
struct Binary {
    /// Numbers the probe set in the kernel's maps (never reused within a run).
    slot: u32,
    reader: Arc<GoBinary>,
    runtime: Runtime,
    plan: Plan,
    probes: ProbeSet,
    /// Traced processes running it.
    processes: usize,
}

/// A traced process.
pub struct Traced {
    pub labels: Arc<Labels>,
    pub layout: &'static Layout,
    pub resolver: Resolver,
    /// Its executable, and that executable's probe set.
    file: FileId,
    pub slot: u32,
}

/// Why a process is not traced.
#[derive(Clone, Debug)]
pub struct PassedOver(pub String);

impl fmt::Display for PassedOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Most executables remembered as not traceable: a busy host execs many.
const MAX_PASSED_OVER: usize = 65_536;

/// What a run knows of executables and processes.
pub struct Targets {
    events: EventSet,
    show_keys: bool,
    verbose: bool,
    binaries: HashMap<FileId, Binary>,
    /// Executables that cannot be traced, and why (not Go, an unsupported version, …).
    passed_over: HashMap<FileId, PassedOver>,
    processes: HashMap<u32, Traced>,
    next_slot: u32,
    /// Timed calls of probe sets already removed.
    calls: TimedCalls,
    /// Probe sets being removed, each on its thread.
    closing: Vec<std::thread::JoinHandle<()>>,
}

/// A process newly traced, for the `attached` line.
pub struct Attached {
    pub labels: Arc<Labels>,
    /// Its executable's probe set was made for it (not shared with a running process).
    pub new_probes: bool,
}

impl Targets {
    #[must_use]
    pub fn new(events: EventSet, show_keys: bool, verbose: bool) -> Self {
        Self {
            events,
            show_keys,
            verbose,
            binaries: HashMap::new(),
            passed_over: HashMap::new(),
            processes: HashMap::new(),
            next_slot: 1,
            calls: TimedCalls::default(),
            closing: Vec::new(),
        }
    }

    /// Traced processes now.
    #[must_use]
    pub fn live(&self) -> usize {
        self.processes.len()
    }

    #[must_use]
    pub fn get(&self, pid: u32) -> Option<&Traced> {
        self.processes.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Traced> {
        self.processes.get_mut(&pid)
    }

    /// Return addresses newly found in user code, per probe set (see
    /// [`Resolver::take_user_frames`]).
    pub fn take_user_frames(&mut self) -> Vec<(u32, Vec<u64>)> {
        self.processes
            .values_mut()
            .map(|t| (t.slot, t.resolver.take_user_frames()))
            .filter(|(_, frames)| !frames.is_empty())
            .collect()
    }

    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.processes.keys().copied()
    }

    /// Starts tracing `pid`: what it runs is read from `/proc`, planned once per
    /// executable, and probed once per executable. An error is why it cannot be traced
    /// (for `--pid`, the run's error; for others, a line at `-v`).
    pub fn attach(&mut self, tracer: &mut Tracer, pid: u32) -> Result<Attached, anyhow::Error> {
        let exe = process::executable(pid)
            .ok_or_else(|| anyhow::anyhow!("pid {pid} is gone, or runs no executable"))?;
        if let Some(traced) = self.processes.get(&pid) {
            if traced.file == exe.id {
                // Seen twice (at the start and by its exec report): the kernel dropped its
                // entry at the exec, so it goes in again.
                let facts = self.facts(pid, exe.id)?;
                tracer.trace_process(pid, &facts)?;
                return Ok(Attached {
                    labels: traced.labels.clone(),
                    new_probes: false,
                });
            }
            self.detach(tracer, pid);
        }
        if let Some(why) = self.passed_over.get(&exe.id) {
            return Err(anyhow::anyhow!("{why}"));
        }
        let proc_exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let new_probes = !self.binaries.contains_key(&exe.id);
        if new_probes {
            let binary = match self.prepare(&proc_exe, &exe) {
                Ok(binary) => binary,
                Err(e) => {
                    let why = PassedOver(format!("{e:#}"));
                    if self.passed_over.len() >= MAX_PASSED_OVER {
                        self.passed_over.clear();
                    }
                    self.passed_over.insert(exe.id, why);
                    return Err(e);
                }
            };
            let slot = self.next_slot;
            self.next_slot += 1;
            let probes = tracer.attach(&binary.1, &proc_exe)?;
            let (binary, plan, runtime) = binary;
            self.binaries.insert(
                exe.id,
                Binary {
                    slot,
                    reader: Arc::new(binary),
                    runtime,
                    plan,
                    probes,
                    processes: 0,
                },
            );
        }
        let facts = self.facts(pid, exe.id)?;
        let b = self
            .binaries
            .get_mut(&exe.id)
            .ok_or_else(|| anyhow::anyhow!("an executable's plan went missing"))?;
        tracer.trace_process(pid, &facts)?;
        b.processes += 1;
        let labels = Arc::new(Labels {
            pid,
            exe: exe.path.display().to_string(),
            go_version: b.runtime.version.raw.clone(),
            flavour: b.runtime.flavour,
            container: std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .ok()
                .and_then(|text| container_id(&text)),
            probes: b.probes.probes(),
            storage: b.runtime.layout.storage,
        });
        self.processes.insert(
            pid,
            Traced {
                labels: labels.clone(),
                layout: b.runtime.layout,
                resolver: Resolver::new(
                    b.reader.clone(),
                    facts.load_bias,
                    self.show_keys,
                    b.runtime.layout.storage,
                ),
                file: exe.id,
                slot: b.slot,
            },
        );
        Ok(Attached { labels, new_probes })
    }

    /// Reads an executable and plans its probes.
    fn prepare(
        &self,
        proc_exe: &Path,
        exe: &Executable,
    ) -> anyhow::Result<(GoBinary, Plan, Runtime)> {
        let binary = GoBinary::open(proc_exe)?;
        binary.ensure_native()?;
        let runtime = binary.runtime()?;
        let plan = plan::plan(&binary, &runtime, &self.events)?;
        if self.verbose {
            describe_plan(&exe.path, &plan);
        }
        Ok((binary, plan, runtime))
    }

    /// What the kernel's programs need to know of process `pid`, running `file`.
    fn facts(&self, pid: u32, file: FileId) -> anyhow::Result<ProcInfo> {
        let b = self
            .binaries
            .get(&file)
            .ok_or_else(|| anyhow::anyhow!("an executable's plan went missing"))?;
        let load_bias = process::load_bias(pid, &b.reader)?;
        let layout = b.runtime.layout;
        Ok(ProcInfo {
            binary: b.slot,
            pad: 0,
            load_bias,
            goid_offset: layout.goid_offset,
            map_type_key_offset: layout.map_type_key_offset,
            type_size_offset: layout.type_size_offset,
            gc_cycles_addr: b
                .plan
                .gc_cycles_addr
                .map_or(0, |a| a.wrapping_add(load_bias)),
            variant_offset: layout.header.variant().map_or(0, |(offset, _)| offset),
            variant_mask: layout.header.variant().map_or(0, |(_, mask)| mask),
        })
    }

    /// Stops tracing `pid` (it exited, or runs another program): its kernel entry goes,
    /// and its executable's probes with the last of its processes.
    pub fn detach(&mut self, tracer: &mut Tracer, pid: u32) -> Option<Traced> {
        let gone = self.processes.remove(&pid)?;
        let _ = tracer.untrace_process(pid);
        if let Some(b) = self.binaries.get_mut(&gone.file) {
            b.processes = b.processes.saturating_sub(1);
        }
        Some(gone)
    }

    /// Removes the probe sets no traced process runs any more, after counting their timed
    /// calls; `counters` then forgets them too.
    pub fn release_idle(&mut self, tracer: &mut Tracer, counters: &mut Counters) {
        let idle: Vec<FileId> = self
            .binaries
            .iter()
            .filter(|(_, b)| b.processes == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some(b) = self.binaries.remove(&id) {
                let calls = timed_calls(&b.plan, b.slot, counters, self.verbose);
                self.calls.add(&calls);
                let _ = counters.forget_calls(b.slot);
                let _ = tracer.forget_user_frames(b.slot);
                self.closing.extend(b.probes.detach());
            }
        }
    }

    /// The run's timed calls: those of probe sets removed, and of those still in place.
    #[must_use]
    pub fn timed_calls(&self, counters: &Counters) -> TimedCalls {
        let mut all = self.calls;
        for b in self.binaries.values() {
            all.add(&timed_calls(&b.plan, b.slot, counters, self.verbose));
        }
        all
    }

    /// Uprobes in place now.
    #[must_use]
    pub fn probes(&self) -> usize {
        self.binaries.values().map(|b| b.probes.probes()).sum()
    }

    /// Every probe set, to be removed at the end, and the threads still removing others.
    #[must_use]
    pub fn into_probe_sets(self) -> (Vec<ProbeSet>, Vec<std::thread::JoinHandle<()>>) {
        let sets = self.binaries.into_values().map(|b| b.probes).collect();
        (sets, self.closing)
    }
}

/// Timed calls over a plan's timed functions, listed per function with `-v`.
fn timed_calls(plan: &Plan, slot: u32, counters: &Counters, verbose: bool) -> TimedCalls {
    let mut total = TimedCalls {
        orphans: counters.orphan_returns(slot).unwrap_or(0),
        ..TimedCalls::default()
    };
    for point in plan.points.iter().filter(|p| p.role == Role::Entry) {
        let c = counters
            .calls(slot, point.cookie.function)
            .unwrap_or_default();
        if verbose {
            crate::note!(
                "timed {}: {} entered, {} returned",
                point.function.symbol,
                c.entered,
                c.returned
            );
        }
        total.entered += c.entered;
        total.returned += c.returned;
    }
    total
}

fn describe_plan(exe: &Path, plan: &Plan) {
    crate::note!("probes of {}:", exe.display());
    for p in &plan.points {
        crate::note!(
            "probe {} {:?} at {:#x} (file offset {:#x})",
            p.function.symbol,
            p.role,
            p.addr,
            p.file_offset
        );
    }
    for symbol in &plan.missing {
        crate::note!("not in binary (dropped by the linker): {symbol}");
    }
}
