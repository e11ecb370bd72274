//! The agent's commands over three small seams — the card's boot state,
//! init, and the clock — so each is tested with fakes (below) and runs on
//! the device with the real thing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_contract::control::{self, Request, Shutdown};
use keel_contract::{paths, Slot};
use update::{BootFlow, BootState, Card};

use crate::cli::{Source, UpdateArgs};
use crate::device::Device;
use crate::policy::{self, TrialStep};
use crate::store::{Pending, Store};
use crate::AgentError;

/// The card's boot state as the running system sees it.
pub trait BootControl {
    fn read(&mut self) -> Result<BootState, AgentError>;
    fn write(&mut self, state: &BootState) -> Result<(), AgentError>;
}

/// Init, as far as the agent needs it.
pub trait Init {
    /// Whether init reports the supervision tree up and stable.
    fn healthy(&self) -> bool;
    /// An orderly reboot, with an argument for the kernel if given.
    fn reboot(&self, arg: Option<&str>) -> Result<(), AgentError>;
}

pub trait Clock {
    fn elapsed(&self) -> Duration;
    fn sleep(&self, d: Duration);
}

/// The real card: opened for each access, so the agent never holds the
/// disk open while another process may write it.
pub struct CardControl {
    pub path: PathBuf,
    pub flow: Box<dyn BootFlow>,
}

impl BootControl for CardControl {
    fn read(&mut self) -> Result<BootState, AgentError> {
        let mut card = Card::open(&self.path)?;
        Ok(self.flow.read(&mut card)?)
    }
    fn write(&mut self, state: &BootState) -> Result<(), AgentError> {
        let mut card = Card::open(&self.path)?;
        Ok(self.flow.write(&mut card, state)?)
    }
}

/// Init through its control socket.
pub struct RealInit;

impl Init for RealInit {
    fn healthy(&self) -> bool {
        Path::new(paths::HEALTHY).exists()
    }

    /// Asks init through its control socket; if init cannot be reached
    /// (or does not answer), SIGTERM to PID 1 still reboots, without the
    /// argument.
    fn reboot(&self, arg: Option<&str>) -> Result<(), AgentError> {
        let req = Request::Shutdown(Shutdown::Reboot(arg.map(str::to_string)));
        match control::request(
            Path::new(paths::CONTROL_SOCKET),
            &req,
            Duration::from_secs(10),
        ) {
            Ok((_, Ok(()))) => Ok(()),
            Ok((_, Err(e))) => Err(AgentError::Device(format!("init refused to reboot: {e}"))),
            Err(e) => {
                eprintln!("agent: init's control socket: {e}; signalling PID 1 instead");
                crate::sys::ask_init_to_reboot()
                    .map_err(AgentError::io("cannot signal init to reboot"))
            }
        }
    }
}

pub struct SystemClock(Instant);

