//! The eBPF programs' stack depth, recomputed from the built object and held below the
//! verifier's limit with room to spare.
//!
//! The verifier refuses a program whose call chain needs more than 512 bytes of stack
//! ("combined stack size of N calls is M. Too large"), and says so only at load time, on the
//! user's kernel. Every field copied onto the stack moves toward that limit unseen, so this
//! test fails at 384 bytes instead, when the build that crossed it is still on the desk.
//!
//! For each function (a program's entry, or a BPF-to-BPF subprogram reached by a `call` with
//! `src_reg == 1`), a data-flow pass over its instructions finds the deepest byte below `r10`
//! it may touch: loads and stores based on `r10`, and pointers derived from `r10`
//! (`rX = r10; rX += -n`) followed through moves, constant adds and spills to 8-byte stack
//! slots, the access counted at the pointer's offset plus the instruction's. A derived
//! pointer also counts at its own offset when it is formed, since a helper it is passed to
//! (`bpf_probe_read_user(r1 = r10 - 128, 128, ..)`) writes upward from it. Every path counts,
//! taken or not: the verifier only counts the paths it explores, so this is an upper bound.
//!
//! The counting follows the verifier's: a frame is its deepest offset rounded up to 8 (what
//! newer kernels record as the subprogram's `stack_depth`), and the limit applies to the sum
//! along a call chain of each frame as `max(frame, 1)` rounded up to 32, the interpreter's
//! granularity, which kernels without the JIT, and older ones always, use (newer ones round
//! JIT-ed frames to 16). The 32 is the larger, so the figure holds on every kernel the
//! tracer supports.

use std::collections::{BTreeMap, HashMap, hash_map::Entry};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SectionKind, SymbolKind};

/// The verifier's limit, and the most this test lets a program's call chain use of it.
const VERIFIER_LIMIT: u32 = 512;
const HEADROOM_LIMIT: u32 = 384;
/// The combined check counts each frame in units of this many bytes (see the module doc).
const FRAME_GRANULE: u32 = 32;
/// Offsets below this are clamped, so a pointer walked down in a loop ends the data flow
/// (as a depth far over the limit) instead of descending forever.
const FLOOR: i64 = -4096;

const INSN: usize = 8;
const LDDW: u8 = 0x18;
/// `src_reg` of a BPF-to-BPF call, and of an `lddw` loading a callback subprogram.
const PSEUDO_CALL: u8 = 1;
const PSEUDO_FUNC: u8 = 4;

/// A function: its section's index in the object, and its first instruction's index there.
type Func = (usize, usize);

/// The executable sections and the relocations that say where a cross-section call goes.
#[derive(Default)]
struct Code<'a> {
    sections: HashMap<usize, &'a [u8]>,
    /// (section, byte offset of the instruction) to (callee's section, its symbol's value).
    relocations: HashMap<(usize, u64), (usize, u64)>,
}

#[derive(Clone, Copy, Debug)]
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn decode(bytes: &[u8]) -> Insn {
        Insn {
            code: bytes[0],
            dst: bytes[1] & 0x0f,
            src: bytes[1] >> 4,
            off: i16::from_le_bytes([bytes[2], bytes[3]]),
            imm: i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }
}

/// What may be known at one instruction: which registers and spilled slots hold pointers
/// into the frame, each as the deepest `r10`-relative offset it may have on any path.
#[derive(Clone, Default, PartialEq, Eq)]
struct State {
    regs: [Option<i64>; 10],
    spills: BTreeMap<i64, i64>,
}

impl State {
    fn get(&self, reg: u8) -> Option<i64> {
        match reg {
            10 => Some(0),
            r => self.regs.get(usize::from(r)).copied().flatten(),
        }
    }

    fn set(&mut self, reg: u8, value: Option<i64>) {
        if let Some(slot) = self.regs.get_mut(usize::from(reg)) {
            *slot = value.map(|v| v.max(FLOOR));
        }
    }

    /// Joins the state another path brings; true if anything changed.
    fn merge(&mut self, other: &State) -> bool {
        let before = self.clone();
        for (mine, theirs) in self.regs.iter_mut().zip(other.regs) {
            *mine = match (*mine, theirs) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for (&slot, &value) in &other.spills {
            let mine = self.spills.entry(slot).or_insert(value);
            *mine = (*mine).min(value);
        }
        *self != before
    }
}

/// One function's own frame (deepest offset, not rounded) and the functions it calls.
struct Frame {
    depth: u32,
    callees: Vec<Func>,
}

impl Code<'_> {
    fn insns(&self, section: usize) -> &[u8] {
        self.sections
            .get(&section)
            .unwrap_or_else(|| panic!("section {section} is not executable"))
    }

