//! `cargo xtask hub`: the fleet's cloud side on this machine (docs/hub.md).
//! The flags and commands are the hub's own (`hub::cli`); this only makes
//! sure mosquitto is installed and puts the hub under the target directory.

use anyhow::{Context, Result};
use hub::cli::{HubCommand, SiteArgs};

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Hub {
    #[command(flatten)]
    pub site: SiteArgs,
    #[command(subcommand)]
    pub command: Option<HubCommand>,
}

impl Hub {
    pub fn run(self) -> Result<()> {
        let command = self.command.unwrap_or(HubCommand::Serve);
        if matches!(command, HubCommand::Serve) {
            host::ensure_tools(host::HUB_TOOLS)?;
        }
        let site = self.site.site(host::cargo_target_dir().join("hub"));
        hub::cli::run(&site, command).context("hub")
    }
}