impl SystemClock {
    pub fn start() -> SystemClock {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Where the agent's lines go: stdout on the device, a buffer in tests.
pub type Log<'a> = &'a mut dyn FnMut(&str);

/// Records an event on /data and says it.
fn record(store: &Store, log: Log, line: &str) -> Result<(), AgentError> {
    log(&format!("agent: {line}"));
    store.record(line)
}

/// `agent confirm`: the running slot passed its health check.
pub fn confirm(
    boot: &mut dyn BootControl,
    store: &Store,
    booted: Slot,
    version: &str,
    log: Log,
) -> Result<(), AgentError> {
    let state = boot.read()?;
    if !state.on_trial(booted) {
        log(&format!("agent: slot {booted} is already confirmed"));
        if policy::rolled_back(store.pending()?.as_ref(), booted).is_none() {
            store.clear_pending()?;
        }
        return Ok(());
    }
    boot.write(&state.confirm(booted))?;
    store.clear_pending()?;
    record(
        store,
        log,
        &format!("confirmed: slot {booted} version {version}"),
    )
}

/// `agent revert`: cancel a pending trial, or go back to the other slot.
pub fn revert(
    boot: &mut dyn BootControl,
    store: &Store,
    booted: Slot,
    log: Log,
) -> Result<(), AgentError> {
    let next = boot.read()?.revert(booted)?;
    boot.write(&next)?;
    store.clear_pending()?;
    record(
        store,
        log,
        &format!("reverted: slot {} boots next", next.active),
    )
}

/// Notes a rollback: an update was pending for a slot the device is not
/// running, so the bootloader gave up on it.
pub fn note_rollback(store: &Store, booted: Slot, log: Log) -> Result<(), AgentError> {
    let pending = store.pending()?;
    if let Some(p) = policy::rolled_back(pending.as_ref(), booted) {
        let line = format!(
            "rolled back: pending update ({}) never confirmed; running slot {booted}",
            p.to_line()
        );
        record(store, log, &line)?;
        store.clear_pending()?;
    }
    Ok(())
}

/// What the boot-time watch ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    Settled,
    Confirmed,
    GaveUp,
}

/// The boot-time daemon's first job: confirm a slot on trial once init
/// reports it healthy, or reboot when it never does within `timeout`.
#[allow(clippy::too_many_arguments)]
pub fn watch_trial(
    boot: &mut dyn BootControl,
    init: &dyn Init,
    clock: &dyn Clock,
    store: &Store,
    booted: Slot,
    version: &str,
    timeout: Duration,
    log: Log,
) -> Result<Watched, AgentError> {
    loop {
        let state = boot.read()?;
        match policy::trial_step(&state, booted, init.healthy(), clock.elapsed(), timeout) {
            TrialStep::Settled => return Ok(Watched::Settled),
            TrialStep::Confirm => {
                confirm(boot, store, booted, version, log)?;
                return Ok(Watched::Confirmed);
            }
            TrialStep::GiveUp => {
                record(
                    store,
                    log,
                    &format!(
                        "health check failed: slot {booted} not healthy after {} s on trial; rebooting",
                        timeout.as_secs()
                    ),
                )?;
                init.reboot(None)?;
                return Ok(Watched::GaveUp);
            }
            TrialStep::Wait => clock.sleep(Duration::from_secs(1)),
        }
    }
}

/// `agent update`: applies a bundle to the inactive slot and makes it boot
/// next on trial.
pub fn update(
    dev: &Device,
    boot: &mut dyn BootControl,
    init: &dyn Init,
    store: &Store,
    args: &UpdateArgs,
    log: Log,
) -> Result<(), AgentError> {
    // Fail on a bad URL or CA file before touching the card or downloading
    // anything.
    let source = match &args.source {
        Source::Url(url) => {
            let mut trust = net::Trust::system()?;
            for ca in &args.cas {
                trust.add_pem_file(ca)?;
            }
            net::Url::parse(url)?;
            BundleSource::Url { url, trust }
        }
        Source::Stdin => BundleSource::Stdin,
        Source::Path(p) => BundleSource::Path(p),
    };
    install(
        dev,
        boot,
        store,
        source,
        args.allow_downgrade,
        None,
        &mut |_| {},
        log,
    )?;
    if args.reboot {
        init.reboot(None)?;
    }
    Ok(())
}

/// Where a bundle comes from.
pub enum BundleSource<'a> {
    /// Downloaded over HTTPS, resumed with Range requests if interrupted.
    Url {
        url: &'a str,
        trust: net::Trust,
    },
    Stdin,
    /// A file, or a block device holding a bundle.
    Path(&'a Path),
}

/// Applies a bundle to the inactive slot, records it as pending and says
/// so. `expected_sha256` (of the whole file, from a job document) is checked
/// before the slot is marked complete; `progress` gets the percentage read
/// when the length is known.
#[allow(clippy::too_many_arguments)]
pub fn install(
    dev: &Device,
    boot: &mut dyn BootControl,
    store: &Store,
    source: BundleSource,
    allow_downgrade: bool,
    expected_sha256: Option<[u8; 32]>,
    progress: &mut dyn FnMut(u8),
    log: Log,
) -> Result<update::Applied, AgentError> {
    let booted = dev.booted()?;
    may_update(boot, booted)?;
    let trusted = dev.trusted_keys()?;
    let opts = update::ApplyOptions {
        board: dev.board()?,
        running_version: dev.version()?,
        booted,
        trusted: &trusted,
        allow_downgrade,
    };
    let flow = dev.flow()?;
    let card_path = dev.card_path()?;
    let mut card = Card::open(&card_path)?;
    let applied = match source {
        BundleSource::Url { url, trust } => {
            // A download is read once, each chunk checked before it is
            // written (docs/bundle.md): the device neither stores the
            // bundle nor fetches it twice from the start.
            let options = net::GetOptions::default();
            let mut say = |l: &str| log(l);
            let body = crate::download::Download::start(url, &trust, options, &mut say)?;
            let total = body.total();
            let mut last = u8::MAX;
            let source = crate::download::Checked::new(body, expected_sha256, |read| {
                if let Some(total) = total.filter(|t| *t > 0) {
                    let pct = (read.min(total) * 100 / total) as u8;
                    if pct != last {
                        last = pct;
                        progress(pct);
                    }
                }
            });
            update::apply(source, &mut card, flow.as_ref(), &opts)?
        }
        BundleSource::Stdin => {
            let source =
                crate::download::Checked::new(std::io::stdin().lock(), expected_sha256, |_| {});
            update::apply(source, &mut card, flow.as_ref(), &opts)?
        }
        BundleSource::Path(path) => apply_file(path, &mut card, flow.as_ref(), &opts)?,
    };
    store.set_pending(&Pending {
        slot: applied.slot,
        version: applied.manifest.version.clone(),
    })?;
    record(
        store,
        log,
        &format!(
            "update: slot {} now holds version {} ({} bytes written); it boots next on trial",
            applied.slot, applied.manifest.version, applied.bytes_written
        ),
    )?;
    Ok(applied)
}

/// An update goes to the other slot, and only from a confirmed slot: a
/// device on trial must confirm (or roll back) first.
pub fn may_update(boot: &mut dyn BootControl, booted: Slot) -> Result<(), AgentError> {
    boot.read()?.begin_write(booted, booted.other())?;
    Ok(())
}

/// A bundle in a file or on a block device, read once like a stream. A
/// block device is padded to its size: exactly the bundle is read, its
/// length taken from the signed header.
fn apply_file(
    path: &Path,
    card: &mut Card,
    flow: &dyn BootFlow,
    opts: &update::ApplyOptions,
) -> Result<update::Applied, AgentError> {
    let cannot = || AgentError::io(format!("cannot open {}", path.display()));
    let open = || std::fs::File::open(path).map_err(cannot());
    let meta = std::fs::metadata(path).map_err(cannot())?;
    let is_block = std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type());
    let len = if is_block {
        bundle::BundleReader::open(std::io::BufReader::new(open()?), opts.trusted)
            .map_err(update::ApplyError::from)?
            .len()
    } else {
        meta.len()
    };
    let source = std::io::BufReader::new(open()?).take(len);
    Ok(update::apply(source, card, flow, opts)?)
}

