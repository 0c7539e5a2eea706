//! The types every stage of the flow shares: where Go code called the runtime, how long
//! timed calls took, and who a traced process is. A leaf (beside the version table's
//! flavour), so events, resolving, aggregation and outputs can all name these without
//! depending on one another.

use std::{fmt, sync::Arc};

use crate::goruntime::Storage;

use map_trace_common::{DURATION_BUCKETS, duration_bucket};

use crate::goruntime::Flavour;

/// A line of Go code outside the runtime that called into it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallSite {
    /// The Go function, inlined ones by their own name (`main.(*Cache).Put`).
    pub function: String,
    pub file: String,
    pub line: u32,
    /// `file:line`, made once: every event from here exports it.
    location: String,
}

impl CallSite {
    #[must_use]
    pub fn new(function: String, file: String, line: u32) -> Self {
        let location = format!("{file}:{line}");
        Self {
            function,
            file,
            line,
            location,
        }
    }

    /// `file:line`.
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    /// `file:line` with the file's base name only, for narrow displays.
    #[must_use]
    pub fn short_location(&self) -> String {
        let base = self.file.rsplit('/').next().unwrap_or(&self.file);
        format!("{base}:{}", self.line)
    }
}

impl CallSite {
    /// `function /path/file:line`.
    #[must_use]
    pub fn full(&self) -> String {
        format!("{} {}", self.function, self.location)
    }
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.function, self.short_location())
    }
}

/// Where a map comes from: the line that made it (`make`, a map literal) or, for a map made
/// before tracing began, the first line of Go code seen using it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    /// The innermost frame outside the runtime.
    pub at: Arc<CallSite>,
    /// The nearest frame in the program's own module, when `at` is outside it (the standard
    /// library, a dependency): the line of the program's code that led there.
    pub module_frame: Option<Arc<CallSite>>,
    /// `at` is the first use seen, not the constructor's caller.
    pub first_use: bool,
    /// `func /path/file:line[ ← func /path/file:line][ (first use)]`, made once: the
    /// exports name each event's site by it.
    label: String,
    /// The same with file names only, for people.
    short: String,
}

impl Site {
    #[must_use]
    pub fn new(at: Arc<CallSite>, module_frame: Option<Arc<CallSite>>, first_use: bool) -> Self {
        let module_frame = module_frame.filter(|m| **m != *at);
        let text = |full: bool| {
            let name = |c: &CallSite| {
                if full { c.full() } else { c.to_string() }
            };
            let mut text = name(&at);
            if let Some(m) = &module_frame {
                text = format!("{text} ← {}", name(m));
            }
            if first_use {
                text.push_str(" (first use)");
            }
            text
        };
        let (label, short) = (text(true), text(false));
        Self {
            at,
            module_frame,
            first_use,
            label,
            short,
        }
    }

    /// What the exports name the site by.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short)
    }
}

/// Count, total, worst and log2 histogram of timed calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub count: u64,
    pub total_ns: u64,
    pub worst_ns: u64,
    /// Calls per [`duration_bucket`], the same buckets the kernel counts in.
    pub histogram: [u64; DURATION_BUCKETS],
}

impl Timing {
    pub fn add(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns += ns;
        self.worst_ns = self.worst_ns.max(ns);
        self.histogram[duration_bucket(ns)] += 1;
    }

    pub fn merge(&mut self, other: &Timing) {
        self.count += other.count;
        self.total_ns += other.total_ns;
        self.worst_ns = self.worst_ns.max(other.worst_ns);
        for (sum, n) in self.histogram.iter_mut().zip(other.histogram) {
            *sum += n;
        }
    }
}

/// Who a traced process is, for every output that tells processes apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    /// As the host sees it.
    pub pid: u32,
    /// Where its executable is (or was), as its own mount namespace names it.
    pub exe: String,
    pub go_version: String,
    pub flavour: Flavour,
    /// The container it runs in, where its cgroup path names one.
    pub container: Option<String>,
    /// Uprobes of its executable's probe set.
    pub probes: usize,
    /// How its Go release lays out a map's memory.
    pub storage: Storage,
}
