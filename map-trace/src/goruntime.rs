//! What map-trace knows about the Go runtime, per Go version: the map flavour, the functions
//! to probe with their key registers, and struct offsets. Every per-version fact lives in
//! [`LAYOUTS`]; nothing else in map-trace branches on the version.

use std::{fmt, ops::RangeInclusive};

use map_trace_common::{EventKind, KeyKind, ProbeCookie, Reg};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RuntimeError {
    #[error("cannot read Go version `{0}`")]
    BadVersion(String),
    #[error(
        "built with {0}; map-trace supports {supported}: rebuild the program with a supported Go",
        supported = supported_releases()
    )]
    Unsupported(String),
    #[error(
        "{0}: cannot tell the map implementation (neither runtime.hashGrow nor the swiss table's rehash is in the binary)"
    )]
    UnknownFlavour(String),
    #[error(
        "{path} says it was built with {version}, which builds {claimed} maps, but it has the {found} maps' runtime: refusing an inconsistent binary"
    )]
    FlavourMismatch {
        path: String,
        version: String,
        claimed: Flavour,
        found: Flavour,
    },
    #[error("{version} with {flavour} maps is not a combination map-trace knows")]
    NoLayout { version: String, flavour: Flavour },
}

/// The two map implementations of the Go runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `runtime.hmap`: buckets with incremental evacuation (Go ≤ 1.23, `noswissmap`).
    Classic,
    /// `internal/runtime/maps`: swiss tables (Go 1.24+ default).
    Swiss,
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavour::Classic => "classic",
            Flavour::Swiss => "swiss",
        })
    }
}

/// A Go version as the build info states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoVersion {
    pub minor: u32,
    pub patch: u32,
    /// `GOEXPERIMENT`s named in the version string (`noswissmap`, `mapsplitgroup`, …).
    pub experiments: Vec<String>,
    /// The string itself, for messages.
    pub raw: String,
}

impl GoVersion {
    /// Parses `go1.26.6`, `go1.24.11 X:noswissmap`, `go1.26.6-X:nogreenteagc`,
    /// `go1.23rc1`.
    pub fn parse(raw: &str) -> Result<Self, RuntimeError> {
        let bad = || RuntimeError::BadVersion(raw.to_owned());
        let rest = raw.strip_prefix("go1.").ok_or_else(bad)?;
        let (release, experiments) = match rest.find([' ', '-']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let experiments = experiments
            .trim_start_matches([' ', '-'])
            .strip_prefix("X:")
            .map(|list| list.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let digits = |s: &str| -> Option<u32> {
            let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            s.get(..end)?.parse().ok()
        };
        let mut parts = release.splitn(2, '.');
        let minor = parts.next().and_then(digits).ok_or_else(bad)?;
        let patch = parts.next().and_then(digits).unwrap_or(0);
        Ok(Self {
            minor,
            patch,
            experiments,
            raw: raw.to_owned(),
        })
    }

    pub fn check_supported(&self) -> Result<(), RuntimeError> {
        if is_supported(self.minor) {
            Ok(())
        } else {
            Err(RuntimeError::Unsupported(self.raw.clone()))
        }
    }

    /// The map flavour a build of this version has, as the version string tells it: the one
    /// whose experiment it names (`noswissmap`), else its release's default. `None` for a
    /// release map-trace does not support.
    #[must_use]
    pub fn flavour(&self) -> Option<Flavour> {
        let rows = || LAYOUTS.iter().filter(|l| l.minors.contains(&self.minor));
        rows()
            .find(|l| {
                l.experiment
                    .is_some_and(|e| self.experiments.iter().any(|x| x == e))
            })
            .or_else(|| rows().find(|l| l.experiment.is_none()))
            .map(|l| l.flavour)
    }
}

/// What a timed function's event says in its `detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetailKind {
    None,
    /// classic `hashGrow`: `double` or `same-size`, from the header's flags at return.
    HashGrow,
    /// classic `evacuate*`: the old bucket index (third argument at entry).
    Evacuate,
    /// swiss `growToSmall`.
    Small,
    /// swiss `growToTable`.
    ToTable,
    /// swiss `(*table).grow`: old capacity from the table (first argument), new capacity
    /// from the fourth.
    TableGrow,
    /// swiss `(*table).split`.
    Split,
    /// A GC cycle starts (`gcBgMarkStartWorkers`, called once per cycle by `gcStart`
    /// after it decided to start one; `gcStart` itself also returns early).
    GcStart,
    /// A GC cycle's mark phase terminates (`gcMarkTermination`).
    GcMarkEnd,
    /// `makemap(t, hint, h)`: the size hint (second argument at entry).
    Hint,
    /// `makemap_small()`: no hint (at most one group's or bucket's worth).
    MakeSmall,
}

/// A runtime function map-trace probes, and what a call to it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFunction {
    pub symbol: &'static str,
    pub kind: EventKind,
    pub key: KeyKind,
    /// Register holding the map header pointer at entry.
    pub map: Reg,
    /// Register holding the map's type descriptor at entry.
    pub map_type: Option<Reg>,
    pub detail: DetailKind,
}

