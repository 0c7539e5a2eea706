//! map-trace's eBPF side: three uprobe programs shared by every probed Go runtime function.
//!
//! - `map_op` (assign, delete, clear) emits an event at the function's entry.
//! - `call_entry` and `call_return` time a call (grow, evacuate): the entry probe remembers
//!   the call under its goroutine (the `g` pointer in R14, never the stack pointer: Go moves
//!   stacks), and a probe on every RET instruction emits the event with the duration.
//!
//! Which function a hit belongs to, and which registers hold its map, key and detail, comes
//! from the attach cookie; offsets into Go runtime structures come from `CONFIG`, filled in
//! by user space from its per-version table before the object is loaded.
#![no_std]
#![no_main]
#![allow(
    clippy::inline_always,
    reason = "helpers are inlined into the programs the verifier checks"
)]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, pt_regs},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf,
        generated::{self, bpf_get_attach_cookie},
    },
    macros::{kprobe, kretprobe, map, tracepoint, uprobe},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use map_trace_common::{
    CALLS_ORPHANS, CALLS_SLOTS, Config, DURATION_BUCKETS, Event, EventKind, FILTER_KEY, FILTER_MAP,
    FLAG_DETAIL, FLAG_GOID, FLAG_HEADER, FLAG_KEY, FLAG_STACK, FLAG_TABLE, HEADER_BYTES, KEY_MAX,
    KeyKind, KeyedEvent, LOST_EVENTS, LOST_SLOTS, LOST_TOTALS, MapTotals, ProbeCookie, Reg,
    STACK_DEPTH, TABLE_BYTES, TotalsKey, duration_bucket, key_hash,
};

/// Written by user space before load (read-only global).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    tgid: 0,
    show_keys: 0,
    goid_offset: 0,
    map_type_key_offset: 0,
    type_size_offset: 0,
    gc_cycles_addr: 0,
    filters: 0,
    key_hash: 0,
    map: 0,
    summary_only: 0,
    variant_offset: 0,
    variant_mask: 0,
    wakeup_bytes: 0,
};

/// Default size; user space may resize before load.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Events that found the ring buffer full ([`LOST_EVENTS`]) and `--summary-only` calls that
/// found [`TOTALS`] full ([`LOST_TOTALS`]), per CPU; user space sums and reports them.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);

/// `--summary-only`: calls per map and function, counted here instead of sent.
#[map]
static TOTALS: PerCpuHashMap<TotalsKey, MapTotals> = PerCpuHashMap::with_max_entries(16384, 0);

/// What a new [`TOTALS`] entry starts from (inserted from here, not from the small stack).
static TOTALS_ZERO: MapTotals = MapTotals::ZERO;

/// Timed calls per function: entries at `2f`, returns at `2f + 1`, orphan returns last.
#[map]
static CALLS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CALLS_SLOTS, 0);

/// A timed call in progress, keyed by goroutine and function.
#[repr(C)]
#[derive(Clone, Copy)]
struct CallKey {
    g: u64,
    function: u64,
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

#[inline(always)]
fn config() -> Config {
    // SAFETY: read through a volatile load so the compiler does not fold the zero initialiser.
    unsafe { core::ptr::read_volatile(&raw const CONFIG) }
}

/// This process's hit, with its decoded cookie; `None` for other processes.
#[inline(always)]
fn start(ctx: &ProbeContext, cfg: &Config) -> Option<(Event, ProbeCookie, Regs)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    #[expect(clippy::cast_possible_truncation, reason = "upper half is the tgid")]
    let (tgid, thread) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tgid != cfg.tgid {
        return None;
    }
    // SAFETY: the helper only reads the cookie of the running program.
    let (kind, cookie) = ProbeCookie::decode(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    let regs = Regs::read(ctx.regs);
    let mut event = Event::ZERO;
    event.pid = tgid;
    event.tid = thread;
    event.kind = kind;
    event.function = cookie.function;
    // SAFETY: reading the goroutine through the faulting-safe helper.
    if let Ok(goid) = unsafe { bpf_probe_read_user((regs.r14 + cfg.goid_offset) as *const u64) } {
        event.goid = goid;
        event.flags |= FLAG_GOID;
    }
    Some((event, cookie, regs))
}

/// The argument registers and g, copied out of the context.
#[derive(Clone, Copy)]
struct Regs {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdi: u64,
    r14: u64,
    rsp: u64,
    rbp: u64,
}

impl Regs {
    /// Volatile loads at fixed offsets: the verifier refuses a context access at a computed
    /// offset, which the optimiser would otherwise make of `reg()`'s match.
    #[inline(always)]
    fn read(regs: *const pt_regs) -> Self {
        // SAFETY: `regs` is the probe's context; each field is read once at its own offset.
        unsafe {
            Self {
                rax: core::ptr::read_volatile(&raw const (*regs).rax),
                rbx: core::ptr::read_volatile(&raw const (*regs).rbx),
                rcx: core::ptr::read_volatile(&raw const (*regs).rcx),
                rdi: core::ptr::read_volatile(&raw const (*regs).rdi),
                r14: core::ptr::read_volatile(&raw const (*regs).r14),
                rsp: core::ptr::read_volatile(&raw const (*regs).rsp),
                rbp: core::ptr::read_volatile(&raw const (*regs).rbp),
            }
        }
    }

