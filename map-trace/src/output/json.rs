//! JSON Lines: one object per event with the CSV's fields by the CSV's names; numbers as
//! JSON numbers, text (hex addresses and hashes too) as strings, absent values as `null`.

use std::io::Write;

use anyhow::Context as _;

use super::{Exporter, record::Record};
use crate::events::TraceEvent;

pub struct JsonExporter<W: Write> {
    out: W,
    show_keys: bool,
}

impl<W: Write> JsonExporter<W> {
    pub fn new(out: W, show_keys: bool) -> Self {
        Self { out, show_keys }
    }
}

impl<W: Write> Exporter for JsonExporter<W> {
    fn event(&mut self, event: &TraceEvent) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, &Record::new(event, self.show_keys))
            .context("writing JSON")?;
        self.out.write_all(b"\n").context("writing JSON")
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("flushing JSON")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use map_trace_common::EventKind;
    use serde_json::Value;

    use super::*;
    use crate::{
        events::{Detail, Madvise},
        model::CallSite,
        output::csv::CsvExporter,
    };

    fn events() -> Vec<TraceEvent> {
        vec![
            TraceEvent {
                time_ns: 42,
                pid: 100,
                tid: 101,
                goid: Some(9),
                key_hash: Some(0xe71f_a219_0541_574b),
                caller: Some(Arc::new(CallSite::new(
                    "main.F[go.shape.int,go.shape.string]".into(),
                    "/src/main.go".into(),
                    7,
                ))),
                map_type: Some("map[string]*main.Session".into()),
                key: Some("user,\"42\"".into()),
                ..TraceEvent::sample(EventKind::Assign, 0x00c0_000a_b0c0, Some(3))
            },
            TraceEvent::sample(EventKind::Clear, 1, None),
            TraceEvent {
                detail: Some(Detail::Table { old: 16, new: 32 }),
                duration_ns: Some(1500),
                ..TraceEvent::sample(EventKind::Grow, 2, Some(14))
            },
            TraceEvent {
                madvise: Some(Madvise {
                    addr: 0x7f00,
                    len: 8192,
                    advice: 8,
                    result: -22,
                }),
                ..TraceEvent::bare(EventKind::Madvise, 7, 1, 2)
            },
            TraceEvent {
                detail: Some(Detail::Rss("VmRSS")),
                rss_bytes: Some(4096),
                ..TraceEvent::bare(EventKind::Rss, 8, 1, 0)
            },
        ]
    }

    fn export(exporter: &mut dyn Exporter) {
        for e in events() {
            exporter.event(&e).unwrap();
        }
        exporter.finish().unwrap();
    }

    /// A JSON value as the CSV writes it.
    fn as_csv_field(v: &Value) -> String {
        match v {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => panic!("not a CSV field: {other}"),
        }
    }

    #[test]
    fn lines_parse_back_to_the_csv_rows() {
        for show_keys in [false, true] {
            let mut json = Vec::new();
            export(&mut JsonExporter::new(&mut json, show_keys));
            let mut csv = Vec::new();
            export(&mut CsvExporter::new(&mut csv, show_keys).unwrap());

            let mut reader = ::csv::Reader::from_reader(&csv[..]);
            let header = reader.headers().unwrap().clone();
            let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
            let lines: Vec<&str> = std::str::from_utf8(&json).unwrap().lines().collect();
            assert_eq!(lines.len(), rows.len());
            for (line, row) in lines.iter().zip(&rows) {
                let object: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
                assert_eq!(object.len(), header.len(), "{line}");
                for (name, field) in header.iter().zip(row) {
                    assert_eq!(as_csv_field(&object[name]), field, "{name} in {line}");
                }
            }
        }
    }

    #[test]
    fn numbers_are_numbers_and_absent_values_null() {
        let mut json = Vec::new();
        export(&mut JsonExporter::new(&mut json, false));
        let text = String::from_utf8(json).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["time_ns"], 42);
        assert_eq!(first["goid"], 9);
        assert_eq!(first["count"], 3);
        assert_eq!(first["map"], "0xc0000ab0c0");
        assert_eq!(first["key_hash"], "e71fa2190541574b");
        assert_eq!(first["caller_line"], "/src/main.go:7");
        assert_eq!(first["type"], "map[string]*main.Session");
        assert_eq!(first["duration_ns"], Value::Null);
        assert!(first.get("key").is_none(), "keys only with --show-keys");
        let madvise: Value = serde_json::from_str(text.lines().nth(3).unwrap()).unwrap();
        assert_eq!(madvise["result"], -22);
        assert_eq!(madvise["advice"], "FREE");
        let rss: Value = serde_json::from_str(text.lines().nth(4).unwrap()).unwrap();
        assert_eq!(
            (&rss["tid"], &rss["len"]),
            (&Value::Null, &Value::from(4096))
        );
    }
}
