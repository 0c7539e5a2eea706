//! The exports read back with real parsers: JSON Lines equal the CSV of the same run field by
//! field; the Perfetto trace has one slice per grow and evacuation on its goroutine's track
//! with the CSV's duration, one instant per madvise and GC event, and counters; Prometheus
//! metrics scraped while the target still runs equal what mapops did.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    GO_CLASSIC, GO_SWISS, OPENMETRICS, Program, Report, Row, Tracer, assert_events_match,
    assert_one_error_line, build_go, free_port, http_get, map_trace_bin, read_csv, run_map_trace,
};
use serde_json::{Map, Value};

const LIMIT: Duration = Duration::from_mins(4);

/// The files of one run with every file export at once.
struct Exports {
    rows: Vec<Row>,
    json: Vec<Map<String, Value>>,
    trace: Value,
}

/// Runs `map-trace --csv --json --perfetto [extra] -- bin args`.
fn export_run(bin: &Path, args: &[&str], extra: &[&str]) -> (Exports, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let mut cmd = Command::new(map_trace_bin());
    cmd.arg("--csv")
        .arg(path("events.csv"))
        .arg("--json")
        .arg(path("events.jsonl"))
        .arg("--perfetto")
        .arg(path("trace.json"))
        .args(extra)
        .arg("--")
        .arg(bin)
        .args(args);
    let done = Tracer::start_command(&mut cmd).finish(LIMIT);
    assert!(done.status.success(), "map-trace: {:?}", done.stderr);
    assert!(
        done.summary().contains("lost events: 0"),
        "{}",
        done.summary()
    );
    let json = std::fs::read_to_string(path("events.jsonl")).unwrap();
    let trace = std::fs::read_to_string(path("trace.json")).unwrap();
    let exports = Exports {
        rows: read_csv(&path("events.csv")),
        json: json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
        trace: serde_json::from_str(&trace).expect("the Perfetto trace is JSON"),
    };
    (exports, dir)
}

/// A JSON value as the CSV writes it: numbers in decimal, null as an empty field.
fn csv_field(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a CSV field: {other}"),
    }
}

fn check_json(x: &Exports) {
    assert_eq!(x.json.len(), x.rows.len(), "JSON lines and CSV rows");
    for (object, row) in x.json.iter().zip(&x.rows) {
        let fields: HashMap<String, String> = object
            .iter()
            .map(|(k, v)| (k.clone(), csv_field(v)))
            .collect();
        assert_eq!(&fields, row);
        for n in ["time_ns", "pid"] {
            assert!(object[n].is_u64(), "{n} is a number: {object:?}");
        }
    }
}

fn num(row: &Row, column: &str) -> u64 {
    row[column].parse().unwrap_or(0)
}

/// Microseconds as the trace writes them, back to whole nanoseconds.
fn ns(us: &Value) -> i64 {
    #[expect(clippy::cast_possible_truncation, reason = "rounded")]
    let ns = (us.as_f64().expect("a number of µs") * 1e3).round() as i64;
    ns
}

/// Removes one `key` from `bag`, failing with `what` when it is not there.
fn take<K: std::hash::Hash + Eq + std::fmt::Debug>(
    bag: &mut HashMap<K, usize>,
    key: &K,
    what: &str,
) {
    match bag.get_mut(key) {
        Some(n) if *n > 0 => *n -= 1,
        _ => panic!("no {what} {key:?} in the trace"),
    }
}

