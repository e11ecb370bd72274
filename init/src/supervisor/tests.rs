//! Strategy, intensity, backoff and ordering checks against a fake `Os`
//! and a hand-driven clock. (Real processes: init/tests/supervise.rs.)

use super::*;
use crate::config::{self, Accounts};

#[derive(Default)]
struct FakeOs {
    next_pid: libc::pid_t,
    /// (name, pid) in spawn order.
    spawned: Vec<(String, libc::pid_t)>,
    signals: Vec<(libc::pid_t, libc::c_int)>,
    /// Pids sent SIGTERM that `obey_sigterm` has not yet ended.
    terminated: Vec<libc::pid_t>,
    /// Names whose spawn fails.
    broken: Vec<String>,
}

impl Os for FakeOs {
    fn spawn(&mut self, _id: usize, name: &str, _spec: &WorkerSpec) -> io::Result<libc::pid_t> {
        if self.broken.iter().any(|b| b == name) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.next_pid += 1;
        let pid = 100 + self.next_pid;
        self.spawned.push((name.to_string(), pid));
        Ok(pid)
    }

    fn signal(&mut self, pid: libc::pid_t, sig: libc::c_int) {
        self.signals.push((pid, sig));
        if sig == libc::SIGTERM {
            self.terminated.push(pid);
        }
    }
}

struct T {
    tree: Tree,
    os: FakeOs,
    now: Instant,
}

const SEC: Duration = Duration::from_secs(1);

impl T {
    fn new(text: &str) -> Self {
        let cfg = config::parse(text, &Accounts::default()).unwrap_or_else(|e| panic!("{e:?}"));
        let now = Instant::now();
        let mut t = T {
            tree: Tree::new(&cfg, 42, now),
            os: FakeOs::default(),
            now,
        };
        t.tree.start(&mut t.os, now);
        t
    }

    fn node(&self, name: &str) -> &Node {
        &self.tree.nodes[self.tree.find(name).unwrap()]
    }

    fn pid(&self, name: &str) -> libc::pid_t {
        self.node(name)
            .pid
            .unwrap_or_else(|| panic!("{name} has no pid"))
    }

    fn state(&self, name: &str) -> State {
        self.node(name).state
    }

    fn exit(&mut self, name: &str, status: ExitStatus) {
        let pid = self.pid(name);
        assert!(self.tree.exited(&mut self.os, pid, status, self.now));
    }

    fn crash(&mut self, name: &str) {
        self.exit(name, ExitStatus::Exited(1));
    }

    fn wait(&mut self, d: Duration) {
        self.now += d;
        self.tree.tick(&mut self.os, self.now);
    }

