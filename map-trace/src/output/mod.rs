//! Where events go: every per-event export implements [`Exporter`]; the end-of-run summary
//! is rendered from the aggregate.

pub mod csv;
pub mod summary;

use crate::events::TraceEvent;

/// A per-event output.
pub trait Exporter {
    fn event(&mut self, event: &TraceEvent) -> anyhow::Result<()>;
    /// Flushes everything written; called once at the end of the run.
    fn finish(&mut self) -> anyhow::Result<()>;
}
