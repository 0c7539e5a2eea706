//! map-trace's eBPF side: three uprobe programs shared by every probed Go runtime function.
//!
//! - `map_op` (assign, delete, clear) emits an event at the function's entry.
//! - `call_entry` and `call_return` time a call (grow, evacuate): the entry probe remembers
//!   the call under its goroutine (the `g` pointer in its register (see [`regs`]), never the stack pointer: Go moves
//!   stacks), and a probe on every RET instruction emits the event with the duration.
//!
//! Which function a hit belongs to, and which registers hold its map, key and detail, comes
//! from the attach cookie. The probes of one executable serve every process running it:
//! a hit counts only in a process with an entry in `PROCS`, which also holds the offsets
//! into Go runtime structures that user space found for its Go version.
//!
//! Three scheduler tracepoints follow processes: a fork of a followed process makes its
//! child followed (`FOLLOW`), and an exec of a followed one (or any, with `--all`) is
//! reported on its own ring buffer, stopping the process first with `-- CMD`, so that user
//! space attaches it before its first instruction.
#![no_std]
#![no_main]
#![allow(
    clippy::inline_always,
    reason = "helpers are inlined into the programs the verifier checks"
)]

mod regs;

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{self, bpf_get_attach_cookie, bpf_send_signal},
    },
    macros::{kprobe, kretprobe, map, tracepoint, uprobe},
    maps::{
        Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, ring_buf::RingBufEntry,
    },
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use map_trace_common::{
    CALLS_ORPHANS, CallsKey, Config, DURATION_BUCKETS, Event, EventKind, FILTER_KEY, FILTER_MAP,
    FLAG_DETAIL, FLAG_GOID, FLAG_HEADER, FLAG_KEY, FLAG_STACK, FLAG_TABLE, FrameKey, HEADER_BYTES,
    HELD, HOLD_FAILED, KEY_MAX, KeyKind, KeyedEvent, LOST_EVENTS, LOST_EXECS, LOST_FOLLOWS,
    LOST_SLOTS, LOST_TOTALS, MAX_FOLLOWED, MAX_PROCESSES, MapTotals, ProbeCookie, ProcInfo,
    ProcessRecord, READ_FAILURE_SLOTS, ReadFailure, Reg, STACK_DEPTH, SWITCH_TRACING, TABLE_BYTES,
    TotalsKey, USER_FRAMES_MAX, duration_bucket, key_hash,
};
use regs::Regs;

/// Written by user space before load (read-only global).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    show_keys: 0,
    watch_all: 0,
    hold: 0,
    fork_child_pid_offset: 0,
    follow_forks: 0,
    pad: 0,
    filters: 0,
    key_hash: 0,
    map: 0,
    summary_only: 0,
    wakeup_records: 0,
};

/// The traced processes, by tgid: what the programs need to know of each.
#[map]
static PROCS: HashMap<u32, ProcInfo> = HashMap::with_max_entries(MAX_PROCESSES, 0);

/// Followed tasks (descendants of `-- CMD` or `--pid`), by pid: their forks are followed
/// too, their execs reported.
#[map]
static FOLLOW: HashMap<u32, u8> = HashMap::with_max_entries(MAX_FOLLOWED, 0);

/// Execs user space should look at ([`ProcessRecord`]).
#[map]
static PROCESSES: RingBuf = RingBuf::with_byte_size(256 << 10, 0);

/// Default size; user space may resize before load.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Events that found the ring buffer full ([`LOST_EVENTS`]) and `--summary-only` calls that
/// found [`TOTALS`] full ([`LOST_TOTALS`]), per CPU; user space sums and reports them.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// Whether the programs trace: read first by each, so that one write from user space
/// starts or stops all of them at once (see [`SWITCH_TRACING`]).
#[map]
static SWITCH: Array<u32> = Array::with_max_entries(1, 0);

/// Records this CPU submitted since it last woke the reader.
#[map]
static SUBMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Reads of the target's memory that failed, per [`ReadFailure`] kind and CPU.
#[map]
static READ_FAILURES: PerCpuArray<u64> = PerCpuArray::with_max_entries(READ_FAILURE_SLOTS, 0);

/// Return addresses in user code, per probe set, as user space resolved them
/// ([`USER_FRAMES_MAX`]).
#[map]
static USER_FRAMES: HashMap<FrameKey, u8> = HashMap::with_max_entries(USER_FRAMES_MAX, 0);

/// `--summary-only`: calls per map and function, counted here instead of sent.
#[map]
static TOTALS: PerCpuHashMap<TotalsKey, MapTotals> = PerCpuHashMap::with_max_entries(16384, 0);

