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
    /// The update bundle (update.fw), or `-` to stream it from stdin in one
    /// pass (as `agent update -` does: a bundle rejected halfway leaves the
    /// inactive slot partly written, never bootable).
    pub bundle: PathBuf,
    /// Accept a bundle older than the version on the card.
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// The files of a slot's root filesystem under `etc/keel/` (release file,
/// trusted keys), or None when the slot holds no root filesystem. Only
/// these files are decompressed.
fn slot_files(card: &Card, slot: Slot) -> Option<image::fstree::FsTree> {
    let (off, len) = card.span(slot.rootfs_partition()).ok()?;
    let f = std::fs::File::open(card.path()).ok()?;
    let part = image::slice::PartitionSlice::new(f, off, len).ok()?;
    image::squashfs::read_where(part, |p| p.starts_with("etc/keel/")).ok()
}

fn release_of(tree: &image::fstree::FsTree) -> Option<String> {
    match &tree.get("etc/keel/release")?.kind {
        image::fstree::NodeKind::File(d) => Some(String::from_utf8_lossy(d).into_owned()),
        _ => None,
    }
}

/// The release file of a slot's root filesystem, if the slot holds one.
pub fn slot_release(card: &mut Card, slot: Slot) -> Option<String> {
    release_of(&slot_files(card, slot)?)
}

/// The trusted keys baked into a slot's root filesystem.
fn keys_of(tree: &image::fstree::FsTree) -> Result<Vec<ed25519_dalek::VerifyingKey>> {
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
            return flow_of(&rel, slot);
        }
    }
    bail!("neither slot holds a Keel root filesystem; is this a Keel card image?")
}

fn flow_of(rel: &str, slot: Slot) -> Result<(Box<dyn BootFlow>, &'static str)> {
    match crate::inspect::field(rel, "boot_backend") {
        Some("tryboot") => Ok((Box::new(update::tryboot::Tryboot), "tryboot")),
        Some("uboot") => {
            let tries = crate::inspect::field(rel, "max_tries")
                .and_then(|t| t.parse().ok())
                .unwrap_or(3);
            Ok((Box::new(update::uboot::Uboot { max_tries: tries }), "uboot"))
        }
        other => bail!(
            "slot {} names an unknown boot backend {other:?}",
            slot.letter()
        ),
    }
}

impl Apply {
    pub fn run(self) -> Result<()> {
        let mut card = Card::open(&self.image)?;
        let (flow, _) = boot_flow(&mut card)?;
        let state = flow.read(&mut card)?;
        // On the host the card "runs" its active slot.
        let booted = state.active;
        let files =
            slot_files(&card, booted).context("the active slot holds no root filesystem")?;
        let release = release_of(&files).context("the active slot has no /etc/keel/release")?;
        let board = crate::inspect::field(&release, "board")
            .context("release file names no board")?
            .to_string();
        let running = crate::inspect::field(&release, "version")
            .context("release file names no version")?
            .to_string();
        let trusted = keys_of(&files)?;
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
        let applied = if self.bundle.as_os_str() == "-" {
            update::apply(std::io::stdin().lock(), &mut card, flow.as_ref(), &opts)
                .context("applying the bundle from stdin")?
        } else {
            // A file can be read twice: verify all of it before writing a byte.
            let verified = update::verify(open()?, &opts)
                .with_context(|| format!("rejected {}", self.bundle.display()))?;
            update::apply_verified(open()?, &mut card, flow.as_ref(), &opts, &verified)
                .with_context(|| format!("applying {}", self.bundle.display()))?
        };
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
