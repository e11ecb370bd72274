//! What happens when a child goes down unexpectedly: the restart
//! intensity check, the strategy's restart set, and the growing,
//! jittered delay before the restart.

use std::time::{Duration, Instant};

use super::{secs, Group, State, StopReason, Tree, MAX_BACKOFF_STEPS};
use crate::config::{Restart, Strategy};

impl Tree {
    /// A child went down unexpectedly (it is `Down` already): restart it,
    /// with its siblings as the strategy says, or give up.
    pub(super) fn failed(&mut self, id: usize, why: String, now: Instant) {
        self.last_disturbance = now;
        let Some(sup_id) = self.nodes[id].parent else {
            crate::log!("root supervisor gave up: {why}");
            self.given_up = Some(why);
            return;
        };
        if self.shutting_down || self.nodes[id].held {
            return;
        }
        let position = self
            .children(sup_id)
            .iter()
            .position(|&c| c == id)
            .unwrap_or(0);
        let sup_name = self.nodes[sup_id].name.clone();
        let s = self.sup(sup_id);
        if s.stop.is_some() {
            return;
        }
        if s.group.as_ref().is_some_and(|g| g.members.contains(&id)) {
            // Already part of a restart in progress.
            return;
        }
        let period = s.spec.period;
        s.recent.push_back(now);
        while s
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > period)
        {
            s.recent.pop_front();
        }
        if s.recent.len() > s.spec.intensity as usize {
            let why = format!(
                "supervisor {sup_name}: more than {} restarts in {} (last: {why})",
                s.spec.intensity,
                secs(period)
            );
            crate::log!("{why}; stopping its children and giving up");
            s.stop = Some(StopReason::Fail(why));
            s.seq = None;
            s.group = None;
            self.nodes[sup_id].state = State::Stopping {
                deadline: None,
                killed: false,
            };
            return;
        }
        let strategy = s.spec.strategy;
        let children = s.spec.children.clone();
        let delay = self.backoff_delay(id, sup_id, now);
        let n = &mut self.nodes[id];
        n.restarts += 1;
        match strategy {
            Strategy::OneForOne => {
                crate::log!(
                    "{}: restarting in {} (restart {})",
                    n.name,
                    secs(delay),
                    n.restarts
                );
                n.state = State::Backoff { until: now + delay };
            }
            Strategy::OneForAll | Strategy::RestForOne => {
                let from = if strategy == Strategy::OneForAll {
                    0
                } else {
                    position
                };
                let mut members: Vec<usize> = children[from..].to_vec();
                let s = self.sup(sup_id);
                let delay = match s.group.take() {
                    Some(g) => {
                        // An older child failed during a rest_for_one
                        // restart: widen it.
                        members.extend(g.members);
                        members.sort_unstable();
                        members.dedup();
                        delay.max(g.delay)
                    }
                    None => delay,
                };
                s.seq = None;
                s.group = Some(Group {
                    members: members.clone(),
                    delay,
                    waiting_until: None,
                });
                for &m in &members {
                    let sib = &mut self.nodes[m];
                    if m != id && sib.state != State::Down && sib.restart != Restart::Temporary {
                        sib.restarts += 1;
                    }
                }
                let names: Vec<&str> = members
                    .iter()
                    .map(|&m| self.nodes[m].name.as_str())
                    .collect();
                crate::log!(
                    "supervisor {sup_name}: restarting {} in {}",
                    names.join(", "),
                    secs(delay)
                );
            }
        }
    }

    /// The delay before a child's next restart: `restart_delay` doubled
    /// per consecutive restart, capped, ±25% jitter. A child that stayed up
    /// for a whole intensity period starts over at the first delay.
    fn backoff_delay(&mut self, id: usize, sup_id: usize, now: Instant) -> Duration {
        let spec = self.nodes[sup_id]
            .sup
            .as_ref()
            .expect("a supervisor")
            .spec
            .clone();
        let n = &mut self.nodes[id];
        if n.since
            .is_some_and(|s| now.saturating_duration_since(s) >= spec.period)
        {
            n.backoff_steps = 0;
        }
        let base = spec
            .restart_delay
            .saturating_mul(1 << n.backoff_steps.min(MAX_BACKOFF_STEPS))
            .min(spec.restart_delay_max);
        n.backoff_steps = (n.backoff_steps + 1).min(MAX_BACKOFF_STEPS);
        let jitter = 0.75 + 0.5 * self.random();
        // Never zero: a child that cannot even be spawned must not be
        // retried within the same event-loop turn.
        base.mul_f64(jitter).max(Duration::from_millis(1))
    }

    /// xorshift64*: jitter needs no more than this.
    fn random(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}
