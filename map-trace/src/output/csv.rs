//! The contract's CSV: one row per event, fixed leading columns.
//!
//! Rows are written here, field by field, straight from the [`Record`] the JSON export
//! serialises too: through the csv crate's serde writer, a row cost a third of map-trace's
//! CPU at 700,000 events a second (its per-field dispatch and quoting state machine). The
//! quoting is the csv crate's (RFC 4180, quotes only where needed): a property test holds
//! the two to the same bytes.

use std::io::Write;

use anyhow::Context as _;

use super::{
    Exporter,
    record::{Hex, Record},
};
use crate::events::TraceEvent;

pub use super::record::{HEADER, KEY_COLUMN};

pub struct CsvExporter<W: Write> {
    out: W,
    show_keys: bool,
    /// One row, reused.
    row: Vec<u8>,
}

impl<W: Write> CsvExporter<W> {
    /// Writes the header at once, so a bad destination fails before anything is attached.
    pub fn new(mut out: W, show_keys: bool) -> anyhow::Result<Self> {
        // Written here, not with the first row: a run without events still gets it.
        let mut header = HEADER.join(",");
        if show_keys {
            header.push(',');
            header.push_str(KEY_COLUMN);
        }
        header.push('\n');
        out.write_all(header.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the CSV header")?;
        Ok(Self {
            out,
            show_keys,
            row: Vec::with_capacity(256),
        })
    }
}

impl<W: Write> Exporter for CsvExporter<W> {
    fn event(&mut self, event: &TraceEvent) -> anyhow::Result<()> {
        self.row.clear();
        write_row(&mut self.row, &Record::new(event, self.show_keys));
        self.out.write_all(&self.row).context("writing CSV")
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("flushing CSV")
    }
}

/// `r` as one CSV line, in [`HEADER`]'s order (then the key, if `r` has one).
fn write_row(row: &mut Vec<u8>, r: &Record<'_>) {
    number(row, Some(r.time_ns));
    text(row, Some(r.event.as_bytes()));
    number(row, Some(r.pid));
    number(row, r.tid);
    number(row, r.goid);
    text(row, r.map.as_ref().map(Hex::as_bytes));
    text(row, r.key_hash.as_ref().map(Hex::as_bytes));
    number(row, r.count);
    text(row, r.detail.as_deref().map(str::as_bytes));
    number(row, r.duration_ns);
    text(row, r.addr.as_ref().map(Hex::as_bytes));
    number(row, r.len);
    text(row, r.advice.as_deref().map(str::as_bytes));
    number(row, r.result);
    text(row, r.caller.map(str::as_bytes));
    text(row, r.caller_line.map(str::as_bytes));
    text(row, r.map_type.map(str::as_bytes));
    text(row, r.site.map(str::as_bytes));
    if let Some(key) = r.key {
        text(row, key.map(str::as_bytes));
    }
    // Every field above ended with a comma: the last one ends the line instead.
    if let Some(last) = row.last_mut() {
        *last = b'\n';
    }
}

/// A number field and its comma; nothing for `None`.
fn number(row: &mut Vec<u8>, v: Option<impl itoa::Integer>) {
    if let Some(v) = v {
        row.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
    row.push(b',');
}

/// A text field and its comma; quoted (quotes doubled) only if it holds a comma, a quote
/// or a line break, as the csv crate writes it; nothing for `None`.
fn text(row: &mut Vec<u8>, v: Option<&[u8]>) {
    if let Some(v) = v {
        if memchr::memchr3(b',', b'"', b'\n', v).is_some() || memchr::memchr(b'\r', v).is_some() {
            row.push(b'"');
            for &b in v {
                if b == b'"' {
                    row.push(b'"');
                }
                row.push(b);
            }
            row.push(b'"');
        } else {
            row.extend_from_slice(v);
        }
    }
    row.push(b',');
}

#[cfg(test)]
mod tests {
    use map_trace_common::EventKind;

    use super::*;
    use crate::{
        events::{Detail, Madvise},
        model::CallSite,
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
                "time_ns,event,pid,tid,goid,map,key_hash,count,detail,duration_ns,addr,len,advice,result,caller,caller_line,type,site",
                "42,assign,100,101,9,0xc0000ab0c0,e71fa2190541574b,3,,,,,,,\"main.F[go.shape.int,go.shape.string]\",/src/main.go:7,map[string]*main.Session,",
                "0,clear,1,1,,0x1,,,,,,,,,,,,",
                "0,grow,1,1,,0x2,,14,table:16->32,1500,,,,,,,,",
                "7,madvise,1,2,,,,,,,0x7f00,8192,DONTNEED,0,,,,",
                "8,rss,1,,,,,,VmRSS,,,4096,,,,,,",
            ]
        );
    }

    /// The rows are byte for byte what the csv crate's serde writer makes of the same
    /// record, whatever the text fields hold.
    #[test]
    fn rows_are_the_csv_crates() {
        use proptest::prelude::*;
        let text = proptest::option::of("(?s).{0,12}|[a-z,\"\r\n ]{0,12}");
        proptest!(|(caller in text.clone(), site in text.clone(), map_type in text.clone(),
                    key in text, time_ns: u64, goid: Option<u64>, show_keys: bool)| {
            let e = TraceEvent {
                time_ns,
                goid,
                caller: caller.map(|c| std::sync::Arc::new(CallSite::new(c, site.unwrap_or_default(), 3))),
                map_type: map_type.map(Into::into),
                key,
                ..TraceEvent::sample(EventKind::Assign, 0xc000_0100, Some(4))
            };
            let record = Record::new(&e, show_keys);
            let mut theirs = ::csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
            theirs.serialize(&record).unwrap();
            let theirs = theirs.into_inner().unwrap();
            let mut ours = Vec::new();
            write_row(&mut ours, &record);
            prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs));
        });
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
        assert!(lines[0].ends_with(",type,site,key"), "{}", lines[0]);
        assert!(lines[1].ends_with(",\"user,42\""), "{}", lines[1]);
        assert!(lines[2].ends_with(",,"), "{}", lines[2]);
    }
}
