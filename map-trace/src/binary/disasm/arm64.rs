//! arm64: `MOVD 16(R28), R16` loads `g.stackguard0`, `CMP R16, RSP` (or a register below
//! RSP, for big frames) and `BLS` to `morestack`; fixed 4-byte instructions, decoded with
//! yaxpeax-arm. Constants the assembler could not encode sit in literal pools inside the
//! function, read only by PC-relative loads: those words are data, never probe sites.

use std::collections::BTreeSet;

use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Instruction, Opcode, Operand, SIMDSizeCode, SizeCode};

use super::{DisasmError, PROLOGUE_WINDOW, inside};

/// The goroutine register.
const G: u16 = 28;
/// `Bcc`'s condition: unsigned lower or same.
const LS: u8 = 0b1001;

/// Each instruction's address and decoding.
fn decode(code: &[u8], addr: u64) -> impl Iterator<Item = (u64, Result<Instruction, DisasmError>)> {
    let decoder = InstDecoder::default();
    let words = code.chunks(4);
    (0_u64..).step_by(4).zip(words).map(move |(at, word)| {
        let at = addr.wrapping_add(at);
        let ins = if word.len() == 4 {
            decoder
                .decode(&mut U8Reader::new(word))
                .map_err(|_| DisasmError::Invalid(at))
        } else {
            Err(DisasmError::Invalid(at))
        };
        (at, ins)
    })
}

/// `LDR Xn, [R28, #stackguard0]`.
fn is_stack_guard_load(ins: &Instruction, stackguard0_offset: u64) -> bool {
    ins.opcode == Opcode::LDR
        && matches!(ins.operands[0], Operand::Register(SizeCode::X, _))
        && matches!(ins.operands[1], Operand::RegPreIndex(G, off, false)
            if u64::try_from(off).is_ok_and(|off| off == stackguard0_offset))
}

/// Ends the straight run of the prologue: an unconditional jump, call or return.
fn leaves(ins: &Instruction) -> bool {
    matches!(
        ins.opcode,
        Opcode::B | Opcode::BL | Opcode::BR | Opcode::BLR | Opcode::RET
    )
}

/// The stack check's `BLS` to `morestack`, if the function has a stack check (see
/// [`super::entry_site`]); the goroutine is in R28. Big frames branch twice to `morestack`
/// (`BLO` when the frame would wrap below zero, then `BLS`): the `BLS` is the last, and
/// the function's body must follow it.
pub(super) fn stack_branch(
    code: &[u8],
    addr: u64,
    stackguard0_offset: u64,
) -> Result<Option<u64>, DisasmError> {
    let mut insns = decode(code, addr).take(PROLOGUE_WINDOW);
    while let Some((at, ins)) = insns.next() {
        let ins = ins?;
        if is_stack_guard_load(&ins, stackguard0_offset) {
            for (branch, ins) in insns.by_ref() {
                let ins = ins?;
                if ins.opcode == Opcode::Bcc(LS) {
                    return if inside(code, addr, branch.wrapping_add(4)) {
                        Ok(Some(branch))
                    } else {
                        Err(DisasmError::UnexpectedPrologue(at))
                    };
                }
                if leaves(&ins) {
                    break;
                }
            }
            return Err(DisasmError::UnexpectedPrologue(at));
        }
        if leaves(&ins) {
            break;
        }
    }
    Ok(None)
}

/// The bytes a PC-relative load reads, from the address it names.
fn literal(at: u64, ins: &Instruction) -> Option<(u64, u64)> {
    let Operand::PCOffset(offset) = ins.operands[1] else {
        return None;
    };
    let size = match (ins.opcode, ins.operands[0]) {
        (
            Opcode::LDR,
            Operand::Register(SizeCode::X, _) | Operand::SIMDRegister(SIMDSizeCode::D, _),
        ) => 8,
        (
            Opcode::LDR,
            Operand::Register(SizeCode::W, _) | Operand::SIMDRegister(SIMDSizeCode::S, _),
        )
        | (Opcode::LDRSW, _) => 4,
        (Opcode::LDR, Operand::SIMDRegister(SIMDSizeCode::Q, _)) => 16,
        _ => return None,
    };
    Some((at.wrapping_add_signed(offset), size))
}

