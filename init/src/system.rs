//! Stage two: PID 1 in the read-only root filesystem. Mounts the API and
//! scratch filesystems and /data, announces `keel: ready`, then reaps
//! zombies and serves the debug console forever.

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use crate::cmdline::{Cmdline, Slot};
use crate::console::{self, Command, LineError, LineReader};
use crate::disk::{self, PartUuid, Roots};
use crate::reaper::Reaper;
use crate::shutdown::{self, Kind};
use crate::signals::{self, Action, SignalFd};
use crate::{commands, modules, mount, sys};

const RELEASE: &str = "/etc/keel/release";
const DATA: &str = "/data";
/// The data partition is normally on the disk the root came from, so it is
/// there at once; the wait only covers a slow second device.
const DATA_WAIT: Duration = Duration::from_secs(5);
/// After a console read error or EOF, wait this long before reading again
/// so a hung-up line cannot make PID 1 spin.
const CONSOLE_RETRY: Duration = Duration::from_secs(1);
/// Without a signalfd (never seen, but not fatal) children are reaped on
/// this tick instead.
const REAP_TICK: Duration = Duration::from_secs(1);
/// The kernel sets no PATH for init; programs started with `run` get this.
const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// What /etc/keel/release says about this image.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: Option<String>,
    pub board: Option<String>,
    pub build_id: Option<String>,
}

