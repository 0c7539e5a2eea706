//! Decoding ring-buffer records into events, with the runtime's layout for the map state.

use std::{fmt, sync::Arc};

use map_trace_common::{
    EVENT_SIZE, Event, EventKind, FLAG_DETAIL, FLAG_GOID, FLAG_HEADER, FLAG_KEY, FLAG_STACK,
    FLAG_TABLE, KEYED_EVENT_SIZE, KeyKind, MapTotals, STACK_DEPTH, TotalsKey,
};
use thiserror::Error;

use crate::{
    goruntime::{DetailKind, Layout, MapState, TableState},
    model::{CallSite, Site, Timing},
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes, expected {EVENT_SIZE} or {KEYED_EVENT_SIZE}")]
    Size(usize),
    #[error("unknown event kind {0}")]
    Kind(u8),
    #[error("event of unknown function {0}")]
    Function(u16),
}

/// The `detail` of grow, evacuate, gc and rss events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// classic: buckets doubled.
    Double,
    /// classic: same number of buckets, rebuilt to drop overflow buckets.
    SameSize,
    /// swiss: a small map got its group.
    Small,
    /// swiss: a small map became a table.
    ToTable,
    /// swiss: a table grew from `old` to `new` slots.
    Table { old: u16, new: u16 },
    /// swiss: a full table split in two.
    Split,
    /// classic: the old bucket an evacuation moved.
    Bucket(u64),
    /// A GC cycle (its number, where readable) started.
    GcStart(Option<u64>),
    /// A GC cycle's mark phase terminated.
    GcMarkEnd(Option<u64>),
    /// Which resident-memory figure an `rss` sample is (`VmRSS`, `RssAnon`).
    Rss(&'static str),
    /// A map made with this size hint (`makemap`).
    Hint(u64),
    /// A map made with no hint or one of at most 8 (`makemap_small`).
    MakeSmall,
}

impl Detail {
    /// The kind, without numbers: what the summary counts by.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Detail::Double => "double",
            Detail::SameSize => "same-size",
            Detail::Small | Detail::MakeSmall => "small",
            Detail::ToTable => "to-table",
            Detail::Table { .. } => "table",
            Detail::Split => "split",
            Detail::Bucket(_) => "bucket",
            Detail::GcStart(_) => "start",
            Detail::GcMarkEnd(_) => "mark-end",
            Detail::Rss(which) => which,
            Detail::Hint(_) => "hint",
        }
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Table { old, new } => write!(f, "table:{old}->{new}"),
            Detail::Bucket(b) => write!(f, "{b}"),
            Detail::Hint(n) => write!(f, "hint:{n}"),
            Detail::GcStart(Some(n)) | Detail::GcMarkEnd(Some(n)) => {
                write!(f, "{}:{n}", self.label())
            }
            other => f.write_str(other.label()),
        }
    }
}

/// The name of a madvise(2) advice, as the kernel's headers spell it without `MADV_`.
#[must_use]
pub fn advice_name(advice: u64) -> Option<&'static str> {
    Some(match advice {
        0 => "NORMAL",
        1 => "RANDOM",
        2 => "SEQUENTIAL",
        3 => "WILLNEED",
        4 => "DONTNEED",
        8 => "FREE",
        9 => "REMOVE",
        10 => "DONTFORK",
        11 => "DOFORK",
        12 => "MERGEABLE",
        13 => "UNMERGEABLE",
        14 => "HUGEPAGE",
        15 => "NOHUGEPAGE",
        16 => "DONTDUMP",
        17 => "DODUMP",
        18 => "WIPEONFORK",
        19 => "KEEPONFORK",
        20 => "COLD",
        21 => "PAGEOUT",
        22 => "POPULATE_READ",
        23 => "POPULATE_WRITE",
        24 => "DONTNEED_LOCKED",
        25 => "COLLAPSE",
        100 => "HWPOISON",
        101 => "SOFT_OFFLINE",
        102 => "GUARD_INSTALL",
        103 => "GUARD_REMOVE",
        _ => return None,
    })
}

