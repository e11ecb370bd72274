//! `services.toml`: the supervision tree PID 1 runs, read into a checked
//! `Config`. Every problem is reported with the file's line, and all of
//! them at once, so one edit fixes a file. The schema is in
//! docs/services.md.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::toml::{self, Item, Table, Value};
use reader::Reader;

mod reader;

/// Where the tree's root comes from when the file does not say.
pub const DEFAULT_ROOT: &str = "root";

/// What init does when the root supervisor gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    Reboot,
    PowerOff,
    /// Stay up with the console and control socket, for debugging.
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

/// When a child that ended is started again (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal exit (non-zero status or a signal).
    Transient,
    /// Never.
    Temporary,
}

/// How a worker says it is ready, holding back its younger siblings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// The file exists (init deletes it before each start).
    File(PathBuf),
    /// A newline is written to this descriptor (s6's notification-fd).
    Fd(i32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorSpec {
    pub strategy: Strategy,
    /// At most `intensity` restarts within `period`, or the supervisor
    /// gives up (OTP's MaxR and MaxT).
    pub intensity: u32,
    pub period: Duration,
    /// First restart delay; doubles per consecutive restart of a child.
    pub restart_delay: Duration,
    pub restart_delay_max: Duration,
    /// Indices into `Config::nodes`, in start order.
    pub children: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub shutdown_timeout: Duration,
    pub ready: Option<Ready>,
    pub ready_timeout: Duration,
    /// Copy the output to the console (it always goes to the log ring).
    pub console: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Supervisor(SupervisorSpec),
    Worker(WorkerSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub restart: Restart,
    pub kind: NodeKind,
}

/// A checked tree: `nodes[0]` is the root supervisor and the order is the
/// start order, depth first.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub nodes: Vec<NodeSpec>,
    pub healthy_after: Duration,
    pub on_failure: FailureAction,
    /// How often the hardware watchdog is petted; `None` leaves it closed.
    pub watchdog_interval: Option<Duration>,
}

/// One problem, e.g. `services.toml:12: [worker.agent]: unknown key …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

/// Users and groups for `user =` / `group =` names (from /etc/passwd and
/// /etc/group, which a Keel root filesystem may not have).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    users: HashMap<String, u32>,
    groups: HashMap<String, u32>,
}

impl Accounts {
    /// Parses passwd- and group-format text (`name:x:id:…`).
    pub fn parse(passwd: &str, group: &str) -> Self {
        let ids = |text: &str| {
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?.trim();
                    let id = f.nth(1)?.trim().parse().ok()?;
                    Some((name.to_string(), id))
                })
                .collect()
        };
        Self {
            users: ids(passwd),
            groups: ids(group),
        }
    }

    pub fn system() -> Self {
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        Self::parse(&read("/etc/passwd"), &read("/etc/group"))
    }
}

const TOP_KEYS: &[&str] = &[
    "root",
    "healthy_after",
    "on_failure",
    "watchdog_interval",
    "supervisor",
    "worker",
];
const SUP_KEYS: &[&str] = &[
    "strategy",
    "intensity",
    "period",
    "restart_delay",
    "restart_delay_max",
    "children",
    "restart",
];
const WORKER_KEYS: &[&str] = &[
    "command",
    "args",
    "env",
    "cwd",
    "user",
    "group",
    "restart",
    "shutdown_timeout",
    "ready_file",
    "ready_fd",
    "ready_timeout",
    "console",
];
const RESTARTS: &[(&str, Restart)] = &[
    ("permanent", Restart::Permanent),
    ("transient", Restart::Transient),
    ("temporary", Restart::Temporary),
];

/// A supervisor or worker definition before the tree is linked.
struct Def<'a> {
    line: usize,
    table: &'a Table,
    is_supervisor: bool,
}