impl MapFunction {
    /// The attach cookie of this function's probes; `index` is its place in the plan.
    #[must_use]
    /// The cookie of this function's probes, the `index`th of the plan; `on_stack_branch`
    /// when its entry probe sits on the stack check's branch.
    pub fn cookie(&self, index: u16, on_stack_branch: bool) -> ProbeCookie {
        ProbeCookie {
            kind: self.kind,
            key: self.key,
            map: self.map,
            detail: match self.detail {
                DetailKind::Evacuate => Some(Reg::Arg2),
                DetailKind::TableGrow => Some(Reg::Arg3),
                DetailKind::Hint => Some(Reg::Arg1),
                _ => None,
            },
            table_in_result: matches!(self.detail, DetailKind::TableGrow | DetailKind::Split),
            function: index,
            map_type: self.map_type,
            map_at_return: matches!(self.kind, EventKind::Make),
            on_stack_branch,
        }
    }
}

const fn op(symbol: &'static str, kind: EventKind, key: KeyKind) -> MapFunction {
    MapFunction {
        symbol,
        kind,
        key,
        map: Reg::Arg1,
        map_type: Some(Reg::Arg0),
        detail: DetailKind::None,
    }
}

/// A function timed from entry to return: classic ones take `(t, h, …)`, swiss methods
/// `(m, typ, …)` or `(t *table, typ, m, …)`; GC functions have no map.
const fn timed(symbol: &'static str, kind: EventKind, map: Reg, detail: DetailKind) -> MapFunction {
    MapFunction {
        symbol,
        kind,
        key: KeyKind::None,
        map,
        map_type: match (kind, map) {
            (EventKind::Gc, _) => None,
            (_, Reg::Arg1) => Some(Reg::Arg0),
            _ => Some(Reg::Arg1),
        },
        detail,
    }
}

/// The map entry points: the same names and register use from Go 1.19 to 1.27, both flavours.
const MAP_OPS: &[MapFunction] = &[
    op("runtime.mapassign", EventKind::Assign, KeyKind::Mem),
    op("runtime.mapassign_fast32", EventKind::Assign, KeyKind::U32),
    op("runtime.mapassign_fast64", EventKind::Assign, KeyKind::U64),
    op(
        "runtime.mapassign_fast64ptr",
        EventKind::Assign,
        KeyKind::U64,
    ),
    op("runtime.mapassign_faststr", EventKind::Assign, KeyKind::Str),
    op("runtime.mapdelete", EventKind::Delete, KeyKind::Mem),
    op("runtime.mapdelete_fast32", EventKind::Delete, KeyKind::U32),
    op("runtime.mapdelete_fast64", EventKind::Delete, KeyKind::U64),
    op("runtime.mapdelete_faststr", EventKind::Delete, KeyKind::Str),
    op("runtime.mapclear", EventKind::Clear, KeyKind::None),
];

/// Classic growth: `hashGrow(t, h)` allocates, `evacuate*(t, h, oldbucket)` moves buckets.
const CLASSIC_GROWTH: &[MapFunction] = &[
    timed(
        "runtime.hashGrow",
        EventKind::Grow,
        Reg::Arg1,
        DetailKind::HashGrow,
    ),
    timed(
        "runtime.evacuate",
        EventKind::Evacuate,
        Reg::Arg1,
        DetailKind::Evacuate,
    ),
    timed(
        "runtime.evacuate_fast32",
        EventKind::Evacuate,
        Reg::Arg1,
        DetailKind::Evacuate,
    ),
    timed(
        "runtime.evacuate_fast64",
        EventKind::Evacuate,
        Reg::Arg1,
        DetailKind::Evacuate,
    ),
    timed(
        "runtime.evacuate_faststr",
        EventKind::Evacuate,
        Reg::Arg1,
        DetailKind::Evacuate,
    ),
];

/// Swiss growth: methods of `*Map` (map first) and `*table` (table first, map third).
const SWISS_GROWTH: &[MapFunction] = &[
    timed(
        "internal/runtime/maps.(*Map).growToSmall",
        EventKind::Grow,
        Reg::Arg0,
        DetailKind::Small,
    ),
    timed(
        "internal/runtime/maps.(*Map).growToTable",
        EventKind::Grow,
        Reg::Arg0,
        DetailKind::ToTable,
    ),
    timed(
        "internal/runtime/maps.(*table).grow",
        EventKind::Grow,
        Reg::Arg2,
        DetailKind::TableGrow,
    ),
    timed(
        "internal/runtime/maps.(*table).split",
        EventKind::Grow,
        Reg::Arg2,
        DetailKind::Split,
    ),
];

