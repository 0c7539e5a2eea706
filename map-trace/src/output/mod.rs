//! Where events go: every per-event export implements [`Exporter`]; the end-of-run summary
//! is rendered from the aggregate.

pub mod csv;
pub mod json;
pub mod live;
pub mod perfetto;
pub mod prometheus;
pub mod record;
pub mod summary;

use std::{fs::File, io, path::Path, sync::Arc, time::Duration};

use map_trace_common::ReadFailures;

use crate::{events::TraceEvent, model::Labels};

/// Bytes as MiB with one decimal, for people.
pub(crate) fn mib(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let mib = bytes as f64 / f64::from(1_u32 << 20);
    format!("{mib:.1} MiB")
}

/// Creates (or truncates) an export file; one that will hold keys is readable by its owner
/// only (0600), whether new or already there.
pub fn create_file(path: &Path, holds_keys: bool) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut options = File::options();
    options.write(true).create(true).truncate(true);
    if holds_keys {
        options.mode(0o600);
    }
    let file = options.open(path)?;
    if holds_keys {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// How the run is going, handed to every exporter about four times a second and once more
/// at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Since the probes were attached.
    pub elapsed: Duration,
    /// Events decoded so far.
    pub events: u64,
    /// Events the ring buffer had no room for, so far (the kernel's count).
    pub lost: u64,
    /// Failed reads of the target's memory so far, per kind (the kernel's count).
    pub read_failures: ReadFailures,
}

/// A per-event output.
pub trait Exporter {
    /// A process is traced from now on: exporters that label by process learn who it is
    /// (its events carry only its pid).
    fn process(&mut self, _labels: &Arc<Labels>) {}
    fn event(&mut self, event: &TraceEvent) -> anyhow::Result<()>;
    /// The run's progress; exporters that publish totals (lost events) take them here.
    fn status(&mut self, _status: &Status) -> anyhow::Result<()> {
        Ok(())
    }
    /// Whether [`Exporter::answers`] should be called: working them out costs a pass over
    /// every map.
    fn wants_answers(&self) -> bool {
        false
    }
    /// The answers so far (sites, bytes held), with each status.
    fn answers(&mut self, _answers: &crate::answers::Summary) -> anyhow::Result<()> {
        Ok(())
    }
    /// Flushes everything written; called once at the end of the run.
    fn finish(&mut self) -> anyhow::Result<()>;
}