/// A madvise(2) call of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Madvise {
    pub addr: u64,
    pub len: u64,
    pub advice: u64,
    /// 0, or the negative errno.
    pub result: i64,
}

impl Madvise {
    /// The advice by name, or its number.
    #[must_use]
    pub fn advice_text(&self) -> String {
        advice_name(self.advice).map_or_else(|| self.advice.to_string(), str::to_owned)
    }

    /// Whether this call handed memory back to the kernel: a successful DONTNEED, FREE,
    /// REMOVE or `DONTNEED_LOCKED`.
    #[must_use]
    pub fn gives_back(&self) -> bool {
        self.result == 0 && matches!(self.advice, 4 | 8 | 9 | 24)
    }
}

/// One thing that happened in the target: a map event, a GC boundary, a madvise call or
/// an RSS sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Monotonic clock; the return for timed events.
    pub time_ns: u64,
    pub kind: EventKind,
    pub pid: u32,
    pub tid: u32,
    pub goid: Option<u64>,
    /// The map header's address, for map events.
    pub map: Option<u64>,
    pub key_hash: Option<u64>,
    /// The map's header when the event fired (at return for timed events).
    pub state: Option<MapState>,
    /// The table a swiss table event worked on, as it was at entry.
    pub table: Option<TableState>,
    pub detail: Option<Detail>,
    pub duration_ns: Option<u64>,
    pub madvise: Option<Madvise>,
    /// `rss` samples: the value in bytes.
    pub rss_bytes: Option<u64>,
    /// The Go code that called the runtime (resolved from the return addresses).
    pub caller: Option<Arc<CallSite>>,
    /// The map's Go type, where the binary's type data names it.
    pub map_type: Option<Arc<str>>,
    /// The key as text, only with `--show-keys`.
    pub key: Option<String>,
    /// `make` events: the nearest caller in the program's own module.
    pub module_caller: Option<Arc<CallSite>>,
    /// Where the map comes from, as the aggregates know it when the event is recorded.
    pub site: Option<Arc<Site>>,
    /// The map type's bucket (classic) or group (swiss) size, in bytes.
    pub unit_size: Option<u64>,
}

/// What an event carries as bare addresses and bytes, for [`crate::resolve`] to name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw<'a> {
    /// Run-time address of the map's type descriptor, or 0.
    pub map_type: u64,
    /// Run-time return addresses at entry, innermost first; 0 past the end.
    pub stack: [u64; STACK_DEPTH],
    /// How the probed function took its key.
    pub key_kind: KeyKind,
    /// The key's bytes, in records sent with `--show-keys`.
    pub key: Option<&'a [u8]>,
}

impl TraceEvent {
    /// An event with only its kind, time and process.
    #[must_use]
    pub fn bare(kind: EventKind, time_ns: u64, pid: u32, tid: u32) -> Self {
        Self {
            time_ns,
            kind,
            pid,
            tid,
            goid: None,
            map: None,
            key_hash: None,
            state: None,
            table: None,
            detail: None,
            duration_ns: None,
            madvise: None,
            rss_bytes: None,
            caller: None,
            map_type: None,
            key: None,
            module_caller: None,
            site: None,
            unit_size: None,
        }
    }

    /// The element count when the event fired.
    #[must_use]
    pub fn count(&self) -> Option<u64> {
        self.state.map(|s| s.count())
    }
}

