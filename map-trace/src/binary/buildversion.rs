//! `runtime.buildVersion`: the Go version the runtime itself reports (`runtime.Version()`),
//! read when a binary's build info was removed. The variable is a Go string header (data
//! pointer, length) in writable data that points at bytes like `go1.26.6` in read-only data.

use thiserror::Error;

use super::gotypes::Memory;

/// The variable's symbol, in binaries that keep their symbol table.
pub const SYMBOL: &str = "runtime.buildVersion";
/// Longer strings are not version strings: `go1.27.3-X:` and a few experiments.
const MAX_LEN: u64 = 128;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BuildVersionError {
    #[error("no Go build info and no Go runtime version string (not a Go program)")]
    Missing,
    #[error("no Go build info, and runtime.buildVersion holds no Go version string")]
    BadSymbol,
    #[error(
        "no Go build info, and several Go version strings in the data ({0}): cannot tell which Go built it"
    )]
    Ambiguous(String),
}

/// The runtime's version string: at the symbol's address when the symbol table has it,
/// else the one release version string that a string header in writable data points at.
pub fn find(mem: &impl Memory, symbol: Option<u64>) -> Result<String, BuildVersionError> {
    if let Some(at) = symbol {
        let pointer = mem.pointer_at(at).ok_or(BuildVersionError::BadSymbol)?;
        return version_at(mem, at, pointer).ok_or(BuildVersionError::BadSymbol);
    }
    let mut found: Vec<String> = mem
        .data_words()
        .filter_map(|(at, pointer)| version_at(mem, at, pointer))
        .collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [] => Err(BuildVersionError::Missing),
        [one] => Ok(one.clone()),
        _ => Err(BuildVersionError::Ambiguous(found.join(", "))),
    }
}

/// The release version string of the string header at `at`, whose data pointer (relocated)
/// is `pointer`.
fn version_at(mem: &impl Memory, at: u64, pointer: u64) -> Option<String> {
    let len_bytes = mem.bytes_at(at.checked_add(8)?)?.get(..8)?;
    let len = u64::from_le_bytes(len_bytes.try_into().ok()?);
    if len > MAX_LEN {
        return None;
    }
    let text = mem.bytes_at(pointer)?.get(..usize::try_from(len).ok()?)?;
    let text = std::str::from_utf8(text).ok()?;
    is_release_version(text).then(|| text.to_owned())
}

