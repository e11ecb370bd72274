//! Signal dispositions, masks and signalfd: the system calls behind
//! `crate::signals`, which explains why PID 1 blocks its signals and reads
//! them through a descriptor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Sets `sig`'s disposition to SIG_IGN. An ignored disposition survives
/// exec, so children are started through `reset_in_child`.
pub fn ignore(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: SIG_IGN installs no handler, so no code of ours can run in
    // signal context; an invalid signal number is rejected with EINVAL.
    if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A signal set holding `sigs`; numbers the kernel does not know are left
/// out (sigaddset rejects them).
fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data (an array of integers), for which all
    // zeroes is a valid value; sigemptyset then initialises it properly.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid, exclusively borrowed sigset_t; both calls
    // only write inside it and fail with EINVAL on a bad signal number.
    unsafe {
        libc::sigemptyset(&mut set);
        for &sig in sigs {
            libc::sigaddset(&mut set, sig);
        }
    }
    set
}

/// Adds `sigs` to the calling thread's signal mask (the whole process's,
/// as PID 1 has only one thread), so they stay pending until read from a
/// signalfd.
pub fn block(sigs: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(sigs);
    // SAFETY: set is initialised and outlives the call; the old mask is not
    // wanted, and a null pointer tells the kernel so.
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new non-blocking, close-on-exec signalfd for `sigs` (which must be
/// blocked for it to see them).
pub fn signalfd(sigs: &[libc::c_int]) -> io::Result<OwnedFd> {
    let set = sigset(sigs);
    // SAFETY: set is initialised and outlives the call; -1 asks for a new
    // descriptor rather than changing an existing one.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads one pending signal number from a signalfd made by `signalfd`;
/// None when nothing is pending (EAGAIN) or the read was interrupted.
pub fn read_signalfd(fd: &OwnedFd) -> Option<libc::c_int> {
    // SAFETY: signalfd_siginfo is plain data (integers and padding), for
    // which all zeroes is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: info is valid for writes of `size` bytes and exclusively
    // borrowed for the call; any byte pattern is a valid siginfo.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    // A signalfd only ever returns whole records.
    (n == size as isize).then_some(info.ssi_signo as libc::c_int)
}

/// Makes `cmd`'s child start with no blocked signals and SIGPIPE at its
/// default, undoing what PID 1 set for itself (see `crate::signals`).
pub fn reset_in_child(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe functions may be called: it calls signal,
    // sigemptyset and sigprocmask, all of which are, and allocates nothing.
    // It touches only its own stack.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}
