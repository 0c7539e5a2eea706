//! `map-trace -- CMD`: start the command stopped right after its `exec`, so probes are
//! attached (and a PIE's load address is known) before its first instruction runs.

use std::{
    ffi::{CString, OsString},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::{
        ptrace,
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::{ForkResult, Pid, execv, fork},
};

/// A started command, stopped by ptrace at its exec until [`HeldChild::release`].
#[derive(Debug)]
pub struct HeldChild {
    pid: Pid,
    /// Still stopped: must not run untraced if map-trace gives up.
    held: bool,
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
    /// Forks; the child asks to be traced and execs `exe` with `argv`, which stops it with
    /// the new program mapped and not yet run.
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
        // SAFETY: single-threaded here; the child only calls ptrace/execv/_exit.
        match unsafe { fork() }.context("fork")? {
            ForkResult::Child => {
                if ptrace::traceme().is_ok() {
                    let _ = execv(&exe_c, &argv_c);
                }
                // SAFETY: leave without running the parent's destructors or atexit handlers.
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => {
                let mut held = Self {
                    pid: child,
                    held: true,
                };
                match waitpid(child, None).context("waiting for the command to start")? {
                    WaitStatus::Stopped(_, Signal::SIGTRAP) => {}
                    WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                        held.held = false;
                        bail!("cannot run {}: exec failed", exe.display());
                    }
                    other => bail!("the command stopped unexpectedly ({other:?})"),
                }
                // Should map-trace die before releasing it, the command dies too rather
                // than run untraced.
                ptrace::setoptions(child, ptrace::Options::PTRACE_O_EXITKILL)
                    .context("holding the started command")?;
                Ok(held)
            }
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Lets the command run, no longer traced by ptrace.
    pub fn release(&mut self) -> anyhow::Result<()> {
        ptrace::detach(self.pid, None).context("releasing the started command")?;
        self.held = false;
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
        if self.held {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}
