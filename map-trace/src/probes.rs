//! Loading map-trace's eBPF object and attaching the plan's uprobes to one process.

use std::{num::NonZeroU32, path::Path};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use map_trace_common::{CALLS_ORPHANS, Config};

use crate::{
    goruntime::Runtime,
    plan::{Plan, Role},
};

/// The eBPF object built by `build.rs` from map-trace-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/map-trace"));

fn program_name(role: Role) -> &'static str {
    match role {
        Role::Op => "map_op",
        Role::Entry => "call_entry",
        Role::Return => "call_return",
    }
}

/// Attached probes and the maps user space reads.
pub struct Probes {
    ebpf: Ebpf,
    attached: usize,
}

/// The kernel-side counters that outlive the probes.
pub struct Counters {
    lost: PerCpuArray<MapData, u64>,
    calls: PerCpuArray<MapData, u64>,
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
    pub fn attach(plan: &Plan, runtime: &Runtime, binary: &Path, pid: u32) -> anyhow::Result<Self> {
        let layout = runtime.layout;
        let config = Config {
            tgid: pid,
            pad: 0,
            goid_offset: layout.goid_offset,
            map_type_key_offset: layout.map_type_key_offset,
            type_size_offset: layout.type_size_offset,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .load(EBPF_OBJECT)
            .context("loading the eBPF programs (does the kernel support BPF ring buffers?)")?;
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
        // Returns before entries: a call that begins while attaching is either seen whole
        // or its return is counted as an orphan, never entered without its exits.
        for role in [Role::Op, Role::Return, Role::Entry] {
            let name = program_name(role);
            let program: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("eBPF object lacks program {name}"))?
                .try_into()?;
            program
                .load()
                .with_context(|| format!("loading the uprobe program {name}"))?;
            for point in plan.points.iter().filter(|p| p.role == role) {
                let at = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(point.file_offset),
                    cookie: Some(point.cookie.encode()),
                };
                program.attach(at, binary, scope).with_context(|| {
                    format!(
                        "attaching a uprobe to {} at {:#x}",
                        point.function.symbol, point.addr
                    )
                })?;
            }
        }
        Ok(Self {
            ebpf,
            attached: plan.points.len(),
        })
    }

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

    /// The lost-event and timed-call counters (once).
    pub fn take_counters(&mut self) -> anyhow::Result<Counters> {
        let mut take = |name: &str| -> anyhow::Result<PerCpuArray<MapData, u64>> {
            let map = self
                .ebpf
                .take_map(name)
                .with_context(|| format!("{name} missing"))?;
            Ok(PerCpuArray::try_from(map)?)
        };
        Ok(Counters {
            lost: take("LOST")?,
            calls: take("CALLS")?,
        })
    }

    /// Removes every probe, entries first and returns last so calls in flight can still
    /// finish; maps already taken stay readable for draining.
    pub fn detach(mut self) -> anyhow::Result<()> {
        for role in [Role::Entry, Role::Op, Role::Return] {
            let name = program_name(role);
            if let Some(program) = self.ebpf.program_mut(name) {
                let program: &mut UProbe = program.try_into()?;
                program
                    .unload()
                    .with_context(|| format!("removing the {name} probes"))?;
            }
        }
        Ok(())
    }
}

impl Counters {
    fn sum(array: &PerCpuArray<MapData, u64>, slot: u32) -> anyhow::Result<u64> {
        Ok(array
            .get(&slot, 0)
            .context("reading a per-CPU counter")?
            .iter()
            .sum())
    }

    /// Events lost so far, summed over CPUs.
    pub fn lost(&self) -> anyhow::Result<u64> {
        Self::sum(&self.lost, 0)
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
}