/// The map constructors, the same in both flavours and every supported version: they return
/// the map as their first result (`makemap(t, hint, h)` fills `h` when the compiler put the header on the
/// stack). A map that does not escape and has no hint over 8 gets no call at all.
const MAP_MAKE: &[MapFunction] = &[
    MapFunction {
        symbol: "runtime.makemap",
        kind: EventKind::Make,
        key: KeyKind::None,
        map: Reg::Arg2,
        map_type: Some(Reg::Arg0),
        detail: DetailKind::Hint,
    },
    MapFunction {
        symbol: "runtime.makemap_small",
        kind: EventKind::Make,
        key: KeyKind::None,
        map: Reg::Arg0,
        map_type: None,
        detail: DetailKind::MakeSmall,
    },
];

/// GC cycle boundaries: the same functions in every supported version.
const RUNTIME_GC: &[MapFunction] = &[
    timed(
        "runtime.gcBgMarkStartWorkers",
        EventKind::Gc,
        Reg::Arg1,
        DetailKind::GcStart,
    ),
    timed(
        "runtime.gcMarkTermination",
        EventKind::Gc,
        Reg::Arg1,
        DetailKind::GcMarkEnd,
    ),
];

/// The runtime's statistics object; `numgc` in it counts completed GC cycles.
pub const MEMSTATS_SYMBOL: &str = "runtime.memstats";

/// Where the map header keeps what map-trace reports (byte offsets, checked against DWARF).
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderLayout {
    /// `runtime.hmap`.
    Classic {
        count: usize,
        flags: usize,
        b: usize,
        noverflow: usize,
        oldbuckets: usize,
        nevacuate: usize,
        /// `hmap.flags` bit set while a same-size grow is in progress.
        same_size_flag: u8,
    },
    /// `internal/runtime/maps.Map`, and its `table` for table events.
    Swiss {
        used: usize,
        dir_ptr: usize,
        dir_len: usize,
        global_depth: usize,
        table_capacity: usize,
        table_growth_left: usize,
    },
}

/// A map's header as read at an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapState {
    Classic {
        count: u64,
        /// log2 of the number of buckets.
        b: u8,
        noverflow: u16,
        /// `oldbuckets` is set: evacuation still has work to do.
        growing: bool,
        same_size: bool,
        /// Old buckets evacuated so far.
        nevacuate: u64,
    },
    Swiss {
        used: u64,
        /// Tables in the directory; 0 for a small map (one group, no table).
        tables: u64,
        global_depth: u8,
        /// The directory, or a small map's group (0: none yet).
        dir_ptr: u64,
    },
}

impl MapState {
    #[must_use]
    pub fn count(&self) -> u64 {
        match *self {
            MapState::Classic { count, .. } => count,
            MapState::Swiss { used, .. } => used,
        }
    }
}

/// A swiss table's header, read at a table event's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableState {
    pub capacity: u16,
    pub growth_left: u16,
}

// Offsets come from the version table, but a layout with any offset must not panic.
fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(8))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    b.get(at..at.saturating_add(2))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

impl HeaderLayout {
    /// The header byte whose bits, at the return of a timed call, tell a variant of its
    /// event (classic: `sameSizeGrow` in `flags`), and those bits.
    #[must_use]
    pub fn variant(&self) -> Option<(u64, u64)> {
        match *self {
            HeaderLayout::Classic {
                flags,
                same_size_flag,
                ..
            } => Some((flags as u64, u64::from(same_size_flag))),
            HeaderLayout::Swiss { .. } => None,
        }
    }

    /// Reads the map header bytes copied by the eBPF program.
    #[must_use]
    pub fn decode(&self, h: &[u8]) -> MapState {
        match *self {
            HeaderLayout::Classic {
                count,
                flags,
                b,
                noverflow,
                oldbuckets,
                nevacuate,
                same_size_flag,
            } => MapState::Classic {
                count: le_u64(h, count),
                b: byte(h, b),
                noverflow: le_u16(h, noverflow),
                growing: le_u64(h, oldbuckets) != 0,
                same_size: byte(h, flags) & same_size_flag != 0,
                nevacuate: le_u64(h, nevacuate),
            },
            HeaderLayout::Swiss {
                used,
                dir_ptr,
                dir_len,
                global_depth,
                ..
            } => MapState::Swiss {
                used: le_u64(h, used),
                tables: le_u64(h, dir_len),
                global_depth: byte(h, global_depth),
                dir_ptr: le_u64(h, dir_ptr),
            },
        }
    }

