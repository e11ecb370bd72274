//! Thin safe wrappers over the Linux system calls PID 1 needs that std lacks.
//!
//! Each wrapper turns the C return convention into `io::Result` so callers
//! can attach context and keep going; none of them panics.
//!
//! This module (with its submodules) is the only place in the crate allowed
//! to use `unsafe` (the workspace denies it everywhere else), so every
//! unsafe block, and the reason it is sound, can be reviewed in one place.
//! Each one carries a `// SAFETY:` comment.

#![allow(unsafe_code)]

/// The C entry point; the test harness brings its own.
#[cfg(not(test))]
mod entry;
pub mod net;
mod process;
pub mod signal;

pub use process::{fork_child, prepare_child, wait_pid};

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// `ramfs` has no constant in the libc crate; the initramfs is ramfs when the
/// kernel is built without tmpfs.
const RAMFS_MAGIC: u32 = 0x8584_58f6;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts a path for a syscall; an interior NUL cannot name a real file.
pub fn cstr(path: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(path.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// mount(2). `source` and `data` are optional as in C.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that
    // outlives the call.
    cvt(unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    })?;
    Ok(())
}

/// umount2(2).
pub fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstr(target)?;
    // SAFETY: target is a valid C string.
    cvt(unsafe { libc::umount2(target.as_ptr(), flags) })?;
    Ok(())
}

/// Creates a block device node with mode 0600.
pub fn mknod_block(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let c = cstr(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, dev) })?;
    Ok(())
}

/// finit_module(2) with no parameters and no flags.
pub fn finit_module(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: the empty parameter string is a valid C string; the kernel
    // validates the fd.
    cvt_long(unsafe { libc::syscall(libc::SYS_finit_module, fd, c"".as_ptr(), 0) })?;
    Ok(())
}

/// reboot(2) with one of the RB_* commands.
pub fn reboot(cmd: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall with an integer argument.
    cvt(unsafe { libc::reboot(cmd) })?;
    Ok(())
}

/// Restarts with an argument string (LINUX_REBOOT_CMD_RESTART2), which the
/// Raspberry Pi kernel reads for `0 tryboot`; libc's reboot() cannot pass it.
pub fn reboot_with_arg(arg: &str) -> io::Result<()> {
    let arg = cstr(arg)?;
    // SAFETY: the magic numbers select RESTART2, whose fourth argument is a
    // NUL-terminated string that outlives the call.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            libc::LINUX_REBOOT_MAGIC2,
            libc::LINUX_REBOOT_CMD_RESTART2,
            arg.as_ptr(),
        )
    })?;
    Ok(())
}

/// kill(2); `pid == -1` signals every process except PID 1 itself.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    cvt(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// One non-blocking waitpid(-1): `Ok(Some((pid, status)))` for a reaped
/// child, `Ok(None)` when children exist but none has exited, and
/// `Err(ECHILD)` when there are no children at all.
pub fn wait_any_nohang() -> io::Result<Option<(libc::pid_t, libc::c_int)>> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            0 => return Ok(None),
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            pid => return Ok(Some((pid, status))),
        }
    }
}

/// sync(2): flushes every filesystem; cannot fail.
pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() }
}

pub fn getpid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}

/// The running kernel's release (`uname -r`), which names its module dir.
pub fn kernel_release() -> io::Result<String> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is a valid out-pointer.
    cvt(unsafe { libc::uname(&mut uts) })?;
    // SAFETY: the kernel NUL-terminates every utsname field.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    Ok(release.to_string_lossy().into_owned())
}

