//! `map-trace check`: what this host offers and what a trace here would use, one line per
//! item, found by the same functions a trace decides with, so the two cannot disagree.

use std::path::Path;

use anyhow::bail;

use crate::{
    binary::arch::Arch,
    cli::CheckArgs,
    kernel::{self, Features},
    privileges,
    tracer::{MadvisePath, Settings, Tracer},
    uprobe_multi,
};

/// The pid namespace of the host (`PROC_PID_INIT_INO`): outside it, `--all` and `--pid`
/// see only the namespace's processes.
const HOST_PID_NAMESPACE: u64 = 0xEFFF_FFFC;
/// The ring buffer the check's programs are loaded with (tracing's default).
const RING_BUFFER_SIZE: u32 = 16 << 20;

/// How an item stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Present, and used.
    Ok,
    /// Absent or not used, and tracing works without it.
    No,
    /// Tracing cannot work without it.
    Missing,
    /// Not found out: the probe needs the privileges that are missing.
    Unknown,
}

/// One line of the report. A missing item carries the error a trace would end with.
struct Item {
    name: &'static str,
    status: Status,
    detail: String,
    error: Option<String>,
}

impl Item {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
            error: None,
        }
    }

    fn missing(name: &'static str, detail: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::new(name, Status::Missing, detail)
        }
    }
}

/// The machine against this build: its probes read one architecture's registers.
fn architecture(machine: &str) -> Item {
    let arch = match machine {
        "x86_64" => Some(Arch::Amd64),
        "aarch64" => Some(Arch::Arm64),
        _ => None,
    };
    let detail = format!("{machine}: this build traces {} Go programs", Arch::NATIVE);
    match arch {
        Some(arch) if arch == Arch::NATIVE => Item::new("architecture", Status::Ok, detail),
        Some(arch) => Item::missing(
            "architecture",
            detail,
            format!(
                "this is map-trace's {} build on an {machine} machine: run {}",
                Arch::NATIVE,
                arch.build()
            ),
        ),
        None => Item::missing(
            "architecture",
            detail,
            format!("map-trace runs on x86_64 and aarch64, not {machine}"),
        ),
    }
}

/// Prints the report on standard output; fails with the first missing item's error.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let release = kernel::release();
    let sysfs = args.sysfs.as_path();
    let features = Features::probe(sysfs);
    let missing = privileges::missing();
    let privileged = missing.is_empty();
    let mut items = vec![
        Item::new("kernel", Status::Ok, release.clone()),
        architecture(&kernel::machine()),
        privileges(&missing),
    ];
    items.extend(kernel_features(features, &release, sysfs, privileged));
    items.push(tracefs(sysfs, privileged));
    let (madvise_item, madvise) = madvise(sysfs);
    items.push(madvise_item);
    items.push(uprobe_links(&release));
    items.push(btf(sysfs));
    items.push(pid_namespace());
    let ready = items
        .iter()
        .all(|i| !matches!(i.status, Status::Missing | Status::Unknown));
    items.push(programs(ready, madvise, args.verbose));
    for item in &items {
        let status = match item.status {
            Status::Ok => "ok",
            Status::No => "no",
            Status::Missing => "missing",
            Status::Unknown => "unknown",
        };
        println!("{:<14}{status:<9}{}", item.name, item.detail);
    }
    if let Some(error) = items.iter().find_map(|i| i.error.as_deref()) {
        bail!("{error}");
    }
    println!("map-trace can trace Go processes on this host");
    Ok(())
}

fn privileges(missing: &[&str]) -> Item {
    if missing.is_empty() {
        Item::new(
            "privileges",
            Status::Ok,
            "the capabilities tracing needs are effective",
        )
    } else {
        Item::missing(
            "privileges",
            format!("not effective: {}", missing.join(", ")),
            privileges::FIX,
        )
    }
}

/// The features every trace needs: a missing one fails as the trace would. The BPF ones
/// are found by loading a map and a program, which needs the privileges.
fn kernel_features(features: Features, release: &str, sysfs: &Path, privileged: bool) -> Vec<Item> {
    // The error names the first missing feature; the lines name each.
    let error = features.check(release).err();
    [
        (
            "uprobes",
            features.uprobes,
            true,
            format!("{}/bus/event_source/devices/uprobe", sysfs.display()),
        ),
        (
            "ring buffer",
            features.ring_buffer,
            privileged,
            "BPF_MAP_TYPE_RINGBUF (Linux 5.8+)".to_owned(),
        ),
        (
            "attach cookie",
            features.attach_cookie,
            privileged,
            "bpf_get_attach_cookie in uprobe programs (Linux 5.15+)".to_owned(),
        ),
    ]
    .into_iter()
    .map(
        |(name, present, known, detail)| match (present, known, &error) {
            (true, _, _) => Item::new(name, Status::Ok, detail),
            (false, false, _) => Item::new(name, Status::Unknown, detail),
            (false, true, Some(error)) => Item::missing(name, detail, error.to_string()),
            (false, true, None) => Item::missing(name, detail, format!("{name} is missing")),
        },
    )
    .collect()
}

