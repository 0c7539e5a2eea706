//! The live terminal view, shown while tracing when standard output is a terminal: a header
//! about the run with the top finding, a table of maps of every traced process sorted by
//! activity (or of their sites, the lines that made them), and charts of events/s, RSS and
//! madvise over time with GC cycles marked. Redrawn about four times a second from the
//! aggregates and their answers.
//!
//! Keys: `q` (or Ctrl-C) quits, `t` switches between maps and sites, `s` cycles the sort,
//! `/` filters by address, type, site, pid, executable or container, arrows and page keys
//! scroll. `NO_COLOR` turns colours off.

use std::{
    collections::{HashMap, VecDeque},
    io,
    mem::ManuallyDrop,
    path::Path,
    time::{Duration, Instant},
};

use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Sparkline, Table},
};

use super::{Status, mib};
use crate::{
    aggregate::{Aggregates, MapStats},
    answers::{self, SiteAnswer, Summary},
    goruntime::MapState,
    model::Labels,
};

/// What the header says about the run; fixed once attached.
#[derive(Clone, Debug)]
pub struct Header {
    /// Uprobes when the view started.
    pub probes: usize,
    /// `kprobe` or `tracepoint`; `None` when madvise is not traced.
    pub madvise: Option<&'static str>,
    /// Every Go process of the host (`--all`).
    pub all: bool,
}

/// How the map table is ordered; `s` cycles through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sort {
    /// Assigns and deletes per second, then all operations.
    Activity,
    Grows,
    WorstGrow,
    Count,
    Address,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Activity => Sort::Grows,
            Sort::Grows => Sort::WorstGrow,
            Sort::WorstGrow => Sort::Count,
            Sort::Count => Sort::Address,
            Sort::Address => Sort::Activity,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sort::Activity => "activity",
            Sort::Grows => "grows",
            Sort::WorstGrow => "worst grow",
            Sort::Count => "count",
            Sort::Address => "address",
        }
    }
}

/// The run's totals at one redraw, kept for rates and charts.
#[derive(Debug)]
struct Sample {
    at: Instant,
    events: u64,
    /// Per process and map: assigns and deletes so far.
    ops: HashMap<(u32, u64), (u64, u64)>,
    rss: Option<u64>,
    given_back: u64,
    gc_starts: u64,
}

/// Redraws kept: a minute at four a second.
const HISTORY: usize = 240;
/// Rates are taken over about this long.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// What a key asks of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

/// The table's state that keys change.
#[derive(Debug)]
struct Controls {
    sort: Sort,
    /// Rows whose address, type, pid, executable or container contains this.
    filter: String,
    /// While `/` is being typed: the text so far.
    editing: Option<String>,
    /// First row shown.
    scroll: usize,
    /// The sites table instead of the maps table.
    sites: bool,
}

impl Controls {
    fn new() -> Self {
        Self {
            sort: Sort::Activity,
            filter: String::new(),
            editing: None,
            scroll: 0,
            sites: false,
        }
    }

    fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Continue;
        }
        // Raw mode turns Ctrl-C into a key: it means what SIGINT would.
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Action::Quit;
        }
        if let Some(text) = &mut self.editing {
            match key.code {
                KeyCode::Char(c) => text.push(c),
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Enter => {
                    self.filter = std::mem::take(text).to_lowercase();
                    self.editing = None;
                    self.scroll = 0;
                }
                KeyCode::Esc => self.editing = None,
                _ => {}
            }
            return Action::Continue;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('t') => {
                self.sites = !self.sites;
                self.scroll = 0;
            }
            KeyCode::Char('/') => self.editing = Some(self.filter.clone()),
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Up => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::Down => self.scroll = self.scroll.saturating_add(1),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(10),
            KeyCode::Home => self.scroll = 0,
            _ => {}
        }
        Action::Continue
    }

    fn shows(&self, labels: &Labels, addr: u64, m: &MapStats) -> bool {
        let f = &self.filter;
        f.is_empty()
            || format!("{addr:#x}").contains(f)
            || m.map_type
                .as_deref()
                .is_some_and(|t| t.to_lowercase().contains(f))
            || m.site
                .as_ref()
                .is_some_and(|s| s.label().to_lowercase().contains(f))
            || self.shows_process(labels)
    }

    fn shows_site(&self, labels: &Labels, site: &SiteAnswer) -> bool {
        let f = &self.filter;
        f.is_empty()
            || site.label.to_lowercase().contains(f)
            || site.map_type.to_lowercase().contains(f)
            || self.shows_process(labels)
    }

    fn shows_process(&self, labels: &Labels) -> bool {
        let f = &self.filter;
        labels.pid.to_string() == *f
            || labels.exe.to_lowercase().contains(f)
            || labels
                .container
                .as_deref()
                .is_some_and(|c| c.starts_with(f.as_str()))
    }
}