    /// Reads a swiss table header; `None` for classic maps.
    #[must_use]
    pub fn decode_table(&self, t: &[u8]) -> Option<TableState> {
        match *self {
            HeaderLayout::Classic { .. } => None,
            HeaderLayout::Swiss {
                table_capacity,
                table_growth_left,
                ..
            } => Some(TableState {
                capacity: le_u16(t, table_capacity),
                growth_left: le_u16(t, table_growth_left),
            }),
        }
    }
}

const CLASSIC_HEADER: HeaderLayout = HeaderLayout::Classic {
    count: 0,
    flags: 8,
    b: 9,
    noverflow: 10,
    oldbuckets: 24,
    nevacuate: 32,
    same_size_flag: 8,
};

pub const SWISS_HEADER: HeaderLayout = HeaderLayout::Swiss {
    used: 0,
    dir_ptr: 16,
    dir_len: 24,
    global_depth: 32,
    table_capacity: 2,
    table_growth_left: 4,
};

/// What a map's memory is made of, per flavour: the unit the map type gives the size of,
/// and the runtime's constants that shape the rest (checked against the Go heap's own
/// measurement by the integration tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// `runtime.hmap`: `2^B` buckets of `BucketSize` (u16 at `bucket_size` in the map type),
    /// plus `2^(B-4)` overflow buckets made with them from B = 4, plus those made later.
    Classic {
        bucket_size_at: u64,
        /// Average elements per bucket that triggers a grow (6.5 as 13/2).
        load_num: u64,
        load_den: u64,
    },
    /// `maps.Map`: a small map's one group, or tables of `capacity / 8` groups of
    /// `GroupSize` (u64 at `group_size` in the map type), a `table_bytes` header each, and a
    /// directory of pointers.
    Swiss {
        group_size_at: u64,
        slots_per_group: u64,
        table_bytes: u64,
        max_table_capacity: u64,
        /// Load factor at which a table grows (7/8).
        load_num: u64,
        load_den: u64,
    },
}

pub const CLASSIC_STORAGE: Storage = Storage::Classic {
    bucket_size_at: 82,
    load_num: 13,
    load_den: 2,
};

pub const SWISS_STORAGE: Storage = Storage::Swiss {
    group_size_at: 80,
    slots_per_group: 8,
    table_bytes: 32,
    max_table_capacity: 1024,
    load_num: 7,
    load_den: 8,
};

// The binary formats each release writes: read by the binary reader, chosen here.

/// Byte offsets in `runtime.moduledata` of the fields map-trace reads (checked against DWARF
/// for every supported release by the integration tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuledataLayout {
    pub text: u64,
    pub types: u64,
    pub etypes: u64,
    pub gofunc: u64,
}

/// `moduledata.pcHeader` and `moduledata.funcnametab` (a slice: its data pointer): first in
/// every release.
pub const MODULEDATA_PCHEADER: u64 = 0;
pub const MODULEDATA_FUNCNAMETAB: u64 = 8;

/// Go 1.19.
pub const MODULEDATA_1_19: ModuledataLayout = ModuledataLayout {
    text: 176,
    types: 280,
    etypes: 288,
    gofunc: 304,
};

/// Go 1.20 added `covctrs` and `ecovctrs` (coverage counters) before `end`; 1.21 – 1.26.
pub const MODULEDATA_1_21: ModuledataLayout = ModuledataLayout {
    text: 176,
    types: 296,
    etypes: 304,
    gofunc: 320,
};

/// Go 1.27 added `typedesclen` after `types` and `itaboffset`, `itabsize` after `etypes`.
pub const MODULEDATA_1_27: ModuledataLayout = ModuledataLayout {
    text: 176,
    types: 296,
    etypes: 312,
    gofunc: 344,
};

/// What differs between the table formats: the magic, and where a function's `_func` record
/// and an inline tree's `inlinedCall` entry keep the fields read here (offsets checked
/// against DWARF for every supported release by the integration tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PclntabFormat {
    pub magic: u32,
    /// The releases that write it, for messages.
    pub releases: &'static str,
    /// Size of `_func`'s fixed part, before its pcdata and funcdata offsets.
    pub func_len: usize,
    pub func_flag: usize,
    pub func_nfuncdata: usize,
    pub inlined_call_len: u64,
    /// `inlinedCall`'s function name offset (into funcnametab) and parent pc.
    pub inlined_name_off: usize,
    pub inlined_parent_pc: usize,
}

