//! The kernel matrix: integration tests that need a kernel, run inside qemu guests booted
//! with the kernels users run.
//!
//! Each guest boots a Debian kernel (unpacked from its package, never installed) under TCG
//! (KVM does not work on these machines) from a small busybox initramfs, mounts the host's
//! root file system read-write over virtiofs, and runs the chosen tests from there in a
//! chroot: the same test binaries, Go toolchains and Go programs as on the host, on another
//! kernel. An arm64 guest cannot run the host's programs: its initramfs carries an arm64
//! userland, and it runs test binaries, map-trace and Go programs built for arm64 on the
//! host, from the host's folders bind-mounted at their own paths. Results come back through the shared file system (a status file per kernel)
//! and the serial console, which is shown as it comes; every guest runs under a time limit.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    dist::DistArch,
    setup::{Archive, Tools},
};

/// What a guest runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Suite {
    /// The subset that covers every probe kind; see [`FULL`].
    Full,
    /// Only the kernel-feature checks: the kernel lacks what map-trace needs, and the test
    /// asserts the clear error.
    Refused,
    /// The subset an arm64 guest runs; see [`ARM64_TESTS`].
    Arm64,
}

/// An architecture the guests emulate.
#[derive(Debug)]
pub struct GuestArch {
    /// What `--arch` takes.
    pub name: &'static str,
    /// Set for an architecture other than the host's (whose root the guest chroots into).
    pub foreign: Option<Foreign>,
    qemu: &'static str,
    /// qemu's machine and CPU.
    machine: &'static [&'static str],
    console: &'static str,
    /// qemu's virtual CPUs.
    smp: &'static str,
    /// What the tests' time bounds are multiplied by (`MAP_TRACE_TIME_SCALE`): Go runs
    /// about that much slower there.
    time_scale: u32,
}

/// A guest of another architecture boots its own userland and runs that architecture's
/// dist binary, test binaries and Go programs, all built on the host.
#[derive(Debug)]
pub struct Foreign {
    pub dist: DistArch,
    /// Debian's name for it, which is also Go's `GOARCH`.
    pub debian: &'static str,
    /// Its Debian packages unpacked into the initramfs: busybox, and the commands the tests
    /// run with their shared libraries.
    userland: &'static [&'static str],
}

pub const X86_64: GuestArch = GuestArch {
    name: "x86_64",
    foreign: None,
    qemu: "qemu-system-x86_64",
    machine: &["-cpu", "max"],
    console: "ttyS0",
    smp: "2",
    time_scale: 10,
};

pub const ARM64: GuestArch = GuestArch {
    name: "arm64",
    foreign: Some(Foreign {
        dist: DistArch::Aarch64,
        debian: "arm64",
        userland: &[
            "busybox-static",
            "strace",
            "bpftool",
            "libc6",
            "libgcc-s1",
            "libcap2",
            "libelf1",
            "zlib1g",
        ],
    }),
    qemu: "qemu-system-aarch64",
    machine: &["-M", "virt", "-cpu", "cortex-a72"],
    console: "ttyAMA0",
    // One: with two, this qemu (7.2, TCG) runs arm64 Go programs wrong. Untraced, the
    // fifty-process loop of `processes.rs` failed in each of six rounds (SIGSEGV, fatal
    // errors) within its first twenty processes; with one vCPU, traced, 300 of 300 ran.
    smp: "1",
    // Go runs about 13 times slower than natively there, under TCG.
    time_scale: 15,
};

/// What `cargo xtask test` runs, in this order.
pub const ARCHES: [&GuestArch; 2] = [&X86_64, &ARM64];

/// The architecture `--arch` names.
pub fn arch(name: &str) -> anyhow::Result<&'static GuestArch> {
    ARCHES
        .into_iter()
        .find(|a| a.name == name)
        .with_context(|| {
            let names: Vec<&str> = ARCHES.iter().map(|a| a.name).collect();
            format!(
                "no guest architecture {name}: choose from {}",
                names.join(", ")
            )
        })
}

