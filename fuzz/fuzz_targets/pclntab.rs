//! `.gopclntab` on its own: the header, every function's record, name and size, pc lookup
//! and inlined frames. Input: the section's bytes (a real one: `objcopy -O binary
//! --only-section=.gopclntab`); the text start is the header's own (Go ≤ 1.25) or Go's
//! default.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_trace::binary::pclntab::{self, FUNCDATA_INL_TREE, Pclntab};

/// Functions looked at per input: enough to reach past the first few, cheap per run.
const MAX_FUNCS: usize = 256;
/// Where Go links text on amd64 when the header does not say.
const DEFAULT_TEXT: u64 = 0x40_1000;

fuzz_target!(|data: &[u8]| {
    let _ = pclntab::uvarint(data);
    let text = data
        .get(24..32)
        .and_then(|w| w.try_into().ok())
        .map(u64::from_le_bytes)
        .filter(|&t| t != 0)
        .unwrap_or(DEFAULT_TEXT);
    let Ok(tab) = Pclntab::parse(data, text) else {
        return;
    };
    assert!(tab.funcnametab_offset() <= data.len());
    let mut previous = None;
    let n = tab.function_count();
    // The first functions and the last ones: corrupt tables often go wrong at the end.
    for i in (0..n.min(MAX_FUNCS)).chain(n.saturating_sub(MAX_FUNCS / 4).max(MAX_FUNCS)..n) {
        let Ok(f) = tab.func(i) else {
            continue;
        };
        let _ = tab.name(&f);
        let size = tab.size(&f).unwrap_or(1);
        // Any bytes of the input may be taken for an inline tree.
        let inl_tree = f
            .funcdata(FUNCDATA_INL_TREE)
            .and_then(|off| data.get(usize::try_from(off).ok()?..));
        for pc in [0, 1, size / 2, size.saturating_sub(1), size] {
            let pc = f.entry.wrapping_add(pc);
            if let Some(g) = tab.func_at(pc) {
                assert!(g.entry <= pc, "{:#x} holds {pc:#x}", g.entry);
            }
            let frames = tab.frames(&f, pc, inl_tree);
            assert_ne!(frames, []);
        }
        if let Some(other) = previous {
            let _ = tab.is_abi0_of_pair(&f, &other);
        }
        previous = Some(f);
    }
    for pc in [0, text.wrapping_sub(1), text, u64::MAX] {
        let _ = tab.func_at(pc);
    }
});
