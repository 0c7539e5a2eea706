//! `map-trace -- CMD`: start the command so that it runs nothing of its program before its
//! probes are attached. The child waits at a gate (a pipe) until map-trace follows its
//! pid; then it execs, and the kernel's exec tracepoint stops it there (SIGSTOP) until
//! map-trace has attached it and sends SIGCONT, as for every descendant.

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
    unistd::{ForkResult, Pid, execv, fork, pipe, read, write},
};

/// A started command, waiting at its gate until [`Launched::release`].
#[derive(Debug)]
pub struct Launched {
    pid: Pid,
    /// The gate's write end: the child execs once a byte arrives (or it closes).
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

impl Launched {
    /// Forks; the child waits at the gate, then execs `exe` with `argv`.
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
        let (wait_end, gate) = pipe().context("making the command's start gate")?;
        // SAFETY: single-threaded here; the child only calls read/execv/_exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => {
                drop(gate);
                let mut byte = [0_u8];
                // A byte: go. End of file: map-trace gave up, so the command never runs.
                if matches!(read(&wait_end, &mut byte), Ok(1)) {
                    let _ = execv(&exe_c, &argv_c);
                }
                // SAFETY: leave without running the parent's destructors or atexit handlers.
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => Ok(Self {
                pid: child,
                gate: Some(gate),
            }),
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Lets the command exec its program.
    pub fn release(&mut self) -> anyhow::Result<()> {
        if let Some(gate) = self.gate.take() {
            write(&gate, b"x").context("releasing the started command")?;
        }
        Ok(())
    }

    /// Reaps the child if it has exited; one still running (the run ended by `--duration`
    /// or a signal) is left to run on, as a traced `--pid` process would.
    pub fn reap(&self) {
        let _ = waitpid(self.pid, Some(WaitPidFlag::WNOHANG));
    }
}

impl Drop for Launched {
    /// A child never released (an error before attaching finished) never runs its command.
    fn drop(&mut self) {
        if self.gate.take().is_some() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}