    #[inline(always)]
    fn get(&self, r: Reg) -> u64 {
        match r {
            Reg::Rax => self.rax,
            Reg::Rbx => self.rbx,
            Reg::Rcx => self.rcx,
            Reg::Rdi => self.rdi,
        }
    }
}

/// Copies the map header into the event, then emits it (with the key's bytes, if given).
#[inline(always)]
fn finish(event: &mut Event, key: Option<&[u8; KEY_MAX]>) {
    // SAFETY: reading user memory through the faulting-safe helper.
    if let Ok(header) = unsafe { bpf_probe_read_user(event.map as *const [u8; HEADER_BYTES]) } {
        event.header = header;
        event.flags |= FLAG_HEADER;
    }
    match key {
        Some(key) => emit_keyed(event, key),
        None => emit(event),
    }
}

/// Stamps the time and writes the event to the ring buffer, counting it lost if full.
#[inline(always)]
fn emit(event: &mut Event) {
    // SAFETY: plain helper call.
    event.time_ns = unsafe { bpf_ktime_get_ns() };
    if EVENTS.output::<Event>(event, wakeup()).is_err() {
        count(&LOST, LOST_EVENTS);
    }
}

/// Waking the reader for every record would cost an interrupt and a context switch each:
/// it is woken once a batch has built up, and otherwise reads on its own short timer.
#[inline(always)]
fn wakeup() -> u64 {
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= config().wakeup_bytes {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
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
        let _ = generated::bpf_probe_read_user(
            (&raw mut (*totals).header).cast(),
            #[expect(clippy::cast_possible_truncation, reason = "48 bytes")]
            {
                HEADER_BYTES as u32
            },
            key.map as *const core::ffi::c_void,
        );
    }
}

/// [`emit`] for a record that also carries the key's bytes.
#[inline(always)]
fn emit_keyed(event: &mut Event, key: &[u8; KEY_MAX]) {
    // SAFETY: plain helper call.
    event.time_ns = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = EVENTS.reserve::<KeyedEvent>(0) else {
        count(&LOST, LOST_EVENTS);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` is the reserved, writable record; both fields are plain bytes.
    unsafe {
        (*record).event = *event;
        (*record).key = *key;
    }
    entry.submit(wakeup());
}

/// The return addresses at a function's entry, before it pushes a frame: its own at the
/// stack pointer, then its callers' along the frame-pointer chain Go keeps on amd64.
#[inline(always)]
fn return_addresses(regs: &Regs) -> Option<[u64; STACK_DEPTH]> {
    let mut stack = [0_u64; STACK_DEPTH];
    // SAFETY: reading user memory through the faulting-safe helper.
    stack[0] = unsafe { bpf_probe_read_user(regs.rsp as *const u64) }.ok()?;
    let mut frame = regs.rbp;
    for slot in stack.iter_mut().skip(1) {
        if frame == 0 {
            break;
        }
        // SAFETY: as above; a frame is the saved frame pointer, then the return address.
        let Ok([next, ret]) = (unsafe { bpf_probe_read_user(frame as *const [u64; 2]) }) else {
            break;
        };
        *slot = ret;
        frame = next;
    }
    Some(stack)
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
    let cfg = config();
    let Some((mut event, cookie, regs)) = start(&ctx, &cfg) else {
        return 0;
    };
    event.map = regs.get(cookie.map);
    if !map_wanted(&cfg, event.map) {
        return 0;
    }
    let mut key = [0_u8; KEY_MAX];
    let mut keyed = false;
    if let Some(len) = read_key(cookie.key, &regs, &cfg, &mut key) {
        let Some(bytes) = key.get(..len) else {
            return 0;
        };
        let hash = key_hash(bytes);
        // Filtered here, so an unwanted key never costs ring-buffer space.
        if cfg.filters & FILTER_KEY != 0 && hash != cfg.key_hash {
            return 0;
        }
        event.key_hash = hash;
        event.flags |= FLAG_KEY;
        #[expect(clippy::cast_possible_truncation, reason = "at most KEY_MAX")]
        {
            event.key_len = len as u16;
        }
        keyed = cfg.show_keys != 0;
    }
    if let Some(r) = cookie.map_type {
        event.map_type = regs.get(r);
    }
    if cfg.summary_only != 0 {
        let key = TotalsKey {
            map: event.map,
            function: cookie.function,
            variant: 0,
            pad: 0,
        };
        tally(&key, None, event.map_type);
        return 0;
    }
    if let Some(stack) = return_addresses(&regs) {
        event.stack = stack;
        event.flags |= FLAG_STACK;
    }
    finish(&mut event, keyed.then_some(&key));
    0
}

#[inline(always)]
fn map_wanted(cfg: &Config, map: u64) -> bool {
    cfg.filters & FILTER_MAP == 0 || cfg.map == map
}

#[uprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn call_entry(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((_, cookie, regs)) = start(&ctx, &cfg) else {
        return 0;
    };
    let mut pending = Pending {
        time_ns: 0,
        map: regs.get(cookie.map),
        map_type: cookie.map_type.map_or(0, |r| regs.get(r)),
        detail: 0,
        stack: [0; STACK_DEPTH],
        table: [0; TABLE_BYTES],
        flags: 0,
    };
    if let Some(stack) = return_addresses(&regs) {
        pending.stack = stack;
        pending.flags |= u64::from(FLAG_STACK);
    }
    if let Some(r) = cookie.detail {
        pending.detail = regs.get(r);
        pending.flags |= u64::from(FLAG_DETAIL);
    }
    if cookie.table_in_rax {
        // SAFETY: reading user memory through the faulting-safe helper.
        if let Ok(t) = unsafe { bpf_probe_read_user(regs.rax as *const [u8; TABLE_BYTES]) } {
            pending.table = t;
            pending.flags |= u64::from(FLAG_TABLE);
        }
    }
    let key = CallKey {
        g: regs.r14,
        function: u64::from(cookie.function),
    };
    // SAFETY: plain helper call.
    pending.time_ns = unsafe { bpf_ktime_get_ns() };
    if PENDING.insert(key, pending, 0).is_ok() {
        count(&CALLS, 2 * u32::from(cookie.function));
    }
    0
}

#[uprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn call_return(ctx: ProbeContext) -> u32 {
    // SAFETY: plain helper call; taken first so the probe's own work is not timed.
    let now = unsafe { bpf_ktime_get_ns() };
    let cfg = config();
    let Some((mut event, cookie, regs)) = start(&ctx, &cfg) else {
        return 0;
    };
    let key = CallKey {
        g: regs.r14,
        function: u64::from(cookie.function),
    };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING.get(key) }).copied() else {
        // Attached while this call was running: no entry time, so no event.
        count(&CALLS, CALLS_ORPHANS);
        return 0;
    };
    let _ = PENDING.remove(key);
    count(&CALLS, 2 * u32::from(cookie.function) + 1);
    // Counted above, so entries still balance returns; only the event is filtered.
    if !map_wanted(&cfg, pending.map) {
        return 0;
    }
    let duration_ns = now.saturating_sub(pending.time_ns);
    if cfg.summary_only != 0 {
        // SAFETY: reading user memory through the faulting-safe helper.
        let variant = cfg.variant_mask != 0
            && unsafe { bpf_probe_read_user((pending.map + cfg.variant_offset) as *const u8) }
                .is_ok_and(|b| u64::from(b) & cfg.variant_mask != 0);
        let key = TotalsKey {
            map: pending.map,
            function: cookie.function,
            variant: u16::from(variant),
            pad: 0,
        };
        tally(&key, Some(duration_ns), pending.map_type);
        return 0;
    }
    event.map = pending.map;
    event.duration_ns = duration_ns;
    event.detail = pending.detail;
    event.map_type = pending.map_type;
    event.stack = pending.stack;
    event.table = pending.table;
    #[expect(clippy::cast_possible_truncation, reason = "only flag bits are stored")]
    {
        event.flags |= pending.flags as u8;
    }
    finish(&mut event, None);
    0
}

/// A GC cycle starts or ends its mark phase: the cycle number is the completed count + 1.
#[uprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn gc_event(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((mut event, _, _)) = start(&ctx, &cfg) else {
        return 0;
    };
    if cfg.gc_cycles_addr != 0 {
        // SAFETY: reading user memory through the faulting-safe helper.
        if let Ok(done) = unsafe { bpf_probe_read_user(cfg.gc_cycles_addr as *const u32) } {
            event.detail = u64::from(done) + 1;
            event.flags |= FLAG_DETAIL;
        }
    }
    emit(&mut event);
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
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid >> 32 != u64::from(config().tgid) {
        return;
    }
    let _ = MADVISE.insert(pid_tgid, MadviseCall { addr, len, advice }, 0);
}

#[inline(always)]
fn madvise_end(result: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { MADVISE.get(pid_tgid) }).copied() else {
        return;
    };
    let _ = MADVISE.remove(pid_tgid);
    let mut event = Event::ZERO;
    #[expect(clippy::cast_possible_truncation, reason = "tgid and tid halves")]
    {
        event.pid = (pid_tgid >> 32) as u32;
        event.tid = pid_tgid as u32;
    }
    event.kind = EventKind::Madvise as u8;
    event.addr = call.addr;
    event.len = call.len;
    event.detail = call.advice;
    event.result = result;
    event.flags = FLAG_DETAIL;
    emit(&mut event);
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

/// Copies the bytes the contract hashes of the probed call's key into `buf`; their count.
#[inline(always)]
fn read_key(kind: KeyKind, regs: &Regs, cfg: &Config, buf: &mut [u8; KEY_MAX]) -> Option<usize> {
    match kind {
        KeyKind::None => None,
        KeyKind::U32 => {
            #[expect(clippy::cast_possible_truncation, reason = "ECX holds the 32-bit key")]
            let bytes = (regs.rcx as u32).to_le_bytes();
            buf.get_mut(..4)?.copy_from_slice(&bytes);
            Some(4)
        }
        KeyKind::U64 => {
            buf.get_mut(..8)?.copy_from_slice(&regs.rcx.to_le_bytes());
            Some(8)
        }
        KeyKind::Str => read_user_bytes(regs.rcx, regs.rdi, buf),
        KeyKind::Mem => {
            // SAFETY: reads of user memory through the faulting-safe helper.
            let key_type: u64 =
                unsafe { bpf_probe_read_user((regs.rax + cfg.map_type_key_offset) as *const u64) }
                    .ok()?;
            // SAFETY: as above.
            let size: u64 =
                unsafe { bpf_probe_read_user((key_type + cfg.type_size_offset) as *const u64) }
                    .ok()?;
            read_user_bytes(regs.rcx, size, buf)
        }
    }
}

/// Copies the first `min(len, KEY_MAX)` bytes at `ptr` in the target into `buf`.
#[inline(always)]
fn read_user_bytes(ptr: u64, len: u64, buf: &mut [u8; KEY_MAX]) -> Option<usize> {
    #[expect(clippy::cast_possible_truncation, reason = "bounded by KEY_MAX")]
    let n = if len > KEY_MAX as u64 {
        KEY_MAX
    } else {
        len as usize
    };
    if n == 0 {
        return Some(0);
    }
    let dst = buf.get_mut(..n)?;
    // SAFETY: the helper copies at most `dst.len()` bytes and fails on a bad address.
    unsafe { bpf_probe_read_user_buf(ptr as *const u8, dst) }.ok()?;
    Some(n)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
