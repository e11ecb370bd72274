//! Orderly shutdown: stop every process, make /data consistent, then ask
//! the kernel to reboot, power off or halt.
//!
//! /data is the only writable disk filesystem; unmounting it (or at least
//! remounting it read-only) before reboot(2) is what keeps ext4 from
//! replaying its journal, or worse, on every boot.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::reaper;
use crate::sys;

/// How long processes get to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for SIGKILLed processes to be reaped (a process in
/// uninterruptible sleep may take a moment to die).
const KILL_GRACE: Duration = Duration::from_secs(1);

/// What the machine does at the end.
pub use keel_contract::control::Shutdown as Kind;

/// The reboot(2) form a `Kind` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebootCall {
    Plain(libc::c_int),
    WithArg(String),
}

pub fn call(kind: &Kind) -> RebootCall {
    match kind {
        Kind::Reboot(None) => RebootCall::Plain(libc::RB_AUTOBOOT),
        Kind::Reboot(Some(arg)) => RebootCall::WithArg(arg.clone()),
        Kind::PowerOff => RebootCall::Plain(libc::RB_POWER_OFF),
        Kind::Halt => RebootCall::Plain(libc::RB_HALT_SYSTEM),
    }
}

/// Reaps until no children are left or `limit` passes; true if none left.
fn reap_until_gone(limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if !reaper::reap_all() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops every process and makes the filesystems safe to cut power to.
/// Logs each step; never fails (each step is best effort). No line says
/// `keel: error:`, which the console reserves for a command's result.
pub fn prepare() {
    // kill(-1) reaches every process but PID 1; ESRCH only means there was
    // nobody to signal.
    let _ = sys::kill(-1, libc::SIGTERM);
    if !reap_until_gone(TERM_GRACE) {
        crate::log!("processes still running after {TERM_GRACE:?}; sending SIGKILL");
        let _ = sys::kill(-1, libc::SIGKILL);
        if !reap_until_gone(KILL_GRACE) {
            crate::log!("some processes did not exit; going on");
        }
    }
    sys::sync();
    unmount_data();
    // The squashfs root is read-only already: EINVAL/EBUSY are expected.
    match sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY,
        None,
    ) {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EBUSY)) => {
            crate::log!("remount / read-only: {e}");
        }
        _ => {}
    }
    sys::sync();
}

fn unmount_data() {
    let data = Path::new("/data");
    match sys::umount(data, 0) {
        Ok(()) => crate::log!("unmounted /data cleanly"),
        // EINVAL: not a mount point (no data partition, or its mount failed).
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            crate::log!("/data was not mounted");
        }
        Err(e) => {
            crate::log!("unmount /data failed: {e}; remounting it read-only");
            let ro = sys::mount(None, data, None, libc::MS_REMOUNT | libc::MS_RDONLY, None);
            match ro {
                Ok(()) => crate::log!("remounted /data read-only"),
                Err(e) => crate::log!("remount /data read-only failed: {e}"),
            }
        }
    }
}

/// Asks the kernel to end the system. Only returns if it refused; a
/// restart with an argument the kernel rejects falls back to a plain one.
pub fn finish(kind: &Kind) -> io::Error {
    match call(kind) {
        RebootCall::Plain(cmd) => match sys::reboot(cmd) {
            Ok(()) => io::Error::other("reboot(2) returned"),
            Err(e) => e,
        },
        RebootCall::WithArg(arg) => {
            if let Err(e) = sys::reboot_with_arg(&arg) {
                crate::log!("reboot with argument '{arg}': {e}; rebooting without it");
            }
            match sys::reboot(libc::RB_AUTOBOOT) {
                Ok(()) => io::Error::other("reboot(2) returned"),
                Err(e) => e,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_reboot_commands() {
        assert_eq!(
            call(&Kind::Reboot(None)),
            RebootCall::Plain(libc::RB_AUTOBOOT)
        );
        assert_eq!(call(&Kind::PowerOff), RebootCall::Plain(libc::RB_POWER_OFF));
        assert_eq!(call(&Kind::Halt), RebootCall::Plain(libc::RB_HALT_SYSTEM));
        assert_eq!(
            call(&Kind::Reboot(Some("0 tryboot".into()))),
            RebootCall::WithArg("0 tryboot".into())
        );
    }

    #[test]
    fn kinds_display_for_the_log() {
        assert_eq!(
            Kind::Reboot(Some("0 tryboot".into())).to_string(),
            "reboot (0 tryboot)"
        );
        assert_eq!(Kind::PowerOff.to_string(), "poweroff");
    }
}
