//! `init supervise FILE [--run-dir DIR]`: the supervision tree on a
//! development host (and in `cargo test`), without being PID 1. It
//! becomes a child subreaper, so orphans of its services are reparented
//! to it and reaped as PID 1 would; services get PR_SET_PDEATHSIG so they
//! die with it. No console, no mounts, no reboot: where PID 1 would
//! reboot or power off, it stops the tree and exits (status 3 when the
//! root supervisor gave up, else 0). SIGTERM or SIGINT stops it cleanly.

use std::path::PathBuf;

use crate::runtime::{Runtime, Setup};
use crate::signals::SignalFd;
use crate::{logger, sys};

const USAGE: &str = "usage: init supervise FILE [--run-dir DIR]
  runs the services in FILE (services.toml format) until SIGTERM;
  DIR (default /tmp/keel-supervise-PID) gets control.sock and healthy:
  KEEL_CONTROL=DIR/control.sock keelctl status";

pub fn main(args: &[String]) -> i32 {
    let mut file = None;
    let mut run_dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--run-dir" => match it.next() {
                Some(d) => run_dir = Some(PathBuf::from(d)),
                None => return usage("--run-dir needs a directory"),
            },
            "-h" | "--help" => return usage(""),
            s if s.starts_with('-') => return usage(&format!("unknown option {s}")),
            s if file.is_none() => file = Some(PathBuf::from(s)),
            s => return usage(&format!("unexpected argument {s}")),
        }
    }
    let Some(file) = file else {
        return usage("no services file given");
    };
    let run_dir = run_dir
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/keel-supervise-{}", std::process::id())));
    if let Err(e) = sys::set_child_subreaper() {
        eprintln!("keel: prctl(PR_SET_CHILD_SUBREAPER): {e}");
        return 1;
    }
    let signals = match SignalFd::open() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("keel: signalfd: {e}");
            return 1;
        }
    };
    logger::init_host();
    crate::log!(
        "supervise {} (pid {}); control socket {}",
        file.display(),
        std::process::id(),
        run_dir.join("control.sock").display()
    );
    // In host mode a "reboot" ends the process; the budget lives in the run
    // directory, so repeated runs with the same one behave like boots.
    let reboot_budget = crate::escalation::RebootBudget::new(
        &run_dir.join(keel_contract::paths::FAILED_BOOTS_NAME),
        3,
    );
    Runtime::new(
        Setup {
            pid1: false,
            services: file,
            run_dir,
            watchdog: false,
            console_commands: false,
            reboot_budget,
        },
        signals,
    )
    .run()
}

fn usage(problem: &str) -> i32 {
    if problem.is_empty() {
        println!("{USAGE}");
        0
    } else {
        eprintln!("keel: {problem}\n{USAGE}");
        2
    }
}
