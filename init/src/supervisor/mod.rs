//! The OTP-style supervision tree: which child to start, stop or restart
//! when, and when a supervisor gives up. No process handling here: the
//! tree asks an `Os` to spawn and signal, and is told about exits and
//! readiness, so every strategy is unit-tested with a fake `Os` and exact
//! clocks (see `tests.rs`); `spawn.rs` is the real `Os`.
//!
//! Differences from OTP, on purpose: a restart waits a delay that doubles
//! per consecutive restart of the same child, with ±25% jitter (OTP
//! restarts at once, and a fleet of devices then crash-loops in lock
//! step); a worker may declare readiness, holding back younger siblings.

mod status;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::config::{Config, NodeKind, NodeSpec, Restart, Strategy, SupervisorSpec, WorkerSpec};
use crate::reaper::ExitStatus;

pub use status::StatusRow;

/// After SIGKILL, how long to wait for the exit before giving up on a
/// process (one stuck in uninterruptible sleep may never go).
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Doubling stops here; the cap is `restart_delay_max` anyway.
const MAX_BACKOFF_STEPS: u32 = 20;

/// What the tree needs from the operating system.
pub trait Os {
    /// Starts a worker's process (its own process group) and returns its pid.
    fn spawn(&mut self, id: usize, name: &str, spec: &WorkerSpec) -> io::Result<libc::pid_t>;
    /// Signals a worker's process group.
    fn signal(&mut self, pid: libc::pid_t, sig: libc::c_int);
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    /// Not running: never started, stopped, or finished (see `done`).
    Down,
    /// Worker: spawned, not ready yet. Supervisor: starting its children.
    Starting {
        deadline: Option<Instant>,
        warned: bool,
    },
    Up,
    /// Worker: SIGTERM sent (SIGKILL at the deadline). Supervisor:
    /// stopping its children, youngest first.
    Stopping {
        deadline: Option<Instant>,
        killed: bool,
    },
    /// Waiting to be restarted.
    Backoff { until: Instant },
}

/// Why a supervisor is stopping all its children.
#[derive(Debug, Clone, PartialEq)]
enum StopReason {
    /// Restart intensity exceeded: fail to the parent afterwards.
    Fail(String),
    /// Asked to (shutdown, `keelctl stop/restart`, a parent's restart).
    Requested,
}

/// A one_for_all / rest_for_one restart: stop `members` youngest first,
/// wait the delay, start them again in order.
#[derive(Debug, Clone)]
struct Group {
    members: Vec<usize>,
    delay: Duration,
    waiting_until: Option<Instant>,
}

/// Children still to start, in order; the one started last may hold the
/// rest back until it is ready (or its ready timeout passes).
#[derive(Debug, Clone, Default)]
struct StartSeq {
    queue: VecDeque<usize>,
    waiting_on: Option<(usize, Option<Instant>)>,
}

#[derive(Debug, Clone)]
struct SupRun {
    spec: SupervisorSpec,
    /// Restart times within the last `period`.
    recent: VecDeque<Instant>,
    seq: Option<StartSeq>,
    group: Option<Group>,
    stop: Option<StopReason>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub restart: Restart,
    pub parent: Option<usize>,
    pub state: State,
    pub pid: Option<libc::pid_t>,
    /// Times this child was restarted (shown by `keelctl status`).
    pub restarts: u32,
    /// When the current run started.
    pub since: Option<Instant>,
    pub last_exit: Option<ExitStatus>,
    /// Stopped by `keelctl stop`: no restarts until `keelctl start`.
    pub held: bool,
    /// Ended in a way its restart type accepts (not restarted).
    pub done: bool,
    /// Start again once stopped (`keelctl restart`).
    restart_after_stop: bool,
    /// Consecutive restarts, for the growing delay.
    backoff_steps: u32,
    worker: Option<WorkerSpec>,
    sup: Option<SupRun>,
}

impl Node {
    pub fn is_supervisor(&self) -> bool {
        self.sup.is_some()
    }

    pub fn worker_spec(&self) -> Option<&WorkerSpec> {
        self.worker.as_ref()
    }