/// `abi.Go118PCLnTabMagic`. `_func`: cuOffset u32 @32, funcID u8 @36, flag @37, pad,
/// nfuncdata @39. `inlinedCall`: parent i16, funcID u8, pad, file i32, line i32, func_
/// (the name offset) i32 @12, parentPc i32 @16.
pub const GO_1_18: PclntabFormat = PclntabFormat {
    magic: 0xffff_fff0,
    releases: "Go 1.18 and 1.19",
    func_len: 40,
    func_flag: 37,
    func_nfuncdata: 39,
    inlined_call_len: 20,
    inlined_name_off: 12,
    inlined_parent_pc: 16,
};

/// `abi.Go120PCLnTabMagic` (1.21–1.27 use it unchanged). `_func` gained startLine i32 @36
/// (funcID @40, flag @41, nfuncdata @43); `inlinedCall` became funcID u8, 3 pad bytes,
/// nameOff i32 @4, parentPc i32 @8, startLine i32 @12.
pub const GO_1_20: PclntabFormat = PclntabFormat {
    magic: 0xffff_fff1,
    releases: "Go 1.20 and later",
    func_len: 44,
    func_flag: 41,
    func_nfuncdata: 43,
    inlined_call_len: 16,
    inlined_name_off: 4,
    inlined_parent_pc: 8,
};

/// The formats this reader knows, told apart by their magic.
pub static PCLNTAB_FORMATS: [PclntabFormat; 2] = [GO_1_18, GO_1_20];

/// Everything version-specific about one range of Go releases and one map flavour.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub minors: RangeInclusive<u32>,
    pub flavour: Flavour,
    /// The functions to probe, in plan order: map operations, growth, constructors, GC.
    pub functions: [&'static [MapFunction]; 4],
    /// Where the map type keeps the sizes that tell the memory a map holds.
    pub storage: Storage,
    /// `g.stackguard0`: what the prologue's stack check compares against (the g register + this).
    pub stackguard0_offset: u64,
    /// `g.goid`.
    pub goid_offset: u64,
    /// `*abi.Type` of the key in the map type (`MapType.Key`, `OldMapType.Key`,
    /// `SwissMapType.Key`).
    pub map_type_key_offset: u64,
    /// `abi.Type.Size_`.
    pub type_size_offset: u64,
    /// `runtime.mstats.numgc`, in [`MEMSTATS_SYMBOL`].
    pub numgc_offset: u64,
    pub header: HeaderLayout,
    /// `runtime.moduledata` fields the binary reader uses (changed in Go 1.20 and 1.27).
    pub moduledata: ModuledataLayout,
    /// The pclntab format the releases write (changed in Go 1.20).
    pub pclntab: PclntabFormat,
    /// The `GOEXPERIMENT` that gives these releases this flavour when it is not their
    /// default (`noswissmap`); the version string names it. Others (`mapsplitgroup`) change
    /// nothing map-trace reads.
    pub experiment: Option<&'static str>,
}

impl Layout {
    /// Every probed function, in plan order.
    pub fn all_functions(&self) -> impl Iterator<Item = &'static MapFunction> + use<> {
        self.functions.into_iter().flatten()
    }

    /// The function at `index` of [`Layout::all_functions`].
    #[must_use]
    pub fn function(&self, index: u16) -> Option<&'static MapFunction> {
        self.all_functions().nth(usize::from(index))
    }
}

/// The key's `*abi.Type` in a map type: `MapType.Key`, `OldMapType.Key` and
/// `SwissMapType.Key` alike, in every release (checked against DWARF).
pub const MAP_TYPE_KEY: u64 = 48;

const fn classic(
    minors: RangeInclusive<u32>,
    goid_offset: u64,
    numgc_offset: u64,
    moduledata: ModuledataLayout,
    pclntab: PclntabFormat,
) -> Layout {
    Layout {
        minors,
        flavour: Flavour::Classic,
        functions: [MAP_OPS, CLASSIC_GROWTH, MAP_MAKE, RUNTIME_GC],
        storage: CLASSIC_STORAGE,
        stackguard0_offset: 0x10,
        goid_offset,
        map_type_key_offset: MAP_TYPE_KEY,
        type_size_offset: 0,
        numgc_offset,
        header: CLASSIC_HEADER,
        moduledata,
        pclntab,
        experiment: None,
    }
}

const fn swiss(
    minors: RangeInclusive<u32>,
    goid_offset: u64,
    numgc_offset: u64,
    moduledata: ModuledataLayout,
) -> Layout {
    Layout {
        minors,
        flavour: Flavour::Swiss,
        functions: [MAP_OPS, SWISS_GROWTH, MAP_MAKE, RUNTIME_GC],
        storage: SWISS_STORAGE,
        stackguard0_offset: 0x10,
        goid_offset,
        map_type_key_offset: MAP_TYPE_KEY,
        type_size_offset: 0,
        numgc_offset,
        header: SWISS_HEADER,
        moduledata,
        pclntab: GO_1_20,
        experiment: None,
    }
}

