//! `cargo xtask apply`: applies an update bundle to a card image from the
//! host with the device's own applier: the inactive slot is written and the
//! boot state switched exactly as on the device.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use update::{BootFlow, Card, Slot};

#[derive(clap::Args, Clone, Debug)]
pub struct Apply {
    /// The card image to update (e.g. target/images/qemu-aarch64/sdcard.img).
    #[arg(long)]
    pub image: PathBuf,
    /// The update bundle (update.fw).
    pub bundle: PathBuf,
    /// Accept a bundle older than the version on the card.
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// The release file of a slot's root filesystem, if the slot holds one.
pub fn slot_release(card: &mut Card, slot: Slot) -> Option<String> {
    let (off, len) = card.span(slot.rootfs_partition()).ok()?;
    let f = std::fs::File::open(card.path()).ok()?;
    let part = image::slice::PartitionSlice::new(f, off, len).ok()?;
    let tree = image::squashfs::read(part).ok()?;
    match &tree.get("etc/keel/release")?.kind {
        image::fstree::NodeKind::File(d) => Some(String::from_utf8_lossy(d).into_owned()),
        _ => None,
    }
}

/// The trusted keys baked into a slot's root filesystem.
fn slot_keys(card: &Card, slot: Slot) -> Result<Vec<ed25519_dalek::VerifyingKey>> {
    let (off, len) = card.span(slot.rootfs_partition())?;
    let part = image::slice::PartitionSlice::new(std::fs::File::open(card.path())?, off, len)?;
    let tree = image::squashfs::read(part)?;
    let mut keys = Vec::new();
    for (path, node) in tree.iter() {
        if let (Some(_), image::fstree::NodeKind::File(d)) =
            (path.strip_prefix("etc/keel/trusted-keys/"), &node.kind)
        {
            keys.push(bundle::keys::verifying_key_from_text(
                &String::from_utf8_lossy(d),
            )?);
        }
    }
    Ok(keys)
}

/// The card's boot backend, from the active slot's release file.
pub fn boot_flow(card: &mut Card) -> Result<(Box<dyn BootFlow>, &'static str)> {
    for slot in [Slot::A, Slot::B] {
        if let Some(rel) = slot_release(card, slot) {
            return match crate::inspect::field(&rel, "boot_backend") {
                Some("tryboot") => Ok((Box::new(update::tryboot::Tryboot), "tryboot")),
                Some("uboot") => {
                    let tries = crate::inspect::field(&rel, "max_tries")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(3);
                    Ok((Box::new(update::uboot::Uboot { max_tries: tries }), "uboot"))
                }
                other => bail!(
                    "slot {} names an unknown boot backend {other:?}",
                    slot.letter()
                ),
            };
        }
    }
    bail!("neither slot holds a Keel root filesystem; is this a Keel card image?")
}

impl Apply {
    pub fn run(self) -> Result<()> {
        let mut card = Card::open(&self.image)?;
        let (flow, _) = boot_flow(&mut card)?;
        let state = flow.read(&mut card)?;
        // On the host the card "runs" its active slot.
        let booted = state.active;
        let release =
            slot_release(&mut card, booted).context("the active slot holds no root filesystem")?;
        let board = crate::inspect::field(&release, "board")
            .context("release file names no board")?
            .to_string();
        let running = crate::inspect::field(&release, "version")
            .context("release file names no version")?
            .to_string();
        let trusted = slot_keys(&card, booted)?;
        let opts = update::ApplyOptions {
            board: &board,
            running_version: &running,
            booted,
            trusted: &trusted,
            allow_downgrade: self.allow_downgrade,
        };
        let open = || -> Result<std::io::BufReader<std::fs::File>> {
            Ok(std::io::BufReader::new(
                std::fs::File::open(&self.bundle)
                    .with_context(|| format!("opening {}", self.bundle.display()))?,
            ))
        };
        // A file can be read twice: verify all of it before writing a byte.
        update::applier::verify(open()?, &opts)
            .with_context(|| format!("rejected {}", self.bundle.display()))?;
        let applied = update::apply(open()?, &mut card, flow.as_ref(), &opts)
            .with_context(|| format!("applying {}", self.bundle.display()))?;
        println!(
            "{}: slot {} now holds version {} and boots next on trial ({:.1} MiB written)",
            self.image.display(),
            applied.slot.letter(),
            applied.manifest.version,
            applied.bytes_written as f64 / 1048576.0
        );
        Ok(())
    }
}
