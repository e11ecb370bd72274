//! A build's outputs beside the card image: the signed update bundle, the
//! block map and the checksums, each written under a temporary name and
//! renamed into place only when complete, plus the fingerprint that makes
//! an unchanged rebuild a no-op.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bundle::{Compression, Manifest, PayloadSource};
use ed25519_dalek::SigningKey;
use keel_contract::{partition, payload};
use sha2::{Digest, Sha256};

use crate::board::BoardConfig;
use crate::layout::Layout;
use crate::lock::LockFile;

/// Every output of a build; SHA256SUMS covers the others.
pub const OUTPUTS: [&str; 4] = ["sdcard.img", "sdcard.img.bmap", "update.fw", "SHA256SUMS"];
pub const IMAGE: &str = OUTPUTS[0];
pub const BMAP: &str = OUTPUTS[1];
pub const BUNDLE: &str = OUTPUTS[2];
pub const SUMS: &str = OUTPUTS[3];

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing update.fw: {0}")]
    Bundle(#[from] bundle::BundleError),
    #[error(transparent)]
    Bmap(#[from] crate::bmap::BmapError),
    #[error(transparent)]
    Artifact(#[from] crate::artifacts::ArtifactError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OutputError {
    let path = path.to_path_buf();
    move |source| OutputError::Io { what, path, source }
}

/// What goes into the bundle besides its payloads.
pub struct BundleHeader<'a> {
    pub cfg: &'a BoardConfig,
    pub version: &'a str,
    pub build_id: &'a str,
}

/// Writes `out` (an update bundle) from the finished card `image`: slot
/// A's boot partition (which serves either slot) and the root filesystem,
/// signed with `key`.
pub fn write_update_bundle(
    image: &Path,
    rootfs: &[u8],
    header: &BundleHeader,
    key: &SigningKey,
    out: &Path,
) -> Result<Manifest, OutputError> {
    let manifest = Manifest {
        board: header.cfg.name.clone(),
        version: header.version.to_string(),
        min_version: header.cfg.update.min_version.clone(),
        build_id: header.build_id.to_string(),
        chunk_size: bundle::DEFAULT_CHUNK_SIZE,
        payloads: Vec::new(),
    };
    let layout = Layout::for_board(header.cfg);
    let (a_off, a_len) = layout.span(partition::BOOT_A);
    let mut card = std::fs::File::open(image).map_err(io("opening", image))?;
    card.seek(SeekFrom::Start(a_off))
        .map_err(io("reading", image))?;
    let mut boot = card.take(a_len);
    let mut rootfs = rootfs;
    let tmp = durable::temp_path(out);
    let file = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    let result = bundle::write_bundle(
        std::io::BufWriter::new(file),
        &manifest,
        &mut [
            PayloadSource {
                name: payload::BOOT,
                data: &mut boot,
                compression: Compression::Deflate,
            },
            PayloadSource {
                name: payload::ROOTFS,
                data: &mut rootfs,
                compression: Compression::Deflate,
            },
        ],
        &[key],
    )
    .map_err(OutputError::from)
    .and_then(|m| {
        durable::commit(&tmp, out).map_err(io("renaming into place", out))?;
        Ok(m)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the block map and the checksums for the card at `tmp_image`,
/// then renames the card into place as `out_dir/sdcard.img`. The bundle
/// must already be in `out_dir`.
pub fn finish_card(tmp_image: &Path, out_dir: &Path) -> Result<(), OutputError> {
    let bmap = crate::bmap::generate(tmp_image, 4096)?;
    let bmap_path = out_dir.join(BMAP);
    durable::replace(&bmap_path, bmap.to_xml().as_bytes(), 0o644)
        .map_err(io("writing", &bmap_path))?;
    let image = out_dir.join(IMAGE);
    durable::commit(tmp_image, &image).map_err(io("renaming into place", &image))?;
    let mut sums = String::new();
    for name in [IMAGE, BMAP, BUNDLE] {
        let sum = crate::artifacts::sha256_file(&out_dir.join(name))?;
        sums.push_str(&format!("{sum}  {name}\n"));
    }
    let sums_path = out_dir.join(SUMS);
    durable::replace(&sums_path, sums.as_bytes(), 0o644).map_err(io("writing", &sums_path))
}

/// Everything an image is made of, for [`fingerprint`].
pub struct Fingerprint<'a> {
    pub cfg: &'a BoardConfig,
    pub lock: &'a LockFile,
    /// The assembler itself: a new one may lay out bytes differently.
    pub assembler: &'a Path,
    pub init: &'a Path,
    pub agent: &'a Path,
    pub overlay: &'a Path,
    /// Version, trusted keys and anything else that ends up in the image.
    pub extra: &'a str,
    pub build_id: &'a str,
    pub epoch: u64,
}

/// A hash of every input, so an unchanged rebuild is a no-op.
pub fn fingerprint(f: &Fingerprint) -> Result<String, OutputError> {
    let mut h = Sha256::new();
    h.update(format!(
        "{:?}\n{}\n{}\n{}\n{}\n",
        f.cfg,
        f.lock.to_toml(),
        f.extra,
        f.build_id,
        f.epoch
    ));
    for p in [f.assembler, f.init, f.agent] {
        h.update(std::fs::read(p).map_err(io("reading", p))?);
    }
    let mut stack = vec![f.overlay.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            h.update(p.to_string_lossy().as_bytes());
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                h.update(bytes);
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}
