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
    let root = Path::new("/");
    let mut log = fleet::Log::stderr(fleet::Level::Info);
    let config = match fleet::Config::load(root) {
        Ok(Some(config)) => config,
        Ok(None) => {
            say(&format!(
                "agent: no fleet configuration ({} or {}); not connecting to a fleet service",
                paths::FLEET_CONF,
                paths::FLEET_CONF_OVERRIDE
            ));
            return Ok(());
        }
        Err(e) => {
            say(&format!("agent: fleet: {e}"));
            return Ok(());
        }
    };
    // A card burned with the claim certificate only gets its own identity
    // here, on its first boot with a network (retried until it does).
    let stop = AtomicBool::new(false);
    if let Err(e) = fleet::ensure_identity(root, &config, &Default::default(), &mut log, &stop) {
        say(&format!("agent: fleet: {e}"));
        return Ok(());
    }
    let fleet_ca = Some(config.identity.ca_bundle.clone());
    let device = AgentDevice::new(dev, store.clone(), fleet_ca, say);
    match fleet::Runner::new(config, root, device, log) {
        Ok(mut runner) => runner.run(&stop),
        Err(e) => say(&format!("agent: fleet: {e}")),
    }
    Ok(())
}
