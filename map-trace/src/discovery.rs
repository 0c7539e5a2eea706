//! Which processes to trace, and when they appear: those running at the start (`--pid`
//! and its descendants, or every process under `--all`, from `/proc`), and those that
//! exec later, which the kernel's exec tracepoint reports on its own ring buffer.

use std::path::Path;

use map_trace_common::{HELD, HOLD_FAILED, ProcessRecord};

use crate::process;

/// Which processes a run traces.
#[derive(Debug)]
pub enum Scope {
    /// One process (a `--pid`, or the started command) and, with `follow`, its
    /// descendants.
    Tree { root: u32, follow: bool },
    /// Every process whose executable matches one of the globs (every one, if none).
    All { exe: Vec<glob::Pattern> },
}

impl Scope {
    /// The processes to look at when tracing starts: under `--all` every process, for a
    /// followed `--pid` its descendants (the root itself is attached first, apart).
    #[must_use]
    pub fn running(&self) -> Vec<u32> {
        let me = std::process::id();
        match self {
            Scope::All { .. } => process::all_pids()
                .into_iter()
                .filter(|&p| p != me)
                .collect(),
            Scope::Tree { root, follow: true } => process::descendants(*root),
            Scope::Tree { follow: false, .. } => Vec::new(),
        }
    }

    /// Whether a process running `exe` is one to trace (`--exe`): by its path or its file
    /// name.
    #[must_use]
    pub fn wants(&self, exe: &Path) -> bool {
        match self {
            Scope::All { exe: globs } if !globs.is_empty() => {
                let name = exe.file_name().map(Path::new);
                globs
                    .iter()
                    .any(|g| g.matches_path(exe) || name.is_some_and(|n| g.matches_path(n)))
            }
            _ => true,
        }
    }
}

/// A process that exec'd, as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exec {
    pub pid: u32,
    pub time_ns: u64,
    /// A descendant of a followed process (else reported for `--all`).
    pub followed: bool,
    /// Stopped at its exec: it waits for SIGCONT.
    pub held: bool,
    /// It should have been stopped, and the kernel refused.
    pub hold_failed: bool,
}

/// Decodes one record of the exec ring buffer; `None` for a record of another size.
#[must_use]
pub fn decode(record: &[u8]) -> Option<Exec> {
    if record.len() != size_of::<ProcessRecord>() {
        return None;
    }
    // SAFETY: length checked; `ProcessRecord` is plain integers, valid for any bytes.
    let r: ProcessRecord = unsafe { record.as_ptr().cast::<ProcessRecord>().read_unaligned() };
    Some(Exec {
        pid: r.pid,
        time_ns: r.time_ns,
        followed: r.followed != 0,
        held: r.held == HELD,
        hold_failed: r.held == HOLD_FAILED,
    })
}

/// Lets a process stopped at its exec run on.
pub fn resume(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn exe_globs_match_the_path_or_the_file_name() {
        let scope = Scope::All {
            exe: vec![
                glob::Pattern::new("*-server").unwrap(),
                glob::Pattern::new("/opt/**/worker").unwrap(),
            ],
        };
        assert!(scope.wants(&PathBuf::from("/usr/bin/api-server")));
        assert!(scope.wants(&PathBuf::from("/opt/app/v2/worker")));
        assert!(!scope.wants(&PathBuf::from("/usr/bin/worker")));
        assert!(!scope.wants(&PathBuf::from("/usr/bin/api-server-old")));
        let everything = Scope::All { exe: Vec::new() };
        assert!(everything.wants(&PathBuf::from("/bin/sh")));
    }

    #[test]
    fn exec_records_decode_and_others_do_not() {
        let r = ProcessRecord {
            time_ns: 7,
            pid: 42,
            followed: 1,
            held: HELD,
            pad: [0; 2],
        };
        // SAFETY: a plain struct viewed as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const r).cast::<u8>(), size_of::<ProcessRecord>())
        };
        let exec = decode(bytes).unwrap();
        assert_eq!((exec.pid, exec.time_ns), (42, 7));
        assert!(exec.followed && exec.held && !exec.hold_failed);
        assert_eq!(decode(&bytes[1..]), None);
    }
}
