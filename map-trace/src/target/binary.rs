//! The target's ELF executable: build info, function symbols, and the mapping from virtual
//! addresses to file offsets that uprobes are attached by.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _, SymbolKind};
use thiserror::Error;

use super::buildinfo::{self, BuildInfoError};

#[derive(Debug, Error)]
pub enum BinaryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF executable ({reason}): map-trace traces Go programs")]
    NotElf { path: PathBuf, reason: String },
    #[error("{path} is a {arch:?} binary; map-trace traces x86_64 Go programs")]
    Arch {
        path: PathBuf,
        arch: object::Architecture,
    },
    #[error("{path}: {source}")]
    BuildInfo {
        path: PathBuf,
        source: BuildInfoError,
    },
}

/// A function's bounds in the binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub addr: u64,
    pub size: u64,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    vaddr: u64,
    file_offset: u64,
    file_size: u64,
}

/// A Go executable, read once.
pub struct GoBinary {
    path: PathBuf,
    data: Vec<u8>,
    version: String,
    functions: HashMap<String, Function>,
    /// Data symbols (global variables) by name: their addresses.
    objects: HashMap<String, u64>,
    segments: Vec<Segment>,
}

impl GoBinary {
    /// Reads `path` (for a running process, `/proc/PID/exe`, which works for deleted binaries
    /// and other mount namespaces too).
    pub fn open(path: &Path) -> Result<Self, BinaryError> {
        let data = std::fs::read(path).map_err(|source| BinaryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, data)
    }

    pub fn parse(path: &Path, data: Vec<u8>) -> Result<Self, BinaryError> {
        let path = path.to_owned();
        let file = object::File::parse(&*data).map_err(|e| BinaryError::NotElf {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(BinaryError::NotElf {
                path,
                reason: format!("{:?}", file.format()),
            });
        }
        if file.architecture() != object::Architecture::X86_64 {
            return Err(BinaryError::Arch {
                arch: file.architecture(),
                path,
            });
        }
        let blob = file
            .section_by_name(".go.buildinfo")
            .and_then(|s| s.data().ok())
            .or_else(|| buildinfo::find(&data).and_then(|at| data.get(at..)))
            .unwrap_or_default();
        let version = buildinfo::version(blob).map_err(|source| BinaryError::BuildInfo {
            path: path.clone(),
            source,
        })?;
        let functions = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                let name = s.name().ok()?.to_owned();
                Some((
                    name,
                    Function {
                        addr: s.address(),
                        size: s.size(),
                    },
                ))
            })
            .collect();
        let objects = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Data)
            .filter_map(|s| Some((s.name().ok()?.to_owned(), s.address())))
            .collect();
        let segments = file
            .segments()
            .map(|seg| {
                let (file_offset, file_size) = seg.file_range();
                Segment {
                    vaddr: seg.address(),
                    file_offset,
                    file_size,
                }
            })
            .collect();
        Ok(Self {
            path,
            data,
            version,
            functions,
            objects,
            segments,
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw Go version string from the build info.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    #[must_use]
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.get(name)
    }

    #[must_use]
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// The address of the global variable `name`.
    #[must_use]
    pub fn object(&self, name: &str) -> Option<u64> {
        self.objects.get(name).copied()
    }

    /// Whether the binary has any function symbols at all (stripped binaries do not).
    #[must_use]
    pub fn has_symbols(&self) -> bool {
        !self.functions.is_empty()
    }

    /// The file offset the byte at `vaddr` is loaded from.
    #[must_use]
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            (delta < s.file_size).then_some(s.file_offset + delta)
        })
    }

    /// The machine code of `f`.
    #[must_use]
    pub fn code(&self, f: &Function) -> Option<&[u8]> {
        let start = usize::try_from(self.file_offset(f.addr)?).ok()?;
        let end = start.checked_add(usize::try_from(f.size).ok()?)?;
        self.data.get(start..end)
    }
}