/// The live view on the terminal; the terminal is restored when it is dropped.
pub struct LiveView {
    /// Never dropped: ratatui's drop reports a cursor it cannot show with `eprintln!`,
    /// which panics once the terminal is gone (a hang-up), before the files are flushed.
    terminal: ManuallyDrop<DefaultTerminal>,
    header: Header,
    controls: Controls,
    samples: VecDeque<Sample>,
    /// Sites and findings at the last tick.
    answers: Summary,
    color: bool,
}

impl LiveView {
    /// Takes over the terminal (raw mode, alternate screen).
    pub fn start(header: Header) -> io::Result<Self> {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Ok(Self {
            terminal: ManuallyDrop::new(ratatui::try_init()?),
            header,
            controls: Controls::new(),
            samples: VecDeque::with_capacity(HISTORY + 1),
            answers: answers::answer(&Aggregates::default(), 0, 0, 0),
            color,
        })
    }

    /// Handles every key pressed since the last call (and resizes, by redrawing).
    pub fn keys(&mut self, agg: &Aggregates, status: &Status) -> io::Result<Action> {
        let mut redraw = false;
        while event::poll(Duration::ZERO)? {
            match event::read()? {
                Event::Key(key) => {
                    if self.controls.key(key) == Action::Quit {
                        return Ok(Action::Quit);
                    }
                    redraw = true;
                }
                Event::Resize(..) => redraw = true,
                _ => {}
            }
        }
        if redraw {
            self.render(agg, status)?;
        }
        Ok(Action::Continue)
    }

    /// Takes a sample of the run and redraws.
    pub fn tick(&mut self, aggs: &Aggregates, status: &Status) -> io::Result<()> {
        let live = || aggs.processes.values().filter(|p| p.live);
        self.samples.push_back(Sample {
            at: Instant::now(),
            events: status.events,
            ops: aggs
                .processes
                .iter()
                .flat_map(|(pid, p)| {
                    p.agg
                        .maps
                        .iter()
                        .map(|(a, m)| ((*pid, *a), (m.assigns, m.deletes)))
                })
                .collect(),
            rss: live()
                .filter_map(|p| p.agg.rss.get("VmRSS").map(|r| r.last))
                .reduce(|a, b| a + b),
            given_back: aggs.processes.values().map(|p| p.agg.given_back).sum(),
            gc_starts: aggs.processes.values().map(|p| p.agg.gc.starts).sum(),
        });
        if self.samples.len() > HISTORY {
            self.samples.pop_front();
        }
        let elapsed = u64::try_from(status.elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.answers = answers::answer(aggs, elapsed, status.lost, 0);
        self.render(aggs, status)
    }

    fn render(&mut self, agg: &Aggregates, status: &Status) -> io::Result<()> {
        let view = View {
            header: &self.header,
            controls: &self.controls,
            samples: &self.samples,
            answers: &self.answers,
            color: self.color,
        };
        self.terminal.draw(|frame| view.draw(frame, agg, status))?;
        Ok(())
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        // What the terminal's own drop would do, failures ignored: it may be gone.
        let _ = self.terminal.show_cursor();
        let _ = ratatui::try_restore();
    }
}

/// One redraw's inputs.
struct View<'a> {
    header: &'a Header,
    controls: &'a Controls,
    samples: &'a VecDeque<Sample>,
    answers: &'a Summary,
    color: bool,
}

