//! From a binary and its runtime's layout to the exact probe points: which functions exist,
//! where each one's body starts after the stack check, where it returns, and at which file
//! offsets.

use map_trace_common::{EventKind, MAX_FUNCTIONS, ProbeCookie};
use thiserror::Error;

use crate::{
    binary::{GoBinary, disasm},
    cli::EventSet,
    goruntime::{MEMSTATS_SYMBOL, MapFunction, Runtime},
};

#[derive(Debug, Error)]
pub enum PlanError {
    #[error(
        "{path} contains none of the runtime's map functions for the events asked for: the program uses no maps of those kinds, or --events left nothing to trace"
    )]
    NothingToProbe { path: String },
    #[error("{symbol}: {what}: cannot place a probe safely")]
    Function { symbol: &'static str, what: String },
}

/// Which eBPF program a probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A map operation, reported at entry.
    Op,
    /// A GC cycle boundary, reported at entry.
    Gc,
    /// Entry of a timed call.
    Entry,
    /// A RET of a timed call.
    Return,
}

/// One uprobe to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePoint {
    pub function: &'static MapFunction,
    pub role: Role,
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
    /// Where the target counts completed GC cycles (`memstats.numgc`), if known.
    pub gc_cycles_addr: Option<u64>,
}

/// The program that runs at a function's entry.
fn entry_role(kind: EventKind) -> Role {
    match kind {
        EventKind::Gc => Role::Gc,
        _ if kind.is_timed() => Role::Entry,
        _ => Role::Op,
    }
}

pub fn plan(binary: &GoBinary, runtime: &Runtime, events: &EventSet) -> Result<Plan, PlanError> {
    let path = || binary.path().display().to_string();
    let mut points = Vec::new();
    let mut missing = Vec::new();
    for (index, function) in runtime.layout.all_functions().enumerate() {
        if !events.contains(function.kind) {
            continue;
        }
        let Some(bounds) = binary.function(function.symbol) else {
            missing.push(function.symbol);
            continue;
        };
        let fail = |what: String| PlanError::Function {
            symbol: function.symbol,
            what,
        };
        let index = u16::try_from(index)
            .ok()
            .filter(|i| u32::from(*i) < MAX_FUNCTIONS)
            .ok_or_else(|| fail("too many functions in the plan".into()))?;
        let code = binary
            .code(bounds)
            .ok_or_else(|| fail("code is outside the file".into()))?;
        let entry = disasm::entry_site(
            binary.arch(),
            code,
            bounds.addr,
            runtime.layout.stackguard0_offset,
        )
        .map_err(|e| fail(e.to_string()))?;
        let cookie = function.cookie(index, entry.on_stack_branch);
        let mut sites = vec![(entry.addr, entry_role(function.kind))];
        if function.kind.is_timed() {
            let rets = disasm::return_sites(binary.arch(), code, bounds.addr)
                .map_err(|e| fail(e.to_string()))?;
            if rets.is_empty() {
                return Err(fail("no RET instruction found".into()));
            }
            sites.extend(rets.into_iter().map(|ret| (ret, Role::Return)));
        }
        for (addr, role) in sites {
            let file_offset = binary
                .file_offset(addr)
                .ok_or_else(|| fail(format!("{addr:#x} is in no loaded segment")))?;
            points.push(ProbePoint {
                function,
                role,
                addr,
                file_offset,
                cookie,
            });
        }
    }
    if points.is_empty() && !events.contains(EventKind::Madvise) && !events.contains(EventKind::Rss)
    {
        return Err(PlanError::NothingToProbe { path: path() });
    }
    let gc_cycles_addr = binary
        .object(MEMSTATS_SYMBOL)
        .and_then(|memstats| memstats.checked_add(runtime.layout.numgc_offset));
    Ok(Plan {
        points,
        missing,
        gc_cycles_addr,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::binary::testing::{Options, elf};

    fn gc_cycles_addr(memstats: u64) -> Option<u64> {
        let s = elf(&Options {
            symbols: vec![(MEMSTATS_SYMBOL.to_owned(), memstats)],
            ..Options::default()
        });
        let binary = GoBinary::parse(Path::new("synthetic"), s.bytes).unwrap();
        let runtime = binary.runtime().unwrap();
        plan(&binary, &runtime, &EventSet::all())
            .unwrap()
            .gc_cycles_addr
    }

    #[test]
    fn gc_counter_is_in_memstats() {
        let swiss = Runtime::new(
            crate::goruntime::GoVersion::parse("go1.26.6").unwrap(),
            crate::goruntime::Flavour::Swiss,
        )
        .unwrap();
        assert_eq!(
            gc_cycles_addr(0x41_0000),
            Some(0x41_0000 + swiss.layout.numgc_offset)
        );
        // A symbol table can say anything: `memstats + offset` used to overflow.
        assert_eq!(gc_cycles_addr(u64::MAX - 8), None);
    }
}
