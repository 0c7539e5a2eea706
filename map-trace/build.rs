//! Compiles map-trace-ebpf for bpfel-unknown-none with the pinned nightly (aya-build runs
//! `cargo +<toolchain> build -Z build-std=core` and bpf-linker) and leaves the object in
//! `OUT_DIR`, where `src/probes.rs` embeds it.
use anyhow::Context as _;

/// The nightly the eBPF side is built with; `cargo xtask setup` installs the same one.
const EBPF_TOOLCHAIN: &str = "nightly-2026-10-30";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=MAP_TRACE_EBPF_TOOLCHAIN");
    // aya-build watches the eBPF crate; the shared records live here.
    println!("cargo:rerun-if-changed=../map-trace-common/src");
    let toolchain =
        std::env::var("MAP_TRACE_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.to_owned());
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .context("workspace root")?
        .join("map-trace-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "map-trace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
