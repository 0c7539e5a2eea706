//! Checking up front that map-trace may load BPF programs and read other processes.

use anyhow::bail;

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask of this process.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Fails, naming what is missing, unless the capabilities tracing needs are effective.
pub fn check() -> anyhow::Result<()> {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1 << cap) != 0;
    let bpf = has(CAP_BPF) || has(CAP_SYS_ADMIN);
    let perfmon = has(CAP_PERFMON) || has(CAP_SYS_ADMIN);
    if !(bpf && perfmon && has(CAP_SYS_PTRACE)) {
        bail!(
            "map-trace needs the capabilities CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE to load probes and read the target: run it as root (sudo map-trace ...)"
        );
    }
    Ok(())
}
