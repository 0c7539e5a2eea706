//! Answers from the aggregates: each process's map sites (the lines that made its maps),
//! its costliest maps and the findings, each with the change that would help. The summary
//! JSON (`--summary-json`) is these, serialised as the contract shapes them.

use std::{collections::HashMap, sync::Arc};

use serde::Serialize;

use crate::{
    aggregate::{Aggregate, Aggregates, MapStats},
    goruntime::Storage,
    held,
    model::Site,
};

/// A site whose maps grew this many times each, on average, is worth presizing...
const PRESIZE_MIN_GROWS: u64 = 2;
/// ...when its grows took this long in all: a small map's few grows are not worth a line.
const MIN_GROW_NS: u64 = 100_000;
/// A single grow at least this long stalled the write that triggered it.
const STALL_NS: u64 = 1_000_000;
/// A map holding this many times what its elements need, and at least `BIG_BYTES` more,
/// is worth rebuilding.
const SHRINK_RATIO: u64 = 4;
/// Memory a finding about bytes must be about, at least.
const BIG_BYTES: u64 = 1 << 20;
/// Grows during GC, or grows without net growth, worth a line.
const MIN_GROWS: u64 = 4;
/// `clear` calls on a big map worth a line.
const MIN_CLEARS: u64 = 2;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub duration_ns: u64,
    pub lost_events: u64,
    pub processes: Vec<ProcessAnswers>,
}

#[derive(Debug, Serialize)]
pub struct ProcessAnswers {
    pub pid: u32,
    pub exe: String,
    pub go: String,
    pub flavour: String,
    pub container: Option<String>,
    pub sites: Vec<SiteAnswer>,
    pub maps: Vec<MapAnswer>,
    pub findings: Vec<Finding>,
    /// What its live maps hold, over those whose shape is known.
    pub bytes: u64,
}

/// Every map of one site, live and gone, added up.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteAnswer {
    /// `<function> <file>:<line>`.
    pub site: String,
    /// The nearest frame of the program's own module, when `site` is outside it.
    pub via: Option<String>,
    /// `site` is the first use seen of maps made before tracing began.
    pub first_use: bool,
    /// The three above as people read them (file names only).
    #[serde(skip)]
    pub label: String,
    /// As the exports name it (the CSV's `site`); empty for maps no line is known for.
    #[serde(skip)]
    pub key: String,
    #[serde(rename = "type")]
    pub map_type: String,
    pub maps: u64,
    pub assigns: u64,
    pub deletes: u64,
    pub clears: u64,
    pub grows: u64,
    pub grow_ns_total: u64,
    pub grow_ns_max: u64,
    pub grows_in_gc: u64,
    /// Grows with fewer elements than the map held before.
    pub churn_grows: u64,
    pub peak_count: u64,
    /// What its live maps hold now (those whose shape is known).
    pub bytes: u64,
    /// Live maps whose bytes are not known: swiss maps that had tables before tracing, maps
    /// whose type or header no event read.
    pub bytes_unknown: u64,
    /// The largest size hint any of its maps was made with (`null`: made before tracing).
    pub hint: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MapAnswer {
    /// Its header's address.
    #[serde(skip)]
    pub addr: u64,
    pub map: String,
    #[serde(rename = "type")]
    pub map_type: String,
    pub site: String,
    pub via: Option<String>,
    pub first_use: bool,
    pub count: u64,
    pub peak_count: u64,
    /// `null` where its shape is not known.
    pub bytes: Option<u64>,
    /// What a map made for its elements would hold.
    pub bytes_needed: Option<u64>,
    pub hint: Option<u64>,
    pub assigns: u64,
    pub deletes: u64,
    pub clears: u64,
    pub grows: u64,
    pub grow_ns_total: u64,
    pub grow_ns_max: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub site: String,
    pub map: Option<String>,
    pub message: String,
    pub hint: Option<u64>,
    pub bytes: Option<u64>,
    /// The grows and grow time it is about.
    pub grows: u64,
    pub grow_ns: u64,
    /// What ranks it: its share of the process's grow time or of the bytes its maps hold.
    #[serde(skip)]
    share: f64,
}

