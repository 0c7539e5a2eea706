//! One definition, for the eBPF programs and for user space, of everything that crosses the
//! kernel boundary: the event record, the probe cookie, the per-target configuration and the
//! key hash.
#![no_std]

/// Keys longer than this are hashed (and exported) by their first `KEY_MAX` bytes only.
pub const KEY_MAX: usize = 128;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The contract's key hash: 64-bit FNV-1a over at most the first [`KEY_MAX`] bytes.
#[inline]
#[must_use]
pub fn key_hash(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET_BASIS;
    for &b in bytes.iter().take(KEY_MAX) {
        hash = (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME);
    }
    hash
}

/// What happened. The numeric values travel in [`Event::kind`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Assign = 1,
    Delete = 2,
    Clear = 3,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Assign, EventKind::Delete, EventKind::Clear];

    #[must_use]
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// The name used on the command line and in every export.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Assign => "assign",
            EventKind::Delete => "delete",
            EventKind::Clear => "clear",
        }
    }
}

/// How a probed function receives its key (Go register ABI), so one eBPF program can hash
/// the key of every map function.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// No key (`mapclear`).
    None = 0,
    /// `*_faststr`: data pointer in RCX, length in RDI.
    Str = 1,
    /// `*_fast32`: the value in ECX.
    U32 = 2,
    /// `*_fast64`, `mapassign_fast64ptr`: the value in RCX.
    U64 = 3,
    /// generic `mapassign`/`mapdelete`: pointer in RCX, size from the map type in RAX.
    Mem = 4,
}

impl KeyKind {
    #[must_use]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => KeyKind::Str,
            2 => KeyKind::U32,
            3 => KeyKind::U64,
            4 => KeyKind::Mem,
            _ => KeyKind::None,
        }
    }
}

/// The BPF attach cookie of a uprobe: tells the shared program which function it sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeCookie {
    pub kind: EventKind,
    pub key: KeyKind,
}

impl ProbeCookie {
    #[must_use]
    pub const fn encode(self) -> u64 {
        (self.kind as u64) | ((self.key as u64) << 8)
    }

    /// The event kind byte and the key kind of an encoded cookie.
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "bytes are extracted on purpose"
    )]
    pub const fn decode(cookie: u64) -> (u8, KeyKind) {
        (cookie as u8, KeyKind::from_u8((cookie >> 8) as u8))
    }
}

/// `Event::flags`: the record carries a key hash.
pub const FLAG_KEY: u8 = 1;
/// `Event::flags`: the record carries the map's element count.
pub const FLAG_COUNT: u8 = 2;

/// One record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC`.
    pub time_ns: u64,
    /// Address of the map header.
    pub map: u64,
    pub key_hash: u64,
    pub count: u64,
    pub pid: u32,
    pub tid: u32,
    pub kind: u8,
    pub flags: u8,
    pub pad: [u8; 6],
}

/// Size of [`Event`] in bytes, checked by user space against every record it reads.
pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();

/// Per-target settings, written into the eBPF object's read-only globals before load.
/// Offsets come from map-trace's per-Go-version table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Only this process's events are kept (uprobes are also scoped to it).
    pub tgid: u32,
    pub pad: u32,
    /// Offset of the element count in the map header (`hmap.count`, `maps.Map.used`).
    pub map_count_offset: u64,
    /// Offset of the key's `*abi.Type` in the map type.
    pub map_type_key_offset: u64,
    /// Offset of `Size_` in `abi.Type`.
    pub type_size_offset: u64,
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers, no padding left implicit.
unsafe impl aya::Pod for Config {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_vectors() {
        // The contract's example and the published FNV-1a 64 vectors.
        assert_eq!(key_hash(b"abc"), 0xe71f_a219_0541_574b);
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(key_hash(&1_i64.to_le_bytes()), 0x89cd_3129_1d2a_efa4);
    }

    #[test]
    fn key_hash_stops_at_key_max() {
        let long = [7_u8; KEY_MAX + 40];
        assert_eq!(key_hash(&long), key_hash(&long[..KEY_MAX]));
        assert_ne!(key_hash(&long[..KEY_MAX - 1]), key_hash(&long[..KEY_MAX]));
    }

    #[test]
    fn cookie_round_trips() {
        for kind in EventKind::ALL {
            for key in [
                KeyKind::None,
                KeyKind::Str,
                KeyKind::U32,
                KeyKind::U64,
                KeyKind::Mem,
            ] {
                let (k, kk) = ProbeCookie::decode(ProbeCookie { kind, key }.encode());
                assert_eq!(EventKind::from_u8(k), Some(kind));
                assert_eq!(kk, key);
            }
        }
    }

    #[test]
    fn event_layout_is_stable() {
        assert_eq!(EVENT_SIZE, 48);
    }
}
