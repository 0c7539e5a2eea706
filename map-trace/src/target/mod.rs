//! The traced process and its executable: what is running, and what its binary says about
//! itself (build info, symbols, machine code).

pub mod binary;
pub mod buildinfo;
pub mod buildversion;
pub mod disasm;
pub mod gotypes;
pub mod launch;
#[cfg(test)]
pub(crate) mod mutate;
pub mod pclntab;
pub mod process;
