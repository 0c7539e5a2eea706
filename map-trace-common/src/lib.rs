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
    Grow = 4,
    Evacuate = 5,
    /// A GC cycle started, or its mark phase terminated.
    Gc = 6,
    /// The process called madvise(2).
    Madvise = 7,
    /// A resident-memory sample, taken by user space from /proc.
    Rss = 8,
    /// A map was made (`runtime.makemap*`): its site, size hint and header at return.
    Make = 9,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Assign,
        EventKind::Delete,
        EventKind::Clear,
        EventKind::Grow,
        EventKind::Evacuate,
        EventKind::Gc,
        EventKind::Madvise,
        EventKind::Rss,
        EventKind::Make,
    ];

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
            EventKind::Grow => "grow",
            EventKind::Evacuate => "evacuate",
            EventKind::Gc => "gc",
            EventKind::Madvise => "madvise",
            EventKind::Rss => "rss",
            EventKind::Make => "make",
        }
    }

    /// Events timed from entry to return (an entry uprobe plus one on every RET).
    #[must_use]
    pub const fn is_timed(self) -> bool {
        matches!(
            self,
            EventKind::Grow | EventKind::Evacuate | EventKind::Make
        )
    }
}

/// How a probed function receives its key (Go register ABI), so one eBPF program can hash
/// the key of every map function.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// No key.
    None = 0,
    /// `*_faststr`: data pointer in [`Reg::Arg2`], length in [`Reg::Arg3`].
    Str = 1,
    /// `*_fast32`: the value in the low half of [`Reg::Arg2`].
    U32 = 2,
    /// `*_fast64`, `mapassign_fast64ptr`: the value in [`Reg::Arg2`].
    U64 = 3,
    /// generic `mapassign`/`mapdelete`: pointer in [`Reg::Arg2`], size from the map type in
    /// [`Reg::Arg0`].
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

/// An integer argument (and result) register of the Go register ABI, by position: the
/// same position is RAX, RBX, RCX, RDI on amd64 and R0–R3 on arm64, so one table of Go
/// functions serves both.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Arg0 = 0,
    Arg1 = 1,
    Arg2 = 2,
    Arg3 = 3,
}

impl Reg {
    #[must_use]
    pub const fn from_u8(v: u8) -> Self {
        match v {
            0 => Reg::Arg0,
            2 => Reg::Arg2,
            3 => Reg::Arg3,
            _ => Reg::Arg1,
        }
    }
}

/// The BPF attach cookie of a uprobe: tells the shared programs which function they sit in
/// and where that function keeps its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeCookie {
    pub kind: EventKind,
    pub key: KeyKind,
    /// Register holding the map header pointer.
    pub map: Reg,
    /// Register whose entry value becomes [`Event::detail`] (old bucket index, new capacity).
    pub detail: Option<Reg>,
    /// The first result register ([`Reg::Arg0`]) holds a swiss `*table` whose header goes
    /// into [`Event::table`].
    pub table_in_result: bool,
    /// Index of the function in map-trace's plan, reported in [`Event::function`].
    pub function: u16,
    /// Register holding the map's type descriptor, reported in [`Event::map_type`].
    pub map_type: Option<Reg>,
    /// The map is the function's result, in [`Reg::Arg0`] at its return (`makemap*`), not an
    /// argument; its caller's frames are walked to the end, not to the first user frame.
    pub map_at_return: bool,
    /// The entry probe sits on the stack check's conditional branch to `morestack`
    /// (arm64), not after it: a hit where the branch will be taken is no call yet (the
    /// function starts again once the stack has grown) and counts nothing.
    pub on_stack_branch: bool,
}

/// `ProbeCookie::detail` when none.
const NO_REG: u64 = 0xff;

