//! What the outside asks of the tree: shutdown, `keelctl stop/start/
//! restart/kill`, and whether it is healthy.

use std::time::Instant;

use super::{Os, State, Tree};
use crate::config::WorkerSpec;

impl Tree {
    /// Stops every child, youngest first, then the tree is `is_down`.
    pub fn shutdown(&mut self, os: &mut dyn Os, now: Instant) {
        self.shutting_down = true;
        self.stop_node(os, 0, now);
        self.advance(os, now);
    }

    /// `keelctl stop NAME`: stop and keep it stopped.
    pub fn stop(&mut self, os: &mut dyn Os, name: &str, now: Instant) -> Result<(), String> {
        let id = self.named(name)?;
        if id == 0 {
            return Err("the root supervisor cannot be stopped (use reboot or poweroff)".into());
        }
        let n = &mut self.nodes[id];
        if n.state == State::Down {
            return Err(format!("{name} is not running"));
        }
        n.held = true;
        n.restart_after_stop = false;
        self.last_disturbance = now;
        self.stop_node(os, id, now);
        self.advance(os, now);
        Ok(())
    }

    /// `keelctl start NAME`: start a stopped child (clears a `stop`).
    pub fn start_child(&mut self, os: &mut dyn Os, name: &str, now: Instant) -> Result<(), String> {
        let id = self.named(name)?;
        let n = &self.nodes[id];
        if !matches!(n.state, State::Down | State::Backoff { .. }) {
            return Err(format!("{name} is already running"));
        }
        if let Some(p) = n.parent {
            if !matches!(self.nodes[p].state, State::Up | State::Starting { .. }) {
                return Err(format!(
                    "{name}'s supervisor {} is not running",
                    self.nodes[p].name
                ));
            }
        } else if self.given_up.is_some() {
            return Err("the tree has given up".into());
        }
        let n = &mut self.nodes[id];
        n.held = false;
        n.backoff_steps = 0;
        self.last_disturbance = now;
        self.start_node(os, id, now);
        self.advance(os, now);
        Ok(())
    }

    /// `keelctl restart NAME`: stop (SIGTERM, timeout) and start again,
    /// without counting against the supervisor's intensity.
    pub fn restart(&mut self, os: &mut dyn Os, name: &str, now: Instant) -> Result<(), String> {
        let id = self.named(name)?;
        if matches!(self.nodes[id].state, State::Down | State::Backoff { .. }) {
            return self.start_child(os, name, now);
        }
        let n = &mut self.nodes[id];
        n.held = false;
        n.restarts += 1;
        n.restart_after_stop = true;
        self.last_disturbance = now;
        self.stop_node(os, id, now);
        self.advance(os, now);
        Ok(())
    }

    /// The pid of a running worker, for `keelctl kill`.
    pub fn pid_of(&self, name: &str) -> Result<libc::pid_t, String> {
        let id = self.named(name)?;
        let n = &self.nodes[id];
        if n.is_supervisor() {
            return Err(format!("{name} is a supervisor; signal one of its workers"));
        }
        n.pid.ok_or_else(|| format!("{name} is not running"))
    }

    fn named(&self, name: &str) -> Result<usize, String> {
        self.find(name).ok_or_else(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "no service named '{name}' (there are: {})",
                names.join(", ")
            )
        })
    }

    /// The whole tree is up: every worker ready or properly finished, no
    /// restart pending, nothing stopped by hand.
    pub fn whole_up(&self) -> bool {
        self.given_up.is_none()
            && !self.shutting_down
            && self.nodes.iter().all(|n| {
                n.settled()
                    && !n.held
                    && n.sup
                        .as_ref()
                        .is_none_or(|s| s.seq.is_none() && s.group.is_none() && s.stop.is_none())
            })
    }

    /// When the tree last restarted, stopped or lost a child.
    pub fn last_disturbance(&self) -> Instant {
        self.last_disturbance
    }

    /// Workers waiting for readiness: (id, pid, spec).
    pub fn awaiting_ready(&self) -> impl Iterator<Item = (usize, libc::pid_t, &WorkerSpec)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(id, n)| match (n.state, n.pid, &n.worker) {
                (State::Starting { .. }, Some(pid), Some(w)) => Some((id, pid, w)),
                _ => None,
            })
    }
}
