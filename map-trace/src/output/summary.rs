//! The plain-text end-of-run summary.

use std::{fmt::Write as _, time::Duration};

use crate::{aggregate::Aggregate, goruntime::Flavour};

/// Facts about the run that the summary states besides the aggregate.
#[derive(Debug)]
pub struct RunInfo {
    pub pid: u32,
    pub go_version: String,
    pub flavour: Flavour,
    pub probes: usize,
    pub elapsed: Duration,
    pub lost: u64,
}

#[must_use]
pub fn render(agg: &Aggregate, run: &RunInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "map-trace: pid {} ({}, {} maps), {} probes, {:.1} s, {} events",
        run.pid,
        run.go_version,
        run.flavour,
        run.probes,
        run.elapsed.as_secs_f64(),
        agg.events
    );
    let _ = writeln!(
        s,
        "{:<18} {:<8} {:>10} {:>10} {:>8} {:>10}",
        "map", "flavour", "assigns", "deletes", "clears", "count"
    );
    for (addr, m) in &agg.maps {
        let count = m
            .last_count
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        let _ = writeln!(
            s,
            "{:<18} {:<8} {:>10} {:>10} {:>8} {:>10}",
            format!("{addr:#x}"),
            run.flavour.to_string(),
            m.assigns,
            m.deletes,
            m.clears,
            count
        );
    }
    let t = agg.totals();
    let _ = writeln!(
        s,
        "{:<27} {:>10} {:>10} {:>8}",
        format!("total ({} maps)", agg.maps.len()),
        t.assigns,
        t.deletes,
        t.clears
    );
    let _ = writeln!(s, "lost events: {}", run.lost);
    s
}

#[cfg(test)]
mod tests {
    use map_trace_common::EventKind;

    use super::*;
    use crate::events::MapEvent;

    #[test]
    fn renders_maps_totals_and_losses() {
        let mut agg = Aggregate::default();
        for (kind, map) in [
            (EventKind::Assign, 0x10),
            (EventKind::Assign, 0x10),
            (EventKind::Clear, 0x20),
        ] {
            agg.record(&MapEvent::sample(kind, map, Some(5)));
        }
        let run = RunInfo {
            pid: 1,
            go_version: "go1.26.6".into(),
            flavour: Flavour::Swiss,
            probes: 3,
            elapsed: Duration::from_secs(2),
            lost: 4,
        };
        let text = render(&agg, &run);
        assert!(
            text.contains("pid 1 (go1.26.6, swiss maps), 3 probes"),
            "{text}"
        );
        let row10 = text.lines().find(|l| l.starts_with("0x10 ")).unwrap();
        assert_eq!(
            row10.split_whitespace().collect::<Vec<_>>(),
            ["0x10", "swiss", "2", "0", "0", "5"]
        );
        let total = text.lines().find(|l| l.starts_with("total")).unwrap();
        assert_eq!(
            total.split_whitespace().collect::<Vec<_>>(),
            ["total", "(2", "maps)", "2", "0", "1"]
        );
        assert!(text.contains("lost events: 4"));
    }
}
