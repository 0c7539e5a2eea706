//! The running process being traced: existence and kind checks, and a pidfd to learn when it
//! exits.

use std::{
    fs,
    io::ErrorKind,
    os::fd::{FromRawFd as _, OwnedFd},
    path::PathBuf,
};

use thiserror::Error;

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
    #[error("cannot inspect pid {pid}: {source} (run map-trace as root)")]
    Access { pid: u32, source: std::io::Error },
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
            Err(source) => return Err(ProcessError::Access { pid, source }),
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
            fs::read_link(&exe).map_err(|source| ProcessError::Access { pid, source })?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
