//! One card: the image's mapped blocks written and read back, then the
//! device's identity (or the batch's claim certificate) written onto the
//! data partition and read back with the fleet client's own loader. The
//! checks of [`crate::target`] and the operator's confirmation come
//! before this; the manifest ([`crate::ledger`]) around it.

use std::path::{Path, PathBuf};

use keel_contract::paths;

use crate::ca::{CaError, IssuedIdentity};
use crate::card::{self, CardError, CardFile, DataPartition};
use crate::copy::{self, CopyError, CopyStats, OpenMode, Progress};
use crate::image::{ImageError, SourceImage};
use crate::ledger::LedgerError;
use crate::serial::SerialError;
use crate::target::{BlockDevice, Refusal, Sysroot, TargetError};

#[derive(Debug, thiserror::Error)]
pub enum BurnError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Card(#[from] CardError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Serial(#[from] SerialError),
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("the identity written to the card does not load with the fleet client's loader: {0}")]
    Loader(String),
    #[error("stopped by the operator")]
    Stopped,
}

/// Where a burn writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A card, checked by [`crate::target::check_device`].
    Device(BlockDevice),
    /// An image file named explicitly (`--file`).
    File(PathBuf),
}

impl Target {
    pub fn path(&self) -> &Path {
        match self {
            Target::Device(d) => &d.path,
            Target::File(p) => p,
        }
    }

    /// What the operator is shown before confirming.
    pub fn describe(&self) -> String {
        match self {
            Target::Device(d) => format!(
                "{} ({}{:.1} GB{})",
                d.named.display(),
                if d.description.is_empty() {
                    String::new()
                } else {
                    format!("{}, ", d.description)
                },
                d.size as f64 / 1e9,
                if d.removable {
                    ", removable"
                } else {
                    ", NOT removable"
                }
            ),
            Target::File(p) => format!("the image file {}", p.display()),
        }
    }

    fn mode(&self, sys: &Sysroot) -> OpenMode {
        match self {
            // A real card is claimed exclusively; a test's stand-in file is
            // not a block device, where O_EXCL means nothing.
            Target::Device(_) => OpenMode {
                direct: true,
                exclusive: sys.is_real(),
            },
            // Files too: past the page cache the write pass is several
            // times faster (measured: docs/manufacturing.md), and the
            // read-back comes from the disk.
            Target::File(_) => OpenMode {
                direct: true,
                exclusive: false,
            },
        }
    }
}

/// The claim certificate a batch's cards carry for fleet provisioning by
/// claim (`hub claim` or AWS's `create-provisioning-claim` made it).
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimFiles {
    pub certificate: Vec<u8>,
    pub key: Vec<u8>,
    /// The broker's CA, if the claim directory carries one (`ca.pem`).
    pub ca_bundle: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClaimFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClaimFiles({} byte certificate)", self.certificate.len())
    }
}