impl ProbeCookie {
    #[must_use]
    pub const fn encode(self) -> u64 {
        let detail = match self.detail {
            Some(r) => r as u64,
            None => NO_REG,
        };
        let map_type = match self.map_type {
            Some(r) => r as u64,
            None => NO_REG,
        };
        (self.kind as u64)
            | ((self.key as u64) << 8)
            | ((self.map as u64) << 16)
            | (detail << 24)
            | ((self.table_in_result as u64) << 32)
            | ((self.map_at_return as u64) << 33)
            | ((self.on_stack_branch as u64) << 34)
            | ((self.function as u64) << 40)
            | (map_type << 56)
    }

    /// The event kind byte and the rest of an encoded cookie.
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "bit fields are extracted on purpose"
    )]
    pub const fn decode(cookie: u64) -> (u8, Self) {
        let detail = (cookie >> 24) as u8;
        let map_type = (cookie >> 56) as u8;
        (
            cookie as u8,
            Self {
                kind: EventKind::Assign,
                key: KeyKind::from_u8((cookie >> 8) as u8),
                map: Reg::from_u8((cookie >> 16) as u8),
                detail: if detail as u64 == NO_REG {
                    None
                } else {
                    Some(Reg::from_u8(detail))
                },
                table_in_result: (cookie >> 32) & 1 == 1,
                map_at_return: (cookie >> 33) & 1 == 1,
                on_stack_branch: (cookie >> 34) & 1 == 1,
                function: (cookie >> 40) as u16,
                map_type: if map_type as u64 == NO_REG {
                    None
                } else {
                    Some(Reg::from_u8(map_type))
                },
            },
        )
    }
}

/// Bytes of the map header copied into each event: covers every field map-trace reads of
/// `runtime.hmap` (up to `nevacuate`) and all of the swiss `maps.Map`.
pub const HEADER_BYTES: usize = 48;
/// Bytes of a swiss `maps.table` header copied into table events (used, capacity,
/// growthLeft, localDepth).
pub const TABLE_BYTES: usize = 8;

/// `Event::flags`: the record carries a key hash.
pub const FLAG_KEY: u8 = 1;
/// `Event::flags`: `header` holds the map header at the event.
pub const FLAG_HEADER: u8 = 2;
/// `Event::flags`: `table` holds the table header at the call's entry.
pub const FLAG_TABLE: u8 = 4;
/// `Event::flags`: `goid` was read from the goroutine.
pub const FLAG_GOID: u8 = 8;
/// `Event::flags`: `detail` holds the detail register's entry value.
pub const FLAG_DETAIL: u8 = 16;
/// `Event::flags`: `stack` holds return addresses taken at the call's entry.
pub const FLAG_STACK: u8 = 32;

/// Return addresses kept per event: the probed function's own, then its callers' along the
/// frame-pointer chain. Enough to step out of the runtime (user code → `mapassign` →
/// `rehash` → `grow` is four deep) to the user code that called it.
pub const STACK_DEPTH: usize = 6;

/// Entries of the `USER_FRAMES` set: return addresses user space has resolved to Go code
/// outside the runtime (a call site). The frame-pointer walk stops at the first one: the
/// frames past it name nothing user space would use.
pub const USER_FRAMES_MAX: u32 = 8192;

/// One record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: `CLOCK_MONOTONIC`; for timed calls, the return.
    pub time_ns: u64,
    /// Address of the map header.
    pub map: u64,
    pub key_hash: u64,
    pub goid: u64,
    /// Entry to return, for timed calls; else 0.
    pub duration_ns: u64,
    /// Kind-specific: old bucket index, new capacity, GC cycle, madvise advice.
    pub detail: u64,
    /// madvise: start address and length.
    pub addr: u64,
    pub len: u64,
    /// madvise: the call's return value (0 or a negative errno).
    pub result: i64,
    /// Address of the map's type descriptor (`*abi.MapType`), or 0.
    pub map_type: u64,
    /// Return addresses at the call's entry, innermost first; 0 past the end.
    pub stack: [u64; STACK_DEPTH],
    /// The map header when the event fired (at the return, for timed calls).
    pub header: [u8; HEADER_BYTES],
    pub table: [u8; TABLE_BYTES],
    pub pid: u32,
    pub tid: u32,
    pub function: u16,
    pub kind: u8,
    pub flags: u8,
    /// The key's length, for records that carry its bytes ([`KeyedEvent`]).
    pub key_len: u16,
    pub pad: [u8; 2],
}

