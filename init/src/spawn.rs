//! Starting service processes for real (the supervisor's `Os`), and the
//! pipes that come with them: output captured line by line, and the
//! readiness descriptor of `ready_fd` services.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::config::{Ready, WorkerSpec};
use crate::logger::{self, LineSplitter};
use crate::supervisor::Os;
use crate::{signals, sys};

/// The kernel sets no PATH for init; services and `run` get this.
pub const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// A service's stdout+stderr pipe. Kept until EOF, which may come after
/// the process exits (a child it left behind can still hold it).
struct LogPipe {
    fd: OwnedFd,
    name: String,
    console: bool,
    lines: LineSplitter,
}

/// The read end of a `ready_fd` service's notification pipe.
struct NotifyPipe {
    fd: OwnedFd,
    id: usize,
    pid: libc::pid_t,
    name: String,
}

pub struct Procs {
    logs: Vec<LogPipe>,
    notify: Vec<NotifyPipe>,
    /// Host mode: services die with us (PR_SET_PDEATHSIG), so a killed
    /// test run leaves nothing behind.
    die_with_parent: bool,
}

impl Procs {
    pub fn new(die_with_parent: bool) -> Self {
        Self {
            logs: Vec::new(),
            notify: Vec::new(),
            die_with_parent,
        }
    }

    /// Adds our descriptors to a poll set; `service` must get the same
    /// slice back.
    pub fn fill(&self, fds: &mut Vec<libc::pollfd>) {
        for fd in self
            .logs
            .iter()
            .map(|p| &p.fd)
            .chain(self.notify.iter().map(|p| &p.fd))
        {
            fds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
    }

    /// Reads what the polled pipes have; returns workers that signalled
    /// readiness as (id, pid).
    pub fn service(&mut self, fds: &[libc::pollfd]) -> Vec<(usize, libc::pid_t)> {
        let (log_fds, notify_fds) = fds.split_at(self.logs.len().min(fds.len()));
        let mut buf = [0u8; 4096];
        let mut closed = Vec::new();
        for (i, pfd) in log_fds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let p = &mut self.logs[i];
            match sys::read(p.fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    if let Some(rest) = p.lines.finish() {
                        logger::service_line(&p.name, &rest, p.console);
                    }
                    closed.push(i);
                }
                Ok(n) => {
                    for line in p.lines.feed(&buf[..n]) {
                        logger::service_line(&p.name, &line, p.console);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            self.logs.swap_remove(i);
        }
        let mut ready = Vec::new();
        let mut closed = Vec::new();
        for (i, pfd) in notify_fds.iter().enumerate() {
            if pfd.revents == 0 || i >= self.notify.len() {
                continue;
            }
            let p = &self.notify[i];
            match sys::read(p.fd.as_raw_fd(), &mut buf) {
                Ok(n) if buf[..n].contains(&b'\n') => {
                    ready.push((p.id, p.pid));
                    closed.push(i);
                }
                Ok(0) => {
                    crate::log!("{}: closed its ready fd without writing a newline", p.name);
                    closed.push(i);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            self.notify.swap_remove(i);
        }
        ready
    }

    /// Drops the notification pipe of a process that is gone.
    pub fn forget(&mut self, pid: libc::pid_t) {
        self.notify.retain(|p| p.pid != pid);
    }
}

impl Os for Procs {
    fn spawn(&mut self, id: usize, name: &str, spec: &WorkerSpec) -> io::Result<libc::pid_t> {
        let (log_r, log_w) = sys::pipe()?;
        sys::set_nonblocking(log_r.as_raw_fd())?;
        let notify = match &spec.ready {
            Some(Ready::Fd(n)) => Some((sys::pipe()?, *n)),
            Some(Ready::File(path)) => {
                // A file left by the previous run must not count.
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        crate::log!("{name}: remove {}: {e}", path.display());
                    }
                    _ => {}
                }
                None
            }
            None => None,
        };
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOME", "/")
            .env("KEEL_SERVICE", name);
        if let Some((_, n)) = &notify {
            cmd.env("KEEL_READY_FD", n.to_string());
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(spec.cwd.as_deref().unwrap_or("/"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_w.try_clone()?))
            .stderr(Stdio::from(log_w));
        if let Some(gid) = spec.gid {
            cmd.gid(gid);
        }
        if let Some(uid) = spec.uid {
            cmd.uid(uid);
        }
        signals::reset_in_child(&mut cmd);
        let ready_w = notify.as_ref().map(|((_, w), n)| (w.as_raw_fd(), *n));
        // Its own session and process group, PR_SET_PDEATHSIG in host
        // mode, and the ready fd at the number the service asked for; after
        // the signal reset above, as pre_exec steps run in order.
        sys::prepare_child(&mut cmd, self.die_with_parent, ready_w);
        let child = cmd.spawn()?;
        let pid = child.id() as libc::pid_t;
        // Neither waited for nor killed on drop: the reaper owns it. The
        // Command holds our copies of the pipes' write ends; drop them so
        // EOF comes when the service closes its own.
        drop(child);
        drop(cmd);
        self.logs.push(LogPipe {
            fd: log_r,
            name: name.to_string(),
            console: spec.console,
            lines: LineSplitter::default(),
        });
        if let Some(((r, w), _)) = notify {
            drop(w);
            sys::set_nonblocking(r.as_raw_fd())?;
            self.notify.push(NotifyPipe {
                fd: r,
                id,
                pid,
                name: name.to_string(),
            });
        }
        Ok(pid)
    }

    fn signal(&mut self, pid: libc::pid_t, sig: libc::c_int) {
        // The whole process group (the service called setsid). ESRCH
        // once everyone is gone is fine. Never fall back to the bare pid:
        // once reaped, it may belong to someone else, while the kernel
        // does not reuse a pid that still names a process group.
        let _ = sys::kill(-pid, sig);
    }
}
