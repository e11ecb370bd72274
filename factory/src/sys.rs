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

/// How [`lock`] locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Shared, waiting for an exclusive holder to let go.
    Shared,
    /// Exclusive, waiting for every other holder.
    Exclusive,
    /// Exclusive if nobody else holds the lock now; `Ok(false)` if someone does.
    TryExclusive,
}

/// flock(2) on `file`: an advisory lock between processes, released when
/// the file is closed (or the process dies, which is what makes it safe
/// to trust after a crash).
pub fn lock(file: &std::fs::File, how: Lock) -> std::io::Result<bool> {
    let op = match how {
        Lock::Shared => libc::LOCK_SH,
        Lock::Exclusive => libc::LOCK_EX,
        Lock::TryExclusive => libc::LOCK_EX | libc::LOCK_NB,
    };
    loop {
        // SAFETY: flock only reads its integer arguments; the descriptor is
        // owned by `file` and open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if how == Lock::TryExclusive => return Ok(false),
            _ => return Err(e),
        }
    }
}