/// The answers of every traced process; `top` limits each process's `maps`.
#[must_use]
pub fn answer(aggs: &Aggregates, duration_ns: u64, lost: u64, top: usize) -> Summary {
    let processes = aggs
        .processes
        .values()
        .map(|p| {
            let l = &p.labels;
            let maps = maps(&p.agg, &l.storage);
            let sites = sites(&p.agg, &maps);
            let bytes = maps.iter().filter_map(|(_, m)| m.bytes).sum();
            let mut findings = site_findings(&sites);
            findings.extend(map_findings(&maps));
            rank(&mut findings, &sites, bytes);
            ProcessAnswers {
                pid: l.pid,
                exe: l.exe.clone(),
                go: l.go_version.clone(),
                flavour: l.flavour.to_string(),
                container: l.container.clone(),
                findings,
                maps: maps.into_iter().take(top).map(|(_, m)| m).collect(),
                sites,
                bytes,
            }
        })
        .collect();
    Summary {
        duration_ns,
        lost_events: lost,
        processes,
    }
}

/// The site of maps no event named a line for.
const UNKNOWN: &str = "unknown";

/// What sites are told apart by.
fn key(site: Option<&Arc<Site>>) -> &str {
    site.map_or(UNKNOWN, |s| s.label())
}

/// `site`, `via` and `first_use` of the contract's site.
fn site_fields(site: Option<&Arc<Site>>) -> (String, Option<String>, bool) {
    site.map_or_else(
        || (UNKNOWN.to_owned(), None, false),
        |s| {
            (
                s.at.full(),
                s.module_frame.as_ref().map(|m| m.full()),
                s.first_use,
            )
        },
    )
}

fn type_name(m: &MapStats) -> String {
    m.map_type.as_deref().unwrap_or("").to_owned()
}

fn add(s: &mut SiteAnswer, m: &MapStats, maps: u64) {
    s.maps += maps;
    s.assigns += m.assigns;
    s.deletes += m.deletes;
    s.clears += m.clears;
    s.grows += m.grow_count();
    s.grow_ns_total += m.grow_time.total_ns;
    s.grow_ns_max = s.grow_ns_max.max(m.grow_time.worst_ns);
    s.grows_in_gc += m.grows_in_gc;
    s.churn_grows += m.churn_grows;
    s.peak_count = s.peak_count.max(m.peak);
    if let Some(h) = m.hint {
        s.hint = Some(s.hint.map_or(h, |old| old.max(h)));
    }
    if s.map_type.is_empty() {
        s.map_type = type_name(m);
    }
}

/// Every site, costliest first; `maps` gives the live maps' bytes.
fn sites(agg: &Aggregate, maps: &[(Option<&Arc<Site>>, MapAnswer)]) -> Vec<SiteAnswer> {
    let mut by: HashMap<String, SiteAnswer> = HashMap::new();
    let live = agg.maps.values().map(|m| (m.site.as_ref(), m, 1));
    let gone = agg
        .retired
        .iter()
        .map(|(site, r)| (Some(site), &r.stats, r.maps));
    for (site, m, n) in live.chain(gone) {
        let s = by.entry(key(site).to_owned()).or_insert_with(|| {
            let (at, via, first_use) = site_fields(site);
            SiteAnswer {
                site: at,
                via,
                first_use,
                label: site.map_or_else(|| UNKNOWN.to_owned(), ToString::to_string),
                key: site.map_or_else(String::new, |s| s.label().to_owned()),
                ..SiteAnswer::default()
            }
        });
        add(s, m, n);
    }
    for (site, m) in maps {
        if let Some(s) = by.get_mut(key(*site)) {
            match m.bytes {
                Some(b) => s.bytes += b,
                None => s.bytes_unknown += 1,
            }
        }
    }
    let mut sites: Vec<SiteAnswer> = by.into_values().collect();
    sites.sort_by(|a, b| {
        (b.grow_ns_total, b.assigns + b.deletes, b.bytes)
            .cmp(&(a.grow_ns_total, a.assigns + a.deletes, a.bytes))
            .then_with(|| a.site.cmp(&b.site))
    });
    sites
}

