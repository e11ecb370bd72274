//! The supervision tree with real processes: `init supervise` runs a
//! services.toml on the host as a child subreaper (not PID 1), with
//! /bin/sh scripts as services, and `init keelctl` talks to it. Timeouts
//! and delays are sub-second so every test is quick.

// The only unsafe here is kill(2) on the supervisor we started (`Sup::signal`):
// a test target cannot use the binary's `sys` module, and running kill(1)
// instead would make each signal an extra process on the host.
#![allow(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INIT: &str = env!("CARGO_BIN_EXE_init");
const WAIT: Duration = Duration::from_secs(10);

/// A running `init supervise` and everything it printed.
struct Sup {
    child: Child,
    /// Owned when the test did not give a directory of its own.
    _tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    out: Arc<Mutex<String>>,
    /// Bytes of `out` already matched by `expect`.
    cursor: usize,
}

impl Sup {
    /// Starts a tree; `@DIR@` in the text becomes a scratch directory.
    fn start(toml: &str) -> Sup {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sup::start_in(dir.path(), toml);
        s._tmp = Some(dir);
        s
    }

    /// Starts a tree in `dir`, which keeps its run directory between
    /// starts (like /data between boots).
    fn start_in(dir: &std::path::Path, toml: &str) -> Sup {
        let text = toml.replace("@DIR@", dir.to_str().unwrap());
        std::fs::write(dir.join("services.toml"), text).unwrap();
        let mut child = Command::new(INIT)
            .arg("supervise")
            .arg(dir.join("services.toml"))
            .arg("--run-dir")
            .arg(dir.join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Sup {
            child,
            _tmp: None,
            root: dir.to_path_buf(),
            out,
            cursor: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits for `needle` after the previous match; returns the text up
    /// to the end of it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let out = self.out.lock().unwrap();
                if let Some(pos) = out[self.cursor..].find(needle) {
                    let end = self.cursor + pos + needle.len();
                    let chunk = out[self.cursor..end].to_string();
                    self.cursor = end;
                    return chunk;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `init keelctl ARGS` against this tree: (stdout, stderr, success).
    fn keelctl(&self, args: &[&str]) -> (String, String, bool) {
        let out = Command::new(INIT)
            .arg("keelctl")
            .args(args)
            .env("KEEL_CONTROL", self.path("run/control.sock"))
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        )
    }

    fn status(&self) -> String {
        let (out, err, ok) = self.keelctl(&["status"]);
        assert!(ok, "keelctl status failed: {err}");
        out
    }

    /// The pid column of a worker's status row.
    fn pid(&self, name: &str) -> i32 {
        let status = self.status();
        let row = status
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{status}"));
        row.split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{row}"))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) takes only integers; the pid is our own child,
        // not yet waited for, so it cannot name another process.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the supervisor to exit: (exit code, all output).
    fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (status.code().unwrap_or(-1), self.output());
            }
            assert!(
                Instant::now() < deadline,
                "supervisor did not exit:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM: the ordered shutdown.
    fn stop(self) -> (i32, String) {
        self.signal(libc::SIGTERM);
        self.wait()
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A supervisor section plus `sh -c` workers given as (name, script,
/// extra TOML lines).
fn tree(sup: &str, workers: &[(&str, &str, &str)]) -> String {
    let names: Vec<String> = workers.iter().map(|(n, _, _)| format!("\"{n}\"")).collect();
    let mut t = format!(
        "[supervisor.root]\n{sup}\nchildren = [{}]\n",
        names.join(", ")
    );
    for (name, script, extra) in workers {
        t.push_str(&format!(
            "\n[worker.{name}]\ncommand = \"/bin/sh\"\nargs = [\"-c\", '{script}']\n{extra}\n"
        ));
    }
    t
}

const FAST: &str = "intensity = 10\nperiod = 10\nrestart_delay = 0.05\nrestart_delay_max = 0.2";
const SLEEP: &str = "exec sleep 100";
/// Crashes (exit 1) the first time it runs, then sleeps: one restart.
fn crash_once(marker: &str) -> String {
    format!("if [ -e @DIR@/{marker} ]; then exec sleep 100; fi; touch @DIR@/{marker}; sleep 0.2; exit 1")
}

#[test]
fn a_crashed_child_is_restarted_with_a_delay() {
    let mut s = Sup::start(&tree(FAST, &[("w", &crash_once("w.crashed"), "")]));
    s.expect("w: started (pid");
    s.expect("w exited (exit=1)");
    s.expect("w: restarting in");
    s.expect("w: started (pid");
    let status = s.status();
    let row = status.lines().find(|l| l.starts_with("  w ")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (cols[2], cols[4], cols[6]),
        ("up", "1", "exit=1"),
        "{status}"
    );
    let (code, _) = s.stop();
    assert_eq!(code, 0);
}

#[test]
fn normal_exits_follow_the_restart_type() {
    let text = tree(
        FAST,
        &[
            ("perm", "echo run; exit 0", "restart = \"permanent\""),
            ("trans", "exit 0", "restart = \"transient\""),
            ("trans_bad", &crash_once("tb"), "restart = \"transient\""),
            ("temp", "exit 3", "restart = \"temporary\""),
            ("keep", SLEEP, ""),
        ],
    );
    let mut s = Sup::start(&text);
    s.expect("keep: started");
    std::thread::sleep(Duration::from_millis(600));
    let out = s.output();
    assert!(
        out.contains("trans: exited (exit=0); transient, not restarted"),
        "{out}"
    );
    assert!(
        out.contains("temp: exited (exit=3); temporary, not restarted"),
        "{out}"
    );
    assert!(out.contains("trans_bad exited (exit=1)"), "{out}");
    assert_eq!(out.matches("trans_bad: started").count(), 2, "{out}");
    assert!(
        out.matches("perm: started").count() >= 3,
        "permanent: restarted even after exit 0\n{out}"
    );
    let status = s.status();
    for (name, state) in [("trans", "done"), ("temp", "done"), ("trans_bad", "up")] {
        let row = status
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap();
        assert_eq!(row.split_whitespace().nth(2), Some(state), "{status}");
    }
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_its_timeout() {
    let text = tree(
        FAST,
        &[(
            "stubborn",
            "trap \"\" TERM; echo ignoring; while :; do sleep 0.05; done",
            "shutdown_timeout = 0.4",
        )],
    );
    let mut s = Sup::start(&text);
    s.expect("[stubborn] ignoring");
    let start = Instant::now();
    s.signal(libc::SIGTERM);
    s.expect("stubborn: stopping (SIGTERM");
    s.expect("stubborn: still running 400ms after SIGTERM; sending SIGKILL");
    s.expect("stubborn: stopped (exit=137 (killed by signal 9))");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let (code, _) = s.wait();
    assert_eq!(code, 0);
}

/// Runs a, b, c under `strategy`, crashes b once, and returns whether
/// a's and c's pids changed.
fn restart_set(strategy: &str) -> (bool, bool) {
    let sup = format!("strategy = \"{strategy}\"\n{FAST}");
    let mut s = Sup::start(&tree(
        &sup,
        &[
            ("a", SLEEP, ""),
            ("b", &crash_once("b.crashed"), ""),
            ("c", SLEEP, ""),
        ],
    ));
    s.expect("c: started");
    let (a, c) = (s.pid("a"), s.pid("c"));
    s.expect("b exited (exit=1)");
    // b is running again once its second "started" line is out.
    s.expect("b: started");
    let deadline = Instant::now() + WAIT;
    loop {
        let st = s.status();
        let up = st
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("up"))
            .count();
        if up == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "tree did not come back:\n{st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    (s.pid("a") != a, s.pid("c") != c)
}

#[test]
fn each_strategy_restarts_its_set() {
    assert_eq!(restart_set("one_for_one"), (false, false));
    assert_eq!(restart_set("one_for_all"), (true, true));
    assert_eq!(restart_set("rest_for_one"), (false, true));
}

#[test]
fn exceeding_intensity_escalates_to_the_parent_and_the_root_gives_up() {
    let text = "on_failure = \"reboot\"\n\
        [supervisor.root]\nintensity = 1\nperiod = 10\nrestart_delay = 0.05\nchildren = [\"sub\", \"bystander\"]\n\
        [supervisor.sub]\nintensity = 1\nperiod = 10\nrestart_delay = 0.05\nchildren = [\"crasher\"]\n\
        [worker.crasher]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.05; exit 7\"]\n\
        [worker.bystander]\ncommand = \"/bin/sleep\"\nargs = [\"100\"]\n";
    let s = Sup::start(text);
    let (code, out) = s.wait();
    assert_eq!(code, 3, "host mode exits 3 when the root gives up\n{out}");
    let sub_fail = out
        .find("supervisor sub: more than 1 restarts in 10.0s")
        .expect(&out);
    let sub_restart = out.find("sub: restarting in").expect(&out);
    let root_fail = out
        .find("supervisor root: more than 1 restarts")
        .expect(&out);
    assert!(sub_fail < sub_restart && sub_restart < root_fail, "{out}");
    assert!(
        out.contains("bystander: stopping (SIGTERM"),
        "the root stops its children first\n{out}"
    );
    assert!(out.contains("services failed: supervisor root"), "{out}");
    assert!(
        out.contains("crasher exited (exit=7)"),
        "the reason names the child\n{out}"
    );
}

/// A tree that fails at every boot reboots at most three boots in a row,
/// then init stays up (reachable) instead of rebooting for ever; becoming
/// healthy starts the count again.
#[test]
fn failing_services_reboot_a_bounded_number_of_boots_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let failing = "on_failure = \"reboot\"\n\
        [supervisor.root]\nintensity = 1\nperiod = 10\nrestart_delay = 0.05\nchildren = [\"crasher\"]\n\
        [worker.crasher]\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.05; exit 7\"]\n";
    for n in 1..=3 {
        let (code, out) = Sup::start_in(dir.path(), failing).wait();
        assert_eq!(code, 3, "{out}");
        assert!(out.contains(&format!("reboot {n} in a row")), "{out}");
    }
    let mut s = Sup::start_in(dir.path(), failing);
    s.expect("staying up instead of rebooting again");
    assert!(s.status().contains("crasher"), "still answers keelctl");
    drop(s);
    // Healthy once: the count starts again.
    let healthy = "healthy_after = 0.2\n[supervisor.root]\nchildren = [\"ok\"]\n\
        [worker.ok]\ncommand = \"/bin/sleep\"\nargs = [\"100\"]\n";
    let mut s = Sup::start_in(dir.path(), healthy);
    s.expect("services healthy");
    drop(s);
    let (code, out) = Sup::start_in(dir.path(), failing).wait();
    assert_eq!(code, 3);
    assert!(out.contains("reboot 1 in a row"), "{out}");
}

/// Zombies whose parent is `pid`.
fn zombies_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may contain spaces.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1) == Some(&pid.to_string().as_str()) {
            out.push(stat);
        }
    }
    out
}

#[test]
fn orphans_are_reaped() {
    // Each subshell forks a sleep and exits at once: the sleeps are
    // orphans, reparented to the supervisor (a subreaper), and become its
    // zombies when they end.
    let script =
        "for i in 1 2 3 4 5 6 7 8 9 10; do (sleep 0.5 &); done; echo spawned; exec sleep 100";
    let mut s = Sup::start(&tree(FAST, &[("parent", script, "")]));
    s.expect("[parent] spawned");
    let pid = s.child.id();
    // The orphans really were ours for a while (we see them as children).
    std::thread::sleep(Duration::from_millis(50));
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    assert!(
        children.split_whitespace().count() > 1,
        "orphans reparented to us: {children:?}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(zombies_of(pid), Vec::<String>::new());
    let (code, _) = s.stop();
    assert_eq!(code, 0);
}

#[test]
fn shutdown_stops_services_in_reverse_start_order() {
    let text = "[supervisor.root]\nchildren = [\"a\", \"sub\", \"d\"]\n[supervisor.sub]\nchildren = [\"b\", \"c\"]\n\
        [worker.a]\ncommand = \"/bin/sleep\"\nargs = [\"100\"]\n[worker.b]\ncommand = \"/bin/sleep\"\nargs = [\"100\"]\n\
        [worker.c]\ncommand = \"/bin/sleep\"\nargs = [\"100\"]\n[worker.d]\ncommand = \"/bin/sleep\"\nargs = [\"100\"]\n";
    let mut s = Sup::start(text);
    s.expect("d: started");
    let (code, out) = s.stop();
    assert_eq!(code, 0, "{out}");
    let started: Vec<usize> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| out.find(&format!("{n}: started")).unwrap())
        .collect();
    assert!(
        started.windows(2).all(|w| w[0] < w[1]),
        "start order\n{out}"
    );
    let stopped: Vec<usize> = ["d", "c", "b", "a"]
        .iter()
        .map(|n| out.find(&format!("{n}: stopped")).unwrap())
        .collect();
    assert!(stopped.windows(2).all(|w| w[0] < w[1]), "stop order\n{out}");
    // Sequential: c is not asked to stop before d is gone.
    assert!(
        out.find("c: stopping").unwrap() > out.find("d: stopped").unwrap(),
        "{out}"
    );
    assert!(out.contains("supervisor sub: stopped"));
}

#[test]
fn a_ready_file_holds_back_younger_siblings() {
    let text = tree(
        FAST,
        &[
            (
                "db",
                "sleep 0.3; touch @DIR@/db.ready; exec sleep 100",
                "ready_file = \"@DIR@/db.ready\"\nready_timeout = 5",
            ),
            ("web", SLEEP, ""),
        ],
    );
    let mut s = Sup::start(&text);
    s.expect("db: started");
    let between = s.expect("db: ready after");
    assert!(!between.contains("web: started"), "{between}");
    s.expect("web: started");
}

#[test]
fn a_ready_timeout_lets_the_rest_start() {
    let text = tree(
        FAST,
        &[
            (
                "slow",
                SLEEP,
                "ready_file = \"@DIR@/never\"\nready_timeout = 0.3",
            ),
            ("web", SLEEP, ""),
        ],
    );
    let mut s = Sup::start(&text);
    s.expect("slow: started");
    s.expect("slow: not ready after 300ms");
    s.expect("supervisor root: slow is not ready; starting the next child anyway");
    s.expect("web: started");
    assert!(s.status().contains("not-ready"));
}

#[test]
fn a_notify_fd_signals_readiness() {
    let text = tree(
        FAST,
        &[
            (
                "n",
                "sleep 0.2; echo \"fd=$KEEL_READY_FD\"; echo >&3; exec sleep 100",
                "ready_fd = 3",
            ),
            ("after", SLEEP, ""),
        ],
    );
    let mut s = Sup::start(&text);
    s.expect("[n] fd=3");
    s.expect("n: ready after");
    s.expect("after: started");
}

#[test]
fn output_is_captured_and_keelctl_shows_the_tree() {
    let text = tree(
        FAST,
        &[(
            "talker",
            "echo hello from talker; echo to stderr >&2; exec sleep 100",
            "env = { GREETING = \"hi\" }",
        )],
    );
    let mut s = Sup::start(&text);
    s.expect("keel: [talker] hello from talker");
    s.expect("keel: [talker] to stderr");
    let (logs, _, ok) = s.keelctl(&["logs", "talker"]);
    assert!(ok);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(
        lines[0].starts_with('[') && lines[0].ends_with("] talker: hello from talker"),
        "{logs}"
    );
    let (all, _, _) = s.keelctl(&["logs"]);
    assert!(
        all.contains("] init: talker: started (pid"),
        "init's own lines too:\n{all}"
    );
    let status = s.status();
    assert!(status.starts_with("init: pid "), "{status}");
    assert!(
        status.contains("NAME") && status.contains("talker"),
        "{status}"
    );
    let (_, err, ok) = s.keelctl(&["logs", "nobody"]);
    assert!(!ok && err.contains("no service named 'nobody'"), "{err}");
    let (_, err, ok) = s.keelctl(&["frobnicate"]);
    assert!(!ok && err.contains("unknown command"), "{err}");
}

#[test]
fn keelctl_stop_start_restart_and_kill() {
    let mut s = Sup::start(&tree(FAST, &[("w", SLEEP, ""), ("x", SLEEP, "")]));
    s.expect("x: started");
    let (_, err, ok) = s.keelctl(&["stop", "w"]);
    assert!(ok, "{err}");
    s.expect("w: stopped");
    assert!(s
        .status()
        .lines()
        .any(|l| l.starts_with("  w ") && l.contains(" stopped ")));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !s.output()[s.cursor..].contains("w: started"),
        "a stopped service stays stopped"
    );
    assert!(s.keelctl(&["start", "w"]).2);
    s.expect("w: started");
    let before = s.pid("x");
    assert!(s.keelctl(&["restart", "x"]).2);
    s.expect("x: stopped");
    s.expect("x: started");
    assert_ne!(s.pid("x"), before);
    // kill goes to the process; the supervisor sees a crash and restarts.
    assert!(s.keelctl(&["kill", "x", "KILL"]).2);
    s.expect("x exited (exit=137 (killed by signal 9))");
    s.expect("x: started");
    let (_, err, ok) = s.keelctl(&["stop", "ghost"]);
    assert!(!ok && err.contains("no service named 'ghost'"), "{err}");
}

#[test]
fn the_health_file_follows_the_tree() {
    let text = format!("healthy_after = 0.3\n{}", tree(FAST, &[("w", SLEEP, "")]));
    let mut s = Sup::start(&text);
    let health = s.path("run/healthy");
    s.expect("w: started");
    assert!(!health.exists(), "not before healthy_after");
    s.expect("services healthy");
    let content = std::fs::read_to_string(&health).unwrap();
    assert!(content.trim().parse::<f64>().is_ok(), "uptime: {content:?}");
    assert!(s.keelctl(&["kill", "w", "9"]).2);
    s.expect("services no longer healthy");
    assert!(!health.exists());
    s.expect("w: started");
    s.expect("services healthy");
    assert!(health.exists());
    let (code, _) = s.stop();
    assert_eq!(code, 0);
    assert!(!health.exists(), "removed on shutdown");
}

#[test]
fn a_bad_file_gives_errors_with_lines_and_a_rescue_state() {
    let text =
        "[supervisor.root]\nchildren = [\"a\", \"b\"]\n\n[worker.a]\ncomand = \"/bin/true\"\n";
    let mut s = Sup::start(text);
    let file = s.path("services.toml").display().to_string();
    s.expect(&format!(
        "keel: {file}:2: [supervisor.root]: child 'b' is not defined"
    ));
    s.expect(&format!("keel: {file}:4: [worker.a]: command is missing"));
    s.expect(&format!("keel: {file}:5: [worker.a]: unknown key 'comand'"));
    s.expect("services not started: rescue state");
    // The control socket still answers.
    let status = s.status();
    assert!(status.contains("health: rescue: "), "{status}");
    let (_, err, ok) = s.keelctl(&["restart", "a"]);
    assert!(!ok && err.contains("no services are running"), "{err}");
    let (code, _) = s.stop();
    assert_eq!(code, 0);
}

/// Nesting is bounded by the parser: a hostile file is a config error, not a
/// stack overflow (as PID 1, that would panic the kernel).
#[test]
fn a_deeply_nested_file_is_an_error_not_a_crash() {
    let text = format!("\nroot = {}\n", "[".repeat(100_000));
    let mut s = Sup::start(&text);
    let file = s.path("services.toml").display().to_string();
    s.expect(&format!("keel: {file}:2: cannot recurse further"));
    s.expect("services not started: rescue state");
    let (code, _) = s.stop();
    assert_eq!(code, 0);
}

#[test]
fn keelctl_reboot_stops_the_tree_in_host_mode() {
    let mut s = Sup::start(&tree(FAST, &[("w", SLEEP, "")]));
    s.expect("w: started");
    let (_, err, ok) = s.keelctl(&["reboot", "0", "tryboot"]);
    assert!(ok, "{err}");
    let (code, out) = s.wait();
    assert_eq!(code, 0);
    assert!(out.contains("shutting down: reboot (0 tryboot)"), "{out}");
    assert!(out.contains("w: stopped"), "{out}");
    assert!(out.contains("host mode, so no reboot (0 tryboot)"), "{out}");
}

#[test]
fn keelctl_without_init_says_so() {
    let out = Command::new(INIT)
        .args(["keelctl", "status"])
        .env("KEEL_CONTROL", "/nonexistent/control.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/control.sock") && err.contains("is init running?"),
        "{err}"
    );
    let usage = Command::new(INIT)
        .args(["keelctl", "stop"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage: stop NAME"));
}

#[test]
fn not_pid_1_and_no_role_is_refused() {
    let out = Command::new(INIT).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("init must run as PID 1"));
}

#[test]
fn test_service_modes_behave() {
    let text = format!(
        "[supervisor.root]\n{FAST}\nchildren = [\"r\", \"c\"]\n\
         [worker.r]\ncommand = \"{INIT}\"\nargs = [\"test-service\", \"ready-file\", \"@DIR@/r.ready\", \"0.1\"]\nready_file = \"@DIR@/r.ready\"\n\
         [worker.c]\ncommand = \"{INIT}\"\nargs = [\"test-service\", \"crash\", \"0.1\", \"5\"]\nrestart = \"transient\"\n"
    );
    let mut s = Sup::start(&text);
    s.expect("[r] test-service: ready-file started");
    s.expect("r: ready after");
    s.expect("[c] test-service: crashing with exit code 5");
    s.expect("c exited (exit=5)");
}