fn check_perfetto(x: &Exports) {
    assert_eq!(x.trace["displayTimeUnit"], "ns");
    let entries = x.trace["traceEvents"].as_array().expect("traceEvents");
    let phase = |ph: &'static str| entries.iter().filter(move |e| e["ph"] == ph);
    let start_of = |r: &Row| num(r, "time_ns") - num(r, "duration_ns");
    // Time zero is the start of the first event exported.
    let origin = i64::try_from(start_of(&x.rows[0])).unwrap();
    let rel = |t: u64| i64::try_from(t).unwrap() - origin;

    // Every grow and evacuate: one slice on its goroutine's track, same start and duration.
    let mut slices: HashMap<(u64, i64, i64), usize> = HashMap::new();
    for e in phase("X") {
        let key = (e["tid"].as_u64().unwrap(), ns(&e["ts"]), ns(&e["dur"]));
        *slices.entry(key).or_default() += 1;
    }
    let timed: Vec<&Row> = x
        .rows
        .iter()
        .filter(|r| matches!(r["event"].as_str(), "grow" | "evacuate"))
        .collect();
    assert!(!timed.is_empty(), "the program grows maps");
    assert_eq!(phase("X").count(), timed.len(), "slices and timed events");
    for r in &timed {
        let dur = i64::try_from(num(r, "duration_ns")).unwrap();
        take(
            &mut slices,
            &(num(r, "goid"), rel(start_of(r)), dur),
            "slice",
        );
    }
    let named: Vec<u64> = phase("M")
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["tid"].as_u64().unwrap())
        .collect();
    for r in &timed {
        assert!(named.contains(&num(r, "goid")), "goroutine track unnamed");
    }

    // Every madvise and GC event: one instant on the process.
    let mut instants: HashMap<(String, i64), usize> = HashMap::new();
    for e in phase("i") {
        assert_eq!(e["s"], "p");
        let key = (e["name"].as_str().unwrap().to_owned(), ns(&e["ts"]));
        *instants.entry(key).or_default() += 1;
    }
    let mut points = 0;
    for r in &x.rows {
        let name = match r["event"].as_str() {
            "madvise" => format!("madvise {}", r["advice"]),
            "gc" => format!("gc {}", r["detail"]),
            _ => continue,
        };
        take(&mut instants, &(name, rel(num(r, "time_ns"))), "instant");
        points += 1;
    }
    assert!(points > 0, "the program makes madvise calls or GC cycles");
    assert_eq!(phase("i").count(), points, "instants and madvise/GC events");

    // Counters: every RSS sample, each map's last count, the bytes given back so far.
    let counters = |name: String| {
        phase("C")
            .filter(move |e| e["name"] == name.as_str())
            .map(|e| e["args"].as_object().unwrap())
    };
    let rss: Vec<(String, u64)> = counters("rss".into())
        .flat_map(|args| args.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())))
        .collect();
    let rss_rows: Vec<(String, u64)> = x
        .rows
        .iter()
        .filter(|r| r["event"] == "rss")
        .map(|r| (r["detail"].clone(), num(r, "len")))
        .collect();
    assert_eq!(rss, rss_rows);
    let mut last_count: HashMap<&str, u64> = HashMap::new();
    for r in x.rows.iter().filter(|r| !r["count"].is_empty()) {
        last_count.insert(&r["map"], num(r, "count"));
    }
    for (map, count) in last_count {
        let last = counters(format!("map {map}"))
            .next_back()
            .expect("a map counter");
        assert_eq!(last["count"], count, "last count of {map}");
    }
    let given_back: u64 = x
        .rows
        .iter()
        .filter(|r| r["event"] == "madvise" && r["result"] == "0")
        .filter(|r| matches!(r["advice"].as_str(), "DONTNEED" | "FREE" | "REMOVE"))
        .map(|r| num(r, "len"))
        .sum();
    let last_given = counters("madvise given back".into())
        .next_back()
        .map_or(0, |args| args["bytes"].as_u64().unwrap());
    assert_eq!(last_given, given_back, "bytes given back");
}

#[derive(serde::Deserialize)]
struct GrowthReport {
    churn: GrowthMap,
}

#[derive(serde::Deserialize)]
struct GrowthMap {
    addr: String,
    goid: u64,
}

/// grow and evacuate on a classic runtime, with keys: the JSON holds them as the CSV does,
/// and is the owner's only.
#[test]
fn classic_growth_with_keys() {
    let bin = build_go("growth", GO_CLASSIC);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let (x, files) = export_run(&bin, &["-out", report.to_str().unwrap()], &["--show-keys"]);
    check_json(&x);
    check_perfetto(&x);
    assert!(x.rows.iter().any(|r| r["event"] == "evacuate"));
    assert!(x.json.iter().all(|o| o.contains_key("key")));
    let mode = std::fs::metadata(files.path().join("events.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "JSON with keys");

    // The churning map grows on its own goroutine, and so on that goroutine's track.
    let report: GrowthReport =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let churn: Vec<&Value> = x.trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["args"]["map"] == report.churn.addr.as_str())
        .collect();
    assert!(!churn.is_empty());
    assert!(churn.iter().all(|e| e["tid"] == report.churn.goid));
}

#[test]
fn swiss_growth() {
    let bin = build_go("growth", GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let (x, _files) = export_run(&bin, &["-out", report.to_str().unwrap()], &[]);
    check_json(&x);
    check_perfetto(&x);
    assert!(x.json.iter().all(|o| !o.contains_key("key")));
    let names: Vec<&str> = x.trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&"grow table:16->32"), "{names:?}");
    assert!(names.contains(&"grow split"), "{names:?}");
}

