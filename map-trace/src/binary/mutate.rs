//! Property-test inputs: a valid input, damaged the ways a truncated, corrupted or crafted
//! file is.

use proptest::{collection::vec, prelude::*, sample::select};

/// Values that break offsets and counts: zero, all ones, sign bits, near-overflow.
const NASTY: [u64; 8] = [
    0,
    1,
    0x7f,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_fff0,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// `valid` cut at any length, with a few bytes flipped, with a region overwritten by random
/// bytes, or with a word overwritten by a nasty value.
pub(crate) fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len().max(1);
    let (cut, flip, region, word) = (valid.clone(), valid.clone(), valid.clone(), valid);
    prop_oneof![
        (0..=cut.len()).prop_map(move |n| cut[..n].to_vec()),
        vec((0..len, 1..=u8::MAX), 1..8).prop_map(move |flips| {
            let mut b = flip.clone();
            for (at, x) in flips {
                if let Some(byte) = b.get_mut(at) {
                    *byte ^= x;
                }
            }
            b
        }),
        (0..len, vec(any::<u8>(), 1..64)).prop_map(move |(at, bytes)| {
            let mut b = region.clone();
            for (dst, src) in b.iter_mut().skip(at).zip(bytes) {
                *dst = src;
            }
            b
        }),
        (0..len, select(&NASTY[..]), 1..=8_usize).prop_map(move |(at, value, width)| {
            let mut b = word.clone();
            for (dst, src) in b.iter_mut().skip(at).zip(&value.to_le_bytes()[..width]) {
                *dst = *src;
            }
            b
        }),
    ]
}
