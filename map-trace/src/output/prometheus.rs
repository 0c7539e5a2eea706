//! Prometheus metrics over HTTP (`GET /metrics`, `OpenMetrics` text) while the run lasts: map
//! events per map site and kind, grow and evacuation durations, the maps and bytes of each
//! site, madvise, GC, resident memory and lost events.
//!
//! Map series are labelled by site (the line that made the maps) and type, never by map
//! address: a real program makes thousands of short-lived maps, and a series per map would
//! grow without bound. A site is a line of code, so their number is bounded by the program.
//!
//! The metrics are atomics shared between the exporter, which updates them from the event
//! loop, and the server task on the same loop, which encodes them on each scrape.

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt::Write as _,
    future::ready,
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Bytes,
    header::{ACCEPT, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use map_trace_common::{EventKind, ReadFailure, ReadFailures};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use tokio::task::{JoinHandle, JoinSet};

use super::{Exporter, Status};
use crate::{
    answers::Summary,
    events::{Detail, TraceEvent},
    model::Labels,
};

/// Upper bounds of the duration buckets, in seconds: 1 µs to 100 ms, where grows and
/// evacuations fall.
const DURATION_BUCKETS: [f64; 16] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 1e-1,
];

/// The pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The content type of what `prometheus_client`'s text encoder writes.
const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format, for clients that do not ask for `OpenMetrics` (curl,
/// `promtool check metrics`).
const CONTENT_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which process a series is of: map addresses repeat across processes, and a pid alone
/// says little on a dashboard.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    pid: String,
    exe: String,
    /// Empty outside containers.
    container: String,
}

/// The maps of one site of one process.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabels {
    #[prometheus(flatten)]
    process: ProcessLabels,
    /// The maps' Go type, empty where the binary does not name it.
    r#type: String,
    /// As the CSV's `site` column has it; empty where no line is known.
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteEventLabels {
    #[prometheus(flatten)]
    site: SiteLabels,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdviceLabels {
    #[prometheus(flatten)]
    process: ProcessLabels,
    advice: String,
}

/// For RSS samples (`VmRSS`, `RssAnon`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessKindLabels {
    #[prometheus(flatten)]
    process: ProcessLabels,
    kind: &'static str,
}

/// For failed reads (`goid`, `key`, …), counted over the run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// For per-process counters.
type ProcessFamily = Family<ProcessLabels, Counter>;

type DurationFamily = Family<SiteLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Handles on the registered metrics.
struct Metrics {
    map_events: Family<SiteEventLabels, Counter>,
    site_maps: Family<SiteLabels, Gauge>,
    site_held: Family<SiteLabels, Gauge>,
    site_peak: Family<SiteLabels, Gauge>,
    held: Family<ProcessLabels, Gauge>,
    grow_seconds: DurationFamily,
    evacuate_seconds: DurationFamily,
    events: Counter,
    lost: Counter,
    read_failures: Family<KindLabels, Counter>,
    madvise_calls: Family<AdviceLabels, Counter>,
    madvise_bytes: Family<AdviceLabels, Counter>,
    given_back: ProcessFamily,
    gc_cycles: ProcessFamily,
    rss: Family<ProcessKindLabels, Gauge>,
}