/// tracefs, where the process tracepoints are found, and the fork record's layout the
/// programs read. Only root, or `CAP_DAC_READ_SEARCH`, can look into it.
fn tracefs(sysfs: &Path, privileged: bool) -> Item {
    let Some(tracefs) = kernel::tracefs_in(sysfs) else {
        if !privileged {
            return Item::new(
                "tracefs",
                Status::Unknown,
                "not readable without the privileges",
            );
        }
        return Item::new(
            "tracefs",
            Status::No,
            format!(
                "not mounted: a trace mounts it at {}/kernel/tracing",
                sysfs.display()
            ),
        );
    };
    match kernel::tracepoint_field_offset_in(&tracefs, "sched", "sched_process_fork", "child_pid") {
        Ok(offset) => Item::new(
            "tracefs",
            Status::Ok,
            format!(
                "{} (sched_process_fork's child_pid at byte {offset})",
                tracefs.display()
            ),
        ),
        Err(e) => Item::missing(
            "tracefs",
            tracefs.display().to_string(),
            format!("{e:#}: map-trace follows processes with that tracepoint"),
        ),
    }
}

/// The madvise path a trace takes by default.
fn madvise(sysfs: &Path) -> (Item, Option<MadvisePath>) {
    let path = match MadvisePath::choose(sysfs, None) {
        Ok(path) => path,
        Err(e) => return (Item::missing("madvise", "no path", format!("{e:#}")), None),
    };
    let detail = match path {
        MadvisePath::Kprobe => "kprobes on do_madvise (CONFIG_KPROBES)",
        MadvisePath::Tracepoint => {
            "the syscalls:sys_enter_madvise and sys_exit_madvise tracepoints (no kprobes here)"
        }
    };
    (Item::new("madvise", Status::Ok, detail), Some(path))
}

fn uprobe_links(release: &str) -> Item {
    if uprobe_multi::usable(release) {
        Item::new(
            "uprobe links",
            Status::Ok,
            "multi-uprobe links: one per program and executable (Linux 6.10+)",
        )
    } else {
        Item::new(
            "uprobe links",
            Status::No,
            "a link per uprobe (multi-uprobe links need Linux 6.10+)",
        )
    }
}

/// map-trace's programs carry their own layouts (no CO-RE against kernel types), so the
/// kernel's BTF is reported, not required.
fn btf(sysfs: &Path) -> Item {
    let path = sysfs.join("kernel/btf/vmlinux");
    let (status, no) = if path.exists() {
        (Status::Ok, "")
    } else {
        (Status::No, "no ")
    };
    Item::new(
        "BTF",
        status,
        format!("{no}{} (not needed by map-trace)", path.display()),
    )
}

fn pid_namespace() -> Item {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::metadata("/proc/self/ns/pid").map(|m| m.ino()) {
        Ok(HOST_PID_NAMESPACE) => Item::new(
            "processes",
            Status::Ok,
            "the host's pid namespace: every process can be traced",
        ),
        Ok(ino) => Item::new(
            "processes",
            Status::No,
            format!(
                "pid namespace {ino}, not the host's: only its processes can be traced (in a container, run it with --pid=host)"
            ),
        ),
        Err(e) => Item::new(
            "processes",
            Status::No,
            format!("cannot read /proc/self/ns/pid: {e}"),
        ),
    }
}

/// Loads every program a trace would (process tracepoints, madvise, uprobes) through the
/// verifier, attaching only the process tracepoints, which act on no process until one
/// is traced. Pointless, and not tried, once something above is missing.
fn programs(ready: bool, madvise: Option<MadvisePath>, verbose: bool) -> Item {
    if !ready {
        return Item::new(
            "programs",
            Status::No,
            "not loaded: something above is missing",
        );
    }
    let settings = Settings {
        key_hash: None,
        map: None,
        show_keys: false,
        summary_only: false,
        ring_buffer_size: RING_BUFFER_SIZE,
        verifier_log: verbose,
        multi_links: None,
        watch_all: false,
        hold: false,
        follow: true,
    };
    match Tracer::load(&settings, madvise).and_then(|mut t| t.load_all()) {
        Ok(n) => Item::new(
            "programs",
            Status::Ok,
            format!("{n} eBPF programs passed this kernel's verifier"),
        ),
        Err(e) => Item::missing("programs", "refused", format!("{e:#}")),
    }
}