/// What a new [`TOTALS`] entry starts from (inserted from here, not from the small stack).
static TOTALS_ZERO: MapTotals = MapTotals::ZERO;

/// Timed calls per probe set and function: entries at `2f`, returns at `2f + 1`, orphan
/// returns last.
#[map]
static CALLS: PerCpuHashMap<CallsKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// A timed call in progress, keyed by process, goroutine and function (goroutine
/// addresses repeat across processes).
#[repr(C)]
#[derive(Clone, Copy)]
struct CallKey {
    g: u64,
    function: u32,
    tgid: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    time_ns: u64,
    map: u64,
    map_type: u64,
    detail: u64,
    stack: [u64; STACK_DEPTH],
    table: [u8; TABLE_BYTES],
    flags: u64,
}

/// LRU: a call that never returns (a panic through it) cannot fill the map.
#[map]
static PENDING: LruHashMap<CallKey, Pending> = LruHashMap::with_max_entries(16384, 0);

/// One field of [`CONFIG`]. Field by field, so a program loads (and keeps on its stack) only
/// what it uses; volatile, so the compiler does not fold the zero initialiser. The verifier
/// knows the frozen values and drops the branches they rule out.
macro_rules! config {
    ($field:ident) => {{
        #[allow(unused_unsafe, reason = "also used inside unsafe blocks")]
        // SAFETY: a plain load of an immutable global.
        let value = unsafe { core::ptr::read_volatile(&raw const CONFIG.$field) };
        value
    }};
}

/// The switch is on: checked before anything else, so a stopped run costs a probe hit
/// one array load.
#[inline(always)]
fn tracing() -> bool {
    SWITCH.get(0).is_some_and(|s| *s == SWITCH_TRACING)
}

/// Counts a failed read of the target's memory.
#[inline(always)]
fn failed(kind: ReadFailure) {
    count(&READ_FAILURES, kind as u32);
}