/// Whether `s` is what the Go linker writes into `runtime.buildVersion` for a release:
/// `go1.N`, `go1.N.P`, `go1.NrcK` or `go1.NbetaK`, then maybe experiments after ` X:`
/// (Go 1.24, 1.25) or `-X:` (1.26+). Strict, since any string in the data is a candidate.
fn is_release_version(s: &str) -> bool {
    let number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = s.strip_prefix("go1.") else {
        return false;
    };
    let (release, experiments) = match rest.split_once(" X:").or_else(|| rest.split_once("-X:")) {
        Some((release, experiments)) => (release, Some(experiments)),
        None => (rest, None),
    };
    let release_ok = if let Some((minor, patch)) = release.split_once('.') {
        number(minor) && number(patch)
    } else {
        // A first release (before Go 1.21 it had no `.0`) or a pre-release.
        let (minor, pre) = ["rc", "beta"]
            .iter()
            .find_map(|tag| release.split_once(tag))
            .unwrap_or((release, "0"));
        number(minor) && number(pre)
    };
    let experiment = |e: &str| {
        !e.is_empty()
            && e.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    release_ok && experiments.is_none_or(|list| list.split(',').all(experiment))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::{collection::vec, prelude::*};

    use super::*;

    /// Writable data at `DATA` (string headers) and read-only bytes at `RODATA`, with
    /// relocations.
    struct Fake {
        data: Vec<u8>,
        rodata: Vec<u8>,
        relocs: HashMap<u64, u64>,
    }

    const DATA: u64 = 0x60_0000;
    const RODATA: u64 = 0x40_0000;

    impl Memory for Fake {
        fn bytes_at(&self, vaddr: u64) -> Option<&[u8]> {
            let (base, bytes) = if vaddr >= DATA {
                (DATA, &self.data)
            } else {
                (RODATA, &self.rodata)
            };
            bytes.get(usize::try_from(vaddr.checked_sub(base)?).ok()?..)
        }

        fn pointer_at(&self, vaddr: u64) -> Option<u64> {
            if let Some(&p) = self.relocs.get(&vaddr) {
                return Some(p);
            }
            Some(u64::from_le_bytes(
                self.bytes_at(vaddr)?.get(..8)?.try_into().ok()?,
            ))
        }

        fn data_words(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
            (0..self.data.len() as u64)
                .step_by(8)
                .filter_map(|o| Some((DATA + o, self.pointer_at(DATA + o)?)))
        }
    }

    /// Each string in read-only data, with a header for it in the data (the pointer in a
    /// relocation if `relocated`), after some words of noise.
    fn fake(strings: &[&str], relocated: bool) -> Fake {
        let mut fake = Fake {
            data: vec![0x11; 64],
            rodata: b"go1.99 in a sentence\0".to_vec(),
            relocs: HashMap::new(),
        };
        for s in strings {
            let pointer = RODATA + fake.rodata.len() as u64;
            fake.rodata.extend_from_slice(s.as_bytes());
            let at = DATA + fake.data.len() as u64;
            let stored = if relocated {
                fake.relocs.insert(at, pointer);
                0
            } else {
                pointer
            };
            fake.data.extend_from_slice(&stored.to_le_bytes());
            fake.data.extend_from_slice(&(s.len() as u64).to_le_bytes());
        }
        fake
    }

    #[test]
    fn finds_the_one_version_string() {
        for relocated in [false, true] {
            let mem = fake(&["hello", "go1.26.6", "go1.26.6"], relocated);
            assert_eq!(find(&mem, None).unwrap(), "go1.26.6");
            // The symbol names the header: 64 bytes of noise, then "hello"'s, then ours.
            assert_eq!(find(&mem, Some(DATA + 80)).unwrap(), "go1.26.6");
            assert_eq!(
                find(&mem, Some(DATA + 64)),
                Err(BuildVersionError::BadSymbol)
            );
        }
        let mem = fake(&["go1.24.11 X:noswissmap"], false);
        assert_eq!(find(&mem, None).unwrap(), "go1.24.11 X:noswissmap");
    }

    #[test]
    fn none_or_several_are_errors() {
        assert_eq!(
            find(&fake(&["hello"], false), None),
            Err(BuildVersionError::Missing)
        );
        assert_eq!(
            find(&fake(&["go1.19.8", "go1.21.13"], true), None),
            Err(BuildVersionError::Ambiguous("go1.19.8, go1.21.13".into()))
        );
    }

    #[test]
    fn only_release_versions_count() {
        for good in [
            "go1.19",
            "go1.19.8",
            "go1.23rc1",
            "go1.22beta2",
            "go1.24.11 X:noswissmap",
            "go1.27.3-X:mapsplitgroup,nogreenteagc",
        ] {
            assert!(is_release_version(good), "{good}");
        }
        for bad in [
            "go1.",
            "go1.x",
            "go1.19.",
            "go1.19.8 ",
            "go1.99 in a sentence",
            "go1.21.0 X:",
            "go1.21.0 X:a,,b",
            "go1.21.0 X:Upper",
            "devel go1.22-abc",
            "go2.0",
        ] {
            assert!(!is_release_version(bad), "{bad}");
        }
    }

    proptest! {
        // Cheap cases: many of them still run in well under a second.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn arbitrary_memory_never_panics(
            data in vec(any::<u8>(), 0..512),
            rodata in vec(any::<u8>(), 0..512),
            symbol in prop_oneof![Just(None), any::<u64>().prop_map(Some)],
        ) {
            let mem = Fake { data, rodata, relocs: HashMap::new() };
            if let Ok(version) = find(&mem, symbol) {
                prop_assert!(is_release_version(&version));
            }
        }
    }
}
