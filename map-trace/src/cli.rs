//! The command line of ../shared/docs/interface.md.

use std::{collections::BTreeSet, ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use map_trace_common::{EventKind, key_hash};

#[derive(Debug, Parser)]
#[command(
    name = "map-trace",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("MAP_TRACE_REVISION"), ")"),
    about = "Trace what the Go runtime's maps do inside a running process",
    args_conflicts_with_subcommands = true,
    override_usage = "map-trace [OPTIONS] --pid <PID>\n       \
                      map-trace [OPTIONS] -- <CMD> [ARGS...]\n       \
                      map-trace hash (--str <S> | --int <N> | --int32 <N> | --hex <BYTES>)\n       \
                      map-trace compare [OPTIONS] <BASE.json> <NEW.json>\n       \
                      map-trace check [--sysfs DIR]"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the key hash that --key-hash filters on
    Hash(HashArgs),
    /// Compare two --summary-json files: exit status 1 if NEW regressed from BASE
    Compare(CompareArgs),
    /// Report what this host offers and what a trace here would use; exit status 1 if
    /// tracing cannot work, with what to do
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Where sysfs is mounted (another root lets the check read a copy)
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs: PathBuf,
    /// Print the verifier's whole log if it refuses a program
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct HashArgs {
    /// A string key
    #[arg(long = "str")]
    pub string: Option<String>,
    /// An 8-byte integer key (int, int64, uint64, pointers)
    #[arg(long, allow_negative_numbers = true)]
    pub int: Option<i64>,
    /// A 4-byte integer key (int32, uint32)
    #[arg(long, allow_negative_numbers = true)]
    pub int32: Option<i32>,
    /// Raw key bytes in hex (for example 0a0b0c)
    #[arg(long, value_parser = parse_hex_bytes)]
    pub hex: Option<HexBytes>,
}

impl HashArgs {
    #[must_use]
    pub fn hash(&self) -> u64 {
        if let Some(s) = &self.string {
            key_hash(s.as_bytes())
        } else if let Some(n) = self.int {
            key_hash(&n.to_le_bytes())
        } else if let Some(n) = self.int32 {
            key_hash(&n.to_le_bytes())
        } else {
            key_hash(self.hex.as_ref().map_or(&[][..], |h| &h.0))
        }
    }
}

/// `map-trace compare`: each threshold is a relative increase with an absolute floor, so
/// that noise on tiny numbers never fails a CI run.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline summary (--summary-json of the reference run)
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,
    /// The summary to check against it
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,
    /// Allowed increase of a site's grows, in percent (an increase of fewer than 2 grows
    /// never counts)
    #[arg(long, value_name = "PCT", default_value = "10", value_parser = parse_percent)]
    pub grows: f64,
    /// Allowed increase of a site's worst grow time, in percent
    #[arg(long, value_name = "PCT", default_value = "25", value_parser = parse_percent)]
    pub grow_time: f64,
    /// An increase of the worst grow time below this many nanoseconds never counts
    #[arg(long, value_name = "N", default_value = "100000")]
    pub min_grow_ns: u64,
    /// Allowed increase of a site's bytes held at the end, in percent
    #[arg(long, value_name = "PCT", default_value = "10", value_parser = parse_percent)]
    pub bytes: f64,
    /// An increase of bytes below this never counts
    #[arg(long, value_name = "N", default_value = "65536")]
    pub min_bytes: u64,
    /// Also fail on findings (kind and site) that BASE does not have
    #[arg(long)]
    pub fail_on_new_findings: bool,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|p| p.is_finite() && *p >= 0.0)
        .ok_or_else(|| format!("`{s}`: give a percentage of 0 or more (for example 10 or 2.5)"))
}

