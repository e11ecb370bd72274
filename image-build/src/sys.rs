//! The one place this crate calls the C library directly.

#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// lseek(2), for SEEK_DATA / SEEK_HOLE, which std does not offer.
pub fn lseek(fd: RawFd, offset: libc::off_t, whence: libc::c_int) -> libc::off_t {
    // SAFETY: lseek touches no memory; a bad descriptor is reported as -1.
    unsafe { libc::lseek(fd, offset, whence) }
}