/// The classic maps Go 1.24 and 1.25 build with `GOEXPERIMENT=noswissmap`.
const fn noswissmap(layout: Layout) -> Layout {
    Layout {
        experiment: Some("noswissmap"),
        ..layout
    }
}

/// The one table of per-version facts (see ../shared/docs/go-runtime.md; every row is
/// checked against the DWARF of a real binary by the integration tests). `g.goid` moved in
/// Go 1.23 and back in 1.25; `mstats.numgc` moved in 1.25; moduledata changed in 1.20 and
/// 1.27, the pclntab in 1.20. Go 1.20 has no row: no build of it is tested here.
pub static LAYOUTS: &[Layout] = &[
    classic(19..=19, 152, 7704, MODULEDATA_1_19, GO_1_18),
    classic(21..=22, 152, 7704, MODULEDATA_1_21, GO_1_20),
    classic(23..=23, 160, 7704, MODULEDATA_1_21, GO_1_20),
    noswissmap(classic(24..=24, 160, 7704, MODULEDATA_1_21, GO_1_20)),
    noswissmap(classic(25..=25, 152, 7680, MODULEDATA_1_21, GO_1_20)),
    swiss(24..=24, 160, 7704, MODULEDATA_1_21),
    swiss(25..=26, 152, 7680, MODULEDATA_1_21),
    swiss(27..=27, 152, 7680, MODULEDATA_1_27),
];

/// A row of the version table for Go 1.`minor`, for what both its flavours share (the
/// moduledata layout and pclntab format the binary reader needs); `None` for a release
/// map-trace does not support.
#[must_use]
pub fn release(minor: u32) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.minors.contains(&minor))
}

/// Whether map-trace supports Go 1.`minor`: the version table has it.
#[must_use]
pub fn is_supported(minor: u32) -> bool {
    release(minor).is_some()
}

/// The supported releases as a person reads them: `Go 1.19 and 1.21 to 1.27`.
#[must_use]
pub fn supported_releases() -> String {
    let newest = LAYOUTS.iter().map(|l| *l.minors.end()).max().unwrap_or(0);
    let mut spans: Vec<(u32, u32)> = Vec::new();
    for minor in (0..=newest).filter(|&m| is_supported(m)) {
        match spans.last_mut() {
            Some((_, last)) if *last + 1 == minor => *last = minor,
            _ => spans.push((minor, minor)),
        }
    }
    let text: Vec<String> = spans
        .iter()
        .map(|&(first, last)| match last - first {
            0 => format!("1.{first}"),
            _ => format!("1.{first} to 1.{last}"),
        })
        .collect();
    format!("Go {}", text.join(" and "))
}

/// Symbols that only one flavour's runtime has.
const CLASSIC_MARKER: &str = "runtime.hashGrow";
const SWISS_MARKER: &str = "internal/runtime/maps.(*table).rehash";

/// The map flavour, decided from the symbols in the binary.
#[must_use]
pub fn detect_flavour(has_function: impl Fn(&str) -> bool) -> Option<Flavour> {
    if has_function(CLASSIC_MARKER) {
        Some(Flavour::Classic)
    } else if has_function(SWISS_MARKER) {
        Some(Flavour::Swiss)
    } else {
        None
    }
}

/// The runtime of one target: its version, flavour and layout.
#[derive(Debug)]
pub struct Runtime {
    pub version: GoVersion,
    pub flavour: Flavour,
    pub layout: &'static Layout,
}

