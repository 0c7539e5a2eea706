//! `map-trace compare BASE.json NEW.json`: the CI regression gate over two `--summary-json`
//! documents (../shared/docs/interface.md).
//!
//! The documents are read through this module's own structs, which name only the fields the
//! comparison needs: a summary that gains fields stays comparable, and one written by an
//! older map-trace still is.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::Write as _,
    path::Path,
    process::ExitCode,
};

use crate::cli::CompareArgs;
use anyhow::{Context as _, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Summary {
    // Required: a JSON file without it is some other document, and comparing nothing would
    // pass the gate.
    processes: Vec<Process>,
}

#[derive(Debug, Deserialize)]
struct Process {
    exe: String,
    sites: Vec<SiteRow>,
    #[serde(default)]
    findings: Vec<Finding>,
}

#[derive(Debug, Deserialize)]
struct SiteRow {
    site: String,
    #[serde(rename = "type", default)]
    ty: Option<String>,
    grows: u64,
    grow_ns_max: u64,
    #[serde(default)]
    peak_count: u64,
    #[serde(default)]
    bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Finding {
    kind: String,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A site across runs: pids differ between runs, so a process is known by its executable.
type SiteKey = (String, String, String);

/// What one site of one run adds up to, over every process of its executable.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Totals {
    grows: u64,
    grow_ns_max: u64,
    peak_count: u64,
    /// `None` when no process of the run knew it.
    bytes: Option<u64>,
}

impl Totals {
    fn merge(&mut self, site: &SiteRow) {
        self.grows = self.grows.saturating_add(site.grows);
        self.grow_ns_max = self.grow_ns_max.max(site.grow_ns_max);
        self.peak_count = self.peak_count.max(site.peak_count);
        self.bytes = match (self.bytes, site.bytes) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
    }
}

/// One run, folded per executable.
#[derive(Debug, Default)]
struct Run {
    sites: BTreeMap<SiteKey, Totals>,
    /// (exe, kind, site) → message.
    findings: BTreeMap<(String, String, String), String>,
}

impl Run {
    fn from_summary(summary: &Summary) -> Self {
        let mut run = Self::default();
        for process in &summary.processes {
            let exe = exe_key(&process.exe);
            for site in &process.sites {
                let ty = site
                    .ty
                    .clone()
                    .unwrap_or_else(|| "(unknown type)".to_owned());
                run.sites
                    .entry((exe.clone(), site.site.clone(), ty))
                    .or_default()
                    .merge(site);
            }
            for finding in &process.findings {
                let site = finding.site.clone().unwrap_or_default();
                run.findings
                    .entry((exe.clone(), finding.kind.clone(), site))
                    .or_insert_with(|| finding.message.clone().unwrap_or_default());
            }
        }
        run
    }
}

/// The executable as runs can share it. `go test` and `go run` build into a fresh
/// `$WORK=…/go-build<random>/b<N>/` each time, and a binary removed while it runs reads back
/// as `… (deleted)`: neither says anything about the program.
fn exe_key(exe: &str) -> String {
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    let mut after_work_dir = false;
    let parts: Vec<&str> = exe
        .split('/')
        .map(|part| {
            let numbered = |prefix: &str| {
                part.strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            };
            let was_work_dir = std::mem::replace(&mut after_work_dir, false);
            if numbered("go-build") {
                after_work_dir = true;
                "go-build*"
            } else if was_work_dir && numbered("b") {
                "b*"
            } else {
                part
            }
        })
        .collect();
    parts.join("/")
}

/// `<function> <file>` of a `<function> <file>:<line>` site: an edit above a map's `make`
/// moves its line, not the map.
fn without_line(site: &str) -> Option<&str> {
    let (rest, line) = site.rsplit_once(':')?;
    (!line.is_empty() && line.bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

/// A threshold: a relative increase in percent, and the absolute increase below which
/// nothing counts (noise on tiny numbers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub percent: f64,
    pub floor: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub grows: Limit,
    pub grow_ns: Limit,
    pub bytes: Limit,
    pub fail_on_new_findings: bool,
}

/// An increase of fewer grows than this never counts: one grow more is a map crossing a
/// size boundary, not a regression.
const MIN_GROWS: u64 = 2;

impl From<&CompareArgs> for Limits {
    fn from(args: &CompareArgs) -> Self {
        Self {
            grows: Limit {
                percent: args.grows,
                floor: MIN_GROWS,
            },
            grow_ns: Limit {
                percent: args.grow_time,
                floor: args.min_grow_ns,
            },
            bytes: Limit {
                percent: args.bytes,
                floor: args.min_bytes,
            },
            fail_on_new_findings: args.fail_on_new_findings,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Metric {
    Grows,
    WorstGrow,
    Bytes,
}

impl Metric {
    const ALL: [Self; 3] = [Self::Grows, Self::WorstGrow, Self::Bytes];

    fn value(self, t: &Totals) -> Option<u64> {
        match self {
            Self::Grows => Some(t.grows),
            Self::WorstGrow => Some(t.grow_ns_max),
            Self::Bytes => t.bytes,
        }
    }

    fn limit(self, limits: &Limits) -> Limit {
        match self {
            Self::Grows => limits.grows,
            Self::WorstGrow => limits.grow_ns,
            Self::Bytes => limits.bytes,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Grows => "grows",
            Self::WorstGrow => "worst grow",
            Self::Bytes => "bytes",
        }
    }

    /// A value as the summary prints it: grow times in milliseconds.
    fn show(self, v: u64) -> String {
        match self {
            Self::WorstGrow => format!("{}.{:03} ms", v / 1_000_000, v % 1_000_000 / 1000),
            Self::Grows | Self::Bytes => v.to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Worse,
    Better,
    Same,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "only for percentages: counts, bytes and nanoseconds"
)]
fn float(n: u64) -> f64 {
    n as f64
}

/// Beyond the limit either way: at least the floor and more than the percentage of `base`.
fn change(base: u64, new: u64, limit: Limit) -> Change {
    let beyond = |by: u64| by >= limit.floor && float(by) * 100.0 > limit.percent * float(base);
    if new > base && beyond(new - base) {
        Change::Worse
    } else if base > new && beyond(base - new) {
        Change::Better
    } else {
        Change::Same
    }
}

fn relative(base: u64, new: u64) -> String {
    if base == 0 {
        "from 0".to_owned()
    } else {
        format!("{:+.1}%", (float(new) - float(base)) * 100.0 / float(base))
    }
}

/// What `compare` prints on standard output, and its verdict.
#[derive(Debug, Default)]
struct Report {
    lines: Vec<String>,
    regressions: usize,
    compared: usize,
    improved: usize,
    new_findings: usize,
    failed: bool,
}

/// The sites of `sites` that `other` lacks, by (exe, function and file, type).
fn unpaired_by_file<'a>(
    sites: &'a BTreeMap<SiteKey, Totals>,
    other: &BTreeMap<SiteKey, Totals>,
) -> BTreeMap<(&'a str, &'a str, &'a str), Vec<&'a SiteKey>> {
    let mut by: BTreeMap<(&str, &str, &str), Vec<&SiteKey>> = BTreeMap::new();
    for key in sites.keys().filter(|k| !other.contains_key(*k)) {
        if let Some(site) = without_line(&key.1) {
            by.entry((&key.0, site, &key.2)).or_default().push(key);
        }
    }
    by
}

/// Pairs of NEW site → BASE site: by (exe, site, type); then, among the sites left on
/// both sides, one of each with the same exe, function, file and type is the same map
/// moved by an edit.
fn pairs<'a>(base: &'a Run, new: &'a Run) -> BTreeMap<&'a SiteKey, &'a SiteKey> {
    let mut pairs: BTreeMap<&SiteKey, &SiteKey> = new
        .sites
        .keys()
        .filter_map(|k| base.sites.get_key_value(k).map(|(b, _)| (k, b)))
        .collect();
    let new_loose = unpaired_by_file(&new.sites, &base.sites);
    let base_loose = unpaired_by_file(&base.sites, &new.sites);
    for (at, news) in &new_loose {
        if let ([n], Some([b])) = (news.as_slice(), base_loose.get(at).map(Vec::as_slice)) {
            pairs.insert(n, b);
        }
    }
    pairs
}

fn compare(base: &Run, new: &Run, limits: &Limits) -> Report {
    let mut report = Report::default();
    let (mut info, mut regressions) = (Vec::new(), Vec::new());
    let pairs = pairs(base, new);
    let matched_base: BTreeSet<&SiteKey> = pairs.values().copied().collect();

    for (key, totals) in &new.sites {
        report.compared += 1;
        let (exe, site, ty) = key;
        let Some(base_key) = pairs.get(key) else {
            // Only in NEW: it regresses by what it costs on its own.
            let costs: Vec<String> = Metric::ALL
                .into_iter()
                .filter_map(|m| {
                    let v = m.value(totals)?;
                    let floor = m.limit(limits).floor;
                    (v >= floor)
                        .then(|| format!("{} {} (floor {})", m.name(), m.show(v), m.show(floor)))
                })
                .collect();
            if !costs.is_empty() {
                regressions.push(format!(
                    "regression: {exe} {site} {ty}: new site: {}",
                    costs.join(", ")
                ));
            }
            continue;
        };
        let was = &base.sites[*base_key];
        let (mut worse, mut better) = (Vec::new(), Vec::new());
        for m in Metric::ALL {
            let (Some(b), Some(n)) = (m.value(was), m.value(totals)) else {
                continue; // not known in one run: nothing to compare
            };
            let limit = m.limit(limits);
            let text = format!(
                "{} {} -> {} ({}",
                m.name(),
                m.show(b),
                m.show(n),
                relative(b, n)
            );
            match change(b, n, limit) {
                Change::Worse => worse.push(format!("{text}, limit +{}%)", limit.percent)),
                Change::Better => better.push(format!("{text})")),
                Change::Same => {}
            }
        }
        if !worse.is_empty() {
            regressions.push(format!(
                "regression: {exe} {site} {ty}: {}",
                worse.join("; ")
            ));
        } else if !better.is_empty() {
            report.improved += 1;
            info.push(format!(
                "improved: {exe} {site} {ty}: {}",
                better.join("; ")
            ));
        }
    }
    for (exe, site, ty) in base.sites.keys().filter(|k| !matched_base.contains(k)) {
        info.push(format!("gone: {exe} {site} {ty}: only in BASE"));
    }

    // A finding of NEW at a moved site is the one BASE had at its old line.
    let old_site: BTreeMap<(&str, &str), &str> = pairs
        .iter()
        .map(|(n, b)| ((n.0.as_str(), n.1.as_str()), b.1.as_str()))
        .collect();
    for ((exe, kind, site), message) in &new.findings {
        let was = old_site.get(&(exe.as_str(), site.as_str())).copied();
        let known = |s: &str| {
            base.findings
                .contains_key(&(exe.clone(), kind.clone(), s.to_owned()))
        };
        if !known(site) && !was.is_some_and(known) {
            report.new_findings += 1;
            info.push(format!("new finding: {exe} {kind} {site}: {message}"));
        }
    }

    report.regressions = regressions.len();
    report.failed =
        report.regressions > 0 || (limits.fail_on_new_findings && report.new_findings > 0);
    report.lines = info;
    report.lines.append(&mut regressions);
    // The form of this line is fixed (scripts read it), whatever the numbers.
    let mut last = format!(
        "compare: {} regressions in {} sites compared ({} improved)",
        report.regressions, report.compared, report.improved
    );
    if report.new_findings > 0 {
        let _ = write!(last, ", {} new findings", report.new_findings);
    }
    report.lines.push(last);
    report
}

fn read(path: &Path, which: &str) -> Result<Run> {
    let what = "give the path of a file written by map-trace --summary-json";
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read {which} {}; {what}", path.display()))?;
    let summary: Summary = serde_json::from_slice(&text).map_err(|err| {
        anyhow::anyhow!(
            "{which} {} is not a map-trace summary ({err}); {what}",
            path.display()
        )
    })?;
    Ok(Run::from_summary(&summary))
}

/// Runs `map-trace compare`: `Ok` with exit status 1 when NEW regressed, 0 when not; `Err`
/// when a file cannot be read.
pub fn run(args: &CompareArgs) -> Result<ExitCode> {
    let base = read(&args.base, "BASE")?;
    let new = read(&args.new, "NEW")?;
    let report = compare(&base, &new, &Limits::from(args));
    let mut out = std::io::stdout().lock();
    for line in &report.lines {
        writeln!(out, "{line}").context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")?;
    Ok(if report.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser as _;
    use serde_json::json;

    use super::*;

    fn limits() -> Limits {
        let cli = Cli::try_parse_from(["map-trace", "compare", "a.json", "b.json"]).unwrap();
        let Some(Command::Compare(args)) = cli.command else {
            panic!("not a compare command")
        };
        Limits::from(&args)
    }

    fn site(site: &str, grows: u64, grow_ns_max: u64, bytes: Option<u64>) -> serde_json::Value {
        json!({ "site": site, "type": "map[string]int", "maps": 1, "assigns": 10, "deletes": 0,
                "clears": 0, "grows": grows, "grow_ns_total": grow_ns_max,
                "grow_ns_max": grow_ns_max, "peak_count": 10, "bytes": bytes })
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "reads like the JSON it builds"
    )]
    fn process(pid: u32, exe: &str, sites: Vec<serde_json::Value>) -> serde_json::Value {
        json!({ "pid": pid, "exe": exe, "go": "go1.26.6", "flavour": "swiss",
                "container": null, "sites": sites, "maps": [], "findings": [] })
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "reads like the JSON it builds"
    )]
    fn run_of(processes: Vec<serde_json::Value>) -> Run {
        let doc = json!({ "duration_ns": 1, "lost_events": 0, "processes": processes });
        Run::from_summary(&serde_json::from_value(doc).unwrap())
    }

    fn one(exe: &str, sites: Vec<serde_json::Value>) -> Run {
        run_of(vec![process(1, exe, sites)])
    }

    const FILL: &str = "main.fill /src/main.go:42";

    #[test]
    fn defaults_follow_the_brief() {
        let l = limits();
        assert_eq!(
            l.grows,
            Limit {
                percent: 10.0,
                floor: 2
            }
        );
        assert_eq!(
            l.grow_ns,
            Limit {
                percent: 25.0,
                floor: 100_000
            }
        );
        assert_eq!(
            l.bytes,
            Limit {
                percent: 10.0,
                floor: 65536
            }
        );
        assert!(!l.fail_on_new_findings);
        for bad in ["-1", "x", "inf", "NaN"] {
            assert!(
                Cli::try_parse_from(["map-trace", "compare", "--grows", bad, "a", "b"]).is_err()
            );
        }
        assert!(Cli::try_parse_from(["map-trace", "compare", "a.json"]).is_err());
    }

    #[test]
    fn same_runs_pass() {
        let a = one("/bin/app", vec![site(FILL, 17, 500_000, Some(1 << 20))]);
        let r = compare(&a, &a, &limits());
        assert!(!r.failed);
        assert_eq!(
            r.lines,
            ["compare: 0 regressions in 1 sites compared (0 improved)"]
        );
    }

    #[test]
    fn grows_beyond_the_limit_regress() {
        let base = one("/bin/app", vec![site(FILL, 3, 0, None)]);
        let new = one("/bin/app", vec![site(FILL, 17, 0, None)]);
        let r = compare(&base, &new, &limits());
        assert!(r.failed);
        assert_eq!(
            r.lines,
            [
                "regression: /bin/app main.fill /src/main.go:42 map[string]int: \
                 grows 3 -> 17 (+466.7%, limit +10%)",
                "compare: 1 regressions in 1 sites compared (0 improved)",
            ]
        );
        // Back the other way it is an improvement.
        let r = compare(&new, &base, &limits());
        assert!(!r.failed);
        assert_eq!(r.improved, 1);
        assert_eq!(
            r.lines[0],
            "improved: /bin/app main.fill /src/main.go:42 map[string]int: \
             grows 17 -> 3 (-82.4%)"
        );
    }

    #[test]
    fn the_percentage_is_a_limit_not_a_target() {
        let l = limits();
        // +10% exactly is allowed, above it is not.
        assert_eq!(change(100, 110, l.grows), Change::Same);
        assert_eq!(change(100, 111, l.grows), Change::Worse);
        assert_eq!(change(100, 89, l.grows), Change::Better);
        // A percentage of 0: any increase past the floor.
        let zero = Limit {
            percent: 0.0,
            floor: 2,
        };
        assert_eq!(change(1000, 1002, zero), Change::Worse);
        assert_eq!(change(1000, 1001, zero), Change::Same);
    }

    #[test]
    fn floors_ignore_noise_on_tiny_numbers() {
        let l = limits();
        // One grow more is +100% but never counts; two more do.
        assert_eq!(change(1, 2, l.grows), Change::Same);
        assert_eq!(change(0, 1, l.grows), Change::Same);
        assert_eq!(change(1, 3, l.grows), Change::Worse);
        assert_eq!(change(0, 2, l.grows), Change::Worse);
        // Worst grow time: +450% of 20 µs is still under 0.1 ms more.
        assert_eq!(change(20_000, 110_000, l.grow_ns), Change::Same);
        assert_eq!(change(20_000, 120_000, l.grow_ns), Change::Worse);
        assert_eq!(change(400_000, 520_000, l.grow_ns), Change::Worse);
        assert_eq!(change(400_000, 490_000, l.grow_ns), Change::Same);
        // Bytes: 32 KiB more is +100% of 32 KiB but under the 64 KiB floor.
        assert_eq!(change(32 << 10, 64 << 10, l.bytes), Change::Same);
        assert_eq!(
            change(1 << 20, (1 << 20) + (200 << 10), l.bytes),
            Change::Worse
        );
    }

    #[test]
    fn every_failing_metric_is_on_the_site_line() {
        let base = one("/bin/app", vec![site(FILL, 10, 400_000, Some(1 << 20))]);
        let new = one("/bin/app", vec![site(FILL, 10, 1_000_000, Some(4 << 20))]);
        let r = compare(&base, &new, &limits());
        assert_eq!(r.regressions, 1);
        assert_eq!(
            r.lines[0],
            "regression: /bin/app main.fill /src/main.go:42 map[string]int: \
             worst grow 0.400 ms -> 1.000 ms (+150.0%, limit +25%); \
             bytes 1048576 -> 4194304 (+300.0%, limit +10%)"
        );
    }

    #[test]
    fn sites_match_by_exe_site_and_type_not_pid() {
        let base = run_of(vec![process(100, "/bin/app", vec![site(FILL, 3, 0, None)])]);
        let mut other_type = site(FILL, 50, 0, None);
        other_type["type"] = json!("map[int]int");
        let new = run_of(vec![
            process(200, "/bin/app", vec![site(FILL, 3, 0, None), other_type]),
            process(201, "/bin/other", vec![site(FILL, 1, 0, None)]),
        ]);
        let r = compare(&base, &new, &limits());
        assert_eq!(r.compared, 3);
        assert_eq!(r.regressions, 1, "{:?}", r.lines);
        assert!(
            r.lines.iter().any(|l| l
                == "regression: /bin/app main.fill /src/main.go:42 map[int]int: \
                    new site: grows 50 (floor 2)"),
            "{:?}",
            r.lines
        );
    }

    #[test]
    fn new_sites_regress_only_past_the_floors() {
        let base = one("/bin/app", vec![]);
        let quiet = one("/bin/app", vec![site(FILL, 1, 99_999, Some(65535))]);
        let r = compare(&base, &quiet, &limits());
        assert!(!r.failed);
        assert_eq!(r.compared, 1);
        for (grows, ns, bytes, cost) in [
            (2, 0, None, "grows 2 (floor 2)"),
            (0, 100_000, Some(0), "worst grow 0.100 ms (floor 0.100 ms)"),
            (0, 0, Some(65536), "bytes 65536 (floor 65536)"),
        ] {
            let new = one("/bin/app", vec![site(FILL, grows, ns, bytes)]);
            let r = compare(&base, &new, &limits());
            assert!(r.failed);
            assert_eq!(
                r.lines[0],
                format!("regression: /bin/app {FILL} map[string]int: new site: {cost}")
            );
        }
    }

    #[test]
    fn processes_of_one_exe_merge() {
        let base = one("/bin/app", vec![site(FILL, 10, 300_000, Some(100_000))]);
        // Two processes of the same program: 6 + 6 grows against 10 is +20%.
        let new = run_of(vec![
            process(7, "/bin/app", vec![site(FILL, 6, 300_000, Some(50_000))]),
            process(8, "/bin/app", vec![site(FILL, 6, 200_000, None)]),
        ]);
        let merged = &new.sites[&("/bin/app".into(), FILL.into(), "map[string]int".into())];
        assert_eq!(
            *merged,
            Totals {
                grows: 12,
                grow_ns_max: 300_000,
                peak_count: 10,
                bytes: Some(50_000)
            }
        );
        let r = compare(&base, &new, &limits());
        assert_eq!(r.compared, 1);
        assert_eq!(
            r.lines[0],
            "regression: /bin/app main.fill /src/main.go:42 map[string]int: \
             grows 10 -> 12 (+20.0%, limit +10%)"
        );
    }

    #[test]
    fn go_build_work_dirs_are_one_executable() {
        assert_eq!(
            exe_key("/tmp/go-build3141592/b001/pkg.test"),
            "/tmp/go-build*/b*/pkg.test"
        );
        assert_eq!(
            exe_key("/tmp/go-build27/b042/exe/main (deleted)"),
            "/tmp/go-build*/b*/exe/main"
        );
        assert_eq!(exe_key("/srv/b001/go-build/app"), "/srv/b001/go-build/app");
        let base = one("/tmp/go-build1/b001/pkg.test", vec![site(FILL, 3, 0, None)]);
        let new = one("/tmp/go-build2/b007/pkg.test", vec![site(FILL, 3, 0, None)]);
        let r = compare(&base, &new, &limits());
        assert_eq!(
            (r.compared, r.regressions, r.lines.len()),
            (1, 0, 1),
            "{:?}",
            r.lines
        );
    }

    #[test]
    fn a_site_moved_by_an_edit_is_still_matched() {
        let base = one("/bin/app", vec![site(FILL, 3, 0, None)]);
        let moved = "main.fill /src/main.go:45";
        let new = one("/bin/app", vec![site(moved, 3, 0, None)]);
        let r = compare(&base, &new, &limits());
        assert!(!r.failed, "{:?}", r.lines);
        // Two candidates on one side: no guess, a new site and a gone one.
        let new = one(
            "/bin/app",
            vec![
                site(moved, 3, 0, None),
                site("main.fill /src/main.go:50", 3, 0, None),
            ],
        );
        let r = compare(&base, &new, &limits());
        assert_eq!(r.regressions, 2, "{:?}", r.lines);
        assert!(
            r.lines
                .iter()
                .any(|l| l.starts_with("gone: /bin/app main.fill /src/main.go:42"))
        );
    }

    #[test]
    fn new_findings_are_listed_and_fail_only_when_asked() {
        let with = |kind: &str, at: &str| {
            let mut p = process(1, "/bin/app", vec![site(at, 3, 0, None)]);
            p["findings"] = json!([{ "kind": kind, "site": at, "map": null,
                                     "message": "grew 9 times", "hint": 4096, "bytes": null }]);
            run_of(vec![p])
        };
        let base = with("presize", FILL);
        assert_eq!(compare(&base, &base, &limits()).new_findings, 0);
        let new = with("shrink", FILL);
        let r = compare(&base, &new, &limits());
        assert!(!r.failed);
        assert_eq!(r.new_findings, 1);
        assert_eq!(
            r.lines,
            [
                "new finding: /bin/app shrink main.fill /src/main.go:42: grew 9 times",
                "compare: 0 regressions in 1 sites compared (0 improved), 1 new findings",
            ]
        );
        let strict = Limits {
            fail_on_new_findings: true,
            ..limits()
        };
        assert!(compare(&base, &new, &strict).failed);
        // The same finding at a moved line is not new.
        let moved = with("presize", "main.fill /src/main.go:45");
        assert_eq!(compare(&base, &moved, &strict).new_findings, 0);
    }

    #[test]
    fn unknown_fields_and_nulls_are_tolerated() {
        let doc = r#"{ "duration_ns": 5, "lost_events": 0, "future": [1, 2],
            "processes": [ { "pid": 1, "exe": "/bin/app", "go": "go1.26.6", "flavour": "swiss",
              "container": null, "extra": {"a": 1},
              "sites": [ { "site": "main.fill /src/main.go:42", "type": "map[string]int",
                           "maps": 1, "assigns": 1, "deletes": 0, "clears": 0, "grows": 4,
                           "grow_ns_total": 9, "grow_ns_max": 9, "peak_count": 3,
                           "bytes": null, "new_field": true } ],
              "maps": [ { "map": "0x1", "whatever": null } ],
              "findings": [ { "kind": "presize", "site": "main.fill /src/main.go:42",
                              "map": null, "message": "m", "hint": null, "bytes": null } ] } ] }"#;
        let summary: Summary = serde_json::from_str(doc).unwrap();
        let run = Run::from_summary(&summary);
        assert_eq!(run.sites.len(), 1);
        assert_eq!(run.findings.len(), 1);
        let totals = run.sites.values().next().unwrap();
        assert_eq!(totals.bytes, None);
    }

    #[test]
    fn bad_files_are_errors_that_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = format!("{:#}", read(&missing, "BASE").unwrap_err());
        assert!(err.starts_with("cannot read BASE "), "{err}");
        assert!(err.contains("--summary-json"), "{err}");
        for (text, says) in [
            ("{ not json", "key must be a string"),
            ("[1, 2]", "invalid type"),
            (
                r#"{"time_ns": 1, "event": "assign"}"#,
                "missing field `processes`",
            ),
            (
                r#"{"processes": [{"exe": "/bin/app"}]}"#,
                "missing field `sites`",
            ),
        ] {
            let path = dir.path().join("bad.json");
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", read(&path, "NEW").unwrap_err());
            assert!(err.starts_with("NEW "), "{err}");
            assert!(err.contains("is not a map-trace summary"), "{err}");
            assert!(err.contains(says), "{err}");
            assert!(err.ends_with("give the path of a file written by map-trace --summary-json"));
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