fn read_small(path: &Path) -> Result<Option<Vec<u8>>, BurnError> {
    durable::read(path, 64 * 1024).map_err(|e| BurnError::Read {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

impl ClaimFiles {
    /// `claim.pem`, `claim.key` and optionally `ca.pem` from `dir`.
    pub fn read(dir: &Path) -> Result<ClaimFiles, BurnError> {
        let need = |name: &str| -> Result<Vec<u8>, BurnError> {
            let p = dir.join(name);
            read_small(&p)?.ok_or_else(|| BurnError::Read {
                path: p,
                detail: "missing (a claim directory holds claim.pem and claim.key; `cargo xtask hub claim` makes one)".into(),
            })
        };
        Ok(ClaimFiles {
            certificate: need(paths::CLAIM_CERTIFICATE)?,
            key: need(paths::CLAIM_KEY)?,
            ca_bundle: read_small(&dir.join(paths::IDENTITY_CA_BUNDLE))?,
        })
    }
}

/// What goes onto a card's data partition besides the image.
#[derive(Debug, Default)]
pub struct CardIdentity {
    pub device: Option<IssuedIdentity>,
    /// The broker's CA bundle, written as the identity's `ca.pem`.
    pub server_ca: Option<Vec<u8>>,
    pub claim: Option<ClaimFiles>,
}

impl CardIdentity {
    pub fn is_empty(&self) -> bool {
        self.files().is_empty()
    }

    /// The files, at the paths docs/fleet.md gives.
    pub fn files(&self) -> Vec<CardFile> {
        let id = paths::IDENTITY_DIR;
        let mut out = Vec::new();
        if let Some(d) = &self.device {
            out.push(CardFile::new(
                id,
                paths::IDENTITY_CERTIFICATE,
                d.chain_pem.clone(),
                0o644,
            ));
            out.push(CardFile::new(
                id,
                paths::IDENTITY_KEY,
                d.key_pem.clone(),
                0o600,
            ));
        }
        let ca = self
            .server_ca
            .clone()
            .or_else(|| self.claim.as_ref().and_then(|c| c.ca_bundle.clone()));
        if let Some(ca) = ca {
            out.push(CardFile::new(id, paths::IDENTITY_CA_BUNDLE, ca, 0o644));
        }
        if let Some(c) = &self.claim {
            let dir = paths::CLAIM_DIR;
            out.push(CardFile::new(
                dir,
                paths::CLAIM_CERTIFICATE,
                c.certificate.clone(),
                0o644,
            ));
            out.push(CardFile::new(dir, paths::CLAIM_KEY, c.key.clone(), 0o600));
        }
        out
    }
}

/// What one burn did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurnReport {
    pub stats: CopyStats,
    pub identity_files: usize,
}

/// Burns one card: the image, then the identity; both read back.
pub fn burn(
    sys: &Sysroot,
    image: &SourceImage,
    target: &Target,
    identity: &CardIdentity,
    progress: &mut dyn FnMut(Progress),
) -> Result<BurnReport, BurnError> {
    if let Target::File(p) = target {
        crate::target::check_file(sys, p)?;
        let same = match (std::fs::canonicalize(p), std::fs::canonicalize(&image.path)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same {
            return Err(TargetError::Refused {
                target: p.clone(),
                reasons: vec![Refusal::SameAsImage],
            }
            .into());
        }
    }
    let stats = copy::write_and_verify(
        &image.path,
        target.path(),
        &image.extents(),
        image.size,
        target.mode(sys),
        progress,
    )?;
    let files = identity.files();
    if !files.is_empty() {
        card::write_files(target.path(), image.data, &files)?;
    }
    if let Some(d) = &identity.device {
        check_with_fleet_loader(target.path(), image.data, d, identity)?;
    }
    Ok(BurnReport {
        stats,
        identity_files: files.len(),
    })
}

/// Copies the identity directory off the card into `into` (as the
/// device's /data/keel/identity/) and returns its files.
pub fn read_identity(
    target: &Path,
    part: DataPartition,
    into: &Path,
) -> Result<mqtt::Identity, BurnError> {
    durable::create_dir_all(into).map_err(|e| BurnError::Read {
        path: into.to_path_buf(),
        detail: e.to_string(),
    })?;
    for name in [
        paths::IDENTITY_CERTIFICATE,
        paths::IDENTITY_KEY,
        paths::IDENTITY_CA_BUNDLE,
    ] {
        let device_path = format!("{}/{name}", paths::IDENTITY_DIR);
        if let Some(bytes) = card::read_file(target, part, &device_path)? {
            let p = into.join(name);
            durable::replace(&p, &bytes, 0o600).map_err(|e| BurnError::Read {
                path: p,
                detail: e.to_string(),
            })?;
        }
    }
    Ok(mqtt::Identity::in_dir(into))
}

/// Reads the identity back off the card and loads it the way the device
/// will: the certificate must match the key, and its CN be the serial.
fn check_with_fleet_loader(
    target: &Path,
    part: DataPartition,
    issued: &IssuedIdentity,
    identity: &CardIdentity,
) -> Result<(), BurnError> {
    let scratch = card::scratch()?;
    let mut files = read_identity(target, part, scratch.path())?;
    if identity.server_ca.is_none()
        && identity
            .claim
            .as_ref()
            .is_none_or(|c| c.ca_bundle.is_none())
    {
        // No broker CA on this card (its image brings one): any trust
        // anchor lets the loader check the certificate against its key.
        let stand_in = scratch.path().join("stand-in-ca.pem");
        let ca_pem = issued
            .chain_pem
            .strip_prefix(&issued.cert_pem)
            .unwrap_or_default();
        std::fs::write(&stand_in, ca_pem).map_err(|e| BurnError::Loader(e.to_string()))?;
        files.ca_bundle = stand_in;
    }
    files
        .client_config(false)
        .map_err(|e| BurnError::Loader(e.to_string()))?;
    let leaf = files
        .leaf_certificate()
        .map_err(|e| BurnError::Loader(e.to_string()))?;
    let info = fleet::identity::inspect(&leaf).map_err(|e| BurnError::Loader(e.to_string()))?;
    if info.common_name.as_deref() != Some(issued.serial.as_str()) {
        return Err(BurnError::Loader(format!(
            "its CN is {:?}, not the serial {}",
            info.common_name, issued.serial
        )));
    }
    Ok(())
}