/// The process a ring-buffer record belongs to, which says how to decode the rest; `None`
/// for a record of no known size.
#[must_use]
pub fn record_pid(record: &[u8]) -> Option<u32> {
    if record.len() != EVENT_SIZE && record.len() != KEYED_EVENT_SIZE {
        return None;
    }
    let at = std::mem::offset_of!(Event, pid);
    let bytes = record.get(at..at + 4)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

/// Decodes one ring-buffer record: an [`Event`], or a `KeyedEvent` (the event, then the
/// key's bytes).
pub fn decode<'a>(record: &'a [u8], layout: &Layout) -> Result<(TraceEvent, Raw<'a>), DecodeError> {
    if record.len() != EVENT_SIZE && record.len() != KEYED_EVENT_SIZE {
        return Err(DecodeError::Size(record.len()));
    }
    // SAFETY: length checked; `Event` is plain integers, valid for any bytes.
    let raw: Event = unsafe { record.as_ptr().cast::<Event>().read_unaligned() };
    let kind = EventKind::from_u8(raw.kind).ok_or(DecodeError::Kind(raw.kind))?;
    let event = decode_event(&raw, kind, layout)?;
    let key = record
        .get(EVENT_SIZE..)
        .filter(|k| !k.is_empty() && raw.flags & FLAG_KEY != 0)
        .and_then(|k| k.get(..usize::from(raw.key_len)));
    let stack = if raw.flags & FLAG_STACK == 0 {
        [0; STACK_DEPTH]
    } else {
        raw.stack
    };
    let key_kind = layout
        .function(raw.function)
        .map_or(KeyKind::None, |f| f.key);
    Ok((
        event,
        Raw {
            map_type: raw.map_type,
            stack,
            key_kind,
            key,
        },
    ))
}

fn decode_event(raw: &Event, kind: EventKind, layout: &Layout) -> Result<TraceEvent, DecodeError> {
    let bare = TraceEvent::bare(kind, raw.time_ns, raw.pid, raw.tid);
    if kind == EventKind::Madvise {
        let madvise = Madvise {
            addr: raw.addr,
            len: raw.len,
            advice: raw.detail,
            result: raw.result,
        };
        return Ok(TraceEvent {
            madvise: Some(madvise),
            ..bare
        });
    }
    let function = layout
        .function(raw.function)
        .ok_or(DecodeError::Function(raw.function))?;
    let has = |flag: u8| raw.flags & flag != 0;
    let state = has(FLAG_HEADER).then(|| layout.header.decode(&raw.header));
    let table = if has(FLAG_TABLE) {
        layout.header.decode_table(&raw.table)
    } else {
        None
    };
    let entry_value = has(FLAG_DETAIL).then_some(raw.detail);
    let detail = match function.detail {
        DetailKind::None => None,
        DetailKind::HashGrow => state.map(|s| match s {
            MapState::Classic {
                same_size: true, ..
            } => Detail::SameSize,
            _ => Detail::Double,
        }),
        DetailKind::Evacuate => entry_value.map(Detail::Bucket),
        DetailKind::Small => Some(Detail::Small),
        DetailKind::ToTable => Some(Detail::ToTable),
        #[expect(clippy::cast_possible_truncation, reason = "capacities are uint16")]
        DetailKind::TableGrow => table.zip(entry_value).map(|(t, new)| Detail::Table {
            old: t.capacity,
            new: new as u16,
        }),
        DetailKind::Split => Some(Detail::Split),
        DetailKind::GcStart => Some(Detail::GcStart(entry_value)),
        DetailKind::GcMarkEnd => Some(Detail::GcMarkEnd(entry_value)),
        DetailKind::Hint => entry_value.map(Detail::Hint),
        DetailKind::MakeSmall => Some(Detail::MakeSmall),
    };
    Ok(TraceEvent {
        goid: has(FLAG_GOID).then_some(raw.goid),
        map: (kind != EventKind::Gc).then_some(raw.map),
        key_hash: has(FLAG_KEY).then_some(raw.key_hash),
        state,
        table,
        detail,
        // The contract gives grows and evacuations a duration; a `make` is timed only to
        // find its map at the return.
        duration_ns: matches!(kind, EventKind::Grow | EventKind::Evacuate)
            .then_some(raw.duration_ns),
        ..bare
    })
}

