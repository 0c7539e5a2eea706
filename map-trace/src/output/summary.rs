//! The plain-text end-of-run summary.

use std::{fmt::Write as _, time::Duration};

use map_trace_common::{ReadFailure, ReadFailures};

use super::mib;
use crate::{
    aggregate::{Aggregate, Aggregates, MapStats, SWISS_GROUP_SLOTS},
    answers::{MapAnswer, ProcessAnswers, SiteAnswer, Summary, size},
    events::Undecodable,
    goruntime::MapState,
    model::{Labels, Timing},
};

/// Facts about the run that the summary states besides the aggregates.
#[derive(Debug)]
pub struct RunInfo {
    /// Uprobes in place at the end.
    pub probes: usize,
    pub elapsed: Duration,
    pub lost: u64,
    /// Execs and forks the kernel had no room to report: processes that may be unseen.
    pub lost_processes: u64,
    /// Processes looked at and not traced.
    pub passed_over: u64,
    pub undecodable: Undecodable,
    pub read_failures: ReadFailures,
    pub calls: TimedCalls,
}

/// Timed calls (grow, evacuate) as the eBPF programs counted them: entries and returns must
/// balance, unless a call was still running when tracing ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimedCalls {
    pub entered: u64,
    pub returned: u64,
    /// Returns without an entry: calls already running when the probes were attached.
    pub orphans: u64,
}

impl TimedCalls {
    pub fn add(&mut self, other: &TimedCalls) {
        self.entered += other.entered;
        self.returned += other.returned;
        self.orphans += other.orphans;
    }
}

fn ms(ns: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let ms = ns as f64 / 1e6;
    format!("{ms:.3} ms")
}

fn timing(what: &str, t: &Timing) -> String {
    format!(
        "{what} {}, total {}, worst {}",
        t.count,
        ms(t.total_ns),
        ms(t.worst_ns)
    )
}

/// The map's shape at its last event: buckets or tables, load, growth in progress.
fn shape(m: &MapStats) -> Option<String> {
    let load = m.load().map(|l| format!("load {l:.2}"));
    let mut s = match m.last_state? {
        MapState::Classic { b, noverflow, .. } => format!(
            "2^{b} buckets, {} per bucket, {noverflow} overflow buckets",
            load.unwrap_or_default()
        ),
        MapState::Swiss { tables: 0, .. } => format!(
            "small (one group of {SWISS_GROUP_SLOTS}), {}",
            load.unwrap_or_default()
        ),
        MapState::Swiss {
            tables,
            global_depth,
            ..
        } => {
            let mut s = format!("{tables} table(s), global depth {global_depth}");
            if let Some(cap) = m.table_capacity {
                let _ = write!(s, ", last table capacity {cap}");
            }
            if let Some(load) = load {
                let _ = write!(s, ", {load}");
            }
            s
        }
    };
    if let Some((done, old)) = m.evacuation() {
        let _ = write!(
            s,
            "; growth in progress: {done}/{old} old buckets evacuated"
        );
    }
    Some(s)
}

/// What the map holds, and what a map of its elements would.
fn held(m: &MapAnswer) -> Option<String> {
    let bytes = m.bytes?;
    Some(match m.bytes_needed {
        Some(needed) => format!(
            "holds {} (a map made for its {} elements: {})",
            size(bytes),
            m.count,
            size(needed)
        ),
        None => format!("holds {}", size(bytes)),
    })
}

/// The top sites: where the maps were made and what they cost.
fn sites_table(s: &mut String, sites: &[SiteAnswer], n: usize) {
    if sites.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "{:>6} {:>10} {:>10} {:>6} {:>12} {:>10} {:>10}  site (type)",
        "maps", "assigns", "deletes", "grows", "grow time", "peak", "bytes"
    );
    for site in sites.iter().take(n) {
        let _ = writeln!(
            s,
            "{:>6} {:>10} {:>10} {:>6} {:>12} {:>10} {:>10}  {} ({})",
            site.maps,
            site.assigns,
            site.deletes,
            site.grows,
            ms(site.grow_ns_total),
            site.peak_count,
            if site.bytes_unknown > 0 && site.bytes == 0 {
                "?".to_owned()
            } else {
                size(site.bytes)
            },
            site.label,
            site.map_type
        );
    }
    if sites.len() > n {
        let _ = writeln!(s, "    … {} more sites", sites.len() - n);
    }
}

