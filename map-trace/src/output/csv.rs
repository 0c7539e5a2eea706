//! The contract's CSV: one row per event, fixed leading columns.

use std::io::Write;

use anyhow::Context as _;

use super::Exporter;
use crate::events::TraceEvent;

/// The contract's 13 columns, then `result` (madvise's return value), `caller` (the Go
/// function that called the runtime), `caller_line` (its `file:line`) and `type` (the map's
/// Go type); `--show-keys` adds `key` last.
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

pub struct CsvExporter<W: Write> {
    writer: csv::Writer<W>,
    show_keys: bool,
}

impl<W: Write> CsvExporter<W> {
    /// Writes the header at once, so a bad destination fails before anything is attached.
    pub fn new(out: W, show_keys: bool) -> anyhow::Result<Self> {
        let mut writer = csv::WriterBuilder::new().from_writer(out);
        let mut header = HEADER.to_vec();
        if show_keys {
            header.push(KEY_COLUMN);
        }
        writer
            .write_record(header)
            .context("writing the CSV header")?;
        writer.flush().context("writing the CSV header")?;
        Ok(Self { writer, show_keys })
    }
}

fn row(e: &TraceEvent) -> [String; 17] {
    fn opt<T: ToString>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    let m = e.madvise;
    [
        e.time_ns.to_string(),
        e.kind.name().to_owned(),
        e.pid.to_string(),
        opt((e.tid != 0).then_some(e.tid)),
        opt(e.goid),
        opt(e.map.map(|m| format!("{m:#x}"))),
        opt(e.key_hash.map(|h| format!("{h:016x}"))),
        opt(e.count()),
        opt(e.detail),
        opt(e.duration_ns),
        opt(m.map(|m| format!("{:#x}", m.addr))),
        opt(m.map(|m| m.len).or(e.rss_bytes)),
        opt(m.map(|m| m.advice_text())),
        opt(m.map(|m| m.result)),
        opt(e.caller.as_ref().map(|c| &c.function)),
        opt(e.caller.as_ref().map(|c| c.location())),
        opt(e.map_type.as_deref()),
    ]
}

impl<W: Write> Exporter for CsvExporter<W> {
    fn event(&mut self, event: &TraceEvent) -> anyhow::Result<()> {
        let row = row(event);
        if self.show_keys {
            let key = event.key.as_deref().unwrap_or_default();
            self.writer
                .write_record(row.iter().map(String::as_str).chain([key]))
        } else {
            self.writer.write_record(row)
        }
        .context("writing CSV")
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.writer.flush().context("flushing CSV")
    }
}

#[cfg(test)]
mod tests {
    use map_trace_common::EventKind;

    use super::*;
    use crate::{
        events::{Detail, Madvise},
        resolve::CallSite,
    };

    #[test]
    fn writes_header_and_rows() {
        let mut out = Vec::new();
        {
            let mut csv = CsvExporter::new(&mut out, false).unwrap();
            let e = TraceEvent {
                time_ns: 42,
                pid: 100,
                tid: 101,
                goid: Some(9),
                key_hash: Some(0xe71f_a219_0541_574b),
                caller: Some(std::sync::Arc::new(CallSite {
                    function: "main.F[go.shape.int,go.shape.string]".into(),
                    file: "/src/main.go".into(),
                    line: 7,
                })),
                map_type: Some("map[string]*main.Session".into()),
                ..TraceEvent::sample(EventKind::Assign, 0x00c0_000a_b0c0, Some(3))
            };
            csv.event(&e).unwrap();
            csv.event(&TraceEvent {
                goid: None,
                ..TraceEvent::sample(EventKind::Clear, 1, None)
            })
            .unwrap();
            csv.event(&TraceEvent {
                detail: Some(Detail::Table { old: 16, new: 32 }),
                duration_ns: Some(1500),
                ..TraceEvent::sample(EventKind::Grow, 2, Some(14))
            })
            .unwrap();
            csv.event(&TraceEvent {
                madvise: Some(Madvise {
                    addr: 0x7f00,
                    len: 8192,
                    advice: 4,
                    result: 0,
                }),
                ..TraceEvent::bare(EventKind::Madvise, 7, 1, 2)
            })
            .unwrap();
            csv.event(&TraceEvent {
                detail: Some(Detail::Rss("VmRSS")),
                rss_bytes: Some(4096),
                ..TraceEvent::bare(EventKind::Rss, 8, 1, 0)
            })
            .unwrap();
            csv.finish().unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "time_ns,event,pid,tid,goid,map,key_hash,count,detail,duration_ns,addr,len,advice,result,caller,caller_line,type",
                "42,assign,100,101,9,0xc0000ab0c0,e71fa2190541574b,3,,,,,,,\"main.F[go.shape.int,go.shape.string]\",/src/main.go:7,map[string]*main.Session",
                "0,clear,1,1,,0x1,,,,,,,,,,,",
                "0,grow,1,1,,0x2,,14,table:16->32,1500,,,,,,,",
                "7,madvise,1,2,,,,,,,0x7f00,8192,DONTNEED,0,,,",
                "8,rss,1,,,,,,VmRSS,,,4096,,,,,",
            ]
        );
    }

    #[test]
    fn adds_the_key_column_only_when_asked() {
        let mut out = Vec::new();
        {
            let mut csv = CsvExporter::new(&mut out, true).unwrap();
            csv.event(&TraceEvent {
                key: Some("user,42".into()),
                ..TraceEvent::sample(EventKind::Assign, 1, None)
            })
            .unwrap();
            csv.event(&TraceEvent::sample(EventKind::Clear, 1, None))
                .unwrap();
            csv.finish().unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].ends_with(",type,key"), "{}", lines[0]);
        assert!(lines[1].ends_with(",\"user,42\""), "{}", lines[1]);
        assert!(lines[2].ends_with(",,"), "{}", lines[2]);
    }
}
