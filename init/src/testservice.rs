//! `init test-service MODE …`: stand-in services for tests on a device
//! without a shell (the same binary, so nothing extra to install). Not a
//! user interface; documented in docs/services.md for test authors.
//!
//! Each mode prints `test-service: MODE started (pid N)` first.

use std::io::Write;
use std::time::Duration;

use crate::sys;

const USAGE: &str = "usage: init test-service MODE
  sleep SECS            sleep (0 = forever), then exit 0
  crash SECS [CODE]     sleep, then exit CODE (default 1)
  ignore-term           ignore SIGTERM and sleep forever
  ready-file PATH SECS  after SECS create PATH, then sleep forever
  notify SECS           after SECS write a newline to $KEEL_READY_FD, then sleep forever
  chatter SECS          print a numbered line every SECS seconds
  orphan                leave a grandchild (printing its pid) that exits after 0.1 s:
                        a zombie for PID 1 to reap; then sleep forever";

fn secs(arg: Option<&String>) -> Option<Duration> {
    arg?.parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(Duration::from_secs_f64)
}

fn sleep(d: Duration) {
    if d.is_zero() {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    std::thread::sleep(d);
}

pub fn main(args: &[String]) -> i32 {
    let mode = args.first().map(String::as_str).unwrap_or("");
    let say = |msg: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "test-service: {msg}");
        let _ = out.flush();
    };
    if !matches!(
        mode,
        "sleep" | "crash" | "ignore-term" | "ready-file" | "notify" | "chatter" | "orphan"
    ) {
        eprintln!("{USAGE}");
        return 2;
    }
    say(&format!("{mode} started (pid {})", std::process::id()));
    let usage = || {
        eprintln!("{USAGE}");
        2
    };
    match (mode, secs(args.get(1))) {
        ("sleep", Some(d)) => {
            sleep(d);
            0
        }
        ("crash", Some(d)) => {
            std::thread::sleep(d);
            let code = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1);
            say(&format!("crashing with exit code {code}"));
            code
        }
        ("ignore-term", _) => {
            let _ = sys::signal::ignore(libc::SIGTERM);
            say("ignoring SIGTERM");
            sleep(Duration::ZERO);
            0
        }
        ("ready-file", _) => {
            let (Some(path), Some(d)) = (args.get(1), secs(args.get(2))) else {
                return usage();
            };
            std::thread::sleep(d);
            if let Err(e) = std::fs::write(path, b"") {
                say(&format!("cannot create {path}: {e}"));
                return 1;
            }
            say("ready");
            sleep(Duration::ZERO);
            0
        }
        ("notify", Some(d)) => {
            std::thread::sleep(d);
            let fd = std::env::var("KEEL_READY_FD")
                .ok()
                .and_then(|f| f.parse::<i32>().ok());
            let Some(fd) = fd else {
                say("no KEEL_READY_FD (set ready_fd in services.toml)");
                return 1;
            };
            let _ = sys::write(fd, b"\n");
            say("ready");
            sleep(Duration::ZERO);
            0
        }
        ("chatter", Some(d)) => {
            for i in 1u64.. {
                say(&format!("line {i}"));
                std::thread::sleep(d.max(Duration::from_millis(10)));
            }
            0
        }
        ("orphan", _) => {
            // This process is single-threaded, as fork_child requires. The
            // middle child leaves a grandchild that outlives it by 0.1 s.
            let middle = sys::fork_child(|| {
                let orphan = sys::fork_child(|| std::thread::sleep(Duration::from_millis(100)))
                    .unwrap_or(-1);
                let line = format!("test-service: orphan pid {orphan}\n");
                let _ = sys::write(1, line.as_bytes());
            });
            // Reap the middle one: the grandchild is now an orphan.
            if let Ok(middle) = middle {
                let _ = sys::wait_pid(middle);
            }
            say("left an orphan");
            sleep(Duration::ZERO);
            0
        }
        _ => usage(),
    }
}
