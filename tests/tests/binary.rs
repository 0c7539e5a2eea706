//! Reading real Go binaries, no kernel needed: build info, flavour, functions, call sites,
//! type names and probe placement, on normal, stripped, PIE and cgo builds, checked against
//! the symbol table, DWARF, `go tool objdump` and `go tool addr2line`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::{
    collections::{BTreeSet, HashMap},
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
};

use integration_tests::{
    BuildMode, GO_CLASSIC, GO_DEBIAN, GO_SWISS, VARIANTS, Variant, build_go, build_go_mode,
    dwarf_runtime_types, dwarf_structs, go_command, go_version_of, go_versions, without_build_info,
};
use map_trace::{
    binary::{
        Frame, GoBinary,
        arch::Arch,
        disasm,
        gotypes::{self, Kind},
    },
    cli::EventSet,
    goruntime::{self, Flavour, GoVersion, detect_flavour},
    plan::{self, Role},
};
use map_trace_common::EventKind;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};
use proptest::{
    prelude::*,
    sample::{Index, select},
    test_runner::{Config, TestRunner},
};

/// Instruction addresses and texts of `symbol` according to the Go toolchain itself.
fn objdump(version: &str, bin: &std::path::Path, symbol: &str) -> Vec<(u64, String)> {
    let pattern = format!(
        "^{}$",
        symbol
            .replace('.', r"\.")
            .replace('*', r"\*")
            .replace(['(', ')'], ".")
    );
    let out = go_command(version, bin.parent().unwrap())
        .args(["tool", "objdump", "-s", &pattern])
        .arg(bin)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l
                .split('\t')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            let addr = u64::from_str_radix(cols.get(1)?.strip_prefix("0x")?, 16).ok()?;
            Some((addr, (*cols.get(3)?).to_owned()))
        })
        .collect()
}

fn expected_flavour(version: &GoVersion) -> Flavour {
    if version.minor <= 23 {
        Flavour::Classic
    } else {
        Flavour::Swiss
    }
}

#[test]
fn build_info_version_and_flavour() {
    for go in go_versions() {
        let bin = build_go("mapops", &go);
        let binary = GoBinary::open(&bin).unwrap();
        assert_eq!(binary.version(), format!("go{go}"));
        let runtime = binary.runtime().unwrap();
        assert_eq!(
            runtime.flavour,
            expected_flavour(&runtime.version),
            "go{go}"
        );
        assert_eq!(
            detect_flavour(|s| binary.has_function(s)),
            Some(runtime.flavour)
        );
    }
}

/// Builds whose build info was removed, as some release builds ship: the version (with its
/// experiments), the flavour and the functions read from the runtime's own version string
/// and the pclntab equal the intact build's — in every supported build, with and without a
/// symbol table, and PIE and cgo-linked on Debian's Go and a swiss one.
#[test]
fn version_without_build_info_equals_the_build_infos() {
    let mut builds: Vec<(Variant, BuildMode)> = VARIANTS
        .into_iter()
        .flat_map(|v| [(v, BuildMode::Default), (v, BuildMode::Stripped)])
        .collect();
    for go in [GO_DEBIAN, GO_SWISS] {
        let v = Variant { go, experiment: "" };
        builds.extend([(v, BuildMode::Pie), (v, BuildMode::CgoPieStripped)]);
    }
    for (v, mode) in builds {
        let what = format!("{v:?} {mode:?}");
        let bin = v.build_mode("mapops", mode);
        let intact = GoBinary::open(&bin).unwrap();
        let bare = GoBinary::open(&without_build_info(&bin)).unwrap();
        assert_eq!(bare.version(), go_version_of(&bin), "{what}");
        assert_eq!(bare.version(), intact.version(), "{what}");
        assert!(bare.version().starts_with(&format!("go{}", v.go)), "{what}");
        assert!(bare.version().ends_with(v.experiment), "{what}");
        let (a, b) = (intact.runtime().unwrap(), bare.runtime().unwrap());
        assert_eq!(b.flavour.to_string(), v.flavour(), "{what}");
        assert_eq!((a.version, a.flavour), (b.version, b.flavour), "{what}");
        assert!(std::ptr::eq(a.layout, b.layout), "{what}");
        for f in a.layout.all_functions() {
            assert_eq!(bare.function(f.symbol), intact.function(f.symbol), "{what}");
        }
    }
}

