//! The one place this crate calls the C library directly.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Drops a byte range of `file`'s clean pages from the page cache, so the
/// next reads come from the medium.
pub fn drop_cached(file: &File, start: u64, len: u64) -> io::Result<()> {
    let (Ok(start), Ok(len)) = (libc::off_t::try_from(start), libc::off_t::try_from(len)) else {
        return Err(io::Error::other("range beyond off_t"));
    };
    // SAFETY: plain syscall on a descriptor `file` keeps open for the call.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), start, len, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}
