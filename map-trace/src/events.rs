//! Decoding ring-buffer records into events.

use map_trace_common::{EVENT_SIZE, Event, EventKind, FLAG_COUNT, FLAG_KEY};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes, expected {EVENT_SIZE}")]
    Size(usize),
    #[error("unknown event kind {0}")]
    Kind(u8),
}

/// One map operation seen in the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEvent {
    pub time_ns: u64,
    pub kind: EventKind,
    pub pid: u32,
    pub tid: u32,
    pub map: u64,
    pub key_hash: Option<u64>,
    pub count: Option<u64>,
}

#[cfg(test)]
impl MapEvent {
    /// An event of `kind` on `map` for unit tests.
    pub(crate) fn sample(kind: EventKind, map: u64, count: Option<u64>) -> Self {
        Self {
            time_ns: 0,
            kind,
            pid: 1,
            tid: 1,
            map,
            key_hash: None,
            count,
        }
    }
}

pub fn decode(record: &[u8]) -> Result<MapEvent, DecodeError> {
    if record.len() != EVENT_SIZE {
        return Err(DecodeError::Size(record.len()));
    }
    // SAFETY: length checked; `Event` is plain integers, valid for any bytes.
    let raw: Event = unsafe { record.as_ptr().cast::<Event>().read_unaligned() };
    Ok(MapEvent {
        time_ns: raw.time_ns,
        kind: EventKind::from_u8(raw.kind).ok_or(DecodeError::Kind(raw.kind))?,
        pid: raw.pid,
        tid: raw.tid,
        map: raw.map,
        key_hash: (raw.flags & FLAG_KEY != 0).then_some(raw.key_hash),
        count: (raw.flags & FLAG_COUNT != 0).then_some(raw.count),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(e: &Event) -> Vec<u8> {
        // SAFETY: reading a plain struct as bytes.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(e).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }

    #[test]
    fn decodes_records() {
        let raw = Event {
            time_ns: 5,
            map: 0xc000_1000,
            key_hash: 0xabc,
            count: 3,
            pid: 10,
            tid: 11,
            kind: EventKind::Delete as u8,
            flags: FLAG_KEY,
            pad: [0; 6],
        };
        let e = decode(&bytes(&raw)).unwrap();
        assert_eq!(e.kind, EventKind::Delete);
        assert_eq!(e.key_hash, Some(0xabc));
        assert_eq!(e.count, None);
        assert_eq!((e.pid, e.tid, e.map, e.time_ns), (10, 11, 0xc000_1000, 5));
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[0; 3]), Err(DecodeError::Size(3)));
        let raw = Event {
            kind: 99,
            ..Event::default()
        };
        assert_eq!(decode(&bytes(&raw)), Err(DecodeError::Kind(99)));
    }
}
