//! PID 1's supervision tree on a booted QEMU machine: one machine per
//! board, rebooted through several services files written to the
//! development override /data/keel/services.toml with the console's
//! `write`/`append`:
//!
//! 1. the shipped tree (the agent) comes up;
//! 2. a test tree (`/sbin/init test-service …` workers): readiness order,
//!    output capture, a killed service is restarted, the health file
//!    follows; `keelctl reboot` stops services in reverse order and
//!    unmounts /data cleanly;
//! 3. a malformed file: errors with file and line, rescue state, console
//!    and control socket still answer; the file written just before the
//!    reboot is intact;
//! 4. a crash-looping service exhausts the intensity and the configured
//!    action (poweroff) happens.

mod common;

use std::time::Duration;

use common::*;

const BOOT: Duration = Duration::from_secs(180);
const CMD: Duration = Duration::from_secs(30);
const OVERRIDE: &str = "/data/keel/services.toml";
/// Installed as a symlink to /sbin/init (the same binary, by argv[0]).
const KEELCTL: &str = "/usr/bin/keelctl";

const BAD: &str = r#"[supervisor.root]
children = ["ghost"]
[worker.x]
comand = "/sbin/init"
"#;

const TEST_TREE: &str = r#"healthy_after = 2
on_failure = "poweroff"
[supervisor.root]
strategy = "one_for_one"
intensity = 5
period = 60
restart_delay = 0.2
restart_delay_max = 1
children = ["db", "sleeper", "orphans"]
[worker.db]
command = "/sbin/init"
args = ["test-service", "ready-file", "/run/db.ready", "0.5"]
ready_file = "/run/db.ready"
shutdown_timeout = 2
[worker.sleeper]
command = "/sbin/init"
args = ["test-service", "sleep", "0"]
shutdown_timeout = 2
[worker.orphans]
command = "/sbin/init"
args = ["test-service", "orphan"]
"#;

const CRASH_LOOP: &str = r#"on_failure = "poweroff"
[supervisor.root]
intensity = 3
period = 60
restart_delay = 0.1
restart_delay_max = 0.4
children = ["steady", "crasher"]
[worker.steady]
command = "/sbin/init"
args = ["test-service", "sleep", "0"]
[worker.crasher]
command = "/sbin/init"
args = ["test-service", "crash", "0.2", "3"]
"#;

fn ok(c: &mut Console, line: &str) -> String {
    let out = c.command(line, CMD);
    assert!(out.contains("keel: ok"), "{line:?} failed:\n{out}");
    out
}

/// Writes a multi-line file one console line at a time.
fn write_file(c: &mut Console, path: &str, text: &str) {
    for (i, line) in text.lines().enumerate() {
        let verb = if i == 0 { "write" } else { "append" };
        ok(c, &format!("{verb} {path} {line}"));
    }
}

/// The pid column of a worker's `status` row.
fn pid_of(status: &str, name: &str) -> String {
    let row = status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} row:\n{status}"));
    row.split_whitespace().nth(3).unwrap().to_string()
}

