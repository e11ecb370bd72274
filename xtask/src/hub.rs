//! `cargo xtask hub`: the fleet's cloud side on this machine (docs/hub.md).
//! Flags only; everything happens in `hub::site`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use hub::site::Site;

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Hub {
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
    #[command(subcommand)]
    pub command: Option<HubCommand>,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum HubCommand {
    /// Run mosquitto, the bundle server and the hub (the default).
    Serve,
    /// Make a device identity (certificate, key, CA bundle) for a thing.
    Thing { name: String },
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

impl Hub {
    pub fn run(self) -> Result<()> {
        let site = Site {
            dir: self
                .dir
                .unwrap_or_else(|| host::cargo_target_dir().join("hub")),
            bind: self.bind,
            host: self.host,
            broker_port: self.broker_port,
            files_port: self.files_port,
        };
        let print = |v: serde_json::Value| {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
        };
        match self.command.unwrap_or(HubCommand::Serve) {
            HubCommand::Serve => {
                host::ensure_tools(host::HUB_TOOLS)?;
                site.serve(&AtomicBool::new(false), &mut |l| eprintln!("{l}"))
                    .context("running the hub")?;
            }
            HubCommand::Thing { name } => {
                let dir = site.add_thing(&name)?;
                println!(
                    "{name}: identity in {}; copy device.pem, device.key and ca.pem to the device's /data/keel/identity/",
                    dir.display()
                );
                println!("fleet.toml for it:\n{}", site.fleet_toml());
            }
            HubCommand::Group { name, things } => site.set_group(&name, &things)?,
            HubCommand::Devices => print(site.devices()?),
            HubCommand::Desire { thing, settings } => {
                print(site.desire(&thing, Site::desired_from_args(&settings)?)?)
            }
            HubCommand::Job {
                thing,
                group,
                bundle,
                id,
            } => print(site.update_job(&thing, &group, &bundle, id.as_deref())?),
        }
        Ok(())
    }
}
