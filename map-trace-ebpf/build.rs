//! Rebuild the eBPF object when bpf-linker changes, since it is not a cargo dependency; and
//! say which architecture's registers the probes read (`bpf_target_arch`: set by
//! map-trace's build script for the target it builds, else the host's, as for lints).
fn main() -> aya_build::Result<()> {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    aya_build::emit_bpf_target_arch_cfg()
}
