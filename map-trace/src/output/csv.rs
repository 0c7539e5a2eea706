//! The contract's CSV: one row per event, fixed leading columns.

use std::io::Write;

use anyhow::Context as _;

use super::Exporter;
use crate::events::TraceEvent;

/// The contract's 13 columns, then `result` (madvise's return value).
pub const HEADER: [&str; 14] = [
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
];

pub struct CsvExporter<W: Write> {
    writer: csv::Writer<W>,
}

impl<W: Write> CsvExporter<W> {
    /// Writes the header at once, so a bad destination fails before anything is attached.
    pub fn new(out: W) -> anyhow::Result<Self> {
        let mut writer = csv::WriterBuilder::new().from_writer(out);
        writer
            .write_record(HEADER)
            .context("writing the CSV header")?;
        writer.flush().context("writing the CSV header")?;
        Ok(Self { writer })
    }
}

fn row(e: &TraceEvent) -> [String; 14] {
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
    ]
}

impl<W: Write> Exporter for CsvExporter<W> {
    fn event(&mut self, event: &TraceEvent) -> anyhow::Result<()> {
        self.writer.write_record(row(event)).context("writing CSV")
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.writer.flush().context("flushing CSV")
    }
}

#[cfg(test)]
mod tests {
    use map_trace_common::EventKind;

    use super::*;
    use crate::events::{Detail, Madvise};

    #[test]
    fn writes_header_and_rows() {
        let mut out = Vec::new();
        {
            let mut csv = CsvExporter::new(&mut out).unwrap();
            let e = TraceEvent {
                time_ns: 42,
                pid: 100,
                tid: 101,
                goid: Some(9),
                key_hash: Some(0xe71f_a219_0541_574b),
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
                "time_ns,event,pid,tid,goid,map,key_hash,count,detail,duration_ns,addr,len,advice,result",
                "42,assign,100,101,9,0xc0000ab0c0,e71fa2190541574b,3,,,,,,",
                "0,clear,1,1,,0x1,,,,,,,,",
                "0,grow,1,1,,0x2,,14,table:16->32,1500,,,,",
                "7,madvise,1,2,,,,,,,0x7f00,8192,DONTNEED,0",
                "8,rss,1,,,,,,VmRSS,,,4096,,",
            ]
        );
    }
}
