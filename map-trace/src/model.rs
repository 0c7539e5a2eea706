//! The types every stage of the flow shares: where Go code called the runtime, how long
//! timed calls took, and who a traced process is. A leaf (beside the version table's
//! flavour), so events, resolving, aggregation and outputs can all name these without
//! depending on one another.

use std::fmt;

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

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.function, self.short_location())
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
}
