//! `runtime.moduledata` and the Go type descriptors it bounds: where the text, the type
//! section and the funcdata blobs are, and the names and kinds of `abi.Type`s.
//!
//! moduledata is found through its first field, `pcHeader`, which points at `.gopclntab`:
//! stripped binaries have no symbol for it. Its pointer fields are read as the loader would
//! relocate them (PIE files keep them in relocations, the file bytes may be 0).

use thiserror::Error;

use super::pclntab::uvarint;
use crate::goruntime::{
    MAP_TYPE_KEY, MODULEDATA_FUNCNAMETAB, MODULEDATA_PCHEADER, ModuledataLayout,
};

/// `abi.Type` fields (the same in Go 1.21 – 1.27).
pub const TYPE_TFLAG: u64 = 20;
pub const TYPE_KIND: u64 = 23;
pub const TYPE_STR: u64 = 40;
/// Size of `abi.Type`: a descriptor must fit in the type section.
const TYPE_LEN: u64 = 48;
/// `abi.TFlagExtraStar`: the name is stored with a leading `*` to drop.
const TFLAG_EXTRA_STAR: u8 = 2;
/// `abi.KindMask`: the low 5 bits of `Kind_` (1.21–1.26 keep flags above them).
const KIND_MASK: u8 = 0x1f;

/// `abi.Kind`: what kind of type a type descriptor describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Bool = 1,
    Int,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Uintptr,
    Float32,
    Float64,
    Complex64,
    Complex128,
    Array,
    Chan,
    Func,
    Interface,
    Map,
    Pointer,
    Slice,
    String,
    Struct,
    UnsafePointer,
}

impl Kind {
    const ALL: [Kind; 26] = [
        Kind::Bool,
        Kind::Int,
        Kind::Int8,
        Kind::Int16,
        Kind::Int32,
        Kind::Int64,
        Kind::Uint,
        Kind::Uint8,
        Kind::Uint16,
        Kind::Uint32,
        Kind::Uint64,
        Kind::Uintptr,
        Kind::Float32,
        Kind::Float64,
        Kind::Complex64,
        Kind::Complex128,
        Kind::Array,
        Kind::Chan,
        Kind::Func,
        Kind::Interface,
        Kind::Map,
        Kind::Pointer,
        Kind::Slice,
        Kind::String,
        Kind::Struct,
        Kind::UnsafePointer,
    ];

    /// The kind in an `abi.Type.Kind_` byte; `None` for 0 (invalid) and unknown values.
    #[must_use]
    pub fn from_raw(kind: u8) -> Option<Self> {
        let index = usize::from(kind & KIND_MASK).checked_sub(1)?;
        Self::ALL.get(index).copied()
    }

    #[must_use]
    pub fn is_integer(self) -> bool {
        (Kind::Int as u8..=Kind::Uintptr as u8).contains(&(self as u8))
    }

    #[must_use]
    pub fn is_signed(self) -> bool {
        (Kind::Int as u8..=Kind::Int64 as u8).contains(&(self as u8))
    }

    /// A value of this kind is one pointer (a chan value is a pointer to its `hchan`).
    #[must_use]
    pub fn is_pointer(self) -> bool {
        matches!(self, Kind::Pointer | Kind::UnsafePointer | Kind::Chan)
    }
}

/// The binary's loadable image, by link-time address.
pub trait Memory {
    /// The file bytes from `vaddr` to the end of its segment's file data.
    fn bytes_at(&self, vaddr: u64) -> Option<&[u8]>;
    /// The pointer stored at `vaddr` once relocated (a link-time address).
    fn pointer_at(&self, vaddr: u64) -> Option<u64>;
    /// Every aligned word of writable data, as the loader leaves it (relocated): its address
    /// and value.
    fn data_words(&self) -> impl Iterator<Item = (u64, u64)> + '_;

