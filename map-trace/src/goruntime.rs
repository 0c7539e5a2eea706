//! What map-trace knows about the Go runtime, per Go version: the map flavour, the functions
//! to probe with their key registers, and struct offsets. Every per-version fact lives in
//! [`LAYOUTS`]; nothing else in map-trace branches on the version.

use std::{fmt, ops::RangeInclusive};

use map_trace_common::{EventKind, KeyKind};
use thiserror::Error;

use crate::target::binary::GoBinary;

/// The Go releases map-trace supports (minor versions of Go 1).
pub const SUPPORTED_MINORS: RangeInclusive<u32> = 21..=27;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RuntimeError {
    #[error("cannot read Go version `{0}`")]
    BadVersion(String),
    #[error(
        "built with {0}; map-trace supports Go 1.{min} to 1.{max}: rebuild the program with a supported Go",
        min = SUPPORTED_MINORS.start(),
        max = SUPPORTED_MINORS.end()
    )]
    Unsupported(String),
    #[error(
        "{0}: cannot tell the map implementation (neither runtime.hashGrow nor the swiss table's rehash is in the binary)"
    )]
    UnknownFlavour(String),
    #[error("{version} with {flavour} maps is not a combination map-trace knows")]
    NoLayout { version: String, flavour: Flavour },
}

/// The two map implementations of the Go runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `runtime.hmap`: buckets with incremental evacuation (Go ≤ 1.23, `noswissmap`).
    Classic,
    /// `internal/runtime/maps`: swiss tables (Go 1.24+ default).
    Swiss,
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavour::Classic => "classic",
            Flavour::Swiss => "swiss",
        })
    }
}

/// A Go version as the build info states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoVersion {
    pub minor: u32,
    pub patch: u32,
    /// `GOEXPERIMENT`s named in the version string (`noswissmap`, `mapsplitgroup`, …).
    pub experiments: Vec<String>,
    /// The string itself, for messages.
    pub raw: String,
}

impl GoVersion {
    /// Parses `go1.26.6`, `go1.24.11 X:noswissmap`, `go1.26.6-X:nogreenteagc`,
    /// `go1.23rc1`.
    pub fn parse(raw: &str) -> Result<Self, RuntimeError> {
        let bad = || RuntimeError::BadVersion(raw.to_owned());
        let rest = raw.strip_prefix("go1.").ok_or_else(bad)?;
        let (release, experiments) = match rest.find([' ', '-']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let experiments = experiments
            .trim_start_matches([' ', '-'])
            .strip_prefix("X:")
            .map(|list| list.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let digits = |s: &str| -> Option<u32> {
            let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            s.get(..end)?.parse().ok()
        };
        let mut parts = release.splitn(2, '.');
        let minor = parts.next().and_then(digits).ok_or_else(bad)?;
        let patch = parts.next().and_then(digits).unwrap_or(0);
        Ok(Self {
            minor,
            patch,
            experiments,
            raw: raw.to_owned(),
        })
    }

    pub fn check_supported(&self) -> Result<(), RuntimeError> {
        if SUPPORTED_MINORS.contains(&self.minor) {
            Ok(())
        } else {
            Err(RuntimeError::Unsupported(self.raw.clone()))
        }
    }
}

/// A runtime function map-trace probes, and what a call to it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFunction {
    pub symbol: &'static str,
    pub kind: EventKind,
    pub key: KeyKind,
}

const fn func(symbol: &'static str, kind: EventKind, key: KeyKind) -> MapFunction {
    MapFunction { symbol, kind, key }
}

/// The map entry points: the same names and register use from Go 1.21 to 1.27, both flavours.
const MAP_FUNCTIONS: &[MapFunction] = &[
    func("runtime.mapassign", EventKind::Assign, KeyKind::Mem),
    func("runtime.mapassign_fast32", EventKind::Assign, KeyKind::U32),
    func("runtime.mapassign_fast64", EventKind::Assign, KeyKind::U64),
    func(
        "runtime.mapassign_fast64ptr",
        EventKind::Assign,
        KeyKind::U64,
    ),
    func("runtime.mapassign_faststr", EventKind::Assign, KeyKind::Str),
    func("runtime.mapdelete", EventKind::Delete, KeyKind::Mem),
    func("runtime.mapdelete_fast32", EventKind::Delete, KeyKind::U32),
    func("runtime.mapdelete_fast64", EventKind::Delete, KeyKind::U64),
    func("runtime.mapdelete_faststr", EventKind::Delete, KeyKind::Str),
    func("runtime.mapclear", EventKind::Clear, KeyKind::None),
];

/// Everything version-specific about one range of Go releases and one map flavour.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub minors: RangeInclusive<u32>,
    pub flavour: Flavour,
    pub functions: &'static [MapFunction],
    /// `g.stackguard0`: what the prologue's stack check compares against (R14 + this).
    pub stackguard0_offset: u64,
    /// Element count in the map header: `hmap.count` (int) or `maps.Map.used` (uint64).
    pub map_count_offset: u64,
    /// `*abi.Type` of the key in the map type (`MapType.Key`, `OldMapType.Key`).
    pub map_type_key_offset: u64,
    /// `abi.Type.Size_`.
    pub type_size_offset: u64,
}