/// `--summary-only`: what the kernel counted of one function's calls on one map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelCalls {
    pub map: u64,
    pub kind: EventKind,
    /// For grows, the kind a streamed event's detail would name.
    pub grow_kind: Option<&'static str>,
    /// Calls, and for timed functions their durations.
    pub timing: Timing,
    /// When the newest of these calls was counted, and the header it left.
    pub last_ns: u64,
    pub state: Option<MapState>,
    /// The map's Go type, named by the caller's resolver.
    pub map_type: Option<Arc<str>>,
}

/// Decodes one entry of the kernel's totals; `None` for a function not in the layout.
#[must_use]
pub fn decode_totals(key: &TotalsKey, t: &MapTotals, layout: &Layout) -> Option<KernelCalls> {
    let function = layout.function(key.function)?;
    let grow_kind = match function.detail {
        DetailKind::HashGrow if key.variant != 0 => Some(Detail::SameSize.label()),
        DetailKind::HashGrow => Some(Detail::Double.label()),
        DetailKind::Small => Some(Detail::Small.label()),
        DetailKind::ToTable => Some(Detail::ToTable.label()),
        DetailKind::TableGrow => Some(Detail::Table { old: 0, new: 0 }.label()),
        DetailKind::Split => Some(Detail::Split.label()),
        _ => None,
    };
    Some(KernelCalls {
        map: key.map,
        kind: function.kind,
        grow_kind,
        timing: Timing {
            count: t.calls,
            total_ns: t.total_ns,
            worst_ns: t.worst_ns,
            histogram: t.histogram.map(u64::from),
        },
        last_ns: t.last_ns,
        state: (t.last_ns != 0).then(|| layout.header.decode(&t.header)),
        map_type: None,
    })
}

/// Records that could not be decoded: counted and reported, never the end of a run (a
/// damaged record says nothing about the next one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Undecodable {
    pub count: u64,
    /// The first one's reason, for the summary.
    pub first: Option<String>,
}

impl Undecodable {
    /// Counts one; its reason is returned for `-v` to print.
    pub fn note(&mut self, reason: impl fmt::Display) -> String {
        let reason = reason.to_string();
        self.count += 1;
        self.first.get_or_insert_with(|| reason.clone());
        reason
    }
}

