//! Folding events into per-map statistics.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use map_trace_common::EventKind;

use crate::{
    events::{Detail, KernelCalls, TraceEvent},
    goruntime::MapState,
    held::TableHistory,
    model::{CallSite, Labels, Site, Timing},
};

/// What one map did while traced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    pub assigns: u64,
    pub deletes: u64,
    pub clears: u64,
    /// Grows by kind (`double`, `same-size`, `small`, `to-table`, `table`, `split`).
    pub grows: BTreeMap<&'static str, u64>,
    pub grow_time: Timing,
    /// Evacuations: their number is `evacuate_time.count`.
    pub evacuate_time: Timing,
    /// The header at the last event that carried one.
    pub last_state: Option<MapState>,
    /// swiss: the capacity of the table the last table event left.
    pub table_capacity: Option<u16>,
    /// Grows that happened while a GC cycle was marking.
    pub grows_in_gc: u64,
    /// The map's Go type, once an event named it.
    pub map_type: Option<Arc<str>>,
    /// What each line of Go code did to this map.
    /// (foldhash: hashed for every event, and `SipHash` over the site's strings showed in
    /// map-trace's profile under load.)
    pub callers: foldhash::HashMap<Arc<CallSite>, CallerStats>,
    /// Where the map comes from: its constructor's caller, else the first use seen.
    pub site: Option<Arc<Site>>,
    /// `make` was seen: the size hint it was given (0 for none or one of at most 8).
    pub hint: Option<u64>,
    /// The most elements any event saw in it.
    pub peak: u64,
    /// Its type's bucket or group size.
    pub unit_size: Option<u64>,
    /// swiss: the tables its events built.
    pub tables: TableHistory,
    /// Table grows and splits (swiss) or same-size grows (classic) with fewer elements than
    /// it held before: deleted slots, not growth, filled it.
    pub churn_grows: u64,
}

/// Slots in the one group of a small swiss map.
pub const SWISS_GROUP_SLOTS: u64 = 8;

/// One call site's share of a map's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerStats {
    /// Assigns, deletes and clears made from here.
    pub ops: u64,
    /// Grows this line's writes triggered, and their time.
    pub grow_time: Timing,
}

impl MapStats {
    fn record(&mut self, event: &TraceEvent, in_gc: bool) {
        if event.kind == EventKind::Grow {
            // Only deletes leave the tombstones that churn a table: a map with none that
            // grows below its peak is another map at the same address (a header on the
            // stack, made without a constructor call).
            let churn = match event.detail {
                Some(Detail::SameSize) => true,
                Some(Detail::Table { .. } | Detail::Split) => {
                    self.deletes > 0 && event.count().is_some_and(|n| n < self.peak)
                }
                _ => false,
            };
            self.churn_grows += u64::from(churn);
            self.tables.record(event);
        }
        if let Some(n) = event.count() {
            self.peak = self.peak.max(n);
        }
        if self.unit_size.is_none() {
            self.unit_size = event.unit_size;
        }
        match event.kind {
            EventKind::Assign => self.assigns += 1,
            EventKind::Delete => self.deletes += 1,
            EventKind::Clear => self.clears += 1,
            EventKind::Grow => {
                if let Some(detail) = event.detail {
                    *self.grows.entry(detail.label()).or_default() += 1;
                }
                self.grow_time.add(event.duration_ns.unwrap_or(0));
                self.grows_in_gc += u64::from(in_gc);
            }
            EventKind::Evacuate => self.evacuate_time.add(event.duration_ns.unwrap_or(0)),
            EventKind::Gc | EventKind::Madvise | EventKind::Rss | EventKind::Make => {}
        }
        match (event.detail, event.table) {
            (Some(Detail::Table { new, .. }), _) => self.table_capacity = Some(new),
            (Some(Detail::Split), Some(t)) => self.table_capacity = Some(t.capacity),
            _ => {}
        }
        if event.state.is_some() {
            self.last_state = event.state;
        }
        if self.map_type.is_none() {
            self.map_type.clone_from(&event.map_type);
        }
        if let Some(site) = &event.caller {
            let c = self.callers.entry(Arc::clone(site)).or_default();
            match event.kind {
                EventKind::Assign | EventKind::Delete | EventKind::Clear => c.ops += 1,
                EventKind::Grow => c.grow_time.add(event.duration_ns.unwrap_or(0)),
                _ => {}
            }
        }
    }

    /// Up to `n` call sites, most map operations first.
    #[must_use]
    pub fn top_callers_by_ops(&self, n: usize) -> Vec<(&CallSite, &CallerStats)> {
        self.top_callers(n, |c| c.ops)
    }