/// A kernel of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct GuestKernel {
    /// What `--kernel` takes.
    pub name: &'static str,
    pub arch: &'static GuestArch,
    archive: Archive,
    /// The package, as an anchored regex: the newest match is used.
    package: &'static str,
    suite: Suite,
}

impl GuestKernel {
    /// Names its guest's folder, its console lines and its cache entry: x86-64's kernels
    /// keep the bare names they had before arm64.
    pub fn label(&self) -> String {
        match &self.arch.foreign {
            Some(foreign) => format!("{}-{}", foreign.debian, self.name),
            None => self.name.to_owned(),
        }
    }
}

/// The kernels users run: Debian 12's own 6.1 and its 6.12, both cloud builds, on x86-64
/// and arm64; and, as the oldest, Debian 11's 5.10 (x86-64), which lacks uprobe attach
/// cookies (5.15).
pub const KERNELS: [GuestKernel; 5] = [
    GuestKernel {
        name: "5.10",
        arch: &X86_64,
        archive: Archive::Release("bullseye"),
        package: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$",
        suite: Suite::Refused,
    },
    GuestKernel {
        name: "6.1",
        arch: &X86_64,
        archive: Archive::System,
        package: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
        suite: Suite::Full,
    },
    GuestKernel {
        name: "6.12",
        arch: &X86_64,
        archive: Archive::System,
        package: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
        suite: Suite::Full,
    },
    GuestKernel {
        name: "6.1",
        arch: &ARM64,
        archive: Archive::Foreign("arm64"),
        package: r"^linux-image-6\.1\.0-[0-9]+-cloud-arm64-unsigned$",
        suite: Suite::Arm64,
    },
    GuestKernel {
        name: "6.12",
        arch: &ARM64,
        archive: Archive::Foreign("arm64"),
        package: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-arm64-unsigned$",
        suite: Suite::Arm64,
    },
];

