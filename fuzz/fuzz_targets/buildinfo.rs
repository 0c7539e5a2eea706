//! `.go.buildinfo`: finding the blob in a whole file, and the Go version in it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_trace::binary::buildinfo;

fuzz_target!(|data: &[u8]| {
    let _ = buildinfo::version(data);
    if let Some(at) = buildinfo::find(data) {
        // Indexing on purpose: `find` promises an offset inside `data`.
        let _ = buildinfo::version(&data[at..]);
    }
});