    /// Up to `n` call sites, most total grow time first.
    #[must_use]
    pub fn top_callers_by_grow_time(&self, n: usize) -> Vec<(&CallSite, &CallerStats)> {
        self.top_callers(n, |c| c.grow_time.total_ns)
    }

    fn top_callers(&self, n: usize, by: fn(&CallerStats) -> u64) -> Vec<(&CallSite, &CallerStats)> {
        let mut sites: Vec<_> = self
            .callers
            .iter()
            .filter(|(_, c)| by(c) > 0)
            .map(|(site, c)| (&**site, c))
            .collect();
        // Ties by location, so the listing is the same every run.
        sites.sort_by(|a, b| by(b.1).cmp(&by(a.1)).then_with(|| a.0.cmp(b.0)));
        sites.truncate(n);
        sites
    }

    fn add(&mut self, other: &MapStats) {
        self.assigns += other.assigns;
        self.deletes += other.deletes;
        self.clears += other.clears;
        for (kind, n) in &other.grows {
            *self.grows.entry(kind).or_default() += n;
        }
        self.grow_time.merge(&other.grow_time);
        self.grows_in_gc += other.grows_in_gc;
        self.churn_grows += other.churn_grows;
        self.evacuate_time.merge(&other.evacuate_time);
    }

    /// Grows of every kind.
    #[must_use]
    pub fn grow_count(&self) -> u64 {
        self.grow_time.count
    }

    /// Elements per slot at the last event: per bucket (classic), per slot of the small
    /// map's group or of its only table (swiss); unknown for a multi-table map, whose other
    /// tables' sizes no event showed.
    #[must_use]
    pub fn load(&self) -> Option<f64> {
        let (count, slots) = match self.last_state? {
            MapState::Classic { count, b, .. } => (count, 1_u64 << b.min(63)),
            MapState::Swiss {
                used, tables: 0, ..
            } => (used, SWISS_GROUP_SLOTS),
            MapState::Swiss {
                used, tables: 1, ..
            } => (used, u64::from(self.table_capacity?)),
            MapState::Swiss { .. } => return None,
        };
        #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
        Some(count as f64 / slots as f64)
    }

    /// classic, while a growth is in progress: old buckets evacuated, of how many.
    #[must_use]
    pub fn evacuation(&self) -> Option<(u64, u64)> {
        match self.last_state? {
            MapState::Classic {
                b,
                growing: true,
                same_size,
                nevacuate,
                ..
            } => {
                let buckets = 1_u64 << b.min(63);
                Some((nevacuate, if same_size { buckets } else { buckets / 2 }))
            }
            _ => None,
        }
    }
}

/// GC cycles seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub starts: u64,
    pub mark_ends: u64,
    /// Between a start and its mark termination.
    pub marking: bool,
}

/// madvise calls of one advice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdviceStats {
    pub calls: u64,
    pub bytes: u64,
    pub failed: u64,
}

/// One resident-memory figure over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssStats {
    pub first: u64,
    pub peak: u64,
    pub last: u64,
}

/// Every map's statistics, keyed by header address, and the process's memory story.
#[derive(Clone, Debug, Default)]
pub struct Aggregate {
    pub maps: BTreeMap<u64, MapStats>,
    pub events: u64,
    pub gc: GcStats,
    /// By advice name.
    pub madvise: BTreeMap<String, AdviceStats>,
    /// Bytes handed back to the kernel by successful DONTNEED/FREE/REMOVE calls.
    pub given_back: u64,
    /// By figure (`VmRSS`, `RssAnon`).
    pub rss: BTreeMap<&'static str, RssStats>,
    /// `--summary-only`: map calls the kernel counted (they are not in `events`).
    pub kernel_calls: Option<u64>,
    /// Maps no longer there (a new map was made at their address), folded per site.
    pub retired: foldhash::HashMap<Arc<Site>, Retired>,
}

/// The maps of one site that are gone: their statistics added up.
#[derive(Clone, Debug, Default)]
pub struct Retired {
    pub maps: u64,
    pub stats: MapStats,
}