#[derive(Debug, Args)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
pub struct TraceArgs {
    /// Trace this running Go process (and its descendants that run Go, unless --no-follow)
    #[arg(long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Trace every Go process of the host, running now or started later, in any
    /// container or namespace
    #[arg(long, conflicts_with_all = ["pid", "command"])]
    pub all: bool,
    /// With --all: only processes whose executable path or file name matches this glob
    /// (repeatable)
    #[arg(long, value_name = "GLOB", requires = "all", value_parser = parse_glob)]
    pub exe: Vec<glob::Pattern>,
    /// Trace only the process itself, not its descendants
    #[arg(long, conflicts_with = "all")]
    pub no_follow: bool,
    /// Stop after this many seconds (default: until the target exits, or SIGINT/SIGTERM)
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Write every event as a CSV row (`-` = standard output)
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// Write every event as a JSON object per line (JSON Lines), the CSV's fields
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write a Chrome/Perfetto trace (open it in ui.perfetto.dev): grows and evacuations as
    /// slices per goroutine, madvise and GC as instants, counters for map sizes and memory
    #[arg(long, value_name = "PATH")]
    pub perfetto: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at this address (for example 127.0.0.1:9464)
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<std::net::SocketAddr>,
    /// Also write the end-of-run summary as one JSON document: per process its map sites,
    /// costliest maps and findings
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
    /// Findings, sites and maps the text summary lists per process (--summary-json lists
    /// every site and finding, and at least 100 maps)
    #[arg(long, value_name = "N", default_value = "10")]
    pub top: usize,
    /// No live view, even on a terminal: only the end-of-run summary
    #[arg(long)]
    pub no_tui: bool,
    /// Count map operations and time grows per map in the kernel instead of sending each
    /// event: the cheapest way to watch a busy process. No per-event exports
    #[arg(long, conflicts_with_all = ["csv", "json", "perfetto", "prometheus", "show_keys"])]
    pub summary_only: bool,
    /// Size of the BPF ring buffer that carries events: a power of two of at least 4096
    /// bytes (suffixes K, M, G); a larger one absorbs longer bursts
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,
    /// Comma list of event kinds to trace: assign, delete, clear, grow, evacuate, gc, madvise, rss, make (default: all)
    #[arg(long, value_name = "LIST", value_parser = parse_events)]
    pub events: Option<EventSet>,
    /// Only keyed events (assign, delete) whose key hash is this 64-bit value (16 hex digits,
    /// 0x optional; see `map-trace hash`); filtered in the kernel. Other kinds pass
    #[arg(long, value_name = "HEX", value_parser = parse_key_hash, group = "key_filter")]
    pub key_hash: Option<u64>,
    /// The same as --key-hash, with the hash of this string key
    #[arg(long, value_name = "STR", group = "key_filter")]
    pub key: Option<String>,
    /// The same as --key-hash, with the hash of this 8-byte integer key
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        group = "key_filter"
    )]
    pub key_int: Option<i64>,
    /// Only events of the map whose header is at this address (hex); events of no map pass
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub map: Option<u64>,
    /// Also export each key itself (CSV column `key`: text for string keys, decimal for
    /// integer keys, hex otherwise, at most 128 bytes). Off by default: keys can hold
    /// secrets (tokens, emails, session ids). Files holding keys are created mode 0600
    #[arg(long)]
    pub show_keys: bool,
    /// Seconds between RSS samples (also taken at attach and at the end)
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_duration)]
    pub rss_interval: Duration,
    /// How madvise(2) calls are seen: `kprobe` (the kernel's `do_madvise`) or `tracepoint`
    /// (the syscall tracepoints); by default kprobes where the kernel has them
    #[arg(long, value_name = "PATH", value_enum)]
    pub madvise_via: Option<MadviseVia>,
    /// How the uprobes are linked: `multi` (one multi-uprobe link per program, Linux 6.10+:
    /// attached and removed at once) or `single` (a link per probe); by default multi where
    /// the kernel has it
    #[arg(long, value_name = "KIND", value_enum)]
    pub uprobe_links: Option<UprobeLinks>,
    /// Say more: which functions were probed where, which are missing from the binary
    #[arg(short, long)]
    pub verbose: bool,
    /// Start CMD stopped at its exec, attach, then let it run (its first map operation is
    /// traced); so too each descendant that runs Go, unless --no-follow
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// The madvise probes asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MadviseVia {
    Kprobe,
    Tracepoint,
}

/// The uprobe link kind asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UprobeLinks {
    Multi,
    Single,
}

/// The event kinds a run traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSet(BTreeSet<EventKind>);

impl EventSet {
    #[must_use]
    pub fn all() -> Self {
        Self(EventKind::ALL.into_iter().collect())
    }

    #[must_use]
    pub fn contains(&self, kind: EventKind) -> bool {
        self.0.contains(&kind)
    }
}

/// What to trace.
#[derive(Debug)]
pub enum Target {
    Pid(u32),
    Command(Vec<OsString>),
    /// Every Go process of the host whose executable matches one of the globs (any, if
    /// none).
    All(Vec<glob::Pattern>),
}

