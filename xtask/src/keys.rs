//! `cargo xtask keys`: ed25519 signing keys for update bundles, where the
//! development key lives, and device CAs (`keys ca`) for device
//! certificates.

use std::path::{Path, PathBuf};

use anyhow::Result;
use image_build::keys::{self, Signer};

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Keys {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum KeysCommand {
    /// Write NAME.key (private, mode 0600) and NAME.pub; refuses to overwrite.
    New {
        /// Path prefix of the key pair, e.g. keys/release-2026 (writes .key and .pub).
        name: PathBuf,
    },
    /// Device CAs: the factory's CA that signs each device's certificate.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(clap::Subcommand, Clone, Debug)]
pub enum CaCommand {
    /// Make a device CA in directory NAME (ca.pem, and ca.key mode 0600);
    /// refuses to overwrite anything or to follow a symlink.
    New {
        /// The CA's directory, e.g. keys/ca/acme-2026 (its last part is the CA's name).
        name: PathBuf,
    },
}

impl Keys {
    pub fn run(self) -> Result<()> {
        match self.command {
            KeysCommand::New { name } => {
                let (private, public) = keys::new_pair(&name)?;
                println!(
                    "{}  (private: keep it out of git; mode 0600)",
                    private.display()
                );
                println!(
                    "{}  (public: list it in the board config's [update] trusted_keys)",
                    public.display()
                );
                Ok(())
            }
            KeysCommand::Ca {
                command: CaCommand::New { name },
            } => {
                let ca = factory::ca::DeviceCa::create(&name)?;
                println!(
                    "{}  (device CA {:?}: ca.pem public, ca.key private, mode 0600; back it up, keep it out of git)",
                    ca.dir.display(),
                    ca.name
                );
                println!(
                    "next: cargo xtask aws jitp-template --ca {}   (register it with AWS IoT)",
                    ca.dir.display()
                );
                Ok(())
            }
        }
    }
}

/// The development key pair: git-ignored, generated on first use.
pub fn dev_key_name() -> PathBuf {
    host::workspace_root().join(".keel/dev-key")
}

/// The key a build signs with: `--key`, else `$KEEL_SIGNING_KEY`, else
/// the development key.
pub fn signer(explicit: Option<&Path>) -> Result<Signer> {
    signer_for(explicit, true)
}

/// Like [`signer`]; without `allow_development`, no key given is an error
/// instead of the development key.
pub fn signer_for(explicit: Option<&Path>, allow_development: bool) -> Result<Signer> {
    let from_env = std::env::var_os("KEEL_SIGNING_KEY").map(PathBuf::from);
    let explicit = explicit.or(from_env.as_deref());
    if explicit.is_none() && !allow_development {
        anyhow::bail!(
            "a release image needs a release key: pass --key PATH or set KEEL_SIGNING_KEY (make one with `cargo xtask keys new keys/release`)"
        );
    }
    let s = keys::signer(explicit, &dev_key_name())?;
    if s.created {
        eprintln!("keel: created development signing key {}", s.path.display());
    }
    Ok(s)
}