fn supervision(board: &str) {
    let dir = build(board);
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("card.img");
    std::fs::copy(dir.join("sdcard.img"), &img).unwrap();
    let mut c = Console::boot(board, &img);

    // 1. The shipped tree.
    c.expect("keel: ready slot=a", BOOT);
    c.expect("keel: services from /etc/keel/services.toml", CMD);
    c.expect("keel: agent: started (pid", CMD);
    let status = ok(&mut c, "status");
    assert!(status.contains("init: pid 1,"), "{status}");
    assert!(
        status.lines().any(|l| l.starts_with("  agent ")),
        "{status}"
    );
    ok(&mut c, "mkdir /data/keel");
    write_file(&mut c, OVERRIDE, TEST_TREE);
    c.send("reboot");

    // 2. The test tree.
    c.expect("keel: ready slot=a", BOOT);
    c.expect(&format!("keel: services from {OVERRIDE}"), CMD);
    c.expect("keel: db: started (pid", CMD);
    let held_back = c.expect("keel: db: ready after", CMD);
    assert!(
        !held_back.contains("sleeper: started"),
        "db holds sleeper back:\n{held_back}"
    );
    c.expect("keel: sleeper: started (pid", CMD);
    // Output is copied to the console (the sleeper's goes to the log
    // ring too, checked below). The orphan's parent exits at once, so PID
    // 1 inherits it; 0.1 s later it exits, and only PID 1 can reap it:
    // its /proc entry must go.
    c.expect("keel: [orphans] test-service: orphan pid ", CMD);
    let pid = c.expect("\n", CMD).trim().to_string();
    assert!(pid.parse::<u32>().is_ok(), "orphan pid {pid:?}");
    c.expect("keel: services healthy", CMD);
    let gone = c.command(&format!("cat /proc/{pid}/stat"), CMD);
    assert!(
        gone.contains("keel: error") && gone.contains("No such file"),
        "orphan {pid} not reaped:\n{gone}"
    );
    let health = ok(&mut c, "cat /run/keel/healthy");
    assert!(
        health.lines().any(|l| l.trim().parse::<f64>().is_ok()),
        "uptime in the health file:\n{health}"
    );
    let before = pid_of(&ok(&mut c, "status"), "sleeper");

    // Kill it: restarted after the delay, health gone and back. Sent, not
    // `command`ed: the sleeper's exit and keelctl's may be reaped in
    // either order.
    c.send(&format!("run {KEELCTL} kill sleeper KILL"));
    c.expect("keel: sleeper exited (exit=137 (killed by signal 9))", CMD);
    c.expect("keel: sleeper: restarting in", CMD);
    c.expect("keel: services no longer healthy", CMD);
    c.expect("keel: sleeper: started (pid", CMD);
    c.expect("keel: services healthy", CMD);
    let status = ok(&mut c, "status");
    let after = pid_of(&status, "sleeper");
    assert_ne!(before, after, "{status}");
    // A service gets stdin, stdout and stderr, nothing else of PID 1's.
    let fds = ok(&mut c, &format!("ls /proc/{after}/fd"));
    let names: Vec<&str> = fds
        .lines()
        .filter(|l| l.contains(" -> "))
        .filter_map(|l| l.split(" -> ").next()?.split_whitespace().last())
        .collect();
    assert_eq!(names, ["0", "1", "2"], "{fds}");
    let row = status
        .lines()
        .find(|l| l.starts_with("  sleeper "))
        .unwrap();
    assert_eq!(
        row.split_whitespace().nth(4),
        Some("1"),
        "one restart:\n{status}"
    );
    let logs = ok(&mut c, &format!("run {KEELCTL} logs sleeper"));
    assert_eq!(
        logs.matches("sleeper: test-service: sleep started").count(),
        2,
        "captured output of both runs:\n{logs}"
    );

    // keelctl reboot, with a file written just before: services stop in
    // reverse start order and /data is unmounted cleanly. (Not `command`:
    // whether keelctl's `keel: ok` comes out before the system goes down
    // is a race; the shutdown lines are what count.)
    write_file(&mut c, OVERRIDE, BAD);
    ok(&mut c, "write /data/before-reboot intact");
    c.send(&format!("run {KEELCTL} reboot"));
    c.expect("keel: shutting down: reboot", CMD);
    c.expect("keel: sleeper: stopping (SIGTERM", CMD);
    c.expect("keel: sleeper: stopped", CMD);
    c.expect("keel: db: stopping (SIGTERM", CMD);
    c.expect("keel: db: stopped", CMD);
    c.expect("keel: unmounted /data cleanly", CMD);

    // 3. A malformed file: clear errors, a rescue state, the file intact.
    c.expect("keel: ready slot=a", BOOT);
    c.expect(
        &format!("keel: {OVERRIDE}:2: [supervisor.root]: child 'ghost' is not defined"),
        CMD,
    );
    c.expect(
        &format!("keel: {OVERRIDE}:4: [worker.x]: unknown key 'comand'"),
        CMD,
    );
    c.expect("keel: services not started: rescue state", CMD);
    let cat = ok(&mut c, "cat /data/before-reboot");
    assert!(cat.contains("intact"), "{cat}");
    let status = ok(&mut c, "status");
    assert!(status.contains("health: rescue: "), "{status}");
    let ctl = ok(&mut c, &format!("run {KEELCTL} status"));
    assert!(
        ctl.contains("health: rescue: ") && ctl.contains("keel: exit=0"),
        "{ctl}"
    );
    write_file(&mut c, OVERRIDE, CRASH_LOOP);
    c.send("reboot");

    // 4. A crash loop: intensity exhausted, on_failure = poweroff.
    c.expect("keel: ready slot=a", BOOT);
    c.expect("keel: crasher exited (exit=3)", CMD);
    c.expect("keel: crasher: restarting in", CMD);
    c.expect("keel: supervisor root: more than 3 restarts in 60.0s", CMD);
    c.expect("keel: steady: stopping (SIGTERM", CMD);
    c.expect(
        "keel: services failed: supervisor root: more than 3 restarts",
        CMD,
    );
    c.expect("keel: shutting down: poweroff", CMD);
    c.expect("keel: unmounted /data cleanly", CMD);
    c.wait_exit(CMD);
}

#[test]
fn qemu_aarch64_supervision() {
    supervision("qemu-aarch64");
}

#[test]
fn qemu_armv7_supervision() {
    supervision("qemu-armv7");
}
