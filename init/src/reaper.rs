//! Zombie reaping: PID 1 inherits every orphan and must collect them all.
//!
//! Reaping is done only here, with `waitpid(-1, WNOHANG)`, so a child that
//! the console is waiting for is never lost to another `wait` (std's
//! `Child::wait` would race with this loop). The reaper remembers the exit
//! status only of the children somebody asked it to watch.

use std::fmt;

use crate::sys;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// Decodes a raw `waitpid` status. Stop/continue reports cannot reach
    /// us (no WUNTRACED), so anything else is treated as a signal death.
    pub fn from_raw(status: libc::c_int) -> Self {
        if libc::WIFEXITED(status) {
            Self::Exited(libc::WEXITSTATUS(status))
        } else {
            Self::Signaled(libc::WTERMSIG(status))
        }
    }
}

impl fmt::Display for ExitStatus {
    /// Shell convention (128 + signal) so a test can always parse a number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exit={code}"),
            Self::Signaled(sig) => write!(f, "exit={} (killed by signal {sig})", 128 + sig),
        }
    }
}

/// Children being watched and, once reaped, how they ended.
#[derive(Debug, Default)]
pub struct Reaper {
    watched: Vec<(libc::pid_t, Option<ExitStatus>)>,
}

impl Reaper {
    /// Starts remembering how `pid` ends. Safe to call after the child has
    /// already exited: it stays a zombie until `reap_all` runs.
    pub fn watch(&mut self, pid: libc::pid_t) {
        self.watched.push((pid, None));
    }

    /// Records one reaped child; orphans nobody watches are just dropped.
    pub fn record(&mut self, pid: libc::pid_t, raw: libc::c_int) {
        if let Some(entry) = self.watched.iter_mut().find(|(p, _)| *p == pid) {
            entry.1 = Some(ExitStatus::from_raw(raw));
        }
    }

    /// The watched child's status once it has been reaped; stops watching it.
    pub fn take(&mut self, pid: libc::pid_t) -> Option<ExitStatus> {
        let idx = self
            .watched
            .iter()
            .position(|(p, s)| *p == pid && s.is_some())?;
        self.watched.swap_remove(idx).1
    }

    /// Reaps every exited child. Returns false when no children are left at
    /// all (ECHILD), which shutdown uses to stop waiting early.
    pub fn reap_all(&mut self) -> bool {
        loop {
            match sys::wait_any_nohang() {
                Ok(Some((pid, raw))) => self.record(pid, raw),
                Ok(None) => return true,
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return false,
                Err(e) => {
                    // Cannot happen with valid arguments; never spin on it.
                    crate::log!("waitpid: {e}");
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exit_codes_and_signals() {
        // Linux encodes exit code N as N << 8 and a signal death as the
        // signal number in the low 7 bits.
        assert_eq!(ExitStatus::from_raw(0), ExitStatus::Exited(0));
        assert_eq!(ExitStatus::from_raw(3 << 8), ExitStatus::Exited(3));
        assert_eq!(ExitStatus::from_raw(9), ExitStatus::Signaled(9));
        assert_eq!(ExitStatus::Exited(3).to_string(), "exit=3");
        assert_eq!(
            ExitStatus::Signaled(9).to_string(),
            "exit=137 (killed by signal 9)"
        );
    }

    #[test]
    fn remembers_only_watched_children() {
        let mut r = Reaper::default();
        r.watch(42);
        assert_eq!(r.take(42), None, "not reaped yet");
        r.record(7, 0);
        assert_eq!(r.take(7), None, "orphans are not remembered");
        r.record(42, 1 << 8);
        assert_eq!(r.take(42), Some(ExitStatus::Exited(1)));
        assert_eq!(r.take(42), None, "taken once");
        assert!(r.watched.is_empty());
    }
}