impl Metrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self {
            map_events: Family::default(),
            site_maps: Family::default(),
            site_held: Family::default(),
            site_peak: Family::default(),
            held: Family::default(),
            grow_seconds: Family::new_with_constructor(duration_histogram),
            evacuate_seconds: Family::new_with_constructor(duration_histogram),
            events: Counter::default(),
            lost: Counter::default(),
            read_failures: Family::default(),
            madvise_calls: Family::default(),
            madvise_bytes: Family::default(),
            given_back: Family::default(),
            gc_cycles: Family::default(),
            rss: Family::default(),
        };
        r.register(
            "map_events",
            "Maps made, map operations, grows and evacuations, by site and event kind",
            m.map_events.clone(),
        );
        r.register(
            "site_maps",
            "Maps of the site seen so far, live and gone",
            m.site_maps.clone(),
        );
        r.register_with_unit(
            "site_held",
            "Memory the site's live maps hold (buckets, groups, tables, directories)",
            Unit::Bytes,
            m.site_held.clone(),
        );
        r.register(
            "site_peak_elements",
            "Most elements any map of the site held",
            m.site_peak.clone(),
        );
        r.register_with_unit(
            "maps_held",
            "Memory all live maps of the process hold, where their shape is known",
            Unit::Bytes,
            m.held.clone(),
        );
        r.register_with_unit(
            "grow_duration",
            "Map grows, timed from entry to return",
            Unit::Seconds,
            m.grow_seconds.clone(),
        );
        r.register_with_unit(
            "evacuate_duration",
            "Evacuations of classic map buckets, timed from entry to return",
            Unit::Seconds,
            m.evacuate_seconds.clone(),
        );
        r.register("events", "Events traced", m.events.clone());
        r.register(
            "lost_events",
            "Events the ring buffer had no room for",
            m.lost.clone(),
        );
        r.register(
            "read_failures",
            "Reads of the target's memory that failed in the eBPF programs, by what was read",
            m.read_failures.clone(),
        );
        r.register(
            "madvise_calls",
            "madvise(2) calls of the target, by advice",
            m.madvise_calls.clone(),
        );
        r.register_with_unit(
            "madvise",
            "Bytes passed to madvise(2), by advice",
            Unit::Bytes,
            m.madvise_bytes.clone(),
        );
        r.register_with_unit(
            "madvise_given_back",
            "Bytes handed back to the kernel (successful DONTNEED, FREE, REMOVE)",
            Unit::Bytes,
            m.given_back.clone(),
        );
        r.register("gc_cycles", "GC cycles started", m.gc_cycles.clone());
        r.register_with_unit(
            "rss",
            "Resident memory of the target at the last sample",
            Unit::Bytes,
            m.rss.clone(),
        );
        m
    }
}

pub struct PrometheusExporter {
    metrics: Metrics,
    /// Each site's Go type as first named: events that do not carry it (grows) keep the
    /// site's series. One entry per site, as bounded as the series.
    types: HashMap<(u32, Arc<str>), Arc<str>>,
    /// Each traced process's labels, by pid.
    processes: HashMap<u32, ProcessLabels>,
    /// The ring buffer's lost events as last reported.
    lost: u64,
    /// Failed reads as last reported.
    read_failures: ReadFailures,
    server: JoinHandle<()>,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn seconds(ns: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "durations far below 2^53 ns")]
    let s = ns as f64 / 1e9;
    s
}

impl PrometheusExporter {
    /// Binds `addr` and serves from the current tokio runtime until [`Exporter::finish`].
    pub fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            anyhow!("cannot serve Prometheus metrics on {addr}: {e}: pick a free address")
        })?;
        Self::serve(listener)
    }

    /// Serves on `listener` from the current tokio runtime until [`Exporter::finish`].
    pub fn serve(listener: TcpListener) -> anyhow::Result<Self> {
        listener
            .set_nonblocking(true)
            .context("serving Prometheus metrics")?;
        let listener =
            tokio::net::TcpListener::from_std(listener).context("serving Prometheus metrics")?;
        let mut registry = Registry::with_prefix("map_trace");
        let metrics = Metrics::register(&mut registry);
        let server = tokio::spawn(accept(listener, Arc::new(registry)));
        Ok(Self {
            metrics,
            types: HashMap::new(),
            processes: HashMap::new(),
            lost: 0,
            read_failures: ReadFailures::default(),
            server,
        })
    }

    fn process_labels(&self, pid: u32) -> ProcessLabels {
        self.processes
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| ProcessLabels {
                pid: pid.to_string(),
                ..ProcessLabels::default()
            })
    }

    fn site_labels(&mut self, e: &TraceEvent) -> SiteLabels {
        let site: Arc<str> = e
            .site
            .as_ref()
            .map_or_else(|| "".into(), |s| s.label().into());
        let key = (e.pid, site);
        if let Some(t) = &e.map_type {
            self.types
                .entry(key.clone())
                .or_insert_with(|| Arc::clone(t));
        }
        SiteLabels {
            process: self.process_labels(e.pid),
            r#type: self
                .types
                .get(&key)
                .map(ToString::to_string)
                .unwrap_or_default(),
            site: key.1.to_string(),
        }
    }

    fn map_event(&mut self, e: &TraceEvent) {
        let labels = self.site_labels(e);
        let m = &self.metrics;
        m.map_events
            .get_or_create(&SiteEventLabels {
                site: labels.clone(),
                event: e.kind.name(),
            })
            .inc();
        let durations = match e.kind {
            EventKind::Grow => &m.grow_seconds,
            EventKind::Evacuate => &m.evacuate_seconds,
            _ => return,
        };
        if let Some(ns) = e.duration_ns {
            durations.get_or_create(&labels).observe(seconds(ns));
        }
    }
}

