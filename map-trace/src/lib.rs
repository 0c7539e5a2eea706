//! map-trace: an eBPF tracer for the Go runtime's maps.
//!
//! Data flows one way: the target's binary ([`target`]) and the Go runtime knowledge for its
//! version ([`goruntime`]) give a probe [`plan`]; [`probes`] attaches it; the ring buffer's
//! records become [`events`]; [`aggregate`] folds them per map; [`answers`] turns the
//! aggregates into sites and findings; [`output`] writes them out.
//! [`session`] runs that pipeline for one target.

/// A line on standard error that cannot fail the run: after SIGHUP the terminal may be
/// gone, and no note is worth the outputs still to be flushed.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use note;

pub mod aggregate;
pub mod answers;
pub mod binary;
pub mod bpf_syscall;
pub mod check;
pub mod cli;
pub mod compare;
pub mod discovery;
#[cfg(test)]
mod ebpf_stack;
pub mod events;
pub mod goruntime;
pub mod held;
pub mod kernel;
pub mod model;
pub mod output;
pub mod plan;
pub mod privileges;
pub mod process;
pub mod resolve;
pub mod session;
pub mod switch;
pub mod targets;
pub mod tracer;
pub mod uprobe_multi;
pub mod verifier;
