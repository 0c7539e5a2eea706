//! The eBPF programs' on/off switch: the one value of their `SWITCH` array, read first by
//! every program. A stop request turns it off from the signal handler itself, at the
//! instant the signal arrives, not once the event loop gets round to it (under load, tens
//! of milliseconds later, every one of them traced).

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, anyhow};
use aya::maps::{Map, MapData};
use aya_obj::generated::bpf_attr;
use map_trace_common::{SWITCH_STOPPED, SWITCH_TRACING};
use signal_hook_registry::SigId;

use crate::bpf_syscall::{map_update, zeroed_attr};

/// A prepared update of the switch to one state: the attribute block points at its own key
/// and value, so it lives on the heap and never moves.
struct Update {
    attr: bpf_attr,
    key: u32,
    value: u32,
}

// SAFETY: the attribute block holds only integers (and addresses of the block's own
// fields); nothing in it is written after it is built.
unsafe impl Send for Update {}
// SAFETY: as above; shared reads only.
unsafe impl Sync for Update {}

impl Update {
    fn new(map: &MapData, value: u32) -> Arc<Self> {
        let mut update = Arc::new(Self {
            attr: zeroed_attr(),
            key: 0,
            value,
        });
        // The block is in place: point it at its key and value.
        if let Some(u) = Arc::get_mut(&mut update) {
            let fd = u32::try_from(map.fd().as_fd().as_raw_fd()).unwrap_or(u32::MAX);
            let (key, value) = (&raw const u.key, &raw const u.value);
            // SAFETY: writing plain integers into the union's map-element member.
            let elem = unsafe { &mut u.attr.__bindgen_anon_2 };
            elem.map_fd = fd;
            elem.key = key as u64;
            elem.__bindgen_anon_1.value = value as u64;
        }
        update
    }

    fn apply(&self) -> bool {
        map_update(&self.attr)
    }
}

/// The switch, and the signal handlers that turn it off.
pub struct Switch {
    /// Kept open: the updates point at this map's descriptor.
    _map: MapData,
    on: Arc<Update>,
    off: Arc<Update>,
    /// `CLOCK_MONOTONIC` when the switch was first turned off, in ns; 0 before.
    stopped_at: Arc<AtomicU64>,
    hooks: Vec<SigId>,
}

/// Turns the switch off with `off` and, the first time, notes the instant in `stopped_at`:
/// every event the programs send is stamped before it (they read the clock, then the
/// switch). Async-signal-safe: one bpf(2) call and the vDSO's clock.
fn turn_off(off: &Update, stopped_at: &AtomicU64) -> bool {
    if !off.apply() {
        return false;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) } == 0 {
        let ns = u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec).unwrap_or(0);
        let _ = stopped_at.compare_exchange(0, ns, Ordering::SeqCst, Ordering::SeqCst);
    }
    true
}

impl Switch {
    /// The switch of the programs that share `map` (their `SWITCH` array), still closed.
    pub fn new(map: Map) -> anyhow::Result<Self> {
        let Map::Array(map) = map else {
            return Err(anyhow!("the SWITCH map is not an array"));
        };
        Ok(Self {
            on: Update::new(&map, SWITCH_TRACING),
            off: Update::new(&map, SWITCH_STOPPED),
            stopped_at: Arc::new(AtomicU64::new(0)),
            _map: map,
            hooks: Vec::new(),
        })
    }

    /// From now on every probe reports.
    pub fn on(&self) -> anyhow::Result<()> {
        if self.on.apply() {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error()).context("turning the eBPF programs on")
        }
    }

    /// Once this returns, every probe hit returns at its first instruction; the only
    /// records still to come are those of hits already past it.
    pub fn off(&self) -> anyhow::Result<()> {
        if turn_off(&self.off, &self.stopped_at) {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error()).context("turning the eBPF programs off")
        }
    }

    /// Each of `signals` turns the switch off as it arrives, in the same handler that wakes
    /// the event loop; until the switch is dropped.
    pub fn off_on(&mut self, signals: &[libc::c_int]) -> anyhow::Result<()> {
        for &signal in signals {
            let (off, stopped_at) = (Arc::clone(&self.off), Arc::clone(&self.stopped_at));
            // SAFETY: the action only makes one bpf(2) call with a prepared block: it
            // neither allocates nor locks, so it is async-signal-safe.
            let id = unsafe {
                signal_hook_registry::register(signal, move || {
                    // Nothing can be said from a handler; the event loop's own stop
                    // turns the switch off again, and reports a failure.
                    let _ = turn_off(&off, &stopped_at);
                })
            }
            .context("installing a signal handler")?;
            self.hooks.push(id);
        }
        Ok(())
    }
}

impl Switch {
    /// `CLOCK_MONOTONIC`, in ns, when the programs were first turned off.
    #[must_use]
    pub fn stopped_at(&self) -> Option<u64> {
        Some(self.stopped_at.load(Ordering::SeqCst)).filter(|&ns| ns != 0)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        for id in self.hooks.drain(..) {
            signal_hook_registry::unregister(id);
        }
    }
}
