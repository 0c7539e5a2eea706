//! A Chrome trace-event JSON file, the format ui.perfetto.dev and `chrome://tracing` open:
//! grows and evacuations as slices on a track per goroutine, madvise calls and GC
//! boundaries as instants on the process, and counters for each map's element count, the
//! resident memory and the bytes madvise gave back.
//!
//! Streamed: each event is written as it comes and the array is closed at the end, so a long
//! run never sits in memory. `ts` and `dur` are microseconds; `ts` counts from the start of
//! the first event written (a call already running then starts slightly before zero).

use std::{
    collections::{HashMap, HashSet},
    io::Write,
};

use anyhow::Context as _;
use map_trace_common::EventKind;
use serde_json::{Map, Value, json};

use super::Exporter;
use crate::events::TraceEvent;

pub struct PerfettoExporter<W: Write> {
    out: W,
    /// The trace's time zero (monotonic ns), set by the first event.
    origin: Option<u64>,
    /// Whether an entry was written, so the next one needs a comma first.
    wrote: bool,
    /// Goroutines whose track has been named.
    named: HashSet<u64>,
    /// Each map's element count as last written, so its counter only gets changes.
    counts: HashMap<u64, u64>,
    /// Bytes madvise handed back to the kernel so far.
    given_back: u64,
}

/// Nanoseconds as the format's microseconds.
fn micros(ns: i128) -> f64 {
    #[expect(
        clippy::cast_precision_loss,
        reason = "ns differences fit f64's 53 bits"
    )]
    let us = ns as f64 / 1e3;
    us
}

impl<W: Write> PerfettoExporter<W> {
    pub fn new(mut out: W) -> anyhow::Result<Self> {
        out.write_all(br#"{"displayTimeUnit":"ns","traceEvents":["#)
            .context("writing the Perfetto trace")?;
        Ok(Self {
            out,
            origin: None,
            wrote: false,
            named: HashSet::new(),
            counts: HashMap::new(),
            given_back: 0,
        })
    }

    fn write(&mut self, entry: &Value) -> anyhow::Result<()> {
        let sep: &[u8] = if self.wrote { b",\n" } else { b"\n" };
        self.wrote = true;
        self.out
            .write_all(sep)
            .context("writing the Perfetto trace")?;
        serde_json::to_writer(&mut self.out, entry).context("writing the Perfetto trace")
    }

    /// `ts` of a moment, relative to the trace's origin.
    fn ts(&self, ns: u64) -> f64 {
        micros(i128::from(ns) - i128::from(self.origin.unwrap_or(ns)))
    }

    /// A grow or evacuation, from its entry to its return, on its goroutine's track.
    fn slice(&mut self, e: &TraceEvent, duration_ns: u64) -> anyhow::Result<()> {
        // 0 is no goroutine of the program's: the runtime numbers them from 1.
        let goid = e.goid.unwrap_or(0);
        if self.named.insert(goid) {
            let name = e.goid.map_or_else(
                || "goroutine unknown".to_owned(),
                |g| format!("goroutine {g}"),
            );
            self.write(&json!({
                "name": "thread_name", "ph": "M", "pid": e.pid, "tid": goid,
                "args": {"name": name},
            }))?;
        }
        let mut args = Map::new();
        if let Some(map) = e.map {
            args.insert("map".into(), format!("{map:#x}").into());
        }
        if let Some(t) = &e.map_type {
            args.insert("type".into(), t.as_ref().into());
        }
        if let Some(c) = &e.caller {
            args.insert(
                "caller".into(),
                format!("{} {}", c.function, c.location()).into(),
            );
        }
        if let Some(n) = e.count() {
            args.insert("count".into(), n.into());
        }
        let name = match (e.kind, e.detail) {
            (EventKind::Evacuate, Some(bucket)) => {
                args.insert("bucket".into(), bucket.to_string().into());
                "evacuate".to_owned()
            }
            (kind, Some(detail)) => format!("{} {detail}", kind.name()),
            (kind, None) => kind.name().to_owned(),
        };
        self.write(&json!({
            "name": name, "cat": "map", "ph": "X",
            "ts": self.ts(e.time_ns.saturating_sub(duration_ns)),
            "dur": micros(i128::from(duration_ns)),
            "pid": e.pid, "tid": goid, "args": args,
        }))
    }

    /// A point in time on the process's track.
    fn instant(&mut self, e: &TraceEvent, name: &str, args: &Value) -> anyhow::Result<()> {
        self.write(&json!({
            "name": name, "cat": e.kind.name(), "ph": "i", "s": "p",
            "ts": self.ts(e.time_ns), "pid": e.pid, "args": args,
        }))
    }

    /// A counter value; Perfetto names the track `<name> <series>`.
    fn counter(&mut self, e: &TraceEvent, name: &str, series: &str, v: u64) -> anyhow::Result<()> {
        self.write(&json!({
            "name": name, "ph": "C", "ts": self.ts(e.time_ns), "pid": e.pid,
            "args": {series: v},
        }))
    }
}

impl<W: Write> Exporter for PerfettoExporter<W> {
    fn event(&mut self, e: &TraceEvent) -> anyhow::Result<()> {
        let duration = e.duration_ns.filter(|_| e.kind.is_timed());
        self.origin
            .get_or_insert(e.time_ns.saturating_sub(duration.unwrap_or(0)));
        if let Some(ns) = duration {
            self.slice(e, ns)?;
        }
        if let Some(m) = e.madvise {
            let advice = m.advice_text();
            self.instant(
                e,
                &format!("madvise {advice}"),
                &json!({
                    "advice": advice, "addr": format!("{:#x}", m.addr), "len": m.len,
                    "result": m.result, "tid": e.tid,
                }),
            )?;
            if m.gives_back() {
                self.given_back += m.len;
                self.counter(e, "madvise given back", "bytes", self.given_back)?;
            }
        }
        match (e.kind, e.detail) {
            (EventKind::Gc, Some(detail)) => {
                self.instant(e, &format!("gc {detail}"), &json!({"tid": e.tid}))?;
            }
            (EventKind::Rss, Some(detail)) => {
                if let Some(bytes) = e.rss_bytes {
                    self.counter(e, "rss", detail.label(), bytes)?;
                }
            }
            _ => {}
        }
        if let (Some(map), Some(count)) = (e.map, e.count())
            && self.counts.insert(map, count) != Some(count)
        {
            self.counter(e, &format!("map {map:#x}"), "count", count)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.out
            .write_all(b"\n]}\n")
            .and_then(|()| self.out.flush())
            .context("writing the Perfetto trace")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Detail, Madvise};

    fn trace(events: &[TraceEvent]) -> Vec<Value> {
        let mut out = Vec::new();
        let mut p = PerfettoExporter::new(&mut out).unwrap();
        for e in events {
            p.event(e).unwrap();
        }
        p.finish().unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["displayTimeUnit"], "ns");
        doc["traceEvents"].as_array().unwrap().clone()
    }

