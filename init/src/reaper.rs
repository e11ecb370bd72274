//! Zombie reaping: PID 1 inherits every orphan and must collect them all.
//!
//! Every reap is a `waitpid(-1, WNOHANG)` loop (here and in the runtime),
//! never a wait for one pid: std's `Child::wait` would race with it, and
//! orphans would pile up as zombies.

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

/// Reaps every exited child, dropping the statuses (shutdown's final
/// sweep; the runtime reaps with `sys::wait_any_nohang` itself to hand
/// each status to its owner). Returns false when no children are left at
/// all (ECHILD), which shutdown uses to stop waiting early.
pub fn reap_all() -> bool {
    loop {
        match sys::wait_any_nohang() {
            Ok(Some(_)) => {}
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
}
