use super::*;

fn ok(text: &str) -> Config {
    parse(text, &Accounts::default()).unwrap_or_else(|e| panic!("{e:?}\n{text}"))
}

/// All errors as `line: message` strings.
fn errs(text: &str) -> Vec<String> {
    parse(text, &Accounts::default())
        .expect_err(text)
        .iter()
        .map(|e| format!("{}: {}", e.line, e.msg))
        .collect()
}

fn assert_error(text: &str, line: usize, needle: &str) {
    let all = errs(text);
    assert!(
        all.iter()
            .any(|e| e.starts_with(&format!("{line}: ")) && e.contains(needle)),
        "no error on line {line} containing {needle:?}: {all:#?}"
    );
}

fn worker(c: &Config, name: &str) -> WorkerSpec {
    let n = c.nodes.iter().find(|n| n.name == name).unwrap();
    match &n.kind {
        NodeKind::Worker(w) => w.clone(),
        NodeKind::Supervisor(_) => panic!("{name} is a supervisor"),
    }
}

fn sup(c: &Config, name: &str) -> SupervisorSpec {
    let n = c.nodes.iter().find(|n| n.name == name).unwrap();
    match &n.kind {
        NodeKind::Supervisor(s) => s.clone(),
        NodeKind::Worker(_) => panic!("{name} is a worker"),
    }
}

#[test]
fn the_shipped_file_is_valid() {
    let text = include_str!("../../../rootfs-overlay/etc/keel/services.toml");
    let c = ok(text);
    assert_eq!(c.nodes[0].name, "root");
    let agent = worker(&c, "agent");
    assert_eq!(agent.command, "/usr/bin/agent");
    assert_eq!(agent.args, vec!["run"]);
    assert_eq!(c.nodes[1].restart, Restart::Permanent);
    assert_eq!(c.on_failure, FailureAction::Reboot);
    // Generous enough that a crash-looping agent (delays capped at
    // restart_delay_max) takes minutes, not seconds, to exhaust it.
    let root = sup(&c, "root");
    let min_loop = root.restart_delay_max.as_secs_f64() * 0.75;
    assert!(root.period.as_secs_f64() / f64::from(root.intensity) > min_loop / 2.0);
}

#[test]
fn defaults() {
    let c = ok("[supervisor.root]\nchildren = [\"a\"]\n[worker.a]\ncommand = \"/bin/a\"\n");
    assert_eq!(c.healthy_after, Duration::from_secs(10));
    assert_eq!(c.on_failure, FailureAction::Reboot);
    assert_eq!(c.watchdog_interval, Some(Duration::from_secs(5)));
    let root = sup(&c, "root");
    assert_eq!(root.strategy, Strategy::OneForOne);
    assert_eq!((root.intensity, root.period), (3, Duration::from_secs(5)));
    assert_eq!(root.children, vec![1]);
    let a = worker(&c, "a");
    assert_eq!(a.shutdown_timeout, Duration::from_secs(5));
    assert_eq!((a.ready.clone(), a.console), (None, true));
    assert_eq!(c.nodes[1].restart, Restart::Permanent);
}

