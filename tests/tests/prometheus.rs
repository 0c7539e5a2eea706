//! A real Prometheus server (Debian's 2.42, unpacked by `cargo xtask setup`) scrapes
//! map-trace over loopback while it traces mapops. Queries through the server's HTTP API
//! must return the per-site series with the values map-trace itself serves. The map series
//! must be one per site and never per map address, and every family map-trace exports must
//! answer a query. `promtool check metrics` must pass the exposition in the text format.

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

    // Every family answers a query, as a dashboard would ask it.
    for query in [
        r#"sum by (site) (rate(map_trace_map_events_total{event="grow"}[1m]))"#,
        "histogram_quantile(0.99, sum by (le, site) (rate(map_trace_grow_duration_seconds_bucket[1m])))",
        "map_trace_site_held_bytes",
        "map_trace_site_maps",
        "map_trace_site_peak_elements",
        "map_trace_maps_held_bytes",
        "map_trace_madvise_given_back_bytes_total",
        "map_trace_gc_cycles_total",
        "map_trace_rss_bytes",
        "map_trace_events_total",
        "map_trace_lost_events_total",
        "map_trace_read_failures_total",
    ] {
        // A rate needs two scrapes of a series: ask again until it has them.
        while prometheus.query(query).is_empty() {
            assert!(Instant::now() < deadline, "no series for {query}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
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
