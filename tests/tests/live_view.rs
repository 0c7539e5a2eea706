//! The live view, driven like a person would: the real map-trace binary in a tmux terminal
//! attached to the running demo program, keys sent with `send-keys`, the screen read with
//! `capture-pane`. Also: `NO_COLOR` removes colours, and `--no-tui` prints only the plain
//! summary even on a terminal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{GO_SWISS, build_go, map_trace_bin, proc_state};
use map_trace::tracer::MadvisePath;

const WAIT: Duration = Duration::from_mins(1);

/// The demo program, killed when the test ends.
struct Demo(Child);

impl Demo {
    fn start() -> Self {
        let bin = build_go("demo", GO_SWISS);
        Self(
            Command::new(bin)
                .arg("600")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tmux server of its own (never the user's), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `shell` in a new `width`×`height` terminal, with `env` set.
    fn start(name: &str, width: u16, height: u16, env: &[(&str, &str)], shell: &str) -> Self {
        let tmux = Self {
            socket: format!("map-trace-test-{name}-{}", std::process::id()),
        };
        let mut cmd = tmux.command();
        cmd.args(["new-session", "-d", "-s", "t", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string());
        for (k, v) in env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        let out = cmd
            .arg(shell)
            .output()
            .expect("tmux (cargo xtask setup installs it)");
        assert!(out.status.success(), "{out:?}");
        tmux
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.args(["-L", &self.socket, "-f", "/dev/null"]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command().args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        out
    }

    /// The screen as text; with `escapes`, with its colour and attribute sequences.
    fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "t"];
        if escapes {
            args.push("-e");
        }
        String::from_utf8(self.run(&args).stdout).unwrap()
    }

    /// Everything the terminal showed, scrolled-off lines included, wrapped lines joined.
    fn history(&self) -> String {
        String::from_utf8(
            self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "t"])
                .stdout,
        )
        .unwrap()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend(keys);
        self.run(&args);
    }

    /// Waits until the screen satisfies `ok`; the screen then.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen(false);
            if ok(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < WAIT,
                "screen never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// `map-trace ARGS; echo exited $?; sleep`: the pane stays for the summary to be read.
fn shell(args: &str) -> String {
    format!(
        "{} {args}; echo map-trace exited $?; sleep 600",
        map_trace_bin().display()
    )
}

/// The number after `label ` on the screen.
fn number_after(screen: &str, label: &str) -> u64 {
    let at = screen
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in:\n{screen}"));
    screen[at + label.len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in:\n{screen}"))
}

/// The map table's rows: lines whose second column (inside the border, after the pid) is
/// a map address.
fn table_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| {
            let mut words = l.trim_start_matches('│').split_whitespace();
            let pid = words.next().is_some_and(|w| w.parse::<u32>().is_ok());
            pid && words.next().is_some_and(|w| w.starts_with("0x"))
        })
        .collect()
}

/// `t` shows the sites: the lines that made the demo's maps, and back.
fn shows_the_sites_and_back(tmux: &Tmux) {
    tmux.keys(&["t"]);
    let sites = tmux.wait_for("the sites table", |s| s.contains(" sites 1-"));
    assert!(
        sites
            .lines()
            .any(|r| r.contains("map[string]*main.Session") && r.contains("main.main main.go:")),
        "{sites}"
    );
    assert!(
        sites.contains("finding ") || sites.contains("findings: none so far"),
        "{sites}"
    );
    tmux.keys(&["t"]);
    tmux.wait_for("the maps table again", |s| {
        s.contains("sorted by") && !s.contains(" sites 1-")
    });
}

#[test]
fn live_view_updates_sorts_filters_resizes_and_quits() {
    let demo = Demo::start();
    let pid = demo.pid();
    let tmux = Tmux::start("live", 160, 45, &[], &shell(&format!("--pid {pid}")));
    let screen = tmux.wait_for("the demo's maps", |s| {
        s.contains("map[string]*main.Session") && s.contains("map[int64]uint64")
    });

    // The header.
    let madvise = MadvisePath::choose(Path::new("/sys"), None).unwrap().name();
    for want in [
        format!("pid {pid}  demo-go{GO_SWISS}  go{GO_SWISS}  swiss maps"),
        format!("madvise via {madvise}"),
        "events/s".to_owned(),
        "lost 0".to_owned(),
        "sorted by activity".to_owned(),
        "assign/s".to_owned(),
        "RSS".to_owned(),
        "madvise given back".to_owned(),
        "q quit".to_owned(),
    ] {
        assert!(screen.contains(&want), "no `{want}` in:\n{screen}");
    }
    let probes: u32 = screen
        .split(" probes")
        .next()
        .and_then(|head| head.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no probe count in:\n{screen}"));
    assert!(probes > 10, "{screen}");
    // The demo's three maps, each with its type and a call site in main.
    let rows = table_rows(&screen);
    for ty in [
        "map[string]*main.Session",
        "map[int64]uint64",
        "map[int32]int",
    ] {
        let row = rows
            .iter()
            .find(|r| r.contains(ty))
            .unwrap_or_else(|| panic!("no row of {ty} in:\n{screen}"));
        assert!(row.contains("main.main main.go:"), "{row}");
    }

    // It updates: the event count grows from one redraw to a later one.
    let before = number_after(&screen, "  events ");
    let later = tmux.wait_for("more events", |s| number_after(s, "  events ") > before);
    assert!(number_after(&later, "events/s ") > 0, "{later}");

    // `s` cycles the sort.
    tmux.keys(&["s"]);
    tmux.wait_for("the grows sort", |s| s.contains("sorted by grows"));
    tmux.keys(&["s"]);
    tmux.wait_for("the worst-grow sort", |s| {
        s.contains("sorted by worst grow")
    });

    // `/` filters by type.
    tmux.keys(&["/", "int64", "Enter"]);
    let filtered = tmux.wait_for("the filter applied", |s| s.contains("filter [int64]"));
    let rows = table_rows(&filtered);
    assert!(!rows.is_empty(), "{filtered}");
    assert!(
        rows.iter().all(|r| r.contains("map[int64]")),
        "rows of other types under the filter:\n{filtered}"
    );
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared", |s| {
        !s.contains("filter [") && s.contains("map[string]*main.Session")
    });

    shows_the_sites_and_back(&tmux);

    // A smaller terminal: redrawn to fit, nothing wider than the screen.
    tmux.run(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    // (tmux cuts the old lines to the new width at once: the redraw is there once the
    // footer is back on the last row.)
    let small = tmux.wait_for("a redraw at 100 columns", |s| {
        s.lines()
            .any(|l| l.starts_with("┌ map-trace ─") && l.chars().count() == 100)
            && s.lines().last().is_some_and(|l| l.contains("q quit"))
    });
    assert!(small.lines().all(|l| l.chars().count() <= 100), "{small}");

    // `q` ends the run like SIGINT: the terminal comes back with the plain summary.
    tmux.keys(&["q"]);
    tmux.wait_for("map-trace's exit", |s| s.contains("map-trace exited"));
    let end = tmux.history();
    assert!(end.contains("map-trace exited 0"), "{end}");
    assert!(
        end.contains(&format!("map-trace: pid {pid} (go{GO_SWISS}, swiss maps)")),
        "{end}"
    );
    assert!(end.contains("timed calls:"), "{end}");
    assert!(
        !end.contains("sorted by"),
        "the live view is still on screen:\n{end}"
    );
    // The target runs on, untouched.
    assert!(
        matches!(proc_state(pid), 'R' | 'S'),
        "demo is {}",
        proc_state(pid)
    );
}

/// Foreground/background colour sequences (SGR 30–37, 38, 40–47, 48, 90–97, 100–107).
fn has_colour(escaped: &str) -> bool {
    escaped.split("\x1b[").skip(1).any(|seq| {
        let params = seq.split('m').next().unwrap_or("");
        params.split(';').any(|p| {
            p.parse::<u32>()
                .is_ok_and(|n| matches!(n, 30..=38 | 40..=48 | 90..=97 | 100..=107))
        })
    })
}

#[test]
fn no_color_turns_colours_off() {
    let demo = Demo::start();
    let pid = demo.pid();
    let args = format!("--pid {pid} --duration 30");
    let coloured = Tmux::start("colour", 160, 45, &[], &shell(&args));
    let plain = Tmux::start("nocolour", 160, 45, &[("NO_COLOR", "1")], &shell(&args));
    for t in [&coloured, &plain] {
        t.wait_for("the live view", |s| s.contains("sorted by activity"));
    }
    assert!(
        has_colour(&coloured.screen(true)),
        "no colours without NO_COLOR"
    );
    let escaped = plain.screen(true);
    assert!(
        !has_colour(&escaped),
        "colours despite NO_COLOR:\n{escaped:?}"
    );
    coloured.keys(&["q"]);
    plain.keys(&["q"]);
    for t in [&coloured, &plain] {
        t.wait_for("map-trace's exit", |s| s.contains("map-trace exited 0"));
    }
}

#[test]
fn no_tui_prints_only_the_summary() {
    let demo = Demo::start();
    let pid = demo.pid();
    let tmux = Tmux::start(
        "notui",
        160,
        45,
        &[],
        &shell(&format!("--pid {pid} --duration 2 --no-tui")),
    );
    let end = tmux.wait_for("map-trace's exit", |s| s.contains("map-trace exited"));
    assert!(end.contains("map-trace exited 0"), "{end}");
    assert!(end.contains("attached "), "{end}");
    assert!(end.contains(&format!("map-trace: pid {pid}")), "{end}");
    assert!(!end.contains("sorted by"), "{end}");
    assert!(
        !has_colour(&tmux.screen(true)),
        "escape codes with --no-tui"
    );
}

/// The terminal goes away (an SSH session dropped, a closed window): the kernel hangs up
/// map-trace, which stops like on any other stop request: the CSV and the Perfetto trace
/// are whole, and it is gone within a second, the demo still running.
#[test]
fn a_hang_up_is_a_stop() {
    let demo = Demo::start();
    let pid = demo.pid();
    let dir = tempfile::tempdir().unwrap();
    let (csv, trace) = (dir.path().join("hup.csv"), dir.path().join("hup.json"));
    let tmux = Tmux::start(
        "hup",
        160,
        45,
        &[],
        &format!(
            "exec {} --pid {pid} --csv {} --perfetto {}",
            map_trace_bin().display(),
            csv.display(),
            trace.display()
        ),
    );
    tmux.wait_for("the live view", |s| {
        number_after_opt(s, "  events ").is_some_and(|n| n > 0)
    });
    let tracer = map_trace_pid(&csv);
    let hung_up = Instant::now();
    // The pane's terminal closes: its session leader, map-trace, gets SIGHUP.
    tmux.run(&["kill-server"]);
    // Exited: gone, or a zombie until tmux's dying server or init reaps it.
    let running = || {
        std::fs::read_to_string(format!("/proc/{tracer}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(')')?.1.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X'))
    };
    while running() {
        assert!(
            hung_up.elapsed() < WAIT,
            "map-trace still runs after the hang-up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = hung_up.elapsed();
    assert!(
        took <= integration_tests::time_scale() * Duration::from_secs(1),
        "gone only {took:?} after the hang-up"
    );
    let rows = integration_tests::read_csv(&csv);
    assert!(!rows.is_empty(), "no events before the hang-up");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.ends_with('\n'), "the CSV was cut mid-row");
    integration_tests::assert_perfetto_whole(&trace, &rows);
    assert!(matches!(proc_state(pid), 'S' | 'R'), "target harmed");
}

/// The number after `label ` on the screen, if it is there yet.
fn number_after_opt(screen: &str, label: &str) -> Option<u64> {
    let at = screen.find(label)?;
    screen[at + label.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The pid of the map-trace process writing `csv`.
fn map_trace_pid(csv: &Path) -> u32 {
    // By its command line's start: tmux's own processes name the CSV in theirs too.
    let pattern = format!("^{} .*{}", map_trace_bin().display(), csv.display());
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(pattern)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(
        pids.len(),
        1,
        "map-trace processes writing {}: {text}",
        csv.display()
    );
    pids[0]
}