impl Event {
    pub const ZERO: Event = Event {
        time_ns: 0,
        map: 0,
        key_hash: 0,
        goid: 0,
        duration_ns: 0,
        detail: 0,
        addr: 0,
        len: 0,
        result: 0,
        map_type: 0,
        stack: [0; STACK_DEPTH],
        header: [0; HEADER_BYTES],
        table: [0; TABLE_BYTES],
        pid: 0,
        tid: 0,
        function: 0,
        kind: 0,
        flags: 0,
        key_len: 0,
        pad: [0; 2],
    };
}

/// An event with the key's bytes, sent instead of [`Event`] only with `--show-keys`, so
/// keys never leave the kernel unless asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyedEvent {
    pub event: Event,
    /// The first `event.key_len` bytes are the key's (at most [`KEY_MAX`]).
    pub key: [u8; KEY_MAX],
}

/// Size of [`Event`] in bytes: user space tells the two record kinds apart by size.
pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();
/// Size of [`KeyedEvent`] in bytes.
pub const KEYED_EVENT_SIZE: usize = core::mem::size_of::<KeyedEvent>();

/// The most functions a plan may hold: sizes the per-function call counters.
pub const MAX_FUNCTIONS: u32 = 64;
/// `CALLS` slot: returns that found no entry (the probe was attached mid-call).
pub const CALLS_ORPHANS: u32 = 2 * MAX_FUNCTIONS;
/// Slots of the `CALLS` per-CPU array: entries at `2f`, returns at `2f + 1`, orphans last.
pub const CALLS_SLOTS: u32 = 2 * MAX_FUNCTIONS + 1;

/// Settings of the whole run, written into the eBPF object's read-only globals before load.
/// What differs between traced processes is in [`ProcInfo`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Nonzero: keyed events carry the key's bytes ([`KeyedEvent`]).
    pub show_keys: u32,
    /// Nonzero: every exec on the host is reported ([`ProcessRecord`]), not only those of
    /// followed processes (`--all`).
    pub watch_all: u32,
    /// Nonzero: a followed process is stopped (SIGSTOP) at its exec, before its first
    /// instruction, until user space has attached it and sends SIGCONT (`-- CMD`).
    pub hold: u32,
    /// Where `child_pid` is in the `sched_process_fork` tracepoint's record: 44 before
    /// Linux 6.x turned its comm fields into `__data_loc`, 20 after; read from tracefs.
    pub fork_child_pid_offset: u32,
    /// Nonzero: the children of followed processes are followed (not with `--no-follow`).
    pub follow_forks: u32,
    pub pad: u32,
    /// [`FILTER_KEY`] and [`FILTER_MAP`] bits: which filters apply.
    pub filters: u64,
    /// With [`FILTER_KEY`]: keyed events must have this key hash.
    pub key_hash: u64,
    /// With [`FILTER_MAP`]: map events must be of the map header at this address.
    pub map: u64,
    /// Nonzero: map events are counted per map in [`MapTotals`] instead of sent one by one.
    pub summary_only: u64,
    /// Every this many records a CPU submits, it wakes the reader; between, the reader
    /// finds them on its own short timer.
    pub wakeup_records: u64,
}

/// What the programs need to know about one traced process, in the `PROCS` map under its
/// tgid: a hit in a process without an entry returns at once. Offsets come from
/// map-trace's per-Go-version table for the binary the process runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    /// The probe set of the process's executable: shared by every process running it.
    pub binary: u32,
    pub pad: u32,
    /// Run-time minus link-time addresses of the executable (PIE; else 0).
    pub load_bias: u64,
    /// Offset of `goid` in the goroutine (`runtime.g`, in the g register: R14 on amd64,
    /// R28 on arm64).
    pub goid_offset: u64,
    /// Offset of the key's `*abi.Type` in the map type.
    pub map_type_key_offset: u64,
    /// Offset of `Size_` in `abi.Type`.
    pub type_size_offset: u64,
    /// Address of `runtime.memstats.numgc` (completed GC cycles) in the process; 0 if
    /// unknown.
    pub gc_cycles_addr: u64,
    /// Where a timed call's header byte at return tells a variant of its event (classic
    /// `hashGrow`: same-size), and which bits; mask 0 for none.
    pub variant_offset: u64,
    pub variant_mask: u64,
}