#[test]
fn reads_every_setting() {
    let text = r#"
root = "top"
healthy_after = 2.5
on_failure = "hang"
watchdog_interval = 0

[supervisor.top]
strategy = "rest_for_one"
intensity = 7
period = 30
restart_delay = 0.1
restart_delay_max = 2
children = ["db", "web"]

[supervisor.web]
strategy = "one_for_all"
restart = "transient"
children = ["http", "cron"]

[worker.db]
command = "/usr/bin/db"
args = ["--port", "5"]
cwd = "/data"
user = "svc"
group = 20
restart = "permanent"
shutdown_timeout = 0.2
ready_file = "/run/db.ready"
ready_timeout = 3
console = false

[worker.db.env]
A = "1"
B = "two words"

[worker.http]
command = "/usr/bin/http"
ready_fd = 3

[worker.cron]
command = "/usr/bin/cron"
restart = "temporary"
env = { X = "y" }
"#;
    let accounts = Accounts::parse("root:x:0:0::/:/bin/sh\nsvc:x:1000:1000::/:\n", "");
    let c = parse(text, &accounts).unwrap();
    assert_eq!(c.healthy_after, Duration::from_millis(2500));
    assert_eq!(c.on_failure, FailureAction::Hang);
    assert_eq!(c.watchdog_interval, None);
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["top", "db", "web", "http", "cron"],
        "depth-first start order"
    );
    let top = sup(&c, "top");
    assert_eq!(top.strategy, Strategy::RestForOne);
    assert_eq!((top.intensity, top.period), (7, Duration::from_secs(30)));
    assert_eq!(top.restart_delay, Duration::from_millis(100));
    assert_eq!(top.children, vec![1, 2]);
    assert_eq!(sup(&c, "web").children, vec![3, 4]);
    assert_eq!(c.nodes[2].restart, Restart::Transient);
    let db = worker(&c, "db");
    assert_eq!(db.args, ["--port", "5"]);
    assert_eq!(
        db.env,
        [("A".into(), "1".into()), ("B".into(), "two words".into())]
    );
    assert_eq!((db.uid, db.gid), (Some(1000), Some(20)));
    assert_eq!(db.cwd.as_deref(), Some("/data"));
    assert_eq!(db.ready, Some(Ready::File("/run/db.ready".into())));
    assert_eq!(db.ready_timeout, Duration::from_secs(3));
    assert_eq!(db.shutdown_timeout, Duration::from_millis(200));
    assert!(!db.console);
    assert_eq!(worker(&c, "http").ready, Some(Ready::Fd(3)));
    assert_eq!(c.nodes[4].restart, Restart::Temporary);
    assert_eq!(worker(&c, "cron").env, [("X".into(), "y".into())]);
}

#[test]
fn syntax_errors_keep_their_line() {
    assert_error(
        "[supervisor.root]\nchildren = [\"a\"\n",
        2,
        "unclosed array",
    );
    assert_error("\n\nroot = top\n", 3, "(at `top`)");
}

#[test]
fn unknown_keys_are_named_with_the_known_ones() {
    let text = "[supervisor.root]\nchildren = [\"a\"]\nstrategy = \"one_for_one\"\nintensty = 3\n[worker.a]\ncomand = \"/bin/a\"\ncommand = \"/bin/a\"\n[wroker.x]\n";
    assert_error(
        text,
        4,
        "[supervisor.root]: unknown key 'intensty' (known keys: strategy, intensity,",
    );
    assert_error(text, 6, "[worker.a]: unknown key 'comand'");
    assert_error(text, 8, "unknown key 'wroker'");
}

#[test]
fn missing_command_and_children() {
    assert_error(
        "[supervisor.root]\nchildren = [\"a\"]\n\n[worker.a]\nargs = []\n",
        4,
        "[worker.a]: command is missing",
    );
    assert_error("[supervisor.root]\n", 1, "children is missing");
    assert_error(
        "[supervisor.root]\nchildren = [\"a\"]\n[worker.a]\ncommand = \"  \"\n",
        4,
        "command is empty",
    );
}

#[test]
fn cycles_and_bad_references() {
    let cycle = "[supervisor.root]\nchildren = [\"a\"]\n[supervisor.a]\nchildren = [\"b\"]\n[supervisor.b]\nchildren = [\"a\"]\n";
    assert_error(cycle, 6, "cycle: a -> b -> a");
    assert_error(
        "[supervisor.root]\nchildren = [\"root\"]\n",
        2,
        "cycle: root -> root",
    );
    assert_error(
        "[supervisor.root]\nchildren = [\n\"a\",\n\"ghost\"]\n[worker.a]\ncommand = \"/a\"\n",
        4,
        "child 'ghost' is not defined",
    );
    let two_parents = "[supervisor.root]\nchildren = [\"s\", \"a\"]\n[supervisor.s]\nchildren = [\"a\"]\n[worker.a]\ncommand = \"/a\"\n";
    assert_error(two_parents, 2, "'a' is already a child of 's'");
    assert_error(
        "[supervisor.root]\nchildren = [\"a\", \"a\"]\n[worker.a]\ncommand = \"/a\"\n",
        2,
        "listed twice",
    );
    assert_error(
        "[supervisor.root]\nchildren = []\n[worker.lonely]\ncommand = \"/a\"\n",
        3,
        "[worker.lonely] is not in the tree",
    );
    // Keys of definitions outside the tree are still checked.
    let stray = "[supervisor.root]\nchildren = []\n[worker.x]\ncomand = \"/a\"\n[supervisor.s]\nchildren = []\nstrat = 1\n";
    assert_error(stray, 4, "[worker.x]: unknown key 'comand'");
    assert_error(stray, 3, "[worker.x]: command is missing");
    assert_error(stray, 7, "[supervisor.s]: unknown key 'strat'");
    assert_error(
        "[supervisor.main]\nchildren = []\n",
        1,
        "[supervisor.root] is not defined",
    );
    assert_error(
        "root = \"a\"\n[worker.a]\ncommand = \"/a\"\n",
        2,
        "must be a [supervisor.a], not a worker",
    );
    assert_error(
        "[supervisor.root]\nchildren = [\"a\"]\n[worker.a]\ncommand = \"/a\"\n[supervisor.a]\nchildren = []\n",
        3,
        "'a' is used twice",
    );
}

