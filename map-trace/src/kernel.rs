//! What the running kernel offers: the features map-trace cannot work without, probed on
//! this kernel (not inferred from its version number: distributions backport), and named
//! when missing.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};

/// The kernel's release (`uname -r`), for messages.
#[must_use]
pub fn release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "(unknown)".to_owned(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}

/// The machine `uname -m` names (`x86_64`, `aarch64`).
#[must_use]
pub fn machine() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "(unknown)".to_owned(),
        |u| u.machine().to_string_lossy().into_owned(),
    )
}

/// The features the eBPF programs need, as found on a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// The uprobe event source (`CONFIG_UPROBE_EVENTS`).
    pub uprobes: bool,
    /// `BPF_MAP_TYPE_RINGBUF` (Linux 5.8).
    pub ring_buffer: bool,
    /// `bpf_get_attach_cookie` in kprobe and uprobe programs (Linux 5.15).
    pub attach_cookie: bool,
}

impl Features {
    /// Probes this kernel: sysfs under `sysfs` (`/sys`) for the event sources, and a tiny
    /// program and map load for the BPF features, as libbpf's probes do.
    #[must_use]
    pub fn probe(sysfs: &Path) -> Self {
        Self {
            uprobes: sysfs.join("bus/event_source/devices/uprobe/type").exists(),
            ring_buffer: matches!(is_map_supported(MapType::RingBuf), Ok(true)),
            attach_cookie: matches!(
                is_helper_supported(ProgramType::KProbe, BpfHelper::BPF_FUNC_get_attach_cookie),
                Ok(true)
            ),
        }
    }

    /// One error naming the kernel and the first missing feature, or `Ok`.
    pub fn check(&self, release: &str) -> anyhow::Result<()> {
        if !self.uprobes {
            bail!(
                "kernel {release} has no uprobes (CONFIG_UPROBE_EVENTS; /sys/bus/event_source/devices/uprobe is missing): map-trace needs them to probe the Go runtime; use a kernel built with them"
            );
        }
        if !self.ring_buffer {
            bail!(
                "kernel {release} has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8+): map-trace needs it to carry events; use Linux 5.15 or newer"
            );
        }
        if !self.attach_cookie {
            bail!(
                "kernel {release} lacks the bpf_get_attach_cookie helper for uprobes (Linux 5.15+): map-trace needs it to tell its probes apart; use Linux 5.15 or newer"
            );
        }
        Ok(())
    }
}

/// Whether the kernel has kprobes (`CONFIG_KPROBES`), which the madvise probes prefer.
#[must_use]
pub fn has_kprobes(sysfs: &Path) -> bool {
    sysfs.join("bus/event_source/devices/kprobe/type").exists()
}

/// Where tracefs is mounted, if it is.
#[must_use]
pub fn tracefs() -> Option<PathBuf> {
    tracefs_in(Path::new("/sys"))
}

/// Where tracefs is mounted under the sysfs root `sysfs`, if it is.
#[must_use]
pub fn tracefs_in(sysfs: &Path) -> Option<PathBuf> {
    ["kernel/tracing", "kernel/debug/tracing"]
        .into_iter()
        .map(|p| sysfs.join(p))
        .find(|p| p.join("events").exists())
}

/// The byte offset of `field` in the records of tracepoint `group:event`, as this kernel's
/// tracefs gives its format: fields move between releases (6.x made `sched_process_fork`'s
/// comm fields `__data_loc`, which moved `child_pid` from 44 to 20).
pub fn tracepoint_field_offset(group: &str, event: &str, field: &str) -> anyhow::Result<u32> {
    let tracefs = tracefs().context("tracefs is not mounted: mount it at /sys/kernel/tracing")?;
    tracepoint_field_offset_in(&tracefs, group, event, field)
}

/// [`tracepoint_field_offset`] in the tracefs mounted at `tracefs`.
pub fn tracepoint_field_offset_in(
    tracefs: &Path,
    group: &str,
    event: &str,
    field: &str,
) -> anyhow::Result<u32> {
    let path = tracefs
        .join("events")
        .join(group)
        .join(event)
        .join("format");
    let format = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the format of tracepoint {group}:{event}"))?;
    field_offset(&format, field).with_context(|| {
        format!(
            "tracepoint {group}:{event} has no field {field} in {}",
            path.display()
        )
    })
}

/// `offset:N` of the line declaring `field` in a tracepoint format.
fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        let name = declaration.rsplit([' ', '*']).next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:")?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Features = Features {
        uprobes: true,
        ring_buffer: true,
        attach_cookie: true,
    };

    #[test]
    fn each_missing_feature_is_named_with_the_kernel() {
        ALL.check("6.1.0-57-cloud-amd64").unwrap();
        let cases = [
            (
                Features {
                    uprobes: false,
                    ..ALL
                },
                "has no uprobes (CONFIG_UPROBE_EVENTS",
            ),
            (
                Features {
                    ring_buffer: false,
                    ..ALL
                },
                "has no BPF ring buffer",
            ),
            (
                Features {
                    attach_cookie: false,
                    ..ALL
                },
                "lacks the bpf_get_attach_cookie helper",
            ),
        ];
        for (features, says) in cases {
            let err = features
                .check("5.10.0-32-cloud-amd64")
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
            assert!(err.starts_with("kernel 5.10.0-32-cloud-amd64 "), "{err}");
        }
    }

    #[test]
    fn sysfs_says_which_event_sources_exist() {
        let sys = tempfile::tempdir().unwrap();
        assert!(!Features::probe(sys.path()).uprobes);
        assert!(!has_kprobes(sys.path()));
        for source in ["uprobe", "kprobe"] {
            let dir = sys.path().join("bus/event_source/devices").join(source);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("type"), "7\n").unwrap();
        }
        assert!(Features::probe(sys.path()).uprobes);
        assert!(has_kprobes(sys.path()));
    }

    #[test]
    fn tracepoint_fields_are_found_in_either_format() {
        // sched_process_fork of Linux 6.1 (comm arrays) and of 6.18 (`__data_loc`).
        let old = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                   \tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
                   \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(old, "child_pid"), Some(44));
        assert_eq!(field_offset(new, "child_pid"), Some(20));
        assert_eq!(field_offset(new, "parent_pid"), Some(12));
        assert_eq!(field_offset(new, "pid"), None);
        assert_eq!(field_offset("garbage", "child_pid"), None);
    }

    #[test]
    fn this_kernels_fork_tracepoint_names_the_child() {
        // Every kernel map-trace supports: before and after the `__data_loc` change.
        let offset = tracepoint_field_offset("sched", "sched_process_fork", "child_pid");
        assert!(matches!(offset, Ok(20 | 44)), "{offset:?}");
    }
}
