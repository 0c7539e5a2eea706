//! amd64: `CMPQ SP, 16(R14)` (or a register below SP, for big frames), then `JBE` to
//! `morestack`; variable-length instructions, decoded with iced-x86.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register,
};

use super::{DisasmError, PROLOGUE_WINDOW, inside};

fn decode(code: &[u8], addr: u64) -> impl Iterator<Item = Result<Instruction, DisasmError>> + '_ {
    Decoder::with_ip(64, code, addr, DecoderOptions::NONE)
        .into_iter()
        .map(|ins| {
            if ins.is_invalid() {
                Err(DisasmError::Invalid(ins.ip()))
            } else {
                Ok(ins)
            }
        })
}

/// `CMP reg, [R14+stackguard0]`: the goroutine stack-bound check.
fn is_stack_check(ins: &Instruction, stackguard0_offset: u64) -> bool {
    ins.mnemonic() == Mnemonic::Cmp
        && (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Memory)
        && ins.memory_base() == Register::R14
        && ins.memory_index() == Register::None
        && ins.memory_displacement64() == stackguard0_offset
}

/// The instruction after the stack check's `JBE` (see [`super::entry_site`]), or the
/// first byte; the goroutine is in R14.
pub(super) fn entry_after_prologue(
    code: &[u8],
    addr: u64,
    stackguard0_offset: u64,
) -> Result<u64, DisasmError> {
    let mut insns = decode(code, addr).take(PROLOGUE_WINDOW);
    while let Some(ins) = insns.next().transpose()? {
        if is_stack_check(&ins, stackguard0_offset) {
            let jbe = insns
                .next()
                .transpose()?
                .ok_or(DisasmError::UnexpectedPrologue(ins.ip()))?;
            return match jbe.code() {
                Code::Jbe_rel8_64 | Code::Jbe_rel32_64 if inside(code, addr, jbe.next_ip()) => {
                    Ok(jbe.next_ip())
                }
                _ => Err(DisasmError::UnexpectedPrologue(ins.ip())),
            };
        }
        match ins.flow_control() {
            FlowControl::Next | FlowControl::ConditionalBranch => {}
            _ => break,
        }
    }
    Ok(addr)
}

/// See [`super::return_sites`].
pub(super) fn return_sites(code: &[u8], addr: u64) -> Result<Vec<u64>, DisasmError> {
    decode(code, addr)
        .filter_map(|ins| match ins {
            Ok(ins) if ins.flow_control() == FlowControl::Return => Some(Ok(ins.ip())),
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

    const BASE: u64 = 0x40_0000;
    const STACKGUARD0: u64 = 0x10;

    #[test]
    fn short_prologue() {
        // CMPQ SP,0x10(R14); JBE rel8; PUSHQ BP; ...; RET
        let code = [
            0x49, 0x3b, 0x66, 0x10, 0x76, 0x20, 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3,
        ];
        assert_eq!(entry_after_prologue(&code, BASE, STACKGUARD0), Ok(BASE + 6));
        assert_eq!(return_sites(&code, BASE), Ok(vec![BASE + 11]));
    }

    #[test]
    fn long_jump_prologue() {
        // CMPQ SP,0x10(R14); JBE rel32; PUSHQ BP
        let code = [0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0, 1, 0, 0, 0x55];
        assert_eq!(
            entry_after_prologue(&code, BASE, STACKGUARD0),
            Ok(BASE + 0xa)
        );
    }

    #[test]
    fn big_frame_prologue() {
        // LEAQ -0x98(SP),R12; CMPQ R12,0x10(R14); JBE rel32; PUSHQ BP
        let code = [
            0x4c, 0x8d, 0xa4, 0x24, 0x68, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0,
            1, 0, 0, 0x55,
        ];
        assert_eq!(
            entry_after_prologue(&code, BASE, STACKGUARD0),
            Ok(BASE + 0x12)
        );
    }

    #[test]
    fn nosplit_function_probes_its_first_byte() {
        // MOVQ AX,BX; RET
        let code = [0x48, 0x89, 0xc3, 0xc3];
        assert_eq!(entry_after_prologue(&code, BASE, STACKGUARD0), Ok(BASE));
    }

    #[test]
    fn stack_check_without_jbe_is_refused() {
        // CMPQ SP,0x10(R14); NOP
        let code = [0x49, 0x3b, 0x66, 0x10, 0x90];
        assert_eq!(
            entry_after_prologue(&code, BASE, STACKGUARD0),
            Err(DisasmError::UnexpectedPrologue(BASE))
        );
    }

    #[test]
    fn prologue_that_ends_the_code_is_refused() {
        // CMPQ SP,0x10(R14); JBE rel8, and nothing after: a probe there would sit in the
        // next function.
        let code = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x20];
        assert_eq!(
            entry_after_prologue(&code, BASE, STACKGUARD0),
            Err(DisasmError::UnexpectedPrologue(BASE))
        );
        // The same at the top of the address space, where the next address wraps to 0.
        let top = u64::MAX - 5;
        assert_eq!(
            entry_after_prologue(&code, top, STACKGUARD0),
            Err(DisasmError::UnexpectedPrologue(top))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let code = [0x0f, 0xff, 0xff, 0xff];
        assert!(return_sites(&code, BASE).is_err());
        assert!(entry_after_prologue(&[], BASE, STACKGUARD0).is_ok());
    }

    proptest! {
        // Cheap cases: many of them still run in well under a second.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn mutated_prologues_never_panic(
            code in mutated(vec![
                0x4c, 0x8d, 0xa4, 0x24, 0x68, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f,
                0x86, 0, 1, 0, 0, 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3,
            ]),
            addr in prop_oneof![Just(BASE), Just(u64::MAX - 8), any::<u64>()],
        ) {
            check_sites(Arch::Amd64, &code, addr, STACKGUARD0)?;
        }
    }
}
