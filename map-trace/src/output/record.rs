//! One event as the per-event exports write it: the CSV's columns, by the same names and in
//! the same order, serialised by serde for the CSV and JSON Lines alike.

use serde::{Serialize, Serializer};

use crate::events::TraceEvent;

/// The contract's 13 columns, then `result` (madvise's return value), `caller` (the Go
/// function that called the runtime), `caller_line` (its `file:line`) and `type` (the map's
/// Go type) and `site` (where the map was made): [`Record`]'s fields in order. `--show-keys` adds [`KEY_COLUMN`] last.
pub const HEADER: [&str; 18] = [
    "time_ns",
    "event",
    "pid",
    "tid",
    "goid",
    "map",
    "key_hash",
    "count",
    "detail",
    "duration_ns",
    "addr",
    "len",
    "advice",
    "result",
    "caller",
    "caller_line",
    "type",
    "site",
];

/// The column `--show-keys` adds.
pub const KEY_COLUMN: &str = "key";

/// An event's fields as text or numbers; `None` is an empty CSV field and a JSON `null`.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub time_ns: u64,
    pub event: &'static str,
    pub pid: u32,
    /// None for map-trace's own RSS samples.
    pub tid: Option<u32>,
    pub goid: Option<u64>,
    /// `0x` + lowercase hex.
    pub map: Option<Hex>,
    /// 16 lowercase hex digits.
    pub key_hash: Option<Hex>,
    pub count: Option<u64>,
    pub detail: Option<String>,
    pub duration_ns: Option<u64>,
    pub addr: Option<Hex>,
    /// madvise's length, or an RSS sample's bytes.
    pub len: Option<u64>,
    pub advice: Option<String>,
    pub result: Option<i64>,
    pub caller: Option<&'a str>,
    pub caller_line: Option<&'a str>,
    #[serde(rename = "type")]
    pub map_type: Option<&'a str>,
    /// The line that made the map (or its first use seen), as [`crate::model::Site`] names it.
    pub site: Option<&'a str>,
    /// Only with `--show-keys` (`Some`): left out otherwise, so the CSV keeps its 18
    /// columns and a JSON object does not hint that keys exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Option<&'a str>>,
}

impl<'a> Record<'a> {
    #[must_use]
    pub fn new(e: &'a TraceEvent, show_keys: bool) -> Self {
        let m = e.madvise;
        Self {
            time_ns: e.time_ns,
            event: e.kind.name(),
            pid: e.pid,
            tid: (e.tid != 0).then_some(e.tid),
            goid: e.goid,
            map: e.map.map(Hex::prefixed),
            key_hash: e.key_hash.map(Hex::padded),
            count: e.count(),
            detail: e.detail.map(|d| d.to_string()),
            duration_ns: e.duration_ns,
            addr: m.map(|m| Hex::prefixed(m.addr)),
            len: m.map(|m| m.len).or(e.rss_bytes),
            advice: m.map(|m| m.advice_text()),
            result: m.map(|m| m.result),
            caller: e.caller.as_ref().map(|c| c.function.as_str()),
            caller_line: e.caller.as_ref().map(|c| c.location()),
            map_type: e.map_type.as_deref(),
            site: e.site.as_ref().map(|s| s.label()),
            key: show_keys.then_some(e.key.as_deref()),
        }
    }
}

/// A 64-bit value as hex text, formatted on the stack: two of these per event would
/// otherwise be two allocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hex {
    text: [u8; 18],
    len: u8,
}

impl Hex {
    const DIGITS: &'static [u8; 16] = b"0123456789abcdef";

    /// `0x` and the digits without leading zeros (`0x0` for zero), as `{:#x}` prints.
    #[must_use]
    pub fn prefixed(v: u64) -> Self {
        let digits = (64 - v.leading_zeros()).div_ceil(4).max(1) as usize;
        let mut text = [0_u8; 18];
        text[0] = b'0';
        text[1] = b'x';
        Self::fill(&mut text[2..2 + digits], v);
        Self {
            text,
            #[expect(clippy::cast_possible_truncation, reason = "at most 18")]
            len: (2 + digits) as u8,
        }
    }

    /// Exactly 16 digits, as `{:016x}` prints.
    #[must_use]
    pub fn padded(v: u64) -> Self {
        let mut text = [0_u8; 18];
        Self::fill(&mut text[..16], v);
        Self { text, len: 16 }
    }

    fn fill(out: &mut [u8], mut v: u64) {
        for digit in out.iter_mut().rev() {
            *digit = Self::DIGITS[(v & 0xf) as usize];
            v >>= 4;
        }
    }

    /// The text's bytes (ASCII).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and `x` are ever written.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use map_trace_common::EventKind;

    use super::*;

    #[test]
    fn hex_prints_as_format_does() {
        for v in [0, 1, 0xf, 0x10, 0x00c0_000a_b0c0, u64::MAX, 1 << 63] {
            assert_eq!(Hex::prefixed(v).as_str(), format!("{v:#x}"));
            assert_eq!(Hex::padded(v).as_str(), format!("{v:016x}"));
        }
    }

    /// The header the CSV writes is the record's own field names.
    #[test]
    fn header_is_the_field_names() {
        for show_keys in [false, true] {
            let e = TraceEvent::sample(EventKind::Assign, 1, None);
            let value = serde_json::to_value(Record::new(&e, show_keys)).unwrap();
            let names: Vec<&str> = value
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut want = HEADER.to_vec();
            if show_keys {
                want.push(KEY_COLUMN);
            }
            // serde_json's map is ordered by key unless preserve_order: compare as sets,
            // the CSV test below checks the order.
            let mut sorted = want.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted);
        }
        let mut out = csv::WriterBuilder::new().from_writer(Vec::new());
        let e = TraceEvent::sample(EventKind::Assign, 1, None);
        out.serialize(Record::new(&e, true)).unwrap();
        let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
        let mut want = HEADER.join(",");
        want.push(',');
        want.push_str(KEY_COLUMN);
        assert_eq!(text.lines().next(), Some(want.as_str()));
    }
}