/// The most processes traced at once (entries of `PROCS`).
pub const MAX_PROCESSES: u32 = 8192;
/// The most tasks followed at once (entries of `FOLLOW`): followed processes, and threads
/// of theirs that the fork tracepoint cannot tell from processes.
pub const MAX_FOLLOWED: u32 = 65536;

/// A process event, sent on the `PROCESSES` ring buffer (apart from the events, so that
/// tracing load cannot crowd it out).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessRecord {
    /// `bpf_ktime_get_ns()` at the exec.
    pub time_ns: u64,
    /// The process (tgid) that exec'd.
    pub pid: u32,
    /// 1: it is followed (a descendant); else reported only because of `--all`.
    pub followed: u8,
    /// 1: it was stopped at its exec and waits for SIGCONT; 2: stopping it failed.
    pub held: u8,
    pub pad: [u8; 2],
}

/// `ProcessRecord::held`.
pub const HELD: u8 = 1;
pub const HOLD_FAILED: u8 = 2;

/// A return address in user code, per probe set: the link-time address, so every process
/// of a binary shares the entry whatever its load address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrameKey {
    pub pc: u64,
    pub binary: u32,
    pub pad: u32,
}

/// Timed-call counters of one probe set: `slot` as in [`CALLS_SLOTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CallsKey {
    pub binary: u32,
    pub slot: u32,
}

/// `Config::filters`: only keyed events with `Config::key_hash` (others pass).
pub const FILTER_KEY: u64 = 1;
/// `Config::filters`: only map events of `Config::map` (events of no map pass).
pub const FILTER_MAP: u64 = 2;

/// Log2 buckets of a timed call's duration in nanoseconds: bucket `i` holds durations in
/// `[2^(i-1), 2^i)` (bucket 0: 0 ns); the last bucket holds everything longer.
pub const DURATION_BUCKETS: usize = 32;

/// The histogram bucket of a duration.
#[inline]
#[must_use]
pub const fn duration_bucket(ns: u64) -> usize {
    let bits = (u64::BITS - ns.leading_zeros()) as usize;
    if bits < DURATION_BUCKETS {
        bits
    } else {
        DURATION_BUCKETS - 1
    }
}

/// `--summary-only`: what one function did to one map, counted in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TotalsKey {
    pub map: u64,
    pub function: u16,
    /// 1 when the variant bits of [`ProcInfo`] were set at return (classic same-size grow).
    pub variant: u16,
    /// The process: map addresses repeat across processes.
    pub tgid: u32,
}

/// `--summary-only`: per CPU, the calls of one function on one map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapTotals {
    pub calls: u64,
    /// Timed calls: total and longest duration, and their histogram.
    pub total_ns: u64,
    pub worst_ns: u64,
    pub histogram: [u32; DURATION_BUCKETS],
    /// The map header at the latest call on this CPU, and when.
    pub last_ns: u64,
    pub header: [u8; HEADER_BYTES],
    /// The map's type descriptor.
    pub map_type: u64,
}

impl MapTotals {
    pub const ZERO: MapTotals = MapTotals {
        calls: 0,
        total_ns: 0,
        worst_ns: 0,
        histogram: [0; DURATION_BUCKETS],
        last_ns: 0,
        header: [0; HEADER_BYTES],
        map_type: 0,
    };
}

/// `LOST` slots: events the ring buffer had no room for, `--summary-only` calls that
/// found the totals map full, exec reports the process ring buffer had no room for, and
/// forks of followed processes that found `FOLLOW` full.
pub const LOST_EVENTS: u32 = 0;
pub const LOST_TOTALS: u32 = 1;
pub const LOST_EXECS: u32 = 2;
pub const LOST_FOLLOWS: u32 = 3;
pub const LOST_SLOTS: u32 = 4;