/// Call sites listed per map and ranking.
const TOP_CALLERS: usize = 3;

/// The map's Go type and the lines of Go code behind its work and its growth.
fn origins(m: &MapStats) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(t) = &m.map_type {
        lines.push(format!("type {t}"));
    }
    let by_ops: Vec<String> = m
        .top_callers_by_ops(TOP_CALLERS)
        .into_iter()
        .map(|(site, c)| format!("{site} ({} ops)", c.ops))
        .collect();
    if !by_ops.is_empty() {
        lines.push(format!("top call sites: {}", by_ops.join("; ")));
    }
    let by_grow: Vec<String> = m
        .top_callers_by_grow_time(TOP_CALLERS)
        .into_iter()
        .map(|(site, c)| format!("{site} ({})", timing("grows", &c.grow_time)))
        .collect();
    if !by_grow.is_empty() {
        lines.push(format!("grow time by call site: {}", by_grow.join("; ")));
    }
    lines
}

/// Grows and evacuations with their times; `in_gc`: whether grows during GC are known
/// (not when counted in the kernel).
fn growth(m: &MapStats, in_gc: bool) -> Option<String> {
    let mut parts = Vec::new();
    if m.grow_count() > 0 {
        let kinds: Vec<String> = m.grows.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let mut grows = format!("{} ({})", timing("grows", &m.grow_time), kinds.join(", "));
        if in_gc {
            let _ = write!(grows, ", {} during GC", m.grows_in_gc);
        }
        parts.push(grows);
    }
    if m.evacuate_time.count > 0 {
        parts.push(timing("evacuations", &m.evacuate_time));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The grow-time histogram's non-empty buckets, by upper bound.
fn grow_times(m: &MapStats) -> Option<String> {
    let buckets: Vec<String> = m
        .grow_time
        .histogram
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| format!("<{} {n}", bound(i)))
        .collect();
    (!buckets.is_empty()).then(|| format!("grow times: {}", buckets.join(", ")))
}

/// The upper bound of histogram bucket `i` (`2^i` ns), readable.
fn bound(i: usize) -> String {
    let ns = 1_u64 << i.min(63);
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let f = ns as f64;
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.0}µs", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.0}ms", f / 1e6),
        _ => format!("{:.1}s", f / 1e9),
    }
}

/// The summary: one block per traced process, then the run's own figures.
#[must_use]
pub fn render(aggs: &Aggregates, run: &RunInfo, answers: &Summary, top: usize) -> String {
    let mut s = String::new();
    if aggs.processes.is_empty() {
        let _ = writeln!(
            s,
            "map-trace: no Go process was traced in {:.1} s ({} passed over; -v says why)",
            run.elapsed.as_secs_f64(),
            run.passed_over
        );
    }
    for p in aggs.processes.values() {
        let answers = answers.processes.iter().find(|a| a.pid == p.labels.pid);
        render_process(&mut s, &p.labels, &p.agg, run, answers, top);
    }
    if aggs.processes.len() > 1 {
        let passed = if run.passed_over > 0 {
            format!(", {} processes passed over (-v says why)", run.passed_over)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "all {} processes: {} events{passed}",
            aggs.processes.len(),
            aggs.events
        );
    }
    let c = run.calls;
    // A stop turns every program off at once: calls then running return unseen.
    let running = match c.entered.saturating_sub(c.returned) {
        0 => String::new(),
        n => format!(", {n} still running at the end"),
    };
    let _ = writeln!(
        s,
        "timed calls: {} entered, {} returned, {} returns without entry{running}",
        c.entered, c.returned, c.orphans
    );
    let _ = writeln!(s, "lost events: {}", run.lost);
    if run.lost_processes > 0 {
        let _ = writeln!(
            s,
            "lost process reports: {} (execs or forks the kernel had no room to report: those processes may be untraced)",
            run.lost_processes
        );
    }
    // Said only when it happened: a clean run's summary stays short.
    if run.read_failures.iter().any(|&n| n > 0) {
        let _ = writeln!(
            s,
            "failed reads of the target's memory: {} (those fields are left empty)",
            read_failure_list(&run.read_failures, false)
        );
    }
    if let Some(first) = &run.undecodable.first {
        let _ = writeln!(
            s,
            "undecodable records: {} (first: {first}; -v lists each)",
            run.undecodable.count
        );
    }
    s
}

