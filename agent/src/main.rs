//! `agent`: parses the command line and runs the agent library's command;
//! nothing else happens here.

use std::process::ExitCode;

use agent::cli::{self, Command};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use agent::device::Device;
use agent::fleet_device::AgentDevice;
use agent::ops::{self, CardControl, RealInit, SystemClock};
use agent::policy::AgentConf;
use agent::store::Store;
use agent::AgentError;
use keel_contract::paths;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = cli::parse(&args).and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(line: &str) {
    println!("{line}");
}

fn card(dev: &Device) -> Result<CardControl, AgentError> {
    Ok(CardControl {
        path: dev.card_path()?,
        flow: dev.flow()?,
    })
}

fn run(cmd: Command) -> Result<(), AgentError> {
    let store = Store::device();
    match cmd {
        Command::Help => say(cli::USAGE),
        Command::Version => say(&format!("agent {}", env!("CARGO_PKG_VERSION"))),
        Command::Status => {
            let dev = Device::load()?;
            for line in ops::status(&dev, &mut card(&dev)?, &store)? {
                say(&line);
            }
        }
        Command::Update(args) => {
            let dev = Device::load()?;
            let result = card(&dev).and_then(|mut boot| {
                ops::update(&dev, &mut boot, &RealInit, &store, &args, &mut say)
            });
            // A failed update is worth reporting too; only on a device,
            // where /data/keel exists (never create it elsewhere).
            if let Err(e) = &result {
                if store.exists() {
                    let _ = store.record(&format!("update failed: {e}"));
                }
            }
            result?;
        }
        Command::Confirm => {
            let dev = Device::load()?;
            ops::confirm(
                &mut card(&dev)?,
                &store,
                dev.booted()?,
                dev.version()?,
                &mut say,
            )?;
        }
        Command::Revert => {
            let dev = Device::load()?;
            ops::revert(&mut card(&dev)?, &store, dev.booted()?, &mut say)?;
        }
        Command::Run => daemon(&store),
    }
    Ok(())
}

/// `agent run`, the boot-time daemon. It never exits: under init a daemon
/// that exits at every start would end in the root supervisor giving up and
/// the device rebooting. What it cannot understand it reports, and then it
/// stays up without touching the boot state.
fn daemon(store: &Store) -> ! {
    if let Err(e) = watch(store) {
        say(&format!(
            "agent: {e}; not touching the boot state (the device stays as it is; see `agent status`)"
        ));
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn watch(store: &Store) -> Result<(), AgentError> {
    let dev = Device::load()?;
    let booted = dev.booted()?;
    ops::note_rollback(store, booted, &mut say)?;
    let text = std::fs::read_to_string(paths::AGENT_CONF).unwrap_or_default();
    let (conf, problems) = AgentConf::parse(&text);
    for p in problems {
        say(&format!("agent: {}: {p}", paths::AGENT_CONF));
    }
    let watched = ops::watch_trial(
        &mut card(&dev)?,
        &RealInit,
        &SystemClock::start(),
        store,
        booted,
        dev.version()?,
        conf.trial_timeout,
        &mut say,
    )?;
    if watched == ops::Watched::GaveUp {
        return Ok(());
    }
    // Confirmed (or settled): now the fleet service, if there is one. A
    // trial slot reports only once it is confirmed, so a job's SUCCEEDED
    // means a healthy new version.
    let fleet_ca = fleet::Config::load(Path::new("/"))
        .ok()
        .flatten()
        .map(|c| c.identity.ca_bundle);
    let device = AgentDevice::new(dev, store.clone(), fleet_ca, say);
    let log = fleet::Log::stderr(fleet::Level::Info);
    match fleet::Runner::start(Path::new("/"), device, log) {
        Ok(Some(mut runner)) => runner.run(&AtomicBool::new(false)),
        Ok(None) => {}
        Err(e) => say(&format!("agent: fleet: {e}")),
    }
    Ok(())
}
