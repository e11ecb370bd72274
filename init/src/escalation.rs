//! A budget for reboots caused by failing services.
//!
//! When the root supervisor gives up and `on_failure = "reboot"`, a reboot
//! is the right move on a slot on trial: the bootloader counts it and falls
//! back to the previous slot after `max_tries`. On a confirmed slot the
//! same failure comes back after every reboot, and the device would reboot
//! in a loop that only physical access ends. So init counts such reboots in
//! a row on the data partition, and once the count reaches the board's
//! `max_tries` it stays up instead (console and control socket working, the
//! fleet agent reachable). Becoming healthy resets the count. The limit is
//! never below `max_tries`, so a trial slot is still rebooted often enough
//! for the bootloader to give up on it.

use std::path::{Path, PathBuf};

/// The state file is one number; anything longer is not ours.
const MAX_FILE: u64 = 64;

pub struct RebootBudget {
    path: PathBuf,
    limit: u32,
}

/// What the budget allows when the services have failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reboot; this is the n-th in a row.
    Reboot(u32),
    /// Stay up: the limit is reached, or the count cannot be kept.
    StayUp(String),
}

impl RebootBudget {
    pub fn new(path: &Path, limit: u32) -> RebootBudget {
        RebootBudget {
            path: path.to_path_buf(),
            limit: limit.max(1),
        }
    }

    fn count(&self) -> Result<u32, String> {
        match durable::read_to_string(&self.path, MAX_FILE) {
            Ok(None) => Ok(0),
            // A count that does not parse was not written by init: do not
            // let it open the way to a loop.
            Ok(Some(t)) => Ok(t.trim().parse().unwrap_or(self.limit)),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Whether another reboot is allowed; if so it is counted, durably,
    /// before the caller reboots.
    pub fn take(&self) -> Verdict {
        let n = match self.count() {
            Ok(n) => n,
            Err(e) => return Verdict::StayUp(format!("cannot keep the reboot count ({e})")),
        };
        if n >= self.limit {
            return Verdict::StayUp(format!(
                "the services failed {n} boots in a row without becoming healthy"
            ));
        }
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            return Verdict::StayUp(format!(
                "cannot keep the reboot count ({} is not there)",
                dir.display()
            ));
        }
        match durable::replace(&self.path, format!("{}\n", n + 1).as_bytes(), 0o644) {
            Ok(()) => Verdict::Reboot(n + 1),
            Err(e) => Verdict::StayUp(format!(
                "cannot keep the reboot count ({}: {e})",
                self.path.display()
            )),
        }
    }

    /// The services became healthy: the next failure starts a new count.
    pub fn reset(&self) {
        if let Err(e) = durable::remove(&self.path) {
            crate::log!("{}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboots_up_to_the_limit_then_stays_up_until_healthy() {
        let d = tempfile::tempdir().unwrap();
        let b = RebootBudget::new(&d.path().join("failed-boots"), 3);
        assert_eq!(b.take(), Verdict::Reboot(1));
        assert_eq!(b.take(), Verdict::Reboot(2));
        assert_eq!(b.take(), Verdict::Reboot(3));
        assert!(matches!(b.take(), Verdict::StayUp(_)));
        b.reset();
        assert_eq!(b.take(), Verdict::Reboot(1));
    }

    #[test]
    fn without_a_place_to_count_it_stays_up() {
        let d = tempfile::tempdir().unwrap();
        let b = RebootBudget::new(&d.path().join("missing/failed-boots"), 3);
        assert!(matches!(b.take(), Verdict::StayUp(_)));
        let garbage = d.path().join("failed-boots");
        std::fs::write(&garbage, "many").unwrap();
        assert!(matches!(
            RebootBudget::new(&garbage, 3).take(),
            Verdict::StayUp(_)
        ));
    }
}