/// Validated tracing options.
#[derive(Debug)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
pub struct TraceOptions {
    pub target: Target,
    pub duration: Option<Duration>,
    pub csv: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub perfetto: Option<PathBuf>,
    pub prometheus: Option<std::net::SocketAddr>,
    pub summary_json: Option<PathBuf>,
    pub top: usize,
    pub no_tui: bool,
    pub summary_only: bool,
    pub ring_buffer_size: u32,
    pub events: EventSet,
    /// Keyed events must have this key hash.
    pub key_hash: Option<u64>,
    /// Map events must be of this map.
    pub map: Option<u64>,
    /// Export the keys themselves.
    pub show_keys: bool,
    pub rss_interval: Duration,
    pub madvise_via: Option<MadviseVia>,
    pub uprobe_links: Option<UprobeLinks>,
    /// Descendants are traced too.
    pub follow: bool,
    pub verbose: bool,
}

impl TraceArgs {
    /// A usage error (exit status 2) when there is nothing to trace.
    pub fn into_options(self) -> Result<TraceOptions, clap::Error> {
        let target = match (self.pid, self.command.is_empty(), self.all) {
            (Some(pid), true, false) => Target::Pid(pid),
            (None, false, false) => Target::Command(self.command),
            (None, true, true) => Target::All(self.exe),
            (_, _, true) => {
                return Err(clap::Error::raw(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--all traces every Go process: it does not go with --pid or -- CMD\n",
                ));
            }
            _ => {
                return Err(clap::Error::raw(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "nothing to trace: give --pid PID, -- CMD [ARGS...] or --all (see map-trace --help)\n",
                ));
            }
        };
        Ok(TraceOptions {
            target,
            duration: self.duration,
            csv: self.csv,
            json: self.json,
            perfetto: self.perfetto,
            prometheus: self.prometheus,
            summary_json: self.summary_json,
            top: self.top,
            no_tui: self.no_tui,
            summary_only: self.summary_only,
            ring_buffer_size: self.ring_buffer_size,
            events: self.events.unwrap_or_else(EventSet::all),
            key_hash: self
                .key_hash
                .or_else(|| self.key.map(|k| key_hash(k.as_bytes())))
                .or_else(|| self.key_int.map(|n| key_hash(&n.to_le_bytes()))),
            map: self.map,
            show_keys: self.show_keys,
            rss_interval: self.rss_interval,
            madvise_via: self.madvise_via,
            uprobe_links: self.uprobe_links,
            follow: !self.no_follow,
            verbose: self.verbose,
        })
    }
}

