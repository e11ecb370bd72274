//! What the console and the control socket can ask of the running
//! system: the console's commands (console.rs parses them) and the
//! control protocol's requests (control.rs parses those).

use std::io::{self, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use super::Runtime;
use crate::console::{self, Command, LineError};
use crate::control::{self, Request};
use crate::supervisor::status;
use crate::{commands, logger, signals, sys};

/// How long queued log lines may delay a command's own output.
const CONSOLE_FLUSH: Duration = Duration::from_secs(1);

/// A console command's outcome: answered now, or later (`run` when the
/// program exits; shutdowns right before reboot(2)).
enum Outcome {
    Done(Result<(), String>),
    Later,
}

/// `VmRSS` of this process in KiB, from /proc/self/status.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Runtime {
    pub(super) fn console_line(&mut self, line: Result<Vec<u8>, LineError>, now: Instant) {
        let outcome = match line {
            Err(LineError::TooLong) => Outcome::Done(Err(format!(
                "line longer than {} bytes ignored",
                console::MAX_LINE
            ))),
            Ok(bytes) => match std::str::from_utf8(&bytes) {
                Err(_) => Outcome::Done(Err("command line is not valid UTF-8".into())),
                Ok(text) => match console::parse(text) {
                    Ok(None) => return,
                    Ok(Some(cmd)) => self.console_command(cmd, now),
                    Err(e) => Outcome::Done(Err(e.to_string())),
                },
            },
        };
        match outcome {
            Outcome::Done(Ok(())) => crate::log!("ok"),
            Outcome::Done(Err(msg)) => crate::log!("error: {msg}"),
            Outcome::Later => {}
        }
    }

    fn console_command(&mut self, cmd: Command, now: Instant) -> Outcome {
        // Queued log lines go out before the command's own output.
        logger::flush_blocking(CONSOLE_FLUSH);
        let out = &mut io::stdout().lock();
        let res = match cmd {
            Command::Cat(path) => commands::cat(Path::new(&path), out),
            Command::Write { path, text } => commands::write(Path::new(&path), &text),
            Command::Append { path, text } => commands::append(Path::new(&path), &text),
            Command::Mkdir(path) => commands::mkdir(Path::new(&path)),
            Command::Rm(path) => commands::rm(Path::new(&path)),
            Command::Ls(path) => commands::ls(Path::new(&path), out),
            Command::Mounts => commands::mounts(out),
            Command::Status => {
                for l in self.status_lines(now) {
                    let _ = writeln!(out, "{l}");
                }
                Ok(())
            }
            Command::Run { program, args } => return self.run_program(&program, &args),
            Command::Shutdown(kind) => {
                self.begin_shutdown(kind, true, now);
                return Outcome::Later;
            }
        };
        let _ = out.flush();
        Outcome::Done(res.map_err(|e| e.to_string()))
    }

    /// Starts a program for the console; the reaper reports its exit.
    /// Its stdin is /dev/null: the console is ours, and a program that
    /// read it would swallow commands.
    fn run_program(&mut self, program: &str, args: &[String]) -> Outcome {
        let mut cmd = Process::new(program);
        cmd.args(args).stdin(Stdio::null());
        match signals::reset_in_child(&mut cmd).spawn() {
            Ok(child) => {
                let pid = child.id() as libc::pid_t;
                // Dropping a Child neither waits for nor kills it.
                drop(child);
                if let Some(c) = &mut self.console {
                    c.running = Some(pid);
                }
                Outcome::Later
            }
            Err(e) => Outcome::Done(Err(format!("run {program}: {}", sys::describe(&e)))),
        }
    }

    /// Answers one control-socket request line.
    pub(super) fn request(&mut self, line: &str, now: Instant) -> Vec<u8> {
        let req = match Request::parse(line) {
            Ok(r) => r,
            Err(e) => return control::encode_reply(&[], &Err(e)),
        };
        let mut lines = Vec::new();
        let result = match req {
            Request::Status => {
                lines = self.status_lines(now);
                Ok(())
            }
            Request::Logs(source) => {
                let known = source.as_deref().is_none_or(|s| {
                    s == "init" || self.tree.as_ref().is_some_and(|t| t.find(s).is_some())
                });
                if known {
                    lines = logger::lines(source.as_deref());
                    Ok(())
                } else {
                    Err(format!("no service named '{}'", source.unwrap_or_default()))
                }
            }
            Request::Shutdown(kind) => {
                if self.shutdown.is_some() {
                    Err("already shutting down".into())
                } else {
                    // The reply goes out before the services stop (the
                    // agent asking for this is one of them).
                    let reply = control::encode_reply(&[], &Ok(()));
                    self.begin_shutdown(kind, false, now);
                    return reply;
                }
            }
            other => self.tree_request(other, now),
        };
        control::encode_reply(&lines, &result)
    }

    fn tree_request(&mut self, req: Request, now: Instant) -> Result<(), String> {
        let Some(tree) = &mut self.tree else {
            return Err(format!(
                "no services are running: {} has errors (see `keelctl logs init`)",
                self.services.display()
            ));
        };
        if self.shutdown.is_some() {
            return Err("shutting down".into());
        }
        let os = &mut self.procs;
        match req {
            Request::Start(name) => tree.start_child(os, &name, now),
            Request::Stop(name) => tree.stop(os, &name, now),
            Request::Restart(name) => tree.restart(os, &name, now),
            Request::Kill(name, sig) => {
                let pid = tree.pid_of(&name)?;
                sys::kill(pid, sig).map_err(|e| format!("kill {name} (pid {pid}): {e}"))
            }
            _ => Err("not a service request".into()),
        }
    }

    /// `status` for the console and keelctl: init itself, the health
    /// signal, then the tree.
    pub(super) fn status_lines(&self, now: Instant) -> Vec<String> {
        let up = sys::boottime().as_secs_f64();
        let rss = rss_kib().map_or_else(|| "?".into(), |k| k.to_string());
        let mut out = vec![
            format!(
                "init: pid {}, uptime {up:.1}s, rss {rss} KiB",
                std::process::id()
            ),
            format!("services: {}", self.services.display()),
        ];
        out.push(match (&self.rescue, self.healthy) {
            (Some(errors), _) => format!("health: rescue: {errors}"),
            (None, true) => {
                let since = std::fs::read_to_string(&self.health_file).unwrap_or_default();
                format!("health: healthy (since uptime {}s)", since.trim())
            }
            (None, false) => match self.tree.as_ref().and_then(|t| t.given_up()) {
                Some(why) => format!("health: failed: {why}"),
                None => format!(
                    "health: not healthy yet (needs all up and no restart for {:?})",
                    self.healthy_after
                ),
            },
        });
        if let Some(t) = &self.tree {
            out.extend(status::format_rows(&t.status(now)));
        }
        out
    }
}
