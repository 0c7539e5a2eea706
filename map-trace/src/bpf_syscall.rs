//! The few bpf(2) commands aya 0.14 does not offer in the form map-trace needs: a program
//! load with the multi-uprobe attach type and its link ([`crate::uprobe_multi`]), and a map
//! update made from a signal handler ([`crate::switch`]), where nothing may allocate or
//! lock. One raw system call, the kernel's own `bpf_attr` layout from aya-obj.

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

use aya_obj::generated::{bpf_attr, bpf_cmd};

/// An all-zero `bpf_attr`: the kernel wants every field a command does not use zero.
#[must_use]
pub fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of plain integer structs; all zeros is a valid value.
    unsafe { std::mem::zeroed() }
}

/// bpf(2): the command's result, or -1 with errno set. Async-signal-safe.
fn bpf(cmd: bpf_cmd, attr: &bpf_attr) -> libc::c_long {
    // SAFETY: `attr` is a whole bpf_attr; what it points to is the caller's to keep alive.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_ref(attr),
            size_of::<bpf_attr>(),
        )
    }
}

/// A command that returns a new descriptor (a program load, a link).
pub fn bpf_fd(cmd: bpf_cmd, attr: &bpf_attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this new descriptor, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `BPF_MAP_UPDATE_ELEM` with a prepared `attr`: true if it took. Async-signal-safe (no
/// allocation, no error value built), for [`crate::switch`]'s signal handler.
#[must_use]
pub fn map_update(attr: &bpf_attr) -> bool {
    bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, attr) == 0
}