/// Memory handed back: madvise instants and the given-back counter.
#[test]
fn memory_given_back() {
    let bin = build_go("memory", GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let (x, _files) = export_run(
        &bin,
        &["-mib", "32", "-out", report.to_str().unwrap()],
        &["--rss-interval", "0.2"],
    );
    check_json(&x);
    check_perfetto(&x);
    assert!(
        x.rows
            .iter()
            .any(|r| r["event"] == "madvise" && r["advice"] == "DONTNEED"),
        "FreeOSMemory gives memory back"
    );
    // Runs long enough for samples (short programs may exit before the first).
    assert!(x.rows.iter().any(|r| r["event"] == "rss"), "RSS samples");
}

/// `GET /metrics` as a Prometheus server asks (`OpenMetrics` first); the body, or the
/// connection error.
fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let (head, body) = http_get(addr, "/metrics", OPENMETRICS)?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    Ok(body)
}

/// One sample of an exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Label pairs after a sample's `{`, unescaped, and the text after the closing `}`.
fn parse_labels(mut rest: &str) -> (HashMap<String, String>, &str) {
    let mut labels = HashMap::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (name, value_on) = rest.split_once("=\"").expect("label=\"value\"");
        assert!(is_name(name), "label name {name:?}");
        let mut value = String::new();
        let mut chars = value_on.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => value.push(match chars.next().expect("escape").1 {
                    'n' => '\n',
                    c @ ('\\' | '"') => c,
                    c => panic!("bad escape \\{c}"),
                }),
                (_, c) => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "label twice"
        );
        rest = &value_on[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
            assert!(!rest.starts_with('}'), "trailing comma");
        } else {
            assert!(rest.starts_with('}'), "no `,` or `}}` after a label");
        }
    }
}

/// Parses the `OpenMetrics` text strictly (no published Rust parser is both strict and
/// right about it): every line is metadata, a sample of a declared family with a suffix its
/// type allows, or the closing `# EOF`.
fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut samples = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "text after # EOF: {line}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let (kind, rest) = meta.split_once(' ').expect("metadata kind");
            let (family, what) = rest.split_once(' ').expect("metadata value");
            assert!(is_name(family), "{line}");
            match kind {
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram"].contains(&what), "{line}");
                    assert!(types.insert(family, what).is_none(), "two TYPEs: {line}");
                }
                "UNIT" => assert!(family.ends_with(&format!("_{what}")), "{line}"),
                "HELP" => {}
                _ => panic!("unknown metadata: {line}"),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("sample name");
        let name = &line[..name_end];
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after),
            None => (HashMap::new(), &line[name_end..]),
        };
        let value = rest.strip_prefix(' ').expect("a space before the value");
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value {v:?}: {line}")),
        };
        let suffixes: &[&str] = match types.iter().find(|(f, _)| name.starts_with(*f)) {
            Some((_, &"counter")) => &["_total"],
            Some((_, &"histogram")) => &["_bucket", "_sum", "_count"],
            Some(_) => &[""],
            None => panic!("sample of no declared family: {line}"),
        };
        assert!(
            types
                .keys()
                .any(|f| suffixes.iter().any(|s| name == format!("{f}{s}"))),
            "{line}"
        );
        assert_eq!(
            name.ends_with("_bucket"),
            labels.contains_key("le"),
            "{line}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    assert!(eof, "no # EOF");
    samples
}

/// The value of sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| {
            assert!(s.value.fract() == 0.0 && s.value >= 0.0, "{s:?}");
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "checked whole and not negative"
            )]
            let n = s.value as u64;
            n
        })
}

