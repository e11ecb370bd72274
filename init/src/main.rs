//! Keel PID 1. One binary, several roles: as PID 1, `/init` in the
//! initramfs (find and mount the slot's root, switch to it) and
//! `/sbin/init` in the root filesystem (mounts, /data, the supervision
//! tree, zombie reaping, debug console, shutdown). Not as PID 1: `keelctl`
//! (by the name it is called by, or `init keelctl …`), `init supervise`
//! (the tree on a host, for development and tests) and `init
//! test-service` (stand-in services for tests). This file only picks the
//! role and installs the panic hook.
//!
//! `no_main`: std's normal entry point opens /dev/null on fds 0-2 when the
//! kernel left them closed, and aborts when that fails — which it does in
//! an initramfs without /dev/null, turning a missing console into a kernel
//! panic. Our own `main` (the C entry point in sys/entry.rs, which calls
//! `run`) opens the console (or /dev/null) after mounting devtmpfs instead.

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

mod commands;
mod config;
mod console;
mod control;
mod disk;
mod escalation;
mod host;
mod identity;
mod initramfs;
mod logger;
mod modules;
mod mount;
mod network;
mod reaper;
mod runtime;
mod shutdown;
mod signals;
mod spawn;
mod supervisor;
mod sys;
mod system;
mod testservice;
mod toml;
mod watchdog;

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

pub fn log_line(args: fmt::Arguments) {
    logger::init_line(args);
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
        logger::panic_line(&format!("panic: {msg}{place}"));
        if sys::getpid() == 1 {
            sys::sync();
            let _ = writeln!(io::stderr(), "keel: panic: rebooting");
            let _ = sys::reboot(libc::RB_AUTOBOOT);
        }
    }));
}

const USAGE: &str = "init is Keel's PID 1; run as anything else it offers:
  keelctl COMMAND...           control the running init (see `keelctl help`)
  init supervise FILE [--run-dir DIR]
                               run a services.toml on this host (development, tests)
  init test-service MODE ...   stand-in services for tests";

/// Picks the role; called by the C entry point (sys/entry.rs) with the
/// process arguments.
fn run(args: &[String]) -> libc::c_int {
    // std's entry point would ignore SIGPIPE so a write to a closed pipe
    // returns EPIPE instead of a signal; keep that behaviour.
    let _ = sys::signal::ignore(libc::SIGPIPE);
    install_panic_hook();
    if sys::getpid() == 1 {
        // The kernel passes unknown boot parameters as arguments: ignore.
        if Path::new(initramfs::MARKER).exists() {
            initramfs::run()
        }
        system::run()
    }
    sys::ensure_std_fds();
    let called = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("");
    if called == "keelctl" {
        return control::keelctl(&args[1..]);
    }
    match args.get(1).map(String::as_str) {
        Some("keelctl") => control::keelctl(&args[2..]),
        Some("supervise") => host::main(&args[2..]),
        Some("test-service") => testservice::main(&args[2..]),
        _ => {
            let _ = writeln!(
                io::stderr(),
                "keel: init must run as PID 1 (it mounts filesystems and reboots the machine)\n{USAGE}"
            );
            1
        }
    }
}