    /// Running and ready, or finished the way its restart type allows.
    fn settled(&self) -> bool {
        match self.state {
            State::Up => true,
            State::Down => self.done,
            _ => false,
        }
    }
}

pub struct Tree {
    nodes: Vec<Node>,
    rng: u64,
    /// Why the root supervisor gave up, once it has.
    given_up: Option<String>,
    /// The last restart, stop or failure anywhere: health waits
    /// `healthy_after` past it.
    last_disturbance: Instant,
    shutting_down: bool,
}

impl Tree {
    pub fn new(config: &Config, seed: u64, now: Instant) -> Self {
        let nodes = config
            .nodes
            .iter()
            .map(|spec: &NodeSpec| {
                let (worker, sup) = match &spec.kind {
                    NodeKind::Worker(w) => (Some(w.clone()), None),
                    NodeKind::Supervisor(s) => (
                        None,
                        Some(SupRun {
                            spec: s.clone(),
                            recent: VecDeque::new(),
                            seq: None,
                            group: None,
                            stop: None,
                        }),
                    ),
                };
                Node {
                    name: spec.name.clone(),
                    restart: spec.restart,
                    parent: None,
                    state: State::Down,
                    pid: None,
                    restarts: 0,
                    since: None,
                    last_exit: None,
                    held: false,
                    done: false,
                    restart_after_stop: false,
                    backoff_steps: 0,
                    worker,
                    sup,
                }
            })
            .collect::<Vec<_>>();
        let mut tree = Self {
            nodes,
            // xorshift must not start at zero.
            rng: seed | 1,
            given_up: None,
            last_disturbance: now,
            shutting_down: false,
        };
        for id in 0..tree.nodes.len() {
            for c in tree.children(id) {
                tree.nodes[c].parent = Some(id);
            }
        }
        tree
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn given_up(&self) -> Option<&str> {
        self.given_up.as_deref()
    }

    /// True once a shutdown has stopped every child.
    pub fn is_down(&self) -> bool {
        self.nodes[0].state == State::Down
    }

    fn children(&self, id: usize) -> Vec<usize> {
        self.nodes[id]
            .sup
            .as_ref()
            .map(|s| s.spec.children.clone())
            .unwrap_or_default()
    }

    fn sup(&mut self, id: usize) -> &mut SupRun {
        self.nodes[id].sup.as_mut().expect("a supervisor")
    }

    /// Starts the whole tree.
    pub fn start(&mut self, os: &mut dyn Os, now: Instant) {
        self.start_node(os, 0, now);
        self.advance(os, now);
    }

    /// When the tree next needs `tick`, if it has a timer running.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut add = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for n in &self.nodes {
            match n.state {
                State::Backoff { until } => add(until),
                State::Starting {
                    deadline: Some(d),
                    warned: false,
                } => add(d),
                State::Stopping {
                    deadline: Some(d), ..
                } => add(d),
                _ => {}
            }
            if let Some(s) = &n.sup {
                if let Some(t) = s.group.as_ref().and_then(|g| g.waiting_until) {
                    add(t);
                }
                if let Some((_, Some(d))) = s.seq.as_ref().and_then(|q| q.waiting_on) {
                    add(d);
                }
            }
        }
        next
    }

    /// Fires due timers: SIGKILL after a shutdown timeout, readiness
    /// timeouts, restart delays.
    pub fn tick(&mut self, os: &mut dyn Os, now: Instant) {
        for id in 0..self.nodes.len() {
            let n = &mut self.nodes[id];
            match n.state {
                State::Stopping {
                    deadline: Some(d),
                    killed,
                } if now >= d && n.worker.is_some() => {
                    let pid = n.pid;
                    if killed {
                        crate::log!(
                            "{}: pid {} did not exit after SIGKILL; leaving it behind",
                            n.name,
                            pid.unwrap_or(0)
                        );
                        n.pid = None;
                        n.state = State::Down;
                        self.stopped(os, id, now);
                    } else {
                        crate::log!(
                            "{}: still running {:?} after SIGTERM; sending SIGKILL",
                            n.name,
                            n.worker.as_ref().map(|w| w.shutdown_timeout).unwrap_or_default()
                        );
                        n.state = State::Stopping {
                            deadline: Some(now + KILL_WAIT),
                            killed: true,
                        };
                        if let Some(pid) = pid {
                            os.signal(pid, libc::SIGKILL);
                        }
                    }
                }
                State::Starting {
                    deadline: Some(d),
                    warned: false,
                } if now >= d => {
                    crate::log!("{}: not ready after {:?}", n.name, n.worker.as_ref().map(|w| w.ready_timeout).unwrap_or_default());
                    n.state = State::Starting {
                        deadline: Some(d),
                        warned: true,
                    };
                }
                _ => {}
            }
        }
        self.advance(os, now);
    }

    /// A worker said it is ready (ready file or notify fd).
    pub fn ready(&mut self, os: &mut dyn Os, id: usize, pid: libc::pid_t, now: Instant) {
        let n = &mut self.nodes[id];
        if n.pid == Some(pid) && matches!(n.state, State::Starting { .. }) {
            let took = n.since.map(|s| now.saturating_duration_since(s)).unwrap_or_default();
            crate::log!("{}: ready after {}", n.name, secs(took));
            n.state = State::Up;
            self.advance(os, now);
        }
    }

    /// A child process ended. Returns false if it was not one of ours.
    pub fn exited(&mut self, os: &mut dyn Os, pid: libc::pid_t, status: ExitStatus, now: Instant) -> bool {
        let Some(id) = self.nodes.iter().position(|n| n.pid == Some(pid)) else {
            return false;
        };
        // Whatever the process left behind in its group goes with it.
        os.signal(pid, libc::SIGKILL);
        let n = &mut self.nodes[id];
        n.pid = None;
        n.last_exit = Some(status);
        match n.state {
            State::Stopping { .. } => {
                crate::log!("{}: stopped ({status})", n.name);
                n.state = State::Down;
                self.stopped(os, id, now);
            }
            State::Starting { .. } | State::Up => {
                n.state = State::Down;
                let normal = status == ExitStatus::Exited(0);
                match (n.restart, normal) {
                    (Restart::Temporary, _) => {
                        crate::log!("{}: exited ({status}); temporary, not restarted", n.name);
                        n.done = true;
                    }
                    (Restart::Transient, true) => {
                        crate::log!("{}: exited ({status}); transient, not restarted", n.name);
                        n.done = true;
                    }
                    _ => {
                        let why = format!("{} exited ({status})", n.name);
                        crate::log!("{why}");
                        self.failed(id, why, now);
                    }
                }
            }
            State::Down | State::Backoff { .. } => {}
        }
        self.advance(os, now);
        true
    }

    /// A node finished stopping: restart it if that was asked for.
    fn stopped(&mut self, os: &mut dyn Os, id: usize, now: Instant) {
        let n = &mut self.nodes[id];
        if !std::mem::take(&mut n.restart_after_stop) || self.shutting_down {
            return;
        }
        // Not if the parent is itself stopping or restarting this child.
        if let Some(s) = n.parent.and_then(|p| self.nodes[p].sup.as_ref()) {
            if s.stop.is_some() || s.group.as_ref().is_some_and(|g| g.members.contains(&id)) {
                return;
            }
        }
        self.start_node(os, id, now);
    }

    fn start_node(&mut self, os: &mut dyn Os, id: usize, now: Instant) {
        let n = &mut self.nodes[id];
        n.done = false;
        n.restart_after_stop = false;
        n.since = Some(now);
        if let Some(spec) = n.worker.clone() {
            match os.spawn(id, &n.name, &spec) {
                Ok(pid) => {
                    n.pid = Some(pid);
                    n.state = match spec.ready {
                        Some(_) => State::Starting {
                            deadline: Some(now + spec.ready_timeout),
                            warned: false,
                        },
                        None => State::Up,
                    };
                    crate::log!("{}: started (pid {pid})", n.name);
                }
                Err(e) => {
                    let why = format!("{}: cannot start {}: {}", n.name, spec.command, crate::sys::describe(&e));
                    crate::log!("{why}");
                    n.state = State::Down;
                    n.last_exit = None;
                    self.failed(id, why, now);
                }
            }
            return;
        }
        let children: Vec<usize> = self
            .children(id)
            .into_iter()
            .filter(|&c| !self.nodes[c].held)
            .collect();
        let n = &mut self.nodes[id];
        n.state = State::Starting {
            deadline: None,
            warned: false,
        };
        let s = n.sup.as_mut().expect("a supervisor");
        s.recent.clear();
        s.group = None;
        s.stop = None;
        s.seq = Some(StartSeq {
            queue: children.into(),
            waiting_on: None,
        });
    }

    /// Asks a node to stop; the parent's `advance` sees it through.
    fn stop_node(&mut self, os: &mut dyn Os, id: usize, now: Instant) {
        let n = &mut self.nodes[id];
        match n.state {
            State::Down | State::Stopping { .. } => {}
            State::Backoff { .. } => n.state = State::Down,
            State::Up | State::Starting { .. } => {
                if let Some(spec) = &n.worker {
                    match n.pid {
                        Some(pid) => {
                            crate::log!("{}: stopping (SIGTERM to pid {pid})", n.name);
                            os.signal(pid, libc::SIGTERM);
                            n.state = State::Stopping {
                                deadline: Some(now + spec.shutdown_timeout),
                                killed: false,
                            };
                        }
                        None => n.state = State::Down,
                    }
                } else {
                    n.state = State::Stopping {
                        deadline: None,
                        killed: false,
                    };
                    let s = n.sup.as_mut().expect("a supervisor");
                    s.stop = Some(StopReason::Requested);
                    s.seq = None;
                    s.group = None;
                }
            }
        }
    }

    /// A child went down unexpectedly (it is `Down` already): restart it,
    /// with its siblings as the strategy says, or give up.
    fn failed(&mut self, id: usize, why: String, now: Instant) {
        self.last_disturbance = now;
        let Some(sup_id) = self.nodes[id].parent else {
            crate::log!("root supervisor gave up: {why}");
            self.given_up = Some(why);
            return;
        };
        if self.shutting_down || self.nodes[id].held {
            return;
        }
        let position = self.children(sup_id).iter().position(|&c| c == id).unwrap_or(0);
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
        while s.recent.front().is_some_and(|&t| now.duration_since(t) > period) {
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
                crate::log!("{}: restarting in {} (restart {})", n.name, secs(delay), n.restarts);
                n.state = State::Backoff { until: now + delay };
            }
            Strategy::OneForAll | Strategy::RestForOne => {
                let from = if strategy == Strategy::OneForAll { 0 } else { position };
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
                let names: Vec<&str> = members.iter().map(|&m| self.nodes[m].name.as_str()).collect();
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
        let spec = self.nodes[sup_id].sup.as_ref().expect("a supervisor").spec.clone();
        let n = &mut self.nodes[id];
        if n.since.is_some_and(|s| now.saturating_duration_since(s) >= spec.period) {
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

    /// Moves every supervisor's operation forward until nothing changes.
    fn advance(&mut self, os: &mut dyn Os, now: Instant) {
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
        among.iter().rev().copied().find(|&c| self.nodes[c].state != State::Down)
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
                        .filter(|&m| !self.nodes[m].held && self.nodes[m].restart != Restart::Temporary)
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
                    crate::log!("supervisor {}: {} is not ready; starting the next child anyway", self.nodes[id].name, n.name);
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
                return Err(format!("{name}'s supervisor {} is not running", self.nodes[p].name));
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
            format!("no service named '{name}' (there are: {})", names.join(", "))
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
        self.nodes.iter().enumerate().filter_map(|(id, n)| match (n.state, n.pid, &n.worker) {
            (State::Starting { .. }, Some(pid), Some(w)) => Some((id, pid, w)),
            _ => None,
        })
    }
}

/// `1.5s`, `120ms`: durations for log lines.
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