    /// Every aligned word in writable data that holds a pointer to `target`, lowest first.
    fn pointers_to(&self, target: u64) -> Vec<u64> {
        let mut found: Vec<u64> = self
            .data_words()
            .filter(|&(_, value)| value == target)
            .map(|(at, _)| at)
            .collect();
        found.sort_unstable();
        found
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModuleError {
    #[error("runtime.firstmoduledata is not where its symbol says")]
    BadSymbol,
    #[error("no runtime.moduledata points at the function table")]
    NotFound,
    #[error("runtime.moduledata is truncated or corrupt")]
    Corrupt,
}

/// What map-trace takes from `runtime.firstmoduledata` (link-time addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    /// Start of Go's text: function entries in the pclntab are relative to it.
    pub text: u64,
    /// The type section `[types, etypes)`; type names are offsets from `types`.
    pub types: u64,
    pub etypes: u64,
    /// `go:func.*`: funcdata offsets are relative to it.
    pub gofunc: u64,
}

impl Module {
    /// Finds moduledata: at `symbol` when the symbol table names it, else the one word in
    /// writable data that points at the pclntab (`pclntab`) and is followed by a pointer to
    /// its function names (`funcnametab`).
    pub fn find(
        mem: &impl Memory,
        layout: &ModuledataLayout,
        pclntab: u64,
        funcnametab: u64,
        symbol: Option<u64>,
    ) -> Result<Self, ModuleError> {
        let is_moduledata = |at: u64| -> bool {
            let field = |off| at.checked_add(off).and_then(|a| mem.pointer_at(a));
            field(MODULEDATA_PCHEADER) == Some(pclntab)
                && field(MODULEDATA_FUNCNAMETAB) == Some(funcnametab)
        };
        let at = match symbol {
            Some(at) if is_moduledata(at) => at,
            Some(_) => return Err(ModuleError::BadSymbol),
            None => mem
                .pointers_to(pclntab)
                .into_iter()
                .find(|&at| is_moduledata(at))
                .ok_or(ModuleError::NotFound)?,
        };
        let field = |off: u64| {
            at.checked_add(off)
                .and_then(|a| mem.pointer_at(a))
                .ok_or(ModuleError::Corrupt)
        };
        let module = Self {
            text: field(layout.text)?,
            types: field(layout.types)?,
            etypes: field(layout.etypes)?,
            gofunc: field(layout.gofunc)?,
        };
        if module.text == 0 || module.types > module.etypes {
            return Err(ModuleError::Corrupt);
        }
        Ok(module)
    }

