//! The running process being traced: existence and kind checks, and a pidfd to learn when it
//! exits.

pub mod container;
pub mod launch;
pub mod memory;

use std::{
    fs,
    io::ErrorKind,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::PathBuf,
};

use thiserror::Error;

use crate::binary::GoBinary;

/// `PF_KTHREAD` in `/proc/PID/stat`'s flags field.
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("no process with pid {0}: check the PID (ps -e) and try again")]
    NotFound(u32),
    #[error(
        "pid {0} is a zombie (it has exited and waits for its parent to reap it): nothing to trace"
    )]
    Zombie(u32),
    #[error("pid {0} is a kernel thread: map-trace traces Go programs")]
    KernelThread(u32),
    /// Names its cause itself (not as a `source`, which `main` would print again).
    #[error("cannot inspect pid {pid}: {reason} (run map-trace as root)")]
    Access { pid: u32, reason: std::io::Error },
    #[error(
        "pid {0}: its executable is not in /proc/{0}/maps, so its load address is unknown: is it still running?"
    )]
    NotMapped(u32),
}

/// A live user-space process.
#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    /// `/proc/PID/exe`: opens the very file the process runs, even if deleted or in another
    /// mount namespace.
    pub exe: PathBuf,
    /// Where that file is (or was), for messages.
    pub exe_name: PathBuf,
}

impl Process {
    pub fn inspect(pid: u32) -> Result<Self, ProcessError> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let stat = match fs::read_to_string(proc_dir.join("stat")) {
            Ok(stat) => stat,
            Err(e) if e.kind() == ErrorKind::NotFound || pid == 0 => {
                return Err(ProcessError::NotFound(pid));
            }
            Err(reason) => return Err(ProcessError::Access { pid, reason }),
        };
        // Fields after the parenthesised command name, which may itself hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let state = fields.first().copied().unwrap_or("?");
        let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
        if state == "Z" || state == "X" {
            return Err(ProcessError::Zombie(pid));
        }
        if flags & PF_KTHREAD != 0 {
            return Err(ProcessError::KernelThread(pid));
        }
        let exe = proc_dir.join("exe");
        let exe_name =
            fs::read_link(&exe).map_err(|reason| ProcessError::Access { pid, reason })?;
        Ok(Self { pid, exe, exe_name })
    }
}

/// The resident-memory figures of `pid` in bytes (`VmRSS`, `RssAnon`), from
/// `/proc/PID/status`; empty once the process is gone or has no memory (a zombie).
#[must_use]
pub fn resident_memory(pid: u32) -> Vec<(&'static str, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    ["VmRSS", "RssAnon"]
        .into_iter()
        .filter_map(|field| {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
            let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((field, kib * 1024))
        })
        .collect()
}

/// A file by identity: what a path names can change, a device and inode cannot (while the
/// file lives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// The file a process runs, by identity: exec changes it.
#[derive(Clone, Debug)]
pub struct Executable {
    pub id: FileId,
    /// Where it is (or was), for messages.
    pub path: PathBuf,
}

/// What `pid` runs now; `None` once it is gone (or has no executable, as a zombie or a
/// kernel thread).
#[must_use]
pub fn executable(pid: u32) -> Option<Executable> {
    let exe = format!("/proc/{pid}/exe");
    let meta = fs::metadata(&exe).ok()?;
    Some(Executable {
        id: FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        path: fs::read_link(&exe).ok()?,
    })
}

/// Every process now (by pid), from `/proc`.
#[must_use]
pub fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The parent of `pid`, from `/proc/PID/stat`.
#[must_use]
pub fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The descendants of `root` now (not `root` itself), parents before their children.
#[must_use]
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    for pid in all_pids() {
        if let Some(ppid) = parent(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.push(child);
            next.push(child);
        }
    }
    found
}

