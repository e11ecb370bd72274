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
