//! Ring-buffer records (from the kernel, written by the eBPF programs) and the kernel's
//! `--summary-only` totals, decoded with every version table row. Input: a selector byte
//! (row; plain, keyed or raw-length record), then the record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_trace::{
    events,
    goruntime::{HeaderLayout, LAYOUTS},
};
use map_trace_common::{
    DURATION_BUCKETS, EVENT_SIZE, HEADER_BYTES, KEYED_EVENT_SIZE, MapTotals, TotalsKey,
};

/// Little-endian integers taken one after another from the input, 0 past its end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = self.0.len().min(N);
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    fn usize(&mut self) -> usize {
        usize::try_from(self.u64()).unwrap_or(usize::MAX)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, record)) = data.split_first() else {
        return;
    };
    let layout = &LAYOUTS[usize::from(selector) % LAYOUTS.len()];
    // Mostly records of a valid size, so the fuzzer gets past the size check.
    let mut sized = record.to_vec();
    match selector >> 6 {
        0 => sized.resize(EVENT_SIZE, 0),
        1 => sized.resize(KEYED_EVENT_SIZE, 0),
        _ => {}
    }
    if let Ok((event, raw)) = events::decode(&sized, layout) {
        let _ = event.count();
        if let Some(detail) = event.detail {
            let _ = (detail.to_string(), detail.label());
        }
        if let Some(m) = event.madvise {
            let _ = (m.advice_text(), m.gives_back());
        }
        if let Some(key) = raw.key {
            assert!(key.len() <= sized.len() - EVENT_SIZE);
        }
    }

    let mut r = Reader(record);
    let key = TotalsKey {
        map: r.u64(),
        function: r.u16(),
        variant: r.u16(),
        pad: 0,
    };
    let mut totals = MapTotals::ZERO;
    totals.calls = r.u64();
    totals.total_ns = r.u64();
    totals.worst_ns = r.u64();
    totals.last_ns = r.u64();
    totals.header = r.take::<HEADER_BYTES>();
    for bucket in totals.histogram.iter_mut().take(DURATION_BUCKETS) {
        *bucket = u32::from(r.u16());
    }
    let _ = events::decode_totals(&key, &totals, layout);

    // The header decoder with offsets of any size: a short or odd header reads as zeros.
    let header = r.take::<HEADER_BYTES>();
    let odd = if selector & 1 == 0 {
        HeaderLayout::Classic {
            count: r.usize(),
            flags: r.usize(),
            b: r.usize(),
            noverflow: r.usize(),
            oldbuckets: r.usize(),
            nevacuate: r.usize(),
            same_size_flag: r.take::<1>()[0],
        }
    } else {
        HeaderLayout::Swiss {
            used: r.usize(),
            dir_len: r.usize(),
            global_depth: r.usize(),
            table_capacity: r.usize(),
            table_growth_left: r.usize(),
        }
    };
    let _ = odd.decode(&header);
    let _ = odd.decode_table(&header);
    let _ = odd.variant();
});