/// Where the kernel loaded `binary` in process `pid`: run-time minus link-time addresses.
/// 0 for fixed-address executables; for PIE, found in `/proc/PID/maps` by the executable's
/// device and inode (its path there may be a deleted file or one in another mount
/// namespace).
pub fn load_bias(pid: u32, binary: &GoBinary) -> Result<u64, ProcessError> {
    if !binary.is_pie() {
        return Ok(0);
    }
    let access = |reason| ProcessError::Access { pid, reason };
    let exe = fs::metadata(format!("/proc/{pid}/exe")).map_err(access)?;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).map_err(access)?;
    maps.lines()
        .filter_map(Mapping::parse)
        .filter(|m| {
            m.inode == exe.ino() && m.dev == (libc::major(exe.dev()), libc::minor(exe.dev()))
        })
        .find_map(|m| Some(m.start.wrapping_sub(binary.vaddr_of_file_offset(m.offset)?)))
        .ok_or(ProcessError::NotMapped(pid))
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: u64,
    offset: u64,
    dev: (u32, u32),
    inode: u64,
}

impl Mapping {
    /// `start-end perms offset major:minor inode path`
    fn parse(line: &str) -> Option<Self> {
        let mut f = line.split_whitespace();
        let start = u64::from_str_radix(f.next()?.split_once('-')?.0, 16).ok()?;
        let _perms = f.next()?;
        let offset = u64::from_str_radix(f.next()?, 16).ok()?;
        let (major, minor) = f.next()?.split_once(':')?;
        let dev = (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        );
        let inode = f.next()?.parse().ok()?;
        Some(Self {
            start,
            offset,
            dev,
            inode,
        })
    }
}

/// A pidfd for `pid`: readable once the process has exited.
pub fn pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall; the returned descriptor is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::from(ErrorKind::InvalidData))?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind `pidfd` (pid `pid`) has really exited: a pidfd's readiness
/// alone is not taken as the answer. The pidfd's fdinfo says `Pid: -1` once the process
/// is reaped; until then the pid is still its own, and `/proc` tells a zombie.
#[must_use]
pub fn has_exited(pid: u32, pidfd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd as _;
    let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()));
    let reaped = fdinfo.is_ok_and(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .is_some_and(|p| p.trim() == "-1")
    });
    reaped
        || fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_is_confirmed_not_assumed() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let fd = pidfd(child.id()).unwrap();
        assert!(!has_exited(child.id(), &fd));
        child.kill().unwrap();
        // A zombie until reaped, then gone: exited either way.
        for _ in 0..500 {
            if has_exited(child.id(), &fd) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(has_exited(child.id(), &fd));
        child.wait().unwrap();
        assert!(has_exited(child.id(), &fd));
    }

    #[test]
    fn inspects_itself() {
        let me = Process::inspect(std::process::id()).unwrap();
        assert_eq!(me.exe_name, std::env::current_exe().unwrap());
    }

    #[test]
    fn reads_resident_memory() {
        let rss = resident_memory(std::process::id());
        assert_eq!(
            rss.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            ["VmRSS", "RssAnon"]
        );
        assert!(rss.iter().all(|(_, b)| *b > 0 && b % 1024 == 0), "{rss:?}");
        assert!(resident_memory(u32::MAX).is_empty());
    }

    #[test]
    fn parses_maps_lines() {
        assert_eq!(
            Mapping::parse(
                "55d0c8a00000-55d0c8b2e000 r--p 00001000 fd:01 1837 /usr/bin/x (deleted)"
            ),
            Some(Mapping {
                start: 0x55d0_c8a0_0000,
                offset: 0x1000,
                dev: (0xfd, 1),
                inode: 1837,
            })
        );
        assert_eq!(Mapping::parse("garbage"), None);
    }

    #[test]
    fn missing_and_kernel_processes() {
        assert!(matches!(
            Process::inspect(0),
            Err(ProcessError::NotFound(0))
        ));
        assert!(matches!(
            Process::inspect(u32::MAX),
            Err(ProcessError::NotFound(_))
        ));
        // kthreadd is pid 2 on Linux.
        assert!(matches!(
            Process::inspect(2),
            Err(ProcessError::KernelThread(2))
        ));
    }
}
