//! The target's ELF executable: build info, functions and call sites (from the Go runtime's
//! own tables, so stripped, PIE and cgo builds work alike), Go type names, and the mapping
//! from virtual addresses to file offsets that uprobes are attached by.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use object::{
    Object as _, ObjectKind, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _,
    RelocationFlags, SegmentFlags, SymbolKind,
};
use thiserror::Error;

pub use super::pclntab::Frame;
use super::{
    buildinfo::{self, BuildInfoError},
    gotypes::{self, Memory, Module, ModuleError},
    pclntab::{self, Pclntab, PclntabError},
};
use crate::goruntime::GoVersion;

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
    #[error("{path}: no Go function table (.gopclntab) found")]
    NoPclntab { path: PathBuf },
    #[error("{path}: {source}")]
    Pclntab { path: PathBuf, source: PclntabError },
    #[error("{path}: {source}")]
    Module { path: PathBuf, source: ModuleError },
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
    writable: bool,
}

/// The file and its loadable segments, read by link-time address.
struct Image {
    data: Vec<u8>,
    segments: Vec<Segment>,
    /// `R_X86_64_RELATIVE` relocations (PIE): where the loader writes a pointer → the
    /// link-time address it points at. The file bytes there may be 0.
    relative: HashMap<u64, u64>,
}

impl Image {
    fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            (delta < s.file_size).then(|| s.file_offset.checked_add(delta))?
        })
    }

    fn vaddr_of_file_offset(&self, file_offset: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let delta = file_offset.checked_sub(s.file_offset)?;
            (delta < s.file_size).then(|| s.vaddr.checked_add(delta))?
        })
    }

    /// The file bytes of the segment `s`.
    fn segment_bytes(&self, s: &Segment) -> Option<&[u8]> {
        let start = usize::try_from(s.file_offset).ok()?;
        let end = start.checked_add(usize::try_from(s.file_size).ok()?)?;
        self.data.get(start..end)
    }
}

impl Memory for Image {
    fn bytes_at(&self, vaddr: u64) -> Option<&[u8]> {
        self.segments.iter().find_map(|s| {
            let delta = usize::try_from(vaddr.checked_sub(s.vaddr)?).ok()?;
            self.segment_bytes(s)?
                .get(delta..)
                .filter(|b| !b.is_empty())
        })
    }