/// `map_trace_map_events_total` of `event`, summed over the series whose labels include
/// `labels`.
fn map_events(samples: &[Sample], labels: &[(&str, &str)], event: &str) -> u64 {
    map_events_where(samples, event, |l| {
        labels
            .iter()
            .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
    })
}

/// `map_trace_map_events_total` of `event`, summed over the series whose labels `keep`.
fn map_events_where(
    samples: &[Sample],
    event: &str,
    keep: impl Fn(&HashMap<String, String>) -> bool,
) -> u64 {
    samples
        .iter()
        .filter(|s| {
            s.name == "map_trace_map_events_total" && s.labels["event"] == event && keep(&s.labels)
        })
        .map(|s| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "counters are whole"
            )]
            let n = s.value as u64;
            n
        })
        .sum()
}

/// The sites of mapops' own maps in the CSV (the map's site on its rows), and per site and
/// event kind the rows of every map of those sites.
fn per_site<'a>(rows: &'a [Row], report: &Report) -> HashMap<(&'a str, &'a str), u64> {
    let ours: Vec<&str> = report.maps.iter().map(|m| m.addr.as_str()).collect();
    let sites: std::collections::HashSet<&str> = rows
        .iter()
        .filter(|r| ours.contains(&&*r["map"]))
        .map(|r| r["site"].as_str())
        .collect();
    let mut counts = HashMap::new();
    for r in rows.iter().filter(|r| sites.contains(r["site"].as_str())) {
        *counts
            .entry((r["site"].as_str(), r["event"].as_str()))
            .or_default() += 1;
    }
    counts
}

/// Scraped while mapops, its work done, still runs: its map series are one per site, never
/// per map address; their counters equal what the program did and what the CSV of the same
/// run says per site; nothing was lost, and each site's grow histogram counts its grows.
#[test]
fn prometheus_while_the_target_runs() {
    let bin = build_go("mapops", GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let (csv, report_path) = (
        dir.path().join("events.csv"),
        dir.path().join("report.json"),
    );
    let mut program = Program::start_ready(
        &bin,
        &[
            "-wait",
            "-hold",
            "-n",
            "2000",
            "-out",
            report_path.to_str().unwrap(),
        ],
    );
    let addr = free_port();
    let mut tracer = Tracer::start(&[
        "--pid",
        &program.pid().to_string(),
        "--csv",
        csv.to_str().unwrap(),
        "--prometheus",
        &addr.to_string(),
    ]);
    tracer.wait_attached(LIMIT);
    program.step();
    assert_eq!(program.read_line(), "held");
    let report = Report::read(&report_path);
    let total = |kind: &str| -> u64 {
        report
            .maps
            .iter()
            .map(|m| match kind {
                "assign" => m.assigns,
                "delete" => m.deletes,
                _ => m.clears,
            })
            .sum()
    };

    // map-trace drains the ring buffer on its own time: scrape until it has caught up with
    // the program's own maps (their sites are in package main), and until the site gauges,
    // which follow at the next refresh of the answers, name every one of those sites.
    let in_main = |metrics: &[Sample], kind: &str| -> u64 {
        map_events_where(metrics, kind, |l| l["site"].starts_with("main."))
    };
    let gauged = |metrics: &[Sample]| {
        metrics
            .iter()
            .filter(|s| s.name == "map_trace_map_events_total")
            .all(|s| {
                value(
                    metrics,
                    "map_trace_site_maps",
                    &[("site", &s.labels["site"])],
                ) >= Some(1)
            })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = parse_openmetrics(&scrape(addr).expect("scrape /metrics"));
        let caught_up = ["assign", "delete", "clear"]
            .iter()
            .all(|k| in_main(&metrics, k) >= total(k))
            && gauged(&metrics);
        if caught_up || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics.iter().all(|s| !s.labels.contains_key("map")),
        "a series per map address"
    );
    assert_eq!(
        value(&metrics, "map_trace_lost_events_total", &[]),
        Some(0),
        "lost events"
    );
    assert!(value(&metrics, "map_trace_events_total", &[]) > Some(0));
    assert!(value(&metrics, "map_trace_rss_bytes", &[("kind", "VmRSS")]) > Some(0));
    assert!(value(&metrics, "map_trace_maps_held_bytes", &[]) > Some(0));

    program.proceed();
    let (status, _) = program.finish(LIMIT);
    assert!(status.success(), "mapops failed under tracing: {status}");
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "map-trace: {:?}", done.stderr);
    assert!(scrape(addr).is_err(), "the server ends with the run");

    // The CSV of the same run, per site: the counters and the histograms.
    let rows = read_csv(&csv);
    assert_events_match(&report, &rows, program_pid(&rows));
    sites_match_the_csv(&metrics, &rows, &report);
}