#[cfg(test)]
impl TraceEvent {
    /// An event of `kind` on `map` with element count `count`, for unit tests.
    pub(crate) fn sample(kind: EventKind, map: u64, count: Option<u64>) -> Self {
        Self {
            map: Some(map),
            state: count.map(|used| MapState::Swiss {
                used,
                tables: 0,
                global_depth: 0,
                dir_ptr: 0,
            }),
            ..Self::bare(kind, 0, 1, 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::{collection::vec, prelude::*};

    #[test]
    fn undecodable_records_are_counted_with_the_first_reason() {
        let mut bad = Undecodable::default();
        assert_eq!(bad.note(DecodeError::Kind(99)), "unknown event kind 99");
        bad.note(DecodeError::Size(3));
        assert_eq!(bad.count, 2);
        assert_eq!(bad.first.as_deref(), Some("unknown event kind 99"));
    }

    use super::*;
    use crate::{
        binary::mutate::mutated,
        goruntime::{Flavour, LAYOUTS},
    };

    fn bytes(e: &Event) -> Vec<u8> {
        // SAFETY: reading a plain struct as bytes.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(e).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }

    fn layout(flavour: Flavour) -> &'static Layout {
        LAYOUTS.iter().find(|l| l.flavour == flavour).unwrap()
    }

    fn index_of(layout: &Layout, detail: DetailKind) -> u16 {
        let i = layout
            .all_functions()
            .position(|f| f.detail == detail)
            .unwrap();
        u16::try_from(i).unwrap()
    }

    #[test]
    fn decodes_a_keyed_operation() {
        let mut raw = Event::ZERO;
        raw.time_ns = 5;
        raw.map = 0xc000_1000;
        raw.key_hash = 0xabc;
        raw.pid = 10;
        raw.tid = 11;
        raw.goid = 7;
        raw.kind = EventKind::Delete as u8;
        raw.flags = FLAG_KEY | FLAG_GOID | FLAG_HEADER;
        raw.header[0] = 3;
        let e = decode(&bytes(&raw), layout(Flavour::Classic)).unwrap().0;
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(
            (e.key_hash, e.goid, e.count()),
            (Some(0xabc), Some(7), Some(3))
        );
        assert_eq!(
            (e.pid, e.tid, e.map, e.time_ns),
            (10, 11, Some(0xc000_1000), 5)
        );
        assert_eq!((e.detail, e.duration_ns), (None, None));
    }

    #[test]
    fn decodes_growth_details() {
        let swiss = layout(Flavour::Swiss);
        let mut raw = Event::ZERO;
        raw.kind = EventKind::Grow as u8;
        raw.function = index_of(swiss, DetailKind::TableGrow);
        raw.flags = FLAG_TABLE | FLAG_DETAIL;
        raw.table[2] = 128;
        raw.detail = 256;
        raw.duration_ns = 900;
        let e = decode(&bytes(&raw), swiss).unwrap().0;
        assert_eq!(e.detail, Some(Detail::Table { old: 128, new: 256 }));
        assert_eq!(e.detail.unwrap().to_string(), "table:128->256");
        assert_eq!(e.duration_ns, Some(900));

        let classic = layout(Flavour::Classic);
        raw.function = index_of(classic, DetailKind::HashGrow);
        raw.flags = FLAG_HEADER;
        raw.header[8] = 8; // sameSizeGrow
        assert_eq!(
            decode(&bytes(&raw), classic).unwrap().0.detail,
            Some(Detail::SameSize)
        );
        raw.header[8] = 0;
        assert_eq!(
            decode(&bytes(&raw), classic).unwrap().0.detail,
            Some(Detail::Double)
        );
        raw.kind = EventKind::Evacuate as u8;
        raw.function = index_of(classic, DetailKind::Evacuate);
        raw.flags = FLAG_DETAIL;
        raw.detail = 17;
        assert_eq!(
            decode(&bytes(&raw), classic)
                .unwrap()
                .0
                .detail
                .unwrap()
                .to_string(),
            "17"
        );
    }

    #[test]
    fn decodes_madvise_and_gc() {
        let classic = layout(Flavour::Classic);
        let mut raw = Event::ZERO;
        raw.kind = EventKind::Madvise as u8;
        raw.addr = 0x1000;
        raw.len = 8192;
        raw.detail = 8;
        raw.result = -22;
        let e = decode(&bytes(&raw), classic).unwrap().0;
        let m = e.madvise.unwrap();
        assert_eq!(
            (m.addr, m.len, m.advice_text(), m.result),
            (0x1000, 8192, "FREE".into(), -22)
        );
        assert!(!m.gives_back());
        assert!(Madvise { result: 0, ..m }.gives_back());
        assert_eq!(e.map, None);
        assert_eq!(Madvise { advice: 77, ..m }.advice_text(), "77");

        raw = Event::ZERO;
        raw.kind = EventKind::Gc as u8;
        raw.function = index_of(classic, DetailKind::GcMarkEnd);
        raw.flags = FLAG_DETAIL;
        raw.detail = 12;
        let e = decode(&bytes(&raw), classic).unwrap().0;
        assert_eq!(e.detail.unwrap().to_string(), "mark-end:12");
        assert_eq!(e.map, None);
        raw.flags = 0;
        raw.function = index_of(classic, DetailKind::GcStart);
        assert_eq!(
            decode(&bytes(&raw), classic)
                .unwrap()
                .0
                .detail
                .unwrap()
                .to_string(),
            "start"
        );
    }

    #[test]
    fn decodes_keys_stacks_and_types() {
        let classic = layout(Flavour::Classic);
        let mut raw = Event::ZERO;
        raw.kind = EventKind::Assign as u8;
        raw.function = index_of(classic, DetailKind::None);
        raw.flags = FLAG_KEY | FLAG_STACK;
        raw.key_len = 3;
        raw.map_type = 0x4a_0000;
        raw.stack[0] = 0x48_1234;
        let mut record = bytes(&raw);
        record.extend_from_slice(b"abc");
        record.resize(KEYED_EVENT_SIZE, 0xee);
        let (_, extra) = decode(&record, classic).unwrap();
        assert_eq!(extra.key, Some(&b"abc"[..]));
        assert_eq!(extra.key_kind, classic.function(raw.function).unwrap().key);
        assert_eq!((extra.map_type, extra.stack[0]), (0x4a_0000, 0x48_1234));
        // A plain record has no key; a record without FLAG_STACK no return addresses.
        raw.flags = FLAG_KEY;
        let plain = bytes(&raw);
        let (_, extra) = decode(&plain, classic).unwrap();
        assert_eq!((extra.key, extra.stack), (None, [0; STACK_DEPTH]));
    }

    #[test]
    fn rejects_bad_records() {
        let classic = layout(Flavour::Classic);
        assert_eq!(decode(&[0; 3], classic), Err(DecodeError::Size(3)));
        let mut raw = Event::ZERO;
        raw.kind = 99;
        assert_eq!(decode(&bytes(&raw), classic), Err(DecodeError::Kind(99)));
        raw.kind = EventKind::Assign as u8;
        raw.function = 999;
        assert_eq!(
            decode(&bytes(&raw), classic),
            Err(DecodeError::Function(999))
        );
    }

    /// Everything the exporters read of a decoded record.
    fn poke(record: &[u8], layout: &Layout) -> Result<(), TestCaseError> {
        let Ok((event, raw)) = decode(record, layout) else {
            return Ok(());
        };
        let _ = event.count();
        if let Some(detail) = event.detail {
            let _ = (detail.to_string(), detail.label());
        }
        if let Some(m) = event.madvise {
            let _ = (m.advice_text(), m.gives_back());
        }
        if let Some(key) = raw.key {
            prop_assert!(key.len() <= record.len() - EVENT_SIZE);
        }
        Ok(())
    }

    /// A keyed assign on a classic map and a swiss table grow, as the eBPF side sends them.
    fn valid_records() -> [Vec<u8>; 2] {
        let classic = layout(Flavour::Classic);
        let mut raw = Event::ZERO;
        raw.kind = EventKind::Assign as u8;
        raw.function = index_of(classic, DetailKind::None);
        raw.flags = FLAG_KEY | FLAG_STACK | FLAG_HEADER | FLAG_GOID;
        raw.key_len = 3;
        let mut keyed = bytes(&raw);
        keyed.extend_from_slice(b"abc");
        keyed.resize(KEYED_EVENT_SIZE, 0);
        let swiss = layout(Flavour::Swiss);
        raw.kind = EventKind::Grow as u8;
        raw.function = index_of(swiss, DetailKind::TableGrow);
        raw.flags = FLAG_TABLE | FLAG_DETAIL | FLAG_HEADER;
        [keyed, bytes(&raw)]
    }

    proptest! {
        // Cheap cases: many of them still run in well under a second.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn arbitrary_records_never_panic(
            record in prop_oneof![
                vec(any::<u8>(), 0..KEYED_EVENT_SIZE + 8),
                vec(any::<u8>(), EVENT_SIZE),
                vec(any::<u8>(), KEYED_EVENT_SIZE),
            ],
            row in 0..LAYOUTS.len(),
        ) {
            poke(&record, &LAYOUTS[row])?;
        }

        #[test]
        fn mutated_records_never_panic(
            record in mutated(valid_records()[0].clone()),
            row in 0..LAYOUTS.len(),
        ) {
            poke(&record, &LAYOUTS[row])?;
        }

        #[test]
        fn mutated_table_grows_never_panic(
            record in mutated(valid_records()[1].clone()),
            row in 0..LAYOUTS.len(),
        ) {
            poke(&record, &LAYOUTS[row])?;
        }
    }
}
