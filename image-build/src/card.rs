//! A card image read from the host: what each slot holds (its release
//! file and trusted keys, straight from its squashfs), which boot backend
//! it uses, and applying a bundle to it with the device's own applier.

use std::io::Read;
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use keel_contract::{paths, BootBackend, Release, Slot};
use update::{BootFlow, BootState, Card};

use crate::fstree::{FsTree, NodeKind};

#[derive(Debug, thiserror::Error)]
pub enum CardImageError {
    #[error(transparent)]
    Card(#[from] update::CardError),
    #[error(transparent)]
    Release(#[from] keel_contract::release::ReleaseError),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error(transparent)]
    Apply(#[from] update::ApplyError),
    #[error("neither slot holds a Keel root filesystem; is this a Keel card image?")]
    NoSlot,
    #[error("the active slot {0} holds no root filesystem")]
    ActiveEmpty(Slot),
    #[error("cannot read {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The files of a slot's root filesystem under `etc/keel/` (release file,
/// trusted keys), or None when the slot holds no root filesystem. Only
/// these files are decompressed.
pub fn slot_files(card: &Card, slot: Slot) -> Option<FsTree> {
    let (off, len) = card.span(slot.rootfs_partition()).ok()?;
    let f = std::fs::File::open(card.path()).ok()?;
    let part = crate::slice::PartitionSlice::new(f, off, len).ok()?;
    crate::squashfs::read_where(part, |p| p.starts_with("etc/keel/")).ok()
}

/// The release file in a slot's files.
pub fn release_of(tree: &FsTree) -> Option<Release> {
    match &tree.get(rel(paths::RELEASE))?.kind {
        NodeKind::File(d) => Some(Release::parse(&String::from_utf8_lossy(d))),
        _ => None,
    }
}

/// The release file of a slot's root filesystem, if the slot holds one.
pub fn slot_release(card: &Card, slot: Slot) -> Option<Release> {
    release_of(&slot_files(card, slot)?)
}

/// The trusted keys baked into a slot's root filesystem.
pub fn keys_of(tree: &FsTree) -> Result<Vec<VerifyingKey>, CardImageError> {
    let dir = format!("{}/", rel(paths::TRUSTED_KEYS_DIR));
    let mut keys = Vec::new();
    for (path, node) in tree.iter() {
        if let (Some(_), NodeKind::File(d)) = (path.strip_prefix(dir.as_str()), &node.kind) {
            keys.push(
                bundle::keys::verifying_key_from_text(&String::from_utf8_lossy(d)).map_err(
                    |e| {
                        bundle::BundleError::Key(format!(
                            "/{path} in the card's root filesystem: {e}"
                        ))
                    },
                )?,
            );
        }
    }
    Ok(keys)
}

/// The boot backend a release file names.
pub fn flow_of(release: &Release) -> Result<Box<dyn BootFlow>, CardImageError> {
    Ok(match release.boot_backend()? {
        BootBackend::Uboot => Box::new(update::uboot::Uboot {
            max_tries: release.max_tries()?,
        }),
    })
}

/// The card's boot backend, from the first slot holding a root filesystem.
pub fn boot_flow(card: &Card) -> Result<(Box<dyn BootFlow>, BootBackend), CardImageError> {
    for slot in Slot::ALL {
        if let Some(rel) = slot_release(card, slot) {
            return Ok((flow_of(&rel)?, rel.boot_backend()?));
        }
    }
    Err(CardImageError::NoSlot)
}

/// Where a bundle to apply comes from. Either is read once, each chunk
/// verified before it is written (docs/bundle.md).
pub enum BundleSource<'a> {
    File(&'a Path),
    /// stdin.
    Stream(&'a mut dyn Read),
}

/// Applies a bundle to the card image at `image` as the device would: the
/// card "runs" its active slot, so the other slot is written and set to
/// boot next on trial.
pub fn apply(
    image: &Path,
    source: BundleSource,
    allow_downgrade: bool,
) -> Result<update::Applied, CardImageError> {
    let mut card = Card::open(image)?;
    let (flow, _) = boot_flow(&card)?;
    let state: BootState = flow.read(&mut card)?;
    let booted = state.active;
    let files = slot_files(&card, booted).ok_or(CardImageError::ActiveEmpty(booted))?;
    let release = release_of(&files).ok_or(CardImageError::ActiveEmpty(booted))?;
    let trusted = keys_of(&files)?;
    let opts = update::ApplyOptions {
        board: release.board()?,
        running_version: release.version()?,
        booted,
        trusted: &trusted,
        allow_downgrade,
    };
    Ok(match source {
        BundleSource::Stream(r) => update::apply(r, &mut card, flow.as_ref(), &opts)?,
        BundleSource::File(path) => {
            let f = std::fs::File::open(path).map_err(|source| CardImageError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            update::apply(std::io::BufReader::new(f), &mut card, flow.as_ref(), &opts)?
        }
    })
}

/// What `inspect` shows of a card.
pub struct CardReport {
    pub disk_id: u32,
    pub partitions: Vec<card_format::mbr::Partition>,
    /// Each slot's release file, if it holds a root filesystem.
    pub slots: Vec<(Slot, Option<Release>)>,
    /// The boot backend and state, or why they cannot be read.
    pub boot: Result<(BootBackend, BootState), String>,
}

pub fn inspect(image: &Path) -> Result<CardReport, CardImageError> {
    let mut card = Card::open(image)?;
    let slots = Slot::ALL
        .into_iter()
        .map(|s| (s, slot_release(&card, s)))
        .collect();
    let boot = boot_flow(&card)
        .map_err(|e| e.to_string())
        .and_then(|(flow, backend)| {
            flow.read(&mut card)
                .map(|s| (backend, s))
                .map_err(|e| e.to_string())
        });
    Ok(CardReport {
        disk_id: card.table().disk_id,
        partitions: card.table().partitions.clone(),
        slots,
        boot,
    })
}