    /// The `abi.Type` at `addr` if it lies in the type section; types built at run time by
    /// reflect live on the heap and are unknown here.
    fn type_bytes<'m>(&self, mem: &'m impl Memory, addr: u64) -> Option<&'m [u8]> {
        let end = addr.checked_add(TYPE_LEN)?;
        if addr < self.types || end > self.etypes {
            return None;
        }
        mem.bytes_at(addr)?.get(..usize::try_from(TYPE_LEN).ok()?)
    }

    /// The Go type's name (`map[string]*main.Session`).
    #[must_use]
    pub fn type_name(&self, mem: &impl Memory, addr: u64) -> Option<String> {
        let t = self.type_bytes(mem, addr)?;
        let at = |off: u64| usize::try_from(off).ok();
        let tflag = *t.get(at(TYPE_TFLAG)?)?;
        let str_at = at(TYPE_STR)?;
        let name_off = i32::from_le_bytes(t.get(str_at..str_at + 4)?.try_into().ok()?);
        // A name offset of 0 means no name.
        let name_off = u64::try_from(name_off).ok().filter(|&o| o > 0)?;
        let name_addr = self.types.checked_add(name_off)?;
        if name_addr >= self.etypes {
            return None;
        }
        // abi.Name: a flag byte, the length as a uvarint, the bytes.
        let name = mem.bytes_at(name_addr)?;
        let (len, used) = uvarint(name.get(1..)?)?;
        let start = used.checked_add(1)?;
        let bytes = name.get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
        let text = std::str::from_utf8(bytes).ok()?;
        let text = if tflag & TFLAG_EXTRA_STAR == 0 {
            text
        } else {
            text.strip_prefix('*')?
        };
        Some(text.to_owned())
    }

    /// The type's kind.
    #[must_use]
    pub fn type_kind(&self, mem: &impl Memory, addr: u64) -> Option<Kind> {
        let kind = *self
            .type_bytes(mem, addr)?
            .get(usize::try_from(TYPE_KIND).ok()?)?;
        Kind::from_raw(kind)
    }

    /// The key type of the map type at `addr`; `None` if `addr` is not a static map type.
    #[must_use]
    pub fn map_key_type(&self, mem: &impl Memory, addr: u64) -> Option<u64> {
        if self.type_kind(mem, addr)? != Kind::Map {
            return None;
        }
        let key = mem.pointer_at(addr.checked_add(MAP_TYPE_KEY)?)?;
        self.type_bytes(mem, key).map(|_| key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::{
        binary::mutate::mutated,
        goruntime::{MODULEDATA_1_21, MODULEDATA_1_27},
    };

    /// Synthetic memory: one segment at `base`, plus relocations.
    struct Fake {
        base: u64,
        bytes: Vec<u8>,
        relocs: HashMap<u64, u64>,
    }

    impl Memory for Fake {
        fn bytes_at(&self, vaddr: u64) -> Option<&[u8]> {
            self.bytes
                .get(usize::try_from(vaddr.checked_sub(self.base)?).ok()?..)
        }

        fn pointer_at(&self, vaddr: u64) -> Option<u64> {
            if let Some(&p) = self.relocs.get(&vaddr) {
                return Some(p);
            }
            Some(u64::from_le_bytes(
                self.bytes_at(vaddr)?.get(..8)?.try_into().ok()?,
            ))
        }

        fn data_words(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
            (0..self.bytes.len() as u64)
                .step_by(8)
                .filter_map(|o| Some((self.base + o, self.pointer_at(self.base + o)?)))
        }
    }

    const BASE: u64 = 0x10_0000;
    const PCLNTAB: u64 = 0x50_0000;
    const FUNCNAMES: u64 = PCLNTAB + 0x48;
    const MD: u64 = BASE + 0x100;
    const TYPES: u64 = BASE + 0x1000;

    fn put(b: &mut [u8], at: u64, v: &[u8]) {
        let at = usize::try_from(at - BASE).unwrap();
        b[at..at + v.len()].copy_from_slice(v);
    }

    /// A moduledata at MD (as in Go 1.21), and in the type section a map type at TYPES whose
    /// key is a string type at TYPES+0x100.
    fn fake(relocated: bool) -> Fake {
        let mut bytes = vec![0; 0x2000];
        let l = MODULEDATA_1_21;
        let mut relocs = HashMap::new();
        for (off, value) in [
            (MODULEDATA_PCHEADER, PCLNTAB),
            (MODULEDATA_FUNCNAMETAB, FUNCNAMES),
            (l.text, 0x40_1000),
            (l.types, TYPES),
            (l.etypes, TYPES + 0x400),
            (l.gofunc, 0x60_0000),
            (MAP_TYPE_KEY + TYPES - MD, TYPES + 0x100),
        ] {
            if relocated {
                relocs.insert(MD + off, value);
            } else {
                put(&mut bytes, MD + off, &value.to_le_bytes());
            }
        }
        // Map type: TFlagExtraStar, kind 21, name at types+0x200.
        put(&mut bytes, TYPES + TYPE_TFLAG, &[TFLAG_EXTRA_STAR]);
        put(&mut bytes, TYPES + TYPE_KIND, &[Kind::Map as u8]);
        put(&mut bytes, TYPES + TYPE_STR, &0x200_i32.to_le_bytes());
        put(&mut bytes, TYPES + 0x200, b"\x00\x10*map[string]bool");
        // String type, kind with a flag bit above the mask, name at types+0x300.
        put(
            &mut bytes,
            TYPES + 0x100 + TYPE_KIND,
            &[Kind::String as u8 | 0x20],
        );
        put(
            &mut bytes,
            TYPES + 0x100 + TYPE_STR,
            &0x300_i32.to_le_bytes(),
        );
        put(&mut bytes, TYPES + 0x300, b"\x00\x06string");
        Fake {
            base: BASE,
            bytes,
            relocs,
        }
    }

    #[test]
    fn finds_moduledata_by_scan_and_by_symbol_and_through_relocations() {
        for relocated in [false, true] {
            let mem = fake(relocated);
            let m = Module::find(&mem, &MODULEDATA_1_21, PCLNTAB, FUNCNAMES, None).unwrap();
            assert_eq!(m.text, 0x40_1000);
            assert_eq!(
                (m.types, m.etypes, m.gofunc),
                (TYPES, TYPES + 0x400, 0x60_0000)
            );
            let by_symbol =
                Module::find(&mem, &MODULEDATA_1_21, PCLNTAB, FUNCNAMES, Some(MD)).unwrap();
            assert_eq!(by_symbol, m);
            assert_eq!(
                Module::find(&mem, &MODULEDATA_1_21, PCLNTAB, FUNCNAMES, Some(MD + 8)),
                Err(ModuleError::BadSymbol)
            );
            assert_eq!(
                Module::find(&mem, &MODULEDATA_1_21, PCLNTAB, FUNCNAMES + 1, None),
                Err(ModuleError::NotFound)
            );
        }
    }

    #[test]
    fn reads_type_names_kinds_and_map_keys() {
        let mem = fake(false);
        let m = Module::find(&mem, &MODULEDATA_1_21, PCLNTAB, FUNCNAMES, None).unwrap();
        assert_eq!(m.type_name(&mem, TYPES).as_deref(), Some("map[string]bool"));
        assert_eq!(m.type_kind(&mem, TYPES), Some(Kind::Map));
        let key = m.map_key_type(&mem, TYPES).unwrap();
        assert_eq!(key, TYPES + 0x100);
        assert_eq!(m.type_name(&mem, key).as_deref(), Some("string"));
        assert_eq!(m.type_kind(&mem, key), Some(Kind::String));
        // Not a map type.
        assert_eq!(m.map_key_type(&mem, key), None);
        // Outside the type section (a heap type, or past its end): unknown.
        assert_eq!(m.type_name(&mem, TYPES - 8), None);
        assert_eq!(m.type_name(&mem, TYPES + 0x400 - 40), None);
        assert_eq!(m.type_kind(&mem, 0xc000_0000), None);
    }

    #[test]
    fn corrupt_names_are_none() {
        let mut mem = fake(false);
        let m = Module::find(&mem, &MODULEDATA_1_21, PCLNTAB, FUNCNAMES, None).unwrap();
        // Length running past the data, a negative name offset, an offset past etypes.
        put(&mut mem.bytes, TYPES + 0x300, b"\x00\xff\x7f");
        assert_eq!(m.type_name(&mem, TYPES + 0x100), None);
        put(
            &mut mem.bytes,
            TYPES + 0x100 + TYPE_STR,
            &(-8_i32).to_le_bytes(),
        );
        assert_eq!(m.type_name(&mem, TYPES + 0x100), None);
        put(
            &mut mem.bytes,
            TYPES + 0x100 + TYPE_STR,
            &0x400_i32.to_le_bytes(),
        );
        assert_eq!(m.type_name(&mem, TYPES + 0x100), None);
        // Extra star without a star.
        put(&mut mem.bytes, TYPES + 0x200, b"\x00\x03map");
        assert_eq!(m.type_name(&mem, TYPES), None);
        // A truncated segment.
        mem.bytes
            .truncate(usize::try_from(TYPES - BASE + 30).unwrap());
        assert_eq!(m.type_name(&mem, TYPES), None);
        assert_eq!(m.type_kind(&mem, TYPES), None);
    }

    #[test]
    fn kinds_decode_from_the_low_five_bits() {
        assert_eq!(Kind::from_raw(0), None);
        assert_eq!(Kind::from_raw(1), Some(Kind::Bool));
        assert_eq!(Kind::from_raw(Kind::Map as u8 | 0x20), Some(Kind::Map));
        assert_eq!(Kind::from_raw(26), Some(Kind::UnsafePointer));
        assert_eq!(Kind::from_raw(27), None);
        for (raw, kind) in (1..).zip(Kind::ALL) {
            assert_eq!(kind as u8, raw);
        }
        assert!(Kind::Uintptr.is_integer() && !Kind::Uintptr.is_signed());
        assert!(Kind::Int8.is_signed() && !Kind::Float32.is_integer());
        assert!(Kind::Pointer.is_pointer() && !Kind::Uint64.is_pointer());
    }

    /// Type lookups at `addrs` through `m`: a key type found is in the type section.
    fn poke(m: &Module, mem: &Fake, addrs: impl Iterator<Item = u64>) {
        for addr in addrs {
            let _ = (m.type_name(mem, addr), m.type_kind(mem, addr));
            if let Some(key) = m.map_key_type(mem, addr) {
                assert!(m.types <= key && key.checked_add(TYPE_LEN).is_some_and(|e| e <= m.etypes));
                let _ = m.type_name(mem, key);
            }
        }
    }

    proptest! {
        // Cheap cases: many of them still run in well under a second.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn arbitrary_memory_never_panics(
            bytes in vec(any::<u8>(), 0..1024),
            words in vec(prop_oneof![BASE..BASE + 1100, any::<u64>()], 8),
            symbol in proptest::option::of(BASE..BASE + 1024),
        ) {
            let mem = Fake { base: BASE, bytes, relocs: HashMap::new() };
            let found = Module::find(&mem, &MODULEDATA_1_27, words[0], words[1], symbol);
            let m = found.unwrap_or(Module {
                text: words[2],
                types: words[3],
                etypes: words[4],
                gofunc: words[5],
            });
            poke(&m, &mem, words.iter().copied().chain((BASE..BASE + 256).step_by(8)));
        }

        #[test]
        fn mutated_memory_never_panics(
            bytes in mutated(fake(false).bytes),
            symbol in proptest::option::of(Just(MD)),
        ) {
            let mem = Fake { base: BASE, bytes, relocs: HashMap::new() };
            if let Ok(m) = Module::find(&mem, &MODULEDATA_1_21, PCLNTAB, FUNCNAMES, symbol) {
                poke(&m, &mem, (TYPES - 8..TYPES + 0x408).step_by(4));
            }
        }
    }
}
