//! `hub`: flags and dispatch over the hub library (`hub::site`).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::{Args, Parser, Subcommand};
use hub::site::{Site, SiteError};

#[derive(Parser)]
#[command(
    name = "hub",
    about = "The cloud side of a Keel fleet, locally (AWS IoT shadow and jobs on mosquitto)"
)]
struct Cli {
    #[command(flatten)]
    site: SiteArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct SiteArgs {
    /// The hub's directory (CA, broker configuration, bundles, state).
    #[arg(long, global = true, default_value = "target/hub")]
    pub dir: PathBuf,
    /// The name or address devices reach this host by (10.0.2.2 from QEMU).
    #[arg(long, global = true, default_value = "localhost")]
    pub host: String,
    /// The address the broker and file server listen on.
    #[arg(long, global = true, default_value = "0.0.0.0")]
    pub bind: String,
    #[arg(long, global = true, default_value_t = 8883)]
    pub broker_port: u16,
    #[arg(long, global = true, default_value_t = 8443)]
    pub files_port: u16,
}

impl SiteArgs {
    pub fn site(&self) -> Site {
        Site {
            dir: self.dir.clone(),
            bind: self.bind.clone(),
            host: self.host.clone(),
            broker_port: self.broker_port,
            files_port: self.files_port,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run mosquitto, the bundle file server and the hub in the foreground.
    Serve,
    /// Make a device identity (certificate, key, CA) for a thing.
    Thing { name: String },
    /// Define a group of things for jobs.
    Group { name: String, things: Vec<String> },
    /// List devices with their shadow, online state and jobs.
    Devices,
    /// Set desired shadow state: KEY=VALUE (VALUE is JSON, or a string).
    Desire {
        thing: String,
        settings: Vec<String>,
    },
    /// Create an update job from a built update.fw.
    Job {
        #[arg(long)]
        thing: Vec<String>,
        #[arg(long)]
        group: Vec<String>,
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        id: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn run(cli: Cli) -> Result<(), SiteError> {
    let site = cli.site.site();
    match cli.command {
        Command::Serve => site.serve(&AtomicBool::new(false), &mut |l| eprintln!("{l}")),
        Command::Thing { name } => {
            let dir = site.add_thing(&name)?;
            println!(
                "identity for {name} in {}; copy it to the device's /data/keel/identity/",
                dir.display()
            );
            println!(
                "and put this in /etc/keel/fleet.toml (or /data/keel/fleet.toml):\n{}",
                site.fleet_toml()
            );
            Ok(())
        }
        Command::Group { name, things } => site.set_group(&name, &things),
        Command::Devices => site.devices().map(|v| print(&v)),
        Command::Desire { thing, settings } => site
            .desire(&thing, Site::desired_from_args(&settings)?)
            .map(|v| print(&v)),
        Command::Job {
            thing,
            group,
            bundle,
            id,
        } => site
            .update_job(&thing, &group, &bundle, id.as_deref())
            .map(|v| print(&v)),
    }
}