    fn pointer_at(&self, vaddr: u64) -> Option<u64> {
        if let Some(&target) = self.relative.get(&vaddr) {
            return Some(target);
        }
        let bytes = self.bytes_at(vaddr)?.get(..8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    fn pointers_to(&self, target: u64) -> Vec<u64> {
        let mut found: Vec<u64> = self
            .relative
            .iter()
            .filter(|&(_, &t)| t == target)
            .map(|(&at, _)| at)
            .collect();
        for s in self.segments.iter().filter(|s| s.writable) {
            let Some(bytes) = self.segment_bytes(s) else {
                continue;
            };
            // Start at the first 8-aligned address of the segment.
            let skip = usize::try_from(s.vaddr.wrapping_neg() % 8).unwrap_or_default();
            let words = bytes.get(skip..).unwrap_or_default().chunks_exact(8);
            for (i, word) in words.enumerate() {
                if word == target.to_le_bytes() {
                    let at = u64::try_from(skip + i * 8)
                        .ok()
                        .and_then(|off| s.vaddr.checked_add(off));
                    found.extend(at);
                }
            }
        }
        found.sort_unstable();
        found
    }
}

/// Where the pclntab is and the moduledata that goes with it.
struct Tables {
    pclntab: u64,
    module: Module,
}

/// A Go executable, read once.
pub struct GoBinary {
    path: PathBuf,
    image: Image,
    version: String,
    pie: bool,
    /// Every function in the pclntab by name.
    functions: HashMap<String, Function>,
    /// Data symbols (global variables) by name: their addresses (symbol table only).
    objects: HashMap<String, u64>,
    /// `None` for a Go release map-trace does not support (its runtime tables may differ;
    /// [`crate::goruntime::Runtime::of`] refuses such a binary with a clear message).
    tables: Option<Tables>,
}

/// Section names the Go linkers give the pclntab (`.data.rel.ro.gopclntab` in PIE builds
/// before Go 1.26). gcc merges it into `.data.rel.ro` when linking a cgo PIE: then its
/// magic is searched for.
const PCLNTAB_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

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
        let objects: HashMap<String, u64> = file
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
                    writable: matches!(seg.flags(), SegmentFlags::Elf { p_flags }
                        if p_flags & object::elf::PF_W != 0),
                }
            })
            .collect();
        let pie = file.kind() == ObjectKind::Dynamic;
        let relative = if pie {
            relative_relocations(&file)
        } else {
            HashMap::new()
        };
        let pclntab_section = PCLNTAB_SECTIONS
            .iter()
            .find_map(|name| file.section_by_name(name))
            .map(|s| s.address());
        drop(file);
        let mut binary = Self {
            path,
            image: Image {
                data,
                segments,
                relative,
            },
            version,
            pie,
            functions: HashMap::new(),
            objects,
            tables: None,
        };
        let layout = GoVersion::parse(&binary.version)
            .ok()
            .and_then(|v| gotypes::moduledata_layout(v.minor));
        if let Some(layout) = layout {
            binary.load_tables(&layout, pclntab_section)?;
        }
        Ok(binary)
    }

    /// Finds the pclntab and moduledata and reads every function's bounds.
    fn load_tables(
        &mut self,
        layout: &gotypes::ModuledataLayout,
        section: Option<u64>,
    ) -> Result<(), BinaryError> {
        let path = || self.path.clone();
        let pclntab = section
            .or_else(|| self.scan_for_pclntab())
            .ok_or_else(|| BinaryError::NoPclntab { path: path() })?;
        let bytes = self.image.bytes_at(pclntab).unwrap_or_default();
        let pclntab_error = |source| BinaryError::Pclntab {
            path: path(),
            source,
        };
        // The text start is not known yet: parse once for the header's offsets.
        let header = Pclntab::parse(bytes, 0).map_err(pclntab_error)?;
        let funcnametab = u64::try_from(header.funcnametab_offset())
            .ok()
            .and_then(|off| pclntab.checked_add(off))
            .ok_or(pclntab_error(PclntabError::Corrupt("header")))?;
        let module = Module::find(
            &self.image,
            layout,
            pclntab,
            funcnametab,
            self.objects.get("runtime.firstmoduledata").copied(),
        )
        .map_err(|source| BinaryError::Module {
            path: path(),
            source,
        })?;
        let table = Pclntab::parse(bytes, module.text).map_err(pclntab_error)?;
        // By name: the function, its size, and its place in the table.
        let mut functions: HashMap<String, (Function, usize)> =
            HashMap::with_capacity(table.function_count());
        for i in 0..table.function_count() {
            let f = table.func(i).map_err(pclntab_error)?;
            let name = table.name(&f).map_err(pclntab_error)?;
            let function = Function {
                addr: f.entry,
                size: table.size(&f).map_err(pclntab_error)?,
            };
            let Some((_, j)) = functions.get(name) else {
                functions.insert(name.to_owned(), (function, i));
                continue;
            };
            // A name twice is a function and its ABI wrapper: name them as the symbol
            // table does, the ABI0 one with `.abi0`.
            let other = table.func(*j).map_err(pclntab_error)?;
            let abi0 = format!("{name}.abi0");
            if table.is_abi0_of_pair(&f, &other) {
                functions.insert(abi0, (function, i));
            } else if let Some(previous) = functions.insert(name.to_owned(), (function, i)) {
                functions.insert(abi0, previous);
            }
        }
        self.functions = functions.into_iter().map(|(n, (f, _))| (n, f)).collect();
        self.tables = Some(Tables { pclntab, module });
        Ok(())
    }

    /// The first 8-aligned pclntab header in the loaded image that parses.
    fn scan_for_pclntab(&self) -> Option<u64> {
        let magic = pclntab::MAGIC.to_le_bytes();
        self.image.segments.iter().find_map(|s| {
            let bytes = self.image.segment_bytes(s)?;
            let skip = usize::try_from(s.vaddr.wrapping_neg() % 8).ok()?;
            (skip..bytes.len()).step_by(8).find_map(|at| {
                let rest = bytes.get(at..)?;
                if !rest.starts_with(&magic) || Pclntab::parse(rest, 0).is_err() {
                    return None;
                }
                s.vaddr.checked_add(u64::try_from(at).ok()?)
            })
        })
    }

    fn pclntab(&self) -> Option<(Pclntab<'_>, &Module)> {
        let tables = self.tables.as_ref()?;
        let bytes = self.image.bytes_at(tables.pclntab)?;
        Some((
            Pclntab::parse(bytes, tables.module.text).ok()?,
            &tables.module,
        ))
    }

    fn module(&self) -> Option<&Module> {
        self.tables.as_ref().map(|t| &t.module)
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

    /// Whether the binary is position independent (ELF `ET_DYN`): it is loaded at a bias
    /// from its link-time addresses.
    #[must_use]
    pub fn is_pie(&self) -> bool {
        self.pie
    }

    /// The Go function `name`, from the pclntab (stripped binaries included).
    #[must_use]
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.get(name)
    }

    #[must_use]
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.contains_key(name)
    }

    /// The address of the global variable `name` (needs the symbol table: `None` when
    /// stripped).
    #[must_use]
    pub fn object(&self, name: &str) -> Option<u64> {
        self.objects.get(name).copied()
    }

    /// The file offset the byte at `vaddr` is loaded from.
    #[must_use]
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.image.file_offset(vaddr)
    }

    /// The link-time address loaded from `file_offset` (with a mapping's file offset and
    /// start address from /proc/PID/maps, this gives a PIE's load bias).
    #[must_use]
    pub fn vaddr_of_file_offset(&self, file_offset: u64) -> Option<u64> {
        self.image.vaddr_of_file_offset(file_offset)
    }

    /// The machine code of `f`.
    #[must_use]
    pub fn code(&self, f: &Function) -> Option<&[u8]> {
        let start = usize::try_from(self.file_offset(f.addr)?).ok()?;
        let end = start.checked_add(usize::try_from(f.size).ok()?)?;
        self.image.data.get(start..end)
    }

    /// The Go source position of a call: `pc` is a link-time return address from a stack,
    /// so the call instruction before it is looked up. Innermost frame first, inlined calls
    /// expanded; empty when `pc` is in no Go function.
    #[must_use]
    pub fn symbolize(&self, pc: u64) -> Vec<Frame> {
        let Some((table, module)) = self.pclntab() else {
            return Vec::new();
        };
        let Some(call) = pc.checked_sub(1) else {
            return Vec::new();
        };
        let Some(f) = table.func_at(call) else {
            return Vec::new();
        };
        let inl_tree = f
            .funcdata(pclntab::FUNCDATA_INL_TREE)
            .and_then(|off| module.gofunc.checked_add(u64::from(off)))
            .and_then(|at| self.image.bytes_at(at));
        table.frames(&f, call, inl_tree)
    }

    /// The name of the Go type whose `abi.Type` is at `type_addr` (link-time address);
    /// `None` outside the binary's type section (types made at run time are unknown).
    #[must_use]
    pub fn type_name(&self, type_addr: u64) -> Option<String> {
        self.module()?.type_name(&self.image, type_addr)
    }

    /// The kind of the type at `type_addr`.
    #[must_use]
    pub fn type_kind(&self, type_addr: u64) -> Option<gotypes::Kind> {
        self.module()?.type_kind(&self.image, type_addr)
    }

    /// The key type (its `abi.Type` address) of the map type at `map_type_addr`.
    #[must_use]
    pub fn map_key_type(&self, map_type_addr: u64) -> Option<u64> {
        self.module()?.map_key_type(&self.image, map_type_addr)
    }
}

/// The `R_X86_64_RELATIVE` entries of the dynamic relocations: site → target.
fn relative_relocations(file: &object::File<'_>) -> HashMap<u64, u64> {
    let relative = RelocationFlags::Elf {
        r_type: object::elf::R_X86_64_RELATIVE,
    };
    file.dynamic_relocations()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r.flags() == relative)
        .filter_map(|(at, r)| Some((at, u64::try_from(r.addend()).ok()?)))
        .collect()
}
