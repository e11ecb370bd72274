//! The one place this crate calls the C library directly.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Drops the page cache for `[offset, offset + len)` of `file`, so the next
/// read of that range comes from the medium, not from memory. Dirty pages
/// are not dropped: call it after `fsync`.
pub fn drop_cache(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::other("range too large for posix_fadvise"));
    };
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor
    // is owned by `file`, open for the duration of the call. It returns an
    // error number instead of setting errno.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}
