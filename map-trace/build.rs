//! Compiles map-trace-ebpf for bpfel-unknown-none with the pinned nightly (aya-build runs
//! `cargo +<toolchain> build -Z build-std=core` and bpf-linker) and leaves the object in
//! `OUT_DIR`, where `src/probes.rs` embeds it. Also names the git revision for `--version`.
use std::process::Command;

use anyhow::Context as _;

/// The nightly the eBPF side is built with; `cargo xtask setup` installs the same one.
const EBPF_TOOLCHAIN: &str = "nightly-2026-10-30";

fn main() -> anyhow::Result<()> {
    revision();
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
    // aya-build relays every line of its nested cargo as a `cargo:warning`, a page of
    // "Compiling …" per clean build. Quiet, that cargo prints only diagnostics, so a real
    // warning or error in the eBPF crate still shows.
    // SAFETY: the build script is single-threaded here; nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "map-trace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}

/// Sets `MAP_TRACE_REVISION` to the commit being built ("unknown" outside a git checkout),
/// and reruns when HEAD moves.
fn revision() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MAP_TRACE_REVISION={revision}");
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for path in ["HEAD", "packed-refs"]
        .into_iter()
        .map(str::to_owned)
        .chain(branch)
    {
        // A watched file that does not exist would rerun the script on every build.
        let file = git(&["rev-parse", "--path-format=absolute", "--git-path", &path]);
        if let Some(file) = file.filter(|f| std::path::Path::new(f).exists()) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
}