impl Runtime {
    pub fn new(version: GoVersion, flavour: Flavour) -> Result<Self, RuntimeError> {
        version.check_supported()?;
        let layout = LAYOUTS
            .iter()
            .find(|l| l.flavour == flavour && l.minors.contains(&version.minor))
            .ok_or_else(|| RuntimeError::NoLayout {
                version: version.raw.clone(),
                flavour,
            })?;
        Ok(Self {
            version,
            flavour,
            layout,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::binary::mutate::mutated;

    #[test]
    fn parses_version_strings() {
        let v = GoVersion::parse("go1.26.6").unwrap();
        assert_eq!((v.minor, v.patch), (26, 6));
        assert!(v.experiments.is_empty());
        let v = GoVersion::parse("go1.24.11 X:noswissmap").unwrap();
        assert_eq!(
            (v.minor, v.patch, v.experiments.as_slice()),
            (24, 11, &["noswissmap".to_owned()][..])
        );
        let v = GoVersion::parse("go1.27.3-X:mapsplitgroup,nogreenteagc").unwrap();
        assert_eq!(v.minor, 27);
        assert_eq!(v.experiments, ["mapsplitgroup", "nogreenteagc"]);
        let v = GoVersion::parse("go1.23rc1").unwrap();
        assert_eq!((v.minor, v.patch), (23, 0));
        assert!(GoVersion::parse("devel +abc").is_err());
        assert!(GoVersion::parse("go2.0").is_err());
    }

    #[test]
    fn unsupported_releases_are_refused_naming_the_supported_ones() {
        let supported = |v: &str| GoVersion::parse(v).unwrap().check_supported();
        for v in ["go1.19.8", "go1.21.13", "go1.27.3"] {
            assert!(supported(v).is_ok(), "{v}");
        }
        for v in ["go1.18.10", "go1.20.14", "go1.28.0"] {
            let err = supported(v).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "built with {v}; map-trace supports Go 1.19 and 1.21 to 1.27: rebuild the program with a supported Go"
                )
            );
        }
    }

    #[test]
    fn every_supported_version_has_a_layout() {
        for minor in (0..40).filter(|&m| is_supported(m)) {
            let version = GoVersion::parse(&format!("go1.{minor}.0")).unwrap();
            let flavours: &[Flavour] = match minor {
                ..=23 => &[Flavour::Classic],
                24 | 25 => &[Flavour::Classic, Flavour::Swiss],
                _ => &[Flavour::Swiss],
            };
            for &flavour in flavours {
                assert!(
                    Runtime::new(version.clone(), flavour).is_ok(),
                    "go1.{minor} {flavour}"
                );
            }
            // Both flavours of a release share what the binary reader needs.
            let shared = release(minor).unwrap();
            for row in LAYOUTS.iter().filter(|l| l.minors.contains(&minor)) {
                assert_eq!(
                    (row.moduledata, row.pclntab),
                    (shared.moduledata, shared.pclntab),
                    "go1.{minor}"
                );
            }
        }
        assert_eq!(
            (0..40).filter(|&m| is_supported(m)).collect::<Vec<_>>(),
            [19, 21, 22, 23, 24, 25, 26, 27]
        );
        let v = GoVersion::parse("go1.22.1").unwrap();
        assert!(matches!(
            Runtime::new(v, Flavour::Swiss),
            Err(RuntimeError::NoLayout { .. })
        ));
    }

    #[test]
    fn version_strings_tell_the_flavour() {
        let flavour = |v: &str| GoVersion::parse(v).unwrap().flavour();
        assert_eq!(flavour("go1.19.8"), Some(Flavour::Classic));
        assert_eq!(flavour("go1.23.9"), Some(Flavour::Classic));
        assert_eq!(flavour("go1.24.11"), Some(Flavour::Swiss));
        assert_eq!(flavour("go1.24.11 X:noswissmap"), Some(Flavour::Classic));
        assert_eq!(
            flavour("go1.25.5 X:boringcrypto,noswissmap"),
            Some(Flavour::Classic)
        );
        assert_eq!(flavour("go1.27.3-X:mapsplitgroup"), Some(Flavour::Swiss));
        assert_eq!(flavour("go1.20.14"), None);
    }

    #[test]
    fn decodes_headers() {
        let mut h = [0_u8; 48];
        h[0] = 100;
        h[8] = 8; // same-size grow flag
        h[9] = 4;
        h[10] = 3;
        h[24] = 1; // oldbuckets set
        h[32] = 5;
        assert_eq!(
            CLASSIC_HEADER.decode(&h),
            MapState::Classic {
                count: 100,
                b: 4,
                noverflow: 3,
                growing: true,
                same_size: true,
                nevacuate: 5
            }
        );
        let mut h = [0_u8; 48];
        h[0] = 9;
        h[24] = 2;
        h[32] = 1;
        let state = SWISS_HEADER.decode(&h);
        assert_eq!(
            state,
            MapState::Swiss {
                used: 9,
                tables: 2,
                global_depth: 1,
                dir_ptr: 0,
            }
        );
        assert_eq!(state.count(), 9);
        let t = [5, 0, 0, 4, 7, 0, 0, 0];
        assert_eq!(
            SWISS_HEADER.decode_table(&t),
            Some(TableState {
                capacity: 1024,
                growth_left: 7
            })
        );
        assert_eq!(CLASSIC_HEADER.decode_table(&t), None);
        // Short input reads as zeros rather than panicking.
        assert_eq!(CLASSIC_HEADER.decode(&[1]).count(), 0);
    }

    #[test]
    fn offsets_past_the_header_read_as_zeros() {
        // Found by the event_decode fuzz target: `at + 8` overflowed for offsets near the
        // top of usize.
        let far = HeaderLayout::Classic {
            count: usize::MAX,
            flags: usize::MAX - 1,
            b: usize::MAX,
            noverflow: usize::MAX - 1,
            oldbuckets: usize::MAX - 7,
            nevacuate: 48,
            same_size_flag: 8,
        };
        assert_eq!(far.decode(&[0xff; 48]).count(), 0);
        let far = HeaderLayout::Swiss {
            dir_ptr: 900,
            used: usize::MAX - 3,
            dir_len: usize::MAX,
            global_depth: usize::MAX,
            table_capacity: usize::MAX - 1,
            table_growth_left: usize::MAX,
        };
        assert_eq!(
            far.decode_table(&[0xff; 8]),
            Some(TableState {
                capacity: 0,
                growth_left: 0
            })
        );
        assert_eq!(far.decode(&[0xff; 48]).count(), 0);
    }

    #[test]
    fn cookies_name_each_functions_registers() {
        let swiss = LAYOUTS
            .iter()
            .find(|l| l.flavour == Flavour::Swiss)
            .unwrap();
        let grow = swiss
            .all_functions()
            .position(|f| f.detail == DetailKind::TableGrow)
            .unwrap();
        let f = swiss.function(u16::try_from(grow).unwrap()).unwrap();
        let cookie = f.cookie(7, false);
        assert_eq!(
            (cookie.map, cookie.detail, cookie.table_in_result),
            (Reg::Arg2, Some(Reg::Arg3), true)
        );
        let op = swiss.function(0).unwrap().cookie(0, false);
        assert_eq!(
            (op.map, op.detail, op.table_in_result),
            (Reg::Arg1, None, false)
        );
    }

    #[test]
    fn flavour_from_symbols() {
        assert_eq!(
            detect_flavour(|s| s == CLASSIC_MARKER),
            Some(Flavour::Classic)
        );
        assert_eq!(detect_flavour(|s| s == SWISS_MARKER), Some(Flavour::Swiss));
        // A noswissmap 1.25 binary has some internal/runtime/maps symbols but not rehash.
        assert_eq!(
            detect_flavour(|s| s.starts_with("internal/runtime/maps.(*Map)")),
            None
        );
    }

    /// Lowercase words, as GOEXPERIMENT names are.
    fn words() -> impl Strategy<Value = Vec<String>> {
        vec(vec(b'a'..=b'z', 1..12), 1..4).prop_map(|ws| {
            ws.into_iter()
                .map(|w| String::from_utf8(w).unwrap())
                .collect()
        })
    }

    proptest! {
        // Cheap cases: many of them still run in well under a second.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn arbitrary_version_strings_never_panic(chars in vec(any::<char>(), 0..40)) {
            let raw: String = chars.into_iter().collect();
            if let Ok(v) = GoVersion::parse(&raw) {
                prop_assert_eq!(&v.raw, &raw);
                let _ = v.check_supported();
                let _ = Runtime::new(v, Flavour::Swiss);
            }
        }

        #[test]
        fn mutated_version_strings_never_panic(
            bytes in mutated(b"go1.27.3-X:mapsplitgroup,nogreenteagc".to_vec()),
        ) {
            let _ = GoVersion::parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn versions_read_back(
            minor in any::<u32>(),
            patch in any::<u32>(),
            experiments in words(),
            sep in prop_oneof![Just(" "), Just("-")],
        ) {
            let v = GoVersion::parse(&format!("go1.{minor}.{patch}")).unwrap();
            prop_assert_eq!((v.minor, v.patch), (minor, patch));
            let raw = format!("go1.{minor}.{patch}{sep}X:{}", experiments.join(","));
            prop_assert_eq!(GoVersion::parse(&raw).unwrap().experiments, experiments);
        }

        #[test]
        fn headers_decode_from_any_bytes(
            h in vec(any::<u8>(), 0..64),
            offsets in vec(prop_oneof![0..64_usize, usize::MAX - 16.., any::<usize>()], 6),
            flag in any::<u8>(),
        ) {
            let o = |i: usize| offsets[i];
            let layouts = [
                CLASSIC_HEADER,
                SWISS_HEADER,
                HeaderLayout::Classic {
                    count: o(0),
                    flags: o(1),
                    b: o(2),
                    noverflow: o(3),
                    oldbuckets: o(4),
                    nevacuate: o(5),
                    same_size_flag: flag,
                },
                HeaderLayout::Swiss {
                    used: o(0),
                    dir_len: o(1),
                    global_depth: o(2),
                    table_capacity: o(3),
                    table_growth_left: o(4),
                    dir_ptr: o(5),
                },
            ];
            for layout in layouts {
                let state = layout.decode(&h);
                let _ = (state.count(), layout.decode_table(&h), layout.variant());
            }
        }
    }
}
