//! map-trace's eBPF side: one uprobe program shared by every probed Go map function.
//!
//! Which function a hit belongs to, and so which registers hold the key, comes from the
//! attach cookie; offsets into Go runtime structures come from `CONFIG`, filled in by user
//! space from its per-version table before the object is loaded.
#![no_std]
#![no_main]
#![allow(
    clippy::inline_always,
    reason = "helpers are inlined into the one program the verifier checks"
)]

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf,
        generated::bpf_get_attach_cookie,
    },
    macros::{map, uprobe},
    maps::{PerCpuArray, RingBuf},
    programs::ProbeContext,
};
use map_trace_common::{
    Config, Event, FLAG_COUNT, FLAG_KEY, KEY_MAX, KeyKind, ProbeCookie, key_hash,
};

/// Written by user space before load (read-only global).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    tgid: 0,
    pad: 0,
    map_count_offset: 0,
    map_type_key_offset: 0,
    type_size_offset: 0,
};

/// Default size; user space may resize before load.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Events that found the ring buffer full, per CPU; user space sums and reports them.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn config() -> Config {
    // SAFETY: read through a volatile load so the compiler does not fold the zero initialiser.
    unsafe { core::ptr::read_volatile(&raw const CONFIG) }
}

#[uprobe]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature aya's macro expects"
)]
pub fn map_op(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    #[expect(clippy::cast_possible_truncation, reason = "upper half is the tgid")]
    let (tgid, thread) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tgid != cfg.tgid {
        return 0;
    }
    // SAFETY: the helper only reads the cookie of the running program.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let (kind, key_kind) = ProbeCookie::decode(cookie);
    // SAFETY: uprobe context is the user registers of the trapping thread.
    let regs = unsafe { &*ctx.regs };
    let map = regs.rbx;

    let mut event = Event {
        time_ns: 0,
        map,
        key_hash: 0,
        count: 0,
        pid: tgid,
        tid: thread,
        kind,
        flags: 0,
        pad: [0; 6],
    };
    if let Some(hash) = hash_key(key_kind, regs.rax, regs.rcx, regs.rdi, &cfg) {
        event.key_hash = hash;
        event.flags |= FLAG_KEY;
    }
    // SAFETY: reading user memory through the helper, which faults safely.
    if let Ok(count) = unsafe { bpf_probe_read_user((map + cfg.map_count_offset) as *const u64) } {
        event.count = count;
        event.flags |= FLAG_COUNT;
    }
    // SAFETY: plain helper call.
    event.time_ns = unsafe { bpf_ktime_get_ns() };
    submit(&event);
    0
}

/// Hash the key of the probed call as the contract defines it.
#[inline(always)]
fn hash_key(kind: KeyKind, rax: u64, rcx: u64, rdi: u64, cfg: &Config) -> Option<u64> {
    match kind {
        KeyKind::None => None,
        #[expect(clippy::cast_possible_truncation, reason = "ECX holds the 32-bit key")]
        KeyKind::U32 => Some(key_hash(&(rcx as u32).to_le_bytes())),
        KeyKind::U64 => Some(key_hash(&rcx.to_le_bytes())),
        KeyKind::Str => hash_user_bytes(rcx, rdi),
        KeyKind::Mem => {
            // SAFETY: reads of user memory through the faulting-safe helper.
            let key_type: u64 =
                unsafe { bpf_probe_read_user((rax + cfg.map_type_key_offset) as *const u64) }
                    .ok()?;
            let size: u64 =
                unsafe { bpf_probe_read_user((key_type + cfg.type_size_offset) as *const u64) }
                    .ok()?;
            hash_user_bytes(rcx, size)
        }
    }
}

/// FNV-1a over the first `min(len, KEY_MAX)` bytes at `ptr` in the target.
#[inline(always)]
fn hash_user_bytes(ptr: u64, len: u64) -> Option<u64> {
    let mut buf = [0_u8; KEY_MAX];
    #[expect(clippy::cast_possible_truncation, reason = "bounded by KEY_MAX")]
    let n = if len > KEY_MAX as u64 {
        KEY_MAX
    } else {
        len as usize
    };
    if n == 0 {
        return Some(key_hash(&[]));
    }
    let dst = buf.get_mut(..n)?;
    // SAFETY: the helper copies at most `dst.len()` bytes and fails on a bad address.
    unsafe { bpf_probe_read_user_buf(ptr as *const u8, dst) }.ok()?;
    Some(key_hash(buf.get(..n)?))
}

#[inline(always)]
fn submit(event: &Event) {
    if EVENTS.output::<Event>(event, 0).is_err()
        && let Some(lost) = LOST.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *lost += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
