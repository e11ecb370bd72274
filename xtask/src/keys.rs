//! `cargo xtask keys`: ed25519 signing keys for update bundles, and the
//! development key used when no release key is given.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;

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
                let (private, public) = new_pair(&name)?;
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

fn with_ext(name: &Path, ext: &str) -> PathBuf {
    let mut s = name.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// Creates NAME.key and NAME.pub; never overwrites either.
pub fn new_pair(name: &Path) -> Result<(PathBuf, PathBuf)> {
    let (private, public) = (with_ext(name, ".key"), with_ext(name, ".pub"));
    for p in [&private, &public] {
        if p.exists() {
            bail!("{} already exists; refusing to overwrite a key (pick another NAME or remove it yourself)", p.display());
        }
    }
    if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = bundle::keys::generate()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .with_context(|| format!("creating {}", private.display()))?;
    f.write_all(bundle::keys::signing_key_text(&key).as_bytes())?;
    f.sync_all()?;
    std::fs::write(
        &public,
        bundle::keys::verifying_key_text(&key.verifying_key()),
    )
    .with_context(|| format!("writing {}", public.display()))?;
    Ok((private, public))
}

/// Where the development key lives: git-ignored, generated on first use.
pub fn dev_key_path() -> PathBuf {
    host::workspace_root().join(".keel/dev-key")
}

/// The signing key for a build: `--key`, else $KEEL_SIGNING_KEY, else the
/// development key (created once). The bool says whether it is the dev key.
pub fn signing_key(explicit: Option<&Path>) -> Result<(SigningKey, PathBuf, bool)> {
    let from_env = std::env::var_os("KEEL_SIGNING_KEY").map(PathBuf::from);
    if let Some(path) = explicit.map(Path::to_path_buf).or(from_env) {
        let key = bundle::keys::load_signing_key(&path)?;
        return Ok((key, path, false));
    }
    let base = dev_key_path();
    let private = with_ext(&base, ".key");
    if !private.exists() {
        new_pair(&base)?;
        eprintln!(
            "keel: created development signing key {}",
            private.display()
        );
    }
    Ok((bundle::keys::load_signing_key(&private)?, private, true))
}