/// Per site of mapops' maps, the series equal the CSV's rows: counters and histograms.
fn sites_match_the_csv(metrics: &[Sample], rows: &[Row], report: &Report) {
    let counts = per_site(rows, report);
    let sites: std::collections::BTreeSet<&str> = counts.keys().map(|(s, _)| *s).collect();
    assert!(sites.iter().all(|s| s.starts_with("main.")), "{sites:?}");
    let mut grew = 0;
    for site in &sites {
        let n = |kind| counts.get(&(*site, kind)).copied().unwrap_or(0);
        for kind in ["assign", "delete", "clear"] {
            assert_eq!(
                map_events(metrics, &[("site", site)], kind),
                n(kind),
                "{kind}s at {site}"
            );
        }
        // A map of the program may still grow on the way out, after the scrape: only
        // sites whose maps grew before it are compared.
        let grows = map_events(metrics, &[("site", site)], "grow");
        if grows == 0 {
            continue;
        }
        grew += 1;
        assert_eq!(grows, n("grow"), "grows at {site}");
        let of = |name: &str, le: Option<&str>| {
            let mut labels = vec![("site", *site)];
            labels.extend(le.map(|le| ("le", le)));
            value(metrics, name, &labels)
        };
        assert_eq!(
            of("map_trace_grow_duration_seconds_count", None),
            Some(grows)
        );
        assert_eq!(
            of("map_trace_grow_duration_seconds_bucket", Some("+Inf")),
            Some(grows)
        );
        assert!(of("map_trace_site_maps", None) >= Some(1), "{site}");
    }
    assert!(grew > 0, "mapops grows its maps");
    // Every site of mapops' is named by its Go type.
    let types: Vec<&str> = metrics
        .iter()
        .filter(|s| s.name == "map_trace_map_events_total")
        .filter(|s| sites.contains(s.labels["site"].as_str()))
        .map(|s| s.labels["type"].as_str())
        .collect();
    assert!(types.contains(&"map[string]int"), "{types:?}");
    assert!(types.iter().all(|t| t.starts_with("map[")), "{types:?}");
}

fn program_pid(rows: &[Row]) -> u32 {
    rows[0]["pid"].parse().unwrap()
}

/// Outputs that cannot be opened: one error line each, before any probe goes in.
#[test]
fn unusable_outputs_are_refused_before_attaching() {
    let idle = build_go("idle", GO_SWISS);
    let program = Program::start_ready(&idle, &[]);
    let pid = program.pid().to_string();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (args, says) in [
        (
            ["--json", "/nonexistent-dir/events.jsonl"],
            "cannot write JSON to /nonexistent-dir/events.jsonl: give a writable path".to_owned(),
        ),
        (
            ["--perfetto", "/nonexistent-dir/trace.json"],
            "cannot write the Perfetto trace to /nonexistent-dir/trace.json".to_owned(),
        ),
        (
            ["--prometheus", addr.as_str()],
            format!("cannot serve Prometheus metrics on {addr}: "),
        ),
    ] {
        let mut all = vec!["--pid", pid.as_str()];
        all.extend(args);
        let f = run_map_trace(&all, LIMIT);
        assert_one_error_line(&f, &says);
        assert!(!f.stderr[0].contains("attached"));
        if args[0] == "--prometheus" {
            assert!(f.stderr[0].ends_with(": pick a free address"), "{f:?}");
        }
        let state = program.state();
        assert!(state == 'S' || state == 'R', "target state {state}");
    }
    integration_tests::assert_untouched(program, LIMIT);
}