/// Every live map with a site, costliest first (grow time, bytes, operations).
fn maps<'a>(agg: &'a Aggregate, storage: &Storage) -> Vec<(Option<&'a Arc<Site>>, MapAnswer)> {
    let mut maps: Vec<(Option<&Arc<Site>>, MapAnswer)> = agg
        .maps
        .iter()
        .map(|(addr, m)| {
            let site = m.site.as_ref();
            let (at, via, first_use) = site_fields(site);
            let count = m.last_state.map_or(0, |s| s.count());
            let bytes = m
                .last_state
                .and_then(|st| held::bytes(storage, m.unit_size, &st, &m.tables));
            let needed = m.unit_size.and_then(|u| held::needed(storage, u, count));
            (
                site,
                MapAnswer {
                    addr: *addr,
                    map: format!("{addr:#x}"),
                    map_type: type_name(m),
                    site: at,
                    via,
                    first_use,
                    count,
                    peak_count: m.peak,
                    bytes,
                    bytes_needed: needed,
                    hint: m.hint,
                    assigns: m.assigns,
                    deletes: m.deletes,
                    clears: m.clears,
                    grows: m.grow_count(),
                    grow_ns_total: m.grow_time.total_ns,
                    grow_ns_max: m.grow_time.worst_ns,
                },
            )
        })
        .collect();
    let cost = |m: &MapAnswer| (m.grow_ns_total, m.assigns + m.deletes + m.clears, m.bytes);
    maps.sort_by(|a, b| {
        cost(&b.1)
            .cmp(&cost(&a.1))
            .then_with(|| a.1.map.cmp(&b.1.map))
    });
    maps
}

/// `99_999` → `100_000`: a hint as a person would write it, never below `n`.
fn round_up(n: u64) -> u64 {
    let mut unit = 1;
    while n / unit >= 100 {
        unit *= 10;
    }
    n.div_ceil(unit) * unit
}

fn ms(ns: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let ms = ns as f64 / 1e6;
    format!("{ms:.3} ms")
}

/// Bytes as people read them.
#[must_use]
pub fn size(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let b = bytes as f64;
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", b / f64::from(1 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", b / f64::from(1 << 10))
    } else {
        format!("{bytes} B")
    }
}

fn finding(kind: &'static str, site: &SiteAnswer, message: String) -> Finding {
    Finding {
        kind,
        site: site.site.clone(),
        map: None,
        message,
        hint: None,
        bytes: None,
        grows: 0,
        grow_ns: 0,
        share: 0.0,
    }
}

fn the_type(s: &SiteAnswer) -> &str {
    if s.map_type.is_empty() {
        "map[K]V"
    } else {
        &s.map_type
    }
}

/// Findings about the maps of one site.
fn site_findings(sites: &[SiteAnswer]) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in sites {
        let grows_each = s.grows / s.maps.max(1);
        let made_small = s.hint.is_some_and(|h| h.saturating_mul(2) < s.peak_count);
        if grows_each >= PRESIZE_MIN_GROWS && s.grow_ns_total >= MIN_GROW_NS && made_small {
            let hint = round_up(s.peak_count);
            out.push(Finding {
                hint: Some(hint),
                grows: s.grows,
                grow_ns: s.grow_ns_total,
                ..finding(
                    "presize",
                    s,
                    format!(
                        "{} grew {} times ({}) to {} elements from a hint of {}: make({}, {hint}) at {} saves those grows",
                        plural_maps(s.maps),
                        s.grows,
                        ms(s.grow_ns_total),
                        s.peak_count,
                        s.hint.unwrap_or(0),
                        the_type(s),
                        s.label
                    ),
                )
            });
        }
        if s.grow_ns_max >= STALL_NS {
            out.push(Finding {
                grows: 1,
                grow_ns: s.grow_ns_max,
                ..finding(
                    "stall",
                    s,
                    format!(
                        "one grow of a {} made at {} stalled its write for {}: presize it, or split it into smaller maps",
                        the_type(s),
                        s.label,
                        ms(s.grow_ns_max)
                    ),
                )
            });
        }
        if s.grows_in_gc >= MIN_GROWS && s.grows_in_gc * 2 >= s.grows {
            out.push(Finding {
                grows: s.grows_in_gc,
                grow_ns: s.grow_ns_total,
                ..finding(
                    "gc-grow",
                    s,
                    format!(
                        "{} of the {} grows of maps made at {} ran while the GC was marking: the old and new arrays both stay live through that cycle; presize them or build them before the busy phase",
                        s.grows_in_gc, s.grows, s.label
                    ),
                )
            });
        }
        if s.churn_grows >= MIN_GROWS {
            out.push(Finding {
                grows: s.churn_grows,
                grow_ns: s.grow_ns_total,
                ..finding(
                    "churn",
                    s,
                    format!(
                        "maps made at {} grew {} times without more elements than they held before (deletes and inserts churn their tables, golang/go#70886): rebuild the map from time to time, or keep fewer deleted keys in it",
                        s.label, s.churn_grows
                    ),
                )
            });
        }
    }
    out
}