/// Reads and checks a whole file.
pub fn parse(text: &str, accounts: &Accounts) -> Result<Config, Vec<ConfigError>> {
    let doc = toml::parse(text).map_err(|e| {
        vec![ConfigError {
            line: e.line,
            msg: e.msg,
        }]
    })?;
    let mut errors = Vec::new();
    let mut top = Reader {
        errors: &mut errors,
        place: String::new(),
    };
    top.check_keys(&doc, TOP_KEYS);
    let root_name = top
        .string(&doc, "root")
        .map_or_else(|| DEFAULT_ROOT.to_string(), |(_, s)| s);
    let healthy_after = top.seconds(&doc, "healthy_after", Duration::from_secs(10));
    let on_failure = top.choice(
        &doc,
        "on_failure",
        &[
            ("reboot", FailureAction::Reboot),
            ("poweroff", FailureAction::PowerOff),
            ("hang", FailureAction::Hang),
        ],
        FailureAction::Reboot,
    );
    let watchdog = top.seconds(&doc, "watchdog_interval", Duration::from_secs(5));
    let watchdog_interval = (!watchdog.is_zero()).then_some(watchdog);

    // Collect definitions by name from [supervisor.*] and [worker.*].
    let mut defs: Vec<(String, Def)> = Vec::new();
    for (section, is_supervisor) in [("supervisor", true), ("worker", false)] {
        let Some(item) = doc.get(section) else {
            continue;
        };
        let Value::Table(t) = &item.value else {
            top.error(
                item.line,
                format!("'{section}' must be a table of [{section}.NAME] sections"),
            );
            continue;
        };
        for (name, item) in &t.entries {
            let Value::Table(table) = &item.value else {
                top.error(
                    item.line,
                    format!("{section}.{name} must be a [{section}.{name}] table"),
                );
                continue;
            };
            if !valid_name(name) {
                top.error(
                    item.line,
                    format!("[{section}.{name}]: names may use only letters, digits, '_', '-' and '.' (at most 32)"),
                );
            }
            if let Some((_, first)) = defs.iter().find(|(n, _)| n == name) {
                top.error(
                    item.line,
                    format!(
                        "the name '{name}' is used twice (also on line {})",
                        first.line
                    ),
                );
                continue;
            }
            if is_supervisor {
                let mut r = Reader {
                    errors: &mut *top.errors,
                    place: format!("[supervisor.{name}]: "),
                };
                r.check_keys(table, SUP_KEYS);
            }
            defs.push((
                name.clone(),
                Def {
                    line: item.line,
                    table,
                    is_supervisor,
                },
            ));
        }
    }

    let mut nodes = Vec::new();
    let root_line = doc.get("root").map_or(1, |i| i.line);
    match defs.iter().find(|(n, _)| *n == root_name) {
        None => top.error(
            root_line,
            format!("the root supervisor [supervisor.{root_name}] is not defined"),
        ),
        Some((_, d)) if !d.is_supervisor => top.error(
            d.line,
            format!("the root '{root_name}' must be a [supervisor.{root_name}], not a worker"),
        ),
        Some(_) => {
            let mut linker = Linker {
                defs: &defs,
                accounts,
                errors: &mut errors,
                parent_of: HashMap::new(),
                path: Vec::new(),
            };
            linker.add(&root_name, None, &mut nodes);
            for (name, d) in &defs {
                if !linker.parent_of.contains_key(name.as_str()) && *name != root_name {
                    let kind = if d.is_supervisor {
                        "supervisor"
                    } else {
                        "worker"
                    };
                    linker.errors.push(ConfigError {
                        line: d.line,
                        msg: format!(
                            "[{kind}.{name}] is not in the tree: no supervisor lists it in children"
                        ),
                    });
                    // Its own mistakes are worth reporting in the same pass.
                    if !d.is_supervisor {
                        linker.worker(name, d);
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(Config {
            nodes,
            healthy_after,
            on_failure,
            watchdog_interval,
        })
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Turns definitions into the node list, depth first, finding cycles,
/// dangling names and children with two parents on the way.
struct Linker<'a, 'd> {
    defs: &'a [(String, Def<'d>)],
    accounts: &'a Accounts,
    errors: &'a mut Vec<ConfigError>,
    /// child name -> (parent name, line of the parent's `children`).
    parent_of: HashMap<&'a str, (&'a str, usize)>,
    /// Supervisors from the root down to the one being read.
    path: Vec<&'a str>,
}

impl<'a> Linker<'a, '_> {
    /// Adds `name` and, for a supervisor, its subtree; returns its index.
    fn add(
        &mut self,
        name: &'a str,
        parent: Option<&'a str>,
        nodes: &mut Vec<NodeSpec>,
    ) -> Option<usize> {
        let (name, def) = self
            .defs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(n, d)| (n.as_str(), d))?;
        let section = if def.is_supervisor {
            "supervisor"
        } else {
            "worker"
        };
        let mut r = Reader {
            errors: &mut *self.errors,
            place: format!("[{section}.{name}]: "),
        };
        let t = def.table;
        let restart = r.choice(t, "restart", RESTARTS, Restart::Permanent);
        if parent.is_none() && t.get("restart").is_some() {
            let line = t.get("restart").map_or(def.line, |i| i.line);
            r.error(
                line,
                "restart has no effect on the root supervisor (see on_failure)",
            );
        }
        let index = nodes.len();
        if !def.is_supervisor {
            let kind = NodeKind::Worker(self.worker(name, def));
            nodes.push(NodeSpec {
                name: name.to_string(),
                restart,
                kind,
            });
            return Some(index);
        }
        let strategy = r.choice(
            t,
            "strategy",
            &[
                ("one_for_one", Strategy::OneForOne),
                ("one_for_all", Strategy::OneForAll),
                ("rest_for_one", Strategy::RestForOne),
            ],
            Strategy::OneForOne,
        );
        let intensity = r
            .int(t, "intensity", 0..=1_000_000)
            .map_or(3, |(_, i)| i as u32);
        let period = r.seconds(t, "period", Duration::from_secs(5));
        let restart_delay = r.seconds(t, "restart_delay", Duration::from_millis(500));
        let restart_delay_max = r.seconds(t, "restart_delay_max", Duration::from_secs(30));
        if period.is_zero() {
            let line = t.get("period").map_or(def.line, |i| i.line);
            r.error(line, "period must be more than 0 seconds");
        }
        if restart_delay_max < restart_delay {
            let line = t.get("restart_delay_max").map_or(def.line, |i| i.line);
            r.error(line, "restart_delay_max is less than restart_delay");
        }
        let children_line = t.get("children").map_or(def.line, |i| i.line);
        let names = r.strings(t, "children");
        if t.get("children").is_none() {
            r.error(
                def.line,
                "children is missing (a list of worker and supervisor names)",
            );
        }
        nodes.push(NodeSpec {
            name: name.to_string(),
            restart,
            kind: NodeKind::Supervisor(SupervisorSpec {
                strategy,
                intensity,
                period,
                restart_delay,
                restart_delay_max,
                children: Vec::new(),
            }),
        });
        self.path.push(name);
        let mut children = Vec::new();
        for (line, child) in &names {
            if let Some(pos) = self.path.iter().position(|p| p == child) {
                let cycle = self.path[pos..].join(" -> ");
                self.error(
                    *line,
                    format!("[supervisor.{name}]: cycle: {cycle} -> {child}"),
                );
                continue;
            }
            let Some(child_name) = self
                .defs
                .iter()
                .map(|(n, _)| n.as_str())
                .find(|n| n == child)
            else {
                self.error(
                    *line,
                    format!("[supervisor.{name}]: child '{child}' is not defined as a [worker.{child}] or [supervisor.{child}]"),
                );
                continue;
            };
            if let Some((other, other_line)) = self.parent_of.get(child_name) {
                if *other == name {
                    self.error(
                        *line,
                        format!("[supervisor.{name}]: '{child}' is listed twice in children"),
                    );
                    continue;
                }
                self.error(
                    *line,
                    format!(
                        "[supervisor.{name}]: '{child}' is already a child of '{other}' (line {other_line}); a child has one supervisor"
                    ),
                );
                continue;
            }
            self.parent_of.insert(child_name, (name, children_line));
            if let Some(i) = self.add(child_name, Some(name), nodes) {
                children.push(i);
            }
        }
        self.path.pop();
        if let NodeKind::Supervisor(s) = &mut nodes[index].kind {
            s.children = children;
        }
        Some(index)
    }

    fn error(&mut self, line: usize, msg: String) {
        self.errors.push(ConfigError { line, msg });
    }

    fn worker(&mut self, name: &str, def: &Def) -> WorkerSpec {
        let t = def.table;
        let mut r = Reader {
            errors: &mut *self.errors,
            place: format!("[worker.{name}]: "),
        };
        r.check_keys(t, WORKER_KEYS);
        let command = match r.string(t, "command") {
            Some((line, c)) if c.trim().is_empty() => {
                r.error(line, "command is empty");
                String::new()
            }
            Some((_, c)) => c,
            None => {
                if t.get("command").is_none() {
                    r.error(
                        def.line,
                        "command is missing (the program to run, e.g. \"/usr/bin/agent\")",
                    );
                }
                String::new()
            }
        };
        let args = r.strings(t, "args").into_iter().map(|(_, s)| s).collect();
        let mut env = Vec::new();
        if let Some(item) = t.get("env") {
            match &item.value {
                Value::Table(vars) => {
                    for (k, v) in &vars.entries {
                        match &v.value {
                            Value::Str(s) if !k.is_empty() && !k.contains('=') => {
                                env.push((k.clone(), s.clone()))
                            }
                            Value::Str(_) => {
                                r.error(v.line, format!("env: '{k}' is not a valid variable name"))
                            }
                            other => r.error(
                                v.line,
                                format!("env.{k} must be a string, not {}", other.type_name()),
                            ),
                        }
                    }
                }
                other => r.error(
                    item.line,
                    format!("env must be a table of strings, not {}", other.type_name()),
                ),
            }
        }
        let cwd = r.string(t, "cwd").map(|(_, s)| s);
        let uid = r.account(t, "user", &self.accounts.users);
        let gid = r.account(t, "group", &self.accounts.groups);
        let shutdown_timeout = r.seconds(t, "shutdown_timeout", Duration::from_secs(5));
        let ready_timeout = r.seconds(t, "ready_timeout", Duration::from_secs(10));
        let file = r.string(t, "ready_file");
        let fd = r.int(t, "ready_fd", 3..=1023);
        let ready = match (file, fd) {
            (Some((line, _)), Some(_)) => {
                r.error(line, "give ready_file or ready_fd, not both");
                None
            }
            (Some((line, f)), None) if !f.starts_with('/') => {
                r.error(line, "ready_file must be an absolute path");
                None
            }
            (Some((_, f)), None) => Some(Ready::File(PathBuf::from(f))),
            (None, Some((_, n))) => Some(Ready::Fd(n as i32)),
            (None, None) => None,
        };
        if ready.is_none() && t.get("ready_timeout").is_some() {
            let line = t.get("ready_timeout").map_or(def.line, |i| i.line);
            r.error(line, "ready_timeout needs ready_file or ready_fd");
        }
        let console = match t.get("console") {
            None => true,
            Some(Item {
                value: Value::Bool(b),
                ..
            }) => *b,
            Some(item) => {
                r.error(
                    item.line,
                    format!(
                        "console must be true or false, not {}",
                        item.value.type_name()
                    ),
                );
                true
            }
        };
        WorkerSpec {
            command,
            args,
            env,
            cwd,
            uid,
            gid,
            shutdown_timeout,
            ready,
            ready_timeout,
            console,
        }
    }
}

#[cfg(test)]
mod tests;
