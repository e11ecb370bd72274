//! The event loop PID 1 runs once the system is up (and `init supervise`
//! runs on a host): one `poll` over signals, the console, the control
//! socket and every service's pipes; after each wake-up it reaps all
//! zombies, moves the supervision tree on, keeps /run/keel/healthy in
//! step, pets the watchdog, and carries out shutdowns.
//!
//! Nothing here blocks for long: services' output is read as it comes, a
//! console `run` is waited for by the reaper, and a stopping service is
//! given its timeout by the tree's timers.

mod commands;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{self, Accounts, Config, FailureAction};
use crate::console::{LineError, LineReader};
use crate::control::{self, Server};
use crate::escalation::{RebootBudget, Verdict};
use crate::reaper::ExitStatus;
use crate::shutdown::{self, Kind};
use crate::signals::{self, Action, SignalFd};
use crate::spawn::Procs;
use crate::supervisor::Tree;
use crate::watchdog::Watchdog;
use crate::{logger, sys};

/// The services file in the read-only root.
pub const SERVICES: &str = keel_contract::paths::SERVICES;
/// Used instead when present: a development override on the writable
/// partition (no image rebuild to try a different tree).
pub const SERVICES_OVERRIDE: &str = keel_contract::paths::SERVICES_OVERRIDE;
pub const RUN_DIR: &str = keel_contract::paths::RUN_DIR;
/// How often ready files are looked for.
const READY_FILE_POLL: Duration = Duration::from_millis(50);
/// Without a signalfd (never seen, but survivable) reap on this tick.
const REAP_TICK: Duration = Duration::from_secs(1);
/// After a console read error or EOF, wait before reading again so a
/// hung-up line cannot make PID 1 spin.
const CONSOLE_RETRY: Duration = Duration::from_secs(1);
/// Host mode's exit status when the root supervisor gave up.
pub const EXIT_GAVE_UP: i32 = 3;

/// Which services file to use on the device.
/// The services file: the signed root's, or the writable partition's
/// override when the image allows it (development images only: on a release
/// image nothing on /data decides what PID 1 runs).
pub fn services_file(override_allowed: bool) -> PathBuf {
    choose_services(
        override_allowed,
        Path::new(SERVICES_OVERRIDE),
        Path::new(SERVICES),
    )
}

fn choose_services(override_allowed: bool, over: &Path, signed: &Path) -> PathBuf {
    if override_allowed && over.exists() {
        over.to_path_buf()
    } else {
        if !override_allowed && over.exists() {
            crate::log!(
                "{} ignored: this release image runs only its signed service tree",
                over.display()
            );
        }
        signed.to_path_buf()
    }
}

pub struct Setup {
    /// PID 1 on a device; otherwise host mode (no console, no reboot).
    pub pid1: bool,
    pub services: PathBuf,
    /// control.sock and healthy live here.
    pub run_dir: PathBuf,
    /// Whether the hardware watchdog may be armed (`keel.watchdog=off` on
    /// the kernel command line says no).
    pub watchdog: bool,
    /// Whether the serial console takes commands (development images); a
    /// release image's console only shows the log.
    pub console_commands: bool,
    /// Counts reboots for failing services (see `escalation`).
    pub reboot_budget: RebootBudget,
}

/// The debug console's input side (PID 1 only).
#[derive(Default)]
struct ConsoleIn {
    reader: LineReader,
    /// Lines read but not yet run (a `run` holds the rest back).
    queue: std::collections::VecDeque<Result<Vec<u8>, LineError>>,
    paused_until: Option<Instant>,
    /// The program a `run` command is waiting for.
    running: Option<libc::pid_t>,
}

pub struct Runtime {
    pid1: bool,
    signals: Option<SignalFd>,
    services: PathBuf,
    tree: Option<Tree>,
    /// Why there is no tree (the file's errors), for `status`.
    rescue: Option<String>,
    healthy_after: Duration,
    on_failure: FailureAction,
    procs: Procs,
    control: Option<Server>,
    health_file: PathBuf,
    healthy: bool,
    watchdog: Option<Watchdog>,
    console: Option<ConsoleIn>,
    /// What is being shut down to, and whether the console asked (it
    /// gets `keel: ok` right before reboot(2)).
    shutdown: Option<(Kind, bool)>,
    failure_handled: bool,
    exit_code: i32,
    reboot_budget: RebootBudget,
}

