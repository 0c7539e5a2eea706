//! A real Prometheus server (Debian's 2.42, unpacked by `cargo xtask setup`) scrapes
//! map-trace over loopback while it traces mapops. Queries through the server's HTTP API
//! must return the per-site series with the values map-trace itself serves. The map series
//! must be one per site and never per map address, and every query of the Grafana dashboard
//! in `deploy/` must answer, on metrics map-trace serves. `promtool check metrics` must pass
//! the exposition in the text format. The `DaemonSet` in `deploy/` must run map-trace with the
//! privileges and flags it needs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    GO_SWISS, OPENMETRICS, Program, Report, Tracer, build_go, free_port, http_get, time_scale,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_mins(2);

fn prometheus_tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("MAP_TRACE_PROMETHEUS_BIN")
        .expect("MAP_TRACE_PROMETHEUS_BIN is not set: run the tests with `cargo xtask test`");
    PathBuf::from(dir).join(name)
}

/// A Prometheus server scraping `target` every second; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(target: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: map-trace\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_port();
        let child = Command::new(prometheus_tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let server = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + LIMIT * time_scale();
        while !http_get(addr, "/-/ready", "*/*").is_ok_and(|(head, _)| head.contains(" 200 ")) {
            assert!(Instant::now() < deadline, "prometheus never got ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// The instant vector of `query`: each series' labels and value.
    fn query(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let (head, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", percent_encoded(query)),
            "application/json",
        )
        .unwrap();
        assert!(head.contains(" 200 "), "{query}: {head}\n{body}");
        let reply: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(reply["status"], "success", "{query}: {body}");
        reply["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                (labels, r["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s` as a URL query value: everything but unreserved characters percent-encoded.
fn percent_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The `map_trace_map_events_total` samples of map-trace's own exposition: per (site,
/// event), the value.
fn served_site_events(addr: SocketAddr) -> BTreeMap<(String, String), f64> {
    let (_, body) = http_get(addr, "/metrics", OPENMETRICS).unwrap();
    body.lines()
        .filter_map(|l| l.strip_prefix("map_trace_map_events_total{"))
        .map(|l| {
            let (labels, value) = l.rsplit_once("} ").unwrap();
            let label = |name: &str| {
                let at = labels.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                labels[at..].split('"').next().unwrap().to_owned()
            };
            ((label("site"), label("event")), value.parse().unwrap())
        })
        .collect()
}

/// deploy/grafana-dashboard.json, checked to import as a dashboard whose every panel and
/// query asks the Prometheus data source its `datasource` variable picks.
fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is not JSON");
    for key in ["title", "uid"] {
        assert!(
            dashboard[key].as_str().is_some_and(|s| !s.is_empty()),
            "the dashboard has no {key}"
        );
    }
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let list = dashboard["templating"]["list"].as_array().unwrap();
    let source = list
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("no datasource variable");
    assert_eq!(source["query"], "prometheus");
    let uid = format!("${{{}}}", source["name"].as_str().unwrap());
    let asks_it = |what: &str, v: &Value| {
        assert_eq!(v["datasource"]["uid"], uid.as_str(), "{what}");
        assert_eq!(v["datasource"]["type"], "prometheus", "{what}");
    };
    for v in list.iter().filter(|v| v["type"] == "query") {
        asks_it(&format!("variable {}", v["name"]), v);
        assert!(v["includeAll"] == true && v["multi"] == true && v["allValue"] == ".*");
    }
    let mut ids = std::collections::BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id taken"
        );
        if panel["type"] == "row" {
            continue;
        }
        asks_it(title, panel);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            asks_it(title, t);
            let expr = t["expr"].as_str().unwrap();
            // Every series the panel selects is of the chosen instances.
            for (name, matchers) in selectors(expr) {
                assert!(
                    matchers.contains(r#"instance=~"$instance""#),
                    "{title}: {name} is not filtered by instance in `{expr}`"
                );
            }
        }
    }
    dashboard
}

/// Every panel of `dashboard`, with those nested in (collapsed) rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    let mut todo: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = todo.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            todo.extend(inner);
        }
        all.push(panel);
    }
    all
}

/// The `PromQL` of every query of every panel, as Grafana holds it (variables and all).
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .into_iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

/// The names of the dashboard's own variables, longest first (so that `$a` does not eat
/// the start of `$ab`).
fn variables(dashboard: &Value) -> Vec<String> {
    let mut names: Vec<String> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    names
}

/// `expr` as Prometheus can run it: Grafana's interval variables as a Grafana server
/// scraping every second would set them, and every variable of the dashboard matching all.
fn runnable(expr: &str, variables: &[String]) -> String {
    let mut query = expr.to_owned();
    let builtin = [
        ("__rate_interval", "1m"),
        ("__interval", "1m"),
        ("__range", "5m"),
    ];
    let ours = variables.iter().map(|v| (v.as_str(), ".*"));
    for (name, value) in builtin.into_iter().chain(ours) {
        query = query
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(
        !query.contains("${") && !query.contains("$_"),
        "`{expr}` uses a variable the dashboard does not define: `{query}`"
    );
    query
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Each metric `expr` selects and the text of its label matchers (empty where it has
/// none).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("map_trace_") {
        let starts_name = !rest[..at].ends_with(is_name_char);
        rest = &rest[at..];
        let end = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        rest = after;
        if !starts_name {
            continue;
        }
        let matchers = after
            .strip_prefix('{')
            .map_or("", |m| m.split('}').next().unwrap());
        found.push((name.to_owned(), matchers.to_owned()));
    }
    found
}

/// Every metric name the dashboard's queries and variables use.
fn metric_names(dashboard: &Value) -> std::collections::BTreeSet<String> {
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let definitions = variables.iter().filter_map(|v| v["definition"].as_str());
    dashboard_exprs(dashboard)
        .iter()
        .map(String::as_str)
        .chain(definitions)
        .flat_map(selectors)
        .map(|(name, _)| name)
        .collect()
}

/// The sample names an exposition in the text format has, with the `_bucket`, `_sum` and
/// `_count` of each histogram it declares (a histogram of no observations has no samples).
fn served_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(family) = line
            .strip_prefix("# TYPE ")
            .and_then(|l| l.strip_suffix(" histogram"))
        {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{family}{suffix}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(|c| !is_name_char(c)).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Whether map-trace's samples of `name` carry an `exe` label.
fn served_with_exe(text: &str, name: &str) -> bool {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .any(|labels| labels.starts_with("exe=\"") || labels.contains(",exe=\""))
}

/// Every query of the Grafana dashboard in `deploy/` answers from `prometheus` before
/// `deadline`, with its variables set to match everything, on metrics map-trace at `target`
/// serves.
fn assert_the_dashboard_answers(prometheus: &Server, target: SocketAddr, deadline: Instant) {
    let dashboard = dashboard();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 6, "only {} dashboard queries", exprs.len());
    let variables = variables(&dashboard);
    for expr in &exprs {
        let query = runnable(expr, &variables);
        // A rate needs two scrapes of a series: ask again until it has them.
        while prometheus.query(&query).is_empty() {
            assert!(
                Instant::now() < deadline,
                "no series for the dashboard's `{expr}`, run as `{query}`"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // Every metric the dashboard names is one map-trace serves.
    let (_, text) = http_get(target, "/metrics", "*/*").unwrap();
    let served = served_names(&text);
    for name in metric_names(&dashboard) {
        assert!(
            served.contains(&name),
            "the dashboard names {name}, which map-trace does not serve:\n{text}"
        );
    }
    // And it picks the executables of a series wherever the series has them.
    for expr in &exprs {
        for (name, matchers) in selectors(expr) {
            assert!(
                !served_with_exe(&text, &name) || matchers.contains(r#"exe=~"$exe""#),
                "{name} has an exe label, but `{expr}` does not filter by it"
            );
        }
    }
}

#[test]
fn a_prometheus_server_scrapes_and_queries_the_sites() {
    let bin = build_go("mapops", GO_SWISS);
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
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
    let target = free_port();
    let prometheus = Server::start(target);
    let mut tracer = Tracer::start(&[
        "--pid",
        &program.pid().to_string(),
        "--prometheus",
        &target.to_string(),
    ]);
    tracer.wait_attached(LIMIT);
    program.step();
    assert_eq!(program.read_line(), "held");
    let report = Report::read(&report_path);
    let assigns: u64 = report.maps.iter().map(|m| m.assigns).sum();

    // map-trace has caught up once package main's sites count every assign mapops made;
    // then the server must come to the same values with its next scrapes.
    let deadline = Instant::now() + LIMIT * time_scale();
    let served = loop {
        let served = served_site_events(target);
        let in_main: f64 = served
            .iter()
            .filter(|((site, event), _)| site.starts_with("main.") && event == "assign")
            .map(|(_, v)| v)
            .sum();
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^53")]
        if in_main >= assigns as f64 {
            break served;
        }
        assert!(
            Instant::now() < deadline,
            "map-trace never caught up: {served:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stored = loop {
        let stored: BTreeMap<(String, String), f64> = prometheus
            .query(r#"map_trace_map_events_total{job="map-trace"}"#)
            .into_iter()
            .map(|(l, v)| ((l["site"].clone(), l["event"].clone()), v))
            .collect();
        let same = served
            .iter()
            .filter(|((site, _), _)| site.starts_with("main."))
            .all(|(k, v)| stored.get(k) == Some(v));
        if same {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never stored what map-trace served:\n{served:?}\n{stored:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // One series per site and kind, never per map.
    let series = prometheus.query(r#"map_trace_map_events_total{job="map-trace"}"#);
    assert!(
        series.iter().all(|(l, _)| !l.contains_key("map")),
        "{series:?}"
    );
    assert_eq!(series.len(), stored.len());

    assert_the_dashboard_answers(&prometheus, target, deadline);
    let site_bytes = prometheus.query(r#"sum(map_trace_site_held_bytes{site=~"main\\..*"})"#);
    assert!(site_bytes[0].1 > 0.0, "{site_bytes:?}");
    let lost = prometheus.query(r#"map_trace_lost_events_total{job="map-trace"} > 0"#);
    assert!(lost.is_empty(), "lost events: {lost:?}");

    // The text format passes promtool's checks.
    let (head, text) = http_get(target, "/metrics", "*/*").unwrap();
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut promtool = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    program.proceed();
    let (status, _) = program.finish(LIMIT);
    assert!(status.success(), "mapops failed under tracing: {status}");
    let done = tracer.finish(LIMIT);
    assert!(done.status.success(), "map-trace: {:?}", done.stderr);
}

/// Without a kernel: the dashboard imports, and each of its queries runs once its
/// variables are set.
#[test]
fn the_dashboard_queries_the_chosen_instances() {
    let dashboard = dashboard();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 6, "only {} dashboard queries", exprs.len());
    let variables = variables(&dashboard);
    for name in ["instance", "exe"] {
        assert!(variables.iter().any(|v| v == name), "no ${name} variable");
    }
    for expr in &exprs {
        assert!(
            expr.contains("map_trace_"),
            "`{expr}` asks no map-trace metric"
        );
        runnable(expr, &variables);
    }
}

/// Without a kernel: deploy/daemonset.yaml runs map-trace on every node with what it needs
/// to trace the host's processes, with flags map-trace has.
#[test]
fn the_daemonset_runs_map_trace_on_every_node() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/daemonset.yaml");
    let manifest = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = manifest.lines().map(str::trim).collect();
    for want in [
        "kind: Namespace",
        "kind: DaemonSet",
        "hostPID: true",
        "privileged: true",
        r#"args: ["--all", "--prometheus", "0.0.0.0:9464"]"#,
        "containerPort: 9464",
        "prometheus.io/scrape: \"true\"",
        "prometheus.io/port: \"9464\"",
        "path: /metrics",
        "- operator: Exists",
        "path: /sys/kernel/tracing",
    ] {
        assert!(lines.contains(&want), "no `{want}` in {path}");
    }
    // The flags are map-trace's.
    let help = Command::new(integration_tests::map_trace_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in ["--all ", "--prometheus <ADDR> "] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(flag)),
            "map-trace --help has no {flag}:\n{help}"
        );
    }
}