/// The time of a hit, taken before the switch is read: an event that passes the switch
/// happened before any stop, whenever its program is preempted and resumes.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// A traced process's hit while tracing: its pid/tgid, event kind, decoded cookie and the
/// process's facts; `None` when stopped or for other processes, before anything else is
/// done (but the clock, [`now`], which every program reads first).
#[inline(always)]
fn start(ctx: &ProbeContext) -> Option<(u64, u8, ProbeCookie, &'static ProcInfo)> {
    if !tracing() {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let proc = traced(pid_tgid)?;
    // SAFETY: the helper only reads the cookie of the running program.
    let (kind, cookie) = ProbeCookie::decode(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    Some((pid_tgid, kind, cookie, proc))
}

/// [`start`] at an entry probe: also `None` at a stack check's branch that goes to
/// `morestack` (the call starts again once the stack has grown, and counts then).
#[inline(always)]
fn start_entry(ctx: &ProbeContext) -> Option<(u64, u8, ProbeCookie, &'static ProcInfo)> {
    start(ctx).filter(|(_, _, cookie, _)| !(cookie.on_stack_branch && regs::to_morestack(ctx.regs)))
}

/// The facts of the traced process of `pid_tgid`, if it is one.
#[inline(always)]
fn traced(pid_tgid: u64) -> Option<&'static ProcInfo> {
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the entry is read while this program runs (RCU keeps it).
    unsafe { PROCS.get(tgid) }
}

/// Reserved ring-buffer memory is not cleared: a record's writer sets every field of it,
/// each once, in place (no copy of the record on the small stack). What comes from the
/// target's memory is read onto the stack and stored from there: a helper reading straight
/// into the ring buffer's pages (vmalloc memory: hardened usercopy looks up its area, under
/// a global lock, on each read) made `map_op` take 1.7 times as long on 6.18. The plain
/// fields:
struct Head {
    time_ns: u64,
    pid_tgid: u64,
    kind: u8,
    function: u16,
    map: u64,
    key_hash: u64,
    key_len: u16,
    duration_ns: u64,
    detail: u64,
    addr: u64,
    len: u64,
    result: i64,
    map_type: u64,
}

impl Head {
    /// A record of `kind` at `time_ns` with nothing but its thread.
    #[inline(always)]
    const fn new(time_ns: u64, pid_tgid: u64, kind: u8) -> Self {
        Self {
            time_ns,
            pid_tgid,
            kind,
            function: 0,
            map: 0,
            key_hash: 0,
            key_len: 0,
            duration_ns: 0,
            detail: 0,
            addr: 0,
            len: 0,
            result: 0,
            map_type: 0,
        }
    }

    /// Writes the plain fields and `flags` at `rec`.
    ///
    /// # Safety
    /// `rec` is a reserved, writable record.
    #[inline(always)]
    unsafe fn put(&self, rec: *mut Event, flags: u8) {
        // SAFETY: plain integer stores into the caller's record.
        unsafe {
            (*rec).time_ns = self.time_ns;
            (*rec).map = self.map;
            (*rec).key_hash = self.key_hash;
            (*rec).duration_ns = self.duration_ns;
            (*rec).detail = self.detail;
            (*rec).addr = self.addr;
            (*rec).len = self.len;
            (*rec).result = self.result;
            (*rec).map_type = self.map_type;
            #[expect(clippy::cast_possible_truncation, reason = "tgid and tid halves")]
            {
                (*rec).pid = (self.pid_tgid >> 32) as u32;
                (*rec).tid = self.pid_tgid as u32;
            }
            (*rec).function = self.function;
            (*rec).kind = self.kind;
            (*rec).flags = flags;
            (*rec).key_len = self.key_len;
            (*rec).pad = [0; 2];
        }
    }
}

/// Reads the goroutine's id into `rec` (0 if unreadable); its flag if read.
///
/// # Safety
/// `rec` is a reserved, writable record.
#[inline(always)]
unsafe fn put_goid(rec: *mut Event, g: u64, proc: &ProcInfo) -> u8 {
    // SAFETY: reading user memory through the faulting-safe helper.
    let goid = unsafe { bpf_probe_read_user((g + proc.goid_offset) as *const u64) };
    // SAFETY: a store into the caller's record.
    unsafe { (*rec).goid = goid.unwrap_or(0) };
    if goid.is_ok() {
        FLAG_GOID
    } else {
        failed(ReadFailure::Goid);
        0
    }
}

/// Reads the map header into `rec` (zeros if unreadable); its flag if read.
///
/// # Safety
/// `rec` is a reserved, writable record.
#[inline(always)]
unsafe fn put_header(rec: *mut Event, map: u64) -> u8 {
    let header = read_header(map);
    // SAFETY: a store into the caller's record, whose header is 8-aligned.
    unsafe { header_words(&raw mut (*rec).header).write(header.unwrap_or([0; HEADER_WORDS])) };
    if header.is_ok() {
        FLAG_HEADER
    } else {
        failed(ReadFailure::Header);
        0
    }
}

const HEADER_WORDS: usize = HEADER_BYTES / 8;

/// A map header, read as words: as bytes it would be copied byte by byte.
#[inline(always)]
fn read_header(map: u64) -> Result<[u64; HEADER_WORDS], i32> {
    // SAFETY: reading user memory through the faulting-safe helper.
    unsafe { bpf_probe_read_user(map as *const [u64; HEADER_WORDS]) }
}

/// A header field, to be written as words (both records keep it at a multiple of 8).
#[inline(always)]
const fn header_words(header: *mut [u8; HEADER_BYTES]) -> *mut [u64; HEADER_WORDS] {
    header.cast()
}

/// Whether user space knows `ret` as a return address into user code of `proc`'s binary.
#[inline(always)]
fn known_user(ret: u64, proc: &ProcInfo) -> bool {
    let key = FrameKey {
        pc: ret.wrapping_sub(proc.load_bias),
        binary: proc.binary,
        pad: 0,
    };
    // SAFETY: only the presence of the entry is used.
    unsafe { USER_FRAMES.get(key) }.is_some()
}

/// Writes into `stack` the return addresses at a function's entry, before it pushes a
/// frame: its own at the stack pointer, then its callers' along the frame-pointer chain Go
/// keeps on amd64, up to the first one known as user code ([`USER_FRAMES`]: a hot call
/// site costs one read) unless `whole`; 0 past the end. Its flag if the first was read.
/// `whole` (map constructors, called once per map): the frames past the first user one
/// lead to the program's own module, which a site outside it is named by.
///
/// # Safety
/// `stack` is writable (a reserved record's, or a pending call's on the stack).
#[inline(always)]
unsafe fn put_stack(
    stack: *mut [u64; STACK_DEPTH],
    regs: &Regs,
    proc: &ProcInfo,
    whole: bool,
) -> u8 {
    let slots = stack.cast::<u64>();
    let first = regs.return_address();
    // SAFETY: the first slot of the caller's array.
    unsafe { slots.write(first.unwrap_or(0)) };
    let mut frame = match first {
        Ok(ret) if whole || !known_user(ret, proc) => regs.fp,
        _ => 0,
    };
    for i in 1..STACK_DEPTH {
        let mut ret = 0;
        if frame != 0 {
            // SAFETY: as above; a frame is the saved frame pointer, then the return address.
            if let Ok([next, at]) = unsafe { bpf_probe_read_user(frame as *const [u64; 2]) } {
                ret = at;
                frame = if !whole && known_user(at, proc) {
                    0
                } else {
                    next
                };
            } else {
                failed(ReadFailure::Stack);
                frame = 0;
            }
        }
        // SAFETY: `i` is within the array.
        unsafe { slots.add(i).write(ret) };
    }
    if first.is_ok() {
        FLAG_STACK
    } else {
        failed(ReadFailure::Stack);
        0
    }
}

/// Submits a written record, waking the reader only once per batch of this CPU's records:
/// waking it for every record would cost an interrupt and a context switch each. Counted
/// per CPU, not asked of the ring buffer: `bpf_ringbuf_query` reads the position the
/// reader keeps writing on another CPU, a cache miss on every record (~150 ns of
/// `map_op`'s ~650 here).
#[inline(always)]
fn submit<T>(entry: RingBufEntry<T>) {
    let mut flags = BPF_RB_NO_WAKEUP;
    if let Some(n) = SUBMITTED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; nothing else writes it while this program runs here.
        unsafe {
            *n += 1;
            if *n >= config!(wakeup_records) {
                *n = 0;
                flags = BPF_RB_FORCE_WAKEUP;
            }
        }
    }
    entry.submit(u64::from(flags));
}

