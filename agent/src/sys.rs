//! The one place the agent calls the C library directly.

#![allow(unsafe_code)]

/// Sends SIGTERM to PID 1, which init takes as "reboot" (there is no kill
/// binary on a Keel root filesystem).
pub fn ask_init_to_reboot() -> std::io::Result<()> {
    // SAFETY: kill(2) with constant arguments touches no memory.
    if unsafe { libc::kill(1, libc::SIGTERM) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Free bytes on the filesystem holding `path`, as an unprivileged user
/// sees them (statvfs's f_bavail).
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs is plain data; the call fills it from a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // The field types differ between targets (32-bit on armv7's glibc).
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}