#[test]
fn bad_values() {
    let base = "[supervisor.root]\nchildren = [\"a\"]\n";
    let with = |extra: &str| format!("{base}[worker.a]\ncommand = \"/a\"\n{extra}\n");
    assert_error(
        &with("restart = \"sometimes\""),
        5,
        "is not one of: permanent, transient, temporary",
    );
    assert_error(&with("shutdown_timeout = -1"), 5, "outside");
    assert_error(&with("shutdown_timeout = \"5s\""), 5, "number of seconds");
    assert_error(&with("args = \"--x\""), 5, "array of strings");
    assert_error(
        &with("args = [\"a\", 1]"),
        5,
        "every entry must be a string",
    );
    assert_error(&with("ready_fd = 1"), 5, "outside 3..=1023");
    assert_error(&with("ready_file = \"x\""), 5, "absolute path");
    assert_error(&with("ready_file = \"/x\"\nready_fd = 4"), 5, "not both");
    assert_error(
        &with("ready_timeout = 3"),
        5,
        "needs ready_file or ready_fd",
    );
    assert_error(&with("user = \"nobody\""), 5, "not in /etc/passwd");
    assert_error(&with("group = -1"), 5, "not a valid id");
    assert_error(&with("env = { A = 1 }"), 5, "env.A must be a string");
    assert_error(&with("console = \"yes\""), 5, "true or false");
    assert_error(
        &format!("on_failure = \"explode\"\n{base}[worker.a]\ncommand = \"/a\"\n"),
        1,
        "reboot, poweroff, hang",
    );
    assert_error(
        &format!("{base}strategy = \"one_for_none\"\n[worker.a]\ncommand = \"/a\"\n"),
        3,
        "one_for_one",
    );
    assert_error(
        &format!("{base}period = 0\n[worker.a]\ncommand = \"/a\"\n"),
        3,
        "more than 0",
    );
    assert_error(
        &format!("{base}restart_delay = 5\nrestart_delay_max = 1\n[worker.a]\ncommand = \"/a\"\n"),
        4,
        "less than restart_delay",
    );
    assert_error(
        &format!("{base}restart = \"temporary\"\n[worker.a]\ncommand = \"/a\"\n"),
        3,
        "no effect on the root",
    );
    assert_error(
        &format!("{base}[worker.a]\ncommand = \"/a\"\n[worker.\"b c\"]\ncommand = \"/b\"\n"),
        5,
        "names may use only",
    );
}

#[test]
fn reports_every_error_sorted_by_line() {
    let all = errs("[supervisor.root]\nchildren = [\"a\", \"b\"]\nfoo = 1\n[worker.a]\n[worker.b]\nbar = 2\ncommand = \"/b\"\n");
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all[0].starts_with("3: ") && all[1].starts_with("4: ") && all[2].starts_with("6: "),
        "{all:#?}"
    );
}

#[test]
fn accounts_parse_passwd_lines() {
    let a = Accounts::parse(
        "root:x:0:0:root:/root:/bin/sh\nbad\nagent:x:101:101::/:\n",
        "wheel:x:10:\n",
    );
    assert_eq!(a.users.get("agent"), Some(&101));
    assert_eq!(a.groups.get("wheel"), Some(&10));
    assert!(!a.users.contains_key("bad"));
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the file says, we get a config or errors with real
        /// line numbers, never a panic.
        #[test]
        fn never_panics(text in "[\\[\\]{}=,.\"a-z0-9 \n_]{0,160}") {
            if let Err(errors) = parse(&text, &Accounts::default()) {
                for e in errors {
                    prop_assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}");
                }
            }
        }
    }
}