impl Release {
    /// `key=value` lines; blank lines and `#` comments are skipped and
    /// os-release style double quotes are removed.
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_string();
            match key.trim() {
                "version" => out.version = Some(value),
                "board" => out.board = Some(value),
                "build_id" => out.build_id = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// The one line tests wait for.
pub fn ready_line(slot: Option<Slot>, release: &Release) -> String {
    let slot = slot.map_or_else(|| "unknown".to_string(), |s| s.to_string());
    let version = release.version.as_deref().unwrap_or("unknown");
    format!("ready slot={slot} version={version}")
}

pub fn run() -> ! {
    // Blocked before anything can be spawned, so no SIGCHLD is missed.
    let signals = match SignalFd::open() {
        Ok(s) => Some(s),
        Err(e) => {
            crate::log!("signalfd: {e}; reaping on a timer and ignoring shutdown signals");
            None
        }
    };
    sys::ensure_std_fds();
    for m in mount::API.iter().chain(mount::SCRATCH.iter()) {
        if let Err(e) = m.ensure() {
            crate::log!("mount {} on {}: {}", m.fstype, m.target, sys::describe(&e));
        }
    }
    sys::ensure_std_fds();
    if std::env::var_os("PATH").is_none() {
        // Single-threaded here, so changing the environment is sound.
        std::env::set_var("PATH", DEFAULT_PATH);
    }
    // Make ctrl-alt-del send us SIGINT (-> orderly reboot) instead of an
    // immediate hard reset.
    if let Err(e) = sys::reboot(libc::RB_DISABLE_CAD) {
        crate::log!("disable ctrl-alt-del: {e}");
    }
    load_modules();

    let cmdline = fs::read_to_string("/proc/cmdline")
        .map(|t| Cmdline::parse(&t))
        .unwrap_or_else(|e| {
            crate::log!("read /proc/cmdline: {e}");
            Cmdline::default()
        });
    mount_data(cmdline.data.as_deref());

    let slot = cmdline.slot.as_deref().and_then(Slot::parse);
    if slot.is_none() {
        crate::log!("no valid keel.slot=a|b on the kernel command line");
    }
    let release = match fs::read_to_string(RELEASE) {
        Ok(text) => Release::parse(&text),
        Err(e) => {
            crate::log!("read {RELEASE}: {e}");
            Release::default()
        }
    };
    crate::log!("{}", ready_line(slot, &release));

    Pid1 {
        signals,
        reaper: Reaper::default(),
    }
    .serve()
}

/// Loads the root filesystem's extra modules, if it lists any.
fn load_modules() {
    let release = match sys::kernel_release() {
        Ok(r) => r,
        Err(e) => {
            crate::log!("uname: {e}");
            return;
        }
    };
    let dir = Path::new("/lib/modules").join(release);
    let list = dir.join("modules.load");
    match modules::load_listed(&dir, &list) {
        Ok(failed) => {
            for (path, e) in failed {
                crate::log!("load module {}: {}", path.display(), sys::describe(&e));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => crate::log!("read {}: {e}", list.display()),
    }
}

/// Mounts the data partition; every failure is logged and boot goes on so
/// the console still comes up to investigate.
fn mount_data(spec: Option<&str>) {
    let Some(spec) = spec else {
        crate::log!("no keel.data= on the kernel command line; {DATA} not mounted");
        return;
    };
    let want = match PartUuid::parse(spec) {
        Ok(w) => w,
        Err(e) => {
            crate::log!("keel.data: {e}; {DATA} not mounted");
            return;
        }
    };
    let found = match disk::wait_for(&Roots::system(), want, DATA_WAIT, Duration::from_millis(50)) {
        Ok(f) => f,
        Err(report) => {
            crate::log!("data partition {want} not found; {DATA} not mounted");
            for line in report.to_string().lines() {
                crate::log!("{line}");
            }
            return;
        }
    };
    let source = found.node.to_string_lossy();
    // nodev/nosuid: device nodes or setuid binaries on the writable
    // partition would survive updates of the verified root.
    let flags = libc::MS_NOATIME | libc::MS_NODEV | libc::MS_NOSUID;
    match sys::mount(Some(&source), Path::new(DATA), Some("ext4"), flags, None) {
        Ok(()) => crate::log!("mounted {source} ({want}) on {DATA}"),
        Err(e) => crate::log!(
            "mount {source} ({want}) as ext4 on {DATA} failed: {}",
            sys::describe(&e)
        ),
    }
}

/// The running system's event loop state.
struct Pid1 {
    signals: Option<SignalFd>,
    reaper: Reaper,
}

impl Pid1 {
    fn serve(mut self) -> ! {
        let mut reader = LineReader::default();
        let mut buf = [0u8; 1024];
        let mut console_paused_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if console_paused_until.is_some_and(|t| now >= t) {
                console_paused_until = None;
            }
            let sig_fd = self.signals.as_ref().map_or(-1, |s| s.as_raw_fd());
            // poll ignores negative fds: that is how the console is paused.
            let console_fd = if console_paused_until.is_some() {
                -1
            } else {
                0
            };
            let mut fds = [
                libc::pollfd {
                    fd: sig_fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: console_fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let mut timeout = console_paused_until.map(|t| t.saturating_duration_since(now));
            if self.signals.is_none() {
                timeout = Some(timeout.map_or(REAP_TICK, |t| t.min(REAP_TICK)));
            }
            if let Err(e) = sys::poll(&mut fds, timeout) {
                crate::log!("poll: {e}");
                std::thread::sleep(CONSOLE_RETRY);
                continue;
            }
            self.handle_signals();
            if fds[1].revents != 0 {
                match sys::read(0, &mut buf) {
                    Ok(0) | Err(_) => {
                        // EOF (ctrl-D, or stdin is not a terminal) or a
                        // hung-up line: try again later.
                        console_paused_until = Some(Instant::now() + CONSOLE_RETRY);
                    }
                    Ok(n) => {
                        for line in reader.feed(&buf[..n]) {
                            self.execute_line(line);
                        }
                    }
                }
            }
        }
    }

    /// Reaps and acts on every pending signal (or, without a signalfd,
    /// just reaps).
    fn handle_signals(&mut self) {
        let Some(signals) = &self.signals else {
            self.reaper.reap_all();
            return;
        };
        for sig in signals.drain() {
            match signals::action(sig) {
                Some(Action::Reap) => {
                    self.reaper.reap_all();
                }
                Some(Action::Shutdown(kind)) => {
                    shutdown::prepare(&kind, &mut self.reaper);
                    let e = shutdown::finish(&kind);
                    crate::log!("{kind} failed: {e}");
                }
                None => {}
            }
        }
    }

    fn execute_line(&mut self, line: Result<Vec<u8>, LineError>) {
        let result = match line {
            Err(LineError::TooLong) => Err(format!(
                "line longer than {} bytes ignored",
                console::MAX_LINE
            )),
            Ok(bytes) => match std::str::from_utf8(&bytes) {
                Err(_) => Err("command line is not valid UTF-8".to_string()),
                Ok(text) => match console::parse(text) {
                    Ok(None) => return,
                    Ok(Some(cmd)) => self.execute(cmd),
                    Err(e) => Err(e.to_string()),
                },
            },
        };
        match result {
            Ok(()) => crate::log!("ok"),
            Err(msg) => crate::log!("error: {msg}"),
        }
    }

    fn execute(&mut self, cmd: Command) -> Result<(), String> {
        let out = &mut io::stdout().lock();
        let res = match cmd {
            Command::Cat(path) => commands::cat(Path::new(&path), out),
            Command::Write { path, text } => commands::write(Path::new(&path), &text),
            Command::Ls(path) => commands::ls(Path::new(&path), out),
            Command::Mounts => commands::mounts(out),
            Command::Run { program, args } => return self.run_program(&program, &args),
            Command::Shutdown(kind) => return self.shutdown(&kind),
        };
        let _ = out.flush();
        res.map_err(|e| e.to_string())
    }

    /// Spawns a program and waits for it through the reaper, still acting
    /// on shutdown signals meanwhile. Its stdin is /dev/null: the console
    /// is ours, and a program that reads it would swallow commands.
    fn run_program(&mut self, program: &str, args: &[String]) -> Result<(), String> {
        let mut cmd = Process::new(program);
        cmd.args(args).stdin(Stdio::null());
        let child = signals::reset_in_child(&mut cmd)
            .spawn()
            .map_err(|e| format!("run {program}: {}", sys::describe(&e)))?;
        let pid = child.id() as libc::pid_t;
        // Dropping a Child neither waits for nor kills it; the reaper owns
        // its exit status from here on.
        drop(child);
        self.reaper.watch(pid);
        loop {
            // Also catches a child that exited before we started watching.
            self.reaper.reap_all();
            if let Some(status) = self.reaper.take(pid) {
                crate::log!("{status}");
                return Ok(());
            }
            let sig_fd = self.signals.as_ref().map_or(-1, |s| s.as_raw_fd());
            let mut fds = [libc::pollfd {
                fd: sig_fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            let tick = self.signals.is_none().then_some(REAP_TICK);
            let _ = sys::poll(&mut fds, tick);
            self.handle_signals();
        }
    }

    /// The console's reboot/poweroff/halt: `keel: ok` comes after the
    /// filesystems are safe and right before reboot(2).
    fn shutdown(&mut self, kind: &Kind) -> Result<(), String> {
        shutdown::prepare(kind, &mut self.reaper);
        crate::log!("ok");
        let e = shutdown::finish(kind);
        Err(format!("{kind}: {}", sys::describe(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release() {
        let r = Release::parse(
            "# keel\nversion=1.2.3\nboard=\"qemu-aarch64\"\n\nbuild_id = abc123 \nnonsense\n",
        );
        assert_eq!(r.version.as_deref(), Some("1.2.3"));
        assert_eq!(r.board.as_deref(), Some("qemu-aarch64"));
        assert_eq!(r.build_id.as_deref(), Some("abc123"));
        assert_eq!(Release::parse(""), Release::default());
    }

    #[test]
    fn ready_line_is_exact() {
        let r = Release::parse("version=0.1.0\n");
        assert_eq!(ready_line(Some(Slot::A), &r), "ready slot=a version=0.1.0");
        assert_eq!(
            ready_line(None, &Release::default()),
            "ready slot=unknown version=unknown"
        );
    }
}