/// Reserves a record of `T`, counting it lost if the ring buffer is full.
#[inline(always)]
fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(&LOST, LOST_EVENTS);
    }
    entry
}

/// `--summary-only`: counts a call (with its duration, for timed calls) under its map and
/// function, and keeps the header it left.
#[inline(always)]
fn tally(key: &TotalsKey, duration_ns: Option<u64>, map_type: u64) {
    let totals = if let Some(t) = TOTALS.get_ptr_mut(key) {
        t
    } else {
        // Another CPU may create the key at the same moment: then it exists, and is ours to
        // update too.
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "a pointer to the read-only zero value, not a copy on the stack"
        )]
        let _ = TOTALS.insert(key, &TOTALS_ZERO, u64::from(BPF_NOEXIST));
        let Some(t) = TOTALS.get_ptr_mut(key) else {
            count(&LOST, LOST_TOTALS);
            return;
        };
        t
    };
    // SAFETY: this CPU's value of the entry; nothing else writes it while we run here.
    unsafe {
        (*totals).calls += 1;
        if let Some(ns) = duration_ns {
            (*totals).total_ns += ns;
            if ns > (*totals).worst_ns {
                (*totals).worst_ns = ns;
            }
            // The verifier cannot follow the bit tricks clz compiles to: an opaque load and a
            // mask give it the bound.
            let bucket = duration_bucket(ns);
            let bucket = core::ptr::read_volatile(&raw const bucket) & (DURATION_BUCKETS - 1);
            if let Some(slot) = (*totals).histogram.get_mut(bucket) {
                *slot += 1;
            }
        }
        (*totals).map_type = map_type;
        (*totals).last_ns = bpf_ktime_get_ns();
        // Straight into the map value: the header never touches the stack.
        let read = generated::bpf_probe_read_user(
            (&raw mut (*totals).header).cast(),
            #[expect(clippy::cast_possible_truncation, reason = "48 bytes")]
            {
                HEADER_BYTES as u32
            },
            key.map as *const c_void,
        );
        if read != 0 {
            failed(ReadFailure::Header);
        }
    }
}

/// Counts a timed call's entry, return or orphan return in `binary`'s probe set.
#[inline(always)]
fn count_call(binary: u32, slot: u32) {
    let key = CallsKey { binary, slot };
    if let Some(n) = CALLS.get_ptr_mut(key) {
        // SAFETY: this CPU's value; no concurrent writer on this CPU.
        unsafe { *n += 1 };
    } else {
        // A first call on this CPU; another CPU may create the key at the same moment,
        // and then this one's count goes into its own CPU's value of that entry.
        if CALLS.insert(key, 1, u64::from(BPF_NOEXIST)).is_err()
            && let Some(n) = CALLS.get_ptr_mut(key)
        {
            // SAFETY: as above.
            unsafe { *n += 1 };
        }
    }
}

#[inline(always)]
fn count(array: &PerCpuArray<u64>, slot: u32) {
    if let Some(n) = array.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *n += 1 };
    }
}