/// True when the filesystem holding `path` is the initramfs (ramfs or
/// tmpfs); used to refuse deleting files anywhere else.
pub fn is_ram_fs(path: &Path) -> io::Result<bool> {
    let c = cstr(path)?;
    // SAFETY: statfs is plain data; the call fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, st a valid out-pointer.
    cvt(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    // f_type's C type differs per libc and word size; the magic numbers are
    // 32-bit, so compare the low 32 bits.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u32;
    Ok(magic == RAMFS_MAGIC || magic == libc::TMPFS_MAGIC as u32)
}

/// True when `fd` is an open descriptor.
pub fn fd_is_open(fd: libc::c_int) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Opens `path` read-write without making it our controlling terminal and
/// installs it as `target`.
pub fn open_as_fd(path: &CStr, target: libc::c_int) -> io::Result<()> {
    // SAFETY: path is a valid C string.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) })?;
    if fd != target {
        // SAFETY: both are descriptors we own; dup2 replaces target.
        let res = cvt(unsafe { libc::dup2(fd, target) });
        // SAFETY: fd was opened above and is not used again.
        unsafe { libc::close(fd) };
        res?;
    }
    Ok(())
}

/// read(2) into `buf`, retrying on EINTR.
pub fn read(fd: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// poll(2) on `fds`; `timeout` None waits forever. EINTR counts as "nothing
/// ready" so callers simply loop.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    // SAFETY: fds is a valid slice of pollfd for its length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n == -1 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

/// execv(2): replaces this process; only returns on failure.
pub fn execv(path: &Path) -> io::Error {
    let c = match cstr(path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let argv = [c.as_ptr(), std::ptr::null()];
    // SAFETY: path and argv are NUL-terminated and outlive the call; the
    // environment is inherited as is.
    unsafe { libc::execv(c.as_ptr(), argv.as_ptr()) };
    io::Error::last_os_error()
}

/// write(2) once, retrying on EINTR; may write less than `buf`.
pub fn write(fd: libc::c_int, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// open(2) with raw `O_*` flags, for the console and /dev/kmsg before
/// anything else is set up. A file it creates (O_CREAT) gets mode 0600.
pub fn open_raw(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: path is a valid C string. The mode is always passed, so open
    // never reads a variadic argument that is not there, whatever `flags`
    // holds (it only looks at it with O_CREAT or O_TMPFILE).
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags, 0o600 as libc::c_uint) })?;
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pipe with both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL only change the descriptor's flags.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Time since boot, suspend included (what log timestamps show).
pub fn boottime() -> Duration {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is a valid out-pointer; CLOCK_BOOTTIME always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == -1 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The wall clock in whole seconds since the epoch (negative before 1970).
pub fn realtime_secs() -> i64 {
    // SAFETY: as in boottime.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i64
}

/// Sets the wall clock (needs CAP_SYS_TIME).
pub fn set_realtime_secs(secs: i64) -> io::Result<()> {
    // SAFETY: timespec is plain data.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // time_t's width differs per target (and libc deprecates naming it).
    ts.tv_sec = secs as _;
    // SAFETY: ts is a valid timespec.
    cvt(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })?;
    Ok(())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe name's bytes.
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })?;
    Ok(())
}

/// Makes orphaned descendants ours to reap, as they would be PID 1's.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument.
    cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })?;
    Ok(())
}

/// Sleeps forever; the last resort of a PID 1 that cannot continue but must
/// not exit (the kernel panics when PID 1 exits).
pub fn halt_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Makes sure fds 0-2 are open: the kernel leaves them closed when it could
/// not open /dev/console, and a later open() would otherwise land on fd 0-2
/// and have our log lines written into it. Falls back to /dev/null.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        if !fd_is_open(fd) && open_as_fd(c"/dev/console", fd).is_err() {
            let _ = open_as_fd(c"/dev/null", fd);
        }
    }
}

/// The symbolic name of common errnos, so a console line says `ENODEV`
/// (e.g. "ext4 module not loaded") and not just a number.
pub fn errno_name(err: &io::Error) -> Option<&'static str> {
    Some(match err.raw_os_error()? {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOMEDIUM => "ENOMEDIUM",
        libc::EUCLEAN => "EUCLEAN",
        libc::ENOEXEC => "ENOEXEC",
        _ => return None,
    })
}

/// `err` followed by its errno name when known: `No such device (os error
/// 19) [ENODEV]`.
pub fn describe(err: &io::Error) -> String {
    match errno_name(err) {
        Some(name) => format!("{err} [{name}]"),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_errnos() {
        let e = io::Error::from_raw_os_error(libc::ENODEV);
        assert!(
            describe(&e).ends_with("(os error 19) [ENODEV]"),
            "{}",
            describe(&e)
        );
        let e = io::Error::other("plain");
        assert_eq!(describe(&e), "plain");
    }

    #[test]
    fn cstr_rejects_nul() {
        assert!(cstr("a\0b").is_err());
        assert_eq!(cstr("/dev").unwrap().as_bytes(), b"/dev");
    }

    #[test]
    fn std_fds_are_open_in_tests() {
        ensure_std_fds();
        assert!(fd_is_open(0) && fd_is_open(1) && fd_is_open(2));
    }
}
