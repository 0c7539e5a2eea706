//! `.go.buildinfo`: the Go version a binary was built with, present in stripped builds too.

use thiserror::Error;

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
/// Flag bit: version and module info are inline varint-prefixed strings (Go 1.18+).
const FLAG_INLINE_STRINGS: u8 = 2;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("no Go build info")]
    Missing,
    #[error("Go build info is in the pre-1.18 format (a Go release older than 1.18)")]
    OldFormat,
    #[error("Go build info is truncated or corrupt")]
    Corrupt,
}

/// Where the build info blob starts in `data`: the `.go.buildinfo` section when there is one,
/// otherwise the first 16-byte-aligned magic (the linker aligns it).
#[must_use]
pub fn find(data: &[u8]) -> Option<usize> {
    (0..data.len().saturating_sub(MAGIC.len()))
        .step_by(16)
        .find(|&at| data.get(at..at + MAGIC.len()) == Some(MAGIC))
}

/// The Go version string (`go1.26.6`, `go1.24.11 X:noswissmap`, `go1.26.6-X:nogreenteagc`).
pub fn version(blob: &[u8]) -> Result<String, BuildInfoError> {
    let (version, _) = inline_strings(blob)?;
    String::from_utf8(version.to_vec()).map_err(|_| BuildInfoError::Corrupt)
}

/// The main module's path (`github.com/gohugoio/hugo`), from the `mod` line of the module
/// info that follows the version; `None` for a build outside a module or without it.
#[must_use]
pub fn main_module(blob: &[u8]) -> Option<String> {
    let (_, info) = inline_strings(blob).ok()?;
    let info = String::from_utf8_lossy(info?);
    info.lines()
        .find_map(|l| l.strip_prefix("mod\t"))
        .and_then(|l| l.split('\t').next())
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
}

/// The inline varint-prefixed strings of a Go 1.18+ blob: the version, then (when there)
/// the module info.
fn inline_strings(blob: &[u8]) -> Result<(&[u8], Option<&[u8]>), BuildInfoError> {
    if !blob.starts_with(MAGIC) {
        return Err(BuildInfoError::Missing);
    }
    let flags = *blob.get(MAGIC.len() + 1).ok_or(BuildInfoError::Corrupt)?;
    if flags & FLAG_INLINE_STRINGS == 0 {
        return Err(BuildInfoError::OldFormat);
    }
    let rest = blob.get(HEADER_LEN..).ok_or(BuildInfoError::Corrupt)?;
    let (version, rest) = varint_string(rest).ok_or(BuildInfoError::Corrupt)?;
    Ok((version, varint_string(rest).map(|(info, _)| info)))
}

/// A length-prefixed string and what follows it.
fn varint_string(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, used) = uvarint(buf)?;
    let end = used.checked_add(usize::try_from(len).ok()?)?;
    Some((buf.get(used..end)?, buf.get(end..)?))
}

/// Go's `encoding/binary.Uvarint`: the value and the number of bytes it took.
fn uvarint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0_u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::binary::mutate::mutated;

    fn blob(version: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        b.resize(HEADER_LEN, 0);
        b.push(u8::try_from(version.len()).unwrap());
        b.extend_from_slice(version.as_bytes());
        b.push(0);
        b
    }

    #[test]
    fn reads_the_main_module() {
        let mut b = blob("go1.26.6");
        b.pop();
        let info = "0123456789abcdef\tpath\texample.com/x/cmd/y\nmod\texample.com/x\t(devel)\t\n";
        b.push(u8::try_from(info.len()).unwrap());
        b.extend_from_slice(info.as_bytes());
        assert_eq!(main_module(&b).as_deref(), Some("example.com/x"));
        assert_eq!(main_module(&blob("go1.26.6")), None);
    }

    #[test]
    fn reads_the_inline_version() {
        assert_eq!(version(&blob("go1.26.6")).unwrap(), "go1.26.6");
        assert_eq!(
            version(&blob("go1.24.11 X:noswissmap")).unwrap(),
            "go1.24.11 X:noswissmap"
        );
    }

    #[test]
    fn rejects_bad_blobs() {
        assert_eq!(version(b"nothing here"), Err(BuildInfoError::Missing));
        let mut old = blob("go1.10");
        old[MAGIC.len() + 1] = 0;
        assert_eq!(version(&old), Err(BuildInfoError::OldFormat));
        let full = blob("go1.26.6");
        assert_eq!(
            version(&full[..HEADER_LEN + 3]),
            Err(BuildInfoError::Corrupt)
        );
        let mut huge = full[..HEADER_LEN].to_vec();
        huge.extend_from_slice(&[0xff; 12]);
        assert_eq!(version(&huge), Err(BuildInfoError::Corrupt));
    }

    #[test]
    fn finds_aligned_magic() {
        let mut data = vec![0_u8; 64];
        data.extend_from_slice(&blob("go1.22.10"));
        assert_eq!(find(&data), Some(64));
        assert_eq!(find(&data[1..]), None);
    }

    #[test]
    fn uvarint_matches_go() {
        assert_eq!(uvarint(&[0x01]), Some((1, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80]), None);
    }

    proptest! {
        // Cheap cases: many of them still run in well under a second.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
            let _ = version(&bytes);
            if let Some(at) = find(&bytes) {
                prop_assert!(at < bytes.len());
                let _ = version(&bytes[at..]);
            }
        }

        #[test]
        fn mutated_blobs_never_panic(bytes in mutated(blob("go1.24.11 X:noswissmap"))) {
            let _ = version(&bytes);
            let _ = find(&bytes);
        }

        #[test]
        fn versions_read_back(
            text in vec(0x20_u8..0x7f, 0..127),
            lead in (0..8_usize).prop_map(|n| 16 * n),
        ) {
            let text = String::from_utf8(text).unwrap();
            let mut data = vec![0; lead];
            data.extend_from_slice(&blob(&text));
            prop_assert_eq!(find(&data), Some(lead));
            prop_assert_eq!(version(&data[lead..]), Ok(text));
        }
    }
}