/// A test binary and the tests of it a guest runs (all when none are named).
type Tests = (&'static str, &'static [&'static str]);

// The groups both the x86-64 and the arm64 guests run.
const EXACT_COUNTS: Tests = (
    "exact_counts",
    &[
        "classic_maps_by_pid",
        "swiss_maps_by_pid",
        "classic_maps_through_command",
        "swiss_maps_through_command",
    ],
);
const GROWTH: Tests = ("growth", &["go1_21", "go1_26"]);
const MEMORY: Tests = ("memory", &["classic_dontneed", "swiss_free"]);
const PROCESSES: Tests = (
    "processes",
    &[
        "fifty_short_lived_processes",
        "sigint_with_many_processes_ends_within_a_second",
    ],
);
const CHECK: Tests = ("check", &["this_host_is_reported_as_a_trace_would_use_it"]);

/// Test binaries and the tests of each to run in a [`Suite::Full`] guest: exact counts by
/// pid and through `--`, growth of a classic and a swiss build, sites, bytes held and
/// findings (the `make` probes) of a classic and a swiss build, madvise (with strace as
/// the ground truth) and GC, both madvise paths, filters, `--show-keys`, `--summary-only`
/// and a full ring buffer, the ways a run stops, and what it leaves behind; descendants held
/// at their exec (the fork tracepoint's record differs between 6.1 and 6.18), and a stop
/// with many processes; and `map-trace check` on that kernel.
const FULL: [Tests; 13] = [
    EXACT_COUNTS,
    GROWTH,
    ("answers", &["classic_go1_23", "swiss_go1_26"]),
    MEMORY,
    ("kernel", &[]),
    CHECK,
    ("filters", &["key_string", "one_map"]),
    ("show_keys", &["keys_shown_exactly_swiss"]),
    (
        "kernel_modes",
        &[
            "summary_only_equals_streaming_classic",
            "overflow_is_counted_swiss",
        ],
    ),
    (
        "ending",
        &[
            "sigint_ends_the_run",
            "duration_ends_the_run",
            "sighup_ends_the_run",
            "sigint_under_load_stops_at_once",
        ],
    ),
    (
        "reliability",
        &[
            "nothing_left_after_sigterm",
            "nothing_left_after_duration_and_target_exit",
            "integrity_swiss",
        ],
    ),
    (
        "bad_input",
        &["process_that_is_not_go", "go_older_than_supported"],
    ),
    PROCESSES,
];

/// A [`Suite::Refused`] guest runs the kernel checks only: they assert the refusal.
const REFUSED: [Tests; 2] = [
    (
        "kernel",
        &["a_kernel_without_what_map_trace_needs_is_refused_clearly"],
    ),
    CHECK,
];

/// What an arm64 guest runs: exact counts by pid and through `--`, growth of a classic and
/// a swiss build, madvise (with strace as the ground truth), the ways a run stops, results
/// and counts under stack growth (swiss), short-lived
/// and many processes, the kernel checks and `map-trace check` (which loads every eBPF
/// program). Under TCG arm64 runs Go about 13 times slower, so this is [`FULL`]'s core,
/// not all of it.
const ARM64_TESTS: [Tests; 8] = [
    EXACT_COUNTS,
    GROWTH,
    MEMORY,
    (
        "ending",
        &[
            "sigint_ends_the_run",
            "duration_ends_the_run",
            "sigint_under_load_stops_at_once",
        ],
    ),
    // Stack growth and moves mid-call: the entry probes on the stack check's branch count
    // each call once (see map-trace's disasm).
    // (integrity_classic passed too, measured once: 2.5 minutes more per guest.)
    ("reliability", &["integrity_swiss"]),
    PROCESSES,
    ("kernel", &[]),
    CHECK,
];

/// The modules a guest needs for virtiofs, in load order; those built into the kernel (or,
/// in older kernels, part of another module) have no file and are skipped.
const MODULES: [&str; 7] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "fuse",
    "virtiofs",
];

/// A guest that has not finished by then is killed and fails the run.
const GUEST_LIMIT: Duration = Duration::from_mins(30);

/// A kernel of the matrix, unpacked in the cache.
pub struct Unpacked {
    pub kernel: GuestKernel,
    pub package: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
    /// Its architecture's userland packages, unpacked (none for the host's architecture).
    userland: Vec<PathBuf>,
}

/// Fetches every kernel of the matrix into the cache, with the userland of the guests of
/// another architecture (once: the kernel package chosen is remembered, so a ready machine
/// needs no index lookup).
pub fn fetch_kernels(cache: &Path) -> anyhow::Result<Vec<Unpacked>> {
    KERNELS
        .iter()
        .map(|&kernel| {
            let chosen = cache.join(format!("debian/kernel-{}", kernel.label()));
            let package = match std::fs::read_to_string(&chosen) {
                Ok(name)
                    if kernel
                        .archive
                        .dest(cache, name.trim())
                        .join(".unpacked")
                        .exists() =>
                {
                    name.trim().to_owned()
                }
                _ => kernel.archive.newest(cache, kernel.package)?,
            };
            let root = kernel.archive.unpack(cache, &package)?;
            std::fs::write(&chosen, &package)?;
            let vmlinuz = only_entry(&root.join("boot"), "vmlinuz-")?;
            let modules = only_entry(&root.join("lib/modules"), "")?;
            let userland = kernel
                .arch
                .foreign
                .iter()
                .flat_map(|f| f.userland)
                .map(|package| kernel.archive.unpack(cache, package))
                .collect::<anyhow::Result<_>>()?;
            Ok(Unpacked {
                kernel,
                package,
                vmlinuz,
                modules,
                userland,
            })
        })
        .collect()
}

fn only_entry(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .with_context(|| format!("no {prefix}* in {}", dir.display()))
}

/// An integration-test executable, by the name of its file in `tests/tests`.
pub struct TestBinary {
    pub name: String,
    pub path: PathBuf,
}

/// Runs the guests of `arch` on `wanted` kernels (all of that architecture when empty) with
/// the integration tests in `tests` and the map-trace binary `map_trace`, both built for
/// it, one guest after another; fails if any guest fails or does not finish.
pub fn run_matrix(
    root: &Path,
    tools: &Tools,
    arch: &GuestArch,
    map_trace: &Path,
    tests: &[TestBinary],
    wanted: &[String],
) -> anyhow::Result<()> {
    let kernels = chosen(tools, arch, wanted)?;
    let mut failed = Vec::new();
    for kernel in kernels {
        let label = kernel.kernel.label();
        let started = Instant::now();
        let guest = Guest::prepare(root, tools, kernel, map_trace, tests)?;
        let ok = match guest.run() {
            // The emulated kernel itself can crash (an int3 left by its own live text
            // patching, seen once under TCG in do_exit): said, and run once more; a second
            // crash fails the run.
            Err(err) if guest.kernel_panicked() => {
                eprintln!(
                    "test-vm: the {label} guest's kernel panicked ({err:#}): running its tests once more"
                );
                guest.run()?
            }
            other => other?,
        };
        eprintln!(
            "test-vm: kernel {label} ({}): {} in {:.0} s",
            kernel.package,
            if ok { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(label);
        }
    }
    if !failed.is_empty() {
        bail!(
            "the tests failed in the guests of kernel {}",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The kernels of `arch` named in `wanted` (all of them when empty).
fn chosen<'t>(
    tools: &'t Tools,
    arch: &GuestArch,
    wanted: &[String],
) -> anyhow::Result<Vec<&'t Unpacked>> {
    let of_arch = || KERNELS.iter().filter(|k| k.arch.name == arch.name);
    for name in wanted {
        if !of_arch().any(|k| k.name == name) {
            let names: Vec<&str> = of_arch().map(|k| k.name).collect();
            bail!(
                "no {} kernel {name} in the matrix: choose from {}",
                arch.name,
                names.join(", ")
            );
        }
    }
    Ok(tools
        .kernels()
        .iter()
        .filter(|k| k.kernel.arch.name == arch.name)
        .filter(|k| wanted.is_empty() || wanted.iter().any(|w| w == k.kernel.name))
        .collect())
}

/// Each test binary of `suite`, with its arguments.
fn suite_runs(
    suite: Suite,
    tests: &[TestBinary],
) -> anyhow::Result<Vec<(&TestBinary, Vec<&'static str>)>> {
    let list: &[Tests] = match suite {
        Suite::Full => &FULL,
        Suite::Refused => &REFUSED,
        Suite::Arm64 => &ARM64_TESTS,
    };
    list.iter()
        .map(|&(name, filters)| {
            let binary = tests
                .iter()
                .find(|t| t.name == name)
                .with_context(|| format!("no integration-test binary {name}"))?;
            let mut args = vec!["--test-threads=1", "--nocapture"];
            if !filters.is_empty() {
                args.push("--exact");
            }
            args.extend(filters);
            Ok((binary, args))
        })
        .collect()
}

/// Builds the Go programs that the guests of the foreign `arch` on `wanted` kernels will
/// ask for: they have no Go toolchain of their own. Their tests run here first, natively
/// (`host_tests` against the host's `map_trace`), with `MAP_TRACE_ALSO_GOARCH`, which makes
/// the test helpers build each Go program a test uses for that architecture as well: exactly
/// the set the guests' same tests look for with `MAP_TRACE_GOARCH`.
pub fn prebuild_go(
    root: &Path,
    tools: &Tools,
    arch: &GuestArch,
    map_trace: &Path,
    host_tests: &[TestBinary],
    wanted: &[String],
) -> anyhow::Result<()> {
    let foreign = arch
        .foreign
        .as_ref()
        .context("the host's own architecture")?;
    let mut suites: Vec<Suite> = chosen(tools, arch, wanted)?
        .iter()
        .map(|k| k.kernel.suite)
        .collect();
    suites.dedup();
    for suite in suites {
        for (binary, args) in suite_runs(suite, host_tests)? {
            let mut cmd = Command::new(&binary.path);
            tools.apply(&mut cmd);
            crate::run(
                cmd.args(args)
                    .current_dir(root.join("tests"))
                    .env("MAP_TRACE_BIN", map_trace)
                    .env("MAP_TRACE_ALSO_GOARCH", foreign.debian),
            )
            .with_context(|| {
                format!(
                    "building the {} Go programs by running their tests on the host",
                    foreign.debian
                )
            })?;
        }
    }
    Ok(())
}

/// One guest's files, all under `target/vm/<kernel label>/` (which the guest sees too).
struct Guest<'a> {
    kernel: &'a Unpacked,
    dir: PathBuf,
}

impl<'a> Guest<'a> {
    fn prepare(
        root: &Path,
        tools: &Tools,
        kernel: &'a Unpacked,
        map_trace: &Path,
        tests: &[TestBinary],
    ) -> anyhow::Result<Self> {
        let dir = root.join("target/vm").join(kernel.kernel.label());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let guest = Self { kernel, dir };
        guest.initramfs(root, tools)?;
        guest.script(root, tools, map_trace, tests)?;
        Ok(guest)
    }

    fn arch(&self) -> &'static GuestArch {
        self.kernel.kernel.arch
    }

    /// busybox, the virtiofs modules, and an init that mounts the host and runs the script
    /// named on the kernel command line, then powers off. The host's architecture runs it
    /// in a chroot into the host's root; another one, whose programs the host's root does
    /// not hold, from the initramfs, which carries that architecture's userland.
    fn initramfs(&self, root: &Path, tools: &Tools) -> anyhow::Result<()> {
        let tree = self.dir.join("initramfs");
        for sub in ["bin", "proc", "sys", "dev", "host", "modules"] {
            std::fs::create_dir_all(tree.join(sub))?;
        }
        if self.kernel.userland.is_empty() {
            let busybox = which("busybox")?;
            std::fs::copy(&busybox, tree.join("bin/busybox"))
                .with_context(|| format!("copying {}", busybox.display()))?;
        } else {
            for package in &self.kernel.userland {
                crate::run(
                    Command::new("cp")
                        .arg("-a")
                        .arg(package.join("."))
                        .arg(&tree),
                )?;
            }
            // Documentation, and the cache's marker of an unpacked package.
            std::fs::remove_dir_all(tree.join("usr/share"))?;
            std::fs::remove_file(tree.join(".unpacked"))?;
        }
        let mut load = String::new();
        for module in MODULES {
            if let Some(file) = find_module(&self.kernel.modules, module)? {
                std::fs::copy(&file, tree.join("modules").join(format!("{module}.ko")))?;
                writeln!(
                    load,
                    "insmod /modules/{module}.ko || fail 'loading {module}'"
                )?;
            }
        }
        let (mounts, top, run) = if self.arch().foreign.is_some() {
            let mut binds = String::new();
            for dir in [root, tools.cache()] {
                let dir = dir.display();
                writeln!(
                    binds,
                    "mkdir -p '{dir}' && mount --bind '/host{dir}' '{dir}' || fail 'binding {dir}'"
                )?;
            }
            (
                format!(
                    "# The workspace (the tests, their Go programs, this guest's folder) and the cache\n\
                     # at their own paths, as the tests name them.\n\
                     {binds}mount -t bpf bpf /sys/fs/bpf\n\
                     mount -t tracefs tracefs /sys/kernel/tracing\n"
                ),
                "",
                r#"sh "$script""#,
            )
        } else {
            (
                "mount -t proc proc /host/proc\n\
                 mount -t sysfs sys /host/sys\n\
                 mount -t devtmpfs dev /host/dev\n\
                 mount -t bpf bpf /host/sys/fs/bpf\n"
                    .to_owned(),
                "/host",
                r#"chroot /host /bin/sh "$script""#,
            )
        };
        let init = format!(
            r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
fail() {{ echo "map-trace-vm: $1"; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{load}mount -t virtiofs host /host || fail 'mounting the host over virtiofs'
{mounts}script=$(sed -n 's/.*map_trace_script=\([^ ]*\).*/\1/p' /proc/cmdline)
# The guest's scratch space, in memory, at a folder of its own: a tmpfs over the host's
# /tmp would hide a checkout that lives there.
tmp=$(sed -n 's/.*map_trace_tmp=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t tmpfs tmp "{top}$tmp" || fail 'mounting the scratch tmpfs'

{run}
poweroff -f
"#
        );
        std::fs::write(tree.join("init"), init)?;
        set_executable(&tree.join("init"))?;
        // cpio wants the list of paths on stdin, relative to the tree.
        let list = Command::new("find")
            .arg(".")
            .current_dir(&tree)
            .output()
            .context("listing the initramfs")?
            .stdout;
        let archive = std::fs::File::create(self.dir.join("initramfs.cpio"))?;
        let mut cpio = Command::new("cpio")
            .args(["-o", "-H", "newc", "--quiet"])
            .current_dir(&tree)
            .stdin(Stdio::piped())
            .stdout(archive)
            .spawn()
            .context("starting cpio")?;
        std::io::Write::write_all(&mut cpio.stdin.take().context("cpio's stdin")?, &list)?;
        if !cpio.wait()?.success() {
            bail!("cpio failed building the initramfs");
        }
        Ok(())
    }

    /// The guest's test script: the host's environment for the tests, each chosen test
    /// binary with its filters, and the outcome into the status file.
    fn script(
        &self,
        root: &Path,
        tools: &Tools,
        map_trace: &Path,
        tests: &[TestBinary],
    ) -> anyhow::Result<()> {
        let mut script = String::from("set -u\nstatus=0\n");
        for (key, value) in tools.test_env() {
            writeln!(script, "export {key}='{}'", value.to_string_lossy())?;
        }
        if let Some(foreign) = &self.arch().foreign {
            // The initramfs's own commands, not the host's; and the Go programs the host
            // built for this architecture.
            writeln!(script, "export PATH=/bin:/usr/bin:/usr/sbin")?;
            writeln!(script, "export MAP_TRACE_GOARCH={}", foreign.debian)?;
        }
        writeln!(script, "export MAP_TRACE_BIN='{}'", map_trace.display())?;
        // Built by the host's run already: the guest, ten times slower, does not redo it.
        writeln!(script, "export MAP_TRACE_GO_PREBUILT=1")?;
        // Emulated guests run slower: tests scale their time bounds.
        writeln!(
            script,
            "export MAP_TRACE_TIME_SCALE={}",
            self.arch().time_scale
        )?;
        writeln!(
            script,
            "export HOME=/root TMPDIR='{}'",
            self.scratch().display()
        )?;
        writeln!(script, "cd '{}'", root.join("tests").display())?;
        writeln!(
            script,
            "echo \"map-trace-vm: kernel $(uname -r) ($(uname -m)), $(nproc) CPUs, up $(cut -d' ' -f1 /proc/uptime) s\""
        )?;
        for (binary, args) in suite_runs(self.kernel.kernel.suite, tests)? {
            writeln!(
                script,
                "echo 'map-trace-vm: {}'\n'{}' {} || status=1",
                binary.name,
                binary.path.display(),
                args.join(" ")
            )?;
        }
        writeln!(script, "echo $status > '{}'", self.status_file().display())?;
        std::fs::write(self.dir.join("run.sh"), script)?;
        Ok(())
    }

    fn status_file(&self) -> PathBuf {
        self.dir.join("status")
    }

    /// The guest's scratch folder (its `TMPDIR`): a tmpfs there, inside the guest.
    fn scratch(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Boots the guest with the host shared over virtiofs and waits for it (bounded);
    /// true if every test passed.
    /// The guest's console says its kernel panicked.
    fn kernel_panicked(&self) -> bool {
        std::fs::read_to_string(self.dir.join("console.log"))
            .is_ok_and(|c| c.contains("Kernel panic - not syncing"))
    }

    fn run(&self) -> anyhow::Result<bool> {
        std::fs::create_dir_all(self.scratch())
            .with_context(|| format!("making {}", self.scratch().display()))?;
        let socket = self.dir.join("virtiofs.sock");
        let mut virtiofsd = Killed(
            Command::new("/usr/lib/qemu/virtiofsd")
                .arg(format!("--socket-path={}", socket.display()))
                .args(["-o", "source=/", "-o", "cache=auto", "-o", "sandbox=chroot"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.dir.join("virtiofsd.log"))?)
                .spawn()
                .context("starting virtiofsd")?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline || virtiofsd.0.try_wait()?.is_some() {
                bail!(
                    "virtiofsd did not start: see {}",
                    self.dir.join("virtiofsd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let memory = "4G";
        let arch = self.arch();
        let mut qemu = Killed(
            Command::new(arch.qemu)
                .args(["-accel", "tcg"])
                .args(arch.machine)
                .args(["-smp", arch.smp, "-m", memory])
                .args(["-nographic", "-no-reboot", "-nic", "none"])
                .arg("-kernel")
                .arg(&self.kernel.vmlinuz)
                .arg("-initrd")
                .arg(self.dir.join("initramfs.cpio"))
                .arg("-append")
                .arg(format!(
                    "console={} panic=-1 quiet map_trace_script={} map_trace_tmp={}",
                    arch.console,
                    self.dir.join("run.sh").display(),
                    self.scratch().display()
                ))
                .arg("-chardev")
                .arg(format!("socket,id=host,path={}", socket.display()))
                .args(["-device", "vhost-user-fs-pci,chardev=host,tag=host"])
                .arg("-object")
                .arg(format!(
                    "memory-backend-memfd,id=mem,size={memory},share=on"
                ))
                .args(["-numa", "node,memdev=mem"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting qemu")?,
        );
        let console = qemu.0.stdout.take().context("qemu's console")?;
        let label = self.kernel.kernel.label();
        let log = self.dir.join("console.log");
        let prefix = format!("[{label}]");
        let shown = std::thread::spawn(move || -> std::io::Result<()> {
            let mut file = std::fs::File::create(log)?;
            for line in BufReader::new(console).split(b'\n') {
                let line = line?;
                // The firmware's screen control codes are noise here.
                let text: String = String::from_utf8_lossy(&line)
                    .chars()
                    .filter(|c| !c.is_control() || *c == '\t')
                    .collect();
                std::io::Write::write_all(&mut file, text.as_bytes())?;
                std::io::Write::write_all(&mut file, b"\n")?;
                eprintln!("{prefix} {text}");
            }
            Ok(())
        });
        let limit = Instant::now() + GUEST_LIMIT;
        let status = loop {
            if let Some(status) = qemu.0.try_wait()? {
                break status;
            }
            if Instant::now() > limit {
                bail!(
                    "the {label} guest did not finish within {} minutes: killed (console in {})",
                    GUEST_LIMIT.as_secs() / 60,
                    self.dir.join("console.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let _ = shown.join();
        let _ = virtiofsd.0.wait();
        if !status.success() {
            bail!("qemu for the {label} guest failed: {status}");
        }
        let outcome = std::fs::read_to_string(self.status_file()).with_context(|| {
            format!(
                "the {label} guest ended without running its tests (console in {})",
                self.dir.join("console.log").display()
            )
        })?;
        Ok(outcome.trim() == "0")
    }
}

/// A child process killed when dropped (a failed run must not leave a guest running).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `module`'s file under a kernel's modules folder; `None` when it has none.
fn find_module(modules: &Path, module: &str) -> anyhow::Result<Option<PathBuf>> {
    let builtin = std::fs::read_to_string(modules.join("modules.builtin")).unwrap_or_default();
    let wanted = format!("{module}.ko");
    if builtin
        .lines()
        .any(|l| l.rsplit('/').next() == Some(wanted.as_str()))
    {
        return Ok(None);
    }
    // Neither built in nor a file: an older kernel that has it inside another module
    // (5.10's virtio_pci holds the legacy and modern parts).
    walk(&modules.join("kernel"), &wanted)
}

fn walk(dir: &Path, file: &str) -> anyhow::Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if let Some(found) = walk(&path, file)? {
                return Ok(Some(found));
            }
        } else if path.file_name().and_then(|n| n.to_str()) == Some(file) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn which(command: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|p| p.is_file())
        .with_context(|| format!("{command} is not on PATH"))
}

fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
