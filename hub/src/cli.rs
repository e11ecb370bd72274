//! The hub's command line, shared by the `hub` binary and `cargo xtask
//! hub`: flags here, the work in [`crate::site`].

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crate::site::{Site, SiteError};

#[derive(clap::Args, Clone, Debug)]
pub struct SiteArgs {
    /// The hub's directory: development CA, broker configuration, bundles
    /// served, groups and state (default: target/hub).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    /// The name or address devices reach this host by; it goes into the
    /// server certificate and bundle URLs (QEMU's user network: 10.0.2.2).
    #[arg(long, global = true, default_value = "localhost")]
    pub host: String,
    /// The address mosquitto and the bundle server listen on.
    #[arg(long, global = true, default_value = "0.0.0.0")]
    pub bind: String,
    #[arg(long, global = true, default_value_t = 8883)]
    pub broker_port: u16,
    #[arg(long, global = true, default_value_t = 8443)]
    pub files_port: u16,
}

impl SiteArgs {
    /// The site, with `default_dir` when `--dir` was not given.
    pub fn site(&self, default_dir: PathBuf) -> Site {
        Site {
            dir: self.dir.clone().unwrap_or(default_dir),
            bind: self.bind.clone(),
            host: self.host.clone(),
            broker_port: self.broker_port,
            files_port: self.files_port,
        }
    }
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum HubCommand {
    /// Run mosquitto, the bundle server and the hub (the default).
    Serve,
    /// Make a device identity (certificate, key, CA bundle) for a thing.
    Thing { name: String },
    /// Make the claim certificate for fleet provisioning by claim (devices
    /// then obtain their own certificate from the hub on first boot).
    Claim,
    /// Define a group of things to send jobs to.
    Group { name: String, things: Vec<String> },
    /// List devices: shadow, online state, jobs.
    Devices,
    /// Set desired shadow settings: KEY=VALUE… (VALUE is JSON or a string).
    Desire {
        thing: String,
        settings: Vec<String>,
    },
    /// Create an update job from a built update.fw for things and/or groups.
    Job {
        #[arg(long)]
        thing: Vec<String>,
        #[arg(long)]
        group: Vec<String>,
        /// e.g. target/images/qemu-aarch64/update.fw
        #[arg(long)]
        bundle: PathBuf,
        /// The job id (default: update-<time>).
        #[arg(long)]
        id: Option<String>,
    },
}

fn print(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs one command; `serve` runs in the foreground until killed.
pub fn run(site: &Site, command: HubCommand) -> Result<(), SiteError> {
    match command {
        HubCommand::Serve => site.serve(&AtomicBool::new(false), &mut |l| eprintln!("{l}")),
        HubCommand::Thing { name } => {
            let dir = site.add_thing(&name)?;
            println!(
                "{name}: identity in {}; copy device.pem, device.key and ca.pem to the device's /data/keel/identity/",
                dir.display()
            );
            println!("fleet.toml for it:\n{}", site.fleet_toml());
            Ok(())
        }
        HubCommand::Claim => {
            let dir = site.claim()?;
            println!(
                "claim certificate in {}: copy claim.pem and claim.key to the device's {}/, and ca.pem to {}/ (or burn with `cargo xtask burn --claim {}`)",
                dir.display(),
                keel_contract::paths::CLAIM_DIR,
                keel_contract::paths::IDENTITY_DIR,
                dir.display()
            );
            println!("fleet.toml for it:\n{}", site.claim_fleet_toml(None));
            Ok(())
        }
        HubCommand::Group { name, things } => site.set_group(&name, &things),
        HubCommand::Devices => site.devices().map(|v| print(&v)),
        HubCommand::Desire { thing, settings } => site
            .desire(&thing, Site::desired_from_args(&settings)?)
            .map(|v| print(&v)),
        HubCommand::Job {
            thing,
            group,
            bundle,
            id,
        } => site
            .update_job(&thing, &group, &bundle, id.as_deref())
            .map(|v| print(&v)),
    }
}
