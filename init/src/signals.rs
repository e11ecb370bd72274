//! Signals PID 1 acts on, received through a signalfd so the event loop can
//! poll them next to the console instead of running code in handlers.
//!
//! The kernel drops signals to PID 1 whose disposition is SIG_DFL, but a
//! *blocked* signal is always queued, which is what lets the signalfd see
//! SIGTERM & co. The mask is inherited across fork and exec (std's
//! `Command` does not reset it), so every child must be spawned through
//! `reset_in_child`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Command;

use crate::shutdown::Kind;
use crate::sys;

/// What a received signal asks PID 1 to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A child changed state: reap it.
    Reap,
    /// Shut the system down (like erlinit/dinit).
    Shutdown(Kind),
}

/// The signals we block and read through the signalfd.
const HANDLED: [libc::c_int; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Maps a signal number to its action; SIGINT is what the kernel sends for
/// ctrl-alt-del once `RB_DISABLE_CAD` is set.
pub fn action(signo: libc::c_int) -> Option<Action> {
    match signo {
        libc::SIGCHLD => Some(Action::Reap),
        libc::SIGTERM | libc::SIGINT => Some(Action::Shutdown(Kind::Reboot(None))),
        libc::SIGUSR1 => Some(Action::Shutdown(Kind::Halt)),
        libc::SIGUSR2 => Some(Action::Shutdown(Kind::PowerOff)),
        _ => None,
    }
}

/// Makes `cmd`'s child start with no blocked signals and SIGPIPE at its
/// default (PID 1 ignores it, and ignored dispositions survive exec).
/// Without this a program started from the console would ignore SIGTERM
/// at shutdown.
pub fn reset_in_child(cmd: &mut Command) -> &mut Command {
    sys::signal::reset_in_child(cmd)
}

/// A non-blocking signalfd for the handled signals.
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks the handled signals for this (single-threaded) process and
    /// opens a signalfd for them.
    pub fn open() -> io::Result<Self> {
        sys::signal::block(&HANDLED)?;
        Ok(Self {
            fd: sys::signal::signalfd(&HANDLED)?,
        })
    }

    /// Reads every pending signal number (empty when none are pending).
    pub fn drain(&self) -> Vec<libc::c_int> {
        // Stops at EAGAIN (nothing pending) or EINTR: a later poll wakes us
        // again if anything is left.
        std::iter::from_fn(|| sys::signal::read_signalfd(&self.fd)).collect()
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_signals_follow_erlinit() {
        assert_eq!(action(libc::SIGCHLD), Some(Action::Reap));
        assert_eq!(
            action(libc::SIGTERM),
            Some(Action::Shutdown(Kind::Reboot(None)))
        );
        assert_eq!(
            action(libc::SIGINT),
            Some(Action::Shutdown(Kind::Reboot(None)))
        );
        assert_eq!(action(libc::SIGUSR1), Some(Action::Shutdown(Kind::Halt)));
        assert_eq!(
            action(libc::SIGUSR2),
            Some(Action::Shutdown(Kind::PowerOff))
        );
        assert_eq!(action(libc::SIGHUP), None);
    }

    #[test]
    fn every_handled_signal_has_an_action() {
        for sig in HANDLED {
            assert!(action(sig).is_some(), "signal {sig}");
        }
    }

    /// The child's (SigBlk, SigIgn) masks from /proc/self/status.
    fn child_masks(reset: bool) -> (u64, u64) {
        let mut cmd = Command::new("cat");
        cmd.arg("/proc/self/status");
        if reset {
            reset_in_child(&mut cmd);
        }
        let out = cmd.output().unwrap();
        let status = String::from_utf8_lossy(&out.stdout);
        let mask = |key: &str| {
            let hex = status.lines().find_map(|l| l.strip_prefix(key)).unwrap();
            u64::from_str_radix(hex.trim(), 16).unwrap()
        };
        (mask("SigBlk:"), mask("SigIgn:"))
    }

    /// PID 1 blocks its signals, and children inherit the mask unless
    /// `reset_in_child` clears it (a child with SIGTERM blocked could not
    /// be stopped at shutdown).
    #[test]
    fn children_start_with_an_empty_signal_mask() {
        // Run on a fresh thread: the mask is per thread, and std spawns
        // from the calling one.
        std::thread::spawn(|| {
            // The mask is per thread here, and sigprocmask sets the calling
            // thread's on Linux.
            sys::signal::block(&HANDLED).unwrap();
            sys::signal::ignore(libc::SIGPIPE).unwrap();
            assert_ne!(child_masks(false).0, 0, "std resets the mask now?");
            let (blocked, ignored) = child_masks(true);
            assert_eq!(blocked, 0);
            assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0);
        })
        .join()
        .unwrap();
    }
}
