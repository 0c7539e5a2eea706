//! `runtime.moduledata` and type descriptors over arbitrary memory. Input: a selector byte
//! (version table row, whether the symbol table names moduledata), then the memory, loaded at
//! `BASE`. Its first two words are the pclntab and funcnametab addresses to look for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_trace::{
    goruntime::LAYOUTS,
    binary::gotypes::{Memory, Module},
};

const BASE: u64 = 0x50_0000;
/// Type addresses tried per input.
const MAX_TYPES: u64 = 256;

/// One segment of bytes at `BASE`, with no relocations.
struct Segment<'a>(&'a [u8]);

impl Memory for Segment<'_> {
    fn bytes_at(&self, vaddr: u64) -> Option<&[u8]> {
        let at = usize::try_from(vaddr.checked_sub(BASE)?).ok()?;
        self.0.get(at..).filter(|b| !b.is_empty())
    }

    fn pointer_at(&self, vaddr: u64) -> Option<u64> {
        Some(u64::from_le_bytes(
            self.bytes_at(vaddr)?.get(..8)?.try_into().ok()?,
        ))
    }

    fn data_words(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (BASE..)
            .step_by(8)
            .zip(self.0.as_chunks::<8>().0)
            .map(|(at, w)| (at, u64::from_le_bytes(*w)))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let mem = Segment(bytes);
    let word = |i: u64| mem.pointer_at(BASE + 8 * i).unwrap_or_default();
    let Some(layout) = LAYOUTS
        .get(usize::from(selector & 0x7f) % LAYOUTS.len())
        .map(|l| l.moduledata)
    else {
        return;
    };
    let symbol = (selector & 0x80 != 0).then(|| word(2));
    let module = Module::find(&mem, &layout, word(0), word(1), symbol).unwrap_or_else(|_| {
        // Not found: still read types through a moduledata taken from the input.
        Module {
            text: word(3),
            types: word(4),
            etypes: word(5),
            gofunc: word(6),
        }
    });
    let span = module.etypes.saturating_sub(module.types);
    let step = (span / MAX_TYPES).max(8);
    let addrs = (0..MAX_TYPES)
        .map(|i| module.types.wrapping_add(i * step))
        .chain((7..16).map(word));
    for addr in addrs {
        let _ = module.type_name(&mem, addr);
        let _ = module.type_kind(&mem, addr);
        if let Some(key) = module.map_key_type(&mem, addr) {
            let _ = module.type_name(&mem, key);
        }
    }
});
