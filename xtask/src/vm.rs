//! The kernel matrix: integration tests that need a kernel, run inside qemu guests booted
//! with the kernels users run.
//!
//! Each guest boots a Debian kernel (unpacked from its package, never installed) under TCG
//! (KVM does not work on these machines) from a small busybox initramfs, mounts the host's
//! root file system read-write over virtiofs, and runs the chosen tests from there in a
//! chroot: the same test binaries, Go toolchains and Go programs as on the host, on another
//! kernel. Results come back through the shared file system (a status file per kernel)
//! and the serial console, which is shown as it comes; every guest runs under a time limit.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::setup::{Archive, Tools};

/// What a guest runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Suite {
    /// The subset that covers every probe kind; see [`FULL`].
    Full,
    /// Only the kernel-feature checks: the kernel lacks what map-trace needs, and the test
    /// asserts the clear error.
    Refused,
}

/// A kernel of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct GuestKernel {
    /// What `--kernel` takes.
    pub name: &'static str,
    archive: Archive,
    /// The package, as an anchored regex: the newest match is used.
    package: &'static str,
    suite: Suite,
}

/// The kernels users run: Debian 12's own 6.1 and its 6.12, both cloud builds; and, as the
/// oldest, Debian 11's 5.10, which lacks uprobe attach cookies (5.15).
pub const KERNELS: [GuestKernel; 3] = [
    GuestKernel {
        name: "5.10",
        archive: Archive::Release("bullseye"),
        package: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$",
        suite: Suite::Refused,
    },
    GuestKernel {
        name: "6.1",
        archive: Archive::System,
        package: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
        suite: Suite::Full,
    },
    GuestKernel {
        name: "6.12",
        archive: Archive::System,
        package: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
        suite: Suite::Full,
    },
];

/// Test binaries and the tests of each to run in a [`Suite::Full`] guest: exact counts by
/// pid and through `--`, growth of a classic and a swiss build, sites, bytes held and
/// findings (the `make` probes) of a classic and a swiss build, madvise (with strace as
/// the ground truth) and GC, both madvise paths, filters, `--show-keys`, `--summary-only`
/// and a full ring buffer, the ways a run stops, and what it leaves behind; descendants held
/// at their exec (the fork tracepoint's record differs between 6.1 and 6.18), and a stop
/// with many processes; and `map-trace check` on that kernel.
const FULL: [(&str, &[&str]); 13] = [
    (
        "exact_counts",
        &[
            "classic_maps_by_pid",
            "swiss_maps_by_pid",
            "classic_maps_through_command",
            "swiss_maps_through_command",
        ],
    ),
    ("growth", &["go1_21", "go1_26"]),
    ("answers", &["classic_go1_23", "swiss_go1_26"]),
    ("memory", &["classic_dontneed", "swiss_free"]),
    ("kernel", &[]),
    ("check", &["this_host_is_reported_as_a_trace_would_use_it"]),
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
    (
        "processes",
        &[
            "fifty_short_lived_processes",
            "sigint_with_many_processes_ends_within_a_second",
        ],
    ),
];

/// A [`Suite::Refused`] guest runs the kernel checks only: they assert the refusal.
const REFUSED: [(&str, &[&str]); 2] = [
    (
        "kernel",
        &["a_kernel_without_what_map_trace_needs_is_refused_clearly"],
    ),
    ("check", &["this_host_is_reported_as_a_trace_would_use_it"]),
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
}

