//! The target's ELF executable: build info, functions and call sites (from the Go runtime's
//! own tables, so stripped, PIE and cgo builds work alike), Go type names, and the mapping
//! from virtual addresses to file offsets that uprobes are attached by.

pub mod arch;
pub mod buildinfo;
pub mod buildversion;
pub mod disasm;
pub mod gotypes;
#[cfg(test)]
pub(crate) mod mutate;
pub mod pclntab;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use object::{
    Object as _, ObjectKind, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _,
    RelocationFlags, SegmentFlags, SymbolKind,
};
use thiserror::Error;

pub use self::pclntab::Frame;
use self::{
    arch::Arch,
    buildinfo::BuildInfoError,
    buildversion::BuildVersionError,
    gotypes::{Memory, Module, ModuleError},
    pclntab::{Pclntab, PclntabError},
};
use crate::goruntime::{self, GoVersion, Layout, Runtime, RuntimeError, detect_flavour};

/// Each message names its cause itself, so no cause is also a `source`: `main` prints the
/// chain of sources after the message, which would say it twice.
#[derive(Debug, Error)]
pub enum BinaryError {
    #[error("cannot read {path}: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{path} is not an ELF executable ({reason}): map-trace traces Go programs")]
    NotElf { path: PathBuf, reason: String },
    #[error("{path} is a {arch:?} binary; map-trace reads amd64 and arm64 Go programs")]
    Arch {
        path: PathBuf,
        arch: object::Architecture,
    },
    #[error(
        "{path} is an {arch} program, and this map-trace is the {native} build: run {build} on this machine",
        native = Arch::NATIVE,
        build = arch.build()
    )]
    ForeignArch { path: PathBuf, arch: Arch },
    #[error("{path}: {reason}")]
    BuildInfo {
        path: PathBuf,
        reason: BuildInfoError,
    },
    #[error("{path}: {reason}")]
    BuildVersion {
        path: PathBuf,
        reason: BuildVersionError,
    },
    #[error("{path}: no Go function table (.gopclntab) found")]
    NoPclntab { path: PathBuf },
    #[error(
        "{path} says it was built with {version}, but its function table has the format of {found} (magic {magic:#x}): refusing an inconsistent binary"
    )]
    TableFormat {
        path: PathBuf,
        version: String,
        found: &'static str,
        magic: u32,
    },
    #[error("{path}: {reason}")]
    Pclntab { path: PathBuf, reason: PclntabError },
    #[error("{path}: {reason}")]
    Module { path: PathBuf, reason: ModuleError },
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

    fn data_words(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let relocated = self.relative.iter().map(|(&at, &target)| (at, target));
        let stored = self
            .segments
            .iter()
            .filter(|s| s.writable)
            .flat_map(move |s| {
                // From the first 8-aligned address of the segment.
                let skip = s.vaddr.wrapping_neg() % 8;
                let bytes = usize::try_from(skip)
                    .ok()
                    .and_then(|skip| self.segment_bytes(s)?.get(skip..))
                    .unwrap_or_default();
                (0_u64..)
                    .zip(bytes.chunks_exact(8))
                    .filter_map(move |(i, word)| {
                        let at = s.vaddr.checked_add(skip)?.checked_add(i.checked_mul(8)?)?;
                        Some((at, u64::from_le_bytes(word.try_into().ok()?)))
                    })
            });
        // Where a relocation writes, the file's bytes are not what the loader leaves.
        relocated.chain(stored.filter(|(at, _)| !self.relative.contains_key(at)))
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
    arch: Arch,
    image: Image,
    version: String,
    /// The main module's path, from the build info; `None` outside a module.
    main_module: Option<String>,
    pie: bool,
    /// Every function in the pclntab by name.
    functions: HashMap<String, Function>,
    /// Data symbols (global variables) by name: their addresses (symbol table only).
    objects: HashMap<String, u64>,
    /// `None` for a Go release map-trace does not support (its runtime tables may differ;
    /// [`GoBinary::runtime`] refuses such a binary with a clear message).
    tables: Option<Tables>,
}

/// Section names the Go linkers give the pclntab (`.data.rel.ro.gopclntab` in PIE builds
/// before Go 1.26). gcc merges it into `.data.rel.ro` when linking a cgo PIE: then its
/// magic is searched for.
const PCLNTAB_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

/// Loadable segments a binary may have: Go's linker writes 3 or 4, gcc about as many. Every
/// address lookup and the moduledata scan walk them all, so a crafted file with thousands
/// would cost time out of proportion to its size.
const MAX_SEGMENTS: usize = 64;

