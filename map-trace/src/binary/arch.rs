//! The instruction sets map-trace reads, and the one this build traces: the eBPF programs
//! it carries read one architecture's registers, so an arm64 program needs the arm64 build.

use std::fmt;

/// An instruction set of Go programs map-trace reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The architecture this map-trace was built for, whose programs it can trace.
    pub const NATIVE: Arch = if cfg!(target_arch = "aarch64") {
        Arch::Arm64
    } else {
        Arch::Amd64
    };

    /// The architecture of an ELF file's machine, if map-trace reads it.
    #[must_use]
    pub fn of(machine: object::Architecture) -> Option<Self> {
        match machine {
            object::Architecture::X86_64 => Some(Arch::Amd64),
            object::Architecture::Aarch64 => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The dynamic relocation a PIE's loader fills a pointer with (base + addend).
    #[must_use]
    pub const fn relative_relocation(self) -> u32 {
        match self {
            Arch::Amd64 => object::elf::R_X86_64_RELATIVE,
            Arch::Arm64 => object::elf::R_AARCH64_RELATIVE,
        }
    }

    /// The name of map-trace's build for this architecture, as `cargo xtask dist` ships it.
    #[must_use]
    pub const fn build(self) -> &'static str {
        match self {
            Arch::Amd64 => "map-trace (x86_64)",
            Arch::Arm64 => "map-trace-aarch64",
        }
    }
}

impl fmt::Display for Arch {
    /// Go's names (`GOARCH`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        })
    }
}