#[uprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn map_op(ctx: ProbeContext) -> u32 {
    let now = now();
    let Some((pid_tgid, kind, cookie, proc)) = start_entry(&ctx) else {
        return 0;
    };
    let regs = Regs::read(ctx.regs);
    let map = regs.get(cookie.map);
    if !map_wanted(map) {
        return 0;
    }
    let mut bytes = MaybeUninit::<[u8; KEY_MAX]>::uninit();
    // `--summary-only` counts calls, not keys: the key is read only for a key filter.
    let key = if config!(summary_only) == 0 || config!(filters) & FILTER_KEY != 0 {
        read_key(cookie.key, &regs, proc, &mut bytes)
    } else {
        None
    };
    // Filtered here, so an unwanted key never costs ring-buffer space.
    if let Some(key) = &key
        && config!(filters) & FILTER_KEY != 0
        && key.hash != config!(key_hash)
    {
        return 0;
    }
    let map_type = cookie.map_type.map_or(0, |r| regs.get(r));
    if config!(summary_only) != 0 {
        let totals = TotalsKey {
            map,
            function: cookie.function,
            variant: 0,
            tgid: (pid_tgid >> 32) as u32,
        };
        tally(&totals, None, map_type);
        return 0;
    }
    let mut head = Head::new(now, pid_tgid, kind);
    head.function = cookie.function;
    head.map = map;
    head.map_type = map_type;
    let mut flags = 0;
    if let Some(key) = &key {
        head.key_hash = key.hash;
        head.key_len = key.len;
        flags = FLAG_KEY;
    }
    // A record's size must be a constant to the verifier: it follows from the frozen
    // configuration alone (one reserve whose size the compiler picked at run time would be
    // refused), so with --show-keys every map operation's record has room for a key.
    if config!(show_keys) != 0 {
        let Some(mut entry) = reserve::<KeyedEvent>() else {
            return 0;
        };
        let rec = entry.as_mut_ptr();
        // SAFETY: `rec` is the reserved record; its event comes first.
        unsafe {
            put_map_op(&raw mut (*rec).event, &head, flags, &regs, proc);
            if let Some(key) = &key {
                key.put(&raw mut (*rec).key, &bytes);
            }
        }
        submit(entry);
    } else {
        let Some(mut entry) = reserve::<Event>() else {
            return 0;
        };
        // SAFETY: the reserved record.
        unsafe { put_map_op(entry.as_mut_ptr(), &head, flags, &regs, proc) };
        submit(entry);
    }
    0
}

/// A map operation's record: the map header now, the return addresses, the goroutine.
///
/// # Safety
/// `rec` is a reserved, writable record.
#[inline(always)]
unsafe fn put_map_op(rec: *mut Event, head: &Head, flags: u8, regs: &Regs, proc: &ProcInfo) {
    // SAFETY: writes into the caller's record.
    unsafe {
        let flags = flags
            | put_goid(rec, regs.g, proc)
            | put_stack(&raw mut (*rec).stack, regs, proc, false)
            | put_header(rec, head.map);
        (*rec).table = [0; TABLE_BYTES];
        head.put(rec, flags);
    }
}

#[inline(always)]
fn map_wanted(map: u64) -> bool {
    config!(filters) & FILTER_MAP == 0 || config!(map) == map
}

#[uprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn call_entry(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, _, cookie, proc)) = start_entry(&ctx) else {
        return 0;
    };
    let regs = Regs::read(ctx.regs);
    let mut pending = Pending {
        time_ns: 0,
        map: regs.get(cookie.map),
        map_type: cookie.map_type.map_or(0, |r| regs.get(r)),
        detail: 0,
        stack: [0; STACK_DEPTH],
        table: [0; TABLE_BYTES],
        flags: 0,
    };
    // SAFETY: the pending call's own array.
    pending.flags |=
        u64::from(unsafe { put_stack(&raw mut pending.stack, &regs, proc, cookie.map_at_return) });
    if let Some(r) = cookie.detail {
        pending.detail = regs.get(r);
        pending.flags |= u64::from(FLAG_DETAIL);
    }
    if cookie.table_in_result {
        // SAFETY: reading user memory through the faulting-safe helper.
        if let Ok(t) =
            unsafe { bpf_probe_read_user(regs.get(Reg::Arg0) as *const [u8; TABLE_BYTES]) }
        {
            pending.table = t;
            pending.flags |= u64::from(FLAG_TABLE);
        } else {
            failed(ReadFailure::Table);
        }
    }
    let key = CallKey {
        g: regs.g,
        function: u32::from(cookie.function),
        tgid: (pid_tgid >> 32) as u32,
    };
    // SAFETY: plain helper call.
    pending.time_ns = unsafe { bpf_ktime_get_ns() };
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the pending call would be copied to a second place on the stack"
    )]
    let inserted = PENDING.insert(&key, &pending, 0);
    if inserted.is_ok() {
        count_call(proc.binary, 2 * u32::from(cookie.function));
    }
    0
}