/// One process's block: who it is, its maps, their totals, and its memory story.
fn render_process(
    s: &mut String,
    l: &Labels,
    agg: &Aggregate,
    run: &RunInfo,
    answers: Option<&ProcessAnswers>,
    top: usize,
) {
    let container = l
        .container
        .as_ref()
        .map(|c| format!(", container {c}"))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "map-trace: pid {} ({}, {} maps), exe {}{container}, {} probes, {:.1} s, {} events{}",
        l.pid,
        l.go_version,
        l.flavour,
        l.exe,
        l.probes,
        run.elapsed.as_secs_f64(),
        agg.events,
        agg.kernel_calls
            .map(|n| format!(", {n} map calls counted in the kernel (--summary-only)"))
            .unwrap_or_default()
    );
    let in_gc = agg.kernel_calls.is_none();
    if let Some(a) = answers {
        for f in a.findings.iter().take(top) {
            let _ = writeln!(s, "finding {}: {}", f.kind, f.message);
        }
        sites_table(s, &a.sites, top);
    }
    let _ = writeln!(
        s,
        "{:<18} {:<8} {:>10} {:>10} {:>8} {:>10} {:>6} {:>8}",
        "map", "flavour", "assigns", "deletes", "clears", "count", "grows", "evacs"
    );
    // The costliest maps only, as the answers rank them: a real program makes thousands.
    let shown = top;
    let listed = answers.map_or(&[][..], |a| &a.maps[..]);
    for answer in listed.iter().take(shown) {
        let Some(m) = agg.maps.get(&answer.addr) else {
            continue;
        };
        let count = m
            .last_state
            .map_or_else(|| "-".to_owned(), |st| st.count().to_string());
        let _ = writeln!(
            s,
            "{:<18} {:<8} {:>10} {:>10} {:>8} {:>10} {:>6} {:>8}",
            answer.map,
            l.flavour.to_string(),
            m.assigns,
            m.deletes,
            m.clears,
            count,
            m.grow_count(),
            m.evacuate_time.count
        );
        let lines = origins(m).into_iter().chain(
            [shape(m), held(answer), growth(m, in_gc), grow_times(m)]
                .into_iter()
                .flatten(),
        );
        for line in lines {
            let _ = writeln!(s, "    {line}");
        }
    }
    if agg.maps.len() > shown {
        let _ = writeln!(
            s,
            "    … {} more maps (--top N lists more; --summary-json has every site)",
            agg.maps.len() - shown
        );
    }
    let t = agg.totals();
    let _ = writeln!(
        s,
        "{:<27} {:>10} {:>10} {:>8} {:>10} {:>6} {:>8}",
        format!("total ({} maps)", agg.maps.len()),
        t.assigns,
        t.deletes,
        t.clears,
        "",
        t.grow_count(),
        t.evacuate_time.count
    );
    if let Some(g) = growth(&t, in_gc) {
        let _ = writeln!(s, "    {g}");
    }
    if let Some(a) = answers {
        let unknown: u64 = a.sites.iter().map(|site| site.bytes_unknown).sum();
        let _ = writeln!(
            s,
            "maps hold {} (buckets, groups, tables and directories){}",
            size(a.bytes),
            if unknown > 0 {
                format!(", and {unknown} maps whose shape or type no event showed")
            } else {
                String::new()
            }
        );
    }
    memory(s, agg);
}

/// `goid 2, stack 5`: failed reads per kind, in [`ReadFailure::ALL`]'s order; zeros too
/// with `zeros`.
#[must_use]
pub fn read_failure_list(failures: &ReadFailures, zeros: bool) -> String {
    let kinds: Vec<String> = ReadFailure::ALL
        .iter()
        .zip(failures)
        .filter(|(_, n)| zeros || **n > 0)
        .map(|(kind, n)| format!("{} {n}", kind.name()))
        .collect();
    kinds.join(", ")
}

