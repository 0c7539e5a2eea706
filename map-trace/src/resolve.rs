//! Names for the addresses an event carries: the Go code that called the runtime (from the
//! return addresses taken at entry), the map's Go type (from its type descriptor) and the
//! key as text. Looked up in the target's binary once per address, then cached: a hot call
//! site or map costs one lookup per run.

use std::sync::Arc;

// Looked up for every event: foldhash, not the standard library's SipHash, which showed in
// map-trace's profile under load. Nothing here is keyed by input an attacker picks.
use foldhash::{HashMap, HashMapExt as _};

use map_trace_common::{EventKind, KeyKind};

use crate::{
    binary::{GoBinary, gotypes::Kind},
    events::{Raw, TraceEvent},
    goruntime::Storage,
    model::CallSite,
};

/// Functions that belong to the Go runtime's own map and memory machinery: a call site is
/// the first frame outside them.
fn is_runtime(function: &str) -> bool {
    function.starts_with("runtime.") || function.starts_with("internal/runtime/")
}

/// Resolves the addresses in events against the target's binary.
pub struct Resolver {
    /// Shared by every process running the executable.
    binary: Arc<GoBinary>,
    /// Run-time address minus link-time address (non-zero for PIE).
    bias: u64,
    /// Where in a map type its bucket or group size is.
    storage: Storage,
    show_keys: bool,
    /// Per return address: the first non-runtime frame among its (inlined) frames.
    callers: HashMap<u64, Option<Arc<CallSite>>>,
    /// Per return address: the first frame in the program's own module.
    module_callers: HashMap<u64, Option<Arc<CallSite>>>,
    /// Return addresses found in user code since [`Resolver::take_user_frames`] last ran.
    new_user_frames: Vec<u64>,
    /// Per map type descriptor: its name and the kind of its key.
    types: HashMap<u64, MapType>,
}

#[derive(Clone, Debug, Default)]
struct MapType {
    name: Option<Arc<str>>,
    key_kind: Option<Kind>,
    /// Its bucket or group size.
    unit_size: Option<u64>,
}

impl Resolver {
    #[must_use]
    pub fn new(binary: Arc<GoBinary>, bias: u64, show_keys: bool, storage: Storage) -> Self {
        Self {
            storage,
            binary,
            bias,
            show_keys,
            callers: HashMap::new(),
            module_callers: HashMap::new(),
            new_user_frames: Vec::new(),
            types: HashMap::new(),
        }
    }

    /// Fills in the event's call site, map type and (with `--show-keys`) key.
    pub fn resolve(&mut self, event: &mut TraceEvent, raw: &Raw<'_>) {
        event.caller = raw
            .stack
            .iter()
            .take_while(|&&pc| pc != 0)
            .find_map(|&pc| self.caller(pc));
        // A made map's site outside the program's module is named with the line of the
        // program that led there; walked for constructors only (their stacks go that far).
        if event.kind == EventKind::Make {
            event.module_caller = raw
                .stack
                .iter()
                .take_while(|&&pc| pc != 0)
                .find_map(|&pc| self.module_caller(pc));
        }
        if raw.map_type != 0 {
            let map_type = self.map_type(raw.map_type);
            event.map_type = map_type.name;
            event.unit_size = map_type.unit_size;
            if self.show_keys {
                event.key = raw
                    .key
                    .map(|bytes| key_text(raw.key_kind, map_type.key_kind, bytes));
            }
        } else if self.show_keys {
            event.key = raw.key.map(|bytes| key_text(raw.key_kind, None, bytes));
        }
    }

    /// The name of the map type whose descriptor is at run-time address `addr`.
    pub fn type_name(&mut self, addr: u64) -> Option<Arc<str>> {
        if addr == 0 {
            return None;
        }
        self.map_type(addr).name
    }

    /// Return addresses newly found in user code, once each, as link-time addresses (the
    /// same in every process of the executable): the kernel's stack walk can stop at them,
    /// as [`Resolver::resolve`] would.
    pub fn take_user_frames(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.new_user_frames)
    }

    fn caller(&mut self, pc: u64) -> Option<Arc<CallSite>> {
        let (binary, bias) = (&self.binary, self.bias);
        let new = &mut self.new_user_frames;
        self.callers
            .entry(pc)
            .or_insert_with(|| {
                let link = pc.checked_sub(bias)?;
                let frames = binary.symbolize(link);
                let frame = frames.into_iter().find(|f| !is_runtime(&f.function))?;
                new.push(link);
                Some(Arc::new(CallSite::new(
                    frame.function,
                    frame.file,
                    frame.line,
                )))
            })
            .clone()
    }

    fn module_caller(&mut self, pc: u64) -> Option<Arc<CallSite>> {
        let (binary, bias) = (&self.binary, self.bias);
        self.module_callers
            .entry(pc)
            .or_insert_with(|| {
                let frames = binary.symbolize(pc.checked_sub(bias)?);
                let frame = frames
                    .into_iter()
                    .find(|f| binary.in_main_module(&f.function))?;
                Some(Arc::new(CallSite::new(
                    frame.function,
                    frame.file,
                    frame.line,
                )))
            })
            .clone()
    }

    fn map_type(&mut self, addr: u64) -> MapType {
        let (binary, bias, storage) = (&self.binary, self.bias, self.storage);
        self.types
            .entry(addr)
            .or_insert_with(|| {
                let Some(link) = addr.checked_sub(bias) else {
                    return MapType::default();
                };
                MapType {
                    name: binary.type_name(link).map(Arc::from),
                    key_kind: binary
                        .map_key_type(link)
                        .and_then(|key| binary.type_kind(key)),
                    // A constant of the map type in the binary's data; only for static map
                    // types (those the binary lists), as the key type is.
                    unit_size: binary.map_key_type(link).and_then(|_| match storage {
                        Storage::Classic { bucket_size_at, .. } => {
                            binary.read_le::<2>(link.checked_add(bucket_size_at)?)
                        }
                        Storage::Swiss { group_size_at, .. } => {
                            binary.read_le::<8>(link.checked_add(group_size_at)?)
                        }
                    }),
                }
            })
            .clone()
    }
}