/// Probe placement on every supported build, amd64 and arm64, against `go tool objdump`:
/// each entry probe right after the stack check's branch to `morestack` (amd64's JBE) or
/// on it, taken only when the branch is not (arm64's BLS), exit probes on every RET and
/// nowhere else.
#[test]
fn probes_sit_after_the_stack_check_and_every_ret_is_found() {
    for v in VARIANTS {
        for (goarch, arch, branch, after) in [
            ("amd64", Arch::Amd64, "JBE ", 1),
            ("arm64", Arch::Arm64, "BLS ", 0),
        ] {
            let what = format!("go{}{} {goarch}", v.go, v.experiment);
            // The host's build for amd64; arm64's is only read here.
            let bin = if arch == Arch::Amd64 {
                v.build("mapops")
            } else {
                v.build_for("mapops", goarch)
            };
            let binary = GoBinary::open(&bin).unwrap();
            assert_eq!(binary.arch(), arch, "{what}");
            assert_eq!(
                binary.ensure_native().is_ok(),
                arch == Arch::NATIVE,
                "{what}"
            );
            let runtime = binary.runtime().unwrap();
            assert_eq!(runtime.flavour.to_string(), v.flavour(), "{what}");
            let plan = plan::plan(&binary, &runtime, &EventSet::all()).unwrap();
            check_probe_sites(&what, v.go, &bin, &binary, &runtime, &plan, (branch, after));
        }
    }
}

fn check_probe_sites(
    what: &str,
    go: &str,
    bin: &Path,
    binary: &GoBinary,
    runtime: &goruntime::Runtime,
    plan: &plan::Plan,
    (branch, after): (&str, usize),
) {
    // mapops uses every key kind, assign, delete and clear, and its maps grow.
    let entries: Vec<_> = plan
        .points
        .iter()
        .filter(|p| p.role != Role::Return)
        .collect();
    assert_eq!(
        entries.len(),
        runtime.layout.all_functions().count(),
        "{what}: {:?}",
        plan.missing
    );
    for point in entries {
        let symbol = point.function.symbol;
        let insns = objdump(go, bin, symbol);
        let stack_check = insns
            .iter()
            .position(|(_, text)| text.starts_with(branch))
            .unwrap_or_else(|| panic!("{what} {symbol}: no {branch}"));
        assert!(
            stack_check <= 4,
            "{what} {symbol}: stack check is not in the prologue"
        );
        assert_eq!(
            point.addr,
            insns[stack_check + after].0,
            "{what} {symbol}: probe address"
        );
        assert_eq!(point.cookie.on_stack_branch, after == 0, "{what} {symbol}");
        let f = binary.function(symbol).unwrap();
        assert_eq!(f.addr, insns[0].0, "{what} {symbol}: symbol address");
        assert_eq!(
            binary.file_offset(point.addr).unwrap() - binary.file_offset(f.addr).unwrap(),
            point.addr - f.addr
        );
        let rets: BTreeSet<u64> = insns
            .iter()
            .filter(|(_, t)| t.starts_with("RET"))
            .map(|(a, _)| *a)
            .collect();
        let found: BTreeSet<u64> =
            disasm::return_sites(binary.arch(), binary.code(f).unwrap(), f.addr)
                .unwrap()
                .into_iter()
                .collect();
        assert!(!rets.is_empty());
        assert_eq!(found, rets, "{what} {symbol}: RET sites");
        let planned: BTreeSet<u64> = plan
            .points
            .iter()
            .filter(|p| p.role == Role::Return && p.function.symbol == symbol)
            .map(|p| p.addr)
            .collect();
        if point.function.kind.is_timed() {
            assert_eq!(point.role, Role::Entry);
            assert_eq!(planned, rets, "{what} {symbol}: exit probes");
        } else {
            let gc = point.function.kind == EventKind::Gc;
            assert_eq!(point.role, if gc { Role::Gc } else { Role::Op });
            assert!(
                planned.is_empty(),
                "{what} {symbol}: exit probes on an operation"
            );
        }
    }
}