impl View<'_> {
    fn style(&self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    /// The sample about [`RATE_WINDOW`] before the newest, and the newest.
    fn window(&self) -> Option<(&Sample, &Sample)> {
        let now = self.samples.back()?;
        let then = self
            .samples
            .iter()
            .rev()
            .find(|s| now.at.duration_since(s.at) >= RATE_WINDOW)
            .or_else(|| self.samples.front())?;
        Some((then, now))
    }

    /// Per-second rate of `f` over the window.
    fn rate(&self, f: impl Fn(&Sample) -> u64) -> f64 {
        let Some((then, now)) = self.window() else {
            return 0.0;
        };
        let secs = now.at.duration_since(then.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
        let delta = f(now).saturating_sub(f(then)) as f64;
        delta / secs
    }

    fn map_rates(&self, pid: u32, addr: u64) -> (f64, f64) {
        let ops = |s: &Sample| s.ops.get(&(pid, addr)).copied().unwrap_or_default();
        (self.rate(|s| ops(s).0), self.rate(|s| ops(s).1))
    }

    fn draw(&self, frame: &mut Frame, agg: &Aggregates, status: &Status) {
        let [head, table, charts, foot] = Layout::vertical([
            Constraint::Length(5),
            Constraint::Min(4),
            Constraint::Length(7),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        self.draw_header(frame, head, agg, status);
        if self.controls.sites {
            self.draw_sites(frame, table, agg);
        } else {
            self.draw_table(frame, table, agg);
        }
        self.draw_charts(frame, charts, agg);
        self.draw_footer(frame, foot);
    }

    fn draw_header(&self, frame: &mut Frame, area: Rect, aggs: &Aggregates, status: &Status) {
        let h = self.header;
        let live: Vec<&Labels> = aggs
            .processes
            .values()
            .filter(|p| p.live)
            .map(|p| &*p.labels)
            .collect();
        let who = match live.as_slice() {
            [one] if !h.all => {
                let binary = Path::new(&one.exe)
                    .file_name()
                    .map_or(one.exe.clone(), |n| n.to_string_lossy().into_owned());
                let container = one
                    .container
                    .as_deref()
                    .map(|c| format!("  container {}", short_id(c)))
                    .unwrap_or_default();
                format!(
                    "pid {}  {binary}  {}  {} maps{container}",
                    one.pid, one.go_version, one.flavour
                )
            }
            _ => format!(
                "{} processes traced ({} so far){}",
                live.len(),
                aggs.processes.len(),
                if h.all {
                    ", every Go process (--all)"
                } else {
                    ""
                }
            ),
        };
        let madvise = h.madvise.map_or_else(
            || "madvise not traced".to_owned(),
            |m| format!("madvise via {m}"),
        );
        let lost_style = if status.lost > 0 {
            self.style(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        // The costliest finding of any process, with how many more there are.
        let findings: Vec<_> = self
            .answers
            .processes
            .iter()
            .flat_map(|p| p.findings.iter().map(move |f| (p.pid, f)))
            .collect();
        let finding = match findings.first() {
            None => Line::from("findings: none so far"),
            Some((pid, f)) => Line::from(vec![
                Span::styled(format!("finding {}", f.kind), self.style(Color::Yellow)),
                Span::raw(format!(
                    " (pid {pid}{}): {}",
                    match findings.len() {
                        1 => String::new(),
                        n => format!(", 1 of {n}"),
                    },
                    f.message
                )),
            ]),
        };
        let lines = vec![
            Line::from(format!("{who}  {} probes  {madvise}", h.probes)),
            Line::from(vec![
                Span::raw(format!(
                    "events/s {:.0}  events {}  ",
                    self.rate(|s| s.events),
                    status.events
                )),
                Span::styled(format!("lost {}", status.lost), lost_style),
                Span::raw(format!(
                    "  maps {}  gc cycles {}  elapsed {:.0} s",
                    agg_maps(self.samples),
                    self.samples.back().map_or(0, |s| s.gc_starts),
                    status.elapsed.as_secs_f64()
                )),
            ]),
            finding,
        ];
        let block = Block::bordered().title(Span::styled(
            " map-trace ",
            self.style(Color::Cyan).add_modifier(Modifier::BOLD),
        ));
        frame.render_widget(Paragraph::new(lines).block(block), area);
    }

    fn sorted<'m>(&self, aggs: &'m Aggregates) -> Vec<MapRow<'m>> {
        let mut rows: Vec<MapRow<'m>> = aggs
            .processes
            .values()
            .flat_map(|p| p.agg.maps.iter().map(move |(a, m)| (&*p.labels, *a, m)))
            .filter(|(l, a, m)| self.controls.shows(l, *a, m))
            .map(|(l, a, m)| MapRow {
                labels: l,
                addr: a,
                stats: m,
                rates: self.map_rates(l.pid, a),
            })
            .collect();
        let ops = |m: &MapStats| m.assigns + m.deletes + m.clears;
        rows.sort_by(|a, b| match self.controls.sort {
            Sort::Activity => (b.rates.0 + b.rates.1)
                .total_cmp(&(a.rates.0 + a.rates.1))
                .then(ops(b.stats).cmp(&ops(a.stats))),
            Sort::Grows => b.stats.grow_count().cmp(&a.stats.grow_count()),
            Sort::WorstGrow => b.stats.grow_time.worst_ns.cmp(&a.stats.grow_time.worst_ns),
            Sort::Count => count(b.stats).cmp(&count(a.stats)),
            Sort::Address => (a.labels.pid, a.addr).cmp(&(b.labels.pid, b.addr)),
        });
        rows
    }

    fn draw_table(&self, frame: &mut Frame, area: Rect, agg: &Aggregates) {
        let rows = self.sorted(agg);
        let visible = usize::from(area.height.saturating_sub(3));
        let first = self
            .controls
            .scroll
            .min(rows.len().saturating_sub(visible.max(1)));
        let body: Vec<Row> = rows
            .iter()
            .skip(first)
            .take(visible)
            .map(|row| {
                let (m, (assigns, deletes)) = (row.stats, row.rates);
                let growing = m.evacuation().map(|(done, of)| format!("evac {done}/{of}"));
                Row::new(vec![
                    Cell::from(row.labels.pid.to_string()),
                    Cell::from(format!("{:#x}", row.addr)),
                    Cell::from(m.map_type.as_deref().unwrap_or("?").to_owned()),
                    Cell::from(m.last_state.map_or("-".into(), |s| s.count().to_string())),
                    Cell::from(size(m)),
                    Cell::from(m.load().map_or("-".into(), |l| format!("{l:.2}"))),
                    Cell::from(growing.unwrap_or_else(|| "-".into()))
                        .style(self.style(Color::Yellow)),
                    Cell::from(format!("{assigns:.0}")),
                    Cell::from(format!("{deletes:.0}")),
                    Cell::from(m.grow_count().to_string()),
                    Cell::from(worst(m.grow_time.worst_ns)),
                    Cell::from(
                        m.top_callers_by_ops(1)
                            .first()
                            .map_or(String::new(), |(site, _)| site.to_string()),
                    ),
                ])
            })
            .collect();
        let header = [
            "pid",
            "map",
            "type",
            "count",
            "size",
            "load",
            "growth",
            "assign/s",
            "delete/s",
            "grows",
            "worst grow",
            "top call site",
        ];
        let widths = [
            Constraint::Length(8),
            Constraint::Length(15),
            Constraint::Min(24),
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(5),
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Fill(1),
        ];
        let title = format!(
            " maps {}-{} of {}, sorted by {} ",
            (first + 1).min(rows.len()),
            first + body.len(),
            rows.len(),
            self.controls.sort.name()
        );
        self.draw_rows(frame, area, (&header, &widths), body, title);
    }

    /// A bordered table of `body` under `columns` (names and widths).
    fn draw_rows(
        &self,
        frame: &mut Frame,
        area: Rect,
        columns: (&[&str], &[Constraint]),
        body: Vec<Row>,
        title: String,
    ) {
        let header = Row::new(columns.0.to_vec())
            .style(self.style(Color::Cyan).add_modifier(Modifier::BOLD));
        let table = Table::new(body, columns.1.to_vec())
            .header(header)
            .block(Block::bordered().title(title));
        frame.render_widget(table, area);
    }

    /// The sites of every process, as the answers rank them (grow time first).
    fn draw_sites(&self, frame: &mut Frame, area: Rect, aggs: &Aggregates) {
        let rows: Vec<(u32, &SiteAnswer)> = self
            .answers
            .processes
            .iter()
            .filter_map(|p| Some((aggs.processes.get(&p.pid)?, p)))
            .flat_map(|(traced, p)| {
                p.sites
                    .iter()
                    .filter(|s| self.controls.shows_site(&traced.labels, s))
                    .map(move |s| (p.pid, s))
            })
            .collect();
        let visible = usize::from(area.height.saturating_sub(3));
        let first = self
            .controls
            .scroll
            .min(rows.len().saturating_sub(visible.max(1)));
        let body: Vec<Row> = rows
            .iter()
            .skip(first)
            .take(visible)
            .map(|(pid, s)| {
                Row::new(vec![
                    Cell::from(pid.to_string()),
                    Cell::from(s.maps.to_string()),
                    Cell::from(s.assigns.to_string()),
                    Cell::from(s.deletes.to_string()),
                    Cell::from(s.grows.to_string()),
                    Cell::from(worst(s.grow_ns_total)),
                    Cell::from(worst(s.grow_ns_max)),
                    Cell::from(s.peak_count.to_string()),
                    Cell::from(answers::size(s.bytes)),
                    Cell::from(s.map_type.clone()),
                    Cell::from(s.label.clone()),
                ])
            })
            .collect();
        let header = [
            "pid",
            "maps",
            "assigns",
            "deletes",
            "grows",
            "grow time",
            "worst grow",
            "peak",
            "bytes",
            "type",
            "site",
        ];
        let widths = [
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(28),
            Constraint::Fill(1),
        ];
        let title = format!(
            " sites {}-{} of {}, by grow time ",
            (first + 1).min(rows.len()),
            first + body.len(),
            rows.len()
        );
        self.draw_rows(frame, area, (&header, &widths), body, title);
    }

    fn draw_charts(&self, frame: &mut Frame, area: Rect, aggs: &Aggregates) {
        let given_back: u64 = aggs.processes.values().map(|p| p.agg.given_back).sum();
        let [events, rss, madvise] = Layout::horizontal([Constraint::Ratio(1, 3); 3]).areas(area);
        let width = usize::from(events.width.saturating_sub(2));
        let recent: Vec<&Sample> = {
            let skip = self.samples.len().saturating_sub(width + 1);
            self.samples.iter().skip(skip).collect()
        };
        let per_tick = |f: fn(&Sample) -> u64| -> Vec<u64> {
            recent
                .windows(2)
                .map(|w| f(w[1]).saturating_sub(f(w[0])))
                .collect()
        };

        // Events per redraw, with a GC-start marker row beneath.
        let [spark, marks] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner(events));
        frame.render_widget(
            Block::bordered().title(format!(
                " events/s {:.0} · ^ GC start ",
                self.rate(|s| s.events)
            )),
            events,
        );
        frame.render_widget(
            Sparkline::default()
                .data(per_tick(|s| s.events))
                .style(self.style(Color::Green)),
            spark,
        );
        let gc: String = per_tick(|s| s.gc_starts)
            .iter()
            .map(|&n| if n > 0 { '^' } else { ' ' })
            .collect();
        frame.render_widget(Paragraph::new(gc).style(self.style(Color::Magenta)), marks);

        let rss_now = recent.last().and_then(|s| s.rss);
        frame.render_widget(
            Sparkline::default()
                .data(
                    recent
                        .iter()
                        .map(|s| s.rss.unwrap_or(0))
                        .collect::<Vec<_>>(),
                )
                .style(self.style(Color::Blue))
                .block(
                    Block::bordered().title(format!(" RSS {} ", rss_now.map_or("-".into(), mib))),
                ),
            rss,
        );
        frame.render_widget(
            Sparkline::default()
                .data(per_tick(|s| s.given_back))
                .style(self.style(Color::Yellow))
                .block(
                    Block::bordered().title(format!(" madvise given back {} ", mib(given_back))),
                ),
            madvise,
        );
    }

    fn draw_footer(&self, frame: &mut Frame, area: Rect) {
        let text = match &self.controls.editing {
            Some(text) => format!(
                "filter (address, type, site, pid, executable or container; Enter applies, Esc cancels): {text}_"
            ),
            None if self.controls.filter.is_empty() => {
                "q quit  t maps/sites  s sort  / filter  ↑↓ PgUp PgDn scroll".to_owned()
            }
            None => format!(
                "q quit  t maps/sites  s sort  / filter [{}]  Esc clears  ↑↓ PgUp PgDn scroll",
                self.controls.filter
            ),
        };
        frame.render_widget(
            Paragraph::new(text).style(Style::new().add_modifier(Modifier::REVERSED)),
            area,
        );
    }
}

/// One row of the map table.
struct MapRow<'m> {
    labels: &'m Labels,
    addr: u64,
    stats: &'m MapStats,
    /// Assigns and deletes per second.
    rates: (f64, f64),
}

/// A container id as `docker ps` shows it: its first 12 digits.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn inner(area: Rect) -> Rect {
    Block::bordered().inner(area)
}

