//! Growth and evacuation on every supported Go build: each grow and evacuate event is timed
//! from entry to return, entries balance returns, goroutine ids are right, and where the
//! runtime makes growth deterministic the steps are exactly the ones predicted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{collections::HashMap, time::Duration};

use integration_tests::{Row, VARIANTS, Variant, read_csv, timed_calls, trace_command};
use serde::Deserialize;

const LIMIT: Duration = Duration::from_mins(4);

#[derive(Deserialize)]
struct MapReport {
    addr: String,
    goid: u64,
}

#[derive(Deserialize)]
struct Report {
    n: u64,
    numgc: u64,
    classic_b: u32,
    det: MapReport,
    big: MapReport,
    churn: MapReport,
}

fn of_map<'a>(rows: &'a [Row], addr: &str, kind: &str) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| r["map"] == addr && r["event"] == kind)
        .collect()
}

/// The swiss steps of N distinct inserts into a fresh hint-less map while it fits one
/// table (N ≤ 7/8 of 1024): a group of 8, a table of 16 at the 9th insert, then doubling
/// whenever the table reaches 7/8 load.
fn swiss_steps(n: u64) -> Vec<String> {
    let mut steps = vec!["small".to_owned()];
    if n > 8 {
        steps.push("to-table".to_owned());
        let mut cap = 16_u64;
        while n > cap * 7 / 8 {
            steps.push(format!("table:{cap}->{}", cap * 2));
            cap *= 2;
        }
    }
    steps
}

fn matrix(v: Variant) {
    let mut run = trace_command(&v.build("growth"), &[]);
    let attached = run.tracer.wait_attached(LIMIT);
    let flavour = v.flavour();
    assert!(
        attached.contains(&format!("{flavour} maps")),
        "{v:?}: {attached}"
    );
    let done = run.tracer.finish(LIMIT);
    assert!(done.status.success(), "{v:?}: {:?}", done.stderr);
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&run.report).unwrap()).unwrap();
    let rows = read_csv(&run.csv);

    // Every timed event has a duration and a goroutine; entries balance returns, and every
    // return made exactly one event (the program ran whole under the probes: no orphans).
    let timed: Vec<&Row> = rows
        .iter()
        .filter(|r| r["event"] == "grow" || r["event"] == "evacuate")
        .collect();
    for r in &timed {
        let ns: u64 = r["duration_ns"]
            .parse()
            .unwrap_or_else(|_| panic!("{v:?}: {r:?}"));
        assert!(ns > 0, "{v:?}: untimed {r:?}");
        assert!(
            !r["goid"].is_empty() && !r["detail"].is_empty(),
            "{v:?}: {r:?}"
        );
    }
    // Maps made are found at a return too.
    let made = rows.iter().filter(|r| r["event"] == "make").count() as u64;
    let returns = timed.len() as u64 + made;
    let (entered, returned, orphans) = timed_calls(&done.summary());
    assert_eq!((entered, returned, orphans), (returns, returns, 0), "{v:?}");
    assert!(
        done.summary().contains("lost events: 0"),
        "{}",
        done.summary()
    );

    // Goroutine ids equal the ones the program read from its own stacks.
    for m in [&report.det, &report.big, &report.churn] {
        let grows = of_map(&rows, &m.addr, "grow");
        assert!(!grows.is_empty(), "{v:?}: map {} never grew", m.addr);
        for r in grows {
            assert_eq!(r["goid"], m.goid.to_string(), "{v:?}: {r:?}");
        }
    }

    let (det_grows, big_grows) = check_steps(v, &report, &rows);

    // GC probes: traced from the first instruction, every cycle is seen start to end.
    let gc = |what: &str| {
        rows.iter()
            .filter(|r| r["event"] == "gc" && r["detail"].starts_with(what))
            .count() as u64
    };
    assert!(report.numgc >= 1, "{v:?}");
    assert_eq!(
        (gc("start:"), gc("mark-end:")),
        (report.numgc, report.numgc),
        "{v:?}"
    );

    // The summary counts the same grows per map.
    let summary = done.summary();
    let summary_grows: HashMap<&str, &str> = summary
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 8 && w[0].starts_with("0x")).then(|| (w[0], w[6]))
        })
        .collect();
    assert_eq!(
        summary_grows[report.det.addr.as_str()],
        det_grows.to_string(),
        "{v:?}"
    );
    assert_eq!(
        summary_grows[report.big.addr.as_str()],
        big_grows.to_string(),
        "{v:?}"
    );
}

/// The growth steps the runtime makes deterministic; returns the det and big maps' grows.
fn check_steps(v: Variant, report: &Report, rows: &[Row]) -> (usize, usize) {
    let det_grows: Vec<String> = of_map(rows, &report.det.addr, "grow")
        .iter()
        .map(|r| r["detail"].clone())
        .collect();
    let big_grows: Vec<String> = of_map(rows, &report.big.addr, "grow")
        .iter()
        .map(|r| r["detail"].clone())
        .collect();
    if v.flavour() == "classic" {
        // No deletes: the map doubled exactly B times, and never grew same-size.
        let expected = vec!["double".to_owned(); report.classic_b as usize];
        assert_eq!(det_grows, expected, "{v:?}");
        for r in of_map(rows, &report.det.addr, "evacuate") {
            let bucket: u64 = r["detail"].parse().unwrap();
            assert!(bucket < 1 << report.classic_b, "{v:?}: {r:?}");
        }
        assert!(
            !of_map(rows, &report.big.addr, "evacuate").is_empty(),
            "{v:?}"
        );
        assert!(
            of_map(rows, &report.churn.addr, "evacuate").len() > 10,
            "{v:?}"
        );
    } else {
        assert_eq!(det_grows, swiss_steps(report.n), "{v:?}");
        assert!(
            big_grows.iter().any(|d| d == "split"),
            "{v:?}: {big_grows:?}"
        );
        assert!(
            rows.iter().all(|r| r["event"] != "evacuate"),
            "{v:?}: swiss maps evacuate"
        );
    }

    (det_grows.len(), big_grows.len())
}

macro_rules! matrix_tests {
    ($($name:ident => $index:expr,)*) => {
        $(
            #[test]
            fn $name() {
                matrix(VARIANTS[$index]);
            }
        )*
    };
}

matrix_tests! {
    go1_19 => 0,
    go1_21 => 1,
    go1_22 => 2,
    go1_23 => 3,
    go1_24 => 4,
    go1_24_noswissmap => 5,
    go1_25 => 6,
    go1_25_noswissmap => 7,
    go1_26 => 8,
    go1_27 => 9,
    go1_27_mapsplitgroup => 10,
}

#[test]
fn swiss_steps_follow_the_runtime_rules() {
    assert_eq!(swiss_steps(1), ["small"]);
    assert_eq!(swiss_steps(9), ["small", "to-table"]);
    assert_eq!(swiss_steps(15), ["small", "to-table", "table:16->32"]);
    assert_eq!(swiss_steps(800).last().unwrap(), "table:512->1024");
}
