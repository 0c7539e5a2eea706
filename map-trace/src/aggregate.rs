//! Folding events into per-map statistics.

use std::collections::BTreeMap;

use map_trace_common::EventKind;

use crate::events::MapEvent;

/// What one map did while traced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    pub assigns: u64,
    pub deletes: u64,
    pub clears: u64,
    /// Element count at the last event that carried one.
    pub last_count: Option<u64>,
}

impl MapStats {
    fn record(&mut self, event: &MapEvent) {
        match event.kind {
            EventKind::Assign => self.assigns += 1,
            EventKind::Delete => self.deletes += 1,
            EventKind::Clear => self.clears += 1,
        }
        if event.count.is_some() {
            self.last_count = event.count;
        }
    }

    fn add(&mut self, other: &MapStats) {
        self.assigns += other.assigns;
        self.deletes += other.deletes;
        self.clears += other.clears;
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

    #[test]
    fn counts_per_map_and_in_total() {
        let mut agg = Aggregate::default();
        agg.record(&MapEvent::sample(EventKind::Assign, 1, Some(0)));
        agg.record(&MapEvent::sample(EventKind::Assign, 1, Some(1)));
        agg.record(&MapEvent::sample(EventKind::Delete, 1, None));
        agg.record(&MapEvent::sample(EventKind::Clear, 2, Some(7)));
        assert_eq!(agg.events, 4);
        assert_eq!(
            agg.maps[&1],
            MapStats {
                assigns: 2,
                deletes: 1,
                clears: 0,
                last_count: Some(1)
            }
        );
        assert_eq!(agg.maps[&2].last_count, Some(7));
        let t = agg.totals();
        assert_eq!((t.assigns, t.deletes, t.clears), (2, 1, 1));
    }
}
