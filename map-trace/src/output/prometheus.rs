//! Prometheus metrics over HTTP (`GET /metrics`, `OpenMetrics` text) while the run lasts: map
//! events per map and kind, grow and evacuation durations, madvise, GC, resident memory and
//! lost events.
//!
//! The metrics are atomics shared between the exporter, which updates them from the event
//! loop, and the server task on the same loop, which encodes them on each scrape.

use std::{
    collections::HashMap,
    convert::Infallible,
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
    header::{CONTENT_TYPE, HeaderValue},
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

/// Which process a series is of: map addresses repeat across processes, and a pid alone
/// says little on a dashboard.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    pid: String,
    exe: String,
    /// Empty outside containers.
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    #[prometheus(flatten)]
    process: ProcessLabels,
    map: String,
    /// The map's Go type, empty where the binary does not name it.
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapEventLabels {
    #[prometheus(flatten)]
    map: MapLabels,
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

type DurationFamily = Family<MapLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Handles on the registered metrics.
struct Metrics {
    map_events: Family<MapEventLabels, Counter>,
    map_count: Family<MapLabels, Gauge>,
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
            map_count: Family::default(),
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
            "Map operations, grows and evacuations, by map and event kind",
            m.map_events.clone(),
        );
        r.register(
            "map_count",
            "Element count of each map at its last event",
            m.map_count.clone(),
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
    /// Each map's Go type as first named: events that do not carry it (grows) keep the
    /// map's series.
    types: HashMap<(u32, u64), Arc<str>>,
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

    fn map_labels(&mut self, map: u64, e: &TraceEvent) -> MapLabels {
        if let Some(t) = &e.map_type {
            self.types
                .entry((e.pid, map))
                .or_insert_with(|| Arc::clone(t));
        }
        MapLabels {
            process: self.process_labels(e.pid),
            map: format!("{map:#x}"),
            r#type: self
                .types
                .get(&(e.pid, map))
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    }

    fn map_event(&mut self, map: u64, e: &TraceEvent) {
        let labels = self.map_labels(map, e);
        let m = &self.metrics;
        m.map_events
            .get_or_create(&MapEventLabels {
                map: labels.clone(),
                event: e.kind.name(),
            })
            .inc();
        if let Some(count) = e.count() {
            m.map_count.get_or_create(&labels).set(gauge_value(count));
        }
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
        self.processes.insert(
            labels.pid,
            ProcessLabels {
                pid: labels.pid.to_string(),
                exe: labels.exe.clone(),
                container: labels.container.clone().unwrap_or_default(),
            },
        );
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
            (_, Some(map), _, _) => self.map_event(map, e),
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
    let mut text = String::new();
    match encode(&mut text, registry) {
        Ok(()) => reply(StatusCode::OK, CONTENT, text),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "encoding the metrics failed\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::events::Madvise;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    fn events() -> Vec<TraceEvent> {
        let typed = |kind| TraceEvent {
            map_type: Some("map[string]int".into()),
            ..TraceEvent::sample(kind, 0xc000_0100, Some(5))
        };
        vec![
            typed(EventKind::Assign),
            typed(EventKind::Assign),
            typed(EventKind::Delete),
            // Grows carry no type: the map's series keeps the one its writes named.
            TraceEvent {
                detail: Some(Detail::Split),
                duration_ns: Some(3_000),
                ..TraceEvent::sample(EventKind::Grow, 0xc000_0100, Some(9))
            },
            TraceEvent {
                duration_ns: Some(200_000),
                ..TraceEvent::sample(EventKind::Grow, 0xc000_0100, Some(17))
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
        p.process(&Arc::new(Labels {
            pid: 1,
            exe: "/srv/app".into(),
            go_version: "go1.26.6".into(),
            flavour: crate::goruntime::Flavour::Swiss,
            container: Some(id.clone()),
            probes: 3,
            storage: crate::goruntime::SWISS_STORAGE,
        }));
        for e in events() {
            p.event(&e).unwrap();
        }
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

        let response = get(addr, "/metrics").await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains(CONTENT), "{head}");
        let lines: Vec<&str> = body.lines().collect();
        let process = format!(r#"pid="1",exe="/srv/app",container="{id}""#);
        let m = format!(r#"{process},map="0xc0000100",type="map[string]int""#);
        for want in [
            format!(r#"map_trace_map_events_total{{{m},event="assign"}} 2"#),
            format!(r#"map_trace_map_events_total{{{m},event="delete"}} 1"#),
            format!(r#"map_trace_map_events_total{{{m},event="grow"}} 2"#),
            format!("map_trace_map_count{{{m}}} 17"),
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
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 404"));

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