/// Maps seen at the newest sample.
fn agg_maps(samples: &VecDeque<Sample>) -> usize {
    samples.back().map_or(0, |s| s.ops.len())
}

fn count(m: &MapStats) -> u64 {
    m.last_state.map_or(0, |s| s.count())
}

/// Buckets, or swiss small map / tables and the last table capacity.
fn size(m: &MapStats) -> String {
    match m.last_state {
        Some(MapState::Classic { b, .. }) => format!("2^{b} buckets"),
        Some(MapState::Swiss { tables: 0, .. }) => "small".to_owned(),
        Some(MapState::Swiss { tables, .. }) => match m.table_capacity {
            Some(cap) => format!("{tables} tbl cap {cap}"),
            None => format!("{tables} tbl"),
        },
        None => "-".to_owned(),
    }
}

fn worst(ns: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let us = ns as f64 / 1e3;
    if ns == 0 {
        "-".to_owned()
    } else if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use std::sync::Arc;

    use super::*;
    use map_trace_common::EventKind;

    use crate::{
        events::{Detail, TraceEvent},
        goruntime::{Flavour, MapState},
        model::CallSite,
    };

    fn labels(pid: u32, container: Option<&str>) -> Labels {
        Labels {
            pid,
            exe: "/srv/app".into(),
            go_version: "go1.21.13".into(),
            flavour: Flavour::Classic,
            container: container.map(str::to_owned),
            probes: 12,
            storage: crate::goruntime::CLASSIC_STORAGE,
        }
    }

    fn press(c: &mut Controls, code: KeyCode) -> Action {
        c.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn keys_sort_filter_scroll_and_quit() {
        let mut c = Controls::new();
        assert_eq!(press(&mut c, KeyCode::Char('s')), Action::Continue);
        assert_eq!(c.sort, Sort::Grows);
        for _ in 0..4 {
            press(&mut c, KeyCode::Char('s'));
        }
        assert_eq!(c.sort, Sort::Activity);
        press(&mut c, KeyCode::Char('/'));
        for ch in "Map[String".chars() {
            // Typed letters, `q` and `s` included, go into the filter while editing.
            press(&mut c, KeyCode::Char(ch));
        }
        press(&mut c, KeyCode::Char('q'));
        press(&mut c, KeyCode::Backspace);
        press(&mut c, KeyCode::Enter);
        assert_eq!(c.filter, "map[string");
        let mut m = MapStats::default();
        let l = labels(42, None);
        assert!(!c.shows(&l, 0x10, &m));
        m.map_type = Some("map[string]int".into());
        assert!(c.shows(&l, 0x10, &m));
        // By pid (whole), executable (part) or container (its start).
        let id = "4f".repeat(32);
        for (filter, shown) in [("42", true), ("4", false), ("srv/a", true), ("4f4f", false)] {
            c.filter = filter.into();
            assert_eq!(c.shows(&l, 0x10, &MapStats::default()), shown, "{filter}");
        }
        c.filter = "4f4f".into();
        assert!(c.shows(&labels(7, Some(&id)), 0x10, &MapStats::default()));
        press(&mut c, KeyCode::Esc);
        assert!(c.filter.is_empty());
        press(&mut c, KeyCode::Down);
        press(&mut c, KeyCode::PageDown);
        press(&mut c, KeyCode::Up);
        assert_eq!(c.scroll, 10);
        press(&mut c, KeyCode::Home);
        assert_eq!(c.scroll, 0);
        assert_eq!(press(&mut c, KeyCode::Char('q')), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(Controls::new().key(ctrl_c), Action::Quit);
    }

    #[test]
    fn draws_header_maps_and_charts() {
        let mut aggs = Aggregates::default();
        let id = "ab".repeat(32);
        aggs.traced(Arc::new(labels(42, Some(&id))));
        for kind in [
            map_trace_common::EventKind::Assign,
            map_trace_common::EventKind::Assign,
        ] {
            aggs.record(&mut TraceEvent {
                map_type: Some("map[string]int".into()),
                state: Some(MapState::Classic {
                    count: 40,
                    b: 3,
                    noverflow: 0,
                    growing: true,
                    same_size: false,
                    nevacuate: 2,
                }),
                pid: 42,
                ..TraceEvent::sample(kind, 0xc000_1000, None)
            });
        }
        let header = Header {
            probes: 12,
            madvise: Some("tracepoint"),
            all: false,
        };
        let controls = Controls::new();
        let now = Instant::now();
        let samples: VecDeque<Sample> = (0..3_u64)
            .map(|i| Sample {
                at: now + Duration::from_millis(500 * i),
                events: 100 * i,
                ops: HashMap::from([((42, 0xc000_1000), (50 * i, 0))]),
                rss: Some(8 << 20),
                given_back: 0,
                gc_starts: i / 2,
            })
            .collect();
        let answers = answers::answer(&aggs, 0, 0, 0);
        let view = View {
            header: &header,
            controls: &controls,
            samples: &samples,
            answers: &answers,
            color: false,
        };
        let screen = screen(&view, &aggs);
        for want in [
            "pid 42  app  go1.21.13  classic maps  container abababababab  12 probes  madvise via tracepoint",
            "events/s 200",
            "assign/s",
            "lost 0",
            "0xc0001000",
            "map[string]int",
            "2^3 buckets",
            "evac 2/4",
            "sorted by activity",
            "RSS 8.0 MiB",
            "findings: none so far",
            "q quit  t maps/sites",
        ] {
            assert!(screen.contains(want), "no `{want}` in:\n{screen}");
        }
    }

    /// The view drawn on a 150×24 terminal, as text.
    fn screen(view: &View<'_>, aggs: &Aggregates) -> String {
        let status = Status {
            elapsed: Duration::from_secs(3),
            events: 200,
            ..Status::default()
        };
        let mut terminal = Terminal::new(TestBackend::new(150, 24)).unwrap();
        terminal.draw(|f| view.draw(f, aggs, &status)).unwrap();
        terminal
            .backend()
            .buffer()
            .content()
            .chunks(150)
            .map(|row| {
                row.iter()
                    .map(ratatui::buffer::Cell::symbol)
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    #[test]
    fn draws_sites_and_the_top_finding() {
        let mut aggs = Aggregates::default();
        aggs.traced(Arc::new(labels(42, None)));
        let at = Arc::new(CallSite::new("main.fill".into(), "/src/main.go".into(), 10));
        let event = |kind, count| TraceEvent {
            pid: 42,
            caller: Some(Arc::clone(&at)),
            map_type: Some("map[int]int".into()),
            ..TraceEvent::sample(kind, 0xc000_2000, Some(count))
        };
        aggs.record(&mut TraceEvent {
            detail: Some(Detail::Hint(0)),
            ..event(EventKind::Make, 0)
        });
        // Grown five times, 0.25 ms in all, to 1000 elements from no hint: presize.
        for _ in 0..5 {
            aggs.record(&mut TraceEvent {
                detail: Some(Detail::Double),
                duration_ns: Some(50_000),
                ..event(EventKind::Grow, 500)
            });
        }
        aggs.record(&mut event(EventKind::Assign, 1000));
        let answers = answers::answer(&aggs, 0, 0, 0);
        let mut controls = Controls::new();
        controls.sites = true;
        let header = Header {
            probes: 12,
            madvise: None,
            all: false,
        };
        let view = View {
            header: &header,
            controls: &controls,
            samples: &VecDeque::new(),
            answers: &answers,
            color: false,
        };
        let screen = screen(&view, &aggs);
        for want in [
            "finding presize (pid 42): 1 map grew 5 times",
            "sites 1-1 of 1, by grow time",
            "main.fill main.go:10",
            "map[int]int",
        ] {
            assert!(screen.contains(want), "no `{want}` in:\n{screen}");
        }
        assert!(!screen.contains("0xc0002000"), "{screen}");
    }
}