/// The key as the contract's `key` column shows it: text for string keys, decimal for
/// integer keys, hex for anything else; at most the first 128 bytes.
#[must_use]
pub fn key_text(how: KeyKind, kind: Option<Kind>, bytes: &[u8]) -> String {
    match how {
        KeyKind::Str => escaped_text(bytes),
        // Pointers (`mapassign_fast64ptr`, pointer keys) by their value, as Go prints them.
        _ if kind.is_some_and(Kind::is_pointer) && bytes.len() == 8 => {
            format!("{:#x}", integer_bits(bytes))
        }
        KeyKind::U32 | KeyKind::U64 if kind.is_none_or(Kind::is_integer) => {
            integer(bytes, kind.is_none_or(Kind::is_signed))
        }
        KeyKind::Mem if kind.is_some_and(Kind::is_integer) && bytes.len() <= 8 => {
            integer(bytes, kind.is_some_and(Kind::is_signed))
        }
        _ => hex(bytes),
    }
}

/// A little-endian integer of up to 8 bytes in decimal.
fn integer(bytes: &[u8], signed: bool) -> String {
    let n = bytes.len().min(8);
    let unsigned = integer_bits(bytes);
    if !signed || n == 0 {
        return unsigned.to_string();
    }
    // Sign-extend from the key's own width.
    let shift = 64 - 8 * u32::try_from(n).unwrap_or(8);
    #[expect(
        clippy::cast_possible_wrap,
        reason = "reinterpreting the bits is the point"
    )]
    let value = ((unsigned << shift) as i64) >> shift;
    value.to_string()
}

/// Up to 8 little-endian bytes as an integer.
fn integer_bits(bytes: &[u8]) -> u64 {
    let mut le = [0_u8; 8];
    let n = bytes.len().min(8);
    le[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(le)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// UTF-8 text as is; bytes that are not UTF-8 as `\xNN`, so nothing is lost or invented.
fn escaped_text(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_text() {
        assert_eq!(
            key_text(KeyKind::Str, Some(Kind::String), b"user:42"),
            "user:42"
        );
        assert_eq!(key_text(KeyKind::Str, None, b"a\xffb"), "a\\xffb");
        assert_eq!(
            key_text(KeyKind::U64, Some(Kind::Int), &(-5_i64).to_le_bytes()),
            "-5"
        );
        assert_eq!(
            key_text(KeyKind::U64, Some(Kind::Uint64), &u64::MAX.to_le_bytes()),
            "18446744073709551615"
        );
        assert_eq!(
            key_text(KeyKind::U32, Some(Kind::Int32), &(-2_i32).to_le_bytes()),
            "-2"
        );
        assert_eq!(
            key_text(KeyKind::U32, Some(Kind::Uint32), &7_u32.to_le_bytes()),
            "7"
        );
        // Unknown type: integer functions still mean integer keys, Go's int by far the most.
        assert_eq!(key_text(KeyKind::U64, None, &(-1_i64).to_le_bytes()), "-1");
        // 8-byte arrays and pointers go through the fast64 functions too.
        assert_eq!(
            key_text(KeyKind::U64, Some(Kind::Array), &[1, 2, 3, 4, 5, 6, 7, 8]),
            "0x0102030405060708"
        );
        assert_eq!(
            key_text(
                KeyKind::U64,
                Some(Kind::Pointer),
                &0xc000_0100_u64.to_le_bytes()
            ),
            "0xc0000100"
        );
        assert_eq!(
            key_text(KeyKind::Mem, Some(Kind::Int16), &[0xff, 0xff]),
            "-1"
        );
        assert_eq!(key_text(KeyKind::Mem, Some(Kind::Uint8), &[200]), "200");
        assert_eq!(
            key_text(KeyKind::Mem, Some(Kind::Struct), &[1, 0xab]),
            "0x01ab"
        );
        assert_eq!(key_text(KeyKind::Mem, None, &[]), "0x");
    }

    #[test]
    fn call_sites_read_well() {
        let site = CallSite::new("main.(*Cache).Put".into(), "/src/app/cache.go".into(), 42);
        assert_eq!(site.to_string(), "main.(*Cache).Put cache.go:42");
        assert_eq!(site.location(), "/src/app/cache.go:42");
        assert!(is_runtime("runtime.mapassign_faststr"));
        assert!(is_runtime("internal/runtime/maps.(*table).grow"));
        assert!(!is_runtime("runtime/debug.FreeOSMemory"));
        assert!(!is_runtime("maps.Copy[...]"));
    }
}