#[uprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn call_return(ctx: ProbeContext) -> u32 {
    // First, so the probe's own work is not timed (and see `now`).
    let now = now();
    let Some((pid_tgid, kind, cookie, proc)) = start(&ctx) else {
        return 0;
    };
    let regs = Regs::read(ctx.regs);
    let g = regs.g;
    // A constructor's result is its map.
    let result = regs.get(Reg::Arg0);
    let tgid = (pid_tgid >> 32) as u32;
    let key = CallKey {
        g,
        function: u32::from(cookie.function),
        tgid,
    };
    let Some(pending) = PENDING.get_ptr(key) else {
        // Attached while this call was running: no entry time, so no event.
        count_call(proc.binary, CALLS_ORPHANS);
        return 0;
    };
    // Counted before any filter, so entries still balance returns.
    count_call(proc.binary, 2 * u32::from(cookie.function) + 1);
    // SAFETY: the entry stays in place until it is removed below.
    let (map, entered) = unsafe { ((*pending).map, (*pending).time_ns) };
    let map = if cookie.map_at_return { result } else { map };
    let duration_ns = now.saturating_sub(entered);
    if map_wanted(map) {
        // Made maps are sent even with `--summary-only`: one record per map names its site.
        if config!(summary_only) != 0 && !cookie.map_at_return {
            // SAFETY: reading user memory through the faulting-safe helper.
            let variant = proc.variant_mask != 0
                && unsafe { bpf_probe_read_user((map + proc.variant_offset) as *const u8) }
                    .is_ok_and(|b| u64::from(b) & proc.variant_mask != 0);
            let totals = TotalsKey {
                map,
                function: cookie.function,
                variant: u16::from(variant),
                tgid,
            };
            // SAFETY: the entry is still in place.
            tally(&totals, Some(duration_ns), unsafe { (*pending).map_type });
        } else if let Some(mut entry) = reserve::<Event>() {
            let rec = entry.as_mut_ptr();
            // SAFETY: copies from the pending entry, still in place, into the reserved record.
            unsafe {
                let mut head = Head::new(now, pid_tgid, kind);
                head.function = cookie.function;
                head.map = map;
                head.duration_ns = duration_ns;
                head.detail = (*pending).detail;
                head.map_type = (*pending).map_type;
                (*rec).stack = (*pending).stack;
                (*rec).table = (*pending).table;
                #[expect(clippy::cast_possible_truncation, reason = "only flag bits are stored")]
                let flags = (*pending).flags as u8 | put_goid(rec, g, proc) | put_header(rec, map);
                head.put(rec, flags);
            }
            submit(entry);
        }
    }
    let _ = PENDING.remove(key);
    0
}

/// A GC cycle starts or ends its mark phase: the cycle number is the completed count + 1.
#[uprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn gc_event(ctx: ProbeContext) -> u32 {
    let now = now();
    let Some((pid_tgid, kind, cookie, proc)) = start_entry(&ctx) else {
        return 0;
    };
    let mut head = Head::new(now, pid_tgid, kind);
    head.function = cookie.function;
    let mut flags = 0;
    let cycles = proc.gc_cycles_addr;
    if cycles != 0 {
        // SAFETY: reading user memory through the faulting-safe helper.
        if let Ok(done) = unsafe { bpf_probe_read_user(cycles as *const u32) } {
            head.detail = u64::from(done) + 1;
            flags = FLAG_DETAIL;
        } else {
            failed(ReadFailure::GcCycles);
        }
    }
    let Some(mut entry) = reserve::<Event>() else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    let g = Regs::read(ctx.regs).g;
    // SAFETY: writes into the reserved record.
    unsafe {
        let flags = flags | put_goid(rec, g, proc);
        (*rec).stack = [0; STACK_DEPTH];
        (*rec).header = [0; HEADER_BYTES];
        (*rec).table = [0; TABLE_BYTES];
        head.put(rec, flags);
    }
    submit(entry);
    0
}

/// A madvise(2) call in progress, keyed by thread (a syscall does not change threads).
#[repr(C)]
#[derive(Clone, Copy)]
struct MadviseCall {
    addr: u64,
    len: u64,
    advice: u64,
}