/// The one table of per-version facts (see ../shared/docs/go-runtime.md; checked against
/// DWARF by the integration tests).
pub static LAYOUTS: &[Layout] = &[
    Layout {
        minors: 21..=25,
        flavour: Flavour::Classic,
        functions: MAP_FUNCTIONS,
        stackguard0_offset: 0x10,
        map_count_offset: 0,
        map_type_key_offset: 48,
        type_size_offset: 0,
    },
    Layout {
        minors: 24..=27,
        flavour: Flavour::Swiss,
        functions: MAP_FUNCTIONS,
        stackguard0_offset: 0x10,
        map_count_offset: 0,
        map_type_key_offset: 48,
        type_size_offset: 0,
    },
];

/// Symbols that only one flavour's runtime has.
const CLASSIC_MARKER: &str = "runtime.hashGrow";
const SWISS_MARKER: &str = "internal/runtime/maps.(*table).rehash";

/// The map flavour, decided from the symbols in the binary.
#[must_use]
pub fn detect_flavour(has_function: impl Fn(&str) -> bool) -> Option<Flavour> {
    if has_function(CLASSIC_MARKER) {
        Some(Flavour::Classic)
    } else if has_function(SWISS_MARKER) {
        Some(Flavour::Swiss)
    } else {
        None
    }
}

/// The runtime of one target: its version, flavour and layout.
#[derive(Debug)]
pub struct Runtime {
    pub version: GoVersion,
    pub flavour: Flavour,
    pub layout: &'static Layout,
}

impl Runtime {
    /// The runtime a binary was built with: version from its build info, flavour from its
    /// symbols.
    pub fn of(binary: &GoBinary) -> Result<Self, RuntimeError> {
        let version = GoVersion::parse(binary.version())?;
        version.check_supported()?;
        let flavour = detect_flavour(|s| binary.has_function(s))
            .ok_or_else(|| RuntimeError::UnknownFlavour(binary.path().display().to_string()))?;
        Self::new(version, flavour)
    }

    pub fn new(version: GoVersion, flavour: Flavour) -> Result<Self, RuntimeError> {
        version.check_supported()?;
        let layout = LAYOUTS
            .iter()
            .find(|l| l.flavour == flavour && l.minors.contains(&version.minor))
            .ok_or_else(|| RuntimeError::NoLayout {
                version: version.raw.clone(),
                flavour,
            })?;
        Ok(Self {
            version,
            flavour,
            layout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_strings() {
        let v = GoVersion::parse("go1.26.6").unwrap();
        assert_eq!((v.minor, v.patch), (26, 6));
        assert!(v.experiments.is_empty());
        let v = GoVersion::parse("go1.24.11 X:noswissmap").unwrap();
        assert_eq!(
            (v.minor, v.patch, v.experiments.as_slice()),
            (24, 11, &["noswissmap".to_owned()][..])
        );
        let v = GoVersion::parse("go1.27.3-X:mapsplitgroup,nogreenteagc").unwrap();
        assert_eq!(v.minor, 27);
        assert_eq!(v.experiments, ["mapsplitgroup", "nogreenteagc"]);
        let v = GoVersion::parse("go1.23rc1").unwrap();
        assert_eq!((v.minor, v.patch), (23, 0));
        assert!(GoVersion::parse("devel +abc").is_err());
        assert!(GoVersion::parse("go2.0").is_err());
    }

    #[test]
    fn supported_range() {
        assert!(
            GoVersion::parse("go1.21.13")
                .unwrap()
                .check_supported()
                .is_ok()
        );
        assert!(
            GoVersion::parse("go1.27.3")
                .unwrap()
                .check_supported()
                .is_ok()
        );
        let err = GoVersion::parse("go1.20.14")
            .unwrap()
            .check_supported()
            .unwrap_err();
        assert!(
            err.to_string().contains("supports Go 1.21 to 1.27"),
            "{err}"
        );
        assert!(
            GoVersion::parse("go1.28.0")
                .unwrap()
                .check_supported()
                .is_err()
        );
    }

    #[test]
    fn every_supported_version_has_a_layout() {
        for minor in SUPPORTED_MINORS {
            let version = GoVersion::parse(&format!("go1.{minor}.0")).unwrap();
            let flavours: &[Flavour] = match minor {
                ..=23 => &[Flavour::Classic],
                24 | 25 => &[Flavour::Classic, Flavour::Swiss],
                _ => &[Flavour::Swiss],
            };
            for &flavour in flavours {
                assert!(
                    Runtime::new(version.clone(), flavour).is_ok(),
                    "go1.{minor} {flavour}"
                );
            }
        }
        let v = GoVersion::parse("go1.22.1").unwrap();
        assert!(matches!(
            Runtime::new(v, Flavour::Swiss),
            Err(RuntimeError::NoLayout { .. })
        ));
    }

    #[test]
    fn flavour_from_symbols() {
        assert_eq!(
            detect_flavour(|s| s == CLASSIC_MARKER),
            Some(Flavour::Classic)
        );
        assert_eq!(detect_flavour(|s| s == SWISS_MARKER), Some(Flavour::Swiss));
        // A noswissmap 1.25 binary has some internal/runtime/maps symbols but not rehash.
        assert_eq!(
            detect_flavour(|s| s.starts_with("internal/runtime/maps.(*Map)")),
            None
        );
    }
}