/// See [`super::return_sites`]. Words of a literal pool are skipped whatever they decode
/// as: a constant that reads as RET is no return.
pub(super) fn return_sites(code: &[u8], addr: u64) -> Result<Vec<u64>, DisasmError> {
    let insns: Vec<_> = decode(code, addr).collect();
    let data: BTreeSet<u64> = insns
        .iter()
        .filter_map(|(at, ins)| literal(*at, ins.as_ref().ok()?))
        .flat_map(|(start, size)| (0..size).step_by(4).map(move |w| start.wrapping_add(w)))
        .collect();
    insns
        .into_iter()
        .filter(|(at, _)| !data.contains(at))
        .filter_map(|(at, ins)| match ins {
            Ok(ins) if ins.opcode == Opcode::RET => Some(Ok(at)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::binary::{arch::Arch, disasm::tests::check_sites, mutate::mutated};

    const BASE: u64 = 0x1_0000;
    const STACKGUARD0: u64 = 0x10;

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// MOVD 16(R28), R16; CMP R16, RSP; BLS; MOVD.W R30, -112(RSP); …; RET
    const SMALL_FRAME: [u32; 6] = [
        0xf940_0b90,
        0xeb30_63ff,
        0x5400_14c9,
        0xf819_0ffe,
        0xd65f_03c0,
        0x0000_0000,
    ];

    #[test]
    fn small_frame_prologue() {
        let code = code(&SMALL_FRAME);
        assert_eq!(stack_branch(&code, BASE, STACKGUARD0), Ok(Some(BASE + 8)));
        assert_eq!(return_sites(&code, BASE), Ok(vec![BASE + 16]));
    }

    #[test]
    fn big_frame_prologue_probes_the_last_branch() {
        // MOVD 16(R28), R16; SUB $0x2000, RSP, R17; BLO; CMP R16, R17; BLS; MOVD.W …
        let code = code(&[
            0xf940_0b90,
            0xd140_0bf1,
            0x5400_0103,
            0xeb10_023f,
            0x5400_00c9,
            0xf819_0ffe,
        ]);
        assert_eq!(stack_branch(&code, BASE, STACKGUARD0), Ok(Some(BASE + 16)));
    }

    #[test]
    fn another_offset_is_no_stack_check() {
        // The same load from 24(R28) is not g.stackguard0.
        let code = code(&SMALL_FRAME);
        assert_eq!(stack_branch(&code, BASE, 0x18), Ok(None));
    }

    #[test]
    fn nosplit_function_has_no_stack_branch() {
        // MOVD R0, R1; RET
        let code = code(&[0xaa00_03e1, 0xd65f_03c0]);
        assert_eq!(stack_branch(&code, BASE, STACKGUARD0), Ok(None));
    }

    #[test]
    fn stack_check_without_bls_is_refused() {
        // MOVD 16(R28), R16; CMP R16, RSP; RET
        let no_bls = code(&[0xf940_0b90, 0xeb30_63ff, 0xd65f_03c0]);
        assert_eq!(
            stack_branch(&no_bls, BASE, STACKGUARD0),
            Err(DisasmError::UnexpectedPrologue(BASE))
        );
        // …and a BLS that ends the code leaves nothing to probe.
        let ends = code(&SMALL_FRAME[..3]);
        assert_eq!(
            stack_branch(&ends, BASE, STACKGUARD0),
            Err(DisasmError::UnexpectedPrologue(BASE))
        );
    }

    #[test]
    fn literal_pool_words_are_not_returns() {
        // LDR X16, $+8; RET; a pool constant that encodes RET; a pool word that is no
        // instruction at all.
        let code = code(&[0x5800_0050, 0xd65f_03c0, 0xd65f_03c0, 0xffff_ffff]);
        assert_eq!(return_sites(&code, BASE), Ok(vec![BASE + 4]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            return_sites(&code(&[0xd65f_03c0, 0xffff_ffff]), BASE),
            Err(DisasmError::Invalid(BASE + 4))
        );
        assert_eq!(
            return_sites(&[0xc0, 0x03, 0x5f, 0xd6, 0x00], BASE),
            Err(DisasmError::Invalid(BASE + 4))
        );
        assert_eq!(stack_branch(&[], BASE, STACKGUARD0), Ok(None));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn mutated_prologues_never_panic(
            code in mutated(code(&SMALL_FRAME)),
            addr in prop_oneof![Just(BASE), Just(u64::MAX - 8), any::<u64>()],
        ) {
            check_sites(Arch::Arm64, &code, addr, STACKGUARD0)?;
        }
    }
}
