//! Folding events into per-map statistics.

use std::collections::BTreeMap;

use map_trace_common::EventKind;

use crate::{
    events::{Detail, MapEvent},
    goruntime::MapState,
};

/// Count, total and worst of timed calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub count: u64,
    pub total_ns: u64,
    pub worst_ns: u64,
}

impl Timing {
    fn add(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns += ns;
        self.worst_ns = self.worst_ns.max(ns);
    }

    fn merge(&mut self, other: &Timing) {
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.worst_ns = self.worst_ns.max(other.worst_ns);
    }
}

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
}

impl MapStats {
    fn record(&mut self, event: &MapEvent) {
        match event.kind {
            EventKind::Assign => self.assigns += 1,
            EventKind::Delete => self.deletes += 1,
            EventKind::Clear => self.clears += 1,
            EventKind::Grow => {
                if let Some(detail) = event.detail {
                    *self.grows.entry(detail.label()).or_default() += 1;
                }
                self.grow_time.add(event.duration_ns.unwrap_or(0));
            }
            EventKind::Evacuate => self.evacuate_time.add(event.duration_ns.unwrap_or(0)),
        }
        match (event.detail, event.table) {
            (Some(Detail::Table { new, .. }), _) => self.table_capacity = Some(new),
            (Some(Detail::Split), Some(t)) => self.table_capacity = Some(t.capacity),
            _ => {}
        }
        if event.state.is_some() {
            self.last_state = event.state;
        }
    }

    fn add(&mut self, other: &MapStats) {
        self.assigns += other.assigns;
        self.deletes += other.deletes;
        self.clears += other.clears;
        for (kind, n) in &other.grows {
            *self.grows.entry(kind).or_default() += n;
        }
        self.grow_time.merge(&other.grow_time);
        self.evacuate_time.merge(&other.evacuate_time);
    }

    /// Grows of every kind.
    #[must_use]
    pub fn grow_count(&self) -> u64 {
        self.grow_time.count
    }
}

/// Every map's statistics, keyed by header address.
#[derive(Debug, Default)]
pub struct Aggregate {
    pub maps: BTreeMap<u64, MapStats>,
    pub events: u64,
}

impl Aggregate {
    pub fn record(&mut self, event: &MapEvent) {
        self.events += 1;
        self.maps.entry(event.map).or_default().record(event);
    }

    #[must_use]
    pub fn totals(&self) -> MapStats {
        let mut total = MapStats::default();
        self.maps.values().for_each(|m| total.add(m));
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goruntime::TableState;

    #[test]
    fn counts_per_map_and_in_total() {
        let mut agg = Aggregate::default();
        agg.record(&MapEvent::sample(EventKind::Assign, 1, Some(0)));
        agg.record(&MapEvent::sample(EventKind::Assign, 1, Some(1)));
        agg.record(&MapEvent::sample(EventKind::Delete, 1, None));
        agg.record(&MapEvent::sample(EventKind::Clear, 2, Some(7)));
        assert_eq!(agg.events, 4);
        let m = &agg.maps[&1];
        assert_eq!((m.assigns, m.deletes, m.clears), (2, 1, 0));
        assert_eq!(m.last_state.map(|s| s.count()), Some(1));
        assert_eq!(agg.maps[&2].last_state.map(|s| s.count()), Some(7));
        let t = agg.totals();
        assert_eq!((t.assigns, t.deletes, t.clears), (2, 1, 1));
    }

    #[test]
    fn times_grows_and_evacuations() {
        let mut agg = Aggregate::default();
        let grow = |detail, ns, table| MapEvent {
            detail: Some(detail),
            duration_ns: Some(ns),
            table,
            ..MapEvent::sample(EventKind::Grow, 1, Some(10))
        };
        agg.record(&grow(Detail::Small, 100, None));
        agg.record(&grow(Detail::Table { old: 16, new: 32 }, 300, None));
        let t = TableState {
            capacity: 1024,
            growth_left: 0,
        };
        agg.record(&grow(Detail::Split, 200, Some(t)));
        agg.record(&MapEvent {
            detail: Some(Detail::Bucket(3)),
            duration_ns: Some(50),
            ..MapEvent::sample(EventKind::Evacuate, 2, None)
        });
        let m = &agg.maps[&1];
        assert_eq!(m.grows.get("table"), Some(&1));
        assert_eq!(m.grows.get("small"), Some(&1));
        assert_eq!(
            m.grow_time,
            Timing {
                count: 3,
                total_ns: 600,
                worst_ns: 300
            }
        );
        assert_eq!(m.table_capacity, Some(1024));
        let total = agg.totals();
        assert_eq!(total.grow_count(), 3);
        assert_eq!(
            total.evacuate_time,
            Timing {
                count: 1,
                total_ns: 50,
                worst_ns: 50
            }
        );
    }
}
