//! `cargo xtask apply`: applies an update bundle to a card image with the
//! device's own applier (image_build::card::apply).

use std::path::PathBuf;

use anyhow::{Context, Result};
use image_build::card::{self, BundleSource};

#[derive(clap::Args, Clone, Debug)]
pub struct Apply {
    /// The card image to update (e.g. target/images/qemu-aarch64/sdcard.img).
    #[arg(long)]
    pub image: PathBuf,
    /// The update bundle (update.fw), or `-` to stream it from stdin in one
    /// pass (as `agent update -` does: a bundle rejected halfway leaves the
    /// inactive slot partly written, never bootable).
    pub bundle: PathBuf,
    /// Accept a bundle older than the version on the card.
    #[arg(long)]
    pub allow_downgrade: bool,
}

impl Apply {
    pub fn run(self) -> Result<()> {
        let applied = if self.bundle.as_os_str() == "-" {
            let mut stdin = std::io::stdin().lock();
            card::apply(
                &self.image,
                BundleSource::Stream(&mut stdin),
                self.allow_downgrade,
            )
            .context("applying the bundle from stdin")?
        } else {
            card::apply(
                &self.image,
                BundleSource::File(&self.bundle),
                self.allow_downgrade,
            )
            .with_context(|| format!("applying {}", self.bundle.display()))?
        };
        println!(
            "{}: slot {} now holds version {} and boots next on trial ({:.1} MiB written)",
            self.image.display(),
            applied.slot,
            applied.manifest.version,
            applied.bytes_written as f64 / 1048576.0
        );
        Ok(())
    }
}
