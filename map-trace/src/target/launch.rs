//! `map-trace -- CMD`: start the command held before exec, so probes are attached before its
//! first instruction runs.

use std::{
    ffi::{CString, OsString},
    os::{fd::OwnedFd, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use nix::{
    sys::{
        signal::{Signal, kill},
        wait::{WaitPidFlag, waitpid},
    },
    unistd::{ForkResult, Pid, close, execv, fork, pipe, read, write},
};

/// The byte that lets a held child exec.
const GO: [u8; 1] = *b"g";

/// A forked child blocked before `exec` until [`HeldChild::release`].
#[derive(Debug)]
pub struct HeldChild {
    pid: Pid,
    /// Closing this lets the child go on to `exec`.
    gate: Option<OwnedFd>,
}

/// Finds `program` like a shell does: as given when it has a slash, otherwise on `PATH`.
pub fn resolve_command(program: &OsString) -> anyhow::Result<PathBuf> {
    let path = Path::new(program);
    let found = if program.as_bytes().contains(&b'/') {
        Some(path.to_owned()).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|dirs| {
            std::env::split_paths(&dirs)
                .map(|d| d.join(path))
                .find(|p| p.is_file())
        })
    };
    let found = found.with_context(|| {
        format!(
            "command `{}` not found: give a path or put it on PATH",
            path.display()
        )
    })?;
    found
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", found.display()))
}

impl HeldChild {
    /// Forks; the child waits on a pipe, then execs `exe` with `argv`.
    ///
    /// Must run while the process is single-threaded: only async-signal-safe calls happen in
    /// the child between fork and exec.
    pub fn spawn(exe: &Path, argv: &[OsString]) -> anyhow::Result<Self> {
        let exe_c = CString::new(exe.as_os_str().as_bytes()).context("NUL byte in command")?;
        let argv_c = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .context("NUL byte in command arguments")?;
        let (wait_end, gate) = pipe().context("pipe")?;
        // SAFETY: single-threaded here; the child only calls read/close/execv/_exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => {
                drop(gate);
                let mut byte = [0_u8; 1];
                // Only the go byte lets it run: EOF means map-trace died before attaching.
                let go = matches!(read(&wait_end, &mut byte), Ok(1)) && byte == GO;
                let _ = close(wait_end);
                if go {
                    let _ = execv(&exe_c, &argv_c);
                }
                // SAFETY: leave without running the parent's destructors or atexit handlers.
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => {
                drop(wait_end);
                Ok(Self {
                    pid: child,
                    gate: Some(gate),
                })
            }
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Lets the child exec.
    pub fn release(&mut self) -> anyhow::Result<()> {
        let gate = self.gate.take().context("child already released")?;
        write(&gate, &GO).context("releasing the held command")?;
        Ok(())
    }

    /// Reaps the child if it has exited; one still running (the run ended by `--duration`
    /// or a signal) is left to run on, as a traced `--pid` process would.
    pub fn reap(&self) {
        let _ = waitpid(self.pid, Some(WaitPidFlag::WNOHANG));
    }
}

impl Drop for HeldChild {
    /// A child never released (an error before attaching finished) must not run untraced.
    fn drop(&mut self) {
        if self.gate.is_some() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}