    #[test]
    fn an_empty_run_is_a_valid_trace() {
        assert!(trace(&[]).is_empty());
    }

    #[test]
    fn slices_instants_and_counters() {
        let assign = TraceEvent {
            time_ns: 1_000_000,
            goid: Some(7),
            map_type: Some("map[int]int".into()),
            ..TraceEvent::sample(EventKind::Assign, 0x10, Some(8))
        };
        let grow = TraceEvent {
            time_ns: 1_005_000,
            goid: Some(7),
            detail: Some(Detail::Table { old: 16, new: 32 }),
            duration_ns: Some(2_500),
            ..TraceEvent::sample(EventKind::Grow, 0x10, Some(9))
        };
        let madvise = TraceEvent {
            madvise: Some(Madvise {
                addr: 0x7f00,
                len: 8192,
                advice: 4,
                result: 0,
            }),
            ..TraceEvent::bare(EventKind::Madvise, 1_010_000, 1, 3)
        };
        let gc = TraceEvent {
            detail: Some(Detail::GcStart(Some(2))),
            ..TraceEvent::bare(EventKind::Gc, 1_020_000, 1, 3)
        };
        let rss = TraceEvent {
            detail: Some(Detail::Rss("VmRSS")),
            rss_bytes: Some(4096),
            ..TraceEvent::bare(EventKind::Rss, 1_030_000, 1, 0)
        };
        let events = trace(&[
            assign.clone(),
            grow,
            madvise,
            gc,
            rss,
            assign.clone(),
            assign,
        ]);
        let phases: Vec<&str> = events.iter().map(|e| e["ph"].as_str().unwrap()).collect();
        // The last assign leaves the count as it was: no new counter value.
        assert_eq!(phases, ["C", "M", "X", "C", "i", "C", "i", "C", "C"]);

        assert_eq!(events[0]["name"], "map 0x10");
        assert_eq!(events[0]["args"]["count"], 8);
        assert_eq!(events[0]["ts"], 0.0);
        assert_eq!(events[1]["args"]["name"], "goroutine 7");
        assert_eq!(events[1]["tid"], 7);

        let slice = &events[2];
        assert_eq!(slice["name"], "grow table:16->32");
        assert_eq!((&slice["tid"], &slice["pid"]), (&json!(7), &json!(1)));
        // Written at its return: starts 2.5 µs before it, 5 µs after the first event.
        assert_eq!((&slice["ts"], &slice["dur"]), (&json!(2.5), &json!(2.5)));
        assert_eq!(slice["args"]["map"], "0x10");
        assert_eq!(slice["args"]["count"], 9);
        assert_eq!(events[3]["args"]["count"], 9);

        assert_eq!(events[4]["name"], "madvise DONTNEED");
        assert_eq!(events[4]["s"], "p");
        assert_eq!(events[4]["args"]["len"], 8192);
        assert!(
            events[4].get("tid").is_none(),
            "on the process, not a goroutine"
        );
        assert_eq!(events[5]["name"], "madvise given back");
        assert_eq!(events[5]["args"]["bytes"], 8192);
        assert_eq!(events[6]["name"], "gc start:2");
        assert_eq!(events[6]["ts"], 20.0);
        assert_eq!(events[7]["name"], "rss");
        assert_eq!(events[7]["args"]["VmRSS"], 4096);
        assert_eq!(events[8]["name"], "map 0x10");
        assert_eq!(events[8]["args"]["count"], 8);
    }

    #[test]
    fn evacuations_and_unknown_goroutines() {
        let evacuate = TraceEvent {
            time_ns: 50_000,
            detail: Some(Detail::Bucket(3)),
            duration_ns: Some(1_000),
            ..TraceEvent::sample(EventKind::Evacuate, 0x20, None)
        };
        let events = trace(&[evacuate]);
        assert_eq!(events[0]["args"]["name"], "goroutine unknown");
        assert_eq!(events[1]["name"], "evacuate");
        assert_eq!(events[1]["args"]["bucket"], "3");
        assert_eq!(
            (&events[1]["ts"], &events[1]["dur"]),
            (&json!(0.0), &json!(1.0))
        );
    }
}
