//! Reading a traced process's memory (`process_vm_readv`): the tables of swiss maps that
//! were made before tracing began, which no event showed.

use std::io::IoSliceMut;

use nix::{
    sys::uio::{RemoteIoVec, process_vm_readv},
    unistd::Pid,
};

/// `len` bytes at `addr` in process `pid`; `None` if any of them cannot be read (the
/// process is gone, or the memory is not mapped).
#[must_use]
pub fn read(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0_u8; len];
    let remote = [RemoteIoVec {
        base: usize::try_from(addr).ok()?,
        len,
    }];
    let pid = Pid::from_raw(i32::try_from(pid).ok()?);
    let n = process_vm_readv(pid, &mut [IoSliceMut::new(&mut buf)], &remote).ok()?;
    (n == len).then_some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory_and_refuses_what_is_not_mapped() {
        let here: [u8; 4] = [1, 2, 3, 4];
        let addr = here.as_ptr() as u64;
        assert_eq!(read(std::process::id(), addr, 4), Some(here.to_vec()));
        assert_eq!(read(std::process::id(), 8, 4), None);
    }
}
