//! A whole file through `GoBinary::parse`, then everything map-trace asks of a binary: the
//! runtime's functions and their code, the probe plan (prologue and RET decoding), call
//! sites and type names. Seed it with real Go binaries (see ../README.md).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use map_trace::{
    cli::EventSet,
    events::{Raw, TraceEvent},
    goruntime::{self, GoVersion, LAYOUTS, Layout, Runtime},
    plan,
    resolve::Resolver,
    binary::GoBinary,
};
use map_trace_common::{EventKind, KeyKind, STACK_DEPTH};

/// Type addresses tried per input.
const MAX_TYPES: u64 = 512;

/// The little-endian word at link-time address `vaddr`, read through the file mapping.
fn word(binary: &GoBinary, data: &[u8], vaddr: u64) -> Option<u64> {
    let at = usize::try_from(binary.file_offset(vaddr)?).ok()?;
    Some(u64::from_le_bytes(
        data.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fuzz_target!(|data: &[u8]| {
    let Ok(binary) = GoBinary::parse(Path::new("fuzz"), data.to_vec()) else {
        return;
    };
    let _ = (binary.version(), binary.is_pie(), binary.path());
    let mut pcs = vec![0, 1, u64::MAX];
    for f in LAYOUTS.iter().flat_map(Layout::all_functions) {
        let Some(bounds) = binary.function(f.symbol) else {
            continue;
        };
        assert!(binary.has_function(f.symbol));
        if let Some(code) = binary.code(bounds) {
            assert_eq!(code.len() as u64, bounds.size);
        }
        pcs.extend(
            [0, 1, bounds.size / 2, bounds.size]
                .into_iter()
                .map(|off| bounds.addr.wrapping_add(off)),
        );
    }
    if let Some(main) = binary.function("main.main") {
        pcs.extend(
            (0..main.size)
                .step_by(7)
                .take(64)
                .map(|off| main.addr + off),
        );
    }
    for &pc in &pcs {
        for frame in binary.symbolize(pc) {
            let _ = (frame.function, frame.file, frame.line);
        }
        if let Some(off) = binary.file_offset(pc) {
            let _ = binary.vaddr_of_file_offset(off);
        }
    }

    // Type names: across the type section that moduledata bounds, when the symbol table
    // says where moduledata is.
    let layout = GoVersion::parse(binary.version())
        .ok()
        .and_then(|v| goruntime::release(v.minor))
        .map(|l| l.moduledata);
    if let (Some(layout), Some(md)) = (layout, binary.object("runtime.firstmoduledata")) {
        let field = |off: u64| md.checked_add(off).and_then(|at| word(&binary, data, at));
        if let (Some(types), Some(etypes)) = (field(layout.types), field(layout.etypes)) {
            let step = (etypes.saturating_sub(types) / MAX_TYPES).max(8);
            for addr in (0..MAX_TYPES).map(|i| types.wrapping_add(i * step)) {
                let _ = (binary.type_name(addr), binary.type_kind(addr));
                if let Some(key) = binary.map_key_type(addr) {
                    let _ = binary.type_name(key);
                }
            }
        }
    }

    // What a session does with it: the probe plan, then naming an event's addresses.
    let Ok(runtime) = binary.runtime() else {
        return;
    };
    if let Ok(plan) = plan::plan(&binary, &runtime, &EventSet::all()) {
        for point in &plan.points {
            assert_eq!(binary.file_offset(point.addr), Some(point.file_offset));
        }
    }
    let mut stack = [0; STACK_DEPTH];
    for (slot, pc) in stack.iter_mut().zip(pcs.iter().skip(3)) {
        *slot = *pc;
    }
    let mut resolver = Resolver::new(binary, 0, true);
    let mut event = TraceEvent::bare(EventKind::Assign, 0, 1, 1);
    let raw = Raw {
        map_type: pcs.get(4).copied().unwrap_or(1),
        stack,
        key_kind: KeyKind::Mem,
        key: Some(&data[..data.len().min(16)]),
    };
    resolver.resolve(&mut event, &raw);
});
