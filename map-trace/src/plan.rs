//! From a binary and its runtime's layout to the exact probe points: which functions exist,
//! where each one's body starts after the stack check, and at which file offset.

use map_trace_common::ProbeCookie;
use thiserror::Error;

use crate::{
    cli::EventSet,
    goruntime::{MapFunction, Runtime},
    target::{binary::GoBinary, disasm},
};

#[derive(Debug, Error)]
pub enum PlanError {
    #[error(
        "{path} has no symbol table (built with -ldflags=-s?): map-trace needs symbols to find the map functions; trace an unstripped build"
    )]
    Stripped { path: String },
    #[error(
        "{path} contains none of the runtime's map functions for the events asked for: the program uses no maps of those kinds, or --events left nothing to trace"
    )]
    NothingToProbe { path: String },
    #[error("{symbol}: {what}: cannot place a probe safely")]
    Function { symbol: &'static str, what: String },
}

/// One uprobe to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    pub function: MapFunction,
    /// Virtual address of the probed instruction.
    pub addr: u64,
    /// Where that instruction is in the file: what the kernel attaches uprobes by.
    pub file_offset: u64,
    pub cookie: ProbeCookie,
}

#[derive(Debug)]
pub struct Plan {
    pub points: Vec<ProbePoint>,
    /// Functions of the runtime that the linker left out of this binary.
    pub missing: Vec<&'static str>,
}

pub fn plan(binary: &GoBinary, runtime: &Runtime, events: &EventSet) -> Result<Plan, PlanError> {
    let path = || binary.path().display().to_string();
    if !binary.has_symbols() {
        return Err(PlanError::Stripped { path: path() });
    }
    let mut points = Vec::new();
    let mut missing = Vec::new();
    for &function in runtime
        .layout
        .functions
        .iter()
        .filter(|f| events.contains(f.kind))
    {
        let Some(bounds) = binary.function(function.symbol) else {
            missing.push(function.symbol);
            continue;
        };
        let fail = |what: String| PlanError::Function {
            symbol: function.symbol,
            what,
        };
        let code = binary
            .code(bounds)
            .ok_or_else(|| fail("code is outside the file".into()))?;
        let addr =
            disasm::entry_after_prologue(code, bounds.addr, runtime.layout.stackguard0_offset)
                .map_err(|e| fail(e.to_string()))?;
        let file_offset = binary
            .file_offset(addr)
            .ok_or_else(|| fail(format!("{addr:#x} is in no loaded segment")))?;
        points.push(ProbePoint {
            function,
            addr,
            file_offset,
            cookie: ProbeCookie {
                kind: function.kind,
                key: function.key,
            },
        });
    }
    if points.is_empty() {
        return Err(PlanError::NothingToProbe { path: path() });
    }
    Ok(Plan { points, missing })
}
