//! The contract's CSV: one row per event, fixed leading columns.

use std::io::Write;

use anyhow::Context as _;

use super::Exporter;
use crate::events::MapEvent;

/// The contract's columns, in order.
pub const HEADER: [&str; 13] = [
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

fn row(e: &MapEvent) -> [String; 13] {
    let opt = |v: Option<String>| v.unwrap_or_default();
    [
        e.time_ns.to_string(),
        e.kind.name().to_owned(),
        e.pid.to_string(),
        e.tid.to_string(),
        opt(e.goid.map(|g| g.to_string())),
        format!("{:#x}", e.map),
        opt(e.key_hash.map(|h| format!("{h:016x}"))),
        opt(e.count().map(|c| c.to_string())),
        opt(e.detail.map(|d| d.to_string())),
        opt(e.duration_ns.map(|d| d.to_string())),
        String::new(),
        String::new(),
        String::new(),
    ]
}

impl<W: Write> Exporter for CsvExporter<W> {
    fn event(&mut self, event: &MapEvent) -> anyhow::Result<()> {
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
    use crate::events::Detail;

    #[test]
    fn writes_header_and_rows() {
        let mut out = Vec::new();
        {
            let mut csv = CsvExporter::new(&mut out).unwrap();
            let e = MapEvent {
                time_ns: 42,
                pid: 100,
                tid: 101,
                goid: Some(9),
                key_hash: Some(0xe71f_a219_0541_574b),
                ..MapEvent::sample(EventKind::Assign, 0x00c0_000a_b0c0, Some(3))
            };
            csv.event(&e).unwrap();
            csv.event(&MapEvent {
                goid: None,
                ..MapEvent::sample(EventKind::Clear, 1, None)
            })
            .unwrap();
            csv.event(&MapEvent {
                detail: Some(Detail::Table { old: 16, new: 32 }),
                duration_ns: Some(1500),
                ..MapEvent::sample(EventKind::Grow, 2, Some(14))
            })
            .unwrap();
            csv.finish().unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "time_ns,event,pid,tid,goid,map,key_hash,count,detail,duration_ns,addr,len,advice",
                "42,assign,100,101,9,0xc0000ab0c0,e71fa2190541574b,3,,,,,",
                "0,clear,1,1,,0x1,,,,,,,",
                "0,grow,1,1,,0x2,,14,table:16->32,1500,,,",
            ]
        );
    }
}