impl Aggregate {
    /// Records an event, and names on it the site of its map.
    pub fn record(&mut self, event: &mut TraceEvent) {
        self.events += 1;
        match (event.kind, event.detail) {
            (EventKind::Gc, Some(Detail::GcStart(_))) => {
                self.gc.starts += 1;
                self.gc.marking = true;
            }
            (EventKind::Gc, _) => {
                self.gc.mark_ends += 1;
                self.gc.marking = false;
            }
            (EventKind::Rss, Some(Detail::Rss(which))) => {
                let bytes = event.rss_bytes.unwrap_or(0);
                let r = self.rss.entry(which).or_insert(RssStats {
                    first: bytes,
                    peak: bytes,
                    last: bytes,
                });
                r.peak = r.peak.max(bytes);
                r.last = bytes;
            }
            _ => {}
        }
        if let Some(m) = event.madvise {
            let a = self.madvise.entry(m.advice_text()).or_default();
            a.calls += 1;
            a.bytes += m.len;
            a.failed += u64::from(m.result != 0);
            if m.gives_back() {
                self.given_back += m.len;
            }
        }
        if let Some(map) = event.map {
            if event.kind == EventKind::Make {
                self.made(map, event);
            }
            let m = self.maps.entry(map).or_insert_with(|| MapStats {
                tables: TableHistory::first_seen(event.state),
                ..MapStats::default()
            });
            if m.site.is_none()
                && let Some(at) = &event.caller
            {
                m.site = Some(Arc::new(Site::new(Arc::clone(at), None, true)));
            }
            m.record(event, self.gc.marking);
            event.site.clone_from(&m.site);
        }
    }

    /// A map was made at `addr`: whatever was there before is gone (the GC freed it).
    fn made(&mut self, addr: u64, event: &TraceEvent) {
        if let Some(old) = self.maps.remove(&addr)
            && let Some(site) = &old.site
        {
            let r = self.retired.entry(Arc::clone(site)).or_default();
            r.maps += 1;
            r.stats.add(&old);
            r.stats.peak = r.stats.peak.max(old.peak);
            if r.stats.map_type.is_none() {
                r.stats.map_type = old.map_type;
            }
        }
        let hint = match event.detail {
            Some(Detail::Hint(n)) => Some(n),
            _ => Some(0),
        };
        let site = event.caller.as_ref().map(|at| {
            Arc::new(Site::new(
                Arc::clone(at),
                event.module_caller.clone(),
                false,
            ))
        });
        self.maps.insert(
            addr,
            MapStats {
                site,
                hint,
                tables: TableHistory::made(hint.unwrap_or(0)),
                ..MapStats::default()
            },
        );
    }

    /// `--summary-only`: the per-map statistics as the kernel counted them so far; they
    /// replace the previous reading (the kernel's totals are cumulative).
    pub fn set_kernel_calls(&mut self, calls: &[KernelCalls]) {
        let mut maps: BTreeMap<u64, MapStats> = BTreeMap::new();
        let mut latest: HashMap<u64, u64> = HashMap::new();
        for c in calls {
            let m = maps.entry(c.map).or_default();
            match c.kind {
                EventKind::Assign => m.assigns += c.timing.count,
                EventKind::Delete => m.deletes += c.timing.count,
                EventKind::Clear => m.clears += c.timing.count,
                EventKind::Grow => {
                    if let Some(label) = c.grow_kind {
                        *m.grows.entry(label).or_default() += c.timing.count;
                    }
                    m.grow_time.merge(&c.timing);
                }
                EventKind::Evacuate => m.evacuate_time.merge(&c.timing),
                EventKind::Gc | EventKind::Madvise | EventKind::Rss | EventKind::Make => {}
            }
            if m.map_type.is_none() {
                m.map_type.clone_from(&c.map_type);
            }
            let newest = latest.entry(c.map).or_default();
            if c.state.is_some() && c.last_ns >= *newest {
                *newest = c.last_ns;
                m.last_state = c.state;
            }
        }
        // Sites and hints come from streamed `make` events, not from the kernel's counts.
        for (addr, m) in &mut maps {
            if let Some(old) = self.maps.get(addr) {
                m.site.clone_from(&old.site);
                m.hint = old.hint;
            }
            m.peak = m.last_state.map_or(0, |s| s.count());
        }
        self.kernel_calls = Some(calls.iter().map(|c| c.timing.count).sum());
        self.maps = maps;
    }

    /// Fills in the tables of swiss maps that had them before tracing began, which no
    /// event showed; `read_tables` reads them from the target by map address and the
    /// directory length last seen.
    pub fn read_unknown_tables(&mut self, read_tables: impl Fn(u64, u64) -> Option<(u64, u64)>) {
        for (addr, m) in &mut self.maps {
            if let Some(MapState::Swiss { tables, .. }) = m.last_state
                && tables > 0
                && m.tables.start_hint.is_none()
            {
                m.tables.read = read_tables(*addr, tables);
            }
        }
    }

