//! Checking up front that map-trace may load BPF programs and read other processes.

use anyhow::bail;

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
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

/// What to do when [`missing`] names anything.
pub const FIX: &str = "map-trace needs the capabilities CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE to load probes and read the target (and CAP_DAC_READ_SEARCH when not root, for tracefs): run it as root (sudo map-trace ...)";

/// The capabilities tracing needs that are not effective (`CAP_SYS_ADMIN` stands for
/// `CAP_BPF` and `CAP_PERFMON`, as on kernels before 5.8). A user other than root also
/// needs `CAP_DAC_READ_SEARCH`: tracefs is root's, mode 0700.
#[must_use]
pub fn missing() -> Vec<&'static str> {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1 << cap) != 0;
    let root = nix::unistd::geteuid().is_root();
    [
        ("CAP_BPF", has(CAP_BPF) || has(CAP_SYS_ADMIN)),
        ("CAP_PERFMON", has(CAP_PERFMON) || has(CAP_SYS_ADMIN)),
        ("CAP_SYS_PTRACE", has(CAP_SYS_PTRACE)),
        (
            "CAP_DAC_READ_SEARCH",
            root || has(CAP_DAC_READ_SEARCH) || has(CAP_DAC_OVERRIDE),
        ),
    ]
    .into_iter()
    .filter_map(|(name, held)| (!held).then_some(name))
    .collect()
}

/// Fails, naming what is missing, unless the capabilities tracing needs are effective.
pub fn check() -> anyhow::Result<()> {
    if !missing().is_empty() {
        bail!("{FIX}");
    }
    Ok(())
}
