//! The tree as `keelctl status` shows it: one row per child, indented
//! under its supervisor, in start order.

use std::time::{Duration, Instant};

use super::{secs, State, Tree};
use crate::reaper::ExitStatus;

#[derive(Debug, Clone, PartialEq)]
pub struct StatusRow {
    pub depth: usize,
    pub name: String,
    pub supervisor: bool,
    pub state: String,
    pub pid: Option<libc::pid_t>,
    pub restarts: u32,
    pub uptime: Option<Duration>,
    pub last_exit: Option<ExitStatus>,
}

impl Tree {
    pub fn status(&self, now: Instant) -> Vec<StatusRow> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(id, n)| {
                let mut depth = 0;
                let mut p = n.parent;
                while let Some(parent) = p {
                    depth += 1;
                    p = self.nodes[parent].parent;
                }
                let state = match n.state {
                    State::Down if id == 0 && self.given_up.is_some() => "failed".to_string(),
                    State::Down if n.held => "stopped".to_string(),
                    State::Down if n.done => "done".to_string(),
                    State::Down => "down".to_string(),
                    State::Starting { warned: true, .. } => "not-ready".to_string(),
                    State::Starting { .. } => "starting".to_string(),
                    State::Up => "up".to_string(),
                    State::Stopping { .. } => "stopping".to_string(),
                    State::Backoff { until } => {
                        format!("backoff({})", secs(until.saturating_duration_since(now)))
                    }
                };
                let running = !matches!(n.state, State::Down | State::Backoff { .. });
                StatusRow {
                    depth,
                    name: n.name.clone(),
                    supervisor: n.is_supervisor(),
                    state,
                    pid: n.pid,
                    restarts: n.restarts,
                    uptime: n
                        .since
                        .filter(|_| running)
                        .map(|s| now.saturating_duration_since(s)),
                    last_exit: n.last_exit,
                }
            })
            .collect()
    }
}

/// Fixed columns; `-` for an empty cell so every row splits into the
/// same number of words.
pub fn format_rows(rows: &[StatusRow]) -> Vec<String> {
    let mut out = vec![format!(
        "{:<24} {:<10} {:<14} {:>7} {:>8} {:>9}  {}",
        "NAME", "TYPE", "STATE", "PID", "RESTARTS", "UPTIME", "LAST-EXIT"
    )];
    for r in rows {
        let name = format!("{}{}", "  ".repeat(r.depth), r.name);
        let pid = r.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        let up = r.uptime.map_or_else(|| "-".to_string(), secs);
        let last = match r.last_exit {
            None => "-".to_string(),
            Some(ExitStatus::Exited(code)) => format!("exit={code}"),
            Some(ExitStatus::Signaled(sig)) => format!("signal={sig}"),
        };
        out.push(format!(
            "{name:<24} {:<10} {:<14} {pid:>7} {:>8} {up:>9}  {last}",
            if r.supervisor { "supervisor" } else { "worker" },
            r.state,
            r.restarts
        ));
    }
    out
}
