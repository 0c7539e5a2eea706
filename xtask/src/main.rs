//! `cargo xtask <setup|build|dist|image|test|test-vm|demo|bench>`: everything from a fresh clone, in one command each.
//!
//! Setup installs what the build and the tests need into a cache folder outside git
//! (`$MAP_TRACE_CACHE`, else `$XDG_CACHE_HOME/map-trace`, else `~/.cache/map-trace`), and is
//! idempotent: on a ready machine it only checks.

mod bench;
mod dist;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use setup::Tools;

#[derive(Parser)]
#[command(about = "map-trace's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the pinned nightly with rust-src, LLVM with the BPF target, bpf-linker and the Go toolchains
    Setup,
    /// Set up, then build the release binary into target/release/map-trace
    Build,
    /// Set up, then build the static binary users install: target/dist/map-trace (musl, stripped),
    /// or target/dist/map-trace-aarch64
    Dist {
        /// The architecture to build for
        #[arg(long, value_enum, default_value = "x86_64")]
        target: dist::DistArch,
    },
    /// Set up, build the static binary and the container image localhost/map-trace with buildah
    Image,
    /// Set up, build, check formatting and lints, and run every test (unit and integration; needs root)
    Test {
        /// Extra arguments for `cargo test` (a test name filter, `--nocapture`, …)
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run the integration tests that need a kernel inside qemu guests of
    /// the kernel matrix (Debian's 5.10, 6.1 and 6.12 on x86-64; 6.1 and 6.12 on arm64; needs
    /// root)
    TestVm {
        /// The guests' architecture: `x86_64` or `arm64`
        #[arg(long, default_value = "x86_64")]
        arch: String,
        /// Only this kernel (repeatable): 5.10 (`x86_64` only), 6.1, 6.12
        #[arg(long = "kernel")]
        kernels: Vec<String>,
    },
    /// Set up, build, start the bundled demo Go program, trace it a few seconds, print the summary
    Demo {
        /// Seconds to trace
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Set up, build, and measure what tracing costs a Go program, mode by mode, side by side; writes docs/performance.md (needs root)
    Bench {
        /// Rounds of every mode; medians over them are reported
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        rounds: u64,
        /// Map operations per run of the benchmark program
        #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1000..=100_000_000))]
        ops: u32,
    },
}

fn main() -> std::process::ExitCode {
    match run_task(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task(cli: Cli) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let tools = setup::install()?;
    match cli.task {
        Task::Setup => Ok(()),
        Task::Build => build(&root, &tools).map(|_| ()),
        Task::Dist { target } => dist::dist(&root, &tools, target).map(|_| ()),
        Task::Image => dist::image(&root, &tools).map(|_| ()),
        Task::Test { args } => test(&root, &tools, &args),
        Task::TestVm { arch, kernels } => test_vm(&root, &tools, vm::arch(&arch)?, &kernels),
        Task::Demo { seconds } => demo(&root, &tools, seconds),
        Task::Bench { rounds, ops } => bench::bench(&root, &tools, rounds, ops),
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has no parent folder")?
        .to_owned())
}

/// Runs `cmd` with the tools' environment, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo(root: &Path, tools: &Tools) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    tools.apply(&mut cmd);
    cmd
}

fn build(root: &Path, tools: &Tools) -> anyhow::Result<PathBuf> {
    run(cargo(root, tools).args(["build", "--release", "--package", "map-trace"]))?;
    Ok(root.join("target/release/map-trace"))
}

fn test(root: &Path, tools: &Tools, args: &[String]) -> anyhow::Result<()> {
    run(cargo(root, tools).args(["fmt", "--all", "--check"]))
        .context("formatting differs: run cargo fmt --all")?;
    // Host crates are the workspace's default members; the eBPF crate only builds for the
    // BPF target, with the nightly.
    run(cargo(root, tools).args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The eBPF programs read each architecture's registers: linted for both.
    for arch in ["x86_64", "aarch64"] {
        let mut ebpf_clippy = Command::new("rustup");
        tools.apply(&mut ebpf_clippy);
        run(ebpf_clippy
            .current_dir(root.join("map-trace-ebpf"))
            .env("AYA_BPF_TARGET_ARCH", arch)
            .args(["run", setup::NIGHTLY, "cargo", "clippy", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"]))?;
    }
    let bin = build(root, tools)?;
    if !is_root() {
        bail!("the integration tests load eBPF programs: run cargo xtask test as root");
    }
    // The image holds the dist binary: both are tested as users get them.
    let image = dist::image(root, tools)?;
    let mut cmd = cargo(root, tools);
    cmd.args(["test", "--release"])
        .env("MAP_TRACE_BIN", &bin)
        .env("MAP_TRACE_DIST", &image.bin)
        .env("MAP_TRACE_IMAGE", &image.tag);
    if !args.is_empty() {
        cmd.arg("--").args(args);
        // A chosen subset runs on the host only.
        return run(&mut cmd);
    }
    run(&mut cmd)?;
    dev_profile(root, tools)?;
    for arch in vm::ARCHES {
        guests(root, tools, arch, &bin, &[])?;
    }
    Ok(())
}

/// Once in the dev profile, where arithmetic overflow panics: the unit tests, and the
/// exact-count tests driving a dev build of map-trace.
fn dev_profile(root: &Path, tools: &Tools) -> anyhow::Result<()> {
    run(cargo(root, tools).args(["build", "--package", "map-trace"]))?;
    run(cargo(root, tools).args(["test", "--lib", "--bins"]))?;
    run(cargo(root, tools)
        .args([
            "test",
            "--package",
            "integration-tests",
            "--test",
            "exact_counts",
        ])
        .env("MAP_TRACE_BIN", root.join("target/debug/map-trace")))
}

fn test_vm(
    root: &Path,
    tools: &Tools,
    arch: &vm::GuestArch,
    kernels: &[String],
) -> anyhow::Result<()> {
    let bin = build(root, tools)?;
    if !is_root() {
        bail!("the guests' tests load eBPF programs: run cargo xtask test-vm as root");
    }
    guests(root, tools, arch, &bin, kernels)
}

/// Runs the guests of `arch` on `kernels` (all when empty). The host's architecture tests
/// the release build `bin` with the host's test binaries; another one its own dist binary
/// (as users get it) with the tests built for it, and the Go programs built for it first.
fn guests(
    root: &Path,
    tools: &Tools,
    arch: &vm::GuestArch,
    bin: &Path,
    kernels: &[String],
) -> anyhow::Result<()> {
    let host_tests = test_binaries(root, tools, None)?;
    let Some(foreign) = &arch.foreign else {
        return vm::run_matrix(root, tools, arch, bin, &host_tests, kernels);
    };
    vm::prebuild_go(root, tools, arch, bin, &host_tests, kernels)?;
    let map_trace = dist::dist(root, tools, foreign.dist)?;
    let tests = test_binaries(root, tools, Some(foreign.dist.triple()))?;
    vm::run_matrix(root, tools, arch, &map_trace, &tests, kernels)
}

/// Builds the integration tests (release, as `cargo test --release` does), for `target`
/// or the host, and lists their executables.
fn test_binaries(
    root: &Path,
    tools: &Tools,
    target: Option<&str>,
) -> anyhow::Result<Vec<vm::TestBinary>> {
    let out = cargo(root, tools)
        .args([
            "test",
            "--release",
            "--package",
            "integration-tests",
            "--no-run",
        ])
        .args(target.iter().flat_map(|t| ["--target", t]))
        .args(["--message-format", "json"])
        .stderr(Stdio::inherit())
        .output()
        .context("building the integration tests")?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let target = &message["target"];
        let is_test = target["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(path)) = (
            is_test,
            target["name"].as_str(),
            message["executable"].as_str(),
        ) {
            found.push(vm::TestBinary {
                name: name.to_owned(),
                path: path.into(),
            });
        }
    }
    Ok(found)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn demo(root: &Path, tools: &Tools, seconds: u64) -> anyhow::Result<()> {
    let bin = build(root, tools)?;
    if !is_root() {
        bail!("map-trace loads eBPF programs: run cargo xtask demo as root");
    }
    let demo_bin = root.join("target/demo/demo");
    tools.go_build(setup::DEMO_GO, &root.join("tests/go/demo"), &demo_bin)?;
    let csv = root.join("target/demo/events.csv");
    let mut program = Command::new(&demo_bin)
        .stdout(Stdio::null())
        .spawn()
        .context("starting the demo program")?;
    // Let it get going, so the trace shows a program already in its steady state.
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "tracing the demo program (pid {}) for {seconds} s (on a terminal: live view, q ends it early); every event goes to {}",
        program.id(),
        csv.display()
    );
    let traced = run(Command::new(&bin)
        .arg("--pid")
        .arg(program.id().to_string())
        .arg("--duration")
        .arg(seconds.to_string())
        .arg("--csv")
        .arg(&csv));
    let _ = program.kill();
    let _ = program.wait();
    traced
}
