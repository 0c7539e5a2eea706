//! Multi-uprobe links (`BPF_TRACE_UPROBE_MULTI`): all of one program's probes in a binary
//! go in with one bpf(2) call, and come out with one close, which waits for the kernel's
//! grace periods once instead of once per probe (about 0.1 s each, one after another).
//!
//! aya 0.14 has no API for them, and its releases that do need a newer Rust than this
//! project's. Such a link also needs its program loaded with that attach type, which aya's
//! uprobe loader never sets; so this module loads those programs itself, from the same
//! object, relocated against the maps aya created (so both share every map), and creates
//! the links through bpf(2).

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use anyhow::{Context as _, anyhow};
use aya::{Ebpf, maps::Map};
use aya_obj::generated::{
    bpf_attach_type::BPF_TRACE_UPROBE_MULTI, bpf_cmd, bpf_prog_type::BPF_PROG_TYPE_KPROBE,
};

use crate::bpf_syscall::{bpf_fd as bpf, zeroed_attr};

/// Whether this kernel's multi-uprobe links are used: they came in Linux 6.6, and until
/// 6.10 their pid filter compared thread ids with the process id. map-trace's links no
/// longer filter by pid (the programs look the process up), but 6.6 – 6.9 were never
/// tested here: the release decides, and a kernel without the links at all is caught
/// when one is made.
#[must_use]
pub fn usable(release: &str) -> bool {
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return false;
    };
    (major, minor) >= (6, 10)
}

/// A program the kernel refused, with the verifier's log when it gave one.
#[derive(Debug)]
pub struct Refused {
    pub error: io::Error,
    pub log: String,
}

/// The descriptors of every map aya created for the object, by name: taken once after the
/// load, before user space takes maps out of the [`Ebpf`] (which then no longer lists
/// them). The descriptors stay owned by those maps, which live as long as the run.
pub struct MapFds(Vec<(String, RawFd)>);

impl MapFds {
    pub fn of(ebpf: &Ebpf) -> anyhow::Result<Self> {
        ebpf.maps()
            .map(|(name, map)| Ok((name.to_owned(), map_fd(map)?)))
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }
}

/// Loads program `name` of `object` (the object `maps` were made for) for multi-uprobe
/// links, its map references pointing at those maps.
pub fn load(object: &[u8], maps: &MapFds, name: &str) -> anyhow::Result<Result<OwnedFd, Refused>> {
    let mut obj = aya_obj::Object::parse(object).context("parsing the eBPF object")?;
    // The object's own map definitions: aya matches relocations to maps by them.
    let definitions = obj.maps.clone();
    let mut relocations = Vec::new();
    for (map_name, fd) in &maps.0 {
        let definition = definitions
            .get(map_name)
            .with_context(|| format!("map {map_name} is not in the eBPF object"))?;
        relocations.push((map_name.as_str(), *fd, definition));
    }
    let maps = relocations;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(maps.into_iter(), &text_sections)
        .context("relocating the eBPF object's maps")?;
    obj.relocate_calls(&text_sections)
        .context("relocating the eBPF object's calls")?;
    let program = obj
        .programs
        .get(name)
        .with_context(|| format!("eBPF object lacks program {name}"))?;
    let function = obj
        .functions
        .get(&program.function_key())
        .with_context(|| format!("eBPF object lacks the code of {name}"))?;
    let insns = &function.instructions;
    let loaded = prog_load(name, insns, &obj.license, None);
    Ok(loaded.map_err(|error| {
        // Again with a log, only now: a load that passes costs no log.
        let mut log = vec![0_u8; 1 << 20];
        let log = match prog_load(name, insns, &obj.license, Some(&mut log)) {
            Ok(_) => String::new(),
            Err(_) => {
                String::from_utf8_lossy(log.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
            }
        };
        Refused { error, log }
    }))
}

/// A map's descriptor, for the relocations: the map kinds map-trace's object holds.
fn map_fd(map: &Map) -> anyhow::Result<RawFd> {
    let (Map::Array(data)
    | Map::PerCpuArray(data)
    | Map::HashMap(data)
    | Map::LruHashMap(data)
    | Map::PerCpuHashMap(data)
    | Map::PerCpuLruHashMap(data)
    | Map::RingBuf(data)) = map
    else {
        return Err(anyhow!("an eBPF map of an unexpected kind"));
    };
    Ok(data.fd().as_fd().as_raw_fd())
}

/// `bpf(BPF_PROG_LOAD)` of a kprobe-type program with the multi-uprobe attach type; with
/// `log`, the verifier writes its level-1 log there.
fn prog_load(
    name: &str,
    insns: &[aya_obj::generated::bpf_insn],
    license: &CString,
    log: Option<&mut Vec<u8>>,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the union's program-load member.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = BPF_PROG_TYPE_KPROBE as u32;
    load.expected_attach_type = BPF_TRACE_UPROBE_MULTI as u32;
    load.insn_cnt =
        u32::try_from(insns.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    load.insns = insns.as_ptr() as u64;
    load.license = license.as_ptr() as u64;
    for (dst, src) in load.prog_name.iter_mut().zip(name.bytes().take(15)) {
        // `c_char` is signed on x86_64 and unsigned on aarch64: the bytes are the same.
        *dst = std::ffi::c_char::from_ne_bytes([src]);
    }
    if let Some(log) = log {
        load.log_level = 1;
        load.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
        load.log_buf = log.as_mut_ptr() as u64;
    }
    bpf(bpf_cmd::BPF_PROG_LOAD, &attr)
}

/// One multi-uprobe link of `program` on `binary` at each file offset of `offsets`, with
/// the matching cookie of `cookies`, in every process that runs it.
pub fn attach(
    program: BorrowedFd<'_>,
    binary: &Path,
    offsets: &[u64],
    cookies: &[u64],
) -> io::Result<OwnedFd> {
    debug_assert_eq!(offsets.len(), cookies.len());
    let path = CString::new(binary.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the union's link-create member.
    let link = unsafe { &mut attr.link_create };
    link.__bindgen_anon_1.prog_fd = u32::try_from(program.as_raw_fd()).unwrap_or(0);
    link.attach_type = BPF_TRACE_UPROBE_MULTI as u32;
    // SAFETY: as above, into the uprobe_multi member.
    let multi = unsafe { &mut link.__bindgen_anon_3.uprobe_multi };
    multi.path = path.as_ptr() as u64;
    multi.offsets = offsets.as_ptr() as u64;
    multi.cookies = cookies.as_ptr() as u64;
    multi.cnt =
        u32::try_from(offsets.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    bpf(bpf_cmd::BPF_LINK_CREATE, &attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_from_linux_6_10() {
        assert!(usable("6.18.44-fc-v669"));
        assert!(usable("6.12.57+deb13-cloud-amd64"));
        assert!(usable("6.10.0"));
        assert!(usable("7.0.1"));
        assert!(!usable("6.9.12"));
        assert!(!usable("6.6.0-rc1"));
        assert!(!usable("6.1.0-41-cloud-amd64"));
        assert!(!usable("5.10.0-32-cloud-amd64"));
        assert!(!usable("garbage"));
    }
}