impl GoBinary {
    /// Reads `path` (for a running process, `/proc/PID/exe`, which works for deleted binaries
    /// and other mount namespaces too).
    pub fn open(path: &Path) -> Result<Self, BinaryError> {
        let data = std::fs::read(path).map_err(|reason| BinaryError::Read {
            path: path.to_owned(),
            reason,
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
        let Some(arch) = Arch::of(file.architecture()) else {
            return Err(BinaryError::Arch {
                arch: file.architecture(),
                path,
            });
        };
        let blob = file
            .section_by_name(".go.buildinfo")
            .and_then(|s| s.data().ok())
            .or_else(|| buildinfo::find(&data).and_then(|at| data.get(at..)))
            .unwrap_or_default();
        let build_info = buildinfo::version(blob);
        let main_module = buildinfo::main_module(blob);
        let objects = data_symbols(&file, data.len()).ok_or_else(|| BinaryError::NotElf {
            path: path.clone(),
            reason: "symbol names overlap".into(),
        })?;
        let segments: Vec<Segment> = file
            .segments()
            .take(MAX_SEGMENTS + 1)
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
        if segments.len() > MAX_SEGMENTS {
            return Err(BinaryError::NotElf {
                path,
                reason: format!("more than {MAX_SEGMENTS} loadable segments"),
            });
        }
        let pie = file.kind() == ObjectKind::Dynamic;
        let relative = if pie {
            relative_relocations(&file, arch)
        } else {
            HashMap::new()
        };
        let pclntab_section = PCLNTAB_SECTIONS
            .iter()
            .find_map(|name| file.section_by_name(name))
            .map(|s| s.address());
        drop(file);
        let image = Image {
            data,
            segments,
            relative,
        };
        let symbol = objects.get(buildversion::SYMBOL).copied();
        let version = go_version(&path, build_info, &image, symbol)?;
        let mut binary = Self {
            path,
            arch,
            image,
            version,
            main_module,
            pie,
            functions: HashMap::new(),
            objects,
            tables: None,
        };
        let layout = GoVersion::parse(&binary.version)
            .ok()
            .and_then(|v| goruntime::release(v.minor));
        if let Some(layout) = layout {
            binary.load_tables(layout, pclntab_section)?;
        }
        Ok(binary)
    }

    /// Finds the pclntab and moduledata and reads every function's bounds. The table must
    /// be in the format of the release the binary says it is.
    fn load_tables(&mut self, layout: &Layout, section: Option<u64>) -> Result<(), BinaryError> {
        let path = || self.path.clone();
        let pclntab = section
            .or_else(|| self.scan_for_pclntab())
            .ok_or_else(|| BinaryError::NoPclntab { path: path() })?;
        let bytes = self.image.bytes_at(pclntab).unwrap_or_default();
        let pclntab_error = |reason| BinaryError::Pclntab {
            path: path(),
            reason,
        };
        // The text start is not known yet: parse once for the header's offsets.
        let header = Pclntab::parse(bytes, 0).map_err(pclntab_error)?;
        let format = header.format();
        if *format != layout.pclntab {
            return Err(BinaryError::TableFormat {
                path: path(),
                version: self.version.clone(),
                found: format.releases,
                magic: format.magic,
            });
        }
        let funcnametab = u64::try_from(header.funcnametab_offset())
            .ok()
            .and_then(|off| pclntab.checked_add(off))
            .ok_or(pclntab_error(PclntabError::Corrupt("header")))?;
        let module = Module::find(
            &self.image,
            &layout.moduledata,
            pclntab,
            funcnametab,
            self.objects.get("runtime.firstmoduledata").copied(),
        )
        .map_err(|reason| BinaryError::Module {
            path: path(),
            reason,
        })?;
        let table = Pclntab::parse(bytes, module.text).map_err(pclntab_error)?;
        // Go's code is in the file: functions that reach further are corrupt, and sizing
        // them would walk pc tables out of proportion to the file.
        let file_len = u64::try_from(self.image.data.len()).unwrap_or(u64::MAX);
        if table.text_len().is_none_or(|len| len > file_len) {
            return Err(pclntab_error(PclntabError::Corrupt(
                "functions reach past the file",
            )));
        }
        // By name: the function, its size, and its place in the table.
        let mut functions: HashMap<String, (Function, usize)> =
            HashMap::with_capacity(table.function_count());
        let mut names_len = 0_usize;
        for i in 0..table.function_count() {
            let f = table.func(i).map_err(pclntab_error)?;
            let name = table.name(&f).map_err(pclntab_error)?;
            // The linker writes each function's name on its own: names longer together
            // than the table overlap, and copying them could take gigabytes.
            names_len = names_len.saturating_add(name.len());
            if names_len > bytes.len() {
                return Err(pclntab_error(PclntabError::Corrupt(
                    "function names overlap",
                )));
            }
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

    /// The first 8-aligned pclntab header in the loaded image that parses, in any format.
    fn scan_for_pclntab(&self) -> Option<u64> {
        let magics = goruntime::PCLNTAB_FORMATS.map(|f| f.magic.to_le_bytes());
        self.image.segments.iter().find_map(|s| {
            let bytes = self.image.segment_bytes(s)?;
            let skip = usize::try_from(s.vaddr.wrapping_neg() % 8).ok()?;
            (skip..bytes.len()).step_by(8).find_map(|at| {
                let rest = bytes.get(at..)?;
                let magic = magics.iter().any(|m| rest.starts_with(m));
                if !magic || Pclntab::parse(rest, 0).is_err() {
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
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Refuses a program of another architecture than this build's: its probes would read
    /// the wrong registers.
    pub fn ensure_native(&self) -> Result<(), BinaryError> {
        if self.arch == Arch::NATIVE {
            Ok(())
        } else {
            Err(BinaryError::ForeignArch {
                path: self.path.clone(),
                arch: self.arch,
            })
        }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw Go version string: from the build info, or the runtime's
    /// (`runtime.buildVersion`) when the build info was removed.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether `function` (a Go symbol name) belongs to the program's own module: package
    /// `main`, or a package under the main module's path.
    #[must_use]
    pub fn in_main_module(&self, function: &str) -> bool {
        if function.starts_with("main.") {
            return true;
        }
        self.main_module.as_deref().is_some_and(|m| {
            function
                .strip_prefix(m)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('/'))
        })
    }

    /// A little-endian integer of `N` bytes at link-time address `addr` in the file's
    /// data (type descriptors are there: their sizes are constants of the binary).
    #[must_use]
    pub fn read_le<const N: usize>(&self, addr: u64) -> Option<u64> {
        let bytes: [u8; N] = self.image.bytes_at(addr)?.get(..N)?.try_into().ok()?;
        let mut word = [0_u8; 8];
        word.get_mut(..N)?.copy_from_slice(&bytes);
        Some(u64::from_le_bytes(word))
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

/// The Go version: from the build info, else from the runtime's own string, which is there
/// when some release builds remove the build info, and before Go 1.18, whose build info held
/// no version string of its own. `symbol` is `runtime.buildVersion`'s address, if known.
fn go_version(
    path: &Path,
    build_info: Result<String, BuildInfoError>,
    image: &Image,
    symbol: Option<u64>,
) -> Result<String, BinaryError> {
    let build_info_error = |reason| BinaryError::BuildInfo {
        path: path.to_owned(),
        reason,
    };
    match build_info {
        Ok(version) => Ok(version),
        Err(BuildInfoError::Missing) => {
            buildversion::find(image, symbol).map_err(|reason| BinaryError::BuildVersion {
                path: path.to_owned(),
                reason,
            })
        }
        Err(reason @ BuildInfoError::OldFormat) => {
            buildversion::find(image, symbol).map_err(|_| build_info_error(reason))
        }
        Err(reason) => Err(build_info_error(reason)),
    }
}

/// Data symbols (global variables) by name; `None` when their names add up to more than
/// the file, which only a crafted symbol table pointing them into one long string does
/// (copying them out could take gigabytes).
fn data_symbols(file: &object::File<'_>, file_len: usize) -> Option<HashMap<String, u64>> {
    let mut objects = HashMap::new();
    let mut names_len = 0_usize;
    for symbol in file.symbols().filter(|s| s.kind() == SymbolKind::Data) {
        let Ok(name) = symbol.name() else {
            continue;
        };
        names_len = names_len.saturating_add(name.len());
        if names_len > file_len {
            return None;
        }
        objects.insert(name.to_owned(), symbol.address());
    }
    Some(objects)
}

/// The relative entries of the dynamic relocations (`R_X86_64_RELATIVE`,
/// `R_AARCH64_RELATIVE`): site → target.
fn relative_relocations(file: &object::File<'_>, arch: Arch) -> HashMap<u64, u64> {
    let relative = RelocationFlags::Elf {
        r_type: arch.relative_relocation(),
    };
    file.dynamic_relocations()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r.flags() == relative)
        .filter_map(|(at, r)| Some((at, u64::try_from(r.addend()).ok()?)))
        .collect()
}

impl BinaryError {
    /// The file is no Go program at all (rather than a Go program map-trace cannot read):
    /// for a launcher such as `sh` or `make` under `-- CMD`, expected.
    #[must_use]
    pub fn is_not_go(&self) -> bool {
        matches!(
            self,
            BinaryError::NotElf { .. } | BinaryError::BuildVersion { .. }
        )
    }
}

impl GoBinary {
    /// The runtime a binary was built with: version from its build info (or the runtime's
    /// version string), flavour from its functions; the two must agree.
    pub fn runtime(&self) -> Result<Runtime, RuntimeError> {
        let version = GoVersion::parse(self.version())?;
        version.check_supported()?;
        let path = || self.path().display().to_string();
        let found = detect_flavour(|s| self.has_function(s))
            .ok_or_else(|| RuntimeError::UnknownFlavour(path()))?;
        match version.flavour() {
            Some(claimed) if claimed != found => Err(RuntimeError::FlavourMismatch {
                path: path(),
                version: version.raw.clone(),
                claimed,
                found,
            }),
            _ => Runtime::new(version, found),
        }
    }
}

/// A small Go 1.26 executable made in memory, for unit tests here and in the probe planner.
#[cfg(test)]
pub(crate) mod testing {
    use crate::binary::{
        gotypes::{Kind, TYPE_KIND, TYPE_STR, TYPE_TFLAG},
        pclntab::{
            Pclntab,
            testing::{TestFunc, table},
        },
    };
    use crate::goruntime::{
        GO_1_20, MAP_TYPE_KEY, MODULEDATA_1_21, MODULEDATA_FUNCNAMETAB, MODULEDATA_PCHEADER,
    };

    /// The functions, 0x40 apart from the text start: a prologue with the stack check, a
    /// body and a RET in their first 0x20 bytes.
    pub(crate) const FUNCTIONS: [&str; 4] = [
        "main.main",
        "runtime.mapassign_faststr",
        "internal/runtime/maps.(*table).grow",
        "internal/runtime/maps.(*table).rehash",
    ];
    /// CMPQ SP,0x10(R14); JBE; PUSHQ BP; MOVQ SP,BP; POPQ BP; RET; then NOPs.
    const CODE: [u8; 12] = [
        0x49, 0x3b, 0x66, 0x10, 0x76, 0x0a, 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3,
    ];
    /// Where the first instruction after the prologue, and the RET, are in each function.
    pub(crate) const BODY: u64 = 6;
    pub(crate) const RET: u64 = 11;
    /// Line 10 on the prologue, 12 after it (pcln), sp 0 and file 0 throughout (0x20 bytes).
    const PCSP: [u8; 3] = [0x02, 0x20, 0x00];
    const PCLN: [u8; 5] = [0x16, 0x06, 0x04, 0x1a, 0x00];
    const BASE: u64 = 0x40_0000;
    /// The writable segment is loaded this far above its file offset.
    const DATA_BASE: u64 = 0x41_0000;

    #[derive(Default)]
    pub(crate) struct Options {
        /// `ET_DYN` instead of `ET_EXEC` (no relocations: pointers are in the file).
        pub pie: bool,
        /// A symbol table with these data symbols (`runtime.firstmoduledata` is where
        /// [`Synthetic::moduledata`] says).
        pub symbols: Vec<(String, u64)>,
        /// More loadable segments, of nothing useful.
        pub extra_segments: usize,
        /// Another name for `main.main`.
        pub main_name: Option<String>,
        /// No `.go.buildinfo` blob: only `runtime.buildVersion` tells the version.
        pub without_build_info: bool,
    }

    /// The file and where its parts are.
    pub(crate) struct Synthetic {
        pub bytes: Vec<u8>,
        pub text: u64,
        /// A `map[string]int` type; its key type `string` at [`Synthetic::key_type`].
        pub map_type: u64,
        pub key_type: u64,
        pub moduledata: u64,
        /// `runtime.buildVersion`: a string header pointing at `go1.26.6` in read-only data.
        pub build_version: u64,
        /// File offsets of the pclntab and of the symbol table (0 without one).
        pub pclntab_at: usize,
        pub symtab_at: usize,
    }

    fn put(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }

    fn align(b: &mut Vec<u8>, to: usize) -> usize {
        b.resize(b.len().next_multiple_of(to), 0);
        b.len()
    }

    fn u64_of(at: usize) -> u64 {
        u64::try_from(at).unwrap()
    }

    /// `base` plus a field offset.
    fn field(base: usize, off: u64) -> usize {
        base + usize::try_from(off).unwrap()
    }

    /// The symbol that names moduledata, in binaries that keep their symbol table.
    pub(crate) const MODULEDATA_SYMBOL: &str = "runtime.firstmoduledata";

    #[expect(clippy::too_many_lines, reason = "one file, laid out in order")]
    pub(crate) fn elf(options: &Options) -> Synthetic {
        let phnum = 2 + options.extra_segments;
        let mut b = vec![0; 64 + 56 * phnum];

        // Read-only and executable: headers, text, pclntab, types.
        let text_at = align(&mut b, 16);
        for _ in FUNCTIONS {
            let mut code = [0xcc_u8; 0x40];
            code[..0x20].fill(0x90);
            code[..CODE.len()].copy_from_slice(&CODE);
            b.extend_from_slice(&code);
        }
        let text = BASE + u64_of(text_at);
        let mut names = FUNCTIONS;
        if let Some(main) = &options.main_name {
            names[0] = main;
        }
        let funcs: Vec<TestFunc<'_>> = (0..)
            .zip(names)
            .map(|(i, name)| TestFunc {
                name,
                entry: 0x40 * i,
                pcsp: &PCSP,
                pcfile: &PCSP,
                pcln: &PCLN,
                inl_index: None,
            })
            .collect();
        let end = 0x40 * u32::try_from(FUNCTIONS.len()).unwrap();
        let pclntab_bytes = table(&GO_1_20, &funcs, end, &[]);
        let funcnametab = u64_of(
            Pclntab::parse(&pclntab_bytes, 0)
                .unwrap()
                .funcnametab_offset(),
        );
        let pclntab_at = align(&mut b, 8);
        b.extend_from_slice(&pclntab_bytes);
        let types_at = align(&mut b, 8);
        let types = BASE + u64_of(types_at);
        b.resize(types_at + 0xb0, 0);
        // map[string]int (TFlagExtraStar: its name has a `*` to drop), key at +0x40.
        put(&mut b, field(types_at, TYPE_TFLAG), &[2]);
        put(&mut b, field(types_at, TYPE_KIND), &[Kind::Map as u8]);
        put(&mut b, field(types_at, TYPE_STR), &0x80_i32.to_le_bytes());
        put(
            &mut b,
            field(types_at, MAP_TYPE_KEY),
            &(types + 0x40).to_le_bytes(),
        );
        let key_at = types_at + 0x40;
        put(&mut b, field(key_at, TYPE_KIND), &[Kind::String as u8]);
        put(&mut b, field(key_at, TYPE_STR), &0xa0_i32.to_le_bytes());
        put(&mut b, types_at + 0x80, b"\x00\x0f*map[string]int");
        put(&mut b, types_at + 0xa0, b"\x00\x06string");
        let version_at = b.len();
        b.extend_from_slice(b"go1.26.6");
        let code_end = b.len();

        // Writable: build info, moduledata, runtime.buildVersion.
        let data_at = align(&mut b, 16);
        if !options.without_build_info {
            b.extend_from_slice(b"\xff Go buildinf:\x08\x02");
            b.resize(data_at + 32, 0);
            b.push(8);
            b.extend_from_slice(b"go1.26.6\0");
        }
        let moduledata_at = align(&mut b, 8);
        let moduledata = DATA_BASE + u64_of(moduledata_at);
        b.resize(moduledata_at + 336, 0);
        let pclntab = BASE + u64_of(pclntab_at);
        let l = MODULEDATA_1_21;
        for (off, value) in [
            (MODULEDATA_PCHEADER, pclntab),
            (MODULEDATA_FUNCNAMETAB, pclntab + funcnametab),
            (l.text, text),
            (l.types, types),
            (l.etypes, types + 0xb0),
            (l.gofunc, types),
        ] {
            put(&mut b, field(moduledata_at, off), &value.to_le_bytes());
        }
        let build_version_at = align(&mut b, 8);
        b.extend_from_slice(&(BASE + u64_of(version_at)).to_le_bytes());
        b.extend_from_slice(&8_u64.to_le_bytes());
        let data_end = b.len();

        // Symbols: .symtab, .strtab, .shstrtab and the section headers.
        let (mut shoff, mut shnum, mut symtab_at) = (0, 0, 0);
        if !options.symbols.is_empty() {
            let mut strtab = vec![0];
            let mut symtab = vec![0; 24];
            for (name, addr) in &options.symbols {
                let mut sym = [0_u8; 24];
                put(
                    &mut sym,
                    0,
                    &u32::try_from(strtab.len()).unwrap().to_le_bytes(),
                );
                // STB_GLOBAL, STT_OBJECT; SHN_ABS.
                sym[4] = 0x11;
                put(&mut sym, 6, &0xfff1_u16.to_le_bytes());
                put(&mut sym, 8, &addr.to_le_bytes());
                symtab.extend_from_slice(&sym);
                strtab.extend_from_slice(name.as_bytes());
                strtab.push(0);
            }
            let shstrtab = b"\0.symtab\0.strtab\0.shstrtab\0";
            symtab_at = align(&mut b, 8);
            b.extend_from_slice(&symtab);
            let strtab_at = b.len();
            b.extend_from_slice(&strtab);
            let shstrtab_at = b.len();
            b.extend_from_slice(shstrtab);
            shoff = align(&mut b, 8);
            b.resize(shoff + 64, 0);
            for (name, kind, at, size, link, entsize) in [
                (1_u32, 2_u32, symtab_at, symtab.len(), 2_u32, 24_u64),
                (9, 3, strtab_at, strtab.len(), 0, 0),
                (17, 3, shstrtab_at, shstrtab.len(), 0, 0),
            ] {
                let mut sh = [0_u8; 64];
                put(&mut sh, 0, &name.to_le_bytes());
                put(&mut sh, 4, &kind.to_le_bytes());
                put(&mut sh, 24, &u64_of(at).to_le_bytes());
                put(&mut sh, 32, &u64_of(size).to_le_bytes());
                put(&mut sh, 40, &link.to_le_bytes());
                // sh_info of .symtab: the first global symbol.
                put(&mut sh, 44, &u32::from(kind == 2).to_le_bytes());
                put(&mut sh, 48, &1_u64.to_le_bytes());
                put(&mut sh, 56, &entsize.to_le_bytes());
                b.extend_from_slice(&sh);
            }
            shnum = 4;
        }

        // ELF header and program headers.
        put(&mut b, 0, b"\x7fELF\x02\x01\x01");
        put(
            &mut b,
            16,
            &(if options.pie { 3_u16 } else { 2 }).to_le_bytes(),
        );
        put(&mut b, 18, &62_u16.to_le_bytes());
        put(&mut b, 20, &1_u32.to_le_bytes());
        put(&mut b, 24, &text.to_le_bytes());
        put(&mut b, 32, &64_u64.to_le_bytes());
        put(&mut b, 40, &u64_of(shoff).to_le_bytes());
        for (at, v) in [(52, 64_u16), (54, 56), (56, u16::try_from(phnum).unwrap())] {
            put(&mut b, at, &v.to_le_bytes());
        }
        for (at, v) in [(58, 64_u16), (60, shnum), (62, shnum.saturating_sub(1))] {
            put(&mut b, at, &v.to_le_bytes());
        }
        let segments = [
            (5_u32, 0, BASE, code_end),
            (6, data_at, DATA_BASE + u64_of(data_at), data_end - data_at),
        ]
        .into_iter()
        .chain((0..options.extra_segments).map(|i| (4, 0, 0x100_0000 * (u64_of(i) + 1), 64)));
        for (i, (flags, offset, vaddr, size)) in segments.enumerate() {
            let at = 64 + 56 * i;
            put(&mut b, at, &1_u32.to_le_bytes());
            put(&mut b, at + 4, &flags.to_le_bytes());
            put(&mut b, at + 8, &u64_of(offset).to_le_bytes());
            for field in [16, 24] {
                put(&mut b, at + field, &vaddr.to_le_bytes());
            }
            for field in [32, 40] {
                put(&mut b, at + field, &u64_of(size).to_le_bytes());
            }
            put(&mut b, at + 48, &0x1000_u64.to_le_bytes());
        }
        Synthetic {
            bytes: b,
            text,
            map_type: types,
            key_type: types + 0x40,
            moduledata,
            build_version: DATA_BASE + u64_of(build_version_at),
            pclntab_at,
            symtab_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::{
        testing::{BODY, FUNCTIONS, MODULEDATA_SYMBOL, Options, RET, Synthetic, elf},
        *,
    };
    use crate::{
        binary::{gotypes::Kind, mutate::mutated},
        goruntime::{Flavour, RuntimeError},
    };

    fn parse(bytes: Vec<u8>) -> Result<GoBinary, BinaryError> {
        GoBinary::parse(Path::new("synthetic"), bytes)
    }

    fn with_symbols(extra: &[(&str, u64)]) -> Synthetic {
        let moduledata = elf(&Options::default()).moduledata;
        let symbols = [(MODULEDATA_SYMBOL, moduledata)]
            .iter()
            .chain(extra)
            .map(|&(n, a)| (n.to_owned(), a))
            .collect();
        elf(&Options {
            symbols,
            ..Options::default()
        })
    }

    /// Everything a session asks of a binary; answers may be anything, but no panic.
    fn poke(binary: &GoBinary, pcs: &[u64]) {
        for &pc in pcs {
            let _ = binary.symbolize(pc);
            let _ = (binary.type_name(pc), binary.type_kind(pc));
            let _ = binary.map_key_type(pc);
            if let Some(off) = binary.file_offset(pc) {
                let _ = binary.vaddr_of_file_offset(off);
            }
        }
        for name in FUNCTIONS {
            if let Some(f) = binary.function(name) {
                let _ = binary.code(f);
            }
        }
        if let Ok(runtime) = binary.runtime() {
            let _ = crate::plan::plan(binary, &runtime, &crate::cli::EventSet::all());
        }
    }

    #[test]
    fn reads_a_synthetic_go_binary() {
        for s in [
            elf(&Options::default()),
            elf(&Options {
                pie: true,
                ..Options::default()
            }),
            with_symbols(&[]),
        ] {
            let binary = parse(s.bytes.clone()).unwrap();
            assert_eq!(binary.version(), "go1.26.6");
            for (i, name) in (0..).zip(FUNCTIONS) {
                let f = binary.function(name).unwrap();
                assert_eq!((f.addr, f.size), (s.text + 0x40 * i, 0x20));
                assert_eq!(binary.code(f).unwrap().len(), 0x20);
            }
            let frames = binary.symbolize(s.text + 8);
            assert_eq!(
                frames,
                [Frame {
                    function: "main.main".into(),
                    file: "/src/main.go".into(),
                    line: 12
                }]
            );
            assert_eq!(
                binary.type_name(s.map_type).as_deref(),
                Some("map[string]int")
            );
            assert_eq!(binary.map_key_type(s.map_type), Some(s.key_type));
            assert_eq!(binary.type_kind(s.key_type), Some(Kind::String));
            let runtime = binary.runtime().unwrap();
            assert_eq!(runtime.flavour, Flavour::Swiss);
            let plan = crate::plan::plan(&binary, &runtime, &crate::cli::EventSet::all()).unwrap();
            let grow = s.text + 0x80;
            let mut points: Vec<u64> = plan.points.iter().map(|p| p.addr).collect();
            points.sort_unstable();
            assert_eq!(points, [s.text + 0x40 + BODY, grow + BODY, grow + RET]);
        }
        let s = with_symbols(&[]);
        let binary = parse(s.bytes).unwrap();
        assert_eq!(binary.object(MODULEDATA_SYMBOL), Some(s.moduledata));
        assert!(
            parse(elf(&Options::default()).bytes)
                .unwrap()
                .object(MODULEDATA_SYMBOL)
                .is_none()
        );
    }

    #[test]
    fn reads_the_runtime_version_without_build_info() {
        let bare = || Options {
            without_build_info: true,
            ..Options::default()
        };
        let at = elf(&bare()).build_version;
        let with_symbol = |addr| Options {
            symbols: vec![(buildversion::SYMBOL.to_owned(), addr)],
            ..bare()
        };
        let pie = Options {
            pie: true,
            ..bare()
        };
        for options in [bare(), pie, with_symbol(at)] {
            let binary = parse(elf(&options).bytes).unwrap();
            assert_eq!(binary.version(), "go1.26.6");
            assert_eq!(binary.runtime().unwrap().flavour, Flavour::Swiss);
        }
        // A symbol that names no version string is an error, not a reason to scan.
        assert!(matches!(
            parse(elf(&with_symbol(at + 8)).bytes),
            Err(BinaryError::BuildVersion {
                reason: BuildVersionError::BadSymbol,
                ..
            })
        ));
    }

    /// The synthetic binary with every copy of its version string replaced by `version`
    /// (as long).
    fn claiming(options: &Options, version: &str) -> Vec<u8> {
        let mut bytes = elf(options).bytes;
        let (from, to) = (b"go1.26.6", version.as_bytes());
        assert_eq!(from.len(), to.len());
        while let Some(at) = bytes.windows(from.len()).position(|w| w == from) {
            bytes[at..at + to.len()].copy_from_slice(to);
        }
        bytes
    }

    #[test]
    fn versions_that_disagree_with_the_binary_are_refused() {
        let bare = Options {
            without_build_info: true,
            ..Options::default()
        };
        for options in [Options::default(), bare] {
            // Go 1.19 writes the Go 1.18 pclntab format; this table is 1.20's.
            let err = parse(claiming(&options, "go1.19.8")).err().unwrap();
            assert!(
                matches!(
                    err,
                    BinaryError::TableFormat {
                        found: "Go 1.20 and later",
                        magic: 0xffff_fff1,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("says it was built with go1.19.8"));
            // Go 1.23 builds classic maps; this binary has the swiss maps' runtime.
            let binary = parse(claiming(&options, "go1.23.9")).unwrap();
            let err = binary.runtime().unwrap_err();
            assert!(
                matches!(
                    err,
                    RuntimeError::FlavourMismatch {
                        claimed: Flavour::Classic,
                        found: Flavour::Swiss,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn old_build_info_names_no_version_but_the_runtime_does() {
        // Before Go 1.18 the build info pointed at the version instead of holding it.
        let mut bytes = claiming(&Options::default(), "go1.17.9");
        let magic = bytes
            .windows(14)
            .position(|w| w == b"\xff Go buildinf:")
            .unwrap();
        bytes[magic + 15] = 0;
        let binary = parse(bytes.clone()).unwrap();
        assert_eq!(binary.version(), "go1.17.9");
        let err = binary.runtime().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("built with go1.17.9; map-trace supports Go 1.19 and 1.21 to 1.27"),
            "{err}"
        );
        // Without the runtime's string either, the build info's own error.
        while let Some(at) = bytes.windows(8).position(|w| w == b"go1.17.9") {
            bytes[at] = b'x';
        }
        assert!(matches!(
            parse(bytes),
            Err(BinaryError::BuildInfo {
                reason: BuildInfoError::OldFormat,
                ..
            })
        ));
    }

    #[test]
    fn a_cause_is_said_once() {
        // main prints the chain of sources: a message that names its cause has none.
        let mut s = elf(&Options {
            without_build_info: true,
            ..Options::default()
        });
        let version = s.bytes.windows(8).position(|w| w == b"go1.26.6").unwrap();
        s.bytes[version] = b'x';
        let err = parse(s.bytes).err().unwrap();
        assert!(matches!(
            err,
            BinaryError::BuildVersion {
                reason: BuildVersionError::Missing,
                ..
            }
        ));
        assert!(std::error::Error::source(&err).is_none(), "{err}");
        assert_eq!(
            err.to_string(),
            "synthetic: no Go build info and no Go runtime version string (not a Go program)"
        );
    }

    #[test]
    fn too_many_segments_are_refused() {
        let segments = |extra_segments| {
            parse(
                elf(&Options {
                    extra_segments,
                    ..Options::default()
                })
                .bytes,
            )
        };
        // The two real ones and the extra ones.
        assert!(segments(MAX_SEGMENTS - 2).is_ok());
        assert!(matches!(
            segments(MAX_SEGMENTS - 1),
            Err(BinaryError::NotElf { .. })
        ));
    }

    #[test]
    fn overlapping_symbol_names_are_refused() {
        // Symbols named by every suffix of one long name: copied out one by one they would
        // take the name's length squared.
        let long = "x".repeat(20_000);
        let extra: Vec<(String, u64)> = (0..200).map(|i| (format!("s{i}"), i)).collect();
        let mut symbols: Vec<(&str, u64)> = vec![(&long, 1)];
        symbols.extend(extra.iter().map(|(n, a)| (n.as_str(), *a)));
        let mut s = with_symbols(&symbols);
        assert!(parse(s.bytes.clone()).is_ok());
        // Point the short symbols (3 on) into the long one (2, named after moduledata's).
        let first = 1 + MODULEDATA_SYMBOL.len() + 1;
        for i in 0..200 {
            let at = s.symtab_at + 24 * (3 + i);
            let name = u32::try_from(first + i).unwrap();
            s.bytes[at..at + 4].copy_from_slice(&name.to_le_bytes());
        }
        assert!(matches!(parse(s.bytes), Err(BinaryError::NotElf { .. })));
    }

    /// The file offset of function `i`'s `_func` record.
    fn func_record(s: &Synthetic, i: usize) -> usize {
        let word = |at: usize| {
            usize::try_from(u64::from_le_bytes(s.bytes[at..at + 8].try_into().unwrap())).unwrap()
        };
        let u32_at = |at: usize| {
            usize::try_from(u32::from_le_bytes(s.bytes[at..at + 4].try_into().unwrap())).unwrap()
        };
        let pclntable = s.pclntab_at + word(s.pclntab_at + 64);
        pclntable + u32_at(pclntable + 8 * i + 4)
    }

    #[test]
    fn functions_past_the_file_are_refused() {
        let mut s = elf(&Options::default());
        // The functab's end entry, after one (entry, offset) pair per function.
        let end = func_record(&s, 0) - 8;
        s.bytes[end..end + 4].copy_from_slice(&0xffff_0000_u32.to_le_bytes());
        assert!(matches!(
            parse(s.bytes),
            Err(BinaryError::Pclntab {
                reason: PclntabError::Corrupt("functions reach past the file"),
                ..
            })
        ));
    }

    #[test]
    fn overlapping_function_names_are_refused() {
        // Every function named by a suffix of main's long name: with many functions that
        // is the name's length squared in copies.
        let mut s = elf(&Options {
            main_name: Some(format!("main.{}", "x".repeat(2000))),
            ..Options::default()
        });
        assert!(parse(s.bytes.clone()).is_ok());
        let main = func_record(&s, 0);
        let name_off = u32::from_le_bytes(s.bytes[main + 4..main + 8].try_into().unwrap());
        for i in 1..FUNCTIONS.len() {
            let at = func_record(&s, i) + 4;
            let suffix = name_off + u32::try_from(i).unwrap();
            s.bytes[at..at + 4].copy_from_slice(&suffix.to_le_bytes());
        }
        assert!(matches!(
            parse(s.bytes),
            Err(BinaryError::Pclntab {
                reason: PclntabError::Corrupt("function names overlap"),
                ..
            })
        ));
    }

    proptest! {
        // Cheap cases: many of them still run in well under a second.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            headers in 0..=(64 + 2 * 56_usize),
        ) {
            // Behind the synthetic binary's ELF and program headers (or part of them), so
            // that the segments point into arbitrary bytes.
            let s = elf(&Options::default());
            let mut data = s.bytes[..headers].to_vec();
            data.extend_from_slice(&bytes);
            if let Ok(binary) = parse(data) {
                poke(&binary, &[0, s.text + 8, s.map_type, u64::MAX]);
            }
        }

        #[test]
        fn mutated_binaries_never_panic(
            bytes in mutated(with_symbols(&[("runtime.memstats", 0x41_0000)]).bytes),
        ) {
            let s = elf(&Options::default());
            if let Ok(binary) = parse(bytes) {
                poke(&binary, &[s.text + 8, s.text + 0x48, s.map_type, s.key_type, u64::MAX]);
            }
        }

        #[test]
        fn mutated_stripped_pie_binaries_never_panic(
            bytes in mutated(elf(&Options { pie: true, ..Options::default() }).bytes),
        ) {
            let s = elf(&Options::default());
            if let Ok(binary) = parse(bytes) {
                poke(&binary, &[s.text + 8, s.text + 0x88, s.map_type, s.key_type, 0]);
            }
        }

        #[test]
        fn mutated_binaries_without_build_info_never_panic(
            bytes in mutated(
                elf(&Options { without_build_info: true, ..Options::default() }).bytes,
            ),
        ) {
            let s = elf(&Options::default());
            if let Ok(binary) = parse(bytes) {
                poke(&binary, &[s.text + 8, s.text + 0x88, s.map_type, s.key_type, 0]);
            }
        }
    }
}
