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
use map_trace_common::Config;

use crate::{goruntime::Runtime, plan::Plan};

/// The eBPF object built by `build.rs` from map-trace-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/map-trace"));

const MAP_OP_PROGRAM: &str = "map_op";

/// Attached probes and the maps user space reads.
pub struct Probes {
    ebpf: Ebpf,
    attached: usize,
}

impl Probes {
    /// Loads the programs configured for `runtime` and process `pid`, and attaches every
    /// point of `plan` in `binary` (a path the kernel resolves to the target's executable).
    pub fn attach(plan: &Plan, runtime: &Runtime, binary: &Path, pid: u32) -> anyhow::Result<Self> {
        let layout = runtime.layout;
        let config = Config {
            tgid: pid,
            pad: 0,
            map_count_offset: layout.map_count_offset,
            map_type_key_offset: layout.map_type_key_offset,
            type_size_offset: layout.type_size_offset,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .load(EBPF_OBJECT)
            .context("loading the eBPF programs (does the kernel support BPF ring buffers?)")?;
        let program: &mut UProbe = ebpf
            .program_mut(MAP_OP_PROGRAM)
            .ok_or_else(|| anyhow!("eBPF object lacks program {MAP_OP_PROGRAM}"))?
            .try_into()?;
        program
            .load()
            .context("loading the uprobe program into the kernel")?;
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
        for point in &plan.points {
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

    /// The per-CPU counter of events the ring buffer had no room for (once).
    pub fn take_lost(&mut self) -> anyhow::Result<PerCpuArray<MapData, u64>> {
        let map = self.ebpf.take_map("LOST").context("LOST counter missing")?;
        Ok(PerCpuArray::try_from(map)?)
    }

    /// Removes every probe; maps already taken stay readable for draining.
    pub fn detach(self) {
        drop(self.ebpf);
    }
}

/// Events lost so far, summed over CPUs.
pub fn lost_events(lost: &PerCpuArray<MapData, u64>) -> anyhow::Result<u64> {
    Ok(lost
        .get(&0, 0)
        .context("reading the lost-event counter")?
        .iter()
        .sum())
}