    /// The callee of the `call` (or callback `lddw`) at `pc`: through its relocation if it
    /// has one (libbpf's rule: the symbol's instruction + imm + 1), else pc-relative.
    fn callee(&self, (section, pc): Func, imm: i32) -> Func {
        let at = u64::try_from(pc * INSN).unwrap_or(u64::MAX);
        let (section, base) = match self.relocations.get(&(section, at)) {
            Some(&(target, value)) => (target, value / 8),
            None => (section, u64::try_from(pc).unwrap_or(u64::MAX)),
        };
        let target = i64::try_from(base).unwrap_or(i64::MAX) + i64::from(imm) + 1;
        let len = self.insns(section).len() / INSN;
        match usize::try_from(target) {
            Ok(t) if t < len => (section, t),
            _ => panic!("call at {section}:{pc} leads out of its section, to {target}"),
        }
    }

    /// Runs the data flow over the function starting at `entry`.
    fn frame(&self, entry: Func) -> Frame {
        let (section, start) = entry;
        let bytes = self.insns(section);
        let len = bytes.len() / INSN;
        let mut states: HashMap<usize, State> = HashMap::from([(start, State::default())]);
        let mut work = vec![start];
        let mut deepest = 0;
        let mut callees = Vec::new();
        while let Some(pc) = work.pop() {
            let mut state = states[&pc].clone();
            let insn = Insn::decode(&bytes[pc * INSN..pc * INSN + INSN]);
            let mut touch = |offset: i64| deepest = deepest.max(-offset.max(FLOOR));
            if let Some(callee) = self.step(&mut state, insn, (section, pc), &mut touch) {
                callees.push(callee);
            }
            for next in successors(insn, pc) {
                let next = usize::try_from(next)
                    .ok()
                    .filter(|&n| n < len)
                    .unwrap_or_else(|| panic!("jump at {section}:{pc} leaves the section"));
                let changed = match states.entry(next) {
                    Entry::Occupied(mut old) => old.get_mut().merge(&state),
                    Entry::Vacant(slot) => {
                        slot.insert(state.clone());
                        true
                    }
                };
                if changed {
                    work.push(next);
                }
            }
        }
        callees.sort_unstable();
        callees.dedup();
        Frame {
            depth: u32::try_from(deepest).unwrap_or(u32::MAX),
            callees,
        }
    }

    /// Applies one instruction to `state`, reporting each frame offset it reaches through
    /// `touch`; returns the subprogram it calls, if any.
    fn step(
        &self,
        state: &mut State,
        insn: Insn,
        at: Func,
        touch: &mut impl FnMut(i64),
    ) -> Option<Func> {
        let off = i64::from(insn.off);
        let doubleword = insn.code & 0x18 == 0x18;
        match insn.code & 0x07 {
            // LD: lddw (maybe a callback), or the legacy packet loads, which clobber r0-r5.
            0x00 => {
                if insn.code == LDDW {
                    state.set(insn.dst, None);
                    return (insn.src == PSEUDO_FUNC).then(|| self.callee(at, insn.imm));
                }
                (0..=5).for_each(|r| state.set(r, None));
            }
            // LDX: a load, maybe a fill of a spilled frame pointer.
            0x01 => {
                let base = state.get(insn.src).map(|b| b + off);
                base.into_iter().for_each(&mut *touch);
                let filled = base.filter(|_| doubleword && insn.code & 0xe0 == 0x60);
                state.set(insn.dst, filled.and_then(|b| state.spills.get(&b).copied()));
            }
            // ST, STX: a store, maybe a spill; or an atomic op, which may write a register.
            class @ (0x02 | 0x03) => {
                if let Some(base) = state.get(insn.dst).map(|b| b + off) {
                    touch(base);
                    let stored = state.get(insn.src).filter(|_| class == 0x03 && doubleword);
                    match stored.filter(|_| insn.code & 0xe0 == 0x60) {
                        Some(value) => state.spills.insert(base, value),
                        None => state.spills.remove(&base),
                    };
                }
                if class == 0x03 && insn.code & 0xe0 == 0xc0 {
                    if insn.imm & 0x01 != 0 {
                        state.set(insn.src, None);
                    }
                    if insn.imm == 0xf1 {
                        state.set(0, None);
                    }
                }
            }
            0x07 => {
                let value = alu64(state, insn);
                value.into_iter().for_each(&mut *touch);
                state.set(insn.dst, value);
            }
            // JMP, JMP32: calls clobber r0-r5; other jumps write nothing.
            0x05 | 0x06 if insn.code == 0x85 => {
                (0..=5).for_each(|r| state.set(r, None));
                return (insn.src == PSEUDO_CALL).then(|| self.callee(at, insn.imm));
            }
            0x05 | 0x06 => {}
            // ALU: 32-bit results are never pointers.
            _ => state.set(insn.dst, None),
        }
        None
    }
}