    /// Names spawned since the last call.
    fn take_spawned(&mut self) -> Vec<String> {
        std::mem::take(&mut self.os.spawned)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    fn take_signals(&mut self) -> Vec<(libc::pid_t, libc::c_int)> {
        std::mem::take(&mut self.os.signals)
    }

    /// Every process sent SIGTERM so far exits as if it obeyed.
    fn obey_sigterm(&mut self) {
        while let Some(pid) = self.os.terminated.pop() {
            self.tree.exited(
                &mut self.os,
                pid,
                ExitStatus::Signaled(libc::SIGTERM),
                self.now,
            );
        }
    }
}

fn three(strategy: &str) -> String {
    format!(
        "[supervisor.root]\nstrategy = \"{strategy}\"\nintensity = 10\nperiod = 60\nrestart_delay = 1\nrestart_delay_max = 8\nchildren = [\"a\", \"b\", \"c\"]\n\
         [worker.a]\ncommand = \"/a\"\n[worker.b]\ncommand = \"/b\"\n[worker.c]\ncommand = \"/c\"\n"
    )
}

#[test]
fn starts_children_in_order() {
    let mut t = T::new(&three("one_for_one"));
    assert_eq!(t.take_spawned(), ["a", "b", "c"]);
    assert_eq!(t.state("root"), State::Up);
    assert!(t.tree.whole_up());
}

#[test]
fn one_for_one_restarts_only_the_crashed_child_after_a_delay() {
    let mut t = T::new(&three("one_for_one"));
    t.take_spawned();
    let (a, c) = (t.pid("a"), t.pid("c"));
    t.crash("b");
    assert!(matches!(t.state("b"), State::Backoff { .. }));
    assert!(!t.tree.whole_up());
    // The only signal is the SIGKILL that clears b's process group.
    assert!(t
        .take_signals()
        .iter()
        .all(|&(p, s)| p != a && p != c && s == libc::SIGKILL));
    t.wait(Duration::from_millis(700));
    assert!(
        t.take_spawned().is_empty(),
        "no restart before 0.75 x the delay"
    );
    t.wait(Duration::from_millis(600));
    assert_eq!(t.take_spawned(), ["b"]);
    assert_eq!((t.pid("a"), t.pid("c")), (a, c));
    assert_eq!(t.node("b").restarts, 1);
    assert_eq!(t.node("b").last_exit, Some(ExitStatus::Exited(1)));
}

#[test]
fn restart_delay_doubles_with_jitter_up_to_the_cap() {
    let mut t = T::new(&three("one_for_one"));
    let mut delays = Vec::new();
    for _ in 0..6 {
        t.crash("a");
        let until = match t.state("a") {
            State::Backoff { until } => until,
            s => panic!("{s:?}"),
        };
        delays.push((until - t.now).as_secs_f64());
        assert_eq!(t.tree.next_deadline(), Some(until));
        t.now = until;
        t.tree.tick(&mut t.os, t.now);
        assert_eq!(t.state("a"), State::Up);
    }
    for (i, d) in delays.iter().enumerate() {
        let base = f64::from(1u32 << i).min(8.0);
        assert!(
            *d >= base * 0.75 && *d < base * 1.25,
            "restart {i}: {d}s, base {base}s"
        );
    }
    // A child that then stays up a whole period starts over at 1 s.
    t.wait(Duration::from_secs(61));
    t.crash("a");
    let State::Backoff { until } = t.state("a") else {
        panic!()
    };
    assert!((until - t.now).as_secs_f64() < 1.25);
}

#[test]
fn one_for_all_stops_the_others_youngest_first_then_starts_all_in_order() {
    let mut t = T::new(&three("one_for_all"));
    t.take_spawned();
    let (a, c) = (t.pid("a"), t.pid("c"));
    t.crash("b");
    let sig = t.take_signals();
    assert_eq!(sig.last(), Some(&(c, libc::SIGTERM)), "c first: {sig:?}");
    assert!(!sig.contains(&(a, libc::SIGTERM)), "a only after c is gone");
    t.exit("c", ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(t.take_signals().last(), Some(&(a, libc::SIGTERM)));
    t.exit("a", ExitStatus::Exited(0));
    assert!(t.take_spawned().is_empty());
    t.wait(2 * SEC);
    assert_eq!(t.take_spawned(), ["a", "b", "c"]);
    assert_eq!(
        [
            t.node("a").restarts,
            t.node("b").restarts,
            t.node("c").restarts
        ],
        [1, 1, 1]
    );
    assert!(t.tree.whole_up());
}

#[test]
fn rest_for_one_restarts_the_crashed_child_and_younger_ones() {
    let mut t = T::new(&three("rest_for_one"));
    t.take_spawned();
    let (a, c) = (t.pid("a"), t.pid("c"));
    t.crash("b");
    assert_eq!(t.take_signals().last(), Some(&(c, libc::SIGTERM)));
    t.obey_sigterm();
    t.wait(2 * SEC);
    assert_eq!(t.take_spawned(), ["b", "c"]);
    assert_eq!(t.pid("a"), a, "older sibling untouched");
    assert!(t.take_signals().iter().all(|&(p, _)| p != a));
}

#[test]
fn rest_for_one_widens_when_an_older_child_fails_meanwhile() {
    let mut t = T::new(&three("rest_for_one"));
    t.take_spawned();
    t.crash("c");
    // Nothing younger than c: straight to the delay. Now a crashes too.
    t.crash("a");
    t.obey_sigterm();
    t.wait(3 * SEC);
    assert_eq!(t.take_spawned(), ["a", "b", "c"]);
}

#[test]
fn restart_types_decide_what_a_normal_exit_means() {
    let text =
        "[supervisor.root]\nrestart_delay = 0.1\nchildren = [\"p\", \"tr\", \"te\", \"tr2\"]\n\
        [worker.p]\ncommand = \"/p\"\n\
        [worker.tr]\ncommand = \"/tr\"\nrestart = \"transient\"\n\
        [worker.te]\ncommand = \"/te\"\nrestart = \"temporary\"\n\
        [worker.tr2]\ncommand = \"/tr2\"\nrestart = \"transient\"\n";
    let mut t = T::new(text);
    t.take_spawned();
    for name in ["p", "tr", "te"] {
        t.exit(name, ExitStatus::Exited(0));
    }
    t.exit("tr2", ExitStatus::Signaled(libc::SIGSEGV));
    t.wait(SEC);
    assert_eq!(t.take_spawned(), ["p", "tr2"]);
    assert_eq!(t.state("tr"), State::Down);
    assert!(t.node("tr").done && t.node("te").done);
    // Finished transient/temporary children do not make the tree unhealthy.
    assert!(t.tree.whole_up());
    // A temporary child's crash is not restarted either.
    let mut t = T::new(text);
    t.exit("te", ExitStatus::Exited(3));
    t.wait(SEC);
    assert_eq!(t.state("te"), State::Down);
    assert_eq!(t.node("te").restarts, 0);
}

#[test]
fn exceeding_intensity_stops_the_children_and_gives_up_at_the_root() {
    let text = "[supervisor.root]\nintensity = 2\nperiod = 10\nrestart_delay = 0.1\nchildren = [\"a\", \"b\"]\n\
        [worker.a]\ncommand = \"/a\"\n[worker.b]\ncommand = \"/b\"\n";
    let mut t = T::new(text);
    let a = t.pid("a");
    for _ in 0..2 {
        t.crash("b");
        t.wait(SEC);
        assert_eq!(t.state("b"), State::Up);
    }
    assert!(t.tree.given_up().is_none());
    t.crash("b");
    assert_eq!(t.take_signals().last(), Some(&(a, libc::SIGTERM)));
    assert!(
        t.tree.given_up().is_none(),
        "only once the children are down"
    );
    t.obey_sigterm();
    let why = t.tree.given_up().expect("root gave up");
    assert!(
        why.contains("supervisor root: more than 2 restarts in 10.0s"),
        "{why}"
    );
    assert!(why.contains("b exited (exit=1)"), "{why}");
    assert!(t.tree.is_down());
    assert_eq!(t.tree.status(t.now)[0].state, "failed");
}

#[test]
fn restarts_outside_the_period_are_forgotten() {
    let text = "[supervisor.root]\nintensity = 1\nperiod = 5\nrestart_delay = 0.1\nchildren = [\"a\"]\n[worker.a]\ncommand = \"/a\"\n";
    let mut t = T::new(text);
    for _ in 0..5 {
        t.crash("a");
        t.wait(6 * SEC);
        assert_eq!(t.state("a"), State::Up);
    }
    assert!(t.tree.given_up().is_none());
}

#[test]
fn a_failing_nested_supervisor_is_restarted_by_its_parent() {
    let text = "[supervisor.root]\nintensity = 5\nperiod = 60\nrestart_delay = 1\nchildren = [\"x\", \"sub\", \"y\"]\n\
        [supervisor.sub]\nintensity = 0\nperiod = 60\nrestart_delay = 0.1\nchildren = [\"s1\", \"s2\"]\n\
        [worker.x]\ncommand = \"/x\"\n[worker.y]\ncommand = \"/y\"\n\
        [worker.s1]\ncommand = \"/s1\"\n[worker.s2]\ncommand = \"/s2\"\n";
    let mut t = T::new(text);
    assert_eq!(t.take_spawned(), ["x", "s1", "s2", "y"]);
    let (x, y, s1) = (t.pid("x"), t.pid("y"), t.pid("s1"));
    t.crash("s2");
    // intensity 0: sub gives up at once, stopping s1.
    assert_eq!(t.take_signals().last(), Some(&(s1, libc::SIGTERM)));
    t.obey_sigterm();
    assert!(matches!(t.state("sub"), State::Backoff { .. }));
    assert_eq!(t.node("sub").restarts, 1);
    t.wait(2 * SEC);
    assert_eq!(t.take_spawned(), ["s1", "s2"]);
    assert_eq!((t.pid("x"), t.pid("y")), (x, y), "root is one_for_one");
    assert_eq!(t.state("sub"), State::Up);
    assert!(t.tree.given_up().is_none());
}

#[test]
fn escalation_reaches_the_root_through_every_level() {
    let text = "[supervisor.root]\nintensity = 1\nperiod = 60\nrestart_delay = 0.1\nchildren = [\"sub\"]\n\
        [supervisor.sub]\nintensity = 0\nperiod = 60\nchildren = [\"w\"]\n[worker.w]\ncommand = \"/w\"\n";
    let mut t = T::new(text);
    t.crash("w");
    t.wait(SEC);
    assert_eq!(t.state("w"), State::Up, "sub restarted once by root");
    t.crash("w");
    let why = t.tree.given_up().expect("gave up");
    assert!(
        why.starts_with("supervisor root: more than 1 restarts"),
        "{why}"
    );
    assert!(
        why.contains("supervisor sub: more than 0 restarts"),
        "{why}"
    );
}

#[test]
fn shutdown_stops_children_in_reverse_start_order() {
    let text = "[supervisor.root]\nchildren = [\"a\", \"sub\", \"d\"]\n[supervisor.sub]\nchildren = [\"b\", \"c\"]\n\
        [worker.a]\ncommand = \"/a\"\n[worker.b]\ncommand = \"/b\"\n[worker.c]\ncommand = \"/c\"\n[worker.d]\ncommand = \"/d\"\n";
    let mut t = T::new(text);
    let pids: Vec<_> = ["a", "b", "c", "d"].iter().map(|n| t.pid(n)).collect();
    t.tree.shutdown(&mut t.os, t.now);
    let mut order = Vec::new();
    while !t.tree.is_down() {
        let sig: Vec<_> = t
            .take_signals()
            .into_iter()
            .filter(|s| s.1 != libc::SIGKILL)
            .collect();
        assert_eq!(sig.len(), 1, "one at a time: {sig:?}");
        let (pid, s) = sig[0];
        assert_eq!(s, libc::SIGTERM);
        order.push(pid);
        t.tree.exited(&mut t.os, pid, ExitStatus::Exited(0), t.now);
    }
    assert_eq!(order, [pids[3], pids[2], pids[1], pids[0]]);
    assert!(
        t.take_spawned().len() == 4,
        "nothing restarted during shutdown"
    );
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_its_timeout() {
    let text =
        "[supervisor.root]\nchildren = [\"a\", \"stubborn\"]\n[worker.a]\ncommand = \"/a\"\n\
        [worker.stubborn]\ncommand = \"/s\"\nshutdown_timeout = 0.3\n";
    let mut t = T::new(text);
    let s = t.pid("stubborn");
    t.tree.shutdown(&mut t.os, t.now);
    assert_eq!(t.take_signals(), [(s, libc::SIGTERM)]);
    t.wait(Duration::from_millis(200));
    assert!(t.take_signals().is_empty());
    t.wait(Duration::from_millis(100));
    assert_eq!(t.take_signals(), [(s, libc::SIGKILL)]);
    t.tree.exited(&mut t.os, s, ExitStatus::Signaled(9), t.now);
    assert!(t.take_signals().contains(&(t.pid("a"), libc::SIGTERM)));
}

#[test]
fn a_process_that_never_dies_is_left_behind_eventually() {
    let text = "[supervisor.root]\nchildren = [\"z\"]\n[worker.z]\ncommand = \"/z\"\nshutdown_timeout = 1\n";
    let mut t = T::new(text);
    t.tree.shutdown(&mut t.os, t.now);
    t.wait(SEC);
    assert!(!t.tree.is_down());
    t.wait(KILL_WAIT);
    assert!(t.tree.is_down());
}

#[test]
fn readiness_holds_back_younger_siblings() {
    let text = "[supervisor.root]\nchildren = [\"db\", \"web\"]\n\
        [worker.db]\ncommand = \"/db\"\nready_file = \"/run/db\"\nready_timeout = 5\n[worker.web]\ncommand = \"/web\"\n";
    let mut t = T::new(text);
    assert_eq!(t.take_spawned(), ["db"]);
    assert!(matches!(t.state("root"), State::Starting { .. }));
    assert_eq!(
        t.tree
            .awaiting_ready()
            .map(|(id, _, _)| id)
            .collect::<Vec<_>>(),
        [1]
    );
    t.wait(SEC);
    assert!(t.take_spawned().is_empty());
    let db = t.pid("db");
    t.tree.ready(&mut t.os, 1, db, t.now);
    assert_eq!(t.take_spawned(), ["web"]);
    assert_eq!(t.state("root"), State::Up);
    assert!(t.tree.whole_up());
}

#[test]
fn a_ready_timeout_lets_the_rest_start_but_keeps_the_tree_unhealthy() {
    let text = "[supervisor.root]\nchildren = [\"db\", \"web\"]\n\
        [worker.db]\ncommand = \"/db\"\nready_fd = 3\nready_timeout = 2\n[worker.web]\ncommand = \"/web\"\n";
    let mut t = T::new(text);
    assert_eq!(t.take_spawned(), ["db"]);
    t.wait(2 * SEC);
    assert_eq!(t.take_spawned(), ["web"]);
    assert!(!t.tree.whole_up());
    assert_eq!(t.tree.status(t.now)[1].state, "not-ready");
    let db = t.pid("db");
    t.tree.ready(&mut t.os, 1, db, t.now);
    assert!(t.tree.whole_up());
}

#[test]
fn a_program_that_cannot_start_counts_as_a_crash() {
    let text = "[supervisor.root]\nintensity = 2\nperiod = 60\nrestart_delay = 0.1\nchildren = [\"ok\", \"missing\"]\n\
        [worker.ok]\ncommand = \"/ok\"\n[worker.missing]\ncommand = \"/nope\"\n";
    let cfg = config::parse(text, &Accounts::default()).unwrap();
    let mut os = FakeOs {
        broken: vec!["missing".into()],
        ..FakeOs::default()
    };
    let mut now = Instant::now();
    let mut tree = Tree::new(&cfg, 1, now);
    tree.start(&mut os, now);
    assert!(matches!(tree.nodes[2].state, State::Backoff { .. }));
    for _ in 0..3 {
        now += SEC;
        tree.tick(&mut os, now);
    }
    // Third failure: gave up, after stopping `ok`.
    let ok_pid = os.spawned[0].1;
    assert!(os.signals.contains(&(ok_pid, libc::SIGTERM)));
    tree.exited(&mut os, ok_pid, ExitStatus::Exited(0), now);
    assert!(tree.given_up().unwrap().contains("cannot start /nope"));
}

#[test]
fn keelctl_stop_start_and_restart() {
    let mut t = T::new(&three("one_for_all"));
    t.take_spawned();
    let b = t.pid("b");
    t.tree.stop(&mut t.os, "b", t.now).unwrap();
    assert_eq!(t.take_signals(), [(b, libc::SIGTERM)]);
    t.exit("b", ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(t.tree.status(t.now)[2].state, "stopped");
    assert!(
        t.take_spawned().is_empty(),
        "a stop is not a crash: no one_for_all restart"
    );
    assert!(!t.tree.whole_up());
    assert!(t
        .tree
        .stop(&mut t.os, "b", t.now)
        .unwrap_err()
        .contains("not running"));
    t.tree.start_child(&mut t.os, "b", t.now).unwrap();
    assert_eq!(t.take_spawned(), ["b"]);
    assert!(t.tree.whole_up());
    assert!(t
        .tree
        .start_child(&mut t.os, "b", t.now)
        .unwrap_err()
        .contains("already running"));

    let c = t.pid("c");
    t.take_signals();
    t.tree.restart(&mut t.os, "c", t.now).unwrap();
    assert_eq!(t.take_signals(), [(c, libc::SIGTERM)]);
    t.exit("c", ExitStatus::Signaled(libc::SIGTERM));
    assert_eq!(t.take_spawned(), ["c"]);
    assert_eq!(t.node("c").restarts, 1);
    assert!(t.tree.stop(&mut t.os, "root", t.now).is_err());
    let e = t.tree.restart(&mut t.os, "nope", t.now).unwrap_err();
    assert_eq!(e, "no service named 'nope' (there are: root, a, b, c)");
}

#[test]
fn status_rows_show_the_tree() {
    let text = "[supervisor.root]\nchildren = [\"sub\"]\n[supervisor.sub]\nchildren = [\"w\"]\n[worker.w]\ncommand = \"/w\"\n";
    let mut t = T::new(text);
    t.wait(3 * SEC);
    let rows = t.tree.status(t.now);
    assert_eq!(rows.iter().map(|r| r.depth).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(rows[2].pid, Some(t.pid("w")));
    assert_eq!(rows[2].uptime, Some(3 * SEC));
    let lines = status::format_rows(&rows);
    assert!(lines[0].starts_with("NAME"));
    let w: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(
        w,
        [
            "w",
            "worker",
            "up",
            &t.pid("w").to_string(),
            "0",
            "3.0s",
            "-"
        ]
    );
    assert!(lines[2].starts_with("  sub "));
}
