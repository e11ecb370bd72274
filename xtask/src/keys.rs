//! `cargo xtask keys`: ed25519 signing keys for update bundles, and where
//! the development key lives.

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
