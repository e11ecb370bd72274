//! Moving the tree forward: each supervisor's current operation (stopping
//! all children, a group restart, the ordered start) one step at a time
//! until nothing changes.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Os, StartSeq, State, StopReason, Tree};
use crate::config::Restart;

impl Tree {
    /// Moves every supervisor's operation forward until nothing changes.
    pub(super) fn advance(&mut self, os: &mut dyn Os, now: Instant) {
        // Each step changes a state, so this ends; the bound is a backstop.
        for _ in 0..10_000 {
            let mut changed = false;
            for id in 0..self.nodes.len() {
                if self.nodes[id].sup.is_some() {
                    changed |= self.advance_sup(os, id, now);
                }
            }
            if !changed {
                return;
            }
        }
        crate::log!("supervisor: tree did not settle (bug); continuing");
    }

    fn youngest_not_down(&self, among: &[usize]) -> Option<usize> {
        among
            .iter()
            .rev()
            .copied()
            .find(|&c| self.nodes[c].state != State::Down)
    }

    fn advance_sup(&mut self, os: &mut dyn Os, id: usize, now: Instant) -> bool {
        if self.nodes[id].state == State::Down {
            return false;
        }
        let children = self.children(id);
        if self.sup(id).stop.is_some() {
            return match self.youngest_not_down(&children) {
                Some(c) if matches!(self.nodes[c].state, State::Stopping { .. }) => false,
                Some(c) => {
                    self.stop_node(os, c, now);
                    true
                }
                None => {
                    self.nodes[id].state = State::Down;
                    match self.sup(id).stop.take() {
                        Some(StopReason::Fail(why)) => self.failed(id, why, now),
                        _ => {
                            crate::log!("supervisor {}: stopped", self.nodes[id].name);
                            self.stopped(os, id, now);
                        }
                    }
                    true
                }
            };
        }
        if let Some(g) = self.sup(id).group.clone() {
            return match g.waiting_until {
                None => match self.youngest_not_down(&g.members) {
                    Some(c) if matches!(self.nodes[c].state, State::Stopping { .. }) => false,
                    Some(c) => {
                        self.stop_node(os, c, now);
                        true
                    }
                    None => {
                        if let Some(g) = &mut self.sup(id).group {
                            g.waiting_until = Some(now + g.delay);
                        }
                        true
                    }
                },
                Some(until) if now >= until => {
                    let queue: VecDeque<usize> = g
                        .members
                        .iter()
                        .copied()
                        .filter(|&m| {
                            !self.nodes[m].held && self.nodes[m].restart != Restart::Temporary
                        })
                        .collect();
                    let s = self.sup(id);
                    s.group = None;
                    s.seq = Some(StartSeq {
                        queue,
                        waiting_on: None,
                    });
                    true
                }
                Some(_) => false,
            };
        }
        let mut changed = false;
        if let Some(mut seq) = self.sup(id).seq.take() {
            let mut progressed = true;
            if let Some((c, deadline)) = seq.waiting_on {
                let n = &self.nodes[c];
                if n.settled() || n.held {
                    seq.waiting_on = None;
                } else if deadline.is_some_and(|d| now >= d) {
                    crate::log!(
                        "supervisor {}: {} is not ready; starting the next child anyway",
                        self.nodes[id].name,
                        n.name
                    );
                    seq.waiting_on = None;
                } else {
                    progressed = false;
                }
            }
            if progressed {
                changed = true;
                if seq.waiting_on.is_none() {
                    match seq.queue.pop_front() {
                        Some(c) if self.nodes[c].state == State::Down => {
                            self.start_node(os, c, now);
                            if let State::Starting { deadline, .. } = self.nodes[c].state {
                                seq.waiting_on = Some((c, deadline));
                            }
                        }
                        // Started meanwhile (keelctl start): skip it.
                        Some(_) => {}
                        None => {
                            let n = &mut self.nodes[id];
                            if matches!(n.state, State::Starting { .. }) {
                                n.state = State::Up;
                            }
                            // Done: do not put the sequence back.
                            return true;
                        }
                    }
                }
            }
            // start_node may have failed a child and changed the plan.
            let s = self.sup(id);
            if s.seq.is_none() && s.group.is_none() && s.stop.is_none() {
                s.seq = Some(seq);
            }
        }
        for c in children {
            if let State::Backoff { until } = self.nodes[c].state {
                if now >= until {
                    self.start_node(os, c, now);
                    changed = true;
                }
            }
        }
        changed
    }
}