#[map]
static MADVISE: LruHashMap<u64, MadviseCall> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
fn madvise_begin(addr: u64, len: u64, advice: u64) {
    if !tracing() {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if traced(pid_tgid).is_none() {
        return;
    }
    let _ = MADVISE.insert(pid_tgid, MadviseCall { addr, len, advice }, 0);
}

#[inline(always)]
fn madvise_end(result: i64) {
    let now = now();
    if !tracing() {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { MADVISE.get(pid_tgid) }).copied() else {
        return;
    };
    let _ = MADVISE.remove(pid_tgid);
    let Some(mut entry) = reserve::<Event>() else {
        return;
    };
    let rec = entry.as_mut_ptr();
    let mut head = Head::new(now, pid_tgid, EventKind::Madvise as u8);
    head.addr = call.addr;
    head.len = call.len;
    head.detail = call.advice;
    head.result = result;
    // SAFETY: writes into the reserved record.
    unsafe {
        (*rec).goid = 0;
        (*rec).stack = [0; STACK_DEPTH];
        (*rec).header = [0; HEADER_BYTES];
        (*rec).table = [0; TABLE_BYTES];
        head.put(rec, FLAG_DETAIL);
    }
    submit(entry);
}

/// Syscall tracepoint arguments: `start`, `len_in`, `behavior` at 16, 24, 32; `ret` at 16.
const SYSCALL_ARG0: usize = 16;

#[tracepoint]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn madvise_enter(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the stable syscall tracepoint format.
    let args = unsafe {
        (
            ctx.read_at::<u64>(SYSCALL_ARG0),
            ctx.read_at::<u64>(SYSCALL_ARG0 + 8),
            ctx.read_at::<u64>(SYSCALL_ARG0 + 16),
        )
    };
    if let (Ok(addr), Ok(len), Ok(advice)) = args {
        madvise_begin(addr, len, advice);
    }
    0
}

#[tracepoint]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn madvise_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the stable syscall tracepoint format.
    if let Ok(ret) = unsafe { ctx.read_at::<i64>(SYSCALL_ARG0) } {
        madvise_end(ret);
    }
    0
}

/// `do_madvise(mm, start, len_in, behavior)`, where the kernel has kprobes.
#[kprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn madvise_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(addr), Some(len), Some(advice)) =
        (ctx.arg::<u64>(1), ctx.arg::<u64>(2), ctx.arg::<u64>(3))
    {
        madvise_begin(addr, len, advice);
    }
    0
}

#[kretprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn madvise_kretprobe(ctx: RetProbeContext) -> u32 {
    madvise_end(ctx.ret::<i64>());
    0
}

/// The tgid of the running task.
#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// A task was made: the child of a followed process is followed too. The tracepoint names
/// the child's pid only; a new thread's is followed as well, harmlessly, until it exits.
#[tracepoint]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn process_fork(ctx: TracePointContext) -> u32 {
    if config!(follow_forks) == 0 {
        return 0;
    }
    // SAFETY: only the presence of the entry is used.
    if unsafe { FOLLOW.get(current_tgid()) }.is_none() {
        return 0;
    }
    // SAFETY: the offset comes from this kernel's format of the tracepoint.
    let Ok(child) = (unsafe { ctx.read_at::<u32>(config!(fork_child_pid_offset) as usize) }) else {
        return 0;
    };
    if FOLLOW.insert(child, 1, 0).is_err() {
        count(&LOST, LOST_FOLLOWS);
    }
    0
}

/// A process runs a new program: whatever was known of its old one no longer holds. A
/// followed process (or any, with `--all`) is reported, stopped first with `-- CMD` so
/// that it runs nothing before user space has attached its probes.
#[tracepoint]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let now = now();
    let tgid = current_tgid();
    let _ = PROCS.remove(tgid);
    // SAFETY: only the presence of the entry is used.
    let followed = unsafe { FOLLOW.get(tgid) }.is_some();
    if !followed && config!(watch_all) == 0 {
        return 0;
    }
    let mut held = 0;
    if followed && config!(hold) != 0 {
        // Delivered on the way back to user space: the new program's first instruction
        // waits for user space's SIGCONT.
        // SAFETY: plain helper call; it signals the current process.
        held = if unsafe { bpf_send_signal(SIGSTOP) } == 0 {
            HELD
        } else {
            HOLD_FAILED
        };
    }
    let Some(mut entry) = PROCESSES.reserve::<ProcessRecord>(0) else {
        count(&LOST, LOST_EXECS);
        return 0;
    };
    entry.write(ProcessRecord {
        time_ns: now,
        pid: tgid,
        followed: u8::from(followed),
        held,
        pad: [0; 2],
    });
    entry.submit(0);
    0
}

/// A task ended: it is followed no more, and a process whose main thread ends is traced
/// no more (its other threads are ending with it).
#[tracepoint]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    #[expect(clippy::cast_possible_truncation, reason = "the tid half")]
    let tid = pid_tgid as u32;
    let _ = FOLLOW.remove(tid);
    if u64::from(tid) == pid_tgid >> 32 {
        let _ = PROCS.remove(tid);
    }
    0
}

/// `SIGSTOP`, the signal no process can catch or ignore.
const SIGSTOP: u32 = 19;

/// A map operation's key as hashed: a register's value, or bytes read into the caller's
/// buffer.
struct Key {
    hash: u64,
    len: u16,
    /// The key's value for register keys (its first `len` little-endian bytes are the key).
    value: Option<u64>,
}