fn parse_glob(s: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(s).map_err(|e| format!("`{s}` is not a glob: {e}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("`{s}`: give a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_key_hash(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.len() != 16 {
        return Err(format!(
            "`{s}`: give the 16 hex digits `map-trace hash` prints"
        ));
    }
    u64::from_str_radix(digits, 16).map_err(|_| format!("`{s}` is not hex"))
}

/// A ring-buffer size: the kernel wants a power of two and a whole number of pages.
fn parse_ring_size(s: &str) -> Result<u32, String> {
    // Not trimmed: a size with spaces in it is a mistake to point out, not to guess at.
    let (digits, unit) = match s.char_indices().last() {
        Some((at, 'K' | 'k')) => (&s[..at], 1 << 10),
        Some((at, 'M' | 'm')) => (&s[..at], 1 << 20),
        Some((at, 'G' | 'g')) => (&s[..at], 1 << 30),
        _ => (s, 1),
    };
    let bad = || format!("`{s}`: give a power of two from 4096 to 1G (for example 64K or 16M)");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(unit)
        .filter(|n| n.is_power_of_two() && (4096..=1 << 30).contains(n))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(bad)
}

fn parse_address(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(digits, 16)
        .ok()
        .filter(|a| *a != 0)
        .ok_or_else(|| {
            format!("`{s}` is not a map address: give it in hex, as the CSV's map column shows it")
        })
}

fn parse_events(s: &str) -> Result<EventSet, String> {
    let mut set = BTreeSet::new();
    for name in s.split(',').map(str::trim) {
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown event kind `{name}`; known: {}", known.join(", "))
            })?;
        set.insert(kind);
    }
    Ok(EventSet(set))
}

/// Key bytes given in hex (a newtype, so clap takes one value, not a list of bytes).
#[derive(Clone, Debug)]
pub struct HexBytes(pub Vec<u8>);

fn parse_hex_bytes(s: &str) -> Result<HexBytes, String> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return Err("give an even number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("`{s}` is not hex"))
        })
        .collect::<Result<_, _>>()
        .map(HexBytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_buffer_sizes() {
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("64K"), Ok(64 << 10));
        assert_eq!(parse_ring_size("16M"), Ok(16 << 20));
        assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
        for bad in ["0", "1000", "2048", "3M", "2G", "x", "", "-4096"] {
            assert!(parse_ring_size(bad).is_err(), "{bad}");
        }
        // Unicode whitespace anywhere (it once made the parser slice inside a character).
        for bad in [
            "\u{2003}16M",
            "16M\u{a0}",
            "1\u{2009}6M",
            "\u{3000}",
            " 16M",
            "16 M",
        ] {
            assert!(parse_ring_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn odd_ring_buffer_sizes_are_usage_errors() {
        for size in ["\u{2003}16M", "16M\u{205f}"] {
            let args = ["map-trace", "--ring-buffer-size", size, "--pid", "1"];
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{size:?}");
        }
    }

    fn hash_of(args: &[&str]) -> u64 {
        let cli = Cli::try_parse_from(args).unwrap();
        match cli.command {
            Some(Command::Hash(h)) => h.hash(),
            _ => panic!("not a hash command"),
        }
    }

    #[test]
    fn hash_subcommand_follows_the_contract() {
        assert_eq!(
            hash_of(&["map-trace", "hash", "--str", "abc"]),
            0xe71f_a219_0541_574b
        );
        assert_eq!(
            hash_of(&["map-trace", "hash", "--hex", "616263"]),
            0xe71f_a219_0541_574b
        );
        assert_eq!(
            hash_of(&["map-trace", "hash", "--int", "1"]),
            key_hash(&[1, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            hash_of(&["map-trace", "hash", "--int32", "-1"]),
            key_hash(&[0xff; 4])
        );
        assert!(Cli::try_parse_from(["map-trace", "hash", "--hex", "abc"]).is_err());
        assert!(Cli::try_parse_from(["map-trace", "hash"]).is_err());
    }

    #[test]
    fn tracing_arguments() {
        let cli = Cli::try_parse_from(["map-trace", "--csv", "-", "--", "prog", "--x"]).unwrap();
        let opts = cli.trace.into_options().unwrap();
        assert!(matches!(opts.target, Target::Command(ref c) if c.len() == 2));
        assert_eq!(opts.events, EventSet::all());

        let cli =
            Cli::try_parse_from(["map-trace", "--pid", "7", "--events", "assign,clear"]).unwrap();
        let opts = cli.trace.into_options().unwrap();
        assert!(matches!(opts.target, Target::Pid(7)));
        assert!(opts.events.contains(EventKind::Clear));
        assert!(!opts.events.contains(EventKind::Delete));

        assert!(Cli::try_parse_from(["map-trace", "--pid", "7", "--events", "nope"]).is_err());
        let opts = |args: &[&str]| {
            Cli::try_parse_from(args)
                .unwrap()
                .trace
                .into_options()
                .unwrap()
        };
        let o = opts(&[
            "map-trace",
            "--pid",
            "7",
            "--key",
            "abc",
            "--map",
            "0xc000012000",
        ]);
        assert_eq!(
            (o.key_hash, o.map),
            (Some(0xe71f_a219_0541_574b), Some(0x00c0_0001_2000))
        );
        let o = opts(&["map-trace", "--pid", "7", "--key-hash", "e71fa2190541574b"]);
        assert_eq!(o.key_hash, Some(0xe71f_a219_0541_574b));
        let o = opts(&["map-trace", "--pid", "7", "--key-int", "-3"]);
        assert_eq!(o.key_hash, Some(key_hash(&(-3_i64).to_le_bytes())));
        for bad in [
            &["--key-hash", "123"][..],
            &["--key-hash", "zz1fa2190541574b"],
            &["--map", "xyz"],
            &["--map", "0"],
            &["--key", "a", "--key-int", "1"],
        ] {
            let mut args = vec!["map-trace", "--pid", "7"];
            args.extend_from_slice(bad);
            assert!(Cli::try_parse_from(&args).is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["map-trace", "--pid", "7", "--duration", "-1"]).is_err());
        assert!(Cli::try_parse_from(["map-trace", "--pid", "7", "--", "x"]).is_err());
        let none = Cli::try_parse_from(["map-trace"]).unwrap();
        assert!(none.trace.into_options().is_err());
    }
}