impl Exporter for PrometheusExporter {
    fn process(&mut self, labels: &Arc<Labels>) {
        let process = ProcessLabels {
            pid: labels.pid.to_string(),
            exe: labels.exe.clone(),
            container: labels.container.clone().unwrap_or_default(),
        };
        // From the start, at 0: a dashboard's rate of them is 0, not "no data", until the
        // first GC or the first page given back.
        self.metrics.given_back.get_or_create(&process).inc_by(0);
        self.metrics.gc_cycles.get_or_create(&process).inc_by(0);
        self.processes.insert(labels.pid, process);
    }

    fn event(&mut self, e: &TraceEvent) -> anyhow::Result<()> {
        self.metrics.events.inc();
        match (e.kind, e.map, e.madvise, e.detail) {
            (EventKind::Madvise, _, Some(m), _) => {
                let process = self.process_labels(e.pid);
                let advice = AdviceLabels {
                    process: process.clone(),
                    advice: m.advice_text(),
                };
                self.metrics.madvise_calls.get_or_create(&advice).inc();
                self.metrics
                    .madvise_bytes
                    .get_or_create(&advice)
                    .inc_by(m.len);
                if m.gives_back() {
                    self.metrics
                        .given_back
                        .get_or_create(&process)
                        .inc_by(m.len);
                }
            }
            (EventKind::Gc, _, _, Some(Detail::GcStart(_))) => {
                let process = self.process_labels(e.pid);
                self.metrics.gc_cycles.get_or_create(&process).inc();
            }
            (EventKind::Rss, _, _, Some(Detail::Rss(kind))) => {
                if let Some(bytes) = e.rss_bytes {
                    let labels = ProcessKindLabels {
                        process: self.process_labels(e.pid),
                        kind,
                    };
                    self.metrics
                        .rss
                        .get_or_create(&labels)
                        .set(gauge_value(bytes));
                }
            }
            (_, Some(_), _, _) => self.map_event(e),
            _ => {}
        }
        Ok(())
    }

    fn status(&mut self, status: &Status) -> anyhow::Result<()> {
        self.metrics
            .lost
            .inc_by(status.lost.saturating_sub(self.lost));
        self.lost = self.lost.max(status.lost);
        for ((kind, now), seen) in ReadFailure::ALL
            .iter()
            .zip(status.read_failures)
            .zip(&mut self.read_failures)
        {
            let counter = self
                .metrics
                .read_failures
                .get_or_create(&KindLabels { kind: kind.name() });
            counter.inc_by(now.saturating_sub(*seen));
            *seen = (*seen).max(now);
        }
        Ok(())
    }

    fn wants_answers(&self) -> bool {
        true
    }

    /// The sites' maps, bytes and peaks: gauges set from the answers, one series per site.
    fn answers(&mut self, answers: &Summary) -> anyhow::Result<()> {
        for p in &answers.processes {
            let process = self.process_labels(p.pid);
            let m = &self.metrics;
            m.held.get_or_create(&process).set(gauge_value(p.bytes));
            for site in &p.sites {
                // The label the events' series carry: the full site, `via` and all.
                let labels = SiteLabels {
                    process: process.clone(),
                    r#type: site.map_type.clone(),
                    site: site.key.clone(),
                };
                m.site_maps
                    .get_or_create(&labels)
                    .set(gauge_value(site.maps));
                m.site_held
                    .get_or_create(&labels)
                    .set(gauge_value(site.bytes));
                m.site_peak
                    .get_or_create(&labels)
                    .set(gauge_value(site.peak_count));
            }
        }
        Ok(())
    }