/// GC cycles, madvise and RSS.
fn memory(s: &mut String, agg: &Aggregate) {
    let gc = agg.gc;
    let _ = writeln!(
        s,
        "gc: {} cycles started, {} mark phases ended",
        gc.starts, gc.mark_ends
    );
    let calls: Vec<String> = agg
        .madvise
        .iter()
        .map(|(advice, a)| {
            format!(
                "{advice} {} calls {} ({} failed)",
                a.calls,
                mib(a.bytes),
                a.failed
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "madvise: {}; given back {}",
        if calls.is_empty() {
            "none".to_owned()
        } else {
            calls.join(", ")
        },
        mib(agg.given_back)
    );
    for (which, r) in &agg.rss {
        let _ = writeln!(
            s,
            "rss {which}: start {}, peak {}, end {}",
            mib(r.first),
            mib(r.peak),
            mib(r.last)
        );
    }
}

#[cfg(test)]
mod tests {
    use map_trace_common::EventKind;

    use super::*;

    fn text_of(aggs: &Aggregates, run: &RunInfo) -> String {
        render(aggs, run, &crate::answers::answer(aggs, 0, 0, 100), 100)
    }
    use crate::{
        events::{Detail, Madvise, TraceEvent},
        goruntime::Flavour,
    };

    #[test]
    fn failed_reads_and_calls_cut_by_the_stop_are_said() {
        let agg = Aggregate::default();
        let quiet = text_of(&one(agg.clone(), Flavour::Swiss), &run());
        assert!(!quiet.contains("failed reads"), "{quiet}");
        assert!(!quiet.contains("still running"), "{quiet}");
        let mut read_failures = ReadFailures::default();
        read_failures[ReadFailure::Goid as usize] = 2;
        read_failures[ReadFailure::Stack as usize] = 5;
        let info = RunInfo {
            read_failures,
            calls: TimedCalls {
                entered: 7,
                returned: 5,
                orphans: 1,
            },
            ..run()
        };
        let text = text_of(&one(agg.clone(), Flavour::Swiss), &info);
        assert!(
            text.contains(
                "failed reads of the target's memory: goid 2, stack 5 (those fields are left empty)"
            ),
            "{text}"
        );
        assert!(
            text.contains("timed calls: 7 entered, 5 returned, 1 returns without entry, 2 still running at the end"),
            "{text}"
        );
    }

    /// One process's aggregate, as the run's only process.
    fn one(agg: Aggregate, flavour: Flavour) -> Aggregates {
        let mut aggs = Aggregates::default();
        aggs.traced(std::sync::Arc::new(Labels {
            pid: 1,
            exe: "/srv/app".into(),
            go_version: "go1.26.6".into(),
            flavour,
            container: None,
            probes: 3,
            storage: match flavour {
                Flavour::Classic => crate::goruntime::CLASSIC_STORAGE,
                Flavour::Swiss => crate::goruntime::SWISS_STORAGE,
            },
        }));
        if let Some(p) = aggs.processes.get_mut(&1) {
            p.agg = agg;
        }
        aggs
    }

    fn run() -> RunInfo {
        RunInfo {
            probes: 3,
            elapsed: Duration::from_secs(2),
            lost: 4,
            lost_processes: 0,
            passed_over: 0,
            undecodable: Undecodable::default(),
            read_failures: ReadFailures::default(),
            calls: TimedCalls {
                entered: 1,
                returned: 1,
                orphans: 0,
            },
        }
    }

    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    #[test]
    fn names_types_and_call_sites() {
        use std::sync::Arc;

        use crate::model::CallSite;
        let site = |function: &str, line| {
            Some(Arc::new(CallSite::new(
                function.into(),
                "/src/app/main.go".into(),
                line,
            )))
        };
        let mut agg = Aggregate::default();
        for (kind, caller, ns) in [
            (EventKind::Assign, site("main.register", 30), None),
            (EventKind::Assign, site("main.register", 30), None),
            (EventKind::Delete, site("main.expire", 40), None),
            (EventKind::Grow, site("main.register", 30), Some(1_000_000)),
        ] {
            agg.record(&mut TraceEvent {
                caller,
                duration_ns: ns,
                map_type: Some(Arc::from("map[string]*main.Session")),
                ..TraceEvent::sample(kind, 0x10, Some(2))
            });
        }
        let text = text_of(&one(agg.clone(), Flavour::Swiss), &run());
        for want in [
            "    type map[string]*main.Session",
            "    top call sites: main.register main.go:30 (2 ops); main.expire main.go:40 (1 ops)",
            "    grow time by call site: main.register main.go:30 (grows 1, total 1.000 ms, worst 1.000 ms)",
        ] {
            assert!(text.lines().any(|l| l == want), "no `{want}` in:\n{text}");
        }
    }

    #[test]
    fn renders_maps_totals_and_losses() {
        let mut agg = Aggregate::default();
        for (kind, map) in [
            (EventKind::Assign, 0x10),
            (EventKind::Assign, 0x10),
            (EventKind::Clear, 0x20),
        ] {
            agg.record(&mut TraceEvent::sample(kind, map, Some(5)));
        }
        agg.record(&mut TraceEvent {
            detail: Some(Detail::Table { old: 8, new: 16 }),
            duration_ns: Some(2_500_000),
            ..TraceEvent::sample(EventKind::Grow, 0x10, Some(5))
        });
        let text = text_of(&one(agg.clone(), Flavour::Swiss), &run());
        assert!(
            text.contains("pid 1 (go1.26.6, swiss maps), exe /srv/app, 3 probes"),
            "{text}"
        );
        let row10 = text.lines().find(|l| l.starts_with("0x10 ")).unwrap();
        assert_eq!(
            words(row10),
            ["0x10", "swiss", "2", "0", "0", "5", "1", "0"]
        );
        assert!(
            text.contains("grows 1, total 2.500 ms, worst 2.500 ms (table 1), 0 during GC"),
            "{text}"
        );
        assert!(text.contains("small (one group of 8), load 0.62"), "{text}");
        let total = text.lines().find(|l| l.starts_with("total")).unwrap();
        assert_eq!(
            words(total),
            ["total", "(2", "maps)", "2", "0", "1", "1", "0"]
        );
        assert!(text.contains("timed calls: 1 entered, 1 returned, 0 returns without entry"));
        assert!(text.contains("lost events: 4"));
        assert!(!text.contains("undecodable"), "{text}");
        let mut run = run();
        run.undecodable.note("unknown event kind 99");
        let text = text_of(&one(Aggregate::default(), Flavour::Swiss), &run);
        assert!(
            text.contains("undecodable records: 1 (first: unknown event kind 99; -v lists each)"),
            "{text}"
        );
        assert!(
            text.contains("gc: 0 cycles started, 0 mark phases ended"),
            "{text}"
        );
        assert!(text.contains("madvise: none; given back 0.0 MiB"), "{text}");
    }

    #[test]
    fn memory_lines() {
        let mut agg = Aggregate::default();
        agg.record(&mut TraceEvent {
            madvise: Some(Madvise {
                addr: 0,
                len: 3 << 20,
                advice: 4,
                result: 0,
            }),
            ..TraceEvent::bare(EventKind::Madvise, 0, 1, 1)
        });
        for bytes in [10 << 20, 30 << 20, 20 << 20] {
            agg.record(&mut TraceEvent {
                detail: Some(Detail::Rss("VmRSS")),
                rss_bytes: Some(bytes),
                ..TraceEvent::bare(EventKind::Rss, 0, 1, 1)
            });
        }
        let text = text_of(&one(agg.clone(), Flavour::Swiss), &run());
        assert!(
            text.contains("madvise: DONTNEED 1 calls 3.0 MiB (0 failed); given back 3.0 MiB"),
            "{text}"
        );
        assert!(
            text.contains("rss VmRSS: start 10.0 MiB, peak 30.0 MiB, end 20.0 MiB"),
            "{text}"
        );
    }

    #[test]
    fn classic_growth_in_progress() {
        let mut agg = Aggregate::default();
        agg.record(&mut TraceEvent {
            state: Some(MapState::Classic {
                count: 100,
                b: 4,
                noverflow: 2,
                growing: true,
                same_size: false,
                nevacuate: 3,
            }),
            ..TraceEvent::sample(EventKind::Assign, 0x30, None)
        });
        let text = text_of(&one(agg, Flavour::Classic), &run());
        assert!(
            text.contains("2^4 buckets, load 6.25 per bucket, 2 overflow buckets; growth in progress: 3/8 old buckets evacuated"),
            "{text}"
        );
    }
}
