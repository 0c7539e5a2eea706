//! The contract's CSV: one row per event, fixed leading columns.

use std::io::Write;

use anyhow::Context as _;

use super::{Exporter, record::Record};
use crate::events::TraceEvent;

pub use super::record::{HEADER, KEY_COLUMN};

pub struct CsvExporter<W: Write> {
    writer: csv::Writer<W>,
    show_keys: bool,
}

impl<W: Write> CsvExporter<W> {
    /// Writes the header at once, so a bad destination fails before anything is attached.
    pub fn new(out: W, show_keys: bool) -> anyhow::Result<Self> {
        // The header is written here, not by serde at the first row: a run without events
        // still gets it.
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
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

impl<W: Write> Exporter for CsvExporter<W> {
    fn event(&mut self, event: &TraceEvent) -> anyhow::Result<()> {
        self.writer
            .serialize(Record::new(event, self.show_keys))
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
                caller: Some(std::sync::Arc::new(CallSite::new(
                    "main.F[go.shape.int,go.shape.string]".into(),
                    "/src/main.go".into(),
                    7,
                ))),
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