/// What the programs failed to read from the target's memory, counted per kind in the
/// `READ_FAILURES` per-CPU array (its slot is the value): the field is left empty (its
/// flag unset), the event itself is still sent.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// The goroutine's id (`g.goid`).
    Goid = 0,
    /// A map operation's key, or its size from the map type.
    Key = 1,
    /// The map header.
    Header = 2,
    /// The return address at the stack pointer, or a frame of the frame-pointer chain.
    Stack = 3,
    /// A swiss table's header.
    Table = 4,
    /// The completed-GC-cycles counter.
    GcCycles = 5,
}

impl ReadFailure {
    pub const ALL: [ReadFailure; 6] = [
        ReadFailure::Goid,
        ReadFailure::Key,
        ReadFailure::Header,
        ReadFailure::Stack,
        ReadFailure::Table,
        ReadFailure::GcCycles,
    ];

    /// The name in `-v` lines and in the Prometheus label.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            ReadFailure::Goid => "goid",
            ReadFailure::Key => "key",
            ReadFailure::Header => "header",
            ReadFailure::Stack => "stack",
            ReadFailure::Table => "table",
            ReadFailure::GcCycles => "gc_cycles",
        }
    }
}

/// Failed reads per kind, in [`ReadFailure::ALL`]'s order.
pub type ReadFailures = [u64; ReadFailure::ALL.len()];

/// Slots of the `READ_FAILURES` array.
#[expect(clippy::cast_possible_truncation, reason = "six kinds")]
pub const READ_FAILURE_SLOTS: u32 = ReadFailure::ALL.len() as u32;

/// The `SWITCH` array's one value: every program reads it first and returns at once
/// unless it is [`SWITCH_TRACING`]. It starts [`SWITCH_CLOSED`], so no probe reports
/// anything until all of them are in place (entries and returns start together), and is
/// set to [`SWITCH_STOPPED`] at a stop request before anything else is done.
pub const SWITCH_CLOSED: u32 = 0;
pub const SWITCH_TRACING: u32 = 1;
pub const SWITCH_STOPPED: u32 = 2;

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers, no padding left implicit.
unsafe impl aya::Pod for Config {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for ProcInfo {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for FrameKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for CallsKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for TotalsKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for MapTotals {}

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
                for (map, detail, table_in_result, function, map_type, map_at_return, branch) in [
                    (Reg::Arg1, None, false, 0, None, false, true),
                    (
                        Reg::Arg2,
                        Some(Reg::Arg3),
                        true,
                        63,
                        Some(Reg::Arg0),
                        false,
                        false,
                    ),
                    (Reg::Arg0, None, false, 5, Some(Reg::Arg1), true, true),
                ] {
                    let cookie = ProbeCookie {
                        kind,
                        key,
                        map,
                        detail,
                        table_in_result,
                        function,
                        map_type,
                        map_at_return,
                        on_stack_branch: branch,
                    };
                    let (k, back) = ProbeCookie::decode(cookie.encode());
                    assert_eq!(EventKind::from_u8(k), Some(kind));
                    assert_eq!(ProbeCookie { kind, ..back }, cookie);
                }
            }
        }
    }

    #[test]
    fn duration_buckets() {
        assert_eq!(duration_bucket(0), 0);
        assert_eq!(duration_bucket(1), 1);
        assert_eq!((duration_bucket(2), duration_bucket(3)), (2, 2));
        assert_eq!(duration_bucket(1024), 11);
        assert_eq!(duration_bucket(u64::MAX), DURATION_BUCKETS - 1);
        assert_eq!(core::mem::size_of::<MapTotals>() % 8, 0);
    }

    #[test]
    fn event_layout_is_stable() {
        assert_eq!(EVENT_SIZE, 200);
        assert_eq!(KEYED_EVENT_SIZE, EVENT_SIZE + KEY_MAX);
        assert_eq!(core::mem::align_of::<Event>(), 8);
    }
}