    /// Stops the server: its connections go with it.
    fn finish(&mut self) -> anyhow::Result<()> {
        self.server.abort();
        Ok(())
    }
}

/// Accepts scrapes until aborted; each connection is served on its own task, owned here so
/// that aborting this one ends them all.
async fn accept(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, or a connection reset before it was taken: give
                    // the event loop back for a moment rather than spin on it.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                };
                let registry = Arc::clone(&registry);
                connections.spawn(async move {
                    let service =
                        service_fn(|req| ready(Ok::<_, Infallible>(respond(&registry, &req))));
                    // A client that goes away mid-request is its own business.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

fn respond<B>(registry: &Registry, req: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status, content: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content));
        response
    };
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "map-trace serves GET /metrics\n".into(),
        );
    }
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut text = String::new();
    match encode(&mut text, registry) {
        Ok(()) if openmetrics => reply(StatusCode::OK, CONTENT, text),
        Ok(()) => reply(StatusCode::OK, CONTENT_TEXT, prometheus_text(&text)),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "encoding the metrics failed\n".into(),
        ),
    }
}

/// `OpenMetrics` text as the Prometheus text format (0.0.4) has it: `prometheus_client`
/// encodes only the former. They differ in what this exporter writes only in that a
/// counter's `HELP` and `TYPE` name its `_total` samples, and there is no `UNIT` or `EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta.and_then(|(p, rest)| Some((p, rest.split_once(' ')?))) {
            Some((p, (name, rest))) if counters.contains(name) => {
                let _ = writeln!(out, "{p}{name}_total {rest}");
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::{events::Madvise, model::CallSite};

    async fn get(addr: SocketAddr, path: &str, accept: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,text/plain;q=0.5";

    fn caller() -> Arc<CallSite> {
        Arc::new(CallSite::new("main.fill".into(), "/src/main.go".into(), 42))
    }

    fn events() -> Vec<TraceEvent> {
        // Two maps first used on one line (the aggregates name their site): one series.
        let of = |kind, map| TraceEvent {
            caller: Some(caller()),
            ..TraceEvent::sample(kind, map, Some(5))
        };
        let typed = |kind, map| TraceEvent {
            map_type: Some("map[string]int".into()),
            ..of(kind, map)
        };
        vec![
            typed(EventKind::Assign, 0xc000_0100),
            typed(EventKind::Assign, 0xc000_0200),
            typed(EventKind::Delete, 0xc000_0100),
            // Grows carry no type: the site's series keeps the one its writes named.
            TraceEvent {
                detail: Some(Detail::Split),
                duration_ns: Some(3_000),
                ..of(EventKind::Grow, 0xc000_0100)
            },
            TraceEvent {
                duration_ns: Some(200_000),
                ..of(EventKind::Grow, 0xc000_0200)
            },
            TraceEvent {
                madvise: Some(Madvise {
                    addr: 0,
                    len: 8192,
                    advice: 4,
                    result: 0,
                }),
                ..TraceEvent::bare(EventKind::Madvise, 0, 1, 1)
            },
            TraceEvent {
                detail: Some(Detail::GcStart(Some(1))),
                ..TraceEvent::bare(EventKind::Gc, 0, 1, 1)
            },
            TraceEvent {
                detail: Some(Detail::Rss("VmRSS")),
                rss_bytes: Some(4 << 20),
                ..TraceEvent::bare(EventKind::Rss, 0, 1, 0)
            },
        ]
    }

    #[tokio::test]
    async fn serves_the_metrics_of_the_events() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut p = PrometheusExporter::serve(listener).unwrap();
        let id = "c0ffee".repeat(10) + "abcd";
        let labels = Arc::new(Labels {
            pid: 1,
            exe: "/srv/app".into(),
            go_version: "go1.26.6".into(),
            flavour: crate::goruntime::Flavour::Swiss,
            container: Some(id.clone()),
            probes: 3,
            storage: crate::goruntime::SWISS_STORAGE,
        });
        p.process(&labels);
        let mut aggs = crate::aggregate::Aggregates::default();
        aggs.traced(Arc::clone(&labels));
        for mut e in events() {
            aggs.record(&mut e);
            p.event(&e).unwrap();
        }
        assert!(p.wants_answers());
        p.answers(&crate::answers::answer(&aggs, 1, 0, 0)).unwrap();
        p.status(&Status {
            lost: 3,
            ..Status::default()
        })
        .unwrap();
        let mut read_failures = ReadFailures::default();
        read_failures[ReadFailure::Key as usize] = 2;
        p.status(&Status {
            lost: 4,
            read_failures,
            ..Status::default()
        })
        .unwrap();

        let response = get(addr, "/metrics", OPENMETRICS).await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains(CONTENT), "{head}");
        let lines: Vec<&str> = body.lines().collect();
        let process = format!(r#"pid="1",exe="/srv/app",container="{id}""#);
        let m = format!(
            r#"{process},type="map[string]int",site="main.fill /src/main.go:42 (first use)""#
        );
        for want in [
            format!(r#"map_trace_map_events_total{{{m},event="assign"}} 2"#),
            format!(r#"map_trace_map_events_total{{{m},event="delete"}} 1"#),
            format!(r#"map_trace_map_events_total{{{m},event="grow"}} 2"#),
            format!("map_trace_site_maps{{{m}}} 2"),
            format!("map_trace_site_held_bytes{{{m}}} 0"),
            format!("map_trace_site_peak_elements{{{m}}} 5"),
            format!("map_trace_maps_held_bytes{{{process}}} 0"),
            format!("map_trace_grow_duration_seconds_count{{{m}}} 2"),
            format!(r#"map_trace_grow_duration_seconds_bucket{{le="0.000005",{m}}} 1"#),
            format!(r#"map_trace_grow_duration_seconds_bucket{{le="0.00025",{m}}} 2"#),
            "map_trace_events_total 8".to_owned(),
            "map_trace_lost_events_total 4".to_owned(),
            r#"map_trace_read_failures_total{kind="key"} 2"#.to_owned(),
            r#"map_trace_read_failures_total{kind="goid"} 0"#.to_owned(),
            format!(r#"map_trace_madvise_calls_total{{{process},advice="DONTNEED"}} 1"#),
            format!(r#"map_trace_madvise_bytes_total{{{process},advice="DONTNEED"}} 8192"#),
            format!("map_trace_madvise_given_back_bytes_total{{{process}}} 8192"),
            format!("map_trace_gc_cycles_total{{{process}}} 1"),
            format!(r#"map_trace_rss_bytes{{{process},kind="VmRSS"}} 4194304"#),
            "# EOF".to_owned(),
        ] {
            assert!(lines.contains(&want.as_str()), "no `{want}` in:\n{body}");
        }
        assert!(
            get(addr, "/", OPENMETRICS)
                .await
                .starts_with("HTTP/1.1 404")
        );

        // Without OpenMetrics asked for: the Prometheus text format.
        let response = get(addr, "/metrics", "*/*").await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(CONTENT_TEXT), "{head}");
        let lines: Vec<&str> = body.lines().collect();
        for want in [
            "# HELP map_trace_events_total Events traced.",
            "# TYPE map_trace_events_total counter",
            "map_trace_events_total 8",
            "# TYPE map_trace_rss_bytes gauge",
        ] {
            assert!(lines.contains(&want), "no `{want}` in:\n{body}");
        }
        assert!(
            !body.contains("# EOF") && !body.contains("# UNIT"),
            "{body}"
        );

        p.finish().unwrap();
        // The abort takes effect once the loop runs again.
        tokio::task::yield_now().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_port_in_use_is_one_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let Err(err) = PrometheusExporter::bind(addr) else {
            panic!("bound a port in use");
        };
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!("cannot serve Prometheus metrics on {addr}: "))
                && text.ends_with(": pick a free address"),
            "{text}"
        );
    }
}