/// Reads and checks a services file; errors are `file:line: problem`.
pub fn load(path: &Path) -> Result<Config, Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    config::parse(&text, &Accounts::system()).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}:{}: {}", path.display(), e.line, e.msg))
            .collect()
    })
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    match fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
    {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => sys::boottime().as_nanos() as u64 ^ (u64::from(std::process::id()) << 32),
    }
}

impl Runtime {
    pub fn new(setup: Setup, signals: Option<SignalFd>) -> Self {
        let now = Instant::now();
        let control = match Server::bind(
            &setup
                .run_dir
                .join(keel_contract::paths::CONTROL_SOCKET_NAME),
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                crate::log!("control socket in {}: {e}", setup.run_dir.display());
                None
            }
        };
        let health_file = setup.run_dir.join(keel_contract::paths::HEALTHY_NAME);
        let _ = fs::remove_file(&health_file);
        let mut rt = Self {
            pid1: setup.pid1,
            signals,
            services: setup.services.clone(),
            tree: None,
            rescue: None,
            healthy_after: Duration::from_secs(10),
            on_failure: FailureAction::Reboot,
            procs: Procs::new(!setup.pid1),
            control,
            health_file,
            healthy: false,
            watchdog: None,
            console: (setup.pid1 && setup.console_commands).then(ConsoleIn::default),
            shutdown: None,
            failure_handled: false,
            exit_code: 0,
            reboot_budget: setup.reboot_budget,
        };
        match load(&setup.services) {
            Ok(cfg) => {
                crate::log!("services from {}", setup.services.display());
                rt.healthy_after = cfg.healthy_after;
                rt.on_failure = cfg.on_failure;
                if setup.pid1 && !setup.watchdog && cfg.watchdog_interval.is_some() {
                    crate::log!("watchdog left off: keel.watchdog=off on the kernel command line");
                }
                if setup.pid1 && setup.watchdog {
                    rt.watchdog = cfg
                        .watchdog_interval
                        .and_then(|i| Watchdog::open(Path::new(crate::watchdog::DEVICE), i, now));
                }
                rt.tree = Some(Tree::new(&cfg, seed(), now));
            }
            Err(errors) => {
                for e in &errors {
                    crate::log!("{e}");
                }
                crate::log!(
                    "services not started: rescue state (console and {} still work; fix {} and reboot)",
                    control::SOCKET,
                    setup.services.display()
                );
                rt.rescue = Some(errors.join("; "));
            }
        }
        rt
    }

    /// Runs until a host-mode shutdown (returning the exit status); on a
    /// device it ends only in reboot(2).
    pub fn run(mut self) -> i32 {
        let now = Instant::now();
        if let Some(t) = &mut self.tree {
            t.start(&mut self.procs, now);
        }
        loop {
            if let Some(code) = self.step() {
                return code;
            }
        }
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut add = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let Some(t) = &self.tree {
            add(t.next_deadline());
            if t.awaiting_ready()
                .any(|(_, _, w)| matches!(w.ready, Some(config::Ready::File(_))))
            {
                add(Some(now + READY_FILE_POLL));
            }
            if !self.healthy && t.whole_up() && self.shutdown.is_none() {
                add(Some(t.last_disturbance() + self.healthy_after));
            }
        }
        add(self.watchdog.as_ref().map(Watchdog::next_deadline));
        add(self.control.as_ref().and_then(Server::next_deadline));
        add(self.console.as_ref().and_then(|c| c.paused_until));
        if self.signals.is_none() {
            add(Some(now + REAP_TICK));
        }
        next
    }

    /// One wake-up of the loop.
    fn step(&mut self) -> Option<i32> {
        let now = Instant::now();
        let pfd = |fd, events| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let mut fds = Vec::with_capacity(16);
        fds.push(pfd(
            self.signals.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            libc::POLLIN,
        ));
        let console_fd = match &self.console {
            Some(c) if c.paused_until.is_none() && self.shutdown.is_none() => 0,
            _ => -1,
        };
        fds.push(pfd(console_fd, libc::POLLIN));
        fds.push(pfd(logger::pending_fd().unwrap_or(-1), libc::POLLOUT));
        let ctl_at = fds.len();
        if let Some(c) = &self.control {
            c.fill(&mut fds);
        }
        let procs_at = fds.len();
        self.procs.fill(&mut fds);
        let timeout = self
            .next_wake(now)
            .map(|t| t.saturating_duration_since(now));
        if let Err(e) = sys::poll(&mut fds, timeout) {
            crate::log!("poll: {e}");
            std::thread::sleep(Duration::from_millis(100));
            return None;
        }
        let now = Instant::now();
        if let Some(s) = &self.signals {
            for sig in s.drain() {
                if let Some(Action::Shutdown(kind)) = signals::action(sig) {
                    self.begin_shutdown(kind, false, now);
                }
            }
        }
        // Output first, so a service's last words come before its exit.
        for (id, pid) in self.procs.service(&fds[procs_at..]) {
            if let Some(t) = &mut self.tree {
                t.ready(&mut self.procs, id, pid, now);
            }
        }
        self.reap(now);
        self.check_ready_files(now);
        if let Some(mut ctl) = self.control.take() {
            for (client, line) in ctl.service(&fds[ctl_at..procs_at], now) {
                let reply = self.request(&line, now);
                ctl.answer(client, reply);
            }
            ctl.sweep(now);
            self.control = Some(ctl);
        }
        if fds[1].revents != 0 {
            self.read_console();
        }
        self.run_console_queue(now);
        if let Some(c) = &mut self.console {
            if c.paused_until.is_some_and(|t| now >= t) {
                c.paused_until = None;
            }
        }
        if fds[2].revents != 0 {
            logger::flush_pending();
        }
        if let Some(t) = &mut self.tree {
            t.tick(&mut self.procs, now);
        }
        self.handle_failure(now);
        self.update_health(now);
        if let Some(w) = &mut self.watchdog {
            if self.tree.as_ref().is_some_and(|t| t.given_up().is_none()) {
                w.pet_if_due(now);
            }
        }
        self.finish_shutdown()
    }

    /// Reaps every zombie: our services, a console `run`, and orphans
    /// the kernel handed to us (dropped).
    fn reap(&mut self, now: Instant) {
        while let Ok(Some((pid, raw))) = sys::wait_any_nohang() {
            let status = ExitStatus::from_raw(raw);
            self.procs.forget(pid);
            if self
                .tree
                .as_mut()
                .is_some_and(|t| t.exited(&mut self.procs, pid, status, now))
            {
                continue;
            }
            if let Some(c) = &mut self.console {
                if c.running == Some(pid) {
                    c.running = None;
                    crate::log!("{status}");
                    crate::log!("ok");
                }
            }
        }
    }

    fn check_ready_files(&mut self, now: Instant) {
        let Some(t) = &mut self.tree else {
            return;
        };
        let ready: Vec<(usize, libc::pid_t)> = t
            .awaiting_ready()
            .filter(|(_, _, w)| matches!(&w.ready, Some(config::Ready::File(p)) if p.exists()))
            .map(|(id, pid, _)| (id, pid))
            .collect();
        for (id, pid) in ready {
            t.ready(&mut self.procs, id, pid, now);
        }
    }

    fn read_console(&mut self) {
        let Some(c) = &mut self.console else {
            return;
        };
        let mut buf = [0u8; 1024];
        match sys::read(0, &mut buf) {
            // EOF (ctrl-D, or stdin is not a terminal) or a hung-up line.
            Ok(0) | Err(_) => c.paused_until = Some(Instant::now() + CONSOLE_RETRY),
            Ok(n) => {
                let lines = c.reader.feed(&buf[..n]);
                c.queue.extend(lines);
            }
        }
    }

    fn run_console_queue(&mut self, now: Instant) {
        loop {
            let Some(c) = &mut self.console else {
                return;
            };
            if c.running.is_some() || self.shutdown.is_some() {
                return;
            }
            let Some(line) = c.queue.pop_front() else {
                return;
            };
            self.console_line(line, now);
        }
    }

    fn begin_shutdown(&mut self, kind: Kind, from_console: bool, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        crate::log!("shutting down: {kind}");
        self.shutdown = Some((kind, from_console));
        if let Some(t) = &mut self.tree {
            t.shutdown(&mut self.procs, now);
        }
    }

    /// Once every service is stopped: end the system (or host mode).
    fn finish_shutdown(&mut self) -> Option<i32> {
        let (kind, from_console) = self.shutdown.clone()?;
        if !self.tree.as_ref().is_none_or(Tree::is_down) {
            return None;
        }
        if let Some(c) = &mut self.control {
            c.drain(Duration::from_secs(1));
        }
        self.set_healthy(false);
        if !self.pid1 {
            crate::log!("services stopped; host mode, so no {kind}: exiting");
            return Some(self.exit_code);
        }
        shutdown::prepare();
        if from_console {
            crate::log!("ok");
        }
        logger::flush_blocking(Duration::from_secs(1));
        let e = shutdown::finish(&kind);
        crate::log!("{kind} failed: {e}");
        self.shutdown = None;
        None
    }

    /// The root supervisor gave up: do what services.toml says.
    fn handle_failure(&mut self, now: Instant) {
        if self.failure_handled {
            return;
        }
        let Some(why) = self
            .tree
            .as_ref()
            .and_then(|t| t.given_up())
            .map(str::to_string)
        else {
            return;
        };
        self.failure_handled = true;
        self.exit_code = EXIT_GAVE_UP;
        sys::sync();
        let kind = match self.on_failure {
            FailureAction::Reboot => match self.reboot_budget.take() {
                Verdict::Reboot(n) => {
                    crate::log!("services failed: {why}; reboot {n} in a row for failing services");
                    Kind::Reboot(None)
                }
                Verdict::StayUp(reason) => {
                    crate::log!(
                        "services failed: {why}; {reason}: staying up instead of rebooting again (console and control socket still work)"
                    );
                    self.stay_up();
                    return;
                }
            },
            FailureAction::PowerOff => Kind::PowerOff,
            FailureAction::Hang => {
                crate::log!(
                    "services failed: {why}; on_failure = \"hang\": staying up (console and control socket still work)"
                );
                self.stay_up();
                return;
            }
        };
        crate::log!("services failed: {why}; {kind} (on_failure)");
        self.begin_shutdown(kind, false, now);
    }

    /// After the services failed, without a reboot: the watchdog must not
    /// reset the board either.
    fn stay_up(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.disarm();
        }
    }

    fn update_health(&mut self, now: Instant) {
        let want = self.shutdown.is_none()
            && self.tree.as_ref().is_some_and(|t| {
                t.whole_up()
                    && now.saturating_duration_since(t.last_disturbance()) >= self.healthy_after
            });
        if want != self.healthy {
            self.set_healthy(want);
        }
    }

    /// Creates or removes the health file. It holds the uptime at which
    /// the tree became healthy; written to a temporary name and renamed,
    /// so a reader never sees it half written.
    fn set_healthy(&mut self, healthy: bool) {
        if healthy == self.healthy {
            return;
        }
        self.healthy = healthy;
        if healthy {
            self.reboot_budget.reset();
            let up = sys::boottime().as_secs_f64();
            let res = durable::replace(&self.health_file, format!("{up:.3}\n").as_bytes(), 0o644);
            match res {
                Ok(()) => crate::log!(
                    "services healthy: all up, no restart for {:?} ({} written)",
                    self.healthy_after,
                    self.health_file.display()
                ),
                Err(e) => crate::log!("write {}: {e}", self.health_file.display()),
            }
        } else {
            match fs::remove_file(&self.health_file) {
                Ok(()) => crate::log!(
                    "services no longer healthy ({} removed)",
                    self.health_file.display()
                ),
                Err(e) => crate::log!("remove {}: {e}", self.health_file.display()),
            }
        }
    }
}

#[cfg(test)]
mod services_tests {
    use super::*;

    #[test]
    fn the_override_is_a_development_feature() {
        let d = tempfile::tempdir().unwrap();
        let (over, signed) = (d.path().join("over.toml"), d.path().join("signed.toml"));
        assert_eq!(choose_services(true, &over, &signed), signed);
        std::fs::write(&over, "x").unwrap();
        assert_eq!(choose_services(true, &over, &signed), over);
        assert_eq!(choose_services(false, &over, &signed), signed);
    }
}
