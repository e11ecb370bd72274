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

mod admin;
mod advance;
mod restart;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::config::{Config, NodeKind, NodeSpec, Restart, SupervisorSpec, WorkerSpec};
use crate::reaper::ExitStatus;

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
    Backoff {
        until: Instant,
    },
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
                            n.worker
                                .as_ref()
                                .map(|w| w.shutdown_timeout)
                                .unwrap_or_default()
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
                    crate::log!(
                        "{}: not ready after {:?}",
                        n.name,
                        n.worker
                            .as_ref()
                            .map(|w| w.ready_timeout)
                            .unwrap_or_default()
                    );
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
            let took = n
                .since
                .map(|s| now.saturating_duration_since(s))
                .unwrap_or_default();
            crate::log!("{}: ready after {}", n.name, secs(took));
            n.state = State::Up;
            self.advance(os, now);
        }
    }

    /// A child process ended. Returns false if it was not one of ours.
    pub fn exited(
        &mut self,
        os: &mut dyn Os,
        pid: libc::pid_t,
        status: ExitStatus,
        now: Instant,
    ) -> bool {
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
                    let why = format!(
                        "{}: cannot start {}: {}",
                        n.name,
                        spec.command,
                        crate::sys::describe(&e)
                    );
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
}

/// `1.5s`, `120ms`: durations for log lines.
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
