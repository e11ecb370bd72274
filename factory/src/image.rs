//! The image a factory burns: the build's `sdcard.img`, its block map
//! (`sdcard.img.bmap`, the build writes it beside the image) and the
//! facts the manifest and the identity writer need from it.

use std::io::Read;
use std::path::{Path, PathBuf};

use image_build::bmap::{Bmap, BmapError};
use sha2::{Digest, Sha256};

use crate::card::{self, CardError, DataPartition};
use crate::copy::{self, Extent};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "cannot read the image {path}: {source}; build it first (cargo xtask build --board B)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the block map {path}: {source}")]
    Bmap { path: PathBuf, source: BmapError },
    #[error("no block map at {0}: burning writes only the blocks a block map lists; the build writes sdcard.img.bmap beside sdcard.img (or make one: bmaptool create -o {0} IMAGE)")]
    NoBmap(PathBuf),
    #[error("{0} belongs to another image: it describes {1} bytes, the image has {2}")]
    SizeMismatch(PathBuf, u64, u64),
    #[error(transparent)]
    Card(#[from] CardError),
}

/// The image, its block map and what the burn needs to know of them.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub path: PathBuf,
    pub size: u64,
    pub bmap: Bmap,
    pub bmap_path: PathBuf,
    /// SHA-256 of the whole image, for the manifest.
    pub sha256: String,
    /// Where a device's identity goes.
    pub data: DataPartition,
}

/// `IMAGE.bmap`, where the build writes it.
pub fn default_bmap(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".bmap");
    PathBuf::from(s)
}

impl SourceImage {
    /// Opens the image and its block map (`bmap`, else `IMAGE.bmap`).
    pub fn open(image: &Path, bmap: Option<&Path>) -> Result<SourceImage, ImageError> {
        let read_err = |source| ImageError::Read {
            path: image.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(image).map_err(read_err)?.len();
        let bmap_path = bmap.map_or_else(|| default_bmap(image), Path::to_path_buf);
        let text = match durable::read_to_string(&bmap_path, 64 << 20) {
            Ok(Some(t)) => t,
            Ok(None) => return Err(ImageError::NoBmap(bmap_path)),
            Err(source) => {
                return Err(ImageError::Read {
                    path: bmap_path,
                    source,
                })
            }
        };
        let parsed = Bmap::parse(&text).map_err(|source| ImageError::Bmap {
            path: bmap_path.clone(),
            source,
        })?;
        if parsed.image_size != size {
            return Err(ImageError::SizeMismatch(bmap_path, parsed.image_size, size));
        }
        let data = card::data_partition(image)?;
        Ok(SourceImage {
            path: image.to_path_buf(),
            size,
            sha256: sha256_file(image).map_err(read_err)?,
            bmap: parsed,
            bmap_path,
            data,
        })
    }

    /// The ranges a burn writes.
    pub fn extents(&self) -> Vec<Extent> {
        copy::extents(&self.bmap)
    }

    /// Bytes a burn writes.
    pub fn mapped_bytes(&self) -> u64 {
        self.extents().iter().map(|e| e.len).sum()
    }
}

/// SHA-256 of a whole file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(h.finalize()))
}