    #[must_use]
    pub fn totals(&self) -> MapStats {
        let mut total = MapStats::default();
        self.maps.values().for_each(|m| total.add(m));
        total
    }
}

/// One traced process: who it is and what its maps did.
#[derive(Debug)]
pub struct ProcessAggregate {
    pub labels: Arc<Labels>,
    pub agg: Aggregate,
    /// Still traced (not exited, not gone to another program).
    pub live: bool,
}

/// Every process traced in the run, by pid; a process that exits keeps its aggregate for
/// the summary.
#[derive(Debug, Default)]
pub struct Aggregates {
    pub processes: BTreeMap<u32, ProcessAggregate>,
    /// Events recorded, over every process.
    pub events: u64,
}

impl Aggregates {
    /// A process is traced from now on (again, with its new labels, if it was before).
    pub fn traced(&mut self, labels: Arc<Labels>) {
        let p = self
            .processes
            .entry(labels.pid)
            .or_insert_with(|| ProcessAggregate {
                labels: labels.clone(),
                agg: Aggregate::default(),
                live: true,
            });
        p.labels = labels;
        p.live = true;
    }

    /// The process is no longer traced; its figures stay.
    pub fn ended(&mut self, pid: u32) {
        if let Some(p) = self.processes.get_mut(&pid) {
            p.live = false;
        }
    }

    /// Records an event of a traced process (records of any other pid are counted as
    /// undecodable before they get here).
    pub fn record(&mut self, event: &mut TraceEvent) {
        self.events += 1;
        if let Some(p) = self.processes.get_mut(&event.pid) {
            p.agg.record(event);
        }
    }

