//! One event as the per-event exports write it: the CSV's columns, by the same names and in
//! the same order, serialised by serde for the CSV and JSON Lines alike.

use serde::Serialize;

use crate::events::TraceEvent;

/// The contract's 13 columns, then `result` (madvise's return value), `caller` (the Go
/// function that called the runtime), `caller_line` (its `file:line`) and `type` (the map's
/// Go type): [`Record`]'s fields in order. `--show-keys` adds [`KEY_COLUMN`] last.
pub const HEADER: [&str; 17] = [
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
    pub map: Option<String>,
    /// 16 lowercase hex digits.
    pub key_hash: Option<String>,
    pub count: Option<u64>,
    pub detail: Option<String>,
    pub duration_ns: Option<u64>,
    pub addr: Option<String>,
    /// madvise's length, or an RSS sample's bytes.
    pub len: Option<u64>,
    pub advice: Option<String>,
    pub result: Option<i64>,
    pub caller: Option<&'a str>,
    pub caller_line: Option<String>,
    #[serde(rename = "type")]
    pub map_type: Option<&'a str>,
    /// Only with `--show-keys` (`Some`): left out otherwise, so the CSV keeps its 17
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
            map: e.map.map(|m| format!("{m:#x}")),
            key_hash: e.key_hash.map(|h| format!("{h:016x}")),
            count: e.count(),
            detail: e.detail.map(|d| d.to_string()),
            duration_ns: e.duration_ns,
            addr: m.map(|m| format!("{:#x}", m.addr)),
            len: m.map(|m| m.len).or(e.rss_bytes),
            advice: m.map(|m| m.advice_text()),
            result: m.map(|m| m.result),
            caller: e.caller.as_ref().map(|c| c.function.as_str()),
            caller_line: e.caller.as_ref().map(|c| c.location()),
            map_type: e.map_type.as_deref(),
            key: show_keys.then_some(e.key.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use map_trace_common::EventKind;

    use super::*;

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