/// A 64-bit ALU instruction's result, if a frame pointer: moves and adds keep one, assuming
/// an added or subtracted register (an index) does not go below the pointer's base.
fn alu64(state: &State, insn: Insn) -> Option<i64> {
    let dst = state.get(insn.dst);
    let src = state.get(insn.src);
    let imm = i64::from(insn.imm);
    match insn.code {
        0xbf if insn.off == 0 => src,
        0x07 => dst.map(|d| d + imm),
        0x17 => dst.map(|d| d - imm),
        0x0f => match (dst, src) {
            (Some(_), Some(_)) => None,
            (d, s) => d.or(s),
        },
        0x1f => dst.filter(|_| src.is_none()),
        _ => None,
    }
}

/// The instructions that may run after the one at `pc`.
fn successors(insn: Insn, pc: usize) -> Vec<i64> {
    let pc = i64::try_from(pc).unwrap_or(i64::MAX);
    let next = pc + if insn.code == LDDW { 2 } else { 1 };
    let class = insn.code & 0x07;
    if class != 0x05 && class != 0x06 {
        return vec![next];
    }
    let jump = pc + 1 + i64::from(insn.off);
    match insn.code & 0xf0 {
        0x90 => vec![],
        // `ja` (`gotol`, in the JMP32 class, takes its offset from imm).
        0x00 if class == 0x06 => vec![pc + 1 + i64::from(insn.imm)],
        0x00 => vec![jump],
        0x80 => vec![next],
        _ => vec![next, jump],
    }
}

fn round_up(bytes: u32, granule: u32) -> u32 {
    bytes.div_ceil(granule) * granule
}

/// The combined depth of `func` and its deepest chain of callees, as the verifier counts it.
fn chain_depth(
    code: &Code,
    func: Func,
    memo: &mut HashMap<Func, u32>,
    path: &mut Vec<Func>,
) -> u32 {
    if let Some(&depth) = memo.get(&func) {
        return depth;
    }
    assert!(
        !path.contains(&func),
        "recursive calls through {func:?}; the verifier refuses them"
    );
    path.push(func);
    let frame = code.frame(func);
    let own = round_up(round_up(frame.depth, 8).max(1), FRAME_GRANULE);
    let deepest_callee = frame
        .callees
        .iter()
        .map(|&callee| chain_depth(code, callee, memo, path))
        .max()
        .unwrap_or(0);
    path.pop();
    memo.insert(func, own + deepest_callee);
    own + deepest_callee
}

