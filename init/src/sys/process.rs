//! Child processes beyond what std's `Command` does: a plain fork running a
//! closure, waiting for one pid, and the session / death-signal / ready-fd
//! setup a service gets between fork and exec.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// True unless /proc shows this process has more than one thread. Without
/// /proc (early boot) it trusts that init never starts a thread outside
/// its tests.
fn single_threaded() -> bool {
    match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks.count() <= 1,
        Err(_) => true,
    }
}

/// Runs `f` in a forked child, which then exits with status 0 (1 if `f`
/// panicked) without running our destructors or returning into the
/// parent's code. Returns the child's pid; the caller (or PID 1's reaper)
/// must reap it.
///
/// For a single-threaded process only, which init is outside its tests:
/// after fork the child holds a copy of just the calling thread, so any
/// lock another thread held would stay locked forever. It refuses (with an
/// error) when /proc shows other threads.
pub fn fork_child(f: impl FnOnce()) -> io::Result<libc::pid_t> {
    if !single_threaded() {
        return Err(io::Error::other("fork_child: the process has threads"));
    }
    // SAFETY: the process has a single thread (checked above; only that
    // thread could start another), so the child is a complete copy of it
    // and may run ordinary code, allocation included. The child never
    // returns from this function: it leaves through _exit.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // A panic must not unwind into the parent's code running on in
            // the child (with panic = "abort" it aborts the child instead).
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: ends the child at once, without running PID 1's
            // atexit handlers or flushing buffers the parent also holds.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

/// Waits for the child `pid` to exit (retrying on EINTR) and returns its
/// wait status.
pub fn wait_pid(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer for the call.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != -1 {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sets up a service's child between fork and exec: its own session and
/// process group (signals reach the whole service, and it has no
/// controlling terminal); with `die_with_parent`, SIGKILL when we die
/// (host mode, so a killed test run leaves nothing behind); and with
/// `ready_fd = Some((w, n))`, the pipe end `w` installed as descriptor `n`
/// and kept open across exec.
///
/// `w` must stay open in the parent until the child is spawned; a closed
/// one makes the spawn fail with EBADF.
pub fn prepare_child(cmd: &mut Command, die_with_parent: bool, ready_fd: Option<(RawFd, RawFd)>) {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe functions may be called: it calls setsid,
    // prctl, dup2 and fcntl, all of which are, allocates nothing and
    // touches only the copied integers it captured. The descriptors it
    // changes are the child's own.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            if die_with_parent {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            }
            if let Some((w, n)) = ready_fd {
                // Already at its number: only clear close-on-exec (dup2
                // onto itself would leave the flag set).
                let ok = if w == n {
                    libc::fcntl(n, libc::F_SETFD, 0) != -1
                } else {
                    libc::dup2(w, n) != -1
                };
                if !ok {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
