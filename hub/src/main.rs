//! `hub`: the hub's command line (`hub::cli`) as a program of its own;
//! `cargo xtask hub` runs the same commands.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use hub::cli::{HubCommand, SiteArgs};

#[derive(Parser)]
#[command(
    name = "hub",
    about = "The cloud side of a Keel fleet, locally (AWS IoT shadow and jobs on mosquitto)"
)]
struct Cli {
    #[command(flatten)]
    site: SiteArgs,
    #[command(subcommand)]
    command: Option<HubCommand>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let site = cli.site.site("target/hub".into());
    match hub::cli::run(&site, cli.command.unwrap_or(HubCommand::Serve)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e}");
            ExitCode::FAILURE
        }
    }
}