#[test]
fn missing_functions_are_listed_not_fatal() {
    for go in go_versions() {
        // idle uses no maps: the runtime's own map use keeps some functions, not all.
        let bin = build_go("idle", &go);
        let binary = GoBinary::open(&bin).unwrap();
        let runtime = binary.runtime().unwrap();
        let plan = plan::plan(&binary, &runtime, &EventSet::all()).unwrap();
        assert!(!plan.points.is_empty());
        assert!(
            plan.missing.contains(&"runtime.mapclear"),
            "go{go}: {:?}",
            plan.missing
        );
        for symbol in &plan.missing {
            assert!(!binary.has_function(symbol));
        }
    }
}

#[test]
fn non_go_and_non_elf_files_are_refused() {
    let err = GoBinary::open(std::path::Path::new("/bin/sh"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("no Go build info"), "{err}");
    let err = GoBinary::open(std::path::Path::new("/etc/hostname"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("not an ELF executable"), "{err}");
}

/// The builds of `callsite` checked below, each with the build whose symbol table is the
/// truth for it: itself, or the same link unstripped.
const MODES: [(BuildMode, BuildMode); 6] = [
    (BuildMode::Default, BuildMode::Default),
    (BuildMode::Stripped, BuildMode::Default),
    (BuildMode::Pie, BuildMode::Pie),
    (BuildMode::Cgo, BuildMode::Cgo),
    (BuildMode::CgoPie, BuildMode::CgoPie),
    (BuildMode::CgoPieStripped, BuildMode::CgoPie),
];

/// Function and data symbols of an unstripped ELF file: name → (address, size).
fn symtab(bin: &Path) -> HashMap<String, (u64, u64)> {
    let data = std::fs::read(bin).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.symbols()
        .filter_map(|s| Some((s.name().ok()?.to_owned(), (s.address(), s.size()))))
        .collect()
}

fn elf_has_section(bin: &Path, name: &str) -> bool {
    let data = std::fs::read(bin).unwrap();
    object::File::parse(&*data)
        .unwrap()
        .section_by_name(name)
        .is_some()
}

/// The line of `callsite`'s source that contains `marker`.
fn source_line(marker: &str) -> u32 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/callsite/main.go");
    let text = std::fs::read_to_string(path).unwrap();
    let mut found = text.lines().zip(1..).filter(|(l, _)| l.contains(marker));
    let (_, line) = found
        .next()
        .unwrap_or_else(|| panic!("no {marker} in main.go"));
    assert!(found.next().is_none(), "{marker} twice in main.go");
    line
}

/// Return addresses of the calls to `callee` in `function`, by `go tool objdump`.
fn return_addresses(version: &str, bin: &Path, function: &str, callee: &str) -> Vec<u64> {
    let insns = objdump(version, bin, function);
    let call = format!("CALL {callee}(SB)");
    insns
        .windows(2)
        .filter(|w| w[0].1 == call)
        .map(|w| w[1].0)
        .collect()
}

/// `go tool addr2line` of `pc`: the function and `file:line`. A recent Go's, for builds of
/// any release: Go 1.19's reads its own PIE builds as all `?:0` (it takes the text start
/// from the pclntab's header, which PIE leaves to a relocation).
fn addr2line(bin: &Path, pc: u64) -> (String, String) {
    let mut child = go_command(GO_SWISS, bin.parent().unwrap())
        .args(["tool", "addr2line"])
        .arg(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pc:#x}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_owned(),
        lines.next().unwrap().to_owned(),
    )
}

/// Runs a `callsite` build: the run-time addresses it prints (`map`, `session`, `main`).
fn run_callsite(bin: &Path) -> HashMap<String, u64> {
    let out = std::process::Command::new(bin).output().unwrap();
    assert!(out.status.success(), "{}", bin.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .chunks(2)
        .filter_map(|kv| {
            let hex = kv.get(1)?.strip_prefix("0x")?;
            Some((kv[0].to_owned(), u64::from_str_radix(hex, 16).ok()?))
        })
        .collect()
}

#[test]
fn binary_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<GoBinary>();
}

#[test]
fn pclntab_bounds_equal_the_symbol_table() {
    for go in go_versions() {
        for mode in [
            BuildMode::Default,
            BuildMode::Pie,
            BuildMode::Cgo,
            BuildMode::CgoPie,
        ] {
            let what = format!("go{go} {mode:?}");
            let bin = build_go_mode("callsite", &go, mode);
            let binary = GoBinary::open(&bin).unwrap();
            let data = std::fs::read(&bin).unwrap();
            let file = object::File::parse(&*data).unwrap();
            // Go's code: the C code of cgo builds lies outside it, unknown to the pclntab.
            let symbols = symtab(&bin);
            let go_text = symbols["runtime.text"].0..symbols["runtime.etext"].0;
            let mut matched = 0;
            for s in file
                .symbols()
                .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            {
                let (name, addr, size) = (s.name().unwrap(), s.address(), s.size());
                // The linker's 1-byte FIPS text markers have no pc tables: the pclntab
                // bounds them by the next function only.
                if !go_text.contains(&addr) || name.starts_with("go:textfips") {
                    continue;
                }
                // The function at its first and last byte, and none just after it.
                let outer = |pc: u64| binary.symbolize(pc + 1).pop().map(|f| f.function);
                let pclntab_name = outer(addr).unwrap_or_else(|| panic!("{what}: {name}"));
                assert_eq!(outer(addr + size - 1).as_ref(), Some(&pclntab_name));
                // Go 1.18 and 1.19 write what brackets hold (type arguments, array lengths)
                // as `[...]`, as their tracebacks print it: such names can be shared, by
                // neighbours too, so those functions are checked by address only.
                if pclntab_name.contains("[...]") && !name.contains("[...]") {
                    let (open, close) = (name.find('[').unwrap(), name.rfind(']').unwrap());
                    let elided = format!("{}[...]{}", &name[..open], &name[close + 1..]);
                    assert_eq!(pclntab_name.replace('·', "."), elided, "{what}");
                    matched += 1;
                    continue;
                }
                assert_ne!(
                    outer(addr + size).as_ref(),
                    Some(&pclntab_name),
                    "{what} {name}"
                );
                // The symbol table writes `·` as `.`, and also calls an assembly function
                // `.abi0` when its wrapper is gone; the pclntab then has the plain name.
                let plain = pclntab_name.replace('·', ".");
                assert!(
                    name == plain || name == format!("{plain}.abi0"),
                    "{what}: {name} is {pclntab_name} in the pclntab"
                );
                let f = binary
                    .function(name)
                    .or_else(|| binary.function(&pclntab_name))
                    .unwrap_or_else(|| panic!("{what}: no function {name}"));
                assert_eq!((f.addr, f.size), (addr, size), "{what} {name}");
                matched += 1;
            }
            assert!(matched > 1000, "{what}: {matched} functions");
        }
    }
}

/// One build of `callsite` under test, and the build whose symbol table is its truth.
struct Build {
    go: String,
    what: String,
    bin: PathBuf,
    truth: PathBuf,
    stripped: bool,
    pie: bool,
    binary: GoBinary,
    symbols: HashMap<String, (u64, u64)>,
}

impl Build {
    fn new(go: &str, mode: BuildMode, truth_mode: BuildMode) -> Self {
        let bin = build_go_mode("callsite", go, mode);
        let truth = build_go_mode("callsite", go, truth_mode);
        Self {
            go: go.to_owned(),
            what: format!("go{go} {mode:?}"),
            binary: GoBinary::open(&bin).unwrap(),
            symbols: symtab(&truth),
            stripped: mode != truth_mode,
            pie: matches!(
                mode,
                BuildMode::Pie | BuildMode::CgoPie | BuildMode::CgoPieStripped
            ),
            bin,
            truth,
        }
    }

    /// Functions: the same bounds as the symbol table's, code that ends in place.
    fn check_functions(&self) {
        let (binary, what) = (&self.binary, &self.what);
        assert_eq!(binary.is_pie(), self.pie, "{what}");
        if self.stripped {
            assert!(
                !elf_has_section(&self.bin, ".symtab"),
                "{what} is not stripped"
            );
            assert!(binary.object("runtime.memstats").is_none(), "{what}");
        }
        for name in ["runtime.mapassign_faststr", "main.register", "main.main"] {
            let f = binary
                .function(name)
                .unwrap_or_else(|| panic!("{what}: no {name}"));
            assert_eq!((f.addr, f.size), self.symbols[name], "{what} {name}");
            let code = binary.code(f).unwrap();
            assert_eq!(code.len() as u64, f.size);
            let offset = binary.file_offset(f.addr).unwrap();
            assert_eq!(binary.vaddr_of_file_offset(offset), Some(f.addr), "{what}");
            assert!(
                !disasm::return_sites(binary.arch(), code, f.addr)
                    .unwrap()
                    .is_empty(),
                "{what} {name}: no RET"
            );
        }
    }

    /// Call sites against the source's markers and `go tool addr2line`.
    fn check_call_sites(&self) {
        let (binary, what, go) = (&self.binary, &self.what, self.go.as_str());
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/callsite/main.go");
        let source = source.to_str().unwrap();
        let assign = "runtime.mapassign_faststr";

        // A call in main.register, not inlined: one frame.
        let rets = return_addresses(go, &self.truth, "main.register", assign);
        assert_eq!(rets.len(), 1, "{what}: calls in main.register");
        let frames = binary.symbolize(rets[0]);
        let line = source_line("// CALLSITE");
        assert_eq!(
            frames,
            [Frame {
                function: "main.register".into(),
                file: source.into(),
                line,
            }],
            "{what}"
        );
        let (function, position) = addr2line(&self.truth, rets[0] - 1);
        assert_eq!(function, frames[0].function, "{what}");
        assert_eq!(position, format!("{source}:{line}"), "{what}");

        // remember's assign, inlined into main.main: two frames.
        let rets = return_addresses(go, &self.truth, "main.main", assign);
        assert_eq!(rets.len(), 1, "{what}: calls in main.main");
        let frames = binary.symbolize(rets[0]);
        let got: Vec<(&str, &str, u32)> = frames
            .iter()
            .map(|f| (f.function.as_str(), f.file.as_str(), f.line))
            .collect();
        let (inlined, call) = (
            source_line("// INLINED"),
            source_line("remember(os.Args[0])"),
        );
        assert_eq!(
            got,
            [
                ("main.remember", source, inlined),
                ("main.main", source, call)
            ],
            "{what}"
        );
        // addr2line knows no inlining: the innermost position, the outermost function.
        let (function, position) = addr2line(&self.truth, rets[0] - 1);
        assert_eq!(function, "main.main", "{what}");
        assert_eq!(position, format!("{source}:{inlined}"), "{what}");

        // Outside every Go function.
        for pc in [0, 1, u64::MAX] {
            assert!(binary.symbolize(pc).is_empty(), "{what} {pc:#x}");
        }
    }

    /// Type names where the running program finds its types (less the load bias).
    fn check_types(&self) {
        let (binary, what) = (&self.binary, &self.what);
        let ran = run_callsite(&self.bin);
        let main = binary.function("main.main").unwrap().addr;
        let bias = ran["main"] - main;
        assert_eq!(bias == 0, !self.pie, "{what}: load bias {bias:#x}");
        let (map_type, session) = (ran["map"] - bias, ran["session"] - bias);
        if !self.stripped {
            // DWARF agrees on where the descriptors are.
            let dwarf = dwarf_runtime_types(&self.bin, &["map[string]*main.Session"]);
            let types = self.symbols["runtime.types"].0;
            assert_eq!(
                types + dwarf["map[string]*main.Session"],
                map_type,
                "{what}"
            );
        }
        assert_eq!(
            binary.type_name(map_type).as_deref(),
            Some("map[string]*main.Session"),
            "{what}"
        );
        assert_eq!(binary.type_kind(map_type), Some(Kind::Map), "{what}");
        let key = binary.map_key_type(map_type).unwrap();
        assert_eq!(binary.type_name(key).as_deref(), Some("string"), "{what}");
        assert_eq!(binary.type_kind(key), Some(Kind::String), "{what}");
        assert_eq!(binary.map_key_type(key), None, "{what}: string is no map");
        assert_eq!(
            binary.type_name(session).as_deref(),
            Some("*main.Session"),
            "{what}"
        );
        assert_eq!(binary.type_kind(session), Some(Kind::Pointer), "{what}");
        // A heap address and a code address are no type of the binary.
        assert_eq!(binary.type_name(0x00c0_0001_0000), None);
        assert_eq!(binary.type_name(main), None, "{what}");
        assert_eq!(binary.type_kind(main), None, "{what}");
    }
}

#[test]
fn every_build_mode_gives_functions_call_sites_and_type_names() {
    for go in go_versions() {
        for (mode, truth_mode) in MODES {
            let build = Build::new(&go, mode, truth_mode);
            build.check_functions();
            build.check_call_sites();
            build.check_types();
        }
    }
}

/// Exercises a binary that parsed: no lookup may panic.
fn poke(binary: &GoBinary, pcs: &[u64]) {
    for &pc in pcs {
        let _ = binary.symbolize(pc);
        let _ = binary.type_name(pc);
        let _ = binary.type_kind(pc);
        let _ = binary.map_key_type(pc);
        let _ = binary.vaddr_of_file_offset(pc);
    }
    if let Some(f) = binary.function("runtime.mapassign_faststr") {
        let _ = binary.code(f);
    }
}

/// Damage picked by proptest in one of `regions` (start, length) of the binary `data`: a
/// cut, a flipped byte, or a nasty or random word. What parses must also plan.
fn damage_at_random(bin: &Path, data: &[u8], regions: Vec<(usize, usize)>, pcs: &[u64]) {
    let nasty = [
        0,
        1,
        0x7f,
        0x8000_0000,
        0xffff_ffff,
        0x7fff_ffff_ffff_fff0,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];
    let damage = (
        select(regions),
        any::<Index>(),
        0..4_u8,
        prop_oneof![select(nasty.to_vec()), any::<u64>()],
        1..=8_usize,
    );
    let config = Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new(config)
        .run(&damage, |((start, len), index, how, value, width)| {
            let at = start + index.index(len);
            let mut bad = data.to_vec();
            match how {
                0 => bad.truncate(at),
                1 => bad[at] ^= value.to_le_bytes()[0] | 1,
                _ => {
                    let end = (at + width).min(bad.len());
                    bad[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
                }
            }
            if let Ok(b) = GoBinary::parse(bin, bad) {
                poke(&b, pcs);
                if let Ok(runtime) = b.runtime() {
                    let _ = plan::plan(&b, &runtime, &EventSet::all());
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn truncated_and_corrupt_binaries_are_errors_not_panics() {
    for go in [GO_CLASSIC, GO_SWISS] {
        let bin = build_go_mode("callsite", go, BuildMode::Default);
        let data = std::fs::read(&bin).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let offset = |vaddr: u64| -> usize {
            let section = file
                .sections()
                .find(|s| (s.address()..s.address() + s.size()).contains(&vaddr))
                .unwrap();
            usize::try_from(section.file_range().unwrap().0 + vaddr - section.address()).unwrap()
        };
        let symbols = symtab(&bin);
        let main = symbols["main.main"].0;
        let pcs: Vec<u64> = (0..64).map(|i| main + i * 7).chain([0, u64::MAX]).collect();
        let pclntab = offset(file.section_by_name(".gopclntab").unwrap().address());
        let moduledata = offset(symbols["runtime.firstmoduledata"].0);
        let word =
            |at: usize| usize::try_from(u64::from_le_bytes(data[at..at + 8].try_into().unwrap()));
        let functab = pclntab + word(pclntab + 64).unwrap();
        let pctab = pclntab + word(pclntab + 56).unwrap();
        // main.main's `_func` record, through the functab.
        let u32_at = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
        let main_off = u32::try_from(main - symbols["runtime.text"].0).unwrap();
        let main_func = (0..word(pclntab + 8).unwrap())
            .find(|i| u32_at(functab + 8 * i) == main_off)
            .map(|i| functab + usize::try_from(u32_at(functab + 8 * i + 4)).unwrap())
            .unwrap();

        for len in [
            0,
            64,
            4096,
            pclntab + 8,
            pclntab + 100,
            functab + 1000,
            moduledata + 16,
            data.len() / 2,
            data.len() - 1,
        ] {
            if let Ok(b) = GoBinary::parse(&bin, data[..len].to_vec()) {
                poke(&b, &pcs);
            }
        }
        // Header words, functab entries, the start of the pc tables, main.main's record and
        // what follows it, moduledata fields.
        let places = (pclntab..pclntab + 72)
            .step_by(4)
            .chain((functab..functab + 64).step_by(4))
            .chain((pctab..pctab + 64).step_by(3))
            .chain((main_func..main_func + 64).step_by(2))
            .chain((moduledata..moduledata + 360).step_by(8));
        for at in places {
            for garbage in [0, u32::MAX, 0x8000_0000, 0x7fff_fff0] {
                let mut bad = data.clone();
                bad[at..at + 4].copy_from_slice(&garbage.to_le_bytes());
                if let Ok(b) = GoBinary::parse(&bin, bad) {
                    poke(&b, &pcs);
                }
            }
        }

        // Then damage at random in what the reader reads first: the ELF, program and
        // section headers, the build info, the pclntab's header, functab and pc tables,
        // main.main's record and moduledata.
        let header = |at: usize| usize::from(u16::from_le_bytes([data[at], data[at + 1]]));
        let shoff = usize::try_from(u64::from_le_bytes(data[40..48].try_into().unwrap())).unwrap();
        let buildinfo = offset(file.section_by_name(".go.buildinfo").unwrap().address());
        let regions = vec![
            (0, 64 + 56 * header(56)),
            (shoff, 64 * header(60)),
            (buildinfo, 64),
            (pclntab, 72),
            (functab, 4096),
            (pctab, 4096),
            (main_func, 64),
            (moduledata, 360),
        ];
        damage_at_random(&bin, &data, regions, &pcs);
    }
}

#[test]
fn moduledata_and_type_offsets_match_dwarf() {
    for v in VARIANTS {
        let bin = v.build("mapops");
        let runtime = GoBinary::open(&bin).unwrap().runtime().unwrap();
        // Go 1.21 moved the runtime's type descriptors to internal/abi, capitalised.
        let map_types = [
            ("runtime.maptype", "key"),
            ("internal/abi.MapType", "Key"),
            ("internal/abi.OldMapType", "Key"),
            ("internal/abi.SwissMapType", "Key"),
        ];
        let mut names = vec!["runtime.moduledata", "runtime._type", "internal/abi.Type"];
        names.extend(map_types.map(|(m, _)| m));
        let dwarf = dwarf_structs(&bin, &names);
        let field = |s: &str, f: &str| -> u64 {
            *dwarf
                .get(s)
                .and_then(|m| m.members.get(f))
                .unwrap_or_else(|| panic!("{v:?}: no {s}.{f} in DWARF"))
        };
        let md = "runtime.moduledata";
        let layout = runtime.layout.moduledata;
        assert_eq!(
            field(md, "pcHeader"),
            goruntime::MODULEDATA_PCHEADER,
            "{v:?}"
        );
        assert_eq!(
            field(md, "funcnametab"),
            goruntime::MODULEDATA_FUNCNAMETAB,
            "{v:?}"
        );
        assert_eq!(field(md, "text"), layout.text, "{v:?}");
        assert_eq!(field(md, "types"), layout.types, "{v:?}");
        assert_eq!(field(md, "etypes"), layout.etypes, "{v:?}");
        assert_eq!(field(md, "gofunc"), layout.gofunc, "{v:?}");
        let minor = runtime.version.minor;
        let release = goruntime::release(minor).map(|l| l.moduledata);
        assert_eq!(release, Some(layout), "{v:?}");
        let (t, tflag, kind, str) = if dwarf.contains_key("runtime._type") {
            ("runtime._type", "tflag", "kind", "str")
        } else {
            ("internal/abi.Type", "TFlag", "Kind_", "Str")
        };
        assert_eq!(field(t, tflag), gotypes::TYPE_TFLAG, "{v:?}");
        assert_eq!(field(t, kind), gotypes::TYPE_KIND, "{v:?}");
        assert_eq!(field(t, str), gotypes::TYPE_STR, "{v:?}");
        // Every map type struct this build has keeps its key at the same offset.
        let present: Vec<(&str, &str)> = map_types
            .into_iter()
            .filter(|(m, _)| dwarf.contains_key(*m))
            .collect();
        assert!(!present.is_empty(), "{v:?}");
        for (m, key) in present {
            assert_eq!(field(m, key), goruntime::MAP_TYPE_KEY, "{v:?} {m}");
        }
    }
}