fn plural_maps(n: u64) -> String {
    if n == 1 {
        "1 map".to_owned()
    } else {
        format!("{n} maps")
    }
}

/// Findings about one live map's memory.
fn map_findings(maps: &[(Option<&Arc<Site>>, MapAnswer)]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (site, m) in maps {
        let (Some(held), Some(needed)) = (m.bytes, m.bytes_needed) else {
            continue;
        };
        let site = site.map_or_else(|| UNKNOWN.to_owned(), ToString::to_string);
        let base = |kind, message| Finding {
            kind,
            site: m.site.clone(),
            map: Some(m.map.clone()),
            message,
            hint: None,
            bytes: Some(held),
            grows: 0,
            grow_ns: 0,
            share: 0.0,
        };
        if held >= needed.saturating_mul(SHRINK_RATIO) && held - needed >= BIG_BYTES {
            out.push(base(
                "shrink",
                format!(
                    "map {} ({}) made at {} holds {} for {} elements (it had {}); a map of {} elements needs {}: Go maps never shrink (golang/go#20135), so copy it into a new map made at that site when it empties",
                    m.map,
                    m.map_type,
                    site,
                    size(held),
                    m.count,
                    m.peak_count,
                    m.count,
                    size(needed)
                ),
            ));
        }
        if m.clears >= MIN_CLEARS && held >= BIG_BYTES {
            out.push(base(
                "clear",
                format!(
                    "clear() on map {} made at {} went over all of its {} each of {} times, whatever it held: assign a new map instead when it is mostly empty",
                    m.map,
                    site,
                    size(held),
                    m.clears
                ),
            ));
        }
    }
    out
}