/// Every program in the eBPF object, with the stack its call chain needs, by name.
fn stack_depths(object: &[u8]) -> Vec<(String, u32)> {
    let file = object::File::parse(object).expect("the eBPF object is an ELF file");
    assert_eq!(file.architecture(), object::Architecture::Bpf);
    assert!(
        file.is_little_endian(),
        "the eBPF object is not little-endian"
    );
    let mut code = Code::default();
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        code.sections
            .insert(section.index().0, section.data().expect("section data"));
        for (at, relocation) in section.relocations() {
            let object::RelocationTarget::Symbol(symbol) = relocation.target() else {
                continue;
            };
            let symbol = file.symbol_by_index(symbol).expect("relocation's symbol");
            if let Some(target) = symbol.section_index() {
                let target = (target.0, symbol.address());
                code.relocations.insert((section.index().0, at), target);
            }
        }
    }
    let mut memo = HashMap::new();
    let mut depths: Vec<(String, u32)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition())
        .filter_map(|s| {
            let section = file.section_by_index(s.section_index()?).ok()?;
            (section.name().ok()? != ".text").then_some(s)
        })
        .map(|s| {
            let name = s.name().expect("program's name").to_owned();
            let section = s.section_index().expect("program's section").0;
            let entry = usize::try_from(s.address()).expect("program's offset") / INSN;
            let depth = chain_depth(&code, (section, entry), &mut memo, &mut Vec::new());
            (name, depth)
        })
        .collect();
    depths.sort();
    depths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_leaves_stack_headroom() {
        let depths = stack_depths(crate::tracer::EBPF_OBJECT);
        assert!(!depths.is_empty(), "no programs found in the eBPF object");
        let names: Vec<&str> = depths.iter().map(|(name, _)| name.as_str()).collect();
        for program in [
            "map_op",
            "call_entry",
            "call_return",
            "gc_event",
            "madvise_enter",
            "madvise_exit",
            "madvise_kprobe",
            "madvise_kretprobe",
        ] {
            assert!(
                names.contains(&program),
                "{program} is not in the object: {names:?}"
            );
        }
        for (program, depth) in &depths {
            println!("{program}: {depth} bytes of stack");
            assert!(
                *depth <= HEADROOM_LIMIT,
                "{program} needs {depth} bytes of stack: over this test's {HEADROOM_LIMIT} \
                 (the verifier refuses {VERIFIER_LIMIT}); copy less onto the stack, or into a \
                 per-CPU map"
            );
        }
    }

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        let [o0, o1] = off.to_le_bytes();
        let [i0, i1, i2, i3] = imm.to_le_bytes();
        [code, dst | src << 4, o0, o1, i0, i1, i2, i3]
    }

    const EXIT: [u8; 8] = [0x95, 0, 0, 0, 0, 0, 0, 0];

    /// Sections numbered from 0, leaked: a test's few bytes, borrowed for the whole run.
    fn code(sections: &[&[[u8; 8]]]) -> Code<'static> {
        let mut code = Code::default();
        for (i, section) in sections.iter().enumerate() {
            code.sections.insert(i, Vec::leak(section.concat()));
        }
        code
    }

    fn depth(code: &Code, func: Func) -> u32 {
        chain_depth(code, func, &mut HashMap::new(), &mut Vec::new())
    }

    #[test]
    fn the_analysis_finds_known_depths() {
        // The first and third programs are loadable as written; kernel 6.18's verifier
        // reports "stack depth 200" for the first and "16+40+104+0" for the third's frames.

        // A store at r10-16, then r1 = r10 - 200 passed to bpf_probe_read_user: 200.
        let single = code(&[&[
            insn(0x7b, 10, 1, -16, 0),
            insn(0xbf, 1, 10, 0, 0),
            insn(0x07, 1, 0, 0, -200),
            insn(0xb7, 2, 0, 0, 200),
            insn(0xb7, 3, 0, 0, 0),
            insn(0x85, 0, 0, 0, 112),
            insn(0xb7, 0, 0, 0, 0),
            EXIT,
        ]]);
        assert_eq!(single.frame((0, 0)).depth, 200);
        assert_eq!(depth(&single, (0, 0)), 224);

        // A pointer reaching its store only through a jump, and one spilled and filled.
        let paths = code(&[&[
            insn(0xbf, 1, 10, 0, 0),
            insn(0x07, 1, 0, 0, -8),
            insn(0x15, 2, 0, 2, 0), // if r2 == 0 goto 5
            insn(0xb7, 1, 0, 0, 0), // r1 = 0: not on the jump's path
            EXIT,
            insn(0x7b, 1, 2, -100, 0), // *(u64 *)(r1 - 100) = r2: 108
            insn(0x7b, 10, 1, -8, 0),  // spill r1
            insn(0xb7, 1, 0, 0, 0),
            insn(0x79, 3, 10, -8, 0),  // fill r3
            insn(0x62, 3, 0, -300, 0), // *(u32 *)(r3 - 300) = 0: 308
            EXIT,
        ]]);
        assert_eq!(paths.frame((0, 0)).depth, 308);

        // Pseudo-calls: main (16) calls sub (40), which calls sub2 (104), and a leaf (0);
        // the deeper chain counts, 32 + 64 + 128.
        let calls = code(&[&[
            insn(0x7b, 10, 1, -16, 0),
            insn(0x85, 0, 1, 0, 3),  // call 5
            insn(0x85, 0, 1, 0, 10), // call 13
            insn(0xb7, 0, 0, 0, 0),
            EXIT,
            insn(0x62, 10, 0, -40, 0), // 5: sub, *(u32 *)(r10 - 40) = 0
            insn(0x85, 0, 1, 0, 1),    // call 8
            EXIT,
            insn(0xbf, 1, 10, 0, 0), // 8: sub2
            insn(0x07, 1, 0, 0, -104),
            insn(0x7a, 1, 0, 0, 0), // *(u64 *)(r1 + 0) = 0
            insn(0xb7, 0, 0, 0, 0),
            EXIT,
            insn(0xb7, 0, 0, 0, 0), // 13: leaf
            EXIT,
        ]]);
        let frames = [0, 5, 8, 13].map(|pc| calls.frame((0, pc)).depth);
        assert_eq!(frames, [16, 40, 104, 0]);
        assert_eq!(calls.frame((0, 0)).callees, vec![(0, 5), (0, 13)]);
        assert_eq!(depth(&calls, (0, 0)), 32 + 64 + 128);

        // A call into another section through its relocation (LLVM's imm -1 to a global
        // function's symbol), landing on the symbol's instruction, not the section's first.
        let mut linked = code(&[
            &[insn(0x85, 0, 1, 0, -1), EXIT],
            &[
                insn(0x7b, 10, 1, -300, 0),
                EXIT,
                insn(0x7b, 10, 1, -8, 0),
                EXIT,
            ],
        ]);
        linked.relocations.insert((0, 0), (1, 16));
        assert_eq!(depth(&linked, (0, 0)), 32 + 32);
    }
}
