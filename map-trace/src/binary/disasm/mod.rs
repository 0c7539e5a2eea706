//! Where to put probes inside a Go function, found by decoding that exact binary's code:
//! its entry, where the prologue's stack check has passed, and every RET. Each
//! architecture has its decoder.

mod amd64;
mod arm64;

use thiserror::Error;

use super::arch::Arch;

/// The stack check sits in the first few instructions; stop looking after these.
const PROLOGUE_WINDOW: usize = 8;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DisasmError {
    #[error("invalid instruction at {0:#x}")]
    Invalid(u64),
    #[error("the stack check at {0:#x} is not followed by its branch to morestack")]
    UnexpectedPrologue(u64),
}

/// Where a function's entry probe goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub addr: u64,
    /// On the stack check's conditional branch to `morestack` itself: the probe counts only
    /// a hit where the branch is not taken (the eBPF side reads the flags).
    pub on_stack_branch: bool,
}

impl Entry {
    const fn at(addr: u64) -> Self {
        Self {
            addr,
            on_stack_branch: false,
        }
    }
}

/// The entry probe's site, past the stack check: a probe on the first byte would fire
/// twice for one call when the stack grows, because `morestack` jumps back to the entry.
/// A function without a stack check (nosplit: it never re-enters) is probed at its first
/// byte. `stackguard0_offset` is where `g.stackguard0` sits in the goroutine.
///
/// - amd64: the instruction after the `JBE`.
/// - arm64: the `BLS` itself, with [`Entry::on_stack_branch`]. The kernel simulates a
///   branch in place, while the instruction after it (`MOVD.W R30, -N(RSP)`, a store that
///   moves the stack pointer) would be single-stepped out of line, from a slot the kernel
///   rewrites for every hit; at the branch, the registers are those after it.
pub fn entry_site(
    arch: Arch,
    code: &[u8],
    addr: u64,
    stackguard0_offset: u64,
) -> Result<Entry, DisasmError> {
    match arch {
        Arch::Amd64 => amd64::entry_after_prologue(code, addr, stackguard0_offset).map(Entry::at),
        Arch::Arm64 => arm64::stack_branch(code, addr, stackguard0_offset).map(|branch| {
            branch.map_or(Entry::at(addr), |at| Entry {
                addr: at,
                on_stack_branch: true,
            })
        }),
    }
}

/// Every RET instruction in the function: where exit probes go (never uretprobes: Go moves
/// stacks and would find the hijacked return address).
pub fn return_sites(arch: Arch, code: &[u8], addr: u64) -> Result<Vec<u64>, DisasmError> {
    match arch {
        Arch::Amd64 => amd64::return_sites(code, addr),
        Arch::Arm64 => arm64::return_sites(code, addr),
    }
}

/// The branch after the stack check must leave code to probe: one ending the function
/// would put the probe in the next one.
fn inside(code: &[u8], addr: u64, at: u64) -> bool {
    u64::try_from(code.len()).is_ok_and(|len| at.wrapping_sub(addr) < len)
}

#[cfg(test)]
mod tests {
    use proptest::{collection::vec, prelude::*};

    use super::*;

    /// Probe sites are inside the code, or its first byte when nothing could be decoded.
    pub(super) fn check_sites(
        arch: Arch,
        code: &[u8],
        addr: u64,
        stackguard0: u64,
    ) -> Result<(), TestCaseError> {
        let inside = |at: u64| at == addr || at.wrapping_sub(addr) < code.len() as u64;
        if let Ok(entry) = entry_site(arch, code, addr, stackguard0) {
            prop_assert!(inside(entry.addr), "entry {entry:x?}");
        }
        if let Ok(rets) = return_sites(arch, code, addr) {
            prop_assert!(rets.iter().all(|&r| inside(r)), "{rets:x?}");
        }
        Ok(())
    }

    proptest! {
        // Cheap cases: many of them still run in well under a second.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn arbitrary_code_never_panics(
            code in vec(any::<u8>(), 0..64),
            addr in any::<u64>(),
            stackguard0 in 0..0x40_u64,
            arch in prop_oneof![Just(Arch::Amd64), Just(Arch::Arm64)],
        ) {
            check_sites(arch, &code, addr, stackguard0)?;
        }
    }
}
