//! Keel PID 1. One binary, two roles: `/init` in the initramfs (find and
//! mount the slot's root, switch to it) and `/sbin/init` in the root
//! filesystem (mounts, /data, zombie reaping, debug console, shutdown).
//! This file only picks the role and installs the panic hook.
//!
//! `no_main`: std's normal entry point opens /dev/null on fds 0-2 when the
//! kernel left them closed, and aborts when that fails — which it does in
//! an initramfs without /dev/null, turning a missing console into a kernel
//! panic. Our own `main` opens the console (or /dev/null) after mounting
//! devtmpfs instead.

#![cfg_attr(not(test), no_main)]
// The test harness has its own main, so the entry points look unused.
#![cfg_attr(test, allow(dead_code))]

/// Prints one console line starting with `keel: `. Write errors are ignored:
/// PID 1 must not die over a console hiccup (`println!` would panic).
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log_line(format_args!($($arg)*))
    };
}
pub(crate) use log;

mod cmdline;
mod commands;
mod console;
mod disk;
mod initramfs;
mod modules;
mod mount;
mod reaper;
mod shutdown;
mod signals;
mod sys;
mod system;

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

pub fn log_line(args: fmt::Arguments) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "keel: {args}");
    let _ = out.flush();
}

/// A panic is a bug, but PID 1 exiting panics the kernel: log it, sync and
/// reboot so the boot counter / watchdog logic gets a clean retry. Runs
/// before the abort that `panic = "abort"` performs.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // One line, so every console line still starts with `keel: `.
        let msg = msg.replace('\n', " ");
        let _ = writeln!(io::stderr(), "keel: panic: {msg}{place}");
        if sys::getpid() == 1 {
            sys::sync();
            let _ = writeln!(io::stderr(), "keel: panic: rebooting");
            let _ = sys::reboot(libc::RB_AUTOBOOT);
        }
    }));
}

fn run() -> libc::c_int {
    // std's entry point would ignore SIGPIPE so a write to a closed pipe
    // returns EPIPE instead of a signal; keep that behaviour.
    // SAFETY: setting a disposition to SIG_IGN has no handler to be unsafe.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    install_panic_hook();
    if sys::getpid() != 1 {
        sys::ensure_std_fds();
        let _ = writeln!(
            io::stderr(),
            "keel: init must run as PID 1 (it mounts filesystems and reboots the machine)"
        );
        return 1;
    }
    if Path::new(initramfs::MARKER).exists() {
        initramfs::run()
    } else {
        system::run()
    }
}

/// The C entry point (see the module comment for why not `fn main`).
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    run()
}
