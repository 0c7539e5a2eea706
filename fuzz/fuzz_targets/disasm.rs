//! Probe placement on arbitrary machine code: the post-prologue entry and the RET sites.
//! Input: the function's address (8 bytes), `g.stackguard0`'s offset (1 byte), the code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_trace::binary::disasm;

fuzz_target!(|data: &[u8]| {
    let Some((addr, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Some((&stackguard0, code)) = rest.split_first() else {
        return;
    };
    let addr = u64::from_le_bytes(*addr);
    // Wherever a probe goes, it is inside the function's code (or at its first byte).
    let inside = |at: u64| at == addr || at.wrapping_sub(addr) < code.len() as u64;
    if let Ok(entry) = disasm::entry_after_prologue(code, addr, u64::from(stackguard0)) {
        assert!(
            inside(entry),
            "entry {entry:#x} outside {addr:#x}+{}",
            code.len()
        );
    }
    if let Ok(rets) = disasm::return_sites(code, addr) {
        assert!(rets.iter().all(|&r| inside(r)));
    }
});
