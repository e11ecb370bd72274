//! `cargo xtask provision`: one device identity (key, certificate signed
//! by a device CA, the CA chain, the broker's CA) into a directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use factory::batch::provision_to_dir;
use factory::ca::DeviceCa;
use factory::ledger::{Ledger, MANIFEST};
use factory::Serial;

#[derive(clap::Args, Clone, Debug)]
pub struct Provision {
    /// The device's serial number: its certificate's CN and its thing name.
    #[arg(long)]
    pub serial: String,
    /// The device CA's directory (made by `cargo xtask keys ca new DIR`).
    #[arg(long)]
    pub ca: PathBuf,
    /// Where to write device.pem, device.key (0600) and ca.pem; must not
    /// hold an identity already.
    #[arg(long)]
    pub out: PathBuf,
    /// The broker's CA bundle, written as ca.pem (AWS: AmazonRootCA1.pem);
    /// default: server-ca.pem in the CA's directory, if there is one.
    #[arg(long)]
    pub server_ca: Option<PathBuf>,
}

/// `--server-ca`, else the CA directory's server-ca.pem, read.
pub fn server_ca(explicit: Option<&PathBuf>, ca: &DeviceCa) -> Result<Option<Vec<u8>>> {
    match explicit.cloned().or_else(|| ca.server_ca()) {
        None => Ok(None),
        Some(p) => std::fs::read(&p)
            .with_context(|| format!("reading the broker CA bundle {}", p.display()))
            .map(Some),
    }
}

impl Provision {
    pub fn run(self) -> Result<()> {
        let serial = Serial::parse(&self.serial)?;
        let ca = DeviceCa::open(&self.ca)?;
        let server = server_ca(self.server_ca.as_ref(), &ca)?;
        let mut ledger = Ledger::open(&ca.dir.join(MANIFEST))?;
        let id = provision_to_dir(&ca, &mut ledger, &serial, &self.out, server.as_deref())?;
        println!(
            "{serial}: identity in {} (certificate {}, recorded in {})",
            self.out.display(),
            id.fingerprint,
            ledger.path.display()
        );
        if server.is_none() {
            eprintln!(
                "note: no ca.pem written (no --server-ca, no {}/server-ca.pem): the device needs the broker's CA bundle too",
                ca.dir.display()
            );
        }
        Ok(())
    }
}
