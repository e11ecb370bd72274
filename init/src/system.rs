//! Stage two: PID 1 in the read-only root filesystem. Mounts the API and
//! scratch filesystems and /data, sets the clock and hostname, announces
//! `keel: ready`, then hands over to the runtime: the supervision tree,
//! zombie reaping, the debug console and the control socket, forever.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_contract::{paths, Convenience, KernelCmdline, PartUuid, Release, Slot};

use crate::disk::{self, Roots};
use crate::runtime::{self, Runtime, Setup};
use crate::signals::SignalFd;
use crate::spawn::DEFAULT_PATH;
use crate::{identity, logger, modules, mount, network, sys};

const RELEASE: &str = paths::RELEASE;
const DATA: &str = paths::DATA;
/// The data partition is normally on the disk the root came from, so it is
/// there at once; the wait only covers a slow second device.
const DATA_WAIT: Duration = Duration::from_secs(5);
/// Set by the initramfs stage: boot time (ms) when the kernel started it.
pub const STARTED_ENV: &str = "KEEL_INIT_STARTED_MS";

/// The one line tests wait for.
pub fn ready_line(slot: Option<Slot>, release: &Release) -> String {
    let slot = slot.map_or_else(|| "unknown".to_string(), |s| s.to_string());
    let version = release.version().unwrap_or("unknown");
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
    // devtmpfs is there now: the log can use /dev/console and /dev/kmsg.
    logger::init_pid1();
    identity::clamp_clock(Path::new(RELEASE));
    identity::set_hostname();
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
    network::bring_up();

    let cmdline = fs::read_to_string("/proc/cmdline")
        .map(|t| KernelCmdline::parse(&t))
        .unwrap_or_else(|e| {
            crate::log!("read /proc/cmdline: {e}");
            KernelCmdline::default()
        });
    mount_data(&cmdline);

    let slot = cmdline.slot().inspect_err(|e| crate::log!("{e}")).ok();
    let release = match fs::read_to_string(RELEASE) {
        Ok(text) => Release::parse(&text),
        Err(e) => {
            crate::log!("read {RELEASE}: {e}");
            // Without it nothing says this is a development image.
            Release {
                conveniences: Some("none".into()),
                ..Release::default()
            }
        }
    };
    crate::log!("{}", ready_line(slot, &release));
    log_boot_time();

    let conveniences = release.conveniences().unwrap_or_else(|e| {
        crate::log!("{e}; running without development conveniences");
        Vec::new()
    });
    if !conveniences.contains(&Convenience::Console) {
        crate::log!("console: log only (release image)");
    }
    let setup = Setup {
        pid1: true,
        services: runtime::services_file(conveniences.contains(&Convenience::ServicesOverride)),
        run_dir: PathBuf::from(runtime::RUN_DIR),
        watchdog: cmdline.watchdog_allowed(),
        console_commands: conveniences.contains(&Convenience::Console),
        reboot_budget: crate::escalation::RebootBudget::new(
            Path::new(paths::FAILED_BOOTS),
            release.max_tries().unwrap_or(3),
        ),
    };
    Runtime::new(setup, signals).run();
    // run() only returns in host mode; never let PID 1 exit.
    sys::halt_forever()
}

/// One line for the boot-time bench: when the kernel started our /init
/// (from the initramfs stage) and when `ready` was printed.
fn log_boot_time() {
    let ready = sys::boottime().as_secs_f64();
    let started = std::env::var(STARTED_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| ms / 1000.0);
    // Single-threaded still: changing the environment is sound.
    std::env::remove_var(STARTED_ENV);
    match started {
        Some(s) => crate::log!(
            "boot: /init started at {s:.3}s, ready at {ready:.3}s uptime ({:.3}s in init)",
            ready - s
        ),
        None => crate::log!("boot: ready at {ready:.3}s uptime"),
    }
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
fn mount_data(cmdline: &KernelCmdline) {
    let want: PartUuid = match cmdline.data() {
        Ok(w) => w,
        Err(e) => {
            crate::log!("{e}; {DATA} not mounted");
            return;
        }
    };
    let found = match disk::wait_for(&Roots::system(), want, DATA_WAIT, Duration::from_millis(50)) {
        Ok(f) => f,
        Err(report) => {
            crate::log!(
                "data partition {} not found; {DATA} not mounted",
                want.spec()
            );
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
        Ok(()) => crate::log!("mounted {source} ({}) on {DATA}", want.spec()),
        Err(e) => crate::log!(
            "mount {source} ({}) as ext4 on {DATA} failed: {}",
            want.spec(),
            sys::describe(&e)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