/// Fetches every kernel of the matrix into the cache (once: the package chosen is
/// remembered, so a ready machine needs no index lookup).
pub fn fetch_kernels(cache: &Path) -> anyhow::Result<Vec<Unpacked>> {
    KERNELS
        .iter()
        .map(|&kernel| {
            let chosen = cache.join(format!("debian/kernel-{}", kernel.name));
            let package = match std::fs::read_to_string(&chosen) {
                Ok(name)
                    if cache
                        .join("debian")
                        .join(name.trim())
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
            Ok(Unpacked {
                kernel,
                package,
                vmlinuz,
                modules,
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

/// Runs the matrix on `wanted` kernels (all when empty) with the integration tests in
/// `tests`, one guest after another; fails if any guest fails or does not finish.
pub fn run_matrix(
    root: &Path,
    tools: &Tools,
    map_trace: &Path,
    tests: &[TestBinary],
    wanted: &[String],
) -> anyhow::Result<()> {
    for name in wanted {
        if !KERNELS.iter().any(|k| k.name == name) {
            let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
            bail!(
                "no kernel {name} in the matrix: choose from {}",
                names.join(", ")
            );
        }
    }
    let mut failed = Vec::new();
    for kernel in tools.kernels() {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == kernel.kernel.name) {
            continue;
        }
        let started = Instant::now();
        let guest = Guest::prepare(root, tools, kernel, map_trace, tests)?;
        let ok = match guest.run() {
            // The emulated kernel itself can crash (an int3 left by its own live text
            // patching, seen once under TCG in do_exit): said, and run once more; a second
            // crash fails the run.
            Err(err) if guest.kernel_panicked() => {
                eprintln!(
                    "test-vm: the {} guest's kernel panicked ({err:#}): running its tests once more",
                    kernel.kernel.name
                );
                guest.run()?
            }
            other => other?,
        };
        eprintln!(
            "test-vm: kernel {} ({}): {} in {:.0} s",
            kernel.kernel.name,
            kernel.package,
            if ok { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(kernel.kernel.name);
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

/// One guest's files, all under `target/vm/<kernel>/` (which the guest sees too).
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
        let dir = root.join("target/vm").join(kernel.kernel.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let guest = Self { kernel, dir };
        guest.initramfs()?;
        guest.script(root, tools, map_trace, tests)?;
        Ok(guest)
    }

    /// busybox, the virtiofs modules, and an init that mounts the host and runs the script
    /// named on the kernel command line in a chroot, then powers off.
    fn initramfs(&self) -> anyhow::Result<()> {
        let tree = self.dir.join("initramfs");
        for sub in ["bin", "proc", "sys", "dev", "host", "modules"] {
            std::fs::create_dir_all(tree.join(sub))?;
        }
        let busybox = which("busybox")?;
        std::fs::copy(&busybox, tree.join("bin/busybox"))
            .with_context(|| format!("copying {}", busybox.display()))?;
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
        let init = format!(
            r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
fail() {{ echo "map-trace-vm: $1"; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{load}mount -t virtiofs host /host || fail 'mounting the host over virtiofs'
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t bpf bpf /host/sys/fs/bpf
script=$(sed -n 's/.*map_trace_script=\([^ ]*\).*/\1/p' /proc/cmdline)
# The guest's scratch space, in memory, at a folder of its own: a tmpfs over the host's
# /tmp would hide a checkout that lives there.
tmp=$(sed -n 's/.*map_trace_tmp=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t tmpfs tmp "/host$tmp" || fail 'mounting the scratch tmpfs'

chroot /host /bin/sh "$script"
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
        let suite: &[(&str, &[&str])] = match self.kernel.kernel.suite {
            Suite::Full => &FULL,
            Suite::Refused => &REFUSED,
        };
        let mut script = String::from("set -u\nstatus=0\n");
        for (key, value) in tools.test_env() {
            writeln!(script, "export {key}='{}'", value.to_string_lossy())?;
        }
        writeln!(script, "export MAP_TRACE_BIN='{}'", map_trace.display())?;
        // Built by the host's run already: the guest, ten times slower, does not redo it.
        writeln!(script, "export MAP_TRACE_GO_PREBUILT=1")?;
        // Emulated guests run about ten times slower: tests scale their time bounds.
        writeln!(script, "export MAP_TRACE_TIME_SCALE=10")?;
        writeln!(
            script,
            "export HOME=/root TMPDIR='{}'",
            self.scratch().display()
        )?;
        writeln!(script, "cd '{}'", root.join("tests").display())?;
        writeln!(
            script,
            "echo \"map-trace-vm: kernel $(uname -r), $(nproc) CPUs\""
        )?;
        for (name, filters) in suite {
            let binary = tests
                .iter()
                .find(|t| t.name == *name)
                .with_context(|| format!("no integration-test binary {name}"))?;
            let exact = if filters.is_empty() { "" } else { " --exact" };
            writeln!(
                script,
                "echo 'map-trace-vm: {name}'\n'{}' --test-threads=1 --nocapture{exact} {} || status=1",
                binary.path.display(),
                filters.join(" ")
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
        let mut qemu = Killed(
            Command::new("qemu-system-x86_64")
                .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", memory])
                .args(["-nographic", "-no-reboot", "-nic", "none"])
                .arg("-kernel")
                .arg(&self.kernel.vmlinuz)
                .arg("-initrd")
                .arg(self.dir.join("initramfs.cpio"))
                .arg("-append")
                .arg(format!(
                    "console=ttyS0 panic=-1 quiet map_trace_script={} map_trace_tmp={}",
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
        let label = self.kernel.kernel.name;
        let log = self.dir.join("console.log");
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
                eprintln!("[{label}] {text}");
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
