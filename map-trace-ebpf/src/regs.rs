//! The registers a probe reads, per architecture: the Go register ABI's first four integer
//! arguments (by position, as [`Reg`] names them), the goroutine register, the frame
//! pointer, and where the return address is at a function's entry and at its RETs.
//!
//! | | arguments | g | frame pointer | return address |
//! |---|---|---|---|---|
//! | amd64 | RAX RBX RCX RDI | R14 | RBP | at `[RSP]` |
//! | arm64 | R0 R1 R2 R3 | R28 | R29 | in the link register, R30 |
//!
//! and, on arm64, the condition flags at an entry probe on the stack check's branch.
//!
//! Go keeps the same frame record on both (saved frame pointer, then return address), so
//! the frame walk above the first frame is shared.

use aya_ebpf::bindings::pt_regs;
use map_trace_common::Reg;

/// The registers of one hit, copied out of the context.
#[derive(Clone, Copy)]
pub struct Regs {
    args: [u64; 4],
    /// The goroutine (`runtime.g`).
    pub g: u64,
    /// The caller's frame pointer at entry and at a RET.
    pub fp: u64,
    /// amd64: the stack pointer, where the return address is; arm64: the link register.
    link: u64,
}

impl Regs {
    /// Volatile loads at fixed offsets: the verifier refuses a context access at a computed
    /// offset, which the optimiser would otherwise make of a loop or a match.
    #[cfg(bpf_target_arch = "x86_64")]
    #[inline(always)]
    pub fn read(regs: *const pt_regs) -> Self {
        // SAFETY: `regs` is the probe's context; each field is read once at its own offset.
        unsafe {
            Self {
                args: [
                    core::ptr::read_volatile(&raw const (*regs).rax),
                    core::ptr::read_volatile(&raw const (*regs).rbx),
                    core::ptr::read_volatile(&raw const (*regs).rcx),
                    core::ptr::read_volatile(&raw const (*regs).rdi),
                ],
                g: core::ptr::read_volatile(&raw const (*regs).r14),
                fp: core::ptr::read_volatile(&raw const (*regs).rbp),
                link: core::ptr::read_volatile(&raw const (*regs).rsp),
            }
        }
    }

    /// As for amd64; `pt_regs` is the kernel's `user_pt_regs` here (`regs[31]`, sp, pc).
    #[cfg(bpf_target_arch = "aarch64")]
    #[inline(always)]
    pub fn read(regs: *const pt_regs) -> Self {
        // SAFETY: `regs` is the probe's context; each field is read once at its own offset.
        unsafe {
            Self {
                args: [
                    core::ptr::read_volatile(&raw const (*regs).regs[0]),
                    core::ptr::read_volatile(&raw const (*regs).regs[1]),
                    core::ptr::read_volatile(&raw const (*regs).regs[2]),
                    core::ptr::read_volatile(&raw const (*regs).regs[3]),
                ],
                g: core::ptr::read_volatile(&raw const (*regs).regs[28]),
                fp: core::ptr::read_volatile(&raw const (*regs).regs[29]),
                link: core::ptr::read_volatile(&raw const (*regs).regs[30]),
            }
        }
    }

    #[inline(always)]
    pub fn get(&self, r: Reg) -> u64 {
        match r {
            Reg::Arg0 => self.args[0],
            Reg::Arg1 => self.args[1],
            Reg::Arg2 => self.args[2],
            Reg::Arg3 => self.args[3],
        }
    }

    /// Where the probed function returns to: its caller's PC, the first frame of a stack.
    /// Valid at the entry (after the stack check) and at every RET, where the return
    /// address is where the call left it.
    #[cfg(bpf_target_arch = "x86_64")]
    #[inline(always)]
    pub fn return_address(&self) -> Result<u64, i32> {
        // SAFETY: reading user memory through the faulting-safe helper.
        unsafe { aya_ebpf::helpers::bpf_probe_read_user(self.link as *const u64) }
    }

    /// arm64's BL leaves the return address in the link register, which the prologue saves
    /// only after the entry probe and the epilogue restores before RET.
    #[cfg(bpf_target_arch = "aarch64")]
    #[inline(always)]
    #[expect(
        clippy::unnecessary_wraps,
        reason = "amd64 reads it from memory, which can fail"
    )]
    pub fn return_address(&self) -> Result<u64, i32> {
        Ok(self.link)
    }
}

/// At an entry probe on the stack check's `BLS` (arm64): whether the branch to `morestack`
/// is taken, by the condition flags the check left (LS: carry clear or zero set).
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub fn to_morestack(regs: *const pt_regs) -> bool {
    const C: u64 = 1 << 29;
    const Z: u64 = 1 << 30;
    // SAFETY: `regs` is the probe's context; the field is read at its fixed offset.
    let pstate = unsafe { core::ptr::read_volatile(&raw const (*regs).pstate) };
    pstate & C == 0 || pstate & Z != 0
}

/// amd64's entry probes sit after the branch (the kernel emulates the instruction there).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub fn to_morestack(_regs: *const pt_regs) -> bool {
    false
}
