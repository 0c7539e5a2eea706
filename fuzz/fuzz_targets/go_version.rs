//! `GoVersion::parse`: the version string from a binary's build info.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_trace::goruntime::{Flavour, GoVersion, Runtime};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(version) = GoVersion::parse(raw) else {
        return;
    };
    assert_eq!(version.raw, raw);
    let _ = version.check_supported();
    for flavour in [Flavour::Classic, Flavour::Swiss] {
        let _ = Runtime::new(version.clone(), flavour);
    }
});
