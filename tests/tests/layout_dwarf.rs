//! map-trace's per-version table against the DWARF of real binaries, for every supported
//! Go build: every offset the eBPF programs, the decoder and the pclntab reader use is the
//! compiler's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails by panicking"
)]

use integration_tests::{VARIANTS, dwarf_structs};
use map_trace::{
    binary::GoBinary,
    goruntime::{Flavour, HeaderLayout, Storage},
};

#[test]
fn version_table_matches_dwarf() {
    for v in VARIANTS {
        let bin = v.build("mapops");
        let runtime = GoBinary::open(&bin).unwrap().runtime().unwrap();
        assert_eq!(runtime.flavour.to_string(), v.flavour(), "{v:?}");
        let layout = runtime.layout;
        let map_types = [
            "runtime.maptype",
            "internal/abi.MapType",
            "internal/abi.OldMapType",
            "internal/abi.SwissMapType",
        ];
        let mut names = vec![
            "runtime.g",
            "runtime.hmap",
            "runtime._type",
            "internal/abi.Type",
            "internal/runtime/maps.Map",
            "internal/runtime/maps.table",
            "runtime.mstats",
        ];
        names.extend(map_types);
        let dwarf = dwarf_structs(&bin, &names);
        let field = |s: &str, f: &str| -> u64 {
            *dwarf
                .get(s)
                .and_then(|m| m.members.get(f))
                .unwrap_or_else(|| panic!("{v:?}: no {s}.{f} in DWARF"))
        };
        // Go 1.21 moved the runtime's type descriptors to internal/abi, capitalised.
        let (abi_type, size) = if dwarf.contains_key("runtime._type") {
            ("runtime._type", "size")
        } else {
            ("internal/abi.Type", "Size_")
        };
        let off = |o: usize| u64::try_from(o).unwrap();
        assert_eq!(layout.goid_offset, field("runtime.g", "goid"), "{v:?}");
        assert_eq!(
            layout.stackguard0_offset,
            field("runtime.g", "stackguard0"),
            "{v:?}"
        );
        assert_eq!(layout.type_size_offset, field(abi_type, size), "{v:?}");
        assert_eq!(
            layout.numgc_offset,
            field("runtime.mstats", "numgc"),
            "{v:?}"
        );
        // The map type's struct name differs by version and flavour; the one this build
        // uses for its maps is the one with the flavour's runtime present.
        let (map_type, key) = match (runtime.flavour, runtime.version.minor) {
            (Flavour::Classic, ..=20) => ("runtime.maptype", "key"),
            (Flavour::Classic, ..=23) | (Flavour::Swiss, 26..) => ("internal/abi.MapType", "Key"),
            (Flavour::Classic, _) => ("internal/abi.OldMapType", "Key"),
            (Flavour::Swiss, _) => ("internal/abi.SwissMapType", "Key"),
        };
        assert_eq!(layout.map_type_key_offset, field(map_type, key), "{v:?}");
        let table_size = dwarf.get("internal/runtime/maps.table").map(|t| t.size);
        storage_matches(
            &format!("{v:?}"),
            &layout.storage,
            &field,
            map_type,
            table_size,
        );
        match layout.header {
            HeaderLayout::Classic {
                count,
                flags,
                b,
                noverflow,
                oldbuckets,
                nevacuate,
                ..
            } => {
                let h = "runtime.hmap";
                assert_eq!(off(count), field(h, "count"), "{v:?}");
                assert_eq!(off(flags), field(h, "flags"), "{v:?}");
                assert_eq!(off(b), field(h, "B"), "{v:?}");
                assert_eq!(off(noverflow), field(h, "noverflow"), "{v:?}");
                assert_eq!(off(oldbuckets), field(h, "oldbuckets"), "{v:?}");
                assert_eq!(off(nevacuate), field(h, "nevacuate"), "{v:?}");
                assert!(off(nevacuate) + 8 <= off(map_trace_common::HEADER_BYTES));
            }
            HeaderLayout::Swiss {
                used,
                dir_ptr,
                dir_len,
                global_depth,
                table_capacity,
                table_growth_left,
            } => {
                let (m, t) = ("internal/runtime/maps.Map", "internal/runtime/maps.table");
                assert_eq!(off(used), field(m, "used"), "{v:?}");
                assert_eq!(off(dir_len), field(m, "dirLen"), "{v:?}");
                assert_eq!(off(dir_ptr), field(m, "dirPtr"), "{v:?}");
                assert_eq!(off(global_depth), field(m, "globalDepth"), "{v:?}");
                assert_eq!(off(table_capacity), field(t, "capacity"), "{v:?}");
                assert_eq!(off(table_growth_left), field(t, "growthLeft"), "{v:?}");
            }
        }
    }
}

/// The pclntab format each row expects: `_func`'s fixed part, and the inline tree's entries
/// (whose name offset Go 1.20 renamed from `func_`).
#[test]
fn pclntab_format_matches_dwarf() {
    for v in VARIANTS {
        let bin = v.build("mapops");
        let runtime = GoBinary::open(&bin).unwrap().runtime().unwrap();
        let (f, inl) = ("runtime._func", "runtime.inlinedCall");
        let dwarf = dwarf_structs(&bin, &[f, inl]);
        let field = |s: &str, m: &str| -> u64 {
            *dwarf
                .get(s)
                .and_then(|s| s.members.get(m))
                .unwrap_or_else(|| panic!("{v:?}: no {s}.{m} in DWARF"))
        };
        let off = |o: usize| u64::try_from(o).unwrap();
        let format = runtime.layout.pclntab;
        assert_eq!(off(format.func_flag), field(f, "flag"), "{v:?}");
        assert_eq!(off(format.func_nfuncdata), field(f, "nfuncdata"), "{v:?}");
        assert_eq!(off(format.func_len), dwarf[f].size, "{v:?}");
        let name_off = if dwarf[inl].members.contains_key("func_") {
            "func_"
        } else {
            "nameOff"
        };
        assert_eq!(off(format.inlined_name_off), field(inl, name_off), "{v:?}");
        assert_eq!(
            off(format.inlined_parent_pc),
            field(inl, "parentPc"),
            "{v:?}"
        );
        assert_eq!(format.inlined_call_len, dwarf[inl].size, "{v:?}");
    }
}

/// The map type's bucket or group size field, and the swiss table header's size.
fn storage_matches(
    v: &str,
    storage: &Storage,
    field: &dyn Fn(&str, &str) -> u64,
    map_type: &str,
    table_size: Option<u64>,
) {
    match *storage {
        Storage::Classic { bucket_size_at, .. } => {
            let name = if map_type == "runtime.maptype" {
                "bucketsize"
            } else {
                "BucketSize"
            };
            assert_eq!(bucket_size_at, field(map_type, name), "{v}");
        }
        Storage::Swiss {
            group_size_at,
            table_bytes,
            ..
        } => {
            assert_eq!(group_size_at, field(map_type, "GroupSize"), "{v}");
            assert_eq!(Some(table_bytes), table_size, "{v}");
        }
    }
}
