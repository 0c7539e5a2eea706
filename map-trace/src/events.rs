//! Decoding ring-buffer records into events, with the runtime's layout for the map state.

use std::fmt;

use map_trace_common::{
    EVENT_SIZE, Event, EventKind, FLAG_DETAIL, FLAG_GOID, FLAG_HEADER, FLAG_KEY, FLAG_TABLE,
};
use thiserror::Error;

use crate::goruntime::{DetailKind, Layout, MapState, TableState};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes, expected {EVENT_SIZE}")]
    Size(usize),
    #[error("unknown event kind {0}")]
    Kind(u8),
    #[error("event of unknown function {0}")]
    Function(u16),
}

/// The `detail` of grow and evacuate events.
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
}

impl Detail {
    /// The grow kind, without capacities: what the summary counts by.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Detail::Double => "double",
            Detail::SameSize => "same-size",
            Detail::Small => "small",
            Detail::ToTable => "to-table",
            Detail::Table { .. } => "table",
            Detail::Split => "split",
            Detail::Bucket(_) => "bucket",
        }
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Table { old, new } => write!(f, "table:{old}->{new}"),
            Detail::Bucket(b) => write!(f, "{b}"),
            other => f.write_str(other.label()),
        }
    }
}

/// One thing a map did in the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEvent {
    /// Monotonic clock; the return for timed events.
    pub time_ns: u64,
    pub kind: EventKind,
    pub pid: u32,
    pub tid: u32,
    pub goid: Option<u64>,
    pub map: u64,
    pub key_hash: Option<u64>,
    /// The map's header when the event fired (at return for timed events).
    pub state: Option<MapState>,
    /// The table a swiss table event worked on, as it was at entry.
    pub table: Option<TableState>,
    pub detail: Option<Detail>,
    pub duration_ns: Option<u64>,
}

impl MapEvent {
    /// The element count when the event fired.
    #[must_use]
    pub fn count(&self) -> Option<u64> {
        self.state.map(|s| s.count())
    }
}

pub fn decode(record: &[u8], layout: &Layout) -> Result<MapEvent, DecodeError> {
    if record.len() != EVENT_SIZE {
        return Err(DecodeError::Size(record.len()));
    }
    // SAFETY: length checked; `Event` is plain integers, valid for any bytes.
    let raw: Event = unsafe { record.as_ptr().cast::<Event>().read_unaligned() };
    let kind = EventKind::from_u8(raw.kind).ok_or(DecodeError::Kind(raw.kind))?;
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
    };
    Ok(MapEvent {
        time_ns: raw.time_ns,
        kind,
        pid: raw.pid,
        tid: raw.tid,
        goid: has(FLAG_GOID).then_some(raw.goid),
        map: raw.map,
        key_hash: has(FLAG_KEY).then_some(raw.key_hash),
        state,
        table,
        detail,
        duration_ns: kind.is_timed().then_some(raw.duration_ns),
    })
}

#[cfg(test)]
impl MapEvent {
    /// An event of `kind` on `map` with element count `count`, for unit tests.
    pub(crate) fn sample(kind: EventKind, map: u64, count: Option<u64>) -> Self {
        Self {
            time_ns: 0,
            kind,
            pid: 1,
            tid: 1,
            goid: None,
            map,
            key_hash: None,
            state: count.map(|used| MapState::Swiss {
                used,
                tables: 0,
                global_depth: 0,
            }),
            table: None,
            detail: None,
            duration_ns: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goruntime::{Flavour, LAYOUTS};

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
        let e = decode(&bytes(&raw), layout(Flavour::Classic)).unwrap();
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(
            (e.key_hash, e.goid, e.count()),
            (Some(0xabc), Some(7), Some(3))
        );
        assert_eq!((e.pid, e.tid, e.map, e.time_ns), (10, 11, 0xc000_1000, 5));
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
        let e = decode(&bytes(&raw), swiss).unwrap();
        assert_eq!(e.detail, Some(Detail::Table { old: 128, new: 256 }));
        assert_eq!(e.detail.unwrap().to_string(), "table:128->256");
        assert_eq!(e.duration_ns, Some(900));

        let classic = layout(Flavour::Classic);
        raw.function = index_of(classic, DetailKind::HashGrow);
        raw.flags = FLAG_HEADER;
        raw.header[8] = 8; // sameSizeGrow
        assert_eq!(
            decode(&bytes(&raw), classic).unwrap().detail,
            Some(Detail::SameSize)
        );
        raw.header[8] = 0;
        assert_eq!(
            decode(&bytes(&raw), classic).unwrap().detail,
            Some(Detail::Double)
        );
        raw.kind = EventKind::Evacuate as u8;
        raw.function = index_of(classic, DetailKind::Evacuate);
        raw.flags = FLAG_DETAIL;
        raw.detail = 17;
        assert_eq!(
            decode(&bytes(&raw), classic)
                .unwrap()
                .detail
                .unwrap()
                .to_string(),
            "17"
        );
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
}
