//! Reading real Go binaries, no kernel needed: build info, flavour, symbols, and probe
//! placement checked against `go tool objdump` of the same binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use std::collections::BTreeSet;

use integration_tests::{build_go, go_command, go_versions};
use map_trace::{
    cli::EventSet,
    goruntime::{Flavour, GoVersion, Runtime, detect_flavour},
    plan::{self, Role},
    target::{binary::GoBinary, disasm},
};
use map_trace_common::EventKind;

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
        let runtime = Runtime::of(&binary).unwrap();
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

#[test]
fn probes_sit_after_the_stack_check_and_every_ret_is_found() {
    for go in go_versions() {
        let bin = build_go("mapops", &go);
        let binary = GoBinary::open(&bin).unwrap();
        let runtime = Runtime::of(&binary).unwrap();
        let plan = plan::plan(&binary, &runtime, &EventSet::all()).unwrap();
        // mapops uses every key kind, assign, delete and clear, and its maps grow.
        let entries: Vec<_> = plan
            .points
            .iter()
            .filter(|p| p.role != Role::Return)
            .collect();
        assert_eq!(
            entries.len(),
            runtime.layout.all_functions().count(),
            "go{go}: {:?}",
            plan.missing
        );
        for point in entries {
            let symbol = point.function.symbol;
            let insns = objdump(&go, &bin, symbol);
            let jbe = insns
                .iter()
                .position(|(_, text)| text.starts_with("JBE "))
                .unwrap_or_else(|| panic!("go{go} {symbol}: no JBE"));
            assert!(
                jbe <= 3,
                "go{go} {symbol}: stack check is not in the prologue"
            );
            assert_eq!(
                point.addr,
                insns[jbe + 1].0,
                "go{go} {symbol}: probe address"
            );
            let f = binary.function(symbol).unwrap();
            assert_eq!(f.addr, insns[0].0, "go{go} {symbol}: symbol address");
            assert_eq!(
                binary.file_offset(point.addr).unwrap() - binary.file_offset(f.addr).unwrap(),
                point.addr - f.addr
            );
            let rets: BTreeSet<u64> = insns
                .iter()
                .filter(|(_, t)| t.starts_with("RET"))
                .map(|(a, _)| *a)
                .collect();
            let found: BTreeSet<u64> = disasm::return_sites(binary.code(f).unwrap(), f.addr)
                .unwrap()
                .into_iter()
                .collect();
            assert!(!rets.is_empty());
            assert_eq!(found, rets, "go{go} {symbol}: RET sites");
            let planned: BTreeSet<u64> = plan
                .points
                .iter()
                .filter(|p| p.role == Role::Return && p.function.symbol == symbol)
                .map(|p| p.addr)
                .collect();
            if point.function.kind.is_timed() {
                assert_eq!(point.role, Role::Entry);
                assert_eq!(planned, rets, "go{go} {symbol}: exit probes");
            } else {
                let gc = point.function.kind == EventKind::Gc;
                assert_eq!(point.role, if gc { Role::Gc } else { Role::Op });
                assert!(
                    planned.is_empty(),
                    "go{go} {symbol}: exit probes on an operation"
                );
            }
        }
    }
}

#[test]
fn missing_functions_are_listed_not_fatal() {
    for go in go_versions() {
        // idle uses no maps: the runtime's own map use keeps some functions, not all.
        let bin = build_go("idle", &go);
        let binary = GoBinary::open(&bin).unwrap();
        let runtime = Runtime::of(&binary).unwrap();
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