/// `agent status`: what runs, what boots next.
pub fn status(
    dev: &Device,
    boot: &mut dyn BootControl,
    store: &Store,
) -> Result<Vec<String>, AgentError> {
    let booted = dev.booted()?;
    let state = boot.read()?;
    let mut out = vec![
        format!("board={}", dev.board()?),
        format!("running_slot={booted}"),
        format!("version={}", dev.version()?),
        format!("build_id={}", dev.release.build_id()?),
        format!("active_slot={}", state.active),
        format!("trial_slot={}", state.trial.map_or("none", |s| s.as_str())),
        format!("on_trial={}", state.on_trial(booted)),
    ];
    if let Some(p) = store.pending()? {
        out.push(format!("pending={}", p.to_line()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// A card's boot state in memory, counting writes.
    struct FakeCard {
        state: BootState,
        writes: usize,
    }

    impl BootControl for FakeCard {
        fn read(&mut self) -> Result<BootState, AgentError> {
            Ok(self.state.clone())
        }
        fn write(&mut self, state: &BootState) -> Result<(), AgentError> {
            self.state = state.clone();
            self.writes += 1;
            Ok(())
        }
    }

    struct FakeInit {
        healthy_after: Duration,
        clock: std::rc::Rc<FakeClock>,
        reboots: RefCell<Vec<Option<String>>>,
    }

    impl Init for FakeInit {
        fn healthy(&self) -> bool {
            self.clock.elapsed() >= self.healthy_after
        }
        fn reboot(&self, arg: Option<&str>) -> Result<(), AgentError> {
            self.reboots.borrow_mut().push(arg.map(str::to_string));
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeClock(Cell<Duration>);

    impl Clock for FakeClock {
        fn elapsed(&self) -> Duration {
            self.0.get()
        }
        fn sleep(&self, d: Duration) {
            self.0.set(self.0.get() + d);
        }
    }

    fn complete_both() -> [update::state::SlotMark; 2] {
        [
            update::state::SlotMark::complete("0.1.0@t"),
            update::state::SlotMark::complete("0.2.0@t"),
        ]
    }

    fn on_trial_of_b() -> FakeCard {
        FakeCard {
            state: BootState {
                active: Slot::A,
                trial: Some(Slot::B),
                tries: 1,
                slots: complete_both(),
            },
            writes: 0,
        }
    }

    fn init(healthy_after: u64, clock: &std::rc::Rc<FakeClock>) -> FakeInit {
        FakeInit {
            healthy_after: Duration::from_secs(healthy_after),
            clock: clock.clone(),
            reboots: RefCell::new(Vec::new()),
        }
    }

    fn run_watch(
        card: &mut FakeCard,
        init: &FakeInit,
        clock: &FakeClock,
        store: &Store,
    ) -> (Watched, Vec<String>) {
        let mut lines = Vec::new();
        let w = watch_trial(
            card,
            init,
            clock,
            store,
            Slot::B,
            "0.2.0",
            Duration::from_secs(120),
            &mut |l: &str| lines.push(l.to_string()),
        )
        .unwrap();
        (w, lines)
    }

    #[test]
    fn confirms_when_healthy() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::at(d.path());
        store
            .set_pending(&Pending {
                slot: Slot::B,
                version: "0.2.0".into(),
            })
            .unwrap();
        let clock = std::rc::Rc::new(FakeClock::default());
        let init = init(30, &clock);
        let mut card = on_trial_of_b();
        let (w, lines) = run_watch(&mut card, &init, &clock, &store);
        assert_eq!(w, Watched::Confirmed);
        assert_eq!(card.state.active, Slot::B);
        assert_eq!(card.state.trial, None);
        assert_eq!(clock.elapsed(), Duration::from_secs(30));
        assert_eq!(lines, ["agent: confirmed: slot b version 0.2.0"]);
        assert_eq!(store.pending().unwrap(), None);
        assert!(init.reboots.borrow().is_empty());
    }

    #[test]
    fn reboots_when_never_healthy() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::at(d.path());
        let clock = std::rc::Rc::new(FakeClock::default());
        let init = init(u64::MAX, &clock);
        let mut card = on_trial_of_b();
        let (w, lines) = run_watch(&mut card, &init, &clock, &store);
        assert_eq!(w, Watched::GaveUp);
        assert_eq!(
            card.writes, 0,
            "giving up writes nothing: the bootloader counts"
        );
        assert_eq!(*init.reboots.borrow(), [None]);
        assert!(lines[0].contains("health check failed"), "{lines:?}");
        assert!(store.events().unwrap().contains("health check failed"));
    }

    #[test]
    fn a_settled_slot_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::at(d.path());
        let clock = std::rc::Rc::new(FakeClock::default());
        let init = init(0, &clock);
        let mut card = FakeCard {
            state: BootState {
                active: Slot::B,
                trial: None,
                tries: 0,
                slots: complete_both(),
            },
            writes: 0,
        };
        let (w, _) = run_watch(&mut card, &init, &clock, &store);
        assert_eq!((w, card.writes), (Watched::Settled, 0));
    }

    #[test]
    fn notes_a_rollback_once() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::at(d.path());
        store
            .set_pending(&Pending {
                slot: Slot::A,
                version: "0.3.0".into(),
            })
            .unwrap();
        let mut lines = Vec::new();
        note_rollback(&store, Slot::B, &mut |l: &str| lines.push(l.to_string())).unwrap();
        note_rollback(&store, Slot::B, &mut |l: &str| lines.push(l.to_string())).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("agent: rolled back"), "{lines:?}");
        assert_eq!(store.pending().unwrap(), None);
    }

    #[test]
    fn confirm_does_not_cancel_a_pending_trial() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::at(d.path());
        let mut card = on_trial_of_b();
        let mut lines = Vec::new();
        confirm(&mut card, &store, Slot::A, "0.1.0", &mut |l: &str| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(card.writes, 0);
        assert_eq!(card.state.trial, Some(Slot::B));
        assert!(lines[0].contains("already confirmed"));
    }

    #[test]
    fn refuses_an_update_while_on_trial() {
        let mut card = on_trial_of_b();
        let e = may_update(&mut card, Slot::B).unwrap_err();
        assert!(e.to_string().contains("on trial"), "{e}");
        let mut settled = FakeCard {
            state: BootState::default(),
            writes: 0,
        };
        may_update(&mut settled, Slot::A).unwrap();
        assert_eq!(settled.writes, 0, "the check writes nothing");
    }
}