impl Key {
    /// A register key of `N` bytes.
    #[inline(always)]
    fn value<const N: usize>(bytes: [u8; N], value: u64) -> Self {
        Self {
            hash: key_hash(&bytes),
            len: len_u16(N),
            value: Some(value),
        }
    }

    /// Writes the key's bytes into a keyed record's `key`.
    ///
    /// # Safety
    /// `dst` is a reserved, writable record's key field; `bytes` holds the key read by
    /// [`read_key`].
    #[inline(always)]
    unsafe fn put(&self, dst: *mut [u8; KEY_MAX], bytes: &MaybeUninit<[u8; KEY_MAX]>) {
        match self.value {
            #[expect(clippy::cast_ptr_alignment, reason = "the field is at offset 200")]
            // SAFETY: the field is 8-aligned and longer than 8 bytes.
            Some(v) => unsafe { dst.cast::<u64>().write(v.to_le()) },
            None if self.len > 0 => {
                // Exactly the key's bytes: the rest of the buffer is stale stack.
                // SAFETY: copies `len` bytes the key read initialised, within both buffers.
                let _ = unsafe {
                    generated::bpf_probe_read_kernel(
                        dst.cast(),
                        bounded_len(u64::from(self.len)),
                        bytes.as_ptr().cast(),
                    )
                };
            }
            None => {}
        }
    }
}

#[expect(clippy::cast_possible_truncation, reason = "at most KEY_MAX")]
const fn len_u16(n: usize) -> u16 {
    n as u16
}

/// Hashes the probed call's key (the bytes the contract hashes), reading any bytes it has
/// in the target's memory into `buf`.
#[inline(always)]
fn read_key(
    kind: KeyKind,
    regs: &Regs,
    proc: &ProcInfo,
    buf: &mut MaybeUninit<[u8; KEY_MAX]>,
) -> Option<Key> {
    match kind {
        KeyKind::None => None,
        KeyKind::U32 => {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "the low half of the register holds the 32-bit key"
            )]
            let value = regs.get(Reg::Arg2) as u32;
            Some(Key::value(value.to_le_bytes(), u64::from(value)))
        }
        KeyKind::U64 => {
            let value = regs.get(Reg::Arg2);
            Some(Key::value(value.to_le_bytes(), value))
        }
        KeyKind::Str => read_user_bytes(regs.get(Reg::Arg2), regs.get(Reg::Arg3), buf),
        KeyKind::Mem => {
            // SAFETY: reads of user memory through the faulting-safe helper.
            let key_type = unsafe {
                bpf_probe_read_user((regs.get(Reg::Arg0) + proc.map_type_key_offset) as *const u64)
            };
            // SAFETY: as above.
            let size = key_type.and_then(|key_type| unsafe {
                bpf_probe_read_user((key_type + proc.type_size_offset) as *const u64)
            });
            let Ok(size) = size else {
                failed(ReadFailure::Key);
                return None;
            };
            read_user_bytes(regs.get(Reg::Arg2), size, buf)
        }
    }
}

/// Reads the first `min(len, KEY_MAX)` bytes at `ptr` in the target into `buf` and hashes
/// them.
#[inline(always)]
fn read_user_bytes(ptr: u64, len: u64, buf: &mut MaybeUninit<[u8; KEY_MAX]>) -> Option<Key> {
    if len == 0 {
        return Some(Key {
            hash: key_hash(&[]),
            len: 0,
            value: None,
        });
    }
    let n = bounded_len(len.min(KEY_MAX as u64));
    // SAFETY: the faulting-safe helper writes `n` (at most KEY_MAX) bytes into `buf`.
    if unsafe { generated::bpf_probe_read_user(buf.as_mut_ptr().cast(), n, ptr as *const c_void) }
        != 0
    {
        failed(ReadFailure::Key);
        return None;
    }
    // SAFETY: the helper initialised the first `n` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
    Some(Key {
        hash: key_hash(bytes),
        len: len_u16(n as usize),
        value: None,
    })
}

/// A key length from 1 to [`KEY_MAX`] in a form any verifier can bound. 6.1's refused an
/// earlier `map_op` whose `len > KEY_MAX` held for one load of the length from the stack
/// but not for the next load, passed to the helper: a mask on the value passed holds
/// whatever the compiler does, after an opaque load so that it cannot drop the mask.
#[inline(always)]
fn bounded_len(n: u64) -> u32 {
    // SAFETY: a volatile read of a local.
    let n = unsafe { core::ptr::read_volatile(&raw const n) };
    #[expect(clippy::cast_possible_truncation, reason = "masked to KEY_MAX - 1")]
    let below = (n.wrapping_sub(1) & (KEY_MAX as u64 - 1)) as u32;
    below + 1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