/// Ranks findings by their share of what the process's maps cost: grow time for those
/// about grows, bytes held for those about memory.
fn rank(findings: &mut [Finding], sites: &[SiteAnswer], bytes: u64) {
    let grow_ns: u64 = sites.iter().map(|s| s.grow_ns_total).sum();
    #[expect(clippy::cast_precision_loss, reason = "a ratio for ranking")]
    let share = |part: u64, whole: u64| part as f64 / whole.max(1) as f64;
    for f in findings.iter_mut() {
        f.share = match f.bytes {
            Some(b) => share(b, bytes),
            None => share(f.grow_ns, grow_ns),
        };
    }
    findings.sort_by(|a, b| {
        b.share
            .total_cmp(&a.share)
            .then_with(|| a.site.cmp(&b.site))
            .then_with(|| a.kind.cmp(b.kind))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn stalls_grows_in_gc_and_churn() {
        let site = SiteAnswer {
            site: "main.cache main.go:20".into(),
            map_type: "map[string]int".into(),
            maps: 1,
            grows: 8,
            grow_ns_total: 3_000_000,
            grow_ns_max: 999_999,
            hint: None,
            ..SiteAnswer::default()
        };
        assert!(site_findings(std::slice::from_ref(&site)).is_empty());
        let stalled = SiteAnswer {
            grow_ns_max: 1_000_000,
            ..site.clone()
        };
        assert_eq!(kinds(&site_findings(&[stalled])), ["stall"]);
        // Grows in GC: at least four, and at least half of them.
        let in_gc = |n| SiteAnswer {
            grows_in_gc: n,
            ..site.clone()
        };
        assert_eq!(kinds(&site_findings(&[in_gc(4)])), ["gc-grow"]);
        assert!(site_findings(&[in_gc(3)]).is_empty());
        let mostly_not = SiteAnswer {
            grows: 9,
            ..in_gc(4)
        };
        assert!(site_findings(&[mostly_not]).is_empty());
        let churn = SiteAnswer {
            churn_grows: 4,
            ..site.clone()
        };
        let f = site_findings(&[churn]);
        assert_eq!(kinds(&f), ["churn"]);
        assert!(f[0].message.contains("golang/go#70886"), "{}", f[0].message);
    }

    fn map(bytes: u64, needed: u64, clears: u64) -> (Option<&'static Arc<Site>>, MapAnswer) {
        (
            None,
            MapAnswer {
                addr: 1,
                map: "0x1".into(),
                map_type: "map[int]int".into(),
                site: UNKNOWN.into(),
                via: None,
                first_use: false,
                count: 1000,
                peak_count: 200_000,
                bytes: Some(bytes),
                bytes_needed: Some(needed),
                hint: Some(0),
                assigns: 0,
                deletes: 0,
                clears,
                grows: 0,
                grow_ns_total: 0,
                grow_ns_max: 0,
            },
        )
    }

    #[test]
    fn shrink_and_clear_are_about_big_maps() {
        let mib = 1 << 20;
        // Four times what it needs and a MiB more: shrink.
        let f = map_findings(&[map(5 * mib, mib, 0)]);
        assert_eq!(kinds(&f), ["shrink"]);
        assert_eq!(
            (f[0].bytes, f[0].map.as_deref()),
            (Some(5 * mib), Some("0x1"))
        );
        assert!(map_findings(&[map(3 * mib, mib, 0)]).is_empty());
        assert!(
            map_findings(&[map(mib, 1000, 0)]).is_empty(),
            "under a MiB more"
        );
        // clear() on a map of a MiB or more, twice or more.
        assert_eq!(kinds(&map_findings(&[map(mib, mib, 2)])), ["clear"]);
        assert!(map_findings(&[map(mib, mib, 1)]).is_empty());
        assert!(map_findings(&[map(mib - 1, mib - 1, 9)]).is_empty());
    }

    #[test]
    fn findings_rank_by_their_share_of_the_cost() {
        let sites = [SiteAnswer {
            grow_ns_total: 10_000_000,
            ..SiteAnswer::default()
        }];
        let grows = |ns| Finding {
            grow_ns: ns,
            ..finding("stall", &sites[0], String::new())
        };
        let held = |bytes| Finding {
            bytes: Some(bytes),
            ..finding("shrink", &sites[0], String::new())
        };
        // 20 % of the grow time, 90 % of the bytes, 50 % of the grow time.
        let mut f = vec![grows(2_000_000), held(900), grows(5_000_000)];
        rank(&mut f, &sites, 1000);
        let order: Vec<(u64, Option<u64>)> = f.iter().map(|f| (f.grow_ns, f.bytes)).collect();
        assert_eq!(
            order,
            [(0, Some(900)), (5_000_000, None), (2_000_000, None)]
        );
    }

    #[test]
    fn hints_round_up_as_people_write_them() {
        assert_eq!(round_up(99_999), 100_000);
        assert_eq!(round_up(100_000), 100_000);
        assert_eq!(round_up(1234), 1300);
        assert_eq!(round_up(7), 7);
    }

    #[test]
    fn presize_needs_grows_and_a_small_hint() {
        let site = |grows, hint, peak| SiteAnswer {
            site: "main.fill main.go:10".into(),
            map_type: "map[int]int".into(),
            maps: 1,
            grows,
            hint,
            peak_count: peak,
            grow_ns_total: 5_000_000,
            ..SiteAnswer::default()
        };
        let f = site_findings(&[site(14, Some(0), 99_999)]);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].kind, f[0].hint), ("presize", Some(100_000)));
        assert!(site_findings(&[site(1, Some(0), 99_999)]).is_empty());
        assert!(site_findings(&[site(14, Some(100_000), 99_999)]).is_empty());
        // Made before tracing: no hint known, no advice on it.
        assert!(site_findings(&[site(14, None, 99_999)]).is_empty());
        // 2,000 maps that grew once each are not one map grown 2,000 times.
        let many = SiteAnswer {
            maps: 2000,
            ..site(2000, Some(0), 1)
        };
        assert!(site_findings(&[many]).is_empty());
        // A few microseconds of grows are not worth a line.
        let cheap = SiteAnswer {
            grow_ns_total: 9_000,
            ..site(4, Some(0), 34)
        };
        assert!(site_findings(&[cheap]).is_empty());
    }
}