    /// `--summary-only`: map calls the kernel counted, over every process.
    #[must_use]
    pub fn kernel_calls(&self) -> Option<u64> {
        self.processes
            .values()
            .filter_map(|p| p.agg.kernel_calls)
            .reduce(|a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use map_trace_common::DURATION_BUCKETS;

    use super::*;
    use crate::{events::Madvise, goruntime::TableState};

    #[test]
    fn churn_is_a_grow_below_the_peak_after_deletes() {
        let grow = |count| TraceEvent {
            detail: Some(Detail::Table { old: 64, new: 128 }),
            ..TraceEvent::sample(EventKind::Grow, 1, Some(count))
        };
        let mut agg = Aggregate::default();
        agg.record(&mut TraceEvent::sample(EventKind::Assign, 1, Some(50)));
        // Below the peak, but no deletes: another map at the address, not churn.
        agg.record(&mut grow(40));
        assert_eq!(agg.maps[&1].churn_grows, 0);
        agg.record(&mut TraceEvent::sample(EventKind::Delete, 1, Some(50)));
        agg.record(&mut grow(50));
        assert_eq!(agg.maps[&1].churn_grows, 0, "at the peak: growth");
        agg.record(&mut grow(45));
        assert_eq!(agg.maps[&1].churn_grows, 1);
    }

    #[test]
    fn counts_per_map_and_in_total() {
        let mut agg = Aggregate::default();
        agg.record(&mut TraceEvent::sample(EventKind::Assign, 1, Some(0)));
        agg.record(&mut TraceEvent::sample(EventKind::Assign, 1, Some(1)));
        agg.record(&mut TraceEvent::sample(EventKind::Delete, 1, None));
        agg.record(&mut TraceEvent::sample(EventKind::Clear, 2, Some(7)));
        assert_eq!(agg.events, 4);
        let m = &agg.maps[&1];
        assert_eq!((m.assigns, m.deletes, m.clears), (2, 1, 0));
        assert_eq!(m.last_state.map(|s| s.count()), Some(1));
        assert_eq!(agg.maps[&2].last_state.map(|s| s.count()), Some(7));
        let t = agg.totals();
        assert_eq!((t.assigns, t.deletes, t.clears), (2, 1, 1));
    }

    #[test]
    fn ranks_call_sites_and_names_the_type() {
        let site = |line| {
            Some(Arc::new(CallSite::new(
                "main.fill".into(),
                "/src/main.go".into(),
                line,
            )))
        };
        let event = |kind, line, ns| TraceEvent {
            caller: site(line),
            duration_ns: ns,
            map_type: Some(Arc::from("map[string]int")),
            ..TraceEvent::sample(kind, 1, Some(1))
        };
        let mut agg = Aggregate::default();
        for _ in 0..3 {
            agg.record(&mut event(EventKind::Assign, 10, None));
        }
        agg.record(&mut event(EventKind::Assign, 20, None));
        agg.record(&mut event(EventKind::Grow, 20, Some(500)));
        agg.record(&mut event(EventKind::Grow, 10, Some(100)));
        agg.record(&mut event(EventKind::Delete, 30, None));
        let m = &agg.maps[&1];
        assert_eq!(m.map_type.as_deref(), Some("map[string]int"));
        let by_ops: Vec<_> = m
            .top_callers_by_ops(2)
            .iter()
            .map(|(s, c)| (s.line, c.ops))
            .collect();
        assert_eq!(by_ops, [(10, 3), (20, 1)]);
        let by_grow: Vec<_> = m
            .top_callers_by_grow_time(5)
            .iter()
            .map(|(s, c)| (s.line, c.grow_time.total_ns))
            .collect();
        assert_eq!(by_grow, [(20, 500), (10, 100)]);
    }

    #[test]
    fn times_grows_and_evacuations() {
        let mut agg = Aggregate::default();
        let grow = |detail, ns, table| TraceEvent {
            detail: Some(detail),
            duration_ns: Some(ns),
            table,
            ..TraceEvent::sample(EventKind::Grow, 1, Some(10))
        };
        let gc = |detail| TraceEvent {
            detail: Some(detail),
            ..TraceEvent::bare(EventKind::Gc, 0, 1, 1)
        };
        agg.record(&mut grow(Detail::Small, 100, None));
        agg.record(&mut grow(Detail::Table { old: 16, new: 32 }, 300, None));
        let t = TableState {
            capacity: 1024,
            growth_left: 0,
        };
        agg.record(&mut grow(Detail::Split, 200, Some(t)));
        agg.record(&mut gc(Detail::GcStart(Some(4))));
        agg.record(&mut grow(Detail::Double, 10, None));
        agg.record(&mut gc(Detail::GcMarkEnd(Some(4))));
        agg.record(&mut TraceEvent {
            detail: Some(Detail::Bucket(3)),
            duration_ns: Some(50),
            ..TraceEvent::sample(EventKind::Evacuate, 2, None)
        });
        let m = &agg.maps[&1];
        assert_eq!(m.grows.get("table"), Some(&1));
        assert_eq!(m.grows.get("small"), Some(&1));
        assert_eq!(
            m.grow_time,
            Timing {
                count: 4,
                total_ns: 610,
                worst_ns: 300,
                histogram: m.grow_time.histogram,
            }
        );
        // 100, 200, 10 and 300 ns: buckets 7, 8, 4 and 9.
        let filled: Vec<usize> = (0..DURATION_BUCKETS)
            .filter(|&b| m.grow_time.histogram[b] > 0)
            .collect();
        assert_eq!(filled, [4, 7, 8, 9]);
        assert_eq!(m.table_capacity, Some(1024));
        assert_eq!(m.grows_in_gc, 1);
        assert_eq!(
            (agg.gc.starts, agg.gc.mark_ends, agg.gc.marking),
            (1, 1, false)
        );
        let total = agg.totals();
        assert_eq!(total.grow_count(), 4);
        assert_eq!(
            total.evacuate_time,
            Timing {
                count: 1,
                total_ns: 50,
                worst_ns: 50,
                histogram: total.evacuate_time.histogram,
            }
        );
    }

    #[test]
    fn memory_story() {
        let mut agg = Aggregate::default();
        let madvise = |advice, len, result| TraceEvent {
            madvise: Some(Madvise {
                addr: 0x1000,
                len,
                advice,
                result,
            }),
            ..TraceEvent::bare(EventKind::Madvise, 0, 1, 1)
        };
        agg.record(&mut madvise(4, 4096, 0));
        agg.record(&mut madvise(4, 8192, 0));
        agg.record(&mut madvise(8, 4096, -22));
        agg.record(&mut madvise(15, 1 << 20, 0));
        assert_eq!(
            agg.madvise["DONTNEED"],
            AdviceStats {
                calls: 2,
                bytes: 12288,
                failed: 0
            }
        );
        assert_eq!(agg.madvise["FREE"].failed, 1);
        assert_eq!(agg.given_back, 12288);
        for bytes in [100, 300, 200] {
            agg.record(&mut TraceEvent {
                detail: Some(Detail::Rss("VmRSS")),
                rss_bytes: Some(bytes),
                ..TraceEvent::bare(EventKind::Rss, 0, 1, 1)
            });
        }
        assert_eq!(
            agg.rss["VmRSS"],
            RssStats {
                first: 100,
                peak: 300,
                last: 200
            }
        );
        assert!(agg.maps.is_empty());
    }
}
